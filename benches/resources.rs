//! Figures for resource sampling: what reading cgroups costs.
//!
//! 1. One sample of N running containers read from their cgroups against
//!    Docker's one-shot stats API for the same containers (goal: cgroups at
//!    least 100× cheaper in wall time);
//! 2. the whole machine's CPU (this process, standing in for stackd, plus
//!    dockerd, containerd and every containerd shim) per sample of the same
//!    containers, cgroups against `docker stats --no-stream` (the CLI
//!    process included), interleaved (goal: at least 100× cheaper);
//! 3. the CPU cost of sampling 200 containers every 2 s, on fixture trees
//!    copied 200 times into a temp dir (goal: under 1 % of one core), for
//!    the v1 layout of the test hosts and the v2 systemd layout.
//!
//! Run it with `cargo bench --bench resources`. `cargo test --all-targets`
//! also builds and runs this binary, without `--bench`: then it does nothing.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]
#![allow(
    clippy::cast_possible_truncation,
    reason = "sample counts (a few hundred) divide Durations as u32"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stackd::engine::Docker;

#[path = "../tests/common/image.rs"]
mod image;
use stackd::resources::ContainerSampler;

const LIVE_CONTAINERS: usize = 20;
/// Interleaved rounds of the whole-machine comparison: each round is one
/// window of cgroup samples and one `docker stats --no-stream`.
const MACHINE_ROUNDS: usize = 4;
/// cgroup samples per round: enough CPU that the 10 ms tick resolution of
/// the Docker processes' accounts is small against it.
const MACHINE_SAMPLES: usize = 500;
const CGROUP_ROUNDS: usize = 200;
const DOCKER_ROUNDS: usize = 5;
const FIXTURE_CONTAINERS: usize = 200;
const FIXTURE_SAMPLES: usize = 60;
const INTERVAL: Duration = Duration::from_secs(2);

struct Figure {
    what: String,
    value: String,
    goal: String,
    pass: Option<bool>,
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("resources benchmark skipped: run it with `cargo bench --bench resources`");
        return;
    }
    let mut figures = Vec::new();
    for (layout, id, pid) in [
        (
            "v1-cgroupfs",
            "070645a6ae7c051962738ceda2002363ce92117f5fffe7a7a8c324660c99547e",
            4242,
        ),
        (
            "v2-systemd",
            "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
            5120,
        ),
    ] {
        figures.push(fixture_cost(layout, id, pid));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    figures.extend(runtime.block_on(live_against_docker()));

    println!();
    println!("{:<62} {:>22}  {:<14} result", "figure", "value", "goal");
    for f in &figures {
        let result = match f.pass {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "-",
        };
        println!("{:<62} {:>22}  {:<14} {result}", f.what, f.value, f.goal);
    }
}

/// CPU time this thread has used, from the scheduler's nanosecond account
/// (`/proc/thread-self/schedstat`); the bench samples on one thread.
fn thread_cpu() -> Duration {
    let text = fs::read_to_string("/proc/thread-self/schedstat").expect("read schedstat");
    let ns: u64 = text
        .split_ascii_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat run time");
    Duration::from_nanos(ns)
}

/// utime + stime of a process (10 ms resolution).
fn process_cpu(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let fields: Vec<u64> = rest
        .split_ascii_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 of stat; `rest` starts at 3.
    let ticks = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_sec)
}

/// The Docker daemon's PID, from its pid file or by name.
fn dockerd_pid() -> Option<u32> {
    if let Some(pid) = fs::read_to_string("/var/run/docker.pid")
        .ok()
        .and_then(|t| t.trim().parse().ok())
    {
        return Some(pid);
    }
    fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let comm = fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "dockerd").then_some(pid)
    })
}

/// Copies a fixture layout `count` times into one tree, each copy with its
/// own container id and PID. Returns the tree and the (id, pid) pairs.
fn replicate(
    layout: &str,
    id: &str,
    pid: u32,
    count: usize,
) -> (tempfile::TempDir, Vec<(String, u32)>) {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(layout);
    let mut files = Vec::new();
    walk(&src, &mut files);
    let dir = tempfile::Builder::new()
        .prefix("stackd-bench-cgroup-")
        .tempdir()
        .expect("temp dir");
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let new_id = format!("{i:064x}");
        let new_pid = 100_000 + i as u32;
        for f in &files {
            let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let rel = rel
                .replace(id, &new_id)
                .replace(&format!("proc/{pid}/"), &format!("proc/{new_pid}/"));
            let target = dir.path().join(rel);
            fs::create_dir_all(target.parent().unwrap()).unwrap();
            let text = fs::read_to_string(f).unwrap().replace(id, &new_id);
            fs::write(target, text).unwrap();
        }
        pairs.push((new_id, new_pid));
    }
    (dir, pairs)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            walk(&entry.path(), out);
        } else {
            out.push(entry.path());
        }
    }
}

