//! The spike detector: turns a stream of samples per key (a service) into
//! "spike started" and "spike ended" events. Pure: no I/O, no clock of its
//! own; every sample carries its time.
//!
//! Per metric and key:
//! - a value at or above the threshold starts a *rising* run; the run must
//!   stay at or above the threshold for `sustain` before it counts;
//! - a run that lasted `sustain` is a spike: `SpikeStarted` is emitted,
//!   unless the same metric's previous announced spike ended less than
//!   `cooldown` ago (then the spike is tracked silently and its end is not
//!   announced either);
//! - a spike ends only when the value falls below `clear_ratio × threshold`
//!   (hysteresis: a value hovering around the threshold is one spike, not
//!   many); `SpikeEnded` carries the peak and the average of the samples
//!   from the first one over the threshold to the last one before the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Thresholds for one key: the service's validated `resources` table, one
/// type for both so the two cannot drift apart.
pub use crate::config::ResourcesConfig as SpikeThresholds;

/// What a spike is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// CPU percent (per core).
    Cpu,
    /// Memory as a percent of the limit (or of host memory).
    MemoryPercent,
    /// Memory in bytes.
    Memory,
}

impl Metric {
    const ALL: [Metric; 3] = [Metric::Cpu, Metric::MemoryPercent, Metric::Memory];

    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cpu => "cpu_percent",
            Metric::MemoryPercent => "memory_percent",
            Metric::Memory => "memory",
        }
    }
}

/// One observation of one key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub now: Instant,
    /// None when there is no figure yet (a sampler's first look): the CPU
    /// metric is left as it was.
    pub cpu_percent: Option<f64>,
    /// Bytes.
    pub memory: u64,
    /// None: no limit (memory percent is then of host memory).
    pub memory_limit: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum SpikeEvent {
    SpikeStarted {
        key: String,
        metric: Metric,
        /// The value of the sample that made it count.
        value: f64,
        threshold: f64,
        /// The first sample over the threshold.
        since: Instant,
    },
    SpikeEnded {
        key: String,
        metric: Metric,
        peak: f64,
        average: f64,
        /// From the first sample over the threshold to the sample that
        /// cleared it.
        duration: Duration,
    },
}

#[derive(Debug, Clone, Copy)]
struct Run {
    since: Instant,
    peak: f64,
    sum: f64,
    count: u32,
}

impl Run {
    fn new(now: Instant, v: f64) -> Run {
        Run {
            since: now,
            peak: v,
            sum: v,
            count: 1,
        }
    }

    fn add(&mut self, v: f64) {
        self.peak = self.peak.max(v);
        self.sum += v;
        self.count += 1;
    }
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Below,
    Rising(Run),
    Spiking { run: Run, announced: bool },
}

#[derive(Debug, Clone, Copy)]
struct MetricState {
    phase: Phase,
    /// No new announcement before this time.
    quiet_until: Option<Instant>,
}

impl MetricState {
    const fn new() -> MetricState {
        MetricState {
            phase: Phase::Below,
            quiet_until: None,
        }
    }
}

#[derive(Debug)]
struct KeyState {
    thresholds: SpikeThresholds,
    metrics: [MetricState; 3],
}

/// Spike detection for many keys.
#[derive(Debug, Default)]
pub struct SpikeDetector {
    host_memory: u64,
    keys: HashMap<String, KeyState>,
}

impl SpikeDetector {
    /// `host_memory` (bytes) is what memory percent is of for containers
    /// without a limit.
    pub fn new(host_memory: u64) -> SpikeDetector {
        SpikeDetector {
            host_memory,
            keys: HashMap::new(),
        }
    }

    pub fn set_host_memory(&mut self, bytes: u64) {
        self.host_memory = bytes;
    }

