//! stackd after a crash or a reboot: a SIGKILLed daemon comes back, recovers
//! what should run, leaves alone what a user stopped, says so (Alert signal,
//! log line with the catalog's MESSAGE_ID), and marks the task it was in the
//! middle of as interrupted without losing the desired state.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::{
    containers, docker, have_bus, have_docker, max_task_id, running, slow_compose, stackctl,
    stackctl_json, wait_until, Bus, Daemon, TestEnv,
};

const MESSAGE_RECOVERED: &str = "db51922c32c845bbafe3cb93a1603fcc";
const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// `busctl monitor` for the Manager's Alert signal, one JSON message per
/// line, read as it comes. Killed on drop.
struct AlertMonitor {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl AlertMonitor {
    fn start(bus: &Bus) -> AlertMonitor {
        let mut child = Command::new("busctl")
            .arg(format!("--address={}", bus.address()))
            .args([
                "monitor",
                "--json=short",
                "--match",
                "type='signal',interface='org.stackd1.Manager',member='Alert'",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("busctl monitor");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        AlertMonitor { child, lines }
    }

    /// The Alert signals seen so far: their 7 arguments.
    fn alerts(&self) -> Vec<Vec<serde_json::Value>> {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["member"] == "Alert")
            .filter_map(|m| m["payload"]["data"].as_array().cloned())
            .collect()
    }
}

impl Drop for AlertMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn docker_reboot_recovers_auto_start_services_but_not_user_stopped_ones() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("recovery_reboot");
    let a = env.add_sleeper("a");
    let b = env.add_sleeper("b");
    let c = env.add_sleeper("c");
    env.write_config(&format!(
        "[services.{a}]\nauto_start = true\n\n\
         [services.{b}]\nauto_start = true\n\n\
         [services.{c}]\nauto_start = true\n"
    ));
    let bus = Bus::start(env.dir());
    let mut daemon = Daemon::start(&env, &bus);
    wait_until(
        TASK_TIMEOUT,
        "a, b and c to be started at first boot",
        || [&a, &b, &c].iter().all(|p| running(p) == 1),
    );
    stackctl(&env, &bus, &["stop", &c]).expect_success();
    assert_eq!(running(&c), 0);
    let before = max_task_id(&env, &bus);

    // The host goes down hard: daemon killed, containers gone, new boot id.
    let monitor = AlertMonitor::start(&bus);
    daemon.kill();
    for p in [&a, &b, &c] {
        let ids: Vec<String> = containers(p).into_iter().map(|r| r.id).collect();
        let mut args = vec!["rm", "--force"];
        args.extend(ids.iter().map(String::as_str));
        docker(&args).expect_success();
        assert_eq!(containers(p), vec![]);
    }
    env.new_boot();
    let daemon = Daemon::start(&env, &bus);

    wait_until(TASK_TIMEOUT, "a and b to come back", || {
        running(&a) == 1 && running(&b) == 1
    });
    let status = stackctl(&env, &bus, &["status", &c]);
    assert_eq!(status.code, 3, "c stays stopped: {status}");
    assert!(
        status.stdout.contains("Desired: stopped (set by user)"),
        "{status}"
    );