fn fixture_cost(layout: &str, id: &str, pid: u32) -> Figure {
    let (dir, pairs) = replicate(layout, id, pid, FIXTURE_CONTAINERS);
    let mut sampler =
        ContainerSampler::with_roots(dir.path().join("sys/fs/cgroup"), dir.path().join("proc"));
    // The first sample resolves every cgroup path; the steady state is
    // what a daemon pays every interval, but count the first one too.
    let t0 = Instant::now();
    let cpu0 = thread_cpu();
    let mut seen = 0;
    for i in 0..FIXTURE_SAMPLES {
        let out = sampler.sample_at(t0 + INTERVAL * i as u32, &pairs);
        seen += out.len();
    }
    let used = thread_cpu() - cpu0;
    assert_eq!(
        seen,
        FIXTURE_CONTAINERS * FIXTURE_SAMPLES,
        "every fixture container read"
    );
    let per_sample = used / FIXTURE_SAMPLES as u32;
    let percent = per_sample.as_secs_f64() * 100.0 / INTERVAL.as_secs_f64();
    println!(
        "{layout}: {FIXTURE_SAMPLES} samples of {FIXTURE_CONTAINERS} containers used {used:?} CPU ({per_sample:?} per sample, {:.1} µs per container)",
        per_sample.as_secs_f64() * 1e6 / FIXTURE_CONTAINERS as f64
    );
    Figure {
        what: format!("CPU, {FIXTURE_CONTAINERS} containers every 2 s ({layout} fixtures)"),
        value: format!("{percent:.3} % of a core"),
        goal: "< 1 %".to_string(),
        pass: Some(percent < 1.0),
    }
}

