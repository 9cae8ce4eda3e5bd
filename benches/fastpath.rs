//! Figures for recovery at Docker's own speed (issue 13), each against its
//! reference in the same run, interleaved round by round:
//!
//! 1. death → running again: the main process of a stackd-managed sleeper
//!    killed by its host PID, against Docker's own `restart: on-failure`
//!    on an identical container outside stackd, each killed after it ran
//!    11 s (Docker backs off for containers that ran less than 10 s)
//!    (goal: median ≤ 1.3×);
//! 2. boot recovery of 20 projects, containers present (exited) and absent,
//!    against Compose `up -d` ×20 in parallel for the same two cases with
//!    `docker-compose` (v1) and `docker compose` (v2) where installed
//!    (goals: present ≤ 0.3×, absent ≤ 1.0×);
//! 3. the daemon idle with 20 services running: its CPU (utime + stime
//!    from `/proc/PID/stat`) over 60 s and its memory (`VmRSS`, `VmHWM`,
//!    threads from `/proc/PID/status`) (goal: RSS < 20 MiB).
//!
//! Each figure says how many Compose processes it took: the daemon runs
//! with `docker` and `docker-compose` wrappers first on its PATH that
//! write one line per Compose invocation.
//!
//! `STACKD_BENCH_ONLY=death,boot,idle` runs only the figures it names,
//! `STACKD_BENCH_ROUNDS=N` N boot rounds instead of 3,
//! `STACKD_BENCH_KILLS=N` N kills each instead of 10.
//! Run it with `cargo bench --bench fastpath` (`STACKD_TEST_COMPOSE=v1`
//! makes the daemon use Compose v1); `cargo test --bench fastpath --
//! --bench` runs it against the debug daemon without a release build.
//! Without `--bench` it does nothing.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use stackd::engine::{ContainerState, Docker};
use stackd::store::Origin;

const KILLS: usize = 10;
const BOOT_ROUNDS: usize = 3;
const PROJECTS: usize = 20;

fn now_usec() -> u64 {
    stackd::time::now_usec()
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("fastpath benchmark skipped: run it with `cargo bench --bench fastpath`");
        return;
    }
    if !have_docker() || !have_bus() {
        println!("fastpath benchmark skipped: needs Docker and dbus-daemon");
        return;
    }
    let image = ensure_image();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let engine = rt.block_on(Docker::connect()).expect("Docker");
    let env = TestEnv::new("bench_fastpath");
    let wrappers = Wrappers::new(env.dir());
    println!(
        "stackd uses {}",
        compose_command()
            .map(|c| c.join(" "))
            .unwrap_or_else(|| "?".into())
    );

    // `STACKD_BENCH_ONLY=death,boot,idle` picks figures (all by default).
    let only = std::env::var("STACKD_BENCH_ONLY").unwrap_or_default();
    let wanted = |what: &str| only.is_empty() || only.split(',').any(|w| w.trim() == what);
    if wanted("death") {
        death_to_running(&rt, &engine, &env, &wrappers, image);
    }
    if wanted("boot") {
        boot_recovery(&rt, &engine, &env, &wrappers, image);
    }
    if wanted("idle") {
        idle(&rt, &engine, &env, &wrappers, image);
    }
}

/// Writes `docker` and `docker-compose` wrappers that append their
/// arguments to a log before running the real program, so a daemon with
/// the wrappers' folder first on its PATH says how often it ran Compose.
struct Wrappers {
    dir: PathBuf,
    log: PathBuf,
}

