//! The stats monitor: one pass every `sample_interval` (5 s) reads the host's procfs
//! figures and every managed container's cgroup (no Docker API call per
//! sample), sums them per service for `CpuPercent`/`MemoryBytes` and
//! `HostStats`, and feeds the spike detector, whose starts and ends become
//! alerts.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::control::Control;
use crate::engine::ContainerState;
use crate::events::Severity;
use crate::resources::{
    ContainerFigures, ContainerSampler, HostSampler, Metric, Sample, ServiceFigures, SpikeDetector,
    SpikeEvent,
};

/// Run until aborted.
pub async fn run(control: Control) {
    let cfg = control.config();
    let mut host = HostSampler::new().with_disks([cfg.state_dir.clone()]);
    let mut containers = ContainerSampler::new();
    let mut spikes = SpikeDetector::new(0);
    let mut every = cfg.sample_interval;
    let mut tick = ticker(every);
    // Kept between ticks so a steady-state sample reuses its id strings.
    let mut sampled = Vec::new();
    loop {
        tick.tick().await;
        let cfg = control.config();
        // A reload may have changed `sample_interval`.
        if cfg.sample_interval != every {
            every = cfg.sample_interval;
            tick = ticker(every);
        }
        let host_stats = match host.sample() {
            Ok(h) => Some(h),
            Err(e) => {
                warn!("cannot read host figures: {e}");
                None
            }
        };
        if let Some(h) = &host_stats {
            spikes.set_host_memory(h.memory_total);
        }
        // Every running container of every local service, by id and pid.
        let mut owner: HashMap<String, (String, String)> = HashMap::new();
        let mut targets: Vec<(String, u32)> = Vec::new();
        let mut limits: HashMap<String, Option<u64>> = HashMap::new();
        let mut present: HashSet<String> = HashSet::new();
        let local = control.local_services();
        for svc in &local {
            for c in control.containers(&svc.name) {
                present.insert(c.id.clone());
                if c.state != ContainerState::Running {
                    continue;
                }
                if let Some(pid) = c.pid.filter(|p| *p > 0) {
                    owner.insert(c.id.clone(), (svc.name.clone(), c.name.clone()));
                    targets.push((c.id, pid));
                }
            }
            match svc.resources.as_ref() {
                Some(r) => spikes.configure(&svc.name, *r),
                None => spikes.forget(&svc.name),
            }
        }
        containers.sample_into(std::time::Instant::now(), &targets, &mut sampled);
        control.figures().keep_peaks(&sampled, &present);
        let mut per_service: HashMap<String, ServiceFigures> = HashMap::new();
        let mut cpu_known: HashMap<String, bool> = HashMap::new();
        let mut rows: Vec<ContainerFigures> = Vec::new();
        for s in &sampled {
            let Some((name, container)) = owner.get(&s.id) else {
                continue;
            };
            rows.push(ContainerFigures {
                service: name.clone(),
                name: container.clone(),
                id: s.id.clone(),
                cpu_percent: s.cpu_percent,
                memory_bytes: s.memory,
                memory_limit: s.memory_limit,
                pids: s.pids,
                net_rx: s.net_rx,
                net_tx: s.net_tx,
            });
            let f = per_service.entry(name.clone()).or_default();
            f.cpu_percent += s.cpu_percent.unwrap_or(0.0);
            f.memory_bytes += s.memory;
            *cpu_known.entry(name.clone()).or_insert(true) &= s.cpu_percent.is_some();
            let limit = limits.entry(name.clone()).or_insert(Some(0));
            *limit = match (*limit, s.memory_limit) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            };
        }
        let now = Instant::now();
        // Every watched service gets a sample: one whose containers stopped
        // reads as zero, which is how its spike ends.
        for svc in local.iter().filter(|s| s.resources.is_some()) {
            let name = &svc.name;
            let sample = match per_service.get(name) {
                Some(f) => Sample {
                    now,
                    cpu_percent: cpu_known
                        .get(name)
                        .copied()
                        .unwrap_or(false)
                        .then_some(f.cpu_percent),
                    memory: f.memory_bytes,
                    memory_limit: limits.get(name).copied().flatten(),
                },
                None => Sample {
                    now,
                    cpu_percent: Some(0.0),
                    memory: 0,
                    memory_limit: None,
                },
            };
            for ev in spikes.feed(name, sample) {
                announce(&control, ev);
            }
        }
        debug!(
            "sampled {} containers of {} services",
            sampled.len(),
            per_service.len()
        );
        let changed = control.figures().publish(per_service, host_stats, rows);
        for service in changed {
            let _ = control
                .events()
                .send(crate::events::Event::ServiceChanged { service });
        }
    }
}

fn ticker(every: Duration) -> tokio::time::Interval {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick
}

/// A spike's start and end as alerts. The journal channel logs each one
/// with its MESSAGE_ID, so nothing is logged here.
fn announce(control: &Control, ev: SpikeEvent) {
    match ev {
        SpikeEvent::SpikeStarted {
            key,
            metric,
            value,
            threshold,
            ..
        } => {
            let summary = format!(
                "{} at {} (threshold {})",
                metric_name(metric),
                figure(metric, value),
                figure(metric, threshold)
            );
            control.alert(Severity::Warning, "spike-started", &key, &summary, "");
        }
        SpikeEvent::SpikeEnded {
            key,
            metric,
            peak,
            average,
            duration,
        } => {
            let summary = format!(
                "{} back to normal after {} (peak {}, average {})",
                metric_name(metric),
                crate::fmt::duration(duration),
                figure(metric, peak),
                figure(metric, average)
            );
            control.alert(Severity::Info, "spike-ended", &key, &summary, "");
        }
    }
}

fn metric_name(metric: Metric) -> &'static str {
    match metric {
        Metric::Cpu => "CPU",
        Metric::MemoryPercent | Metric::Memory => "memory",
    }
}

/// "97.3%" of a core, "81.0% of the host's memory", "48 MiB".
#[allow(
    clippy::cast_possible_truncation,
    reason = "bytes carried as f64 are whole numbers below 2^53; `as` saturates"
)]
fn figure(metric: Metric, value: f64) -> String {
    match metric {
        Metric::Cpu => format!("{value:.1}%"),
        Metric::MemoryPercent => format!("{value:.1}% of the host's memory"),
        // Bytes, as f64: whole numbers well below 2^53.
        Metric::Memory => crate::fmt::mib(value.max(0.0) as u64),
    }
}