/// Removes the bench's containers however the bench ends.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let _ = Command::new("docker")
            .args(["rm", "-f"])
            .args(&self.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

async fn live_against_docker() -> Vec<Figure> {
    let skipped = |why: String| {
        println!("live comparison skipped: {why}");
        vec![Figure {
            what: "cgroups vs Docker one-shot stats".to_string(),
            value: "skipped".to_string(),
            goal: ">= 100x".to_string(),
            pass: None,
        }]
    };
    let docker = match Docker::connect().await {
        Ok(d) => d,
        Err(e) => return skipped(e.to_string()),
    };
    if let Err(e) = image::busybox_static() {
        return skipped(format!("cannot build the test image: {e}"));
    }
    let image = image::test_image();
    let mut containers = Containers(Vec::new());
    for _ in 0..LIVE_CONTAINERS {
        let out = Command::new("docker")
            .args(["run", "-d", "--rm", image, "sleep", "3600"])
            .output()
            .expect("run docker");
        assert!(
            out.status.success(),
            "docker run: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        containers
            .0
            .push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }
    let mut pairs = Vec::new();
    for id in &containers.0 {
        let info = docker.inspect(id).await.expect("inspect").expect("exists");
        pairs.push((id.clone(), info.pid.expect("running container has a pid")));
    }

    // Through cgroups: a warm-up sample resolves the paths, then the
    // steady state.
    let mut sampler = ContainerSampler::new();
    assert_eq!(
        sampler.sample(&pairs).len(),
        LIVE_CONTAINERS,
        "every cgroup found"
    );
    let start = Instant::now();
    let cpu0 = thread_cpu();
    for _ in 0..CGROUP_ROUNDS {
        assert_eq!(sampler.sample(&pairs).len(), LIVE_CONTAINERS);
    }
    let cgroup_cpu = (thread_cpu() - cpu0) / CGROUP_ROUNDS as u32;
    let cgroup = start.elapsed() / CGROUP_ROUNDS as u32;

    // Through Docker, one container after another, and all at once.
    docker.stats_once(&pairs[0].0).await.expect("stats");
    let start = Instant::now();
    for _ in 0..DOCKER_ROUNDS {
        for (id, _) in &pairs {
            docker.stats_once(id).await.expect("stats");
        }
    }
    let sequential = start.elapsed() / DOCKER_ROUNDS as u32;
    // Docker's CPU: what dockerd and this process (the HTTP client) use.
    let dockerd = dockerd_pid();
    let start = Instant::now();
    let cpu0 = thread_cpu() + dockerd.map_or(Duration::ZERO, process_cpu);
    for _ in 0..DOCKER_ROUNDS {
        let calls = pairs.iter().map(|(id, _)| docker.stats_once(id));
        for r in futures_util::future::join_all(calls).await {
            r.expect("stats");
        }
    }
    let concurrent = start.elapsed() / DOCKER_ROUNDS as u32;
    let docker_cpu =
        (thread_cpu() + dockerd.map_or(Duration::ZERO, process_cpu) - cpu0) / DOCKER_ROUNDS as u32;
    let machine = machine_cpu(&mut sampler, &pairs);
    drop(containers);

    // The ratio against Docker's faster way, to be fair to it.
    let docker_best = sequential.min(concurrent);
    let ratio = docker_best.as_secs_f64() / cgroup.as_secs_f64();
    let cpu_ratio = docker_cpu.as_secs_f64() / cgroup_cpu.as_secs_f64();
    let per_container = cgroup_cpu.as_secs_f64() / LIVE_CONTAINERS as f64;
    let live_200 = per_container * FIXTURE_CONTAINERS as f64 * 100.0 / INTERVAL.as_secs_f64();
    println!(
        "live, {LIVE_CONTAINERS} containers: cgroups {cgroup:?} wall, {cgroup_cpu:?} CPU per sample; Docker stats {sequential:?} one by one, {concurrent:?} all at once, {docker_cpu:?} CPU (dockerd {}+ client) per sample",
        if dockerd.is_some() { "" } else { "not found " }
    );
    println!(
        "Docker's one-shot stats waits for its collector's next 1 s tick, so its wall time is mostly waiting; the CPU ratio counts work"
    );
    let mut figures = machine;
    figures.extend([
        Figure {
            what: format!("one sample of {LIVE_CONTAINERS} live containers via cgroups"),
            value: format!("{cgroup:.2?}"),
            goal: String::new(),
            pass: None,
        },
        Figure {
            what: format!("one sample of {LIVE_CONTAINERS} via Docker one-shot stats (best)"),
            value: format!("{docker_best:.2?}"),
            goal: String::new(),
            pass: None,
        },
        Figure {
            what: "cgroups cheaper than Docker stats by".to_string(),
            value: format!("{ratio:.0}x"),
            goal: ">= 100x".to_string(),
            pass: Some(ratio >= 100.0),
        },
        Figure {
            what: "cgroups cheaper than Docker stats in CPU (dockerd + client) by".to_string(),
            value: format!("{cpu_ratio:.0}x"),
            goal: ">= 100x".to_string(),
            pass: Some(dockerd.is_some() && cpu_ratio >= 100.0),
        },
        Figure {
            what: format!(
                "CPU, live cgroup reads scaled to {FIXTURE_CONTAINERS} containers every 2 s"
            ),
            value: format!("{live_200:.3} % of a core"),
            goal: "< 1 %".to_string(),
            pass: Some(live_200 < 1.0),
        },
    ]);
    figures
}

/// The Docker side's processes: dockerd, containerd and every shim (comm is
/// cut at 15 characters, so `containerd-shim-runc-v2` shows as
/// `containerd-shim`).
fn docker_side_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let comm = fs::read_to_string(e.path().join("comm")).ok()?;
            let comm = comm.trim();
            (comm == "dockerd" || comm == "containerd" || comm.starts_with("containerd-shim"))
                .then_some(pid)
        })
        .collect()
}

/// utime + stime + cutime + cstime of a process: the children it reaped
/// (runc, called by the shims) count too.
fn process_cpu_with_children(pid: u32) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    let rest = &stat[stat.rfind(')').map_or(0, |i| i + 2)..];
    let ticks: u64 = rest
        .split_ascii_whitespace()
        .skip(11)
        .take(4)
        .map(|f| f.parse::<u64>().unwrap_or(0))
        .sum();
    let per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as u64;
    Duration::from_nanos(ticks * 1_000_000_000 / per_sec)
}

/// CPU the Docker side has used so far, over the processes found at the
/// start (a shim that exits meanwhile drops out; none should).
fn docker_side_cpu(pids: &[u32]) -> Duration {
    pids.iter().map(|&p| process_cpu_with_children(p)).sum()
}

