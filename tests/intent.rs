//! A person's intent, from every door: a stop through Docker itself (`docker
//! stop`, as Portainer or `docker compose stop` do it) is a person's stop and
//! stays so across a reboot until `stackctl start`; a crash (the main process
//! killed by its host PID, which Docker reports as a `die` with no `kill`)
//! and a `docker restart` by hand are not.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;

const TASK_TIMEOUT: Duration = Duration::from_secs(120);

/// One auto_start sleeper with a short crash-loop backoff, its daemon, and
/// the boot recovery that starts it.
fn running_sleeper(test: &str, restart: &str) -> (TestEnv, Bus, Daemon, String) {
    ensure_image();
    let env = TestEnv::new(test);
    let web = env.add_sleeper("web");
    env.write_config(&format!(
        "[services.{web}]\nauto_start = true\nrestart = {{ backoff = \"1s..2s\"{restart} }}\n"
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    wait_until(TASK_TIMEOUT, "boot recovery starts it", || {
        running(&web) == 1
    });
    // A stop while stackd's own task still works on the service is taken
    // for stackd's: let the boot recovery finish first (its summary is
    // the last thing it does).
    wait_until(TASK_TIMEOUT, "boot recovery to finish", || {
        daemon.stderr().contains("stackd_alert=\"recovered\"")
    });
    (env, bus, daemon, web)
}

fn recovery_tasks(env: &TestEnv, bus: &Bus, name: &str) -> usize {
    stackctl_json(env, bus, &["tasks", "--service", name])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["origin"] == "recovery")
        .count()
}

#[test]
fn docker_stop_is_a_persons_stop_until_stackctl_start() {
    if !have_docker() || !have_bus() {
        return;
    }
    let (env, bus, mut daemon, web) = running_sleeper("intent_stop", "");
    let id = containers(&web)[0].id.clone();
    docker(&["stop", &id]).expect_success();

    let mut status = String::new();
    wait_until(
        Duration::from_secs(20),
        "status names who stopped it",
        || {
            status = stackctl(&env, &bus, &["status", &web]).stdout;
            status.contains("Desired: stopped (stopped outside stackd (docker stop))")
        },
    );
    // Well past the restart backoff (1s..2s): nothing brings it back.
    let until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < until {
        assert_eq!(running(&web), 0, "a person's stop is kept");
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(recovery_tasks(&env, &bus, &web), 0, "no recovery task");
    let status = stackctl(&env, &bus, &["status", &web]);
    assert_eq!(status.code, 3, "{status}");
    let json = stackctl_json(&env, &bus, &["status", &web]);
    assert_eq!(
        json[0]["desired_source"], "stopped outside stackd (docker stop)",
        "{json}"
    );
    assert!(
        daemon
            .stderr()
            .lines()
            .any(|l| l.contains("stackd_alert=\"stopped-outside\"")
                && l.contains("INFO")
                && l.contains(&format!("{web} was stopped outside stackd (docker stop)"))),
        "an info alert says so:\n{}",
        daemon.stderr()
    );

    // A reboot: the daemon dies, the containers are gone, a new boot id.
    daemon.kill();
    remove_projects(&web);
    env.new_boot();
    let _daemon = Daemon::start(&env, &bus);
    wait_until(TASK_TIMEOUT, "the boot reconcile to finish", || {
        stackctl_json(&env, &bus, &["tasks", "-n", "1000"])
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["origin"] == "boot" && t["state"] == "succeeded")
    });
    assert_eq!(running(&web), 0, "a reboot keeps it stopped");
    assert!(
        stackctl(&env, &bus, &["status", &web])
            .stdout
            .contains("stopped outside stackd (docker stop)"),
        "after the reboot too"
    );

    stackctl(&env, &bus, &["start", &web]).expect_success();
    assert_eq!(running(&web), 1, "stackctl start undoes it");
    let status = stackctl(&env, &bus, &["status", &web]).expect_success();
    assert!(
        status.stdout.contains("Desired: running (set by user)"),
        "{status}"
    );
}

#[test]
fn docker_a_crash_and_a_docker_restart_by_hand_are_no_stop() {
    if !have_docker() || !have_bus() {
        return;
    }
    let (env, bus, daemon, web) = running_sleeper("intent_crash", "");
    let status = |env: &TestEnv| stackctl_json(env, &bus, &["status", &web]);

    // `docker restart` by hand: kill/stop, then start again.
    let id = containers(&web)[0].id.clone();
    docker(&["restart", &id]).expect_success();
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(running(&web), 1);
    assert_eq!(status(&env)[0]["desired_source"], "config", "no stop");
    assert_eq!(recovery_tasks(&env, &bus, &web), 0, "nothing to recover");

    // A crash: the main process killed by its host PID.
    crash(&id);
    wait_until(Duration::from_secs(30), "a recovery brings it back", || {
        recovery_tasks(&env, &bus, &web) == 1 && running(&web) == 1
    });
    assert_eq!(status(&env)[0]["desired_source"], "config");
    assert_eq!(status(&env)[0]["desired_state"], "running");
    assert!(
        !daemon.stderr().contains("stackd_alert=\"stopped-outside\""),
        "no stopped-outside alert:\n{}",
        daemon.stderr()
    );
}

#[test]
fn docker_revert_forces_a_service_stopped_outside_back_up() {
    if !have_docker() || !have_bus() {
        return;
    }
    let (env, bus, _daemon, web) = running_sleeper("intent_revert", ", manual_stop = \"revert\"");
    let id = containers(&web)[0].id.clone();
    docker(&["stop", &id]).expect_success();
    wait_until(Duration::from_secs(30), "it is forced up again", || {
        running(&web) == 1 && recovery_tasks(&env, &bus, &web) == 1
    });
    let json = stackctl_json(&env, &bus, &["status", &web]);
    assert_eq!(json[0]["desired_source"], "config", "{json}");
}
