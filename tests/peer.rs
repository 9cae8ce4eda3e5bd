//! The peer endpoint with three real daemons on 127.0.0.1, .2 and .3 (hosts
//! a, b, c), one cluster file and one token: stackctl -H and --all-hosts,
//! remote start and stop checked against Docker, token refusal, malformed
//! bodies, the event long poll and /metrics. And a token file that others
//! may read stops the daemon from starting.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    have_bus, have_docker, running, stackctl, toml_str, wait_until, Bus, Daemon, TestEnv,
};

const TOKEN: &str = "peer-test-token-0123456789abcdef";
const HOSTS: [(&str, &str); 3] = [("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")];

/// A free port (the same one is used on the three loopback addresses).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

/// Writes the cluster file and the token (mode `token_mode`) in `env`'s
/// dir; one sleeper service per host. Returns (file, services by host).
fn write_cluster(env: &TestEnv, port: u16, token_mode: u32) -> (PathBuf, Vec<String>) {
    let token = env.dir().join("peer.token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(token_mode))
        .expect("chmod token");
    let mut text = format!(
        "host = \"a\"\ncompose_dir = {}\nboot_id_file = {}\n\n[peer]\ntoken_file = {}\ntimeout = \"2s\"\n\n",
        toml_str(&env.compose_dir().display().to_string()),
        toml_str(&env.boot_id_file().display().to_string()),
        toml_str(&token.display().to_string()),
    );
    for (h, ip) in HOSTS {
        text.push_str(&format!("[hosts.{h}]\npeer = \"http://{ip}:{port}\"\n"));
    }
    let mut services = Vec::new();
    for (h, _) in HOSTS {
        let svc = env.add_sleeper(&format!("svc{h}"));
        text.push_str(&format!(
            "\n[services.{svc}]\nhost = \"{h}\"\nauto_start = false\n"
        ));
        services.push(svc);
    }
    let path = env.dir().join("cluster.toml");
    std::fs::write(&path, text).expect("cluster file");
    (path, services)
}

/// A raw HTTP/1.1 exchange: (status, headers, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn ctl(env: &TestEnv, bus: &Bus, cluster: &Path, args: &[&str]) -> common::Output {
    let mut all = vec!["-c", cluster.to_str().unwrap()];
    all.extend(args);
    stackctl(env, bus, &all)
}

