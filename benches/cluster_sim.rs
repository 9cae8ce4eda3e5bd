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

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{Bus, Daemon, TestEnv};

const HOSTS: usize = 50;
const SERVICES_PER_HOST: usize = 2;
const DOWN: usize = 5;
const RUNS: usize = 5;
const PEER_TIMEOUT: &str = "2s";
const TOKEN: &str = "bench-token-0123456789";
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn token_file(dir: &Path) -> String {
    let token = dir.join("peer.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    common::toml_str(&token.display().to_string())
}

fn host(i: usize) -> String {
    format!("h{i:02}")
}

fn cluster() {
    let envs: Vec<TestEnv> = (0..HOSTS)
        .map(|i| TestEnv::new(&format!("bench_cluster_sim_{i}")))
        .collect();
    let port = free_port();
    let mut text = format!(
        "host = \"{}\"\ncompose_dir = {}\n\n[peer]\ntoken_file = {}\ntimeout = \"{PEER_TIMEOUT}\"\n\n",
        host(0),
        common::toml_str(&envs[0].compose_dir().display().to_string()),
        token_file(envs[0].dir()),
    );
    for i in 0..HOSTS {
        text.push_str(&format!(
            "[hosts.{}]\npeer = \"http://127.0.0.{}:{port}\"\n",
            host(i),
            i + 1
        ));
    }
    for i in 0..HOSTS {
        for s in 0..SERVICES_PER_HOST {
            let svc = envs[0].add_project(
                &format!("{}s{s}", host(i)),
                "services:\n  main:\n    image: stackd-sim/app:1\n",
            );
            text.push_str(&format!(
                "[services.{svc}]\nhost = \"{}\"\nauto_start = true\n",
                host(i)
            ));
        }
    }
    let file = envs[0].dir().join("cluster.toml");
    std::fs::write(&file, &text).unwrap();
    let file_s = file.display().to_string();

    let t = Instant::now();
    let buses: Vec<Bus> = envs.iter().map(|e| Bus::start(e.dir())).collect();
    let mut daemons: Vec<Daemon> = envs
        .iter()
        .zip(&buses)
        .enumerate()
        .map(|(i, (env, bus))| {
            Daemon::start_with(
                env,
                bus,
                &[("RUST_LOG", "warn"), ("DOCKER_HOST", NO_DOCKER)],
                &["--sim", "--config", &file_s, "--host", &host(i)],
            )
        })
        .collect();
    println!(
        "{HOSTS} stackd --sim started (each with its own bus) in {:.1?}",
        t.elapsed()
    );

    let list = || common::stackctl(&envs[0], &buses[0], &["list", "--all-hosts"]);
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

    let frozen: Vec<i32> = daemons[HOSTS - DOWN..]
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
    for d in daemons.iter_mut().skip(HOSTS - DOWN) {
        d.kill();
    }
    time_list(
        &format!("{DOWN} of {HOSTS} hosts killed"),
        (HOSTS - DOWN) * SERVICES_PER_HOST,
    );
}
