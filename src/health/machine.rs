//! The health state machine of one service. Pure: the caller feeds it
//! probe results and container facts; it reads no clock.
//!
//! Each call to [`HealthMachine::observe`] computes the health the
//! observation shows on its own (the *raw* health), then decides whether
//! the *reported* health changes:
//!
//! - to `unknown` (nothing runs) or `starting`: at once;
//! - from `unknown`/`starting` to `healthy`: at once (like Docker, the
//!   first success ends the start);
//! - any other change (to `unhealthy`, to `degraded`, back to `healthy`
//!   after trouble): only once the new health has held for `retries`
//!   consecutive probes. Anything else in between starts the count again,
//!   so unhealthy-and-back within that time raises nothing.
//!
//! Within `start_period` after the containers started, and until the
//! first successful probe, failures show as `starting`, not `unhealthy`.
//! A one-shot job that exited 0 is complete: healthy, never unhealthy.

use std::fmt;
use std::time::Duration;

use crate::config::HealthConfig;
use crate::engine::{ContainerInfo, ContainerState};
use crate::world;

use super::ProbeResult;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    Unknown,
    Starting,
    Healthy,
    Degraded,
    Unhealthy,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Degraded => "degraded",
            Health::Unhealthy => "unhealthy",
        }
    }

    fn is_settled(self) -> bool {
        matches!(self, Health::Healthy | Health::Degraded | Health::Unhealthy)
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// What Docker shows of the service's containers, reduced to what health
/// needs. Build it with [`Facts::from_containers`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// Long-running containers (not `compose run`, not completed one-shots).
    pub expected: usize,
    /// Of those, how many run.
    pub running: usize,
    /// Names of the long-running containers that do not run.
    pub down: Vec<String>,
    /// One-shot containers that exited 0 and stay down.
    pub completed: usize,
    /// A container whose Docker healthcheck says "unhealthy".
    pub docker_unhealthy: Option<String>,
    /// A container whose Docker healthcheck says "starting".
    pub docker_starting: Option<String>,
    /// Time since the most recent container start, if any runs.
    pub since_start: Option<Duration>,
}

impl Facts {
    /// Reads a project's containers; `now_usec` is the caller's clock.
    pub fn from_containers(containers: &[ContainerInfo], now_usec: u64) -> Facts {
        let mut f = Facts::default();
        for c in containers.iter().filter(|c| !c.oneoff) {
            if world::is_complete(c) {
                f.completed += 1;
                continue;
            }
            f.expected += 1;
            if c.state == ContainerState::Running {
                f.running += 1;
                if let Some(started) = c.started_at_usec {
                    let since = Duration::from_micros(now_usec.saturating_sub(started));
                    f.since_start = Some(f.since_start.map_or(since, |s| s.min(since)));
                }
                match c.health.as_deref() {
                    Some("unhealthy") if f.docker_unhealthy.is_none() => {
                        f.docker_unhealthy = Some(c.name.clone())
                    }
                    Some("starting") if f.docker_starting.is_none() => {
                        f.docker_starting = Some(c.name.clone())
                    }
                    _ => {}
                }
            } else {
                f.down.push(c.name.clone());
            }
        }
        f
    }
}

/// A change of the reported health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub from: Health,
    pub to: Health,
    pub message: String,
}

/// The health of one service over time.
#[derive(Debug, Clone)]
pub struct HealthMachine {
    retries: u32,
    start_period: Duration,
    has_probe: bool,
    reported: Health,
    message: String,
    /// The health waiting to be reported, and for how many observations
    /// it has held.
    candidate: Option<(Health, u32)>,
    /// The last probe's verdict and message.
    last_probe: Option<(bool, String)>,
    /// A probe has succeeded since the containers (re)started.
    seen_success: bool,
    failures: u32,
}

impl HealthMachine {
    pub fn new(config: Option<&HealthConfig>) -> HealthMachine {
        HealthMachine {
            retries: config.map_or(1, |c| c.retries.max(1)),
            start_period: config.map_or(Duration::ZERO, |c| c.start_period),
            has_probe: config.is_some_and(|c| c.probe.is_some()),
            reported: Health::Unknown,
            message: "not observed yet".to_string(),
            candidate: None,
            last_probe: None,
            seen_success: false,
            failures: 0,
        }
    }

