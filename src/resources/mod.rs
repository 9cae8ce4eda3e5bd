//! Resource figures: host stats from procfs, container stats straight from
//! the cgroup filesystem, and a spike detector over them.
//!
//! Architecture invariant: this module reads files and does arithmetic; it
//! knows nothing of Docker's API, D-Bus or HTTP. Callers hand it container
//! ids with their init PIDs (from [`crate::engine::ContainerInfo::pid`]) and
//! get plain figures back. The spike detector does no I/O at all; the clock
//! is passed in.
//!
//! Every root (`/proc`, `/sys/fs/cgroup`) is injectable so tests run on the
//! fixture trees under `tests/fixtures/`.

mod cgroup;
mod container;
mod figures;
mod handle;
mod host;
mod parse;
mod spike;

use std::path::PathBuf;

pub use cgroup::{read_container, CgroupDriver, CgroupVersion, ContainerReading};
pub use container::{ContainerSampler, ContainerStats};
pub use figures::{ContainerFigures, Figures, ServiceFigures};
pub use host::{DiskUsage, HostSampler, HostStats};
pub use spike::{Metric, Sample, SpikeDetector, SpikeEvent, SpikeThresholds};

/// Default mount point of the cgroup filesystem.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Default procfs mount point.
pub const PROC_ROOT: &str = "/proc";

/// Reading a resource figure failed.
#[derive(Debug, thiserror::Error)]
pub enum ResourceError {
    /// A file could not be read (a container that just exited shows up as
    /// `NotFound` here).
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file was read but did not have the expected format.
    #[error("unexpected format in {path}: {what}")]
    Format { path: PathBuf, what: String },

    /// The process's cgroup directory was found in none of the places tried.
    #[error("no cgroup directory for process {pid} (container {id}); tried {tried}: is the cgroup filesystem mounted at the configured root?")]
    NoCgroup { pid: u32, id: String, tried: String },

    /// `statvfs` on a path failed.
    #[error("cannot get disk usage of {path}: {source}")]
    Statvfs {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
}

impl ResourceError {
    /// True when the thing read is gone (a container that exited between
    /// being listed and being read).
    pub fn is_gone(&self) -> bool {
        match self {
            ResourceError::Read { source, .. } => {
                source.kind() == std::io::ErrorKind::NotFound
                    || source.raw_os_error() == Some(libc::ESRCH)
            }
            ResourceError::NoCgroup { .. } => true,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests;
