//! Host figures from procfs: CPU (from `/proc/stat` deltas), load, memory,
//! swap, uptime, and disk use of chosen paths through `statvfs`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::parse::{format_error, read_into};
use super::{ResourceError, PROC_ROOT};

/// One reading of the host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostStats {
    /// Busy share of the whole machine since the previous sample, 0–100
    /// (100 = every CPU busy). `None` on a sampler's first sample.
    pub cpu_percent: Option<f64>,
    /// CPUs listed in `/proc/stat`.
    pub cpus: u32,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Bytes.
    pub memory_total: u64,
    /// Bytes the kernel estimates it could hand out without swapping.
    pub memory_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
    pub uptime: Duration,
    /// One entry per configured path that could be measured, in the order
    /// given. Paths that do not exist (Docker not installed) are left out.
    pub disks: Vec<DiskUsage>,
}

impl HostStats {
    pub fn memory_used(&self) -> u64 {
        self.memory_total.saturating_sub(self.memory_available)
    }

    pub fn swap_used(&self) -> u64 {
        self.swap_total.saturating_sub(self.swap_free)
    }
}

/// Disk use of the filesystem holding `path`, as `df` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskUsage {
    pub path: PathBuf,
    /// Bytes.
    pub total: u64,
    pub used: u64,
    /// Bytes an unprivileged user may still write.
    pub available: u64,
}

impl DiskUsage {
    /// Statistics of the filesystem holding `path`.
    pub fn of(path: &Path) -> Result<DiskUsage, ResourceError> {
        let st = nix::sys::statvfs::statvfs(path).map_err(|source| ResourceError::Statvfs {
            path: path.to_path_buf(),
            source,
        })?;
        let frsize = st.fragment_size();
        let blocks = st.blocks();
        let free = st.blocks_free();
        let avail = st.blocks_available();
        Ok(DiskUsage {
            path: path.to_path_buf(),
            total: blocks * frsize,
            used: blocks.saturating_sub(free) * frsize,
            available: avail * frsize,
        })
    }

    /// Used share as `df` computes it: used / (used + available).
    pub fn percent(&self) -> f64 {
        let denom = self.used + self.available;
        if denom == 0 {
            0.0
        } else {
            self.used as f64 * 100.0 / denom as f64
        }
    }
}

/// Aggregate CPU times from the `cpu` line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    total: u64,
    idle: u64,
}

/// Samples host figures; keeps the previous `/proc/stat` reading so each
/// sample can report CPU use since the last one.
#[derive(Debug)]
pub struct HostSampler {
    proc_root: PathBuf,
    disks: Vec<PathBuf>,
    previous: Option<CpuTimes>,
    buf: Vec<u8>,
}

impl Default for HostSampler {
    fn default() -> Self {
        HostSampler::new()
    }
}

impl HostSampler {
    /// Reads the real `/proc`.
    pub fn new() -> HostSampler {
        HostSampler::with_root(PROC_ROOT)
    }

    /// Reads `proc_root` instead of `/proc` (tests use fixture trees).
    pub fn with_root(proc_root: impl Into<PathBuf>) -> HostSampler {
        HostSampler {
            proc_root: proc_root.into(),
            disks: Vec::new(),
            previous: None,
            buf: Vec::new(),
        }
    }

    /// Measures disk use of these paths on every sample (e.g. the state
    /// directory and Docker's data root).
    pub fn with_disks<I, P>(mut self, paths: I) -> HostSampler
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        self.disks = paths.into_iter().map(Into::into).collect();
        self
    }

    pub fn sample(&mut self) -> Result<HostStats, ResourceError> {
        let path = self.proc_root.join("stat");
        let text = read_into(&path, &mut self.buf)?;
        let (times, cpus) = parse_stat(&path, text)?;
        let cpu_percent = self.previous.and_then(|prev| cpu_percent(prev, times));
        self.previous = Some(times);

        let path = self.proc_root.join("loadavg");
        let text = read_into(&path, &mut self.buf)?;
        let load = parse_loadavg(&path, text)?;

        let path = self.proc_root.join("meminfo");
        let text = read_into(&path, &mut self.buf)?;
        let mem = parse_meminfo(&path, text)?;

        let path = self.proc_root.join("uptime");
        let text = read_into(&path, &mut self.buf)?;
        let uptime = parse_uptime(&path, text)?;

        let mut disks = Vec::with_capacity(self.disks.len());
        for p in &self.disks {
            match DiskUsage::of(p) {
                Ok(d) => disks.push(d),
                Err(e) => tracing::debug!(error = %e, "disk left out of host stats"),
            }
        }

        Ok(HostStats {
            cpu_percent,
            cpus,
            load,
            memory_total: mem.total,
            memory_available: mem.available,
            swap_total: mem.swap_total,
            swap_free: mem.swap_free,
            uptime,
            disks,
        })
    }
}

fn cpu_percent(prev: CpuTimes, now: CpuTimes) -> Option<f64> {
    let total = now.total.checked_sub(prev.total)?;
    let idle = now.idle.checked_sub(prev.idle)?;
    if total == 0 {
        return None;
    }
    Some(total.saturating_sub(idle) as f64 * 100.0 / total as f64)
}

