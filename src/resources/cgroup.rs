//! Finding a container's cgroup from its init PID and reading its figures,
//! for cgroup v1 (cpuacct, memory, pids controllers) and v2 (unified).
//!
//! Both Docker cgroup drivers are handled: cgroupfs puts a container at
//! `/docker/<id>`, systemd at `/system.slice/docker-<id>.scope`. The path
//! comes from `/proc/PID/cgroup`; when that directory does not exist under
//! the cgroup root (stackd itself in a cgroup namespace) the two driver
//! layouts are tried with the container id.

use std::path::{Path, PathBuf};

use super::handle::Handle;
use super::parse::{format_error, keyed_u64, net_dev, parse_u64, read_into};
use super::ResourceError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupVersion {
    V1,
    V2,
}

impl CgroupVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            CgroupVersion::V1 => "1",
            CgroupVersion::V2 => "2",
        }
    }
}

/// Which Docker cgroup driver placed the container, as its path shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CgroupDriver {
    /// `/docker/<id>`
    Cgroupfs,
    /// `/system.slice/docker-<id>.scope`
    Systemd,
    /// Some other place (a custom `--cgroup-parent`, a nested engine).
    Other,
}

impl CgroupDriver {
    fn of(path: &str) -> CgroupDriver {
        let last = path.rsplit('/').next().unwrap_or("");
        if last.starts_with("docker-") && last.ends_with(".scope") {
            CgroupDriver::Systemd
        } else if path.split('/').any(|c| c == "docker") {
            CgroupDriver::Cgroupfs
        } else {
            CgroupDriver::Other
        }
    }
}

/// v1 memory limits at or above this mean "no limit" (the kernel reports
/// PAGE_COUNTER_MAX pages, 9223372036854771712 on 4 KiB pages).
const V1_NO_LIMIT: u64 = 1 << 62;

/// The files one container's figures come from, resolved and opened once
/// and reused for every sample (no path building or, on the kernel's
/// filesystems, opening on the sampling path; see [`Handle`]). Only the
/// files the figures need, and optional ones the kernel lacks are found
/// missing once, at resolve time, rather than on every sample.
#[derive(Debug)]
pub(crate) struct Files {
    pub version: CgroupVersion,
    pub driver: CgroupDriver,
    /// v1 `cpuacct.usage` (ns) or v2 `cpu.stat` (usage_usec).
    cpu: Handle,
    /// v1 `memory.usage_in_bytes` or v2 `memory.current`.
    memory: Handle,
    memory_stat: Handle,
    /// v1 `memory.limit_in_bytes` or v2 `memory.max`.
    memory_limit: Handle,
    /// The highest use since the cgroup was made: v1
    /// `memory.max_usage_in_bytes`, v2 `memory.peak` (kernel 5.19 on);
    /// None where the kernel does not keep it.
    memory_peak: Option<Handle>,
    /// None on v1 hosts without the pids controller.
    pids: Option<Handle>,
    net_dev: Handle,
}

/// What one read of a container's files gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContainerReading {
    pub version: CgroupVersion,
    pub driver: CgroupDriver,
    /// Total CPU time used by the container since it started, in ns.
    pub cpu_usage_ns: u64,
    /// Bytes in use without the inactive page cache, as `docker stats`
    /// counts them.
    pub memory: u64,
    /// None: no limit.
    pub memory_limit: Option<u64>,
    /// The highest use since the container started (with page cache, as
    /// the kernel counts it against the limit); None where the kernel
    /// does not keep it.
    pub memory_peak: Option<u64>,
    /// Processes and threads; None where the pids controller is missing.
    pub pids: Option<u64>,
    /// Bytes received and sent on every interface but `lo`.
    pub net_rx: u64,
    pub net_tx: u64,
}

/// One `hierarchy:controllers:path` line of `/proc/PID/cgroup`.
struct Line<'a> {
    controllers: &'a str,
    path: &'a str,
}

