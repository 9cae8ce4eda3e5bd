//! An engine restart is not a crash: a Docker engine of the test's own (a
//! second dockerd in a network namespace, `common/engine.rs`) is restarted
//! ten times in a row; after each restart every desired-running service
//! runs again (brought back like a boot: in dependency waves, no restart
//! budget spent), none gives up, and the services a person stopped (with
//! `stackctl stop`, and with `docker stop` on the engine) stay stopped.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/engine.rs"]
mod engine;

use std::time::{Duration, Instant};

use common::*;

/// The count: ten restarts (the old code gave up on every service
/// at the sixth within its restart window).
const RESTARTS: usize = 10;

#[test]
fn docker_ten_engine_restarts_bring_everything_back_and_keep_stops() {
    if !have_docker() || !have_bus() {
        return;
    }
    let image = ensure_image();
    let Some(mut engine) = engine::Engine::start("rs") else {
        return;
    };
    engine.load_image(image);
    let env = TestEnv::new("engine_restart");
    let db = env.add_sleeper("db");
    let web = env.add_sleeper("web");
    let idle = env.add_sleeper("idle");
    let side = env.add_sleeper("side");
    env.write_config(&format!(
        "[services.{db}]\nauto_start = true\n\n\
         [services.{web}]\nauto_start = true\ndepends_on = [\"{db}\"]\n\n\
         [services.{idle}]\nauto_start = true\n\n\
         [services.{side}]\nauto_start = true\n"
    ));
    let bus = Bus::start(env.dir());
    let host = engine.host();
    let daemon = Daemon::start_with(&env, &bus, &[("DOCKER_HOST", &host)], &[]);
    let all_up =
        |engine: &engine::Engine, names: &[&String]| names.iter().all(|n| engine.running(n) == 1);
    wait_until(
        Duration::from_secs(120),
        "all four to run on the test's engine",
        || all_up(&engine, &[&db, &web, &idle, &side]),
    );
    // Two stops by a person: through stackd, and through Docker itself.
    stackctl(&env, &bus, &["stop", &idle]).expect_success();
    engine
        .docker(&["stop", &engine.container(&side)])
        .expect_success();
    wait_until(
        Duration::from_secs(20),
        "the docker stop to be taken as intent",
        || {
            stackctl(&env, &bus, &["status", &side])
                .stdout
                .contains("stopped outside stackd (docker stop)")
        },
    );

    let mut took = Vec::new();
    for i in 0..RESTARTS {
        let answered = engine.restart();
        let deadline = answered + Duration::from_secs(60);
        while !all_up(&engine, &[&db, &web]) {
            assert!(
                Instant::now() < deadline,
                "restart {i}: db and web not running 60 s after the engine answered\n{}",
                daemon.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        took.push(answered.elapsed());
        assert_eq!(engine.running(&idle), 0, "restart {i}: idle stays stopped");
        assert_eq!(engine.running(&side), 0, "restart {i}: side stays stopped");
    }
    // Settled: nothing gave up, nothing spent a restart budget, the stops
    // are as the person left them.
    std::thread::sleep(Duration::from_secs(2));
    let list = stackctl_json(&env, &bus, &["list"]);
    for row in list.as_array().unwrap() {
        assert_ne!(row["sub_state"], "gave-up", "{row}");
    }
    for name in [&db, &web] {
        let tasks = stackctl_json(&env, &bus, &["tasks", "--service", name, "-n", "1000"]);
        let recoveries = tasks
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["origin"] == "recovery")
            .count();
        assert_eq!(
            recoveries, 0,
            "{name}: brought back by reconciles, not crash recovery: {tasks}"
        );
        let s = stackctl_json(&env, &bus, &["status", name]);
        assert_eq!(s[0]["active_state"], "active", "{s}");
    }
    let status = |n: &str| stackctl_json(&env, &bus, &["status", n])[0]["desired_source"].clone();
    assert_eq!(status(&idle), "user");
    assert_eq!(status(&side), "stopped outside stackd (docker stop)");
    assert!(!daemon.stderr().contains("stackd_alert=\"gave-up\""));
    let engine_reconciles = stackctl_json(&env, &bus, &["tasks", "-n", "1000"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "reconcile" && t["origin"] == "engine")
        .count();
    assert!(
        engine_reconciles >= RESTARTS,
        "{engine_reconciles} engine reconciles"
    );

    took.sort();
    println!(
        "figures: engine answering -> db and web running, {RESTARTS} restarts: min {:.2} s, median {:.2} s, max {:.2} s",
        took[0].as_secs_f64(),
        took[took.len() / 2].as_secs_f64(),
        took[took.len() - 1].as_secs_f64()
    );
}
