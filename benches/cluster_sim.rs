//! A 50-host cluster on one machine: 50 `stackd --sim` processes on
//! 127.0.0.1-50 (one port), one cluster file, real peer endpoints, each
//! with its own session bus and two simulated services. No Docker.
//!
//! Times `stackctl list --all-hosts` asked of host 1:
//! 1. with every host up (goal: under 1 s);
//! 2. with 5 hosts frozen (SIGSTOP: the kernel still completes the
//!    handshake, nothing answers; goal: under 1 s plus one peer timeout);
//! 3. with those 5 gone (killed: connections refused at once).
//!
//! `cargo bench --bench cluster_sim`. Without `--bench` (as `cargo test
//! --all-targets` runs it) it does nothing; `cargo test --bench cluster_sim
//! -- --bench` runs it on the debug build.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::loopback;

const HOSTS: usize = 50;
const SERVICES_PER_HOST: usize = 2;
const DOWN: usize = 5;
const RUNS: usize = 5;
const PEER_TIMEOUT: &str = "2s";
const NO_DOCKER: &str = "unix:///nonexistent/stackd-bench/docker.sock";

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !common::have_bus() {
        return;
    }
    cluster();
}

fn host(i: usize) -> String {
    format!("h{i:02}")
}

fn cluster() {
    let t = Instant::now();
    let mut cluster = loopback::Cluster::start(&loopback::Spec {
        name: "bench_cluster_sim",
        hosts: (0..HOSTS).map(host).collect(),
        timeout: PEER_TIMEOUT,
        services_per_host: SERVICES_PER_HOST,
        compose: "services:\n  main:\n    image: stackd-sim/app:1\n",
        auto_start: true,
        env: &[("RUST_LOG", "warn"), ("DOCKER_HOST", NO_DOCKER)],
        args: &["--sim"],
    });
    println!(
        "{HOSTS} stackd --sim started (each with its own bus) in {:.1?}",
        t.elapsed()
    );

    let list = || {
        common::stackctl(
            &cluster.envs[0],
            &cluster.buses[0],
            &["list", "--all-hosts"],
        )
    };
    // Every host answers with its services running before timing starts.
    common::wait_until(
        Duration::from_secs(60),
        "every host's services running",
        || {
            let out = list();
            out.success()
                && out
                    .stdout
                    .lines()
                    .filter(|l| l.contains(" running "))
                    .count()
                    == HOSTS * SERVICES_PER_HOST
        },
    );
    let time_list = |what: &str, expect_rows: usize| {
        let mut runs: Vec<Duration> = (0..RUNS)
            .map(|_| {
                let t = Instant::now();
                let out = list();
                let took = t.elapsed();
                let rows = out
                    .stdout
                    .lines()
                    .filter(|l| l.contains(" running "))
                    .count();
                assert!(rows >= expect_rows, "{rows} running rows: {out}");
                took
            })
            .collect();
        let ms: Vec<u128> = runs.iter().map(Duration::as_millis).collect();
        runs.sort();
        println!(
            "stackctl list --all-hosts, {what}: median {} ms, max {} ms (runs in order: {ms:?} ms)",
            runs[RUNS / 2].as_millis(),
            runs[RUNS - 1].as_millis()
        );
    };
    time_list(
        &format!("{HOSTS} hosts up, {} services", HOSTS * SERVICES_PER_HOST),
        HOSTS * SERVICES_PER_HOST,
    );

    let frozen: Vec<i32> = cluster.daemons[HOSTS - DOWN..]
        .iter()
        .map(|d| i32::try_from(d.pid()).unwrap())
        .collect();
    for pid in &frozen {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), nix::sys::signal::SIGSTOP)
            .unwrap();
    }
    time_list(
        &format!("{DOWN} of {HOSTS} hosts frozen (SIGSTOP; peer timeout {PEER_TIMEOUT})"),
        (HOSTS - DOWN) * SERVICES_PER_HOST,
    );
    for d in cluster.daemons.iter_mut().skip(HOSTS - DOWN) {
        d.kill();
    }
    time_list(
        &format!("{DOWN} of {HOSTS} hosts killed"),
        (HOSTS - DOWN) * SERVICES_PER_HOST,
    );
}
