//! Figures for moving services between two real daemons (hosts a and b on
//! 127.0.0.1 and .2, one Docker engine): what the hand-off rule adds to a
//! start (StartService asks b first; StopService asks nobody), and how long
//! a stop-first move takes end to end (`stackctl migrate`).
//!
//! Then a move that carries its data (`migrate --with-volumes`) between two
//! hosts with Docker engines of their own (`tests/common/netns.rs`: network
//! namespaces on a bridge, a dockerd each; needs root): a service holding
//! 200 MiB of random bytes in a named volume, moved a -> b; its transfer
//! rate (as the task log reports it: the tar stream's bytes over the time
//! from the first read on a to b's verified answer) and the whole move,
//! against `docker cp` of the same volume between the same two engines
//! (`docker -H a cp C:/data/. - | docker -H b cp - C2:/data`).
//!
//! `cargo bench --bench migrate`. Without `--bench` (as `cargo test
//! --all-targets` runs it) it does nothing.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/common/engine.rs"]
mod engine;
#[path = "../tests/common/netns.rs"]
mod netns;

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
    if std::env::args().any(|a| a == "volumes") {
        volumes();
        return;
    }
    hand_off();
    volumes();
}

/// MiB in the carried volume.
const VOLUME_MIB: u32 = 200;

fn volumes() {
    use std::process::Command;
    let image = common::ensure_image();
    let name = "bmv";
    let volume = "bmv_data";
    let compose = format!(
        "version: \"2.4\"\nservices:\n  main:\n    image: {image}\n    pull_policy: never\n    init: true\n    stop_grace_period: 5s\n    \
         command: [\"sh\", \"-c\", \"test -f /data/blob || dd if=/dev/urandom of=/data/blob bs=1048576 count={VOLUME_MIB} 2>/dev/null; touch /tmp/ready; trap 'exit 0' TERM; sleep 3600 & wait\"]\n    \
         healthcheck:\n      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]\n      interval: 1s\n      timeout: 1s\n      retries: 60\n    \
         volumes: [\"data:/data\"]\nvolumes:\n  data: {{}}\n"
    );
    let services =
        format!("[services.{name}]\nhost = \"a\"\nauto_start = false\nstart_timeout = \"120s\"\n");
    let Some(mut net) = netns::Net::new("bmv", &["a", "b"], image, &services) else {
        println!("volume move: skipped (needs root and a second dockerd)");
        return;
    };
    net.compose(name, &compose);
    net.start();
    let (a, b) = (net.host("a"), net.host("b"));
    common::wait_until(Duration::from_secs(30), "a and b to see each other", || {
        let out = a.ctl_here(&["--output", "json", "hosts"]);
        serde_json::from_str::<serde_json::Value>(&out.stdout).is_ok_and(|v| {
            v.as_array()
                .is_some_and(|r| !r.is_empty() && r.iter().all(|x| x["reachable"] == true))
        })
    });
    a.ctl(&["start", name]).expect_success();
    common::wait_until(Duration::from_secs(120), "bmv to be healthy on a", || {
        healthy(a, name)
    });

    // docker cp of the same data between the same engines, first (the
    // service is stopped for it, as the move stops it).
    a.ctl(&["stop", name]).expect_success();
    let source = a.engine.container(name);
    b.engine
        .docker(&["volume", "create", "bmv_cp"])
        .expect_success();
    let target = b
        .engine
        .docker(&["create", "-v", "bmv_cp:/data", image, "true"])
        .expect_success()
        .stdout
        .trim()
        .to_string();
    let pipeline = format!(
        "docker -H {} cp {source}:/data/. - | docker -H {} cp - {target}:/data",
        a.engine.host(),
        b.engine.host()
    );
    let started = Instant::now();
    let cp = Command::new("sh")
        .args(["-c", &pipeline])
        .status()
        .expect("sh");
    let cp_time = started.elapsed();
    assert!(cp.success(), "{pipeline}");
    b.engine.docker(&["rm", &target]).expect_success();
    b.engine
        .docker(&["volume", "rm", "bmv_cp"])
        .expect_success();
    a.ctl(&["start", name]).expect_success();
    common::wait_until(
        Duration::from_secs(120),
        "bmv to be healthy on a again",
        || healthy(a, name),
    );

    let started = Instant::now();
    let out = a
        .ctl(&["migrate", name, "b", "--with-volumes"])
        .expect_success();
    let move_time = started.elapsed();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(&format!("volume {volume} received")))
        .unwrap_or_else(|| panic!("no transfer line: {out}"))
        .to_string();
    // "... received: N bytes in X s (R MiB/s), sha256 ..."
    let bytes: f64 = line
        .split("received: ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("bytes");
    let secs: f64 = line
        .split(" bytes in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("seconds");
    // The rate as the task log gives it (from the unrounded time).
    let rate: f64 = line
        .split(" s (")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .expect("MiB/s");
    let mib = bytes / 1_048_576.0;
    println!(
        "volume move a->b of {VOLUME_MIB} MiB of random bytes (tar stream {mib:.1} MiB), engines in two network namespaces on one machine:"
    );
    println!(
        "  stackctl migrate --with-volumes: transfer {secs:.1} s = {rate:.1} MiB/s (read on a, sha256, peer HTTP, verified and extracted on b); whole move {:.1} s",
        move_time.as_secs_f64()
    );
    println!(
        "  docker cp a -> b of the same volume (tar through the docker CLI, no checksum): {:.1} s = {:.1} MiB/s",
        cp_time.as_secs_f64(),
        mib / cp_time.as_secs_f64().max(1e-3)
    );
}

/// `stackctl status NAME` on `h` says healthy.
fn healthy(h: &netns::Host, name: &str) -> bool {
    let out = h.ctl_here(&["--output", "json", "status", name]);
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .is_ok_and(|v| v[0]["health"] == "healthy")
}

fn hand_off() {
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
