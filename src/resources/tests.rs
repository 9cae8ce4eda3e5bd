//! Container sampling on the fixture trees under `tests/fixtures/cgroup/`,
//! and once on a live container.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::*;

const V1_CGROUPFS_ID: &str = "070645a6ae7c051962738ceda2002363ce92117f5fffe7a7a8c324660c99547e";
const V1_SYSTEMD_ID: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const V2_SYSTEMD_ID: &str = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
const V2_CGROUPFS_ID: &str = "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9";

fn fixture(layout: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cgroup")
        .join(layout)
}

/// Reads one container from the tree at `root` (`sys/fs/cgroup`, `proc`).
fn read_in(root: &Path, id: &str, pid: u32) -> Result<ContainerReading, ResourceError> {
    read_container(&root.join("sys/fs/cgroup"), &root.join("proc"), id, pid)
}

fn read(layout: &str, id: &str, pid: u32) -> Result<ContainerReading, ResourceError> {
    read_in(&fixture(layout), id, pid)
}

/// The v1 and the v2 systemd-driver fixtures copied into one tree below
/// `dir` (a test may change it), with its root.
fn both_systemd(dir: &Path) -> PathBuf {
    let root = dir.join("a");
    copy_tree(&fixture("v1-systemd"), &root);
    copy_tree(&fixture("v2-systemd"), &root);
    root
}

/// A sampler over the tree at `root`.
fn sampler(root: &Path) -> ContainerSampler {
    ContainerSampler::with_roots(root.join("sys/fs/cgroup"), root.join("proc"))
}

/// Copies a fixture tree into a temp dir so a test may change it.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Every figure of one container in each fixture layout.
#[test]
fn each_layout_reads_every_figure() {
    use CgroupDriver::{Cgroupfs, Systemd};
    use CgroupVersion::{V1, V2};
    let cases = [
        (
            // Copied from a busybox container on Docker 20.10, cgroup v1,
            // cgroupfs driver, cpu and cpuacct mounted apart, a hybrid `0::`
            // line present.
            "v1-cgroupfs",
            V1_CGROUPFS_ID,
            4242,
            ContainerReading {
                version: V1,
                driver: Cgroupfs,
                cpu_usage_ns: 45_684_747_965,
                // usage_in_bytes 1949696 − total_inactive_file 1605632
                memory: 344_064,
                // 9223372036854771712 means no limit.
                memory_limit: None,
                // memory.max_usage_in_bytes
                memory_peak: Some(3_817_472),
                pids: Some(1),
                net_rx: 1016,
                net_tx: 0,
            },
        ),
        (
            // Systemd driver, cpu and cpuacct mounted together.
            "v1-systemd",
            V1_SYSTEMD_ID,
            3170,
            ContainerReading {
                version: V1,
                driver: Systemd,
                cpu_usage_ns: 48_213_377_621,
                memory: 98_332_672 - 30_543_872,
                memory_limit: Some(256 << 20),
                memory_peak: Some(121_634_816),
                pids: Some(7),
                net_rx: 18_734_921,
                net_tx: 2_215_310,
            },
        ),
        (
            "v2-systemd",
            V2_SYSTEMD_ID,
            5120,
            ContainerReading {
                version: V2,
                driver: Systemd,
                cpu_usage_ns: 9_137_482_000 * 1000,
                memory: 75_673_600 - 23_068_672,
                memory_limit: Some(512 << 20),
                // memory.peak
                memory_peak: Some(94 << 20),
                pids: Some(12),
                // eth0 + eth1, lo left out.
                net_rx: 5_252_880,
                net_tx: 1_050_576,
            },
        ),
        (
            "v2-cgroupfs",
            V2_CGROUPFS_ID,
            6001,
            ContainerReading {
                version: V2,
                driver: Cgroupfs,
                cpu_usage_ns: 1_503_211_000,
                memory: 52_428_800 - 8_388_608,
                // memory.max "max"
                memory_limit: None,
                // A kernel without memory.peak.
                memory_peak: None,
                pids: Some(3),
                // eth0 + eth1, as in v2-systemd.
                net_rx: 5_252_880,
                net_tx: 1_050_576,
            },
        ),
    ];
    for (layout, id, pid, want) in cases {
        assert_eq!(read(layout, id, pid).unwrap(), want, "{layout}");
    }
}

