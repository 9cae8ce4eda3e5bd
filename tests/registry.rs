//! The registry's words and external services, through stackctl and
//! busctl against the real engine, a private bus and a real HTTP endpoint
//! the test starts and stops: `kind = "external"` is probed, refused
//! every operation and waited for by its dependents; `description`,
//! `category` and `required_for` show in list, status and D-Bus;
//! `readiness`, `required [--start]` and `health --watch`.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/http.rs"]
mod http;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use http::Endpoint;

const SETTLE: Duration = Duration::from_secs(60);

fn state(env: &TestEnv, bus: &Bus, name: &str) -> (String, String) {
    let v = stackctl_json(env, bus, &["status", name]);
    (
        v[0]["active_state"].as_str().unwrap_or("").to_string(),
        v[0]["health"].as_str().unwrap_or("").to_string(),
    )
}

/// `stackctl --user ARGS` started, not waited for.
fn spawn_stackctl(env: &TestEnv, bus: &Bus, args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .arg("--user")
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .env("XDG_RUNTIME_DIR", env.run_dir())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stackctl")
}

#[test]
fn docker_external_service_is_probed_refused_and_waited_for() {
    if !(have_docker() && have_bus()) {
        return;
    }
    ensure_image();
    let env = TestEnv::new("registry_ext");
    let mut endpoint = Endpoint::start();
    let port = endpoint.port;
    let api = env.project("api");
    let web = env.add_sleeper("web");
    let db = env.add_sleeper("db");
    env.write_config(&format!(
        r#"[services.{api}]
kind = "external"
description = "The payment API"
category = "remote"
required_for = ["checkout"]
health = {{ http = "http://127.0.0.1:{port}/healthz", interval = "1s", timeout = "1s", retries = 1 }}

[services.{web}]
auto_start = false
depends_on = ["{api}"]
start_timeout = "40s"
description = "The shop front"
category = "front"
required_for = ["checkout"]

[services.{db}]
auto_start = false
category = "data"
"#
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);

    // Probed: healthy is active (running).
    wait_until(SETTLE, "the external service turns active", || {
        state(&env, &bus, &api) == ("active".into(), "healthy".into())
    });
    let status = stackctl(&env, &bus, &["status", &api]).expect_success();
    assert!(
        status.stdout.contains(&format!("{api} - The payment API")),
        "{status}"
    );
    assert!(status.stdout.contains("Category: remote"), "{status}");
    assert!(status.stdout.contains("Required for: checkout"), "{status}");
    assert!(!status.stdout.contains("Compose:"), "{status}");

    // Every operation is refused, by stackctl (exit 1) and on the bus.
    for op in ["start", "stop", "restart", "update"] {
        let out = stackctl(&env, &bus, &[op, &api]);
        assert_eq!(out.code, 1, "{op}: {out}");
        assert!(
            out.stderr.contains("kind = \"external\"") && out.stderr.contains(op),
            "{op}: {out}"
        );
    }
    assert_eq!(
        busctl_error_name(None, &bus, &start_service_call(&api)).as_deref(),
        Some("org.stackd1.Error.Conflict")
    );
    // No task was ever queued for it.
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &api]);
    assert_eq!(tasks.as_array().map(Vec::len), Some(0), "{tasks}");

    // D-Bus properties.
    let path = service_path(&api);
    let get = |prop: &str| {
        busctl(
            &bus,
            &[
                "get-property",
                "org.stackd1",
                &path,
                "org.stackd1.Service",
                prop,
            ],
        )
        .expect_success()
        .stdout
        .trim()
        .to_string()
    };
    assert_eq!(get("Description"), "s \"The payment API\"");
    assert_eq!(get("Category"), "s \"remote\"");
    assert_eq!(get("RequiredFor"), "as 1 \"checkout\"");
    assert_eq!(get("Kind"), "s \"external\"");
    assert_eq!(get("ActiveState"), "s \"active\"");

    // list --category, --running.
    let out =
        stackctl(&env, &bus, &["list", "--category", "front", "--no-legend"]).expect_success();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(
        out.stdout.starts_with(&web) && out.stdout.contains("The shop front"),
        "{out}"
    );
    let out = stackctl(&env, &bus, &["list", "--running", "--no-legend"]).expect_success();
    let names: Vec<&str> = out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(names, [api.as_str()], "{out}");
    let listed = stackctl_json(&env, &bus, &["list"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == api.as_str())
        .unwrap();
    assert_eq!(row["kind"], "external");
    assert_eq!(row["category"], "remote");

    // required: web does not run yet -> 3; --start starts it -> 0.
    let out = stackctl(&env, &bus, &["required", "checkout"]);
    assert_eq!(out.code, 3, "{out}");
    assert!(out.stdout.contains("1 of 2 running"), "{out}");
    let out = stackctl(&env, &bus, &["required", "nothing-needs-this"]);
    assert_eq!(out.code, 4, "{out}");
    let out = stackctl(&env, &bus, &["required", "checkout", "--start"]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(running(&web), 1);
    let v = stackctl_json(&env, &bus, &["required", "checkout"]);
    assert_eq!(v["all_running"], true, "{v}");

    // readiness: api and web run, db could start.
    let v = stackctl_json(&env, &bus, &["readiness"]);
    let verdict = |name: &str| {
        v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["verdict"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(verdict(&api), "running", "{v}");
    assert_eq!(verdict(&web), "running", "{v}");
    assert_eq!(verdict(&db), "could start", "{v}");

    // The endpoint goes away: failed (unhealthy); nothing is restarted.
    stackctl(&env, &bus, &["stop", &web]).expect_success();
    let before = max_task_id(&env, &bus);
    endpoint.stop();
    wait_until(SETTLE, "the external service turns failed", || {
        state(&env, &bus, &api) == ("failed".into(), "unhealthy".into())
    });
    // Its health change is an alert, as any service's (the journal channel
    // writes it to the daemon's stderr here).
    wait_until(SETTLE, "the unhealthy alert", || {
        daemon.stderr().contains(&format!("{api} is unhealthy"))
    });
    let status = stackctl(&env, &bus, &["status", &api]);
    assert_eq!(status.code, 3, "{status}");
    assert!(!status.stdout.contains("since n/a"), "{status}");
    let out = stackctl(&env, &bus, &["readiness"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("external, not healthy"), "{out}");
    assert_eq!(max_task_id(&env, &bus), before, "no task for the endpoint");

    // A start of its dependent waits until it is healthy again.
    let mut start = spawn_stackctl(&env, &bus, &["start", &web]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(start.try_wait().unwrap().is_none(), "the start waits");
    assert_eq!(running(&web), 0);
    let _endpoint = Endpoint::start_on(port);
    let deadline = Instant::now() + SETTLE;
    let status = loop {
        if let Some(s) = start.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the start never ended");
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut err = String::new();
    start
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let mut log = String::new();
    start
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(status.success(), "{status}: {log}{err}");
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web]);
    let id = tasks[0]["id"]
        .as_u64()
        .expect("the start's task")
        .to_string();
    let task = stackctl(&env, &bus, &["task", &id]).expect_success();
    assert!(
        task.stdout
            .contains(&format!("for dependency {api} to be healthy")),
        "{task}"
    );
    assert_eq!(running(&web), 1);
    assert_eq!(state(&env, &bus, &api).0, "active");
    wait_until(SETTLE, "the healthy-again alert", || {
        daemon.stderr().contains(&format!("{api} is healthy again"))
    });

    // health --watch redraws until interrupted.
    let watch = spawn_stackctl(&env, &bus, &["health", "--watch", "-d", "0.5"]);
    std::thread::sleep(Duration::from_secs(3));
    nix_kill_int(watch.id());
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}: {text}", out.status);
    assert!(
        text.matches("Every 0.5s: stackctl health").count() >= 3,
        "{text}"
    );
    assert!(text.contains(&api) && text.contains(&web), "{text}");
    let bad = stackctl(&env, &bus, &["health", "--watch", "-d", "0"]);
    assert_eq!(bad.code, 2, "{bad}");

    stackctl(&env, &bus, &["stop", &web]).expect_success();
}

/// SIGINT, as Ctrl-C sends it.
fn nix_kill_int(pid: u32) {
    let out = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(out.success());
}