    // One reconcile task of origin "boot" since the restart, and it ends.
    let mut boot_task = serde_json::Value::Null;
    wait_until(TASK_TIMEOUT, "the boot reconcile task to finish", || {
        let tasks = stackctl_json(&env, &bus, &["tasks", "-n", "1000"]);
        let found: Vec<serde_json::Value> = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["id"].as_u64() > Some(before) && t["kind"] == "reconcile")
            .cloned()
            .collect();
        assert_eq!(
            found.len(),
            1,
            "one reconcile task after the reboot: {tasks}"
        );
        boot_task = found[0].clone();
        boot_task["state"] != "running" && boot_task["state"] != "pending"
    });
    assert_eq!(boot_task["origin"], "boot", "{boot_task}");
    assert_eq!(boot_task["state"], "succeeded", "{boot_task}");
    let text = stackctl(&env, &bus, &["tasks"]).expect_success();
    assert!(
        text.stdout
            .lines()
            .any(|l| l.contains("reconcile") && l.contains(&boot_task["id"].to_string())),
        "{text}"
    );
    // c got no task since the reboot.
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &c]);
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["id"].as_u64() <= Some(before)),
        "nothing was done to the user-stopped service: {tasks}"
    );
    assert_eq!(containers(&c), vec![]);

    // The Alert signal: kind "recovered", naming a and b (and not c as
    // started).
    let mut recovered = Vec::new();
    wait_until(
        Duration::from_secs(30),
        "the recovered Alert signal",
        || {
            recovered = monitor
                .alerts()
                .into_iter()
                .filter(|args| args.get(1).and_then(|k| k.as_str()) == Some("recovered"))
                .collect();
            !recovered.is_empty()
        },
    );
    assert_eq!(recovered.len(), 1, "one recovered alert: {recovered:?}");
    let alert = &recovered[0];
    let summary = alert[4].as_str().unwrap();
    assert!(summary.contains(&a) && summary.contains(&b), "{alert:?}");
    assert!(!summary.contains(&format!("started {c}")), "{alert:?}");
    assert_eq!(alert[2], common::HOST, "{alert:?}");

    // The log line journald would index by MESSAGE_ID.
    let log = daemon.stderr();
    let line = log
        .lines()
        .find(|l| l.contains(MESSAGE_RECOVERED))
        .unwrap_or_else(|| panic!("no line with {MESSAGE_RECOVERED} in:\n{log}"));
    assert!(
        line.contains(&format!("message_id={MESSAGE_RECOVERED}")),
        "the field is message_id=<id>: {line}"
    );
    assert!(line.contains(&a) && line.contains(&b), "{line}");
    // The fields the catalog entry names, and a warning: things came back.
    for field in [
        "stackd_recovered=",
        "stackd_failed=",
        "stackd_left_stopped=",
        "stackd_boot=\"true\"",
    ] {
        assert!(line.contains(field), "{field} in {line}");
    }
    assert!(line.contains(&format!("{c} (set by user)")), "{line}");
    assert!(
        log.contains(&format!(" WARN [stackd] {}: started", common::HOST)),
        "a warning: things had to be brought back:\n{log}"
    );
}

#[test]
fn docker_sigkill_during_a_task_marks_it_interrupted_and_keeps_the_desired_state() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("recovery_sigkill");
    let slow = env.add_project("slow", &slow_compose(common::ensure_image()));
    env.write_config(&format!("[services.{slow}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let mut daemon = Daemon::start(&env, &bus);

    let out = stackctl(&env, &bus, &["--no-block", "start", &slow]).expect_success();
    let id = out.stdout.trim().to_owned();
    id.parse::<u64>()
        .unwrap_or_else(|_| panic!("--no-block prints a task id: {out}"));
    // Compose is busy: the task runs and the first container exists, the
    // dependent one not yet.
    wait_until(Duration::from_secs(60), "Compose to be half-way", || {
        let task = stackctl_json(&env, &bus, &["task", &id]);
        assert_eq!(task["state"], "running".to_owned().as_str(), "{task}");
        containers(&slow).iter().any(|c| c.service == "slow")
    });
    assert!(
        !containers(&slow)
            .iter()
            .any(|c| c.service == "main" && c.state == "running"),
        "the project came up too fast for this test"
    );
    daemon.kill();

    let daemon = Daemon::start(&env, &bus);
    let task = stackctl_json(&env, &bus, &["task", &id]);
    assert_eq!(task["state"], "failed", "{task}");
    assert_eq!(task["result"], "interrupted", "{task}");
    let text = stackctl(&env, &bus, &["task", &id]).expect_success();
    assert!(text.stdout.contains("failed (interrupted)"), "{text}");
    let pending = stackctl_json(&env, &bus, &["tasks", "--state", "pending"]);
    assert_eq!(pending, serde_json::json!([]), "nothing left pending");
    let status = stackctl(&env, &bus, &["status", &slow]);
    assert!(
        status.stdout.contains("Desired: running (set by user)"),
        "the user's start outlives the crash: {status}"
    );
    assert!(
        daemon.stderr().contains("interrupted"),
        "the daemon logs the interrupted task:\n{}",
        daemon.stderr()
    );
    // The start-up reconcile brings the project to the desired state.
    wait_until(TASK_TIMEOUT, "the project to be running after all", || {
        running(&slow) == 2
    });
}

#[test]
fn docker_sigterm_stops_the_daemon_and_leaves_containers_running() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("recovery_sigterm");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let mut daemon = Daemon::start(&env, &bus);
    wait_until(TASK_TIMEOUT, "the auto_start service to run", || {
        running(&web) == 1
    });
    let before = containers(&web);

    let status = daemon.stop();
    assert!(
        status.success(),
        "stackd exits cleanly on SIGTERM: {status}"
    );
    daemon.wait_notify(Duration::from_secs(5), "STOPPING=1", |l| l == "STOPPING=1");
    assert_eq!(containers(&web), before, "the containers are left running");
    assert_eq!(running(&web), 1);
    // And the bus name is gone with it.
    let out = stackctl(&env, &bus, &["list"]);
    assert_ne!(out.code, 0, "{out}");
}
