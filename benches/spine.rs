//! Figures for the spine: how fast and how small the daemon is.
//!
//! Speed and memory goals live here, never in timed tests. One run prints:
//!
//! 1. `ListServices` latency with 500 configured services, over a private bus;
//! 2. the daemon's resident memory with 200 configured services;
//! 3. the time from exec to `READY=1`, median of 10 starts;
//! 4. boot recovery of 20 sleeper projects against the same 20
//!    `compose up -d` run from a shell one after another and all at once.
//!
//! Run it with `cargo bench --bench spine`. `cargo test --all-targets` also
//! builds and runs this binary, without `--bench`: then it does nothing.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Bus, Daemon, TestEnv};
use stackd::dbus::client::{Client, Target};

const LIST_SERVICES: usize = 500;
const LIST_CALLS: usize = 2_000;
const LIST_WARMUP: usize = 100;
const MEMORY_SERVICES: usize = 200;
const MEMORY_SETTLE: Duration = Duration::from_secs(3);
const READY_STARTS: usize = 10;
const BOOT_PROJECTS: usize = 20;
/// How long boot recovery may take before the bench gives up.
const BOOT_TIMEOUT: Duration = Duration::from_secs(600);
/// The daemon logs at this level in the bench (the harness's default is
/// debug, which is not what a host runs).
const LOG_LEVEL: &str = "info";

/// One line of the final table.
struct Figure {
    what: String,
    value: String,
    goal: String,
    /// None: a figure without a goal.
    pass: Option<bool>,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("spine benchmark skipped: run it with `cargo bench --bench spine`");
        return;
    }
    if !common::have_bus() {
        println!("spine benchmark skipped: no dbus-daemon/busctl");
        return;
    }

    // One private bus for every phase; the daemons run one at a time.
    let bus_dir = tempfile::Builder::new()
        .prefix("stackd-bench-bus-")
        .tempdir()
        .expect("temp dir for the bus");
    let bus = Bus::start(bus_dir.path());
    // The in-process client finds the bus the way stackctl --user does.
    std::env::set_var("DBUS_SESSION_BUS_ADDRESS", bus.address());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");

    let mut figures = Vec::new();
    list_services(&bus, &rt, &mut figures);
    memory(&bus, &mut figures);
    ready(&bus, &mut figures);
    boot_recovery(&bus, &rt, &mut figures);

    println!();
    println!("== summary (one run; 2 shared cores, other work may be running) ==");
    println!("{:<46} {:>16}  {:<14} result", "figure", "value", "goal");
    for f in &figures {
        let result = match f.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        };
        println!("{:<46} {:>16}  {:<14} {result}", f.what, f.value, f.goal);
    }
    drop(bus);
}

/// An env with `count` tiny (never started) projects, each configured with
/// `auto_start = false`.
fn idle_env(name: &str, count: usize) -> TestEnv {
    let env = TestEnv::new(name);
    let compose = common::sleeper_compose(common::ensure_image());
    let mut config = String::new();
    for i in 0..count {
        let project = env.add_project(&format!("s{i:03}"), &compose);
        let _ = writeln!(config, "[services.{project}]\nauto_start = false\n");
    }
    env.write_config(&config);
    env
}

fn start(env: &TestEnv, bus: &Bus) -> Daemon {
    Daemon::start_with(env, bus, &[("RUST_LOG", LOG_LEVEL)], &[])
}