    /// Watches `key` with these thresholds. Changed thresholds start the
    /// key afresh (an ongoing spike is dropped without an event); the same
    /// thresholds again change nothing.
    pub fn configure(&mut self, key: &str, thresholds: SpikeThresholds) {
        match self.keys.get_mut(key) {
            Some(k) if k.thresholds == thresholds => {}
            Some(k) => {
                k.thresholds = thresholds;
                k.metrics = [MetricState::new(); 3];
            }
            None => {
                self.keys.insert(
                    key.to_string(),
                    KeyState {
                        thresholds,
                        metrics: [MetricState::new(); 3],
                    },
                );
            }
        }
    }

    /// Stops watching `key`; an ongoing spike is dropped without an event.
    pub fn forget(&mut self, key: &str) {
        self.keys.remove(key);
    }

    /// Keys being watched.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }

    /// Feeds one sample of `key`; returns what started or ended. A key
    /// never configured gives nothing.
    pub fn feed(&mut self, key: &str, sample: Sample) -> Vec<SpikeEvent> {
        let mut events = Vec::new();
        let Some(state) = self.keys.get_mut(key) else {
            return events;
        };
        let t = state.thresholds;
        let memory = sample.memory as f64;
        let of = sample.memory_limit.unwrap_or(self.host_memory);
        let memory_percent = (of > 0).then(|| memory * 100.0 / of as f64);
        for (metric, ms) in Metric::ALL.into_iter().zip(state.metrics.iter_mut()) {
            let (value, threshold) = match metric {
                Metric::Cpu => (sample.cpu_percent, t.cpu_percent),
                Metric::MemoryPercent => (memory_percent, t.memory_percent),
                Metric::Memory => (Some(memory), t.memory.map(|m| m as f64)),
            };
            let (Some(value), Some(threshold)) = (value, threshold) else {
                continue;
            };
            if let Some(e) = step(ms, &t, key, metric, sample.now, value, threshold) {
                events.push(e);
            }
        }
        events
    }
}

