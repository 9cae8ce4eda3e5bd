//! Recovery at Docker's own speed: a service whose containers exist and
//! match the Compose file is started through the Docker API (same
//! containers, no Compose call); one whose file changed goes through
//! Compose and is recreated; a reboot brings the exited containers back
//! through the API and leaves a user-stopped service alone.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// The tasks of `name` after task `after`, oldest first, as JSON rows.
fn tasks_after(env: &TestEnv, bus: &Bus, name: &str, after: u64) -> Vec<serde_json::Value> {
    let mut rows: Vec<serde_json::Value> = stackctl_json(env, bus, &["tasks", "--service", name])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["id"].as_u64() > Some(after))
        .cloned()
        .collect();
    rows.sort_by_key(|t| t["id"].as_u64());
    rows
}

/// The finished task of `name` after `after` with this kind and origin,
/// and its log; waits for it to end.
fn finished_task(
    env: &TestEnv,
    bus: &Bus,
    name: &str,
    after: u64,
    kind: &str,
    origin: &str,
) -> (serde_json::Value, String) {
    let mut found = serde_json::Value::Null;
    wait_until(
        TASK_TIMEOUT,
        &format!("a finished {kind} task of {name}"),
        || {
            found = tasks_after(env, bus, name, after)
                .into_iter()
                .find(|t| t["kind"] == kind && t["origin"] == origin)
                .unwrap_or(serde_json::Value::Null);
            !found.is_null() && found["state"] != "running" && found["state"] != "pending"
        },
    );
    let id = found["id"].as_u64().unwrap().to_string();
    let log = stackctl(env, bus, &["task", &id]).expect_success().stdout;
    (found, log)
}

/// No Compose command ran in the task: the runner writes each as a
/// `$ <compose> <args>` line.
fn no_compose_call(log: &str) -> bool {
    !log.lines().any(|l| l.trim_start().starts_with("$ "))
}

/// `docker` and `docker-compose` wrappers that write each Compose
/// invocation's arguments to a log, then run the real program: a daemon
/// with their folder first on its PATH shows every Compose process it ran.
struct ComposeCalls {
    dir: std::path::PathBuf,
    log: std::path::PathBuf,
}