fn lines(text: &str) -> impl Iterator<Item = Line<'_>> {
    text.lines().filter_map(|l| {
        let mut parts = l.splitn(3, ':');
        let _hierarchy = parts.next()?;
        Some(Line {
            controllers: parts.next()?,
            path: parts.next()?,
        })
    })
}

impl Files {
    /// Works out where the container with init process `pid` keeps its
    /// figures.
    pub(super) fn resolve(
        cgroup_root: &Path,
        proc_root: &Path,
        id: &str,
        pid: u32,
    ) -> Result<Files, ResourceError> {
        let pid_dir = proc_root.join(pid.to_string());
        let cgroup_file = pid_dir.join("cgroup");
        let mut raw = Vec::new();
        let text = read_into(&cgroup_file, &mut raw)?;
        let net_dev = pid_dir.join("net").join("dev");

        let find = |name: &str| {
            lines(text)
                .find(|l| !l.controllers.is_empty() && l.controllers.split(',').any(|c| c == name))
        };
        let mut tried = Vec::new();
        if let (Some(cpu), Some(mem)) = (find("cpuacct"), find("memory")) {
            // v1 (or hybrid: a `0::` line may be there too, without
            // controllers; the v1 hierarchies hold the figures).
            let cpu_dir = v1_dir(cgroup_root, &cpu, "cpuacct", id, &mut tried);
            let mem_dir = v1_dir(cgroup_root, &mem, "memory", id, &mut tried);
            let (Some(cpu_dir), Some(mem_dir)) = (cpu_dir, mem_dir) else {
                return Err(no_cgroup(pid, id, &tried));
            };
            let pids_dir =
                find("pids").and_then(|l| v1_dir(cgroup_root, &l, "pids", id, &mut tried));
            return Ok(Files {
                version: CgroupVersion::V1,
                driver: CgroupDriver::of(mem.path),
                cpu: Handle::open(cpu_dir.join("cpuacct.usage"))?,
                memory: Handle::open(mem_dir.join("memory.usage_in_bytes"))?,
                memory_stat: Handle::open(mem_dir.join("memory.stat"))?,
                memory_limit: Handle::open(mem_dir.join("memory.limit_in_bytes"))?,
                memory_peak: Handle::open_optional(mem_dir.join("memory.max_usage_in_bytes"))?,
                pids: match pids_dir {
                    Some(d) => Handle::open_optional(d.join("pids.current"))?,
                    None => None,
                },
                net_dev: Handle::open(net_dev)?,
            });
        }
        let Some(unified) = lines(text).find(|l| l.controllers.is_empty()) else {
            return Err(format_error(
                &cgroup_file,
                "neither v1 cpuacct and memory lines nor a v2 \"0::\" line",
            ));
        };
        let Some(dir) = first_dir(cgroup_root, unified.path, id, &mut tried) else {
            return Err(no_cgroup(pid, id, &tried));
        };
        Ok(Files {
            version: CgroupVersion::V2,
            driver: CgroupDriver::of(unified.path),
            cpu: Handle::open(dir.join("cpu.stat"))?,
            memory: Handle::open(dir.join("memory.current"))?,
            memory_stat: Handle::open(dir.join("memory.stat"))?,
            memory_limit: Handle::open(dir.join("memory.max"))?,
            memory_peak: Handle::open_optional(dir.join("memory.peak"))?,
            pids: Handle::open_optional(dir.join("pids.current"))?,
            net_dev: Handle::open(net_dev)?,
        })
    }