#[test]
fn three_hosts_over_the_peer_endpoint() {
    if !have_docker() || !have_bus() {
        return;
    }
    let envs: Vec<TestEnv> = HOSTS
        .iter()
        .map(|(h, _)| TestEnv::new(&format!("peer_{h}")))
        .collect();
    let port = free_port();
    let (cluster, services) = write_cluster(&envs[0], port, 0o600);
    let buses: Vec<Bus> = envs.iter().map(|e| Bus::start(e.dir())).collect();
    let cluster_s = cluster.display().to_string();
    let _daemons: Vec<Daemon> = HOSTS
        .iter()
        .zip(envs.iter().zip(&buses))
        .map(|((h, _), (env, bus))| {
            Daemon::start_with(env, bus, &[], &["--config", &cluster_s, "--host", h])
        })
        .collect();
    let addr_b = format!("127.0.0.2:{port}");
    let (svc_a, svc_b, svc_c) = (&services[0], &services[1], &services[2]);

    // /healthz needs no token.
    let (status, _, _) = http(&addr_b, "GET", "/healthz", None, "");
    assert_eq!(status, 200);

    // Aggregated list from host a: a over D-Bus, b and c over HTTP.
    let out = ctl(&envs[0], &buses[0], &cluster, &["list", "--all-hosts"]).expect_success();
    for (svc, h) in [(svc_a, "a"), (svc_b, "b"), (svc_c, "c")] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([h, svc.as_str()])),
            "{svc} on {h} missing: {out}"
        );
    }
    assert!(out.stdout.contains("HOST"), "{out}");

    // Where the event log stands before the start.
    let (status, _, body) = http(
        &addr_b,
        "GET",
        "/v1/events?after=0&timeout=0",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let before = json(&body)["next"].as_u64().unwrap();

    // Remote start from a: b's container runs.
    ctl(&envs[0], &buses[0], &cluster, &["-H", "b", "start", svc_b]).expect_success();
    wait_until(Duration::from_secs(30), "b's service runs", || {
        running(svc_b) == 1
    });
    assert_eq!(running(svc_a), 0);
    let out = ctl(&envs[0], &buses[0], &cluster, &["-H", "b", "status", svc_b]).expect_success();
    assert!(out.stdout.contains("Active: active"), "{out}");
    assert!(out.stdout.contains("on b"), "{out}");

    // The events after `before` hold the start task's life-cycle.
    let (status, _, body) = http(
        &addr_b,
        "GET",
        &format!("/v1/events?after={before}&timeout=5"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let ev = json(&body);
    let kinds: Vec<(&str, &str)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["service"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(kinds.contains(&("task-new", svc_b.as_str())), "{body}");
    assert!(kinds.contains(&("task-finished", svc_b.as_str())), "{body}");
    let next = ev["next"].as_u64().unwrap();

    // Wrong and missing tokens: 401, Bearer challenge, nothing changes.
    for token in [Some("wrong-token"), None] {
        let (status, head, body) = http(
            &addr_b,
            "POST",
            &format!("/v1/services/{svc_b}/stop"),
            token,
            "",
        );
        assert_eq!(status, 401, "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
        assert_eq!(json(&body)["kind"], "Unauthorized");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(svc_b), 1, "a refused request stopped the service");
    let (_, _, body) = http(
        &addr_b,
        "GET",
        &format!("/v1/events?after={next}&timeout=0"),
        Some(TOKEN),
        "",
    );
    assert!(
        json(&body)["events"].as_array().unwrap().is_empty(),
        "{body}"
    );

    // Malformed JSON and unknown fields: 400 with the reason.
    let op = format!("/v1/services/{svc_b}/restart");
    let (status, _, body) = http(&addr_b, "POST", &op, Some(TOKEN), "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{body}"
    );
    let (status, _, body) = http(&addr_b, "POST", &op, Some(TOKEN), r#"{"bogus": 1}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bogus"), "{body}");
    // Unknown service, unknown route.
    let (status, _, body) = http(&addr_b, "GET", "/v1/services/nope", Some(TOKEN), "");
    assert_eq!(
        (status, json(&body)["kind"].as_str()),
        (404, Some("NoSuchService"))
    );
    let (status, _, _) = http(&addr_b, "GET", "/v1/nothing", Some(TOKEN), "");
    assert_eq!(status, 404);

    // A long poll waiting for the next event is woken by a remote stop.
    let poll = {
        let addr = addr_b.clone();
        std::thread::spawn(move || {
            http(
                &addr,
                "GET",
                &format!("/v1/events?after={next}&timeout=30"),
                Some(TOKEN),
                "",
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    ctl(&envs[0], &buses[0], &cluster, &["-H", "b", "stop", svc_b]).expect_success();
    let (status, _, body) = poll.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let first = &json(&body)["events"][0];
    assert_eq!(first["kind"], "task-new", "{body}");
    assert_eq!(first["data"]["kind"], "stop", "{body}");
    wait_until(Duration::from_secs(30), "b's service stops", || {
        running(svc_b) == 0
    });

    // /metrics: build info and a line per service.
    let (status, _, body) = http(&addr_b, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(body.contains("stackd_build_info{"), "{body}");
    assert!(
        body.contains(&format!("stackd_service_active{{service=\"{svc_b}\"")),
        "{body}"
    );
    assert!(body.contains("stackd_tasks{state=\"succeeded\"}"), "{body}");
    let (status, _, _) = http(&addr_b, "GET", "/metrics", None, "");
    assert_eq!(status, 401);

    // JSON task over -H, with its log.
    let out = ctl(&envs[0], &buses[0], &cluster, &["-H", "c", "list"]).expect_success();
    assert!(
        out.stdout.contains(svc_c.as_str()) && !out.stdout.contains(svc_b.as_str()),
        "{out}"
    );
}

#[test]
fn a_token_file_others_may_read_stops_the_start() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("peer_token_mode");
    let (cluster, _) = write_cluster(&env, free_port(), 0o644);
    let bus = Bus::start(env.dir());
    let cluster_s = cluster.display().to_string();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_with(&env, &bus, &[], &["--config", &cluster_s, "--host", "a"])
    }));
    let message = match result {
        Ok(_) => panic!("the daemon started with a world-readable token file"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    let token = env.dir().join("peer.token").display().to_string();
    assert!(message.contains("before READY=1"), "{message}");
    assert!(
        message.contains(&token),
        "the error names no file: {message}"
    );
    assert!(
        message.contains("0644") && message.contains("chmod 600"),
        "{message}"
    );
}
