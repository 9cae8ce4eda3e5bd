//! Recovery driven by Docker's events: a crashed container is restarted
//! with the evidence in the task log, a crash loop backs off and gives up
//! with an event, and a service a person stopped is never touched.

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

fn restart_count(env: &TestEnv, bus: &Bus, name: &str) -> u64 {
    let v = stackctl_json(env, bus, &["health", name]);
    v[0]["restart_count"].as_u64().unwrap()
}

#[test]
fn a_crash_loop_is_restarted_then_given_up_with_an_event() {
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
fn a_service_a_person_stopped_is_never_restarted() {
    if !have_docker() || !have_bus() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("supervise_stopped");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(60), "boot recovery starts it", || {
        running(&web) == 1
    });
    stackctl(&env, &bus, &["stop", &web]).expect_success();
    // Whatever its containers do now, stackd leaves them.
    let id = containers(&web)[0].id.clone();
    docker(&["start", &id]).expect_success();
    docker(&["kill", &id]).expect_success();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(running(&web), 0);
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web]);
    assert!(
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["origin"] != "recovery"),
        "{tasks}"
    );
}

#[test]
fn a_killed_container_is_back_within_seconds() {
    if !have_docker() || !have_bus() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("supervise_kill");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = true\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(60), "boot recovery starts it", || {
        running(&web) == 1
    });
    let id = containers(&web)[0].id.clone();
    docker(&["kill", "-s", "KILL", &id]).expect_success();
    wait_until(Duration::from_secs(30), "the container runs again", || {
        running(&web) == 1
    });
    assert_eq!(restart_count(&env, &bus, &web), 1);
}
