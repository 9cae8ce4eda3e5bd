//! The latest resource figures: per service, per container and for the
//! host, as the monitor (`monitor.rs`) last sampled them. The core reads
//! them for `CpuPercent`, `MemoryBytes`, `HostStats`, `stackctl top` and
//! the memory peak an OOM kill names; only the monitor writes them.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use super::{ContainerStats, HostStats};

/// A service's containers summed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ServiceFigures {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// One running container's figures from the last sample (`stackctl top`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerFigures {
    /// The stackd service (Compose project).
    pub service: String,
    /// The container's name, without the leading '/'.
    pub name: String,
    pub id: String,
    /// None the first time a container is seen.
    pub cpu_percent: Option<f64>,
    pub memory_bytes: u64,
    /// None: no limit.
    pub memory_limit: Option<u64>,
    pub pids: Option<u64>,
    pub net_rx: u64,
    pub net_tx: u64,
}

type Latest = (
    HashMap<String, ServiceFigures>,
    Option<HostStats>,
    Vec<ContainerFigures>,
);

/// The latest figures, read by the core.
#[derive(Default)]
pub struct Figures {
    inner: Mutex<Latest>,
    /// The highest memory use sampled per container id (the cgroup's own
    /// peak where the kernel keeps one), kept after the container died so
    /// an OOM kill can name it.
    peaks: Mutex<HashMap<String, u64>>,
}

impl Figures {
    pub fn new() -> Arc<Figures> {
        Arc::new(Figures::default())
    }

    pub fn service(&self, name: &str) -> ServiceFigures {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.0.get(name).copied().unwrap_or_default()
    }

    /// The highest memory use the last samples saw for a container.
    pub fn memory_peak(&self, container_id: &str) -> Option<u64> {
        let peaks = self.peaks.lock().unwrap_or_else(|e| e.into_inner());
        peaks.get(container_id).copied()
    }

    /// Fold a sample's figures in; forget containers no longer there.
    pub fn keep_peaks(&self, sampled: &[ContainerStats], present: &HashSet<String>) {
        let mut peaks = self.peaks.lock().unwrap_or_else(|e| e.into_inner());
        peaks.retain(|id, _| present.contains(id));
        for s in sampled {
            let seen = s.memory_peak.unwrap_or(0).max(s.memory);
            let p = peaks.entry(s.id.clone()).or_insert(0);
            *p = (*p).max(seen);
        }
    }

    pub fn host(&self) -> Option<HostStats> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.1.clone()
    }

    /// Every running managed container, by service then name.
    pub fn containers(&self) -> Vec<ContainerFigures> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.2.clone()
    }

    /// Replace the figures with a new sample's; the services whose sums
    /// changed (or that are gone), for their `ServiceChanged`.
    pub fn publish(
        &self,
        per_service: HashMap<String, ServiceFigures>,
        host: Option<HostStats>,
        mut rows: Vec<ContainerFigures>,
    ) -> Vec<String> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let changed = per_service
            .iter()
            .filter(|(n, f)| inner.0.get(*n) != Some(f))
            .map(|(n, _)| n.clone())
            .chain(
                inner
                    .0
                    .keys()
                    .filter(|n| !per_service.contains_key(*n))
                    .cloned(),
            )
            .collect();
        inner.0 = per_service;
        inner.1 = host;
        rows.sort_by(|a, b| (&a.service, &a.name).cmp(&(&b.service, &b.name)));
        inner.2 = rows;
        changed
    }
}