    /// Reads every figure; `buf` is scratch space reused between calls.
    pub(super) fn read(&self, buf: &mut Vec<u8>) -> Result<ContainerReading, ResourceError> {
        let v1 = self.version == CgroupVersion::V1;

        let text = self.cpu.read(buf)?;
        let cpu_usage_ns = if v1 {
            parse_u64(self.cpu.path(), text)?
        } else {
            keyed_u64(self.cpu.path(), text, "usage_usec")?
                .ok_or_else(|| format_error(self.cpu.path(), "no usage_usec"))?
                .saturating_mul(1000)
        };

        let usage = parse_u64(self.memory.path(), self.memory.read(buf)?)?;
        let stat = self.memory_stat.path();
        let text = self.memory_stat.read(buf)?;
        let inactive = if v1 {
            match keyed_u64(stat, text, "total_inactive_file")? {
                Some(v) => Some(v),
                None => keyed_u64(stat, text, "inactive_file")?,
            }
        } else {
            keyed_u64(stat, text, "inactive_file")?
        };
        // docker stats subtracts the inactive file cache only when it is
        // smaller than the usage.
        let memory = match inactive {
            Some(i) if i < usage => usage - i,
            _ => usage,
        };

        let limit = self.memory_limit.read(buf)?.trim();
        let memory_limit = if limit == "max" {
            None
        } else {
            Some(parse_u64(self.memory_limit.path(), limit)?).filter(|&l| !(v1 && l >= V1_NO_LIMIT))
        };

        let memory_peak = match &self.memory_peak {
            Some(h) => Some(parse_u64(h.path(), h.read(buf)?)?),
            None => None,
        };

        let pids = match &self.pids {
            Some(h) => Some(parse_u64(h.path(), h.read(buf)?)?),
            None => None,
        };

        let text = self.net_dev.read(buf)?;
        let (net_rx, net_tx) = net_dev(self.net_dev.path(), text)?;

        Ok(ContainerReading {
            version: self.version,
            driver: self.driver,
            cpu_usage_ns,
            memory,
            memory_limit,
            memory_peak,
            pids,
            net_rx,
            net_tx,
        })
    }
}

/// The directory of a v1 controller: the mount is named after the
/// controller list as `/proc/PID/cgroup` gives it (`cpu,cpuacct`), or after
/// the one controller (`cpuacct`, a symlink on most distributions and a
/// mount of its own on some).
fn v1_dir(
    root: &Path,
    line: &Line<'_>,
    controller: &str,
    id: &str,
    tried: &mut Vec<PathBuf>,
) -> Option<PathBuf> {
    let mut mounts = vec![line.controllers.to_string(), controller.to_string()];
    mounts.dedup();
    mounts
        .iter()
        .find_map(|m| first_dir(&root.join(m), line.path, id, tried))
}

/// The first existing directory among the path `/proc/PID/cgroup` names
/// and the two Docker driver layouts.
fn first_dir(root: &Path, path: &str, id: &str, tried: &mut Vec<PathBuf>) -> Option<PathBuf> {
    let named = root.join(path.trim_start_matches('/'));
    let mut candidates = vec![named];
    if !id.is_empty() {
        candidates.push(root.join("docker").join(id));
        candidates.push(root.join("system.slice").join(format!("docker-{id}.scope")));
    }
    for c in candidates {
        if c != root && c.is_dir() {
            return Some(c);
        }
        tried.push(c);
    }
    None
}

fn no_cgroup(pid: u32, id: &str, tried: &[PathBuf]) -> ResourceError {
    let mut tried: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
    tried.dedup();
    ResourceError::NoCgroup {
        pid,
        id: id.to_string(),
        tried: tried.join(", "),
    }
}

/// Reads one container once, without a sampler.
pub fn read_container(
    cgroup_root: &Path,
    proc_root: &Path,
    id: &str,
    pid: u32,
) -> Result<ContainerReading, ResourceError> {
    Files::resolve(cgroup_root, proc_root, id, pid)?.read(&mut Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_from_path() {
        assert_eq!(CgroupDriver::of("/docker/abc"), CgroupDriver::Cgroupfs);
        assert_eq!(
            CgroupDriver::of("/system.slice/docker-abc.scope"),
            CgroupDriver::Systemd
        );
        assert_eq!(CgroupDriver::of("/user.slice/x"), CgroupDriver::Other);
    }

    #[test]
    fn root_cgroup_is_never_taken_for_a_container() {
        let dir = tempfile::tempdir().unwrap();
        let mut tried = Vec::new();
        assert_eq!(first_dir(dir.path(), "/", "", &mut tried), None);
    }
}
