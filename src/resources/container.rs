//! Sampling many containers at once, straight from their cgroups: one pass
//! over every container's files, no Docker API call.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Instant;

use super::cgroup::{ContainerReading, Files};
use super::{CGROUP_ROOT, PROC_ROOT};

/// One container's figures from one sample: what its cgroup files said
/// (read through `Deref`: `stats.memory`, `stats.pids`, ...) and the CPU
/// share worked out against the previous sample.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerStats {
    pub id: String,
    pub pid: u32,
    /// CPU used since the previous sample, per core as `docker stats`
    /// shows it: 100 is one core busy, and a container on 4 cores may show
    /// up to 400. None the first time a container is seen.
    pub cpu_percent: Option<f64>,
    pub reading: ContainerReading,
}

impl std::ops::Deref for ContainerStats {
    type Target = ContainerReading;

    fn deref(&self) -> &ContainerReading {
        &self.reading
    }
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

/// Samples containers' cgroups; keeps each container's open files (see
/// `handle.rs`) and its previous CPU reading between samples.
#[derive(Debug)]
pub struct ContainerSampler {
    cgroup_root: PathBuf,
    proc_root: PathBuf,
    entries: HashMap<String, Entry>,
    buf: Vec<u8>,
    /// Id strings of figures handed back through [`Self::sample_into`].
    spare_ids: Vec<String>,
    resolved: u64,
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
            spare_ids: Vec::new(),
            resolved: 0,
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
        self.sample_into(now, containers, &mut out);
        out
    }

    /// [`Self::sample_at`] into `out`, replacing what it held. Passing the
    /// same `out` every interval makes a steady-state sample allocate
    /// nothing: the id strings of the previous figures are reused.
    pub fn sample_into<S: AsRef<str>>(
        &mut self,
        now: Instant,
        containers: &[(S, u32)],
        out: &mut Vec<ContainerStats>,
    ) {
        self.spare_ids.extend(out.drain(..).map(|s| s.id));
        out.reserve(containers.len());
        for (id, pid) in containers {
            let (id, pid) = (id.as_ref(), *pid);
            if let Some((reading, cpu_percent)) = self.sample_one(now, id, pid) {
                let mut owned = self.spare_ids.pop().unwrap_or_default();
                owned.clear();
                owned.push_str(id);
                out.push(ContainerStats {
                    id: owned,
                    pid,
                    cpu_percent,
                    reading,
                });
            }
        }
        if self.entries.len() > out.len() {
            let keep: HashSet<&str> = containers.iter().map(|(id, _)| id.as_ref()).collect();
            self.entries.retain(|id, _| keep.contains(id.as_str()));
        }
    }

    /// One container's reading and CPU share. Its files are resolved only
    /// when it is new, or its init PID changed (a restart: the cgroup may
    /// be another, and the CPU delta starts afresh); a container whose
    /// files fail to read is left out and forgotten, so the next sample
    /// resolves it again, and the others are unaffected.
    fn sample_one(
        &mut self,
        now: Instant,
        id: &str,
        pid: u32,
    ) -> Option<(ContainerReading, Option<f64>)> {
        let entry = match self.entries.get_mut(id) {
            Some(e) if e.pid == pid => e,
            _ => {
                self.entries.remove(id);
                let files = match Files::resolve(&self.cgroup_root, &self.proc_root, id, pid) {
                    Ok(files) => files,
                    Err(e) => {
                        tracing::debug!(container = id, pid, error = %e, "container left out of stats");
                        return None;
                    }
                };
                self.resolved += 1;
                self.entries.entry(id.to_string()).or_insert(Entry {
                    pid,
                    files,
                    previous: None,
                })
            }
        };
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
        Some((reading, cpu_percent))
    }

    /// How many times a container's files have been resolved (looked up
    /// from `/proc/PID/cgroup` and opened) since the sampler was made.
    pub fn resolutions(&self) -> u64 {
        self.resolved
    }
}

fn cpu_percent(then: Instant, used_then: u64, now: Instant, used_now: u64) -> Option<f64> {
    let wall = now.checked_duration_since(then)?.as_nanos();
    let used = used_now.checked_sub(used_then)?;
    (wall > 0).then(|| used as f64 * 100.0 / wall as f64)
}