impl Wrappers {
    fn new(base: &Path) -> Wrappers {
        let dir = base.join("wrap");
        std::fs::create_dir_all(&dir).unwrap();
        let log = base.join("compose-calls.log");
        for (name, test) in [
            ("docker", "[ \"$1\" = compose ]"),
            ("docker-compose", "true"),
        ] {
            let real = which(name).unwrap_or_else(|| panic!("{name} is not on PATH"));
            let script = format!(
                "#!/bin/sh\nif {test}; then echo \"$*\" >> {}; fi\nexec {} \"$@\"\n",
                log.display(),
                real.display()
            );
            let path = dir.join(name);
            std::fs::write(&path, script).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Wrappers { dir, log }
    }

    fn path_var(&self) -> String {
        format!(
            "{}:{}",
            self.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        )
    }

    /// Compose invocations so far.
    fn count(&self) -> usize {
        std::fs::read_to_string(&self.log)
            .map(|t| t.lines().count())
            .unwrap_or(0)
    }
}

fn start_daemon(env: &TestEnv, bus: &Bus, wrappers: &Wrappers) -> Daemon {
    let path = wrappers.path_var();
    Daemon::start_with(env, bus, &[("RUST_LOG", "info"), ("PATH", &path)], &[])
}

/// Kills the container's main process by its host PID and returns when it
/// runs again (a newer start), in ms.
/// Docker's restart policy backs off (100 ms, doubling) unless the
/// container ran at least 10 s, so each is killed only after it ran this
/// long: the reference is Docker's first, immediate restart.
const RAN_AT_LEAST: Duration = Duration::from_secs(11);

/// One kill: how long until it ran again (ms), the kill's time and the
/// new start's (µs since the epoch, Docker's clock for the start).
struct Kill {
    ms: f64,
    killed_usec: u64,
    started_usec: u64,
}

fn kill_and_time(rt: &tokio::runtime::Runtime, engine: &Docker, id: &str) -> Kill {
    let info = loop {
        let info = rt.block_on(engine.inspect(id)).unwrap().unwrap();
        let ran = now_usec().saturating_sub(info.started_at_usec.unwrap_or(0));
        if u128::from(ran) >= RAN_AT_LEAST.as_micros() {
            break info;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let pid = info.pid.expect("running container has a PID");
    let killed = now_usec();
    let t0 = Instant::now();
    run(
        Command::new("kill").args(["-9", &pid.to_string()]),
        COMMAND_TIMEOUT,
    )
    .expect_success();
    loop {
        let c = rt.block_on(engine.inspect(id)).unwrap();
        if let Some(c) = c {
            if let (ContainerState::Running, Some(started)) = (c.state, c.started_at_usec) {
                if started > killed {
                    return Kill {
                        ms: t0.elapsed().as_secs_f64() * 1000.0,
                        killed_usec: killed,
                        started_usec: started,
                    };
                }
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{id} did not come back"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn death_to_running(
    rt: &tokio::runtime::Runtime,
    engine: &Docker,
    env: &TestEnv,
    wrappers: &Wrappers,
    image: &str,
) {
    let web = env.add_sleeper("web");
    env.write_config(&format!(
        "[services.{web}]\nauto_start = true\nrestart = {{ max_restarts = 1000, window = \"1s\", backoff = \"1s..1s\" }}\n"
    ));
    // The reference: the same container, Docker's own restart policy,
    // started by hand outside stackd's config.
    let reference = env.add_project(
        "docker-own",
        &sleeper_compose(image).replace(
            "    init: true\n",
            "    init: true\n    restart: on-failure\n",
        ),
    );
    env.compose(&reference, &["up", "-d"]).expect_success();
    let bus = Bus::start(env.dir());
    let daemon = start_daemon(env, &bus, wrappers);
    wait_until(Duration::from_secs(60), "boot recovery starts it", || {
        running(&web) == 1
    });
    let ours = containers(&web)[0].id.clone();
    let theirs = containers(&reference)[0].id.clone();
    // Let the boot's own reconcile finish.
    std::thread::sleep(Duration::from_secs(2));
    let calls_before = wrappers.count();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut last = None;
    let kills = std::env::var("STACKD_BENCH_KILLS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(KILLS);
    for _ in 0..kills {
        // Each container runs RAN_AT_LEAST before its kill, so each kill
        // is a first recovery for stackd and for Docker alike.
        let k = kill_and_time(rt, engine, &ours);
        a.push(k.ms);
        last = Some(k);
        b.push(kill_and_time(rt, engine, &theirs).ms);
    }
    let calls = wrappers.count() - calls_before;
    let same = containers(&web)[0].id == ours;
    println!();
    println!(
        "death → running again, {kills} kills each, interleaved (main process killed by host PID)"
    );
    println!(
        "  stackd                        p50 {:>7.0} ms  p99 {:>7.0} ms  ({calls} Compose invocations; same container: {same})",
        pct(&a, 50.0),
        pct(&a, 99.0)
    );
    println!(
        "  Docker restart: on-failure    p50 {:>7.0} ms  p99 {:>7.0} ms  (0 Compose invocations)",
        pct(&b, 50.0),
        pct(&b, 99.0)
    );
    println!(
        "  ratio of medians: {:.2}× (goal ≤ 1.3×)",
        pct(&a, 50.0) / pct(&b, 50.0)
    );
    drop(daemon);
    if let Some(k) = last {
        timeline(env, &web, &k);
    }
    env.compose(&reference, &["down", "-t", "0"]);
    env.compose(&web, &["down", "-t", "0"]);
}

/// Whether every project of `names` has a running container.
fn all_run(rt: &tokio::runtime::Runtime, engine: &Docker, names: &[String]) -> bool {
    let cs = rt
        .block_on(engine.list_containers(None))
        .unwrap_or_default();
    names.iter().all(|n| {
        cs.iter()
            .any(|c| &c.project == n && c.state == ContainerState::Running)
    })
}

fn boot_recovery(
    rt: &tokio::runtime::Runtime,
    engine: &Docker,
    env: &TestEnv,
    wrappers: &Wrappers,
    image: &str,
) {
    let names: Vec<String> = (0..PROJECTS)
        .map(|i| env.add_project(&format!("p{i:02}"), &sleeper_compose(image)))
        .collect();
    let mut config = String::new();
    for n in &names {
        config.push_str(&format!("[services.{n}]\nauto_start = true\n\n"));
    }
    env.write_config(&config);
    let bus = Bus::start(env.dir());
    let mut daemon = start_daemon(env, &bus, wrappers);
    let all_running = || all_run(rt, engine, &names);
    wait_until(
        Duration::from_secs(300),
        "first boot deploys all",
        &all_running,
    );
    std::thread::sleep(Duration::from_secs(2));
    daemon.kill();

    let ids = |rt: &tokio::runtime::Runtime| -> Vec<String> {
        rt.block_on(engine.list_containers(None))
            .unwrap_or_default()
            .into_iter()
            .filter(|c| names.contains(&c.project))
            .map(|c| c.id)
            .collect()
    };
    let stop_all = || {
        let ids = ids(rt);
        let mut args = vec!["stop", "-t", "1"];
        args.extend(ids.iter().map(String::as_str));
        docker(&args).expect_success();
    };
    let remove_all = || {
        let ids = ids(rt);
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids.iter().map(String::as_str));
            docker(&args).expect_success();
        }
    };
    let flavors: Vec<(&str, Vec<String>)> = [
        ("docker-compose", vec!["docker-compose"]),
        ("docker compose", vec!["docker", "compose"]),
    ]
    .into_iter()
    .filter(|(_, prog)| {
        Command::new(prog[0])
            .args(&prog[1..])
            .arg("version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(|(n, p)| (n, p.into_iter().map(str::to_string).collect()))
    .collect();

    let mut figures: Vec<(String, Vec<f64>, usize)> = Vec::new();
    let mut add = |what: String, ms: f64, calls: usize| {
        if let Some(f) = figures.iter_mut().find(|f| f.0 == what) {
            f.1.push(ms);
            f.2 += calls;
        } else {
            figures.push((what, vec![ms], calls));
        }
    };
    // Each runner's "present" case runs on the containers its own
    // "absent" case created: Compose v1 and v2 hash a service differently,
    // and containers of the other flavor would be recreated.
    let mut runners: Vec<Option<&(&str, Vec<String>)>> = vec![None];
    runners.extend(flavors.iter().map(Some));
    // `STACKD_BENCH_ROUNDS` shortens a run while looking for the time.
    let rounds = std::env::var("STACKD_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(BOOT_ROUNDS);
    for round in 0..rounds {
        for runner in &runners {
            for present in [false, true] {
                let case = if present { "present" } else { "absent" };
                if present {
                    stop_all();
                } else {
                    remove_all();
                }
                match runner {
                    None => {
                        // stackd: a reboot with the containers exited or gone.
                        env.new_boot();
                        let calls = wrappers.count();
                        let t0 = Instant::now();
                        let spawned = now_usec();
                        let mut d = start_daemon(env, &bus, wrappers);
                        let ready = now_usec();
                        wait_until(Duration::from_secs(300), "boot recovery", &all_running);
                        let ms = t0.elapsed().as_secs_f64() * 1000.0;
                        let seen_running = now_usec();
                        // Let its reconcile finish (and record) before it goes.
                        std::thread::sleep(Duration::from_secs(1));
                        add(
                            format!("stackd boot recovery, containers {case}"),
                            ms,
                            wrappers.count() - calls,
                        );
                        d.kill();
                        if round + 1 == rounds {
                            boot_timeline(env, case, spawned, ready, seen_running);
                        }
                    }
                    Some((flavor, prog)) => {
                        let t0 = Instant::now();
                        let children: Vec<_> = names
                            .iter()
                            .map(|n| {
                                let dir = env.compose_dir().join(n);
                                Command::new(&prog[0])
                                    .args(&prog[1..])
                                    .args(["-p", n, "-f"])
                                    .arg(dir.join("docker-compose.yml"))
                                    .args(["up", "-d"])
                                    .current_dir(&dir)
                                    .stdout(Stdio::null())
                                    .stderr(Stdio::null())
                                    .spawn()
                                    .unwrap()
                            })
                            .collect();
                        for mut c in children {
                            assert!(c.wait().unwrap().success(), "{flavor} up -d failed");
                        }
                        let ms = t0.elapsed().as_secs_f64() * 1000.0;
                        add(
                            format!("{flavor} up -d ×{PROJECTS} in parallel, containers {case}"),
                            ms,
                            PROJECTS,
                        );
                    }
                }
            }
        }
        eprintln!("boot round {round} done");
    }
    println!();
    println!("boot recovery of {PROJECTS} projects, {rounds} rounds, interleaved (daemon start → all running)");
    for (what, ms, calls) in &figures {
        println!(
            "  {what:<60} median {:>7.0} ms  ({} Compose invocations per round)",
            pct(ms, 50.0),
            calls / ms.len()
        );
    }
    for case in ["present", "absent"] {
        let ours = figures
            .iter()
            .find(|f| f.0 == format!("stackd boot recovery, containers {case}"));
        for (flavor, _) in &flavors {
            let theirs = figures.iter().find(|f| {
                f.0 == format!("{flavor} up -d ×{PROJECTS} in parallel, containers {case}")
            });
            if let (Some(o), Some(t)) = (ours, theirs) {
                println!(
                    "  containers {case}: stackd / {flavor}: {:.2}× (goal ≤ {})",
                    pct(&o.1, 50.0) / pct(&t.1, 50.0),
                    if case == "present" { "0.3×" } else { "1.0×" }
                );
            }
        }
    }
    remove_all();
}

/// Where the last kill's recovery spent its time: the recovery task's
/// life and log lines, in ms after the kill, from the daemon's store.
fn timeline(env: &TestEnv, service: &str, k: &Kill) {
    let Ok(store) = stackd::store::Store::open(&env.state_dir()) else {
        return;
    };
    let filter = stackd::store::TaskFilter {
        service: Some(service.to_string()),
        ..Default::default()
    };
    let Some(task) = store
        .list_tasks(&filter)
        .unwrap_or_default()
        .into_iter()
        .filter(|t| t.origin == Origin::Recovery)
        .max_by_key(|t| t.id)
    else {
        return;
    };
    let at = |usec: u64| {
        #[allow(clippy::cast_precision_loss, reason = "a few seconds in µs")]
        let ms = usec.saturating_sub(k.killed_usec) as f64 / 1000.0;
        format!("{ms:>7.1} ms")
    };
    println!(
        "  the last kill's recovery (task {}), after the kill:",
        task.id
    );
    println!("    {}  task queued", at(task.created_usec));
    if let Some(s) = task.started_usec {
        println!("    {}  task started", at(s));
    }
    for l in store.task_log(task.id).unwrap_or_default() {
        println!("    {}  {}", at(l.usec), l.line);
    }
    println!(
        "    {}  container running again (Docker's StartedAt)",
        at(k.started_usec)
    );
    if let Some(f) = task.finished_usec {
        println!("    {}  task finished", at(f));
    }
}

/// Where the last boot recovery of `case` spent its time, in ms after
/// the daemon was spawned: READY, the start-up reconcile, its deploy
/// tasks (first and last queued, started, finished), from the store.
fn boot_timeline(env: &TestEnv, case: &str, spawned: u64, ready: u64, seen_running: u64) {
    let Ok(store) = stackd::store::Store::open(&env.state_dir()) else {
        return;
    };
    let tasks = store
        .list_tasks(&stackd::store::TaskFilter::default())
        .unwrap_or_default();
    let Some(reconcile) = tasks
        .iter()
        .filter(|t| t.kind == "reconcile" && t.origin == Origin::Boot)
        .max_by_key(|t| t.id)
    else {
        return;
    };
    let deploys: Vec<_> = tasks
        .iter()
        .filter(|t| t.id > reconcile.id && t.origin == Origin::Boot && t.kind == "deploy")
        .collect();
    #[allow(clippy::cast_precision_loss, reason = "a few seconds in µs")]
    let at = |usec: u64| format!("{:>7.1} ms", usec.saturating_sub(spawned) as f64 / 1000.0);
    let span = |f: &dyn Fn(&stackd::store::TaskRecord) -> Option<u64>| {
        let v: Vec<u64> = deploys.iter().filter_map(|t| f(t)).collect();
        match (v.iter().min(), v.iter().max()) {
            (Some(a), Some(b)) => format!("{} .. {}", at(*a), at(*b)),
            _ => "-".into(),
        }
    };
    println!("  the last boot recovery, containers {case}, after the daemon was spawned:");
    println!("    {}  READY=1", at(ready));
    println!("    {}  reconcile queued", at(reconcile.created_usec));
    println!(
        "    {} deploy tasks: queued {}, started {}, finished {}",
        deploys.len(),
        span(&|t| Some(t.created_usec)),
        span(&|t| t.started_usec),
        span(&|t| t.finished_usec)
    );
    if let Some(t) = deploys.iter().max_by_key(|t| t.finished_usec) {
        println!("    the last deploy to finish (task {}):", t.id);
        for l in store.task_log(t.id).unwrap_or_default() {
            println!("      {}  {}", at(l.usec), l.line);
        }
    }
    if let Some(f) = reconcile.finished_usec {
        println!("    {}  reconcile finished", at(f));
    }
    println!("    {}  the bench saw all running", at(seen_running));
}

/// How long the idle daemon's CPU is measured.
const IDLE_WINDOW: Duration = Duration::from_secs(60);

fn idle(
    rt: &tokio::runtime::Runtime,
    engine: &Docker,
    env: &TestEnv,
    wrappers: &Wrappers,
    image: &str,
) {
    // On Docker's default bridge: 20 project networks more can exhaust
    // the engine's address pools on a host that runs other tests, and the
    // idle figures do not depend on them.
    let compose = sleeper_compose(image).replace(
        "    init: true\n",
        "    init: true\n    network_mode: bridge\n",
    );
    let names: Vec<String> = (0..PROJECTS)
        .map(|i| env.add_project(&format!("i{i:02}"), &compose))
        .collect();
    let mut config = String::new();
    for n in &names {
        config.push_str(&format!("[services.{n}]\nauto_start = true\n\n"));
    }
    env.write_config(&config);
    let bus = Bus::start(env.dir());
    let daemon = start_daemon(env, &bus, wrappers);
    wait_until(Duration::from_secs(300), "all 20 running", || {
        all_run(rt, engine, &names)
    });
    wait_until(
        Duration::from_secs(120),
        "the start-up reconcile ends",
        // Its summary: "recovered" after a boot, "reconciled" otherwise.
        || {
            let log = daemon.stderr();
            log.contains("stackd_alert=\"recovered\"")
                || log.contains("stackd_alert=\"reconciled\"")
        },
    );
    // Past the start-up work (records, first samples) before measuring.
    std::thread::sleep(Duration::from_secs(10));
    let pid = daemon.pid();
    let (cpu0, t0) = (cpu_ticks(pid), Instant::now());
    std::thread::sleep(IDLE_WINDOW);
    let (cpu1, secs) = (cpu_ticks(pid), t0.elapsed().as_secs_f64());
    #[allow(clippy::cast_precision_loss, reason = "ticks of a minute")]
    let cpu_ms = cpu1.saturating_sub(cpu0) as f64 * 1000.0 / USER_HZ;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    println!();
    println!(
        "the daemon idle with {PROJECTS} services running ({:.0} s window)",
        secs
    );
    println!(
        "  CPU {:>7.0} ms in {secs:.0} s = {:.3} % of one core",
        cpu_ms,
        cpu_ms / (secs * 10.0)
    );
    #[allow(clippy::cast_precision_loss, reason = "kB of a process")]
    let mib = |kb: u64| kb as f64 / 1024.0;
    println!(
        "  VmRSS {:.1} MiB (goal < 20 MiB): {:.1} MiB anonymous, {:.1} MiB file-backed (the executable's pages); VmHWM {:.1} MiB, {} threads",
        mib(field("VmRSS:")),
        mib(field("RssAnon:")),
        mib(field("RssFile:")),
        mib(field("VmHWM:")),
        field("Threads:")
    );
    drop(daemon);
    for n in &names {
        env.compose(n, &["down", "-t", "0"]);
    }
}

/// The unit of `/proc/PID/stat`'s times: `USER_HZ`, 100 on Linux.
const USER_HZ: f64 = 100.0;

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let n = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    n(11) + n(12)
}

fn pct(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return f64::NAN;
    }
    #[allow(
        clippy::cast_possible_truncation,
        reason = "an index into a short list"
    )]
    let i = ((p / 100.0) * (v.len() - 1) as f64).round() as usize;
    v[i.min(v.len() - 1)]
}