#[test]
fn cgroup_namespace_paths_fall_back_to_the_driver_layouts() {
    // Seen from inside a cgroup namespace, /proc/PID/cgroup says "/".
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("v2-systemd"), dir.path());
    std::fs::write(dir.path().join("proc/5120/cgroup"), "0::/\n").unwrap();
    let r = read_in(dir.path(), V2_SYSTEMD_ID, 5120).unwrap();
    assert_eq!(r.pids, Some(12));
}

#[test]
fn missing_things_are_named_errors() {
    let err = read("v2-systemd", V2_SYSTEMD_ID, 999_999).unwrap_err();
    assert!(err.is_gone(), "{err}");
    // The cgroup exists under no path tried.
    let err = read("v2-systemd", "0000", 5120);
    assert!(err.is_ok(), "the path from /proc wins over the id");
    let dir = tempfile::tempdir().unwrap();
    copy_tree(&fixture("v2-cgroupfs"), dir.path());
    std::fs::write(dir.path().join("proc/6001/cgroup"), "0::/elsewhere\n").unwrap();
    let err = read_in(dir.path(), "nope", 6001).unwrap_err();
    assert!(matches!(err, ResourceError::NoCgroup { .. }), "{err}");
    assert!(err.to_string().contains("elsewhere"), "{err}");
    std::fs::write(dir.path().join("proc/6001/cgroup"), "garbage\n").unwrap();
    let err = read_in(dir.path(), "nope", 6001).unwrap_err();
    assert!(matches!(err, ResourceError::Format { .. }), "{err}");
}

#[test]
fn sampler_computes_cpu_percent_per_core_and_forgets() {
    let dir = tempfile::tempdir().unwrap();
    let root = both_systemd(dir.path());
    let mut s = sampler(&root);
    let both = [(V1_SYSTEMD_ID, 3170), (V2_SYSTEMD_ID, 5120)];
    let t0 = Instant::now();
    let first = s.sample_at(t0, &both);
    assert_eq!(first.len(), 2);
    assert!(first.iter().all(|c| c.cpu_percent.is_none()));
    assert_eq!(
        first[1].memory_percent(0),
        Some(52_604_928.0 * 100.0 / (512 << 20) as f64)
    );

    // 2 s later: v1 used 3 s of CPU (150 %, more than one core), v2 0.5 s.
    let usage = root.join(format!(
        "sys/fs/cgroup/cpu,cpuacct/system.slice/docker-{V1_SYSTEMD_ID}.scope/cpuacct.usage"
    ));
    std::fs::write(&usage, (48_213_377_621u64 + 3_000_000_000).to_string()).unwrap();
    let stat = root.join(format!(
        "sys/fs/cgroup/system.slice/docker-{V2_SYSTEMD_ID}.scope/cpu.stat"
    ));
    let text = std::fs::read_to_string(&stat).unwrap().replacen(
        "usage_usec 9137482000",
        "usage_usec 9137982000",
        1,
    );
    std::fs::write(&stat, text).unwrap();
    let second = s.sample_at(t0 + Duration::from_secs(2), &both);
    assert_eq!(second[0].cpu_percent, Some(150.0));
    assert_eq!(second[1].cpu_percent, Some(25.0));

    // Only one passed: the other is forgotten.
    let third = s.sample_at(t0 + Duration::from_secs(4), &both[..1]);
    assert_eq!(third.len(), 1);
    assert_eq!(s.tracked(), 1);

    // A container that exited is left out, and forgotten.
    std::fs::remove_file(&usage).unwrap();
    assert!(s
        .sample_at(t0 + Duration::from_secs(6), &both[..1])
        .is_empty());
    assert_eq!(s.tracked(), 0);
}

#[test]
fn a_new_pid_restarts_the_cpu_delta() {
    let root = fixture("v2-cgroupfs");
    let mut s = sampler(&root);
    let t0 = Instant::now();
    s.sample_at(t0, &[(V2_CGROUPFS_ID, 6001)]);
    let again = s.sample_at(t0 + Duration::from_secs(1), &[(V2_CGROUPFS_ID, 6001)]);
    assert_eq!(again[0].cpu_percent, Some(0.0));
    // Same id, another PID that does not exist: left out, not confused.
    assert!(s
        .sample_at(t0 + Duration::from_secs(2), &[(V2_CGROUPFS_ID, 6002)])
        .is_empty());
}

/// Moves every cgroup directory named after `from` to `to` and rewrites
/// `/proc/PID/cgroup` to match: the container went away and came back
/// as another one (`docker compose up` recreating it) under the same PID.
fn recreate_as(root: &Path, pid: u32, from: &str, to: &str) {
    for controller in ["cpu", "cpuacct", "memory", "pids"] {
        let dir = root.join("sys/fs/cgroup").join(controller).join("docker");
        std::fs::rename(dir.join(from), dir.join(to)).unwrap();
    }
    let cgroup = root.join(format!("proc/{pid}/cgroup"));
    let text = std::fs::read_to_string(&cgroup).unwrap().replace(from, to);
    std::fs::write(cgroup, text).unwrap();
}

