//! Recovery driven by Docker's events: a crashed container is restarted
//! with the evidence in the task log, a crash loop backs off and gives up
//! with an event, and a service a person stopped is never touched.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

fn crasher(image: &str, after: u32) -> String {
    format!(
        r#"version: "2.4"
services:
  main:
    image: {image}
    pull_policy: never
    command: ["sh", "-c", "sleep {after}; exit 1"]
    stop_grace_period: 1s
"#
    )
}

/// The ids of the service's recovery tasks, newest first.
fn recovery_tasks(env: &TestEnv, bus: &Bus, name: &str) -> Vec<String> {
    stackctl_json(env, bus, &["tasks", "--service", name])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["origin"] == "recovery")
        .map(|t| t["id"].as_u64().unwrap().to_string())
        .collect()
}

/// One auto_start sleeper, its daemon, and the boot recovery that starts it.
fn running_sleeper(test: &str) -> (TestEnv, Bus, Daemon, String) {
    ensure_image();
    let env = TestEnv::new(test);
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(60), "boot recovery starts it", || {
        running(&web) == 1
    });
    (env, bus, daemon, web)
}

fn restart_count(env: &TestEnv, bus: &Bus, name: &str) -> u64 {
    let v = health_json(env, bus, name);
    v[0]["restart_count"].as_u64().unwrap()
}

/// `health --output json NAME`, which exits 1 while the service is
/// unhealthy or failed: the rows are printed either way.
fn health_json(env: &TestEnv, bus: &Bus, name: &str) -> serde_json::Value {
    let out = stackctl(env, bus, &["--output", "json", "health", name]);
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn docker_a_crash_loop_is_restarted_then_given_up_with_an_event() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("supervise_loop");
    let crash = env.add_project("crash", &crasher(image, 2));
    env.write_config(&format!(
        "[services.{crash}]\nauto_start = false\nrestart = {{ on_failure = true, max_restarts = 2, window = \"2m\", backoff = \"1s..2s\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);

    stackctl(&env, &bus, &["start", &crash]).expect_success();
    wait_until(Duration::from_secs(30), "a first recovery", || {
        restart_count(&env, &bus, &crash) >= 1
    });
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &crash]);
    let recovery = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["origin"] == "recovery")
        .unwrap_or_else(|| panic!("no recovery task: {tasks}"))
        .clone();
    let id = recovery["id"].as_u64().unwrap().to_string();
    let log = stackctl(&env, &bus, &["task", &id]).expect_success().stdout;
    assert_eq!(recovery["kind"], "restart", "{recovery}\n{log}");
    assert!(
        log.contains("evidence:") && log.contains("exit code 1"),
        "{log}"
    );
    assert!(log.contains("decision: restart (exited)"), "{log}");

    wait_until(Duration::from_secs(60), "stackd gives up", || {
        stackctl(&env, &bus, &["status", &crash])
            .stdout
            .contains("gave up")
    });
    assert_eq!(restart_count(&env, &bus, &crash), 2, "max_restarts is 2");
    let list = stackctl_json(&env, &bus, &["list"]);
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == crash.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["active_state"], "failed", "{row}");
    assert_eq!(row["health"], "unhealthy", "{row}");
    assert!(
        daemon
            .stderr()
            .contains("message_id=7e61e01ca82544a1a645ed81386e1499"),
        "the give-up is logged with its MESSAGE_ID"
    );
    // No further recovery after giving up.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(restart_count(&env, &bus, &crash), 2);

    let diagnose = stackctl(&env, &bus, &["diagnose", &crash]).expect_success();
    assert!(diagnose.stdout.contains("cause: crash-loop"), "{diagnose}");
}

#[test]
fn docker_a_service_a_person_stopped_is_never_restarted() {
    if !have_docker() || !have_bus() {
        return;
    }
    let (env, bus, _daemon, web) = running_sleeper("supervise_stopped");
    stackctl(&env, &bus, &["stop", &web]).expect_success();
    // Whatever its containers do now, stackd leaves them.
    let id = containers(&web)[0].id.clone();
    docker(&["start", &id]).expect_success();
    docker(&["kill", &id]).expect_success();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running(&web), 0);
    assert_eq!(recovery_tasks(&env, &bus, &web), Vec::<String>::new());
}

#[test]
fn docker_a_killed_container_is_back_within_seconds() {
    if !have_docker() || !have_bus() {
        return;
    }
    let (env, bus, _daemon, web) = running_sleeper("supervise_kill");
    // A crash as Docker sees one: the main process killed by its host PID
    // (`docker kill` through the API would be a person's stop).
    let id = containers(&web)[0].id.clone();
    crash(&id);
    wait_until(Duration::from_secs(30), "the container runs again", || {
        running(&web) == 1
    });
    assert_eq!(restart_count(&env, &bus, &web), 1);
}

