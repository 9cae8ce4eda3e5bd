//! Figures for the peer endpoint, on loopback:
//!
//! 1. `GET /v1/services` with 50 concurrent keep-alive clients for 5 s:
//!    requests per second and p99, with the daemon idle and again while a
//!    deploy task (a Compose project that takes ~8 s to come up) runs.
//!    Goals: more than 5,000 req/s, p99 under 20 ms.
//! 2. `stackctl list --all-hosts` across three daemons (127.0.0.1-3), and
//!    with a fourth host that never answers (a socket that listens but
//!    never accepts). Goal: the dead host delays the answer by at most the
//!    peer timeout (2 s).
//!
//! `cargo bench --bench peer`. Without `--bench` (as `cargo test
//! --all-targets` runs it) it does nothing. Part 1's deploy and part 2 need
//! Docker and are skipped without it.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::loopback::{self, TOKEN};
use common::{Bus, Daemon, TestEnv};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::Request;
use hyper_util::rt::TokioIo;

const CLIENTS: usize = 50;
const SERVICES: usize = 20;
const RUN: Duration = Duration::from_secs(5);
const LIST_RUNS: usize = 5;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    if !common::have_bus() {
        return;
    }
    services_under_load();
    if common::have_docker() {
        list_all_hosts();
    }
}

fn services_under_load() {
    let env = TestEnv::new("bench_peer");
    let port = loopback::free_port();
    let mut extra = format!(
        "[peer]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {}\n",
        loopback::token_file(env.dir())
    );
    for i in 0..SERVICES {
        let svc = env.add_project(&format!("s{i}"), "services: {}\n");
        extra.push_str(&format!("[services.{svc}]\nauto_start = false\n"));
    }
    let docker = common::have_docker();
    let slow = docker.then(|| {
        let svc = env.add_project("slow", &common::slow_compose(common::ensure_image()));
        extra.push_str(&format!("[services.{svc}]\nauto_start = false\n"));
        svc
    });
    env.write_config(&extra);
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start_with(&env, &bus, &[("RUST_LOG", "warn")], &[]);
    let addr = format!("127.0.0.1:{port}");

    report("idle", &load(&addr));
    if let Some(slow) = slow {
        let out = common::stackctl(&env, &bus, &["--no-block", "start", &slow]).expect_success();
        let task = out.stdout.trim().to_string();
        let latencies = load(&addr);
        let after = common::stackctl(&env, &bus, &["task", &task]);
        let still = after.stdout.contains("running");
        report(
            &format!(
                "while deploy task {task} runs{}",
                if still {
                    ""
                } else {
                    " (it ended before the run did)"
                }
            ),
            &latencies,
        );
    }
}

/// 50 keep-alive clients asking `GET /v1/services` for [`RUN`]; every
/// request's latency, sorted.
fn load(addr: &str) -> Vec<Duration> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut latencies: Vec<Duration> = rt.block_on(async {
        let until = Instant::now() + RUN;
        let mut joins = Vec::new();
        for _ in 0..CLIENTS {
            let addr = addr.to_string();
            joins.push(tokio::spawn(async move {
                let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                    .await
                    .unwrap();
                tokio::spawn(conn);
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let req = Request::get("/v1/services")
                        .header("host", &addr)
                        .header("authorization", format!("Bearer {TOKEN}"))
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    let t = Instant::now();
                    let resp = send.send_request(req).await.unwrap();
                    assert!(resp.status().is_success());
                    let _ = resp.into_body().collect().await.unwrap();
                    lat.push(t.elapsed());
                }
                lat
            }));
        }
        let mut all = Vec::new();
        for j in joins {
            all.extend(j.await.unwrap());
        }
        all
    });
    latencies.sort();
    latencies
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "an index into a short list, computed in f64"
)]
fn report(what: &str, latencies: &[Duration]) {
    let n = latencies.len();
    let p = |q: f64| latencies[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "GET /v1/services ({SERVICES} services), {CLIENTS} keep-alive clients, {RUN:?}, {what}: {n} requests, {:.0} req/s, p50 {:?}, p99 {:?}, max {:?}",
        n as f64 / RUN.as_secs_f64(),
        p(0.50),
        p(0.99),
        latencies[n - 1]
    );
}

/// Three daemons on 127.0.0.1-3, then a fourth host that never answers.
fn list_all_hosts() {
    let cluster = loopback::Cluster::start(&loopback::Spec {
        name: "bench_hosts",
        hosts: ["a", "b", "c"].map(String::from).to_vec(),
        timeout: "2s",
        services_per_host: 5,
        compose: "services: {}\n",
        auto_start: false,
        env: &[("RUST_LOG", "warn")],
        args: &[],
    });
    // stackctl asks a's daemon, which asks b and c: the daemon's cluster
    // file names the hosts.
    let time_list = || {
        let mut runs: Vec<Duration> = (0..LIST_RUNS)
            .map(|_| {
                let t = Instant::now();
                let _ = common::stackctl(
                    &cluster.envs[0],
                    &cluster.buses[0],
                    &["list", "--all-hosts"],
                );
                t.elapsed()
            })
            .collect();
        runs.sort();
        runs
    };
    let runs = time_list();
    println!(
        "stackctl list --all-hosts, 3 hosts, 15 services, {LIST_RUNS} runs: median {:?}, max {:?}",
        runs[LIST_RUNS / 2],
        runs[LIST_RUNS - 1]
    );

    // Host d listens (the handshake completes in the kernel) but never
    // accepts or answers.
    let dead = std::net::TcpListener::bind("127.0.0.4:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    // Only a reloads the file that names d; b and c keep theirs.
    std::fs::write(
        &cluster.file,
        format!("{}[hosts.d]\npeer = \"http://{dead_addr}\"\n", cluster.text),
    )
    .unwrap();
    common::stackctl(&cluster.envs[0], &cluster.buses[0], &["reload"]).expect_success();
    let runs = time_list();
    println!(
        "stackctl list --all-hosts, 3 hosts + 1 that never answers (peer timeout 2 s), {LIST_RUNS} runs: median {:?}, max {:?}",
        runs[LIST_RUNS / 2],
        runs[LIST_RUNS - 1]
    );
    drop(dead);
}
