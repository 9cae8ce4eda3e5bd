//! Figure for the supervisor: container death → recovery task created,
//! over 50 kills of a running container (its main process killed by its
//! host PID, a crash as Docker sees one), p50 and p99.
//! docker-autoheal polls every 5 s by default; the goal is p99 < 500 ms.
//!
//! Run it with `cargo bench --bench recovery`. Without `--bench` (as
//! `cargo test --all-targets` runs it) it does nothing.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;

const KILLS: usize = 50;

fn now_usec() -> u64 {
    stackd::time::now_usec()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("recovery benchmark skipped: run it with `cargo bench --bench recovery`");
        return;
    }
    if !have_docker() || !have_bus() {
        println!("recovery benchmark skipped: needs Docker and dbus-daemon");
        return;
    }
    ensure_image();
    let env = TestEnv::new("bench_recovery");
    let web = env.add_sleeper("web");
    // A short window, so every kill counts as the first in its window and is
    // restarted at once (the crash-loop budget is not what is measured).
    env.write_config(&format!(
        "[services.{web}]\nauto_start = true\nrestart = {{ max_restarts = 1000, window = \"1s\", backoff = \"1s..1s\" }}\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start_with(&env, &bus, &[("RUST_LOG", "info")], &[]);
    wait_until(Duration::from_secs(60), "boot recovery starts it", || {
        running(&web) == 1
    });
    let mut latencies = Vec::with_capacity(KILLS);
    let mut seen = 0usize;
    for i in 0..KILLS {
        std::thread::sleep(Duration::from_millis(1200));
        // A crash as Docker sees one: the main process killed by its host
        // PID (`docker kill` through the API is a person's stop).
        let id = containers(&web)[0].id.clone();
        let pid = docker(&["inspect", "-f", "{{.State.Pid}}", &id])
            .expect_success()
            .stdout
            .trim()
            .to_string();
        let killed = now_usec();
        run(
            std::process::Command::new("kill").args(["-9", &pid]),
            COMMAND_TIMEOUT,
        )
        .expect_success();
        let deadline = Instant::now() + Duration::from_secs(30);
        let created = loop {
            let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web, "-n", "200"]);
            let recoveries: Vec<u64> = tasks
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t["origin"] == "recovery")
                .map(|t| t["created_usec"].as_u64().unwrap())
                .collect();
            if recoveries.len() > seen {
                seen = recoveries.len();
                break recoveries[0];
            }
            assert!(
                Instant::now() < deadline,
                "kill {i}: no recovery task within 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        latencies.push(created.saturating_sub(killed));
        wait_until(Duration::from_secs(30), "the container runs again", || {
            running(&web) == 1
        });
    }
    latencies.sort_unstable();
    #[allow(
        clippy::cast_possible_truncation,
        reason = "an index into a short list, computed in f64"
    )]
    let pct =
        |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize] as f64 / 1000.0;
    println!("container death → recovery task created, {KILLS} kills (kill -9 of the host PID, from the client's clock):");
    println!(
        "  p50 {:.1} ms  p99 {:.1} ms  min {:.1} ms  max {:.1} ms",
        pct(0.5),
        pct(0.99),
        pct(0.0),
        pct(1.0)
    );
    println!(
        "  goal p99 < 500 ms: {}",
        if pct(0.99) < 500.0 { "PASS" } else { "MISS" }
    );
}