    /// The reported health and its message.
    pub fn current(&self) -> (Health, &str) {
        (self.reported, &self.message)
    }

    /// Consecutive failed probes (for recovery's evidence).
    pub fn consecutive_failures(&self) -> u32 {
        self.failures
    }

    /// One observation: call it with each probe result, and with `None`
    /// when the containers changed. Without a configured probe, every call
    /// counts as a probe (Docker's own healthcheck and the container states
    /// are all there is). Returns the change of reported health, if any.
    pub fn observe(&mut self, facts: &Facts, probe: Option<&ProbeResult>) -> Option<Change> {
        if facts.running == 0 {
            // Down: the next start is a new start.
            self.seen_success = false;
            self.last_probe = None;
            self.failures = 0;
        } else if let Some(p) = probe {
            if p.ok {
                self.failures = 0;
                self.seen_success = true;
            } else {
                self.failures = self.failures.saturating_add(1);
            }
            self.last_probe = Some((p.ok, p.message.clone()));
        }
        let counts = probe.is_some() || !self.has_probe;
        let (raw, message) = self.raw(facts);

        if raw == self.reported {
            self.candidate = None;
            self.message = message;
            return None;
        }
        let immediate =
            !raw.is_settled() || (!self.reported.is_settled() && raw == Health::Healthy);
        let held = if immediate {
            u32::MAX
        } else {
            let n = match self.candidate {
                Some((h, n)) if h == raw => n + u32::from(counts),
                _ => u32::from(counts),
            };
            self.candidate = Some((raw, n));
            n
        };
        if held < self.retries {
            return None;
        }
        let change = Change {
            from: self.reported,
            to: raw,
            message: message.clone(),
        };
        self.reported = raw;
        self.message = message;
        self.candidate = None;
        Some(change)
    }