/// Stops a daemon and gives the bus a moment to drop its name.
fn finish(mut daemon: Daemon) {
    daemon.kill();
    drop(daemon);
    thread::sleep(Duration::from_millis(100));
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

// ---------------------------------------------------------------------------
// 1. ListServices with 500 services
// ---------------------------------------------------------------------------

fn list_services(bus: &Bus, rt: &tokio::runtime::Runtime, figures: &mut Vec<Figure>) {
    println!("== 1. ListServices, {LIST_SERVICES} configured services, {LIST_CALLS} calls ==");
    let env = idle_env("bench-list", LIST_SERVICES);
    let daemon = start(&env, bus);
    let mut times = rt.block_on(async {
        let client = Client::connect(&Target::Session)
            .await
            .expect("connect to the bench bus");
        for _ in 0..LIST_WARMUP {
            let rows = client.list_services().await.expect("ListServices");
            assert_eq!(
                rows.len(),
                LIST_SERVICES,
                "ListServices returned too few rows"
            );
        }
        let mut times = Vec::with_capacity(LIST_CALLS);
        for _ in 0..LIST_CALLS {
            let t = Instant::now();
            let rows = client.list_services().await.expect("ListServices");
            times.push(t.elapsed());
            assert_eq!(rows.len(), LIST_SERVICES);
        }
        times
    });
    finish(daemon);
    times.sort();
    let mean = times.iter().sum::<Duration>() / u32::try_from(times.len()).unwrap_or(1);
    let (p50, p99) = (percentile(&times, 50), percentile(&times, 99));
    let max = times[times.len() - 1];
    println!(
        "p50 {}  p99 {}  mean {}  min {}  max {}",
        ms(p50),
        ms(p99),
        ms(mean),
        ms(times[0]),
        ms(max)
    );
    figures.push(Figure {
        what: format!("ListServices p50 ({LIST_SERVICES} services)"),
        value: ms(p50),
        goal: "< 2 ms".into(),
        pass: Some(p50 < Duration::from_millis(2)),
    });
    figures.push(Figure {
        what: "ListServices p99".into(),
        value: ms(p99),
        goal: String::new(),
        pass: None,
    });
    figures.push(Figure {
        what: "ListServices mean".into(),
        value: ms(mean),
        goal: String::new(),
        pass: None,
    });
}

// ---------------------------------------------------------------------------
// 2. Resident memory with 200 services
// ---------------------------------------------------------------------------

/// VmRSS and VmHWM of `pid`, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn memory(bus: &Bus, figures: &mut Vec<Figure>) {
    println!(
        "== 2. resident memory, {MEMORY_SERVICES} configured services, {MEMORY_SETTLE:?} after READY =="
    );
    let env = idle_env("bench-memory", MEMORY_SERVICES);
    let daemon = start(&env, bus);
    thread::sleep(MEMORY_SETTLE);
    let (rss, hwm) = memory_kib(daemon.pid());
    finish(daemon);
    println!("VmRSS {}  VmHWM {}", mib(rss), mib(hwm));
    let goal = 20 * 1024;
    figures.push(Figure {
        what: format!("VmRSS ({MEMORY_SERVICES} services)"),
        value: mib(rss),
        goal: "< 20 MiB".into(),
        pass: Some(rss < goal),
    });
    figures.push(Figure {
        what: format!("VmHWM ({MEMORY_SERVICES} services)"),
        value: mib(hwm),
        goal: "< 20 MiB".into(),
        pass: Some(hwm < goal),
    });
}

// ---------------------------------------------------------------------------
// 3. exec → READY=1
// ---------------------------------------------------------------------------

fn ready(bus: &Bus, figures: &mut Vec<Figure>) {
    println!("== 3. exec to READY=1, {READY_STARTS} starts, 3 configured services ==");
    let env = idle_env("bench-ready", 3);
    let mut times: Vec<Duration> = (0..READY_STARTS)
        .map(|_| {
            let daemon = start(&env, bus);
            let t = daemon.ready_after();
            finish(daemon);
            t
        })
        .collect();
    let first = times[0];
    times.sort();
    let median = percentile(&times, 50);
    println!(
        "median {}  min {}  max {}  (first start, empty store: {})",
        ms(median),
        ms(times[0]),
        ms(times[times.len() - 1]),
        ms(first)
    );
    figures.push(Figure {
        what: format!("exec to READY=1 (median of {READY_STARTS})"),
        value: ms(median),
        goal: "< 100 ms".into(),
        pass: Some(median < Duration::from_millis(100)),
    });
}

// ---------------------------------------------------------------------------
// 4. Boot recovery of 20 projects vs the shell
// ---------------------------------------------------------------------------

/// Removes every container and network of the env's projects.
fn clean(env: &TestEnv) {
    common::remove_projects(&format!("{}-", env.prefix()));
}

/// How many of the env's projects have a running container (one `docker ps`).
fn running_projects(env: &TestEnv) -> usize {
    let format = format!("{{{{.Label \"{}\"}}}}", common::PROJECT_LABEL);
    let filter = format!("label={}", common::PROJECT_LABEL);
    let out = common::docker(&[
        "ps",
        "--filter",
        &filter,
        "--filter",
        "status=running",
        "--format",
        &format,
    ])
    .expect_success();
    let prefix = format!("{}-", env.prefix());
    let mut projects: Vec<&str> = out
        .stdout
        .lines()
        .filter(|p| p.starts_with(&prefix))
        .collect();
    projects.sort_unstable();
    projects.dedup();
    projects.len()
}

#[track_caller]
fn assert_all_running(env: &TestEnv, what: &str) {
    let n = running_projects(env);
    assert_eq!(
        n, BOOT_PROJECTS,
        "{what}: {n} of {BOOT_PROJECTS} projects running"
    );
}

fn shell_sequential(env: &TestEnv, projects: &[String]) -> Duration {
    let t = Instant::now();
    for p in projects {
        env.compose(p, &["up", "-d"]).expect_success();
    }
    t.elapsed()
}

fn shell_parallel(env: &TestEnv, projects: &[String]) -> Duration {
    let t = Instant::now();
    thread::scope(|s| {
        let handles: Vec<_> = projects
            .iter()
            .map(|p| s.spawn(move || env.compose(p, &["up", "-d"])))
            .collect();
        for h in handles {
            h.join().expect("compose thread").expect_success();
        }
    });
    t.elapsed()
}