#[test]
fn docker_a_container_killed_by_its_memory_limit_is_diagnosed_as_oom() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("supervise_oom");
    // The shell grows a string to 4 MiB and holds it long enough for the
    // monitor (every 5 s) to sample it, then doubles it until the 16 MiB
    // limit kills it.
    let hog = env.add_project(
        "hog",
        &format!(
            r#"version: "2.4"
services:
  main:
    image: {image}
    command: ["sh", "-c", "x=xxxxxxxxxxxxxxxx; i=0; while [ $$i -lt 18 ]; do x=$$x$$x; i=$$((i+1)); done; sleep 11; while :; do x=$$x$$x; done"]
    mem_limit: 16m
    memswap_limit: 16m
    stop_grace_period: 1s
"#
        ),
    );
    env.write_config(&format!(
        "[services.{hog}]\nauto_start = false\nrestart = {{ max_restarts = 1, window = \"2m\", backoff = \"1s..2s\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &hog]).expect_success();
    wait_until(
        Duration::from_secs(60),
        "a recovery after the OOM kill",
        || !recovery_tasks(&env, &bus, &hog).is_empty(),
    );
    let id = recovery_tasks(&env, &bus, &hog).remove(0);
    let mut log = String::new();
    wait_until(
        Duration::from_secs(10),
        "the decision is in the log",
        || {
            log = stackctl(&env, &bus, &["task", &id]).expect_success().stdout;
            log.contains("decision:")
        },
    );
    assert!(log.contains("killed by the OOM killer"), "{log}");
    assert!(log.contains("decision: restart (oom-killed)"), "{log}");
    assert!(
        log.contains("warning:") && log.contains("limit 16 MiB"),
        "{log}"
    );
    // "limit 16 MiB, peak use N MiB": the monitor's last sample, taken
    // while the 4 MiB string was held.
    let peak: u64 = log
        .split("peak use ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no peak use in {log}"));
    assert!((4..=16).contains(&peak), "peak {peak} MiB: {log}");
}

#[test]
fn docker_an_http_probe_turns_unhealthy_and_recovery_makes_it_healthy() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("supervise_http");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let web = env.add_project(
        "web",
        &format!(
            r#"version: "2.4"
services:
  httpd:
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && httpd -p 80 -h /www && exec sleep 3600"]
    ports:
      - "127.0.0.1:{port}:80"
    stop_grace_period: 1s
"#
        ),
    );
    env.write_config(&format!(
        "[services.{web}]\nauto_start = false\nhealth = {{ http = \"http://127.0.0.1:{port}/\", interval = \"1s\", timeout = \"1s\", retries = 2 }}\nrestart = {{ max_restarts = 3, window = \"2m\", backoff = \"1s..2s\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &web]).expect_success();
    let health = || health_json(&env, &bus, &web)[0]["health"].clone();
    wait_until(Duration::from_secs(30), "healthy", || health() == "healthy");

    // The web server dies; its container keeps running (sleep is PID 1).
    let id = containers(&web)[0].id.clone();
    docker(&["exec", &id, "/bin/busybox", "killall", "httpd"]).expect_success();
    wait_until(Duration::from_secs(30), "unhealthy is announced", || {
        daemon.stderr().contains("is unhealthy")
    });
    wait_until(
        Duration::from_secs(60),
        "a recovery restarts it and it is healthy",
        || health() == "healthy" && restart_count(&env, &bus, &web) >= 1,
    );
}

/// A python3 HTTPS server on 127.0.0.1 with a self-signed certificate made
/// by openssl in `dir`: (child, port, the CA certificate's path).
fn https_server(dir: &std::path::Path) -> Option<(std::process::Child, u16, std::path::PathBuf)> {
    let tools = which("openssl").is_some() && which("python3").is_some();
    if !require(
        "openssl and python3",
        tools,
        "apt-get install openssl python3",
    ) {
        return None;
    }
    // A CA, and a certificate for 127.0.0.1 it signed (webpki refuses a
    // self-signed CA certificate as the server's own).
    let (ca, cert, key) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=stackd-test-ca -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out leaf.csr",
        "x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext.cnf -out cert.pem",
    ] {
        run(
            std::process::Command::new("openssl")
                .args(args.split(' '))
                .current_dir(dir),
            COMMAND_TIMEOUT,
        )
        .expect_success();
    }
    let script = "import http.server, ssl, sys\n\
        s = http.server.HTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)\n\
        c = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)\n\
        c.load_cert_chain(sys.argv[1], sys.argv[2])\n\
        s.socket = c.wrap_socket(s.socket, server_side=True)\n\
        print(s.server_address[1], flush=True)\n\
        s.serve_forever()\n";
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&cert)
        .arg(&key)
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("port: {line:?}"));
    Some((child, port, ca))
}

#[test]
fn docker_an_https_probe_trusts_its_tls_ca_and_names_an_unknown_issuer() {
    if !have_docker() || !have_bus() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("supervise_https");
    let Some((mut server, port, ca)) = https_server(env.dir()) else {
        return;
    };
    let good = env.add_sleeper("good");
    let bad = env.add_sleeper("bad");
    let url = format!("https://127.0.0.1:{port}/");
    env.write_config(&format!(
        "[services.{good}]\nhealth = {{ http = \"{url}\", tls_ca = {}, interval = \"1s\", retries = 1 }}\n\
         [services.{bad}]\nhealth = {{ http = \"{url}\", interval = \"1s\", retries = 1 }}\nrestart = {{ on_failure = false }}\n",
        toml_str(&ca.display().to_string())
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    let health = |name: &str| {
        let v = health_json(&env, &bus, name);
        (
            v[0]["health"].as_str().unwrap().to_string(),
            v[0]["message"].as_str().unwrap().to_string(),
        )
    };
    wait_until(Duration::from_secs(60), "both probed", || {
        health(&good).0 == "healthy" && health(&bad).0 == "unhealthy"
    });
    assert_eq!(
        health(&good).1,
        format!("GET {url} answered 200"),
        "trusted through tls_ca"
    );
    let (_, why) = health(&bad);
    assert!(
        why.contains("invalid peer certificate") && why.contains("UnknownIssuer"),
        "{why}"
    );
    let _ = server.kill();
    let _ = server.wait();
}