#[test]
fn files_are_resolved_once_and_again_for_a_new_id() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    copy_tree(&fixture("v1-cgroupfs"), root);
    let mut s = sampler(root);
    let t0 = Instant::now();
    let old = [(V1_CGROUPFS_ID, 4242)];
    for i in 0..3 {
        let out = s.sample_at(t0 + Duration::from_secs(i), &old);
        assert_eq!(out[0].cpu_usage_ns, 45_684_747_965);
    }
    assert_eq!(s.resolutions(), 1, "three samples, one resolution");

    // Gone (not passed), then back with a new id: found at its new place.
    assert!(s
        .sample_at(t0 + Duration::from_secs(3), &old[..0])
        .is_empty());
    assert_eq!(s.tracked(), 0);
    let new_id = "1".repeat(64);
    recreate_as(root, 4242, V1_CGROUPFS_ID, &new_id);
    let usage = root.join(format!(
        "sys/fs/cgroup/cpuacct/docker/{new_id}/cpuacct.usage"
    ));
    std::fs::write(&usage, "7000000000\n").unwrap();
    let new = [(new_id.as_str(), 4242)];
    let out = s.sample_at(t0 + Duration::from_secs(4), &new);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, new_id);
    assert_eq!(
        out[0].cpu_usage_ns, 7_000_000_000,
        "read from the new cgroup"
    );
    assert_eq!(
        out[0].cpu_percent, None,
        "a new container starts a new delta"
    );
    assert_eq!(s.resolutions(), 2);

    // Replaced in one step (the old id no longer passed, the new one is):
    // the old one is forgotten, the new one resolved, the PID may be reused.
    let newer_id = "2".repeat(64);
    recreate_as(root, 4242, &new_id, &newer_id);
    let out = s.sample_at(t0 + Duration::from_secs(5), &[(newer_id.as_str(), 4242)]);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, newer_id);
    assert_eq!((s.tracked(), s.resolutions()), (1, 3));
}

#[test]
fn a_vanished_file_leaves_only_its_container_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = both_systemd(dir.path());
    let mut s = sampler(&root);
    let both = [(V1_SYSTEMD_ID, 3170), (V2_SYSTEMD_ID, 5120)];
    let t0 = Instant::now();
    let mut out = Vec::new();
    s.sample_into(t0, &both, &mut out);
    assert_eq!(out.len(), 2);

    // The v1 container's memory.stat goes (its cgroup being torn down):
    // the v2 container's figures are all still there, and right.
    let stat = root.join(format!(
        "sys/fs/cgroup/memory/system.slice/docker-{V1_SYSTEMD_ID}.scope/memory.stat"
    ));
    let saved = std::fs::read(&stat).unwrap();
    std::fs::remove_file(&stat).unwrap();
    s.sample_into(t0 + Duration::from_secs(1), &both, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, V2_SYSTEMD_ID);
    assert_eq!(out[0].memory, 75_673_600 - 23_068_672);
    assert_eq!(out[0].cpu_percent, Some(0.0), "its CPU delta carried on");
    assert_eq!(s.tracked(), 1, "the unreadable one is forgotten");

    // A file that goes and comes back: the container is resolved again.
    std::fs::write(&stat, saved).unwrap();
    s.sample_into(t0 + Duration::from_secs(2), &both, &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].id, V1_SYSTEMD_ID);
    assert_eq!(out[0].memory, 98_332_672 - 30_543_872);
    assert_eq!(out[0].cpu_percent, None);
    assert_eq!(s.resolutions(), 3);

    // A container whose process is gone while resolving does not stop the
    // one after it either.
    let out = s.sample_at(
        t0 + Duration::from_secs(3),
        &[(V1_SYSTEMD_ID, 999_999), (V2_SYSTEMD_ID, 5120)],
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].id, V2_SYSTEMD_ID);
}