/// CPU used by this process's waited-for children (the docker CLI).
fn children_cpu() -> Duration {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(u) = getrusage(UsageWho::RUSAGE_CHILDREN) else {
        return Duration::ZERO;
    };
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec().max(0) as u64)
            + Duration::from_micros(t.tv_usec().max(0) as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

/// Whole-machine CPU per sample of the live containers: cgroup samples
/// against `docker stats --no-stream` for the same containers, in
/// interleaved rounds so both see the same background (other work on the
/// engine counts against both, which is why the Docker side idle between
/// rounds is also printed).
fn machine_cpu(sampler: &mut ContainerSampler, pairs: &[(String, u32)]) -> Vec<Figure> {
    let pids = docker_side_pids();
    let ids: Vec<&str> = pairs.iter().map(|(id, _)| id.as_str()).collect();
    let (mut ours_self, mut ours_docker) = (Duration::ZERO, Duration::ZERO);
    let (mut theirs_cli, mut theirs_docker, mut theirs_self) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut idle_docker = Duration::ZERO;
    let mut idle_wall = Duration::ZERO;
    let mut ours_wall = Duration::ZERO;
    let mut out = Vec::new();
    for _ in 0..MACHINE_ROUNDS {
        // Idle: the Docker side's background over about as long as a window.
        let d0 = docker_side_cpu(&pids);
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_millis(500));
        idle_wall += w0.elapsed();
        idle_docker += docker_side_cpu(&pids) - d0;

        let d0 = docker_side_cpu(&pids);
        let s0 = thread_cpu();
        let w0 = Instant::now();
        for _ in 0..MACHINE_SAMPLES {
            // As the daemon's monitor does: one result vector reused.
            sampler.sample_into(Instant::now(), pairs, &mut out);
            assert_eq!(out.len(), pairs.len());
        }
        ours_wall += w0.elapsed();
        ours_self += thread_cpu() - s0;
        ours_docker += docker_side_cpu(&pids) - d0;

        let d0 = docker_side_cpu(&pids);
        let c0 = children_cpu();
        let s0 = thread_cpu();
        let out = Command::new("docker")
            .args(["stats", "--no-stream"])
            .args(&ids)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .status()
            .expect("run docker stats");
        assert!(out.success(), "docker stats --no-stream failed");
        theirs_self += thread_cpu() - s0;
        theirs_cli += children_cpu() - c0;
        theirs_docker += docker_side_cpu(&pids) - d0;
    }
    let n_ours = (MACHINE_ROUNDS * MACHINE_SAMPLES) as u32;
    let n_theirs = MACHINE_ROUNDS as u32;
    let ours = (ours_self + ours_docker) / n_ours;
    let theirs = (theirs_self + theirs_cli + theirs_docker) / n_theirs;
    let ratio = theirs.as_secs_f64() / ours.as_secs_f64();
    // The Docker side's background rate, for judging the noise in `ours`.
    let idle_rate = idle_docker.as_secs_f64() / idle_wall.as_secs_f64();
    println!(
        "whole machine, {} containers, {} Docker-side processes: cgroups {:?} per sample ({:?} sampler + {:?} Docker side; {:?} wall); docker stats --no-stream {:?} per sample ({:?} CLI + {:?} Docker side)",
        pairs.len(),
        pids.len(),
        ours,
        ours_self / n_ours,
        ours_docker / n_ours,
        ours_wall / n_ours,
        theirs,
        theirs_cli / n_theirs,
        theirs_docker / n_theirs,
    );
    println!(
        "Docker side at rest: {:.2} % of a core (what it would have used anyway during the cgroup windows: {:?} per sample)",
        idle_rate * 100.0,
        Duration::from_secs_f64(idle_rate * ours_wall.as_secs_f64() / f64::from(n_ours)),
    );
    vec![
        Figure {
            what: format!(
                "CPU of one sample of {} containers via cgroups, whole machine",
                pairs.len()
            ),
            value: format!("{ours:.2?}"),
            goal: String::new(),
            pass: None,
        },
        Figure {
            what: format!(
                "CPU of docker stats --no-stream, {} containers, whole machine",
                pairs.len()
            ),
            value: format!("{theirs:.2?}"),
            goal: String::new(),
            pass: None,
        },
        Figure {
            what: "whole-machine CPU: cgroups cheaper than docker stats by".to_string(),
            value: format!("{ratio:.0}x"),
            goal: ">= 100x".to_string(),
            pass: Some(!pids.is_empty() && ratio >= 100.0),
        },
    ]
}
