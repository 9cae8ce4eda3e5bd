//! Sampling many containers at once, straight from their cgroups: one pass
//! over every container's files, no Docker API call.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use super::cgroup::{CgroupDriver, CgroupVersion, ContainerReading, Files};
use super::{CGROUP_ROOT, PROC_ROOT};

/// One container's figures from one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStats {
    pub id: String,
    pub pid: u32,
    pub version: CgroupVersion,
    pub driver: CgroupDriver,
    /// CPU used since the previous sample, per core as `docker stats`
    /// shows it: 100 is one core busy, and a container on 4 cores may show
    /// up to 400. None the first time a container is seen.
    pub cpu_percent: Option<f64>,
    /// Total CPU time used since the container started, in ns.
    pub cpu_usage_ns: u64,
    /// Bytes in use without the inactive page cache (as `docker stats`).
    pub memory: u64,
    /// None: no limit.
    pub memory_limit: Option<u64>,
    /// The highest use since the container started, where the kernel
    /// keeps it (see [`ContainerReading::memory_peak`]).
    pub memory_peak: Option<u64>,
    pub pids: Option<u64>,
    pub net_rx: u64,
    pub net_tx: u64,
}

impl ContainerStats {
    /// Memory use as a share of the limit, or of `host_memory` when the
    /// container has none. None when neither is known.
    pub fn memory_percent(&self, host_memory: u64) -> Option<f64> {
        let of = self.memory_limit.unwrap_or(host_memory);
        (of > 0).then(|| self.memory as f64 * 100.0 / of as f64)
    }
}

#[derive(Debug)]
struct Entry {
    pid: u32,
    files: Files,
    /// When and how much CPU time the previous sample saw.
    previous: Option<(Instant, u64)>,
}

/// Samples containers' cgroups; keeps each container's file paths and its
/// previous CPU reading between samples.
#[derive(Debug)]
pub struct ContainerSampler {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
    entries: HashMap<String, Entry>,
    buf: Vec<u8>,
}

impl Default for ContainerSampler {
    fn default() -> Self {
        ContainerSampler::new()
    }
}

impl ContainerSampler {
    /// Reads `/sys/fs/cgroup` and `/proc`.
    pub fn new() -> ContainerSampler {
        ContainerSampler::with_roots(CGROUP_ROOT, PROC_ROOT)
    }

    /// Reads other roots (tests use fixture trees).
    pub fn with_roots(
        cgroup_root: impl Into<PathBuf>,
        proc_root: impl Into<PathBuf>,
    ) -> ContainerSampler {
        ContainerSampler {
            cgroup_root: cgroup_root.into(),
            proc_root: proc_root.into(),
            entries: HashMap::new(),
            buf: Vec::with_capacity(8192),
        }
    }

    /// Containers the sampler currently remembers.
    pub fn tracked(&self) -> usize {
        self.entries.len()
    }

    /// Samples `(container id, init pid)` pairs now. See [`Self::sample_at`].
    pub fn sample<S: AsRef<str>>(&mut self, containers: &[(S, u32)]) -> Vec<ContainerStats> {
        self.sample_at(Instant::now(), containers)
    }

    /// Samples `(container id, init pid)` pairs as of `now`. Containers
    /// whose files cannot be read (they exited meanwhile) are left out of
    /// the result; containers not passed are forgotten.
    pub fn sample_at<S: AsRef<str>>(
        &mut self,
        now: Instant,
        containers: &[(S, u32)],
    ) -> Vec<ContainerStats> {
        let mut out = Vec::with_capacity(containers.len());
        for (id, pid) in containers {
            let (id, pid) = (id.as_ref(), *pid);
            if let Some(stats) = self.sample_one(now, id, pid) {
                out.push(stats);
            }
        }
        if self.entries.len() > out.len() {
            let keep: HashSet<&str> = containers.iter().map(|(id, _)| id.as_ref()).collect();
            self.entries.retain(|id, _| keep.contains(id.as_str()));
        }
        out
    }

    fn sample_one(&mut self, now: Instant, id: &str, pid: u32) -> Option<ContainerStats> {
        // A new PID means the container restarted: find its cgroup again
        // and start the CPU delta afresh.
        if self.entries.get(id).is_some_and(|e| e.pid != pid) {
            self.entries.remove(id);
        }
        if !self.entries.contains_key(id) {
            match Files::resolve(&self.cgroup_root, &self.proc_root, id, pid) {
                Ok(files) => {
                    self.entries.insert(
                        id.to_string(),
                        Entry {
                            pid,
                            files,
                            previous: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::debug!(container = id, pid, error = %e, "container left out of stats");
                    return None;
                }
            }
        }
        let entry = self.entries.get_mut(id)?;
        let reading = match entry.files.read(&mut self.buf) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(container = id, pid, error = %e, "container left out of stats");
                self.entries.remove(id);
                return None;
            }
        };
        let cpu_percent = entry
            .previous
            .and_then(|(then, used)| cpu_percent(then, used, now, reading.cpu_usage_ns));
        entry.previous = Some((now, reading.cpu_usage_ns));
        Some(stats(id, pid, cpu_percent, reading))
    }
}

fn cpu_percent(then: Instant, used_then: u64, now: Instant, used_now: u64) -> Option<f64> {
    let wall = now.checked_duration_since(then)?.as_nanos();
    let used = used_now.checked_sub(used_then)?;
    (wall > 0).then(|| used as f64 * 100.0 / wall as f64)
}

fn stats(id: &str, pid: u32, cpu_percent: Option<f64>, r: ContainerReading) -> ContainerStats {
    ContainerStats {
        id: id.to_string(),
        pid,
        version: r.version,
        driver: r.driver,
        cpu_percent,
        cpu_usage_ns: r.cpu_usage_ns,
        memory: r.memory,
        memory_limit: r.memory_limit,
        memory_peak: r.memory_peak,
        pids: r.pids,
        net_rx: r.net_rx,
        net_tx: r.net_tx,
    }
}
