//! Figures for moving services between two real daemons (hosts a and b on
//! 127.0.0.1 and .2, one Docker engine): what the hand-off rule adds to a
//! start (StartService asks b first; StopService asks nobody), and how long
//! a stop-first move takes end to end (`stackctl migrate`, back and forth).
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
    let name = names.project("bm");
    let hosts = TwoHosts::start(
        TOKEN,
        "bench_migrate",
        &[(
            &name,
            "stop-first",
            host_sleeper("a", None, None),
            host_sleeper("b", None, None),
        )],
    );
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
    hosts.ctl(0, &["start", &name]).expect_success();
    let (mut there, mut back) = (Vec::new(), Vec::new());
    for _ in 0..MOVES {
        let started = Instant::now();
        hosts.ctl(0, &["migrate", &name, "b"]).expect_success();
        there.push(started.elapsed());
        let started = Instant::now();
        hosts.ctl(1, &["migrate", &name, "a"]).expect_success();
        back.push(started.elapsed());
    }
    println!(
        "stop-first move of a one-container sleeper, {MOVES} each way: a→b median {:?}, b→a median {:?}",
        median(there),
        median(back)
    );
}