    /// The health this observation shows on its own.
    fn raw(&self, facts: &Facts) -> (Health, String) {
        if facts.expected == 0 {
            return if facts.completed > 0 {
                (Health::Healthy, "completed (one-shot job exited 0)".into())
            } else {
                (Health::Unknown, "no containers".into())
            };
        }
        if facts.running == 0 {
            return (Health::Unknown, "not running".into());
        }
        let failing = match (&facts.docker_unhealthy, &self.last_probe) {
            (Some(name), _) => Some(format!("{name} fails its Docker healthcheck")),
            (None, Some((false, msg))) => Some(msg.clone()),
            _ => None,
        };
        let in_start_period = !self.seen_success
            && facts
                .since_start
                .is_some_and(|since| since < self.start_period);
        if let Some(why) = failing {
            if in_start_period {
                return (Health::Starting, format!("starting ({why})"));
            }
            return (Health::Unhealthy, why);
        }
        if facts.running < facts.expected {
            return (
                Health::Degraded,
                format!(
                    "{} of {} containers running; not running: {}",
                    facts.running,
                    facts.expected,
                    facts.down.join(", ")
                ),
            );
        }
        if let Some(name) = &facts.docker_starting {
            return (
                Health::Starting,
                format!("{name} is starting (Docker healthcheck)"),
            );
        }
        match &self.last_probe {
            Some((true, msg)) => (Health::Healthy, msg.clone()),
            None if self.has_probe => (Health::Starting, "waiting for the first probe".into()),
            _ => (Health::Healthy, "running".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    fn config(retries: u32, start_period: u64, probe: bool) -> HealthConfig {
        HealthConfig {
            probe: probe.then(|| crate::config::Probe::Tcp {
                address: "127.0.0.1:1".into(),
            }),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            retries,
            start_period: Duration::from_secs(start_period),
        }
    }

    /// One step of a table: container facts, an optional probe, and the
    /// reported health expected after it (`None`: no change reported).
    #[derive(Clone, Copy)]
    enum Step {
        /// All `n` containers up since `secs` seconds, probe ok or not.
        Probe(usize, u64, bool),
        /// `running` of `expected` up (no probe with it).
        Containers(usize, usize),
        /// Docker's healthcheck says unhealthy.
        DockerUnhealthy,
        /// Only a completed one-shot is left.
        Completed,
        /// 1 of 2 containers up, the probe succeeds.
        PartialProbe,
    }

    fn facts_of(step: Step) -> (Facts, Option<ProbeResult>) {
        let up = |running: usize, expected: usize, secs: u64| Facts {
            expected,
            running,
            down: (running..expected).map(|i| format!("c{i}")).collect(),
            since_start: (running > 0).then(|| Duration::from_secs(secs)),
            ..Facts::default()
        };
        match step {
            Step::Probe(n, secs, ok) => (
                up(n, n, secs),
                Some(ProbeResult {
                    ok,
                    message: if ok { "fine" } else { "answered 503" }.into(),
                    took: Duration::ZERO,
                }),
            ),
            Step::Containers(running, expected) => (up(running, expected, 100), None),
            Step::DockerUnhealthy => (
                Facts {
                    docker_unhealthy: Some("c0".into()),
                    ..up(1, 1, 100)
                },
                None,
            ),
            Step::PartialProbe => (
                up(1, 2, 100),
                Some(ProbeResult {
                    ok: true,
                    message: "fine".into(),
                    took: Duration::ZERO,
                }),
            ),
            Step::Completed => (
                Facts {
                    completed: 1,
                    ..Facts::default()
                },
                None,
            ),
        }
    }

    fn run(cfg: &HealthConfig, steps: &[(Step, Option<Health>)], what: &str) {
        let mut m = HealthMachine::new(Some(cfg));
        for (i, (step, want)) in steps.iter().enumerate() {
            let (facts, probe) = facts_of(*step);
            let got = m.observe(&facts, probe.as_ref()).map(|c| c.to);
            assert_eq!(got, *want, "{what}: step {i}");
        }
    }

    const OK: Step = Step::Probe(1, 100, true);
    const FAIL: Step = Step::Probe(1, 100, false);

    #[test]
    fn table() {
        let probe3 = config(3, 30, true);
        // Healthy, then `retries` failures: where the next two cases start.
        let gone_unhealthy = [
            (OK, Some(Healthy)),
            (FAIL, None),
            (FAIL, None),
            (FAIL, Some(Unhealthy)),
        ];
        type Case<'a> = (&'a str, &'a HealthConfig, Vec<(Step, Option<Health>)>);
        let cases: Vec<Case<'_>> = vec![
            (
                "first success is healthy at once",
                &probe3,
                vec![(OK, Some(Healthy)), (OK, None)],
            ),
            (
                "unhealthy only after retries failures",
                &probe3,
                [&gone_unhealthy[..], &[(FAIL, None)]].concat(),
            ),
            (
                "unhealthy and back within retries raises nothing",
                &probe3,
                vec![
                    (OK, Some(Healthy)),
                    (FAIL, None),
                    (FAIL, None),
                    (OK, None),
                    (FAIL, None),
                    (OK, None),
                ],
            ),
            (
                "recovery also needs retries successes",
                &probe3,
                [
                    &gone_unhealthy[..],
                    &[
                        (OK, None),
                        (OK, None),
                        (FAIL, None),
                        (OK, None),
                        (OK, None),
                        (OK, Some(Healthy)),
                    ],
                ]
                .concat(),
            ),
            (
                "failures within start_period show as starting",
                &probe3,
                vec![
                    (Step::Probe(1, 5, false), Some(Starting)),
                    (Step::Probe(1, 15, false), None),
                    (Step::Probe(1, 25, true), Some(Healthy)),
                ],
            ),
            (
                "start_period over without success: unhealthy after retries",
                &probe3,
                vec![
                    (Step::Probe(1, 20, false), Some(Starting)),
                    (Step::Probe(1, 30, false), None),
                    (Step::Probe(1, 40, false), None),
                    (Step::Probe(1, 50, false), Some(Unhealthy)),
                ],
            ),
            (
                "container facts without a probe do not count as probes",
                &probe3,
                vec![
                    (OK, Some(Healthy)),
                    (Step::Containers(1, 2), None),
                    (Step::Containers(1, 2), None),
                    (Step::Containers(1, 2), None),
                    (Step::Containers(1, 2), None),
                ],
            ),
            (
                "stopping is reported at once; the next start waits for a probe",
                &probe3,
                vec![
                    (OK, Some(Healthy)),
                    (Step::Containers(0, 1), Some(Unknown)),
                    (Step::Containers(1, 1), Some(Starting)),
                    (OK, Some(Healthy)),
                ],
            ),
            (
                "one-shot completed is healthy, never unhealthy",
                &probe3,
                vec![(Step::Completed, Some(Healthy)), (Step::Completed, None)],
            ),
            (
                "degraded when a container is down, after retries probes",
                &probe3,
                vec![
                    (OK, Some(Healthy)),
                    (Step::PartialProbe, None),
                    (Step::PartialProbe, None),
                    (Step::PartialProbe, Some(Degraded)),
                ],
            ),
        ];
        for (what, cfg, steps) in cases {
            run(cfg, &steps, what);
        }
    }

    #[test]
    fn without_a_probe_the_engine_and_containers_decide() {
        let cfg = config(2, 0, false);
        let steps = [
            (Step::Containers(1, 1), Some(Healthy)),
            (Step::Containers(1, 2), None),
            (Step::Containers(1, 2), Some(Degraded)),
            (Step::DockerUnhealthy, None),
            (Step::DockerUnhealthy, Some(Unhealthy)),
            (Step::Containers(1, 1), None),
            (Step::Containers(1, 1), Some(Healthy)),
        ];
        run(&cfg, &steps, "no probe");
        // No health config at all: retries 1, every change at once.
        let mut m = HealthMachine::new(None);
        let (f, _) = facts_of(Step::Containers(1, 2));
        assert_eq!(m.observe(&f, None).map(|c| c.to), Some(Degraded));
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let cfg = config(1, 0, true);
        let mut m = HealthMachine::new(Some(&cfg));
        let (f, p) = facts_of(FAIL);
        let change = m.observe(&f, p.as_ref()).unwrap();
        assert_eq!((change.from, change.to), (Unknown, Unhealthy));
        assert_eq!(change.message, "answered 503");
        assert_eq!(m.consecutive_failures(), 1);
        let (f, p) = facts_of(Step::Probe(2, 100, true));
        let f = Facts {
            expected: 3,
            down: vec!["web-3".into()],
            ..f
        };
        let change = m.observe(&f, p.as_ref()).unwrap();
        assert_eq!(change.to, Degraded);
        assert_eq!(
            change.message,
            "2 of 3 containers running; not running: web-3"
        );
        assert_eq!(m.current(), (Degraded, change.message.as_str()));
    }

    #[test]
    fn facts_from_containers() {
        let c = |name: &str, state: ContainerState, exit: Option<i64>, health: Option<&str>| {
            ContainerInfo {
                id: name.into(),
                name: name.into(),
                project: "p".into(),
                service: name.into(),
                number: Some(1),
                oneoff: false,
                image: "i".into(),
                image_id: String::new(),
                config_hash: None,
                state,
                status: String::new(),
                exit_code: exit,
                oom_killed: false,
                restart_count: 0,
                restart_policy: "no".into(),
                memory_limit: None,
                health: health.map(str::to_string),
                started_at_usec: Some(1_000_000),
                finished_at_usec: None,
                pid: None,
                error: None,
            }
        };
        let f = Facts::from_containers(
            &[
                c("web", ContainerState::Running, None, Some("unhealthy")),
                c("db", ContainerState::Exited, Some(1), None),
                c("init", ContainerState::Exited, Some(0), None),
            ],
            11_000_000,
        );
        assert_eq!(
            f,
            Facts {
                expected: 2,
                running: 1,
                down: vec!["db".into()],
                completed: 1,
                docker_unhealthy: Some("web".into()),
                docker_starting: None,
                since_start: Some(Duration::from_secs(10)),
            }
        );
    }
}
