//! Failures of the surroundings at boot, diagnosed from what Compose said:
//! an image that is missing and will not pull waits (never "gave up", one
//! alert) and comes back once the image is there, with a "came back"
//! alert; a service on an external network another service's Compose file
//! creates is started after it, without `depends_on`.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// A tag this test adds to the test image, removed on drop.
struct Tag(String);

impl Drop for Tag {
    fn drop(&mut self) {
        let _ = try_run(
            std::process::Command::new("docker").args(["rmi", &self.0]),
            COMMAND_TIMEOUT,
        );
    }
}

fn status(env: &TestEnv, bus: &Bus, name: &str) -> serde_json::Value {
    stackctl_json(env, bus, &["status", name])[0].clone()
}

fn alerts(daemon: &Daemon, kind: &str, service: &str) -> usize {
    daemon
        .stderr()
        .lines()
        .filter(|l| {
            l.contains(&format!("stackd_alert=\"{kind}\""))
                && l.contains(&format!("stackd_service=\"{service}\""))
        })
        .count()
}

/// Every Compose command the service's tasks ran (`$ ...` lines in their logs).
fn compose_calls(env: &TestEnv, bus: &Bus, name: &str) -> usize {
    let tasks = stackctl_json(env, bus, &["tasks", "--service", name, "-n", "1000"]);
    tasks
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let id = t["id"].as_u64().unwrap().to_string();
            stackctl(env, bus, &["task", &id])
                .stdout
                .lines()
                .filter(|l| l.contains("$ docker"))
                .count()
        })
        .sum()
}