impl ComposeCalls {
    fn new(env: &TestEnv) -> ComposeCalls {
        use std::os::unix::fs::PermissionsExt;
        let dir = env.dir().join("wrap");
        std::fs::create_dir_all(&dir).unwrap();
        let log = env.dir().join("compose-calls.log");
        for (name, test) in [
            ("docker", "[ \"$1\" = compose ]"),
            ("docker-compose", "true"),
        ] {
            let real = which(name).unwrap_or_else(|| panic!("{name} is not on PATH"));
            let path = dir.join(name);
            std::fs::write(
                &path,
                format!(
                    "#!/bin/sh\nif {test}; then echo \"$*\" >> {}; fi\nexec {} \"$@\"\n",
                    log.display(),
                    real.display()
                ),
            )
            .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        ComposeCalls { dir, log }
    }

    fn start_daemon(&self, env: &TestEnv, bus: &Bus) -> Daemon {
        let path = format!(
            "{}:{}",
            self.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Daemon::start_with(env, bus, &[("PATH", &path)], &[])
    }

    /// Every Compose invocation so far, one line of arguments each.
    fn all(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

fn ids(project: &str) -> Vec<String> {
    containers(project).into_iter().map(|c| c.id).collect()
}

#[test]
fn docker_a_killed_main_process_comes_back_as_the_same_container_without_compose() {
    if !have_docker() || !have_bus() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("fastpath_kill");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let calls = ComposeCalls::new(&env);
    let _daemon = calls.start_daemon(&env, &bus);
    wait_until(TASK_TIMEOUT, "the boot recovery starts it", || {
        running(&web) == 1
    });
    // The first deploy went through Compose (no container existed).
    let (first, log) = finished_task(&env, &bus, &web, 0, "deploy", "boot");
    assert_eq!(first["state"], "succeeded", "{first}\n{log}");
    assert!(
        log.contains("through Compose: no container of the project exists"),
        "{log}"
    );
    let before = ids(&web);
    let after = max_task_id(&env, &bus);
    let ran = calls.all();
    assert!(
        ran.iter().any(|l| l.contains("up -d")),
        "the wrappers see the first deploy: {ran:?}"
    );

    crash(&before[0]);
    let (task, log) = finished_task(&env, &bus, &web, after, "restart", "recovery");
    assert_eq!(task["state"], "succeeded", "{task}\n{log}");
    assert!(log.contains("started through the Docker API"), "{log}");
    assert!(no_compose_call(&log), "no Compose call: {log}");
    assert_eq!(calls.all(), ran, "no Compose process ran for the recovery");
    wait_until(Duration::from_secs(30), "it runs again", || {
        running(&web) == 1
    });
    assert_eq!(ids(&web), before, "the same container runs again");
    let status = stackctl(&env, &bus, &["status", &web]).expect_success();
    assert!(status.stdout.contains("active (running)"), "{status}");
}

#[test]
fn docker_a_service_whose_file_changed_while_down_is_recreated_through_compose() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("fastpath_changed");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let mut daemon = Daemon::start(&env, &bus);
    wait_until(TASK_TIMEOUT, "the boot recovery starts it", || {
        running(&web) == 1
    });
    let (first, log) = finished_task(&env, &bus, &web, 0, "deploy", "boot");
    assert_eq!(first["state"], "succeeded", "{first}\n{log}");
    let before = ids(&web);
    let after = max_task_id(&env, &bus);

    // stackd stops (leaving the container), the container dies, and the
    // Compose file changes before stackd is back.
    assert!(daemon.stop().success());
    crash(&before[0]);
    wait_until(Duration::from_secs(30), "the container exits", || {
        running(&web) == 0
    });
    env.add_project(
        "web",
        &sleeper_compose(image).replace(
            "    init: true\n",
            "    init: true\n    environment:\n      CHANGED: \"yes\"\n",
        ),
    );
    let _daemon = Daemon::start(&env, &bus);

    let (task, log) = finished_task(&env, &bus, &web, after, "deploy", "start");
    assert_eq!(task["state"], "succeeded", "{task}\n{log}");
    assert!(
        log.contains("through Compose: the Compose file changed for service main"),
        "{log}"
    );
    assert!(!no_compose_call(&log), "Compose ran: {log}");
    wait_until(Duration::from_secs(30), "it runs again", || {
        running(&web) == 1
    });
    let now = ids(&web);
    assert_eq!(now.len(), 1);
    assert_ne!(now, before, "a new container from the changed file");
    let env_of = docker(&["inspect", "-f", "{{json .Config.Env}}", &now[0]]).expect_success();
    assert!(env_of.stdout.contains("CHANGED=yes"), "{env_of}");
}

/// Docker's RFC 3339 `StartedAt` ("2026-01-02T03:04:05.12345Z", trailing
/// zeros of the fraction dropped) as a number that orders correctly.
fn started_nanos(text: &str) -> (String, u64) {
    let (date, time) = text.split_once('T').unwrap_or((text, ""));
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let secs: u64 = hms
        .split(':')
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .fold(0, |acc, p| acc * 60 + p);
    let frac: String = frac
        .chars()
        .take_while(char::is_ascii_digit)
        .chain(std::iter::repeat('0'))
        .take(9)
        .collect();
    (
        date.to_string(),
        secs * 1_000_000_000 + frac.parse::<u64>().unwrap_or(0),
    )
}

/// Two services in one project, `app` after `db`.
fn two_tier(image: &str) -> String {
    format!(
        r#"version: "2.4"
services:
  db:
    image: {image}
    pull_policy: never
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
  app:
    image: {image}
    pull_policy: never
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
    depends_on: [db]
"#
    )
}

#[test]
fn docker_a_reboot_starts_the_exited_containers_through_the_api_and_leaves_a_stopped_one() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("fastpath_reboot");
    let a = env.add_project("a", &two_tier(image));
    let b = env.add_sleeper("b");
    let c = env.add_sleeper("c");
    env.write_config(&format!(
        "[services.{a}]\nauto_start = true\n\n\
         [services.{b}]\nauto_start = true\n\n\
         [services.{c}]\nauto_start = true\n"
    ));
    let bus = Bus::start(env.dir());
    let calls = ComposeCalls::new(&env);
    let mut daemon = calls.start_daemon(&env, &bus);
    wait_until(TASK_TIMEOUT, "a, b and c to start at first boot", || {
        running(&a) == 2 && running(&b) == 1 && running(&c) == 1
    });
    stackctl(&env, &bus, &["stop", &c]).expect_success();
    assert_eq!(running(&c), 0);
    let before_a = ids(&a);
    let before_b = ids(&b);
    let before_c = ids(&c);
    let after = max_task_id(&env, &bus);

    // The host goes down: the daemon with it, the containers stop and stay
    // (as a reboot leaves them), and the boot id changes.
    daemon.kill();
    let mut args = vec!["stop", "-t", "1"];
    args.extend(before_a.iter().map(String::as_str));
    args.extend(before_b.iter().map(String::as_str));
    docker(&args).expect_success();
    assert_eq!(running(&a) + running(&b), 0);
    env.new_boot();
    let ran = calls.all().len();
    let _daemon = calls.start_daemon(&env, &bus);

    for (name, want) in [(&a, 2), (&b, 1)] {
        let (task, log) = finished_task(&env, &bus, name, after, "deploy", "boot");
        assert_eq!(task["state"], "succeeded", "{task}\n{log}");
        assert!(log.contains("started through the Docker API"), "{log}");
        assert!(no_compose_call(&log), "no Compose call: {log}");
        wait_until(Duration::from_secs(30), "it runs again", || {
            running(name) == want
        });
    }
    // The daemon finds its Compose at start (`version`); nothing else ran.
    let since: Vec<String> = calls.all().split_off(ran);
    assert!(
        since.iter().all(|l| l.ends_with("version")),
        "no Compose call but the version probe: {since:?}"
    );
    assert_eq!(ids(&a), before_a, "the same containers");
    assert_eq!(ids(&b), before_b, "the same container");
    // In the project, db was started before app.
    let started = |id: &str| {
        let text = docker(&["inspect", "-f", "{{.State.StartedAt}}", id])
            .expect_success()
            .stdout;
        started_nanos(text.trim())
    };
    let rows = containers(&a);
    let db = rows.iter().find(|r| r.service == "db").unwrap();
    let app = rows.iter().find(|r| r.service == "app").unwrap();
    assert!(started(&db.id) <= started(&app.id), "db starts before app");

    // c, which a person stopped, got no task and stays as it was.
    assert_eq!(
        tasks_after(&env, &bus, &c, after),
        Vec::<serde_json::Value>::new()
    );
    assert_eq!(ids(&c), before_c);
    assert_eq!(running(&c), 0);
    let status = stackctl(&env, &bus, &["status", &c]);
    assert_eq!(status.code, 3, "c stays stopped: {status}");
}

/// One service run as two containers (`scale: 2`, which Compose v1 and v2
/// both read).
fn two_replicas(image: &str) -> String {
    sleeper_compose(image).replace("    init: true\n", "    init: true\n    scale: 2\n")
}

#[test]
fn docker_replicas_come_back_through_the_api_only_when_all_of_them_exist() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("fastpath_replicas");
    let r = env.add_project("r", &two_replicas(image));
    env.write_config(&format!("[services.{r}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let calls = ComposeCalls::new(&env);
    let mut daemon = calls.start_daemon(&env, &bus);
    wait_until(TASK_TIMEOUT, "the boot recovery starts both", || {
        running(&r) == 2
    });
    let (first, log) = finished_task(&env, &bus, &r, 0, "deploy", "boot");
    assert_eq!(first["state"], "succeeded", "{first}\n{log}");
    let mut before = ids(&r);
    before.sort();
    assert_eq!(before.len(), 2);

    // One replica crashes: both exist with the file's hash, so the API
    // starts it again, the same container, no Compose process.
    let after = max_task_id(&env, &bus);
    let ran = calls.all();
    crash(&before[1]);
    let (task, log) = finished_task(&env, &bus, &r, after, "restart", "recovery");
    assert_eq!(task["state"], "succeeded", "{task}\n{log}");
    assert!(log.contains("started through the Docker API"), "{log}");
    assert!(no_compose_call(&log), "no Compose call: {log}");
    assert_eq!(calls.all(), ran, "no Compose process ran for the recovery");
    wait_until(Duration::from_secs(30), "both run again", || {
        running(&r) == 2
    });
    let mut now = ids(&r);
    now.sort();
    assert_eq!(now, before, "the same two containers");

    // A reboot finds one replica gone: starting the other would leave the
    // service short, so Compose brings back both.
    let after = max_task_id(&env, &bus);
    daemon.kill();
    docker(&["rm", "-f", &before[0]]).expect_success();
    docker(&["stop", "-t", "1", &before[1]]).expect_success();
    env.new_boot();
    let _daemon = calls.start_daemon(&env, &bus);
    let (task, log) = finished_task(&env, &bus, &r, after, "deploy", "boot");
    assert_eq!(task["state"], "succeeded", "{task}\n{log}");
    assert!(
        log.contains("through Compose: service main has 1 container; the Compose file asks for 2"),
        "{log}"
    );
    assert!(!no_compose_call(&log), "Compose ran: {log}");
    wait_until(Duration::from_secs(30), "both run", || running(&r) == 2);
    let now = ids(&r);
    assert!(now.contains(&before[1]), "the one left is kept: {now:?}");
}
