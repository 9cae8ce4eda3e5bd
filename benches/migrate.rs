//! Figures for moving services between two real daemons (hosts a and b on
//! 127.0.0.1 and .2, one Docker engine): what the hand-off rule adds to a
//! start (StartService asks b first; StopService asks nobody), and how long
//! a stop-first move takes end to end (`stackctl migrate`).
//!
//! `cargo bench --bench migrate`. Without `--bench` (as `cargo test
//! --all-targets` runs it) it does nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{busctl, host_sleeper, TestEnv, TwoHosts};

const CALLS: usize = 10;
const MOVES: usize = 3;
const TOKEN: &str = "bench-token-0123456789";

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !common::have_docker() || !common::have_bus() {
        return;
    }
    let names = TestEnv::new("bench_migrate");
    // Every daemon sees the one Docker engine, so a host a service left
    // still sees it running (on b) and would refuse to take it back: each
    // move gets its own service.
    let moved: Vec<String> = (0..MOVES)
        .map(|i| names.project(&format!("bm{i}")))
        .collect();
    let name = moved[0].clone();
    let services: Vec<(&str, &str, String, String)> = moved
        .iter()
        .map(|n| {
            (
                n.as_str(),
                "stop-first",
                host_sleeper("a", None, None),
                host_sleeper("b", None, None),
            )
        })
        .collect();
    let hosts = TwoHosts::start(TOKEN, "bench_migrate", &services);
    let call = |method: &str| {
        let started = Instant::now();
        busctl(
            &hosts.buses[0],
            &[
                "call",
                "org.stackd1",
                "/org/stackd1",
                "org.stackd1.Manager",
                method,
                "s",
                &name,
            ],
        )
        .expect_success();
        started.elapsed()
    };
    let (mut starts, mut stops) = (Vec::new(), Vec::new());
    for _ in 0..CALLS {
        starts.push(call("StartService"));
        stops.push(call("StopService"));
    }
    println!(
        "busctl call on a, {CALLS} each: StartService (asks b) median {:?}, StopService (asks nobody) median {:?}",
        median(starts),
        median(stops)
    );
    let mut times = Vec::new();
    for n in &moved {
        hosts.ctl(0, &["start", n]).expect_success();
        let started = Instant::now();
        hosts.ctl(0, &["migrate", n, "b"]).expect_success();
        times.push(started.elapsed());
    }
    println!(
        "stop-first move a→b of a one-container sleeper, {MOVES} services: median {:?}, max {:?}",
        median(times.clone()),
        times.iter().max().copied().unwrap_or_default()
    );
}