#[test]
fn docker_a_missing_image_waits_and_comes_back_when_it_is_there() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("env_image");
    let later = format!("stackd-test/{}-later:1", env.prefix());
    let _cleanup = Tag(later.clone());
    // No pull_policy: Compose tries to pull it, and there is no registry.
    let app = env.add_project(
        "app",
        &format!(
            "version: \"2.4\"\nservices:\n  main:\n    image: {later}\n    command: [\"sleep\", \"3600\"]\n    init: true\n    stop_grace_period: 1s\n"
        ),
    );
    env.write_config(&format!(
        "[services.{app}]\nauto_start = true\nrestart = {{ retry_interval = \"2s\", max_restarts = 2 }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);

    let mut s = serde_json::Value::Null;
    wait_until(TASK_TIMEOUT, "the service to wait for its image", || {
        s = status(&env, &bus, &app);
        s["sub_state"] == "waiting"
    });
    let message = s["health_message"].as_str().unwrap().to_string();
    assert!(
        message.starts_with("waiting:") && message.contains("pulling it failed"),
        "{s}"
    );
    assert_eq!(s["active_state"], "activating", "{s}");
    // Past max_restarts (2) tries: still waiting, never gave up. Counted
    // rather than timed: a try under Compose v1 on a loaded machine takes
    // longer than its 2 s interval.
    let tries = || {
        stackctl_json(&env, &bus, &["tasks", "--service", &app, "-n", "1000"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["origin"] == "recovery")
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while tries() < 3 {
        let s = status(&env, &bus, &app);
        assert_ne!(s["sub_state"], "gave-up", "{s}");
        assert!(
            Instant::now() < deadline,
            "it keeps trying: {} retries in 120 s",
            tries()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let s = status(&env, &bus, &app);
    assert_ne!(s["sub_state"], "gave-up", "{s}");
    assert_eq!(alerts(&daemon, "waiting", &app), 1, "one alert");
    assert_eq!(alerts(&daemon, "gave-up", &app), 0);
    assert_eq!(alerts(&daemon, "task-failed", &app), 0, "no alert per try");
    // The retry's log: the evidence first, then the decision.
    let retry = stackctl_json(&env, &bus, &["tasks", "--service", &app, "-n", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["origin"] == "recovery")
        .map(|t| t["id"].as_u64().unwrap().to_string())
        .unwrap();
    let log = stackctl(&env, &bus, &["task", &retry])
        .expect_success()
        .stdout;
    let evidence = log.find("evidence:").unwrap_or_else(|| panic!("{log}"));
    let decision = log.find("decision:").unwrap_or_else(|| panic!("{log}"));
    assert!(evidence < decision, "{log}");
    assert!(log.contains("pull failed"), "{log}");
    assert!(log.contains("never gives up"), "{log}");

    // The image is there again.
    docker(&["tag", image, &later]).expect_success();
    let back = Instant::now();
    wait_until(TASK_TIMEOUT, "the service to come back", || {
        running(&app) == 1
    });
    let took = back.elapsed();
    wait_until(Duration::from_secs(30), "the came-back alert", || {
        alerts(&daemon, "came-back", &app) == 1
    });
    let s = status(&env, &bus, &app);
    assert_eq!(s["active_state"], "active", "{s}");
    println!(
        "figures: image back -> running {:.1} s (retry_interval 2s, cap 10s); Compose invocations in the episode: {}",
        took.as_secs_f64(),
        compose_calls(&env, &bus, &app)
    );
}

#[test]
fn docker_a_service_on_a_network_another_creates_comes_up_after_it() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("env_network");
    let shared = format!("{}-shared", env.prefix());
    // "a-user" sorts first: without the inferred order it would be tried
    // first, or at the same time.
    let user = env.add_project(
        "a-user",
        &format!(
            "version: \"2.4\"\nservices:\n  main:\n    image: {image}\n    pull_policy: never\n    command: [\"sleep\", \"3600\"]\n    init: true\n    stop_grace_period: 1s\n    networks: [lan]\nnetworks:\n  lan:\n    external: true\n    name: {shared}\n"
        ),
    );
    let maker = env.add_project(
        "b-maker",
        &format!(
            "version: \"2.4\"\nservices:\n  main:\n    image: {image}\n    pull_policy: never\n    command: [\"sleep\", \"3600\"]\n    init: true\n    stop_grace_period: 1s\n    networks: [lan]\nnetworks:\n  lan:\n    name: {shared}\n"
        ),
    );
    env.write_config(&format!(
        "[services.{user}]\nauto_start = true\n\n[services.{maker}]\nauto_start = true\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    wait_until(TASK_TIMEOUT, "both to come up", || {
        running(&user) == 1 && running(&maker) == 1
    });
    let mut tasks = serde_json::Value::Null;
    wait_until(TASK_TIMEOUT, "its task to end", || {
        tasks = stackctl_json(&env, &bus, &["tasks", "--service", &user]);
        tasks
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] != "running" && t["state"] != "pending")
    });
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), 1, "started once, after the maker: {tasks:?}");
    assert_eq!(tasks[0]["state"], "succeeded", "{tasks:?}");
    let _ = docker(&["network", "rm", &shared]);
}

#[test]
fn docker_a_held_port_names_its_holder_and_the_service_starts_once_it_is_free() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("env_port");
    let holder = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let web = env.add_project(
        "web",
        &format!(
            "version: \"2.4\"\nservices:\n  main:\n    image: {image}\n    pull_policy: never\n    command: [\"sleep\", \"3600\"]\n    init: true\n    stop_grace_period: 1s\n    ports:\n      - \"{port}:80\"\n"
        ),
    );
    env.write_config(&format!(
        "[services.{web}]\nauto_start = true\nrestart = {{ retry_interval = \"2s\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    let mut s = serde_json::Value::Null;
    wait_until(TASK_TIMEOUT, "the service to wait for its port", || {
        s = status(&env, &bus, &web);
        s["sub_state"] == "waiting"
    });
    let message = s["health_message"].as_str().unwrap();
    assert!(
        message.contains(&format!("host port {port} is already allocated"))
            && message.contains(&format!("process {}", std::process::id())),
        "names the port and who holds it: {s}"
    );
    drop(holder);
    wait_until(
        TASK_TIMEOUT,
        "the service to start once the port is free",
        || running(&web) == 1,
    );
    wait_until(Duration::from_secs(30), "the came-back alert", || {
        alerts(&daemon, "came-back", &web) == 1
    });
    assert_eq!(alerts(&daemon, "waiting", &web), 1, "one alert");
}