/// Advances one metric of one key by one sample.
fn step(
    ms: &mut MetricState,
    t: &SpikeThresholds,
    key: &str,
    metric: Metric,
    now: Instant,
    value: f64,
    threshold: f64,
) -> Option<SpikeEvent> {
    let over = value >= threshold;
    match &mut ms.phase {
        Phase::Below if over => ms.phase = Phase::Rising(Run::new(now, value)),
        Phase::Below => return None,
        Phase::Rising(run) if over => run.add(value),
        Phase::Rising(_) => {
            ms.phase = Phase::Below;
            return None;
        }
        Phase::Spiking { run, announced } => {
            if value >= threshold * t.clear_ratio {
                run.add(value);
                return None;
            }
            let (run, announced) = (*run, *announced);
            ms.phase = Phase::Below;
            if !announced {
                return None;
            }
            ms.quiet_until = Some(now + t.cooldown);
            return Some(SpikeEvent::SpikeEnded {
                key: key.to_string(),
                metric,
                peak: run.peak,
                average: run.sum / f64::from(run.count),
                duration: now.saturating_duration_since(run.since),
            });
        }
    }
    // Rising: has it lasted long enough?
    let Phase::Rising(run) = ms.phase else {
        return None;
    };
    if now.saturating_duration_since(run.since) < t.sustain {
        return None;
    }
    let announced = ms.quiet_until.map_or(true, |q| now >= q);
    ms.phase = Phase::Spiking { run, announced };
    announced.then(|| SpikeEvent::SpikeStarted {
        key: key.to_string(),
        metric,
        value,
        threshold,
        since: run.since,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn thresholds() -> SpikeThresholds {
        SpikeThresholds {
            cpu_percent: Some(90.0),
            memory_percent: None,
            memory: None,
            sustain: Duration::from_secs(30),
            clear_ratio: 0.8,
            cooldown: Duration::from_secs(600),
        }
    }

    /// Feeds CPU values at 10 s intervals from `t0 + start` seconds;
    /// returns (seconds, event) pairs.
    fn feed_cpu(
        d: &mut SpikeDetector,
        t0: Instant,
        start: u64,
        values: &[f64],
    ) -> Vec<(u64, SpikeEvent)> {
        let mut out = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let secs = start + 10 * i as u64;
            let s = Sample {
                now: t0 + Duration::from_secs(secs),
                cpu_percent: Some(*v),
                memory: 0,
                memory_limit: None,
            };
            out.extend(d.feed("web", s).into_iter().map(|e| (secs, e)));
        }
        out
    }

    fn detector() -> SpikeDetector {
        let mut d = SpikeDetector::new(8 * GIB);
        d.configure("web", thresholds());
        d
    }

    #[test]
    fn a_short_burst_is_not_a_spike() {
        let t0 = Instant::now();
        let ev = feed_cpu(
            &mut detector(),
            t0,
            0,
            &[95.0, 99.0, 97.0, 10.0, 95.0, 10.0],
        );
        assert!(ev.is_empty(), "{ev:?}");
    }

    #[test]
    fn a_sustained_spike_starts_and_ends_with_peak_and_average() {
        let t0 = Instant::now();
        let mut d = detector();
        // Over from 10 s; 30 s later (at 40 s) it counts.
        let ev = feed_cpu(&mut d, t0, 0, &[50.0, 92.0, 96.0, 100.0, 92.0, 75.0, 60.0]);
        assert_eq!(ev.len(), 2, "{ev:?}");
        assert_eq!(
            ev[0],
            (
                40,
                SpikeEvent::SpikeStarted {
                    key: "web".into(),
                    metric: Metric::Cpu,
                    value: 92.0,
                    threshold: 90.0,
                    since: t0 + Duration::from_secs(10),
                }
            )
        );
        // 75 is below 90 but above the clear level 72: still the same
        // spike. 60 clears it at 60 s.
        let (
            secs,
            SpikeEvent::SpikeEnded {
                peak,
                average,
                duration,
                metric,
                ..
            },
        ) = &ev[1]
        else {
            panic!("{ev:?}")
        };
        assert_eq!(*secs, 60);
        assert_eq!(*metric, Metric::Cpu);
        assert_eq!(*peak, 100.0);
        assert_eq!(*average, (92.0 + 96.0 + 100.0 + 92.0 + 75.0) / 5.0);
        assert_eq!(*duration, Duration::from_secs(50));
    }

    #[test]
    fn hysteresis_keeps_a_hovering_value_one_spike() {
        let t0 = Instant::now();
        let mut d = detector();
        let values = [95.0, 95.0, 95.0, 95.0, 85.0, 91.0, 80.0, 93.0, 85.0, 95.0];
        let ev = feed_cpu(&mut d, t0, 0, &values);
        assert_eq!(ev.len(), 1, "one start, no end: {ev:?}");
        assert!(matches!(ev[0].1, SpikeEvent::SpikeStarted { .. }));
    }

    #[test]
    fn cooldown_silences_a_repeat_and_its_end() {
        let t0 = Instant::now();
        let mut d = detector();
        let spike = [95.0, 95.0, 95.0, 95.0, 10.0];
        let first = feed_cpu(&mut d, t0, 0, &spike);
        assert_eq!(first.len(), 2, "{first:?}");
        // Ended at 40 s: quiet until 640 s. A spike at 100..140 s is not
        // announced, nor its end.
        assert!(feed_cpu(&mut d, t0, 100, &spike).is_empty());
        // After the cooldown it is announced again.
        let later = feed_cpu(&mut d, t0, 700, &spike);
        assert_eq!(later.len(), 2, "{later:?}");
        assert_eq!(later[0].0, 730);
    }

    #[test]
    fn zero_sustain_counts_at_once() {
        let t0 = Instant::now();
        let mut d = SpikeDetector::new(GIB);
        d.configure(
            "web",
            SpikeThresholds {
                sustain: Duration::ZERO,
                ..thresholds()
            },
        );
        let ev = feed_cpu(&mut d, t0, 0, &[95.0]);
        assert_eq!(ev.len(), 1);
    }

    #[test]
    fn memory_percent_is_of_the_limit_else_of_host_memory() {
        let t0 = Instant::now();
        let mut d = SpikeDetector::new(10 * GIB);
        d.configure(
            "db",
            SpikeThresholds {
                cpu_percent: None,
                memory_percent: Some(50.0),
                sustain: Duration::ZERO,
                ..thresholds()
            },
        );
        let sample = |memory, memory_limit| Sample {
            now: t0,
            cpu_percent: None,
            memory,
            memory_limit,
        };
        // 2 GiB of a 10 GiB host: 20 %, nothing.
        assert!(d.feed("db", sample(2 * GIB, None)).is_empty());
        // 2 GiB of a 3 GiB limit: 66 %.
        let ev = d.feed("db", sample(2 * GIB, Some(3 * GIB)));
        let [SpikeEvent::SpikeStarted {
            metric,
            value,
            threshold,
            ..
        }] = ev.as_slice()
        else {
            panic!("{ev:?}")
        };
        assert_eq!(*metric, Metric::MemoryPercent);
        assert!((value - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(*threshold, 50.0);
    }

    #[test]
    fn absolute_memory_and_metrics_are_independent() {
        let t0 = Instant::now();
        let mut d = SpikeDetector::new(GIB);
        d.configure(
            "db",
            SpikeThresholds {
                memory: Some(512 << 20),
                sustain: Duration::ZERO,
                ..thresholds()
            },
        );
        let ev = d.feed(
            "db",
            Sample {
                now: t0,
                cpu_percent: Some(99.0),
                memory: 600 << 20,
                memory_limit: None,
            },
        );
        let metrics: Vec<Metric> = ev
            .iter()
            .map(|e| match e {
                SpikeEvent::SpikeStarted { metric, .. } => *metric,
                SpikeEvent::SpikeEnded { metric, .. } => *metric,
            })
            .collect();
        assert_eq!(metrics, [Metric::Cpu, Metric::Memory]);
        // Memory falls (600 MiB → 100 MiB) while CPU stays up: only memory ends.
        let ev = d.feed(
            "db",
            Sample {
                now: t0 + Duration::from_secs(5),
                cpu_percent: Some(99.0),
                memory: 100 << 20,
                memory_limit: None,
            },
        );
        assert!(
            matches!(ev.as_slice(), [SpikeEvent::SpikeEnded { metric: Metric::Memory, peak, .. }] if *peak == (600u64 << 20) as f64),
            "{ev:?}"
        );
    }

    #[test]
    fn unknown_keys_and_missing_cpu_figures_change_nothing() {
        let t0 = Instant::now();
        let mut d = detector();
        let s = Sample {
            now: t0,
            cpu_percent: None,
            memory: GIB,
            memory_limit: None,
        };
        assert!(d.feed("other", s).is_empty());
        assert!(d.feed("web", s).is_empty());
        // A run in progress survives a sample without a CPU figure.
        feed_cpu(&mut d, t0, 0, &[95.0, 95.0]);
        d.feed(
            "web",
            Sample {
                now: t0 + Duration::from_secs(25),
                ..s
            },
        );
        let ev = feed_cpu(&mut d, t0, 30, &[95.0]);
        assert_eq!(ev.len(), 1, "{ev:?}");
    }

    #[test]
    fn reconfiguring_resets_and_forgetting_drops() {
        let t0 = Instant::now();
        let mut d = detector();
        feed_cpu(&mut d, t0, 0, &[95.0, 95.0, 95.0, 95.0]);
        d.configure("web", thresholds());
        // Same thresholds: still spiking, so it ends.
        assert_eq!(feed_cpu(&mut d, t0, 40, &[1.0]).len(), 1);
        feed_cpu(&mut d, t0, 1000, &[95.0, 95.0, 95.0, 95.0]);
        d.configure(
            "web",
            SpikeThresholds {
                cpu_percent: Some(80.0),
                ..thresholds()
            },
        );
        assert!(feed_cpu(&mut d, t0, 1040, &[1.0]).is_empty());
        d.forget("web");
        assert_eq!(d.keys().count(), 0);
    }
}