fn unix_usec(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// A fresh store and a new boot id, then the daemon from exec until its
/// start-up reconcile task has finished (all deploys done). Returns the time
/// from exec to the task's finish and its READY time.
fn stackd_recovery(
    env: &TestEnv,
    bus: &Bus,
    rt: &tokio::runtime::Runtime,
    config: &str,
) -> (Duration, Duration) {
    let _ = fs::remove_dir_all(env.state_dir());
    fs::create_dir(env.state_dir()).expect("state dir");
    env.new_boot();
    env.write_config(config);

    let spawned = SystemTime::now();
    let daemon = start(env, bus);
    let ready = daemon.ready_after();
    let finished_usec = rt.block_on(async {
        let client = Client::connect(&Target::Session)
            .await
            .expect("connect to the bench bus");
        let deadline = Instant::now() + BOOT_TIMEOUT;
        loop {
            assert!(
                Instant::now() < deadline,
                "the start-up reconcile did not finish within {BOOT_TIMEOUT:?}\n{}",
                daemon.stderr()
            );
            let tasks = client.tasks(None, &[], Some(100)).await.expect("ListTasks");
            if let Some(row) = tasks.iter().find(|t| t.kind == "reconcile") {
                let task = client.task(row.id).await.expect("GetTask");
                if task.finished() {
                    assert_eq!(
                        task.state,
                        "succeeded",
                        "the start-up reconcile did not succeed: {task:?}\n{}",
                        daemon.stderr()
                    );
                    return task.finished_usec;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    finish(daemon);
    let took = Duration::from_micros(finished_usec.saturating_sub(unix_usec(spawned)));
    (took, ready)
}

fn boot_recovery(bus: &Bus, rt: &tokio::runtime::Runtime, figures: &mut Vec<Figure>) {
    println!("== 4. boot recovery of {BOOT_PROJECTS} sleeper projects vs the shell ==");
    if !common::have_docker() {
        println!("skipped: no Docker engine / Compose / static busybox");
        return;
    }
    let env = TestEnv::new("bench-boot");
    let projects: Vec<String> = (0..BOOT_PROJECTS)
        .map(|i| env.add_sleeper(&format!("b{i:02}")))
        .collect();
    let mut services = String::new();
    for p in &projects {
        let _ = writeln!(services, "[services.{p}]\nauto_start = true\n");
    }
    let compose = common::compose_command().unwrap_or_default().join(" ");
    println!("compose command: {compose}");

    clean(&env);
    let sequential = shell_sequential(&env, &projects);
    assert_all_running(&env, "sequential shell");
    clean(&env);
    println!("shell, one after another:  {}", secs(sequential));

    let parallel = shell_parallel(&env, &projects);
    assert_all_running(&env, "parallel shell");
    clean(&env);
    println!("shell, all at once:        {}", secs(parallel));

    let (wide, wide_ready) = stackd_recovery(
        &env,
        bus,
        rt,
        &format!("max_parallel = {BOOT_PROJECTS}\n\n{services}"),
    );
    assert_all_running(&env, "stackd max_parallel = 20");
    clean(&env);
    println!(
        "stackd, max_parallel = {BOOT_PROJECTS}:   {} (READY after {})",
        secs(wide),
        ms(wide_ready)
    );

    let (narrow, narrow_ready) = stackd_recovery(&env, bus, rt, &services);
    assert_all_running(&env, "stackd max_parallel default");
    clean(&env);
    println!(
        "stackd, max_parallel = 4 (default): {} (READY after {})",
        secs(narrow),
        ms(narrow_ready)
    );

    let ratio = wide.as_secs_f64() / parallel.as_secs_f64();
    let ratio4 = narrow.as_secs_f64() / parallel.as_secs_f64();
    println!(
        "stackd/parallel: {ratio:.2} (max_parallel = {BOOT_PROJECTS}), {ratio4:.2} (default 4)"
    );

    figures.push(Figure {
        what: format!("recovery: shell sequential ({BOOT_PROJECTS})"),
        value: secs(sequential),
        goal: String::new(),
        pass: None,
    });
    figures.push(Figure {
        what: format!("recovery: shell parallel ({BOOT_PROJECTS})"),
        value: secs(parallel),
        goal: String::new(),
        pass: None,
    });
    figures.push(Figure {
        what: format!("recovery: stackd, max_parallel = {BOOT_PROJECTS}"),
        value: secs(wide),
        goal: String::new(),
        pass: None,
    });
    figures.push(Figure {
        what: "recovery: stackd, max_parallel = 4 (default)".into(),
        value: secs(narrow),
        goal: String::new(),
        pass: None,
    });
    figures.push(Figure {
        what: format!("ratio stackd(max_parallel = {BOOT_PROJECTS})/parallel"),
        value: format!("{ratio:.2}"),
        goal: "<= 1.10".into(),
        pass: Some(ratio <= 1.10),
    });
    figures.push(Figure {
        what: "ratio stackd(default 4)/parallel".into(),
        value: format!("{ratio4:.2}"),
        goal: "(info)".into(),
        pass: None,
    });
}