/// On the kernel's own files the sampler keeps the descriptor and re-reads
/// it in place; the second read must be the kernel's new figure, not the
/// first read's text again.
#[test]
fn a_kept_cgroup_handle_reads_fresh_figures() {
    let candidates = [
        ("/sys/fs/cgroup/cpuacct/cpuacct.usage", None),
        ("/sys/fs/cgroup/cpu,cpuacct/cpuacct.usage", None),
        ("/sys/fs/cgroup/cpu.stat", Some("usage_usec")),
    ];
    let Some((path, key)) = candidates.into_iter().find(|(p, _)| Path::new(p).exists()) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "no cgroup CPU account found under /sys/fs/cgroup"
        );
        // Past libtest's capture (it takes only the print macros), so a
        // plain `cargo test` shows the skip.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr().lock(),
            "SKIP: no cgroup CPU account under /sys/fs/cgroup"
        );
        return;
    };
    let handle = handle::Handle::open(PathBuf::from(path)).unwrap();
    assert!(handle.is_kept(), "{path} is on cgroupfs: kept open");
    let mut buf = Vec::new();
    let value = |text: &str| -> u64 {
        match key {
            None => text.trim().parse().unwrap(),
            Some(k) => parse::keyed_u64(Path::new(path), text, k).unwrap().unwrap(),
        }
    };
    let first = value(handle.read(&mut buf).unwrap());
    // Burn some CPU so the whole machine's account moves.
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(50) {
        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
    }
    let second = value(handle.read(&mut buf).unwrap());
    assert!(second > first, "{path}: {first} then {second}");

    // A procfs file with several records reads whole, like a fresh open.
    let net = handle::Handle::open(PathBuf::from("/proc/self/net/dev")).unwrap();
    assert!(net.is_kept());
    for _ in 0..2 {
        let kept = net.read(&mut buf).unwrap().lines().count();
        let fresh = std::fs::read_to_string("/proc/self/net/dev")
            .unwrap()
            .lines()
            .count();
        assert_eq!(kept, fresh);
    }
}

/// Removes the container when the test ends, however it ends.
struct Running(String);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rm", "-f", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A busy loop in a real container measures about one core through the
/// host's real cgroup files (cgroup v1 with the cgroupfs driver on the test
/// machines).
#[tokio::test]
async fn docker_live_container_busy_loop_is_one_core() {
    use crate::engine::testing;
    if testing::docker().await.is_none() {
        return; // SKIP printed, or failed under CI.
    }
    testing::test_image();
    let out = std::process::Command::new("docker")
        .args(["run", "-d", "--rm", testing::test_image()])
        .args(["sh", "-c", "while :; do :; done"])
        .output()
        .expect("run docker");
    assert!(
        out.status.success(),
        "docker run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let running = Running(String::from_utf8_lossy(&out.stdout).trim().to_string());
    let out = std::process::Command::new("docker")
        .args(["inspect", "-f", "{{.State.Pid}}", &running.0])
        .output()
        .expect("docker inspect");
    let pid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(pid > 0);

    let mut s = ContainerSampler::new();
    let mut host = HostSampler::new();
    let containers = [(running.0.as_str(), pid)];
    host.sample().unwrap();
    let ticks_before = process_ticks(pid);
    let start = Instant::now();
    let first = s.sample_at(start, &containers);
    assert_eq!(first.len(), 1, "the container's cgroup was not found");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let end = Instant::now();
    let second = s.sample_at(end, &containers);
    let ticks_after = process_ticks(pid);
    let host_cpu = host.sample().unwrap().cpu_percent.unwrap_or(0.0);

    let c = &second[0];
    let cpu = c.cpu_percent.unwrap();
    // The kernel's own account of the loop process over the same second.
    let ticks_per_sec = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let wall = (end - start).as_secs_f64();
    let by_proc = (ticks_after - ticks_before) as f64 * 100.0 / ticks_per_sec / wall;
    eprintln!("live container: cgroup {cpu:.1}%, /proc/PID/stat {by_proc:.1}%, host busy {host_cpu:.0}%: {c:?}");
    assert!(
        (cpu - by_proc).abs() <= 15.0,
        "cgroup says {cpu:.1}%, /proc/{pid}/stat says {by_proc:.1}%"
    );
    assert!(
        cpu <= 130.0,
        "cpu {cpu}% is more than one busy loop can use"
    );
    if host_cpu < 90.0 {
        assert!(cpu >= 70.0, "cpu {cpu}% is not about one core");
    } else {
        // Every core was busy: the loop got what the scheduler gave it,
        // which the /proc/PID/stat agreement above already checks.
        eprintln!("host saturated ({host_cpu:.0}% busy): one-core bound not asserted");
    }
    assert!(c.memory > 0);
    assert!(c.pids.unwrap_or(0) >= 1);
    assert_eq!(c.pid, pid);
}

/// utime + stime of a process, in clock ticks.
fn process_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}