/// The aggregate `cpu` line and the number of `cpuN` lines.
fn parse_stat(path: &Path, text: &str) -> Result<(CpuTimes, u32), ResourceError> {
    let mut times = None;
    let mut cpus = 0u32;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("cpu") else {
            continue;
        };
        if rest.starts_with(' ') {
            // user nice system idle iowait irq softirq steal guest guest_nice;
            // guest time is already counted in user, so stop at steal.
            let mut v = [0u64; 8];
            for (slot, field) in v.iter_mut().zip(rest.split_ascii_whitespace()) {
                *slot = field
                    .parse()
                    .map_err(|_| format_error(path, format!("bad cpu field {field:?}")))?;
            }
            times = Some(CpuTimes {
                total: v.iter().sum(),
                idle: v[3] + v[4],
            });
        } else if rest.starts_with(|c: char| c.is_ascii_digit()) {
            cpus += 1;
        }
    }
    let times = times.ok_or_else(|| format_error(path, "no aggregate \"cpu\" line"))?;
    Ok((times, cpus.max(1)))
}

fn parse_loadavg(path: &Path, text: &str) -> Result<[f64; 3], ResourceError> {
    let mut out = [0.0; 3];
    let mut fields = text.split_ascii_whitespace();
    for slot in &mut out {
        *slot = fields
            .next()
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| format_error(path, "expected three load averages"))?;
    }
    Ok(out)
}

struct MemInfo {
    total: u64,
    available: u64,
    swap_total: u64,
    swap_free: u64,
}

fn parse_meminfo(path: &Path, text: &str) -> Result<MemInfo, ResourceError> {
    let (mut total, mut available, mut free, mut swap_total, mut swap_free) =
        (None, None, None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "MemFree" => &mut free,
            "SwapTotal" => &mut swap_total,
            "SwapFree" => &mut swap_free,
            _ => continue,
        };
        let mut parts = rest.split_ascii_whitespace();
        let n: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format_error(path, format!("bad value for {key}")))?;
        let scale = if parts.next() == Some("kB") { 1024 } else { 1 };
        *slot = Some(n * scale);
    }
    let total = total.ok_or_else(|| format_error(path, "no MemTotal"))?;
    Ok(MemInfo {
        total,
        // Kernels before 3.14 lack MemAvailable; MemFree is the closest.
        available: available.or(free).unwrap_or(0),
        swap_total: swap_total.unwrap_or(0),
        swap_free: swap_free.unwrap_or(0),
    })
}

fn parse_uptime(path: &Path, text: &str) -> Result<Duration, ResourceError> {
    text.split_ascii_whitespace()
        .next()
        .and_then(|f| f.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format_error(path, "expected seconds since boot"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/host/proc")
    }

    /// A copy of the host fixture whose `/proc/stat` the test may rewrite.
    fn writable_copy() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for f in ["stat", "loadavg", "meminfo", "uptime"] {
            std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
        }
        dir
    }

    #[test]
    fn fixture_host_figures() {
        let mut s = HostSampler::with_root(fixture()).with_disks(["/", "/no/such/path"]);
        let st = s.sample().unwrap();
        assert_eq!(st.cpu_percent, None, "first sample has no delta");
        assert_eq!(st.cpus, 2);
        assert_eq!(st.load, [6.17, 3.11, 2.26]);
        assert_eq!(st.memory_total, 24_684_092 * 1024);
        assert_eq!(st.memory_available, 23_027_688 * 1024);
        assert_eq!(st.swap_total, 2_097_148 * 1024);
        assert_eq!(st.swap_used(), (2_097_148 - 1_572_860) * 1024);
        assert_eq!(st.uptime, Duration::from_secs_f64(2177.63));
        assert_eq!(st.disks.len(), 1, "a missing path is left out");
        assert!(st.disks[0].total > 0 && st.disks[0].used <= st.disks[0].total);
        let p = st.disks[0].percent();
        assert!((0.0..=100.0).contains(&p), "{p}");
    }

    #[test]
    fn cpu_percent_comes_from_stat_deltas() {
        let dir = writable_copy();
        let stat = |user: u64, idle: u64| {
            format!(
                "cpu  {user} 0 100 {idle} 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\ncpu1 1 0 0 1 0 0 0 0 0 0\nintr 1\n"
            )
        };
        std::fs::write(dir.path().join("stat"), stat(1000, 5000)).unwrap();
        let mut s = HostSampler::with_root(dir.path());
        assert_eq!(s.sample().unwrap().cpu_percent, None);
        // 300 busy ticks and 100 idle ticks since: 75 %.
        std::fs::write(dir.path().join("stat"), stat(1300, 5100)).unwrap();
        assert_eq!(s.sample().unwrap().cpu_percent, Some(75.0));
        // No ticks at all (same file): no figure rather than NaN.
        assert_eq!(s.sample().unwrap().cpu_percent, None);
    }

    #[test]
    fn guest_time_is_not_counted_twice() {
        let p = Path::new("stat");
        let (t, _) = parse_stat(p, "cpu  10 1 2 30 4 5 6 7 100 100\n").unwrap();
        assert_eq!(
            t,
            CpuTimes {
                total: 65,
                idle: 34
            }
        );
    }

    #[test]
    fn bad_files_name_the_file() {
        let dir = writable_copy();
        std::fs::write(dir.path().join("loadavg"), "garbage\n").unwrap();
        let err = HostSampler::with_root(dir.path()).sample().unwrap_err();
        assert!(err.to_string().contains("loadavg"), "{err}");
        let err = HostSampler::with_root("/no/such/proc")
            .sample()
            .unwrap_err();
        assert!(matches!(err, ResourceError::Read { .. }), "{err}");
    }

    #[test]
    fn the_real_proc_parses() {
        let mut s = HostSampler::new();
        s.sample().unwrap();
        std::thread::sleep(Duration::from_millis(50));
        let st = s.sample().unwrap();
        assert!(st.memory_total > 0);
        if let Some(p) = st.cpu_percent {
            assert!((0.0..=100.0).contains(&p), "{p}");
        }
    }
}
