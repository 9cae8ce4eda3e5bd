//! Diagnosis: what went wrong with a service and what to do about it.
//!
//! [`diagnose`] is the rule table, a pure function from [`Evidence`] to a
//! [`Diagnosis`]: no I/O, no clock. The caller gathers the evidence (the
//! world's containers, the health state machine, the text of a failed
//! Compose run, the [`RestartLimiter`]) and hands the action to the task
//! queue. [`RestartLimiter`] is pure as well: the clock is passed in.
//!
//! The rules, first match wins:
//!
//! | evidence | action |
//! | --- | --- |
//! | desired state stopped | none, never act |
//! | a user task pending or running | none, never act |
//! | stopped outside stackd (`kill`/`stop` through the API), `manual_stop = "respect"` | none: a person's intent |
//! | port already allocated | wait and retry (`restart.retry_interval`), naming the holder |
//! | image missing (its pull failed, or pulls are off) | wait and retry |
//! | external network missing | wait and retry, naming the service that creates it |
//! | bind-mount source missing | wait and retry |
//! | containers missing | recreate (`up -d`) |
//! | one-shot exited 0 (restart policy no/on-failure) | none: complete, never unhealthy |
//! | OOM killed | restart, warning naming limit and peak |
//! | exited (non-zero, or 0 while it should run) | restart |
//! | unhealthy for `retries` probes | restart |
//! | anything else | none |
//!
//! Every restart, recreate or pull is bounded by the crash-loop budget:
//! at most `max_restarts` in `window`, each after an exponential backoff
//! between `backoff_min` and `backoff_max`; past that, give up. The
//! waits for the surroundings ([`Action::RetryLater`]: image, network,
//! port, mount, read from what Compose said by [`ErrorFacts::parse`]) are
//! not a crash loop: they spend no budget and never give up.
//!
//! The port-holder lookup ([`port_holders`]) reads `/proc`: it answers "who
//! listens on TCP port N" for the message of a port conflict.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{ManualStop, RestartConfig};
use crate::store::DesiredState;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("cannot read {path}: {source}")]
    Proc {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A port some other process or container holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortConflict {
    pub port: u16,
    /// Who holds it, in words (see [`PortHolder`]'s `Display`); `None` when
    /// nobody could be found (e.g. gone by now, or not ours to see).
    pub holder: Option<String>,
}

/// Everything the rules look at for one service.
#[derive(Debug, Clone, PartialEq)]
pub struct Evidence {
    pub service: String,
    pub desired: DesiredState,
    /// A user task (start, stop, update, ...) for the service is pending or
    /// running: it decides, recovery keeps out of its way.
    pub user_task_active: bool,
    /// The container the evidence is about, for messages.
    pub container: Option<String>,
    /// Set when the container has exited (or died).
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    /// Memory limit of the container in bytes, if it had one.
    pub memory_limit: Option<u64>,
    /// Peak memory use seen before it died, in bytes.
    pub memory_peak: Option<u64>,
    /// Restart policy "no" or "on-failure" (or none): a job that is meant to
    /// end. With exit code 0 it is complete.
    pub one_shot: bool,
    /// Consecutive failed probes (or Docker "unhealthy" reports).
    pub failed_probes: u32,
    /// The health config's `retries` (1 when the service has no probe).
    pub retries: u32,
    pub container_missing: bool,
    pub network_missing: Option<String>,
    pub image_missing: Option<String>,
    /// A pull of the missing image was tried and failed with this error.
    pub pull_failed: Option<String>,
    pub port_allocated: Option<PortConflict>,
    /// A bind-mount source that does not exist (a late mount, say).
    pub bind_missing: Option<String>,
    /// The configured service whose Compose file creates the missing
    /// network, when one does.
    pub network_creator: Option<String>,
    /// A person stopped it through the Docker API (the door, e.g. "docker
    /// stop"): a `kill`/`stop` event before the `die`, no stackd task.
    pub stopped_outside: Option<String>,
    /// What the [`RestartLimiter`] says for now.
    pub budget: Budget,
}

impl Evidence {
    /// Evidence of nothing wrong: fill in what was seen.
    pub fn new(service: &str, desired: DesiredState) -> Evidence {
        Evidence {
            service: service.to_string(),
            desired,
            user_task_active: false,
            container: None,
            exit_code: None,
            oom_killed: false,
            memory_limit: None,
            memory_peak: None,
            one_shot: false,
            failed_probes: 0,
            retries: 1,
            container_missing: false,
            network_missing: None,
            image_missing: None,
            pull_failed: None,
            port_allocated: None,
            bind_missing: None,
            network_creator: None,
            stopped_outside: None,
            budget: Budget::default(),
        }
    }

    /// Takes in what a failed Compose or Docker run said (see
    /// [`ErrorFacts::parse`]).
    pub fn with_error_text(mut self, text: &str) -> Evidence {
        let facts = ErrorFacts::parse(text);
        if let Some(port) = facts.port_allocated {
            self.port_allocated
                .get_or_insert(PortConflict { port, holder: None });
        }
        if facts.network_missing.is_some() {
            self.network_missing = self.network_missing.or(facts.network_missing);
        }
        if facts.image_missing.is_some() {
            self.image_missing = self.image_missing.or(facts.image_missing);
        }
        self.pull_failed = self.pull_failed.or(facts.pull_failed);
        self.bind_missing = self.bind_missing.or(facts.bind_missing);
        self
    }
}

/// The crash-loop budget at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Budget {
    /// Restarts (and recreates) already done within the window.
    pub restarts_in_window: u32,
    /// How long to wait before the next one.
    pub backoff: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `restart` the project's containers, after `delay`.
    Restart { delay: Duration },
    /// `up -d`: recreate what is missing, after `delay`.
    Recreate { delay: Duration },
    /// Pull the image, then `up -d`, after `delay`.
    PullThenRecreate { delay: Duration },
    /// The surroundings are not ready (image, network, port, mount): `up
    /// -d` again later, on the slow `restart.retry_interval` cadence the
    /// caller keeps. Never spends the crash-loop budget, never gives up.
    RetryLater,
    /// Leave it alone.
    None { reason: String },
    /// Stop trying until a person acts (or the window passes).
    GiveUp { reason: String },
}

impl Action {
    pub fn is_none(&self) -> bool {
        matches!(self, Action::None { .. })
    }
}

/// Why the rule table chose its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Healthy,
    DesiredStopped,
    UserTaskActive,
    /// A person stopped it through Docker itself (`restart.manual_stop`).
    StoppedOutside,
    /// A one-shot job finished with exit code 0.
    Completed,
    PortAllocated,
    ImageMissing,
    PullFailed,
    ContainerMissing,
    NetworkMissing,
    BindSourceMissing,
    OomKilled,
    Exited,
    Unhealthy,
    /// The restart budget is spent.
    CrashLoop,
    /// The failure would call for a restart, but `restart.on_failure` is off.
    RestartDisabled,
}

impl Cause {
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Healthy => "healthy",
            Cause::DesiredStopped => "desired-stopped",
            Cause::UserTaskActive => "user-task-active",
            Cause::StoppedOutside => "stopped-outside",
            Cause::Completed => "completed",
            Cause::PortAllocated => "port-allocated",
            Cause::ImageMissing => "image-missing",
            Cause::PullFailed => "pull-failed",
            Cause::ContainerMissing => "container-missing",
            Cause::NetworkMissing => "network-missing",
            Cause::BindSourceMissing => "bind-source-missing",
            Cause::OomKilled => "oom-killed",
            Cause::Exited => "exited",
            Cause::Unhealthy => "unhealthy",
            Cause::CrashLoop => "crash-loop",
            Cause::RestartDisabled => "restart-disabled",
        }
    }

    /// A failure of the surroundings, retried slowly and never given up on.
    pub fn environmental(self) -> bool {
        matches!(
            self,
            Cause::PortAllocated
                | Cause::ImageMissing
                | Cause::PullFailed
                | Cause::NetworkMissing
                | Cause::BindSourceMissing
        )
    }

    /// The outcome in one word: "complete", "waiting" (for the
    /// surroundings), "gave up" (budget spent), "recovering", or "ok".
    pub fn outcome(self) -> &'static str {
        match self {
            Cause::Completed => "complete",
            Cause::PortAllocated
            | Cause::PullFailed
            | Cause::ImageMissing
            | Cause::NetworkMissing
            | Cause::BindSourceMissing => "waiting",
            Cause::CrashLoop => "gave up",
            Cause::ContainerMissing | Cause::OomKilled | Cause::Exited | Cause::Unhealthy => {
                "recovering"
            }
            Cause::Healthy
            | Cause::DesiredStopped
            | Cause::StoppedOutside
            | Cause::UserTaskActive
            | Cause::RestartDisabled => "ok",
        }
    }
}

/// The verdict of [`diagnose`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnosis {
    pub action: Action,
    pub cause: Cause,
    /// One sentence for a person: what is wrong (or why nothing is done).
    pub summary: String,
    /// Things to tell besides the action (e.g. the memory limit was hit).
    pub warnings: Vec<String>,
}

impl Diagnosis {
    fn none(cause: Cause, summary: String) -> Diagnosis {
        Diagnosis {
            action: Action::None {
                reason: summary.clone(),
            },
            cause,
            summary,
            warnings: Vec::new(),
        }
    }

    fn give_up(cause: Cause, summary: String) -> Diagnosis {
        Diagnosis {
            action: Action::GiveUp {
                reason: summary.clone(),
            },
            cause,
            summary,
            warnings: Vec::new(),
        }
    }
}

/// The rule table (see the module documentation).
pub fn diagnose(ev: &Evidence, policy: &RestartConfig) -> Diagnosis {
    let svc = &ev.service;
    let who = ev.container.as_deref().unwrap_or(svc);
    if ev.desired == DesiredState::Stopped {
        return Diagnosis::none(
            Cause::DesiredStopped,
            format!("{svc} is meant to be stopped; nothing to recover"),
        );
    }
    if ev.user_task_active {
        return Diagnosis::none(
            Cause::UserTaskActive,
            format!("a task for {svc} is pending or running; recovery waits for it"),
        );
    }
    if let (Some(door), ManualStop::Respect) = (&ev.stopped_outside, policy.manual_stop) {
        return Diagnosis::none(
            Cause::StoppedOutside,
            format!("{svc} was stopped outside stackd ({door}); it stays stopped until `stackctl start {svc}`"),
        );
    }
    // The surroundings are not ready: wait and try again, never give up.
    let wait = |cause: Cause, summary: String| Diagnosis {
        action: Action::RetryLater,
        cause,
        summary,
        warnings: Vec::new(),
    };
    if let Some(conflict) = &ev.port_allocated {
        let holder = match &conflict.holder {
            Some(h) => format!("it is held by {h}"),
            None => "no process holding it could be found".to_string(),
        };
        return wait(
            Cause::PortAllocated,
            format!(
                "{svc} cannot start: host port {} is already allocated; {holder}. Waiting for it to be free",
                conflict.port
            ),
        );
    }
    if let Some(image) = &ev.image_missing {
        return match &ev.pull_failed {
            Some(err) => wait(
                Cause::PullFailed,
                format!("{svc}: {image} is not present and pulling it failed: {err}. Waiting for the registry or the image"),
            ),
            None => wait(
                Cause::ImageMissing,
                format!("{svc}: image {image} is not present. Waiting for it"),
            ),
        };
    }
    if let Some(network) = &ev.network_missing {
        let by = match &ev.network_creator {
            Some(other) => format!("; {other} creates it"),
            None => String::new(),
        };
        return wait(
            Cause::NetworkMissing,
            format!("{svc}: network {network} does not exist yet{by}. Waiting for it"),
        );
    }
    if let Some(path) = &ev.bind_missing {
        return wait(
            Cause::BindSourceMissing,
            format!("{svc}: bind-mount source {path} does not exist (a mount not there yet?). Waiting for it"),
        );
    }
    if ev.container_missing {
        return budgeted(
            ev,
            Cause::ContainerMissing,
            format!("{svc}: container {who} is missing"),
            |delay| Action::Recreate { delay },
        );
    }
    if ev.one_shot && ev.exit_code == Some(0) && !ev.oom_killed {
        return Diagnosis::none(
            Cause::Completed,
            format!("{who} ran to completion (exit code 0)"),
        );
    }
    let (cause, summary, warnings) = if ev.oom_killed {
        let mut warning = format!("{who} was killed for lack of memory");
        match (ev.memory_limit, ev.memory_peak) {
            (Some(limit), Some(peak)) => warning.push_str(&format!(
                ": limit {}, peak use {}; raise the limit (mem_limit / deploy.resources.limits.memory) if it needs more",
                bytes(limit),
                bytes(peak)
            )),
            (Some(limit), None) => warning.push_str(&format!(
                ": limit {}; raise it if the service needs more",
                bytes(limit)
            )),
            (None, Some(peak)) => warning.push_str(&format!(
                " (no container limit; peak use {}): the host ran out of memory",
                bytes(peak)
            )),
            (None, None) => {}
        }
        (Cause::OomKilled, warning.clone(), vec![warning])
    } else if let Some(code) = ev.exit_code {
        let summary = if code == 0 {
            format!("{who} stopped (exit code 0) although it should run")
        } else {
            format!("{who} exited with code {code}")
        };
        (Cause::Exited, summary, Vec::new())
    } else if ev.failed_probes >= ev.retries.max(1) {
        (
            Cause::Unhealthy,
            format!(
                "{svc} failed its health check {} times in a row",
                ev.failed_probes
            ),
            Vec::new(),
        )
    } else {
        return Diagnosis::none(Cause::Healthy, format!("{svc}: nothing wrong seen"));
    };
    if !policy.on_failure {
        let mut d = Diagnosis::none(
            Cause::RestartDisabled,
            format!("{summary}; restart.on_failure is off, so it is left as it is"),
        );
        d.warnings = warnings;
        return d;
    }
    let mut d = budgeted(ev, cause, summary, |delay| Action::Restart { delay });
    d.warnings.extend(warnings);
    d
}

/// An action delayed by the budget's backoff ([`diagnose_with`] gives up
/// when the budget is spent).
fn budgeted(
    ev: &Evidence,
    cause: Cause,
    summary: String,
    action: impl FnOnce(Duration) -> Action,
) -> Diagnosis {
    Diagnosis {
        action: action(ev.budget.backoff),
        cause,
        summary,
        warnings: Vec::new(),
    }
}

/// Like [`diagnose`], and also gives up when `limiter` says the budget is
/// spent. This is what callers normally use.
pub fn diagnose_with(
    ev: &Evidence,
    policy: &RestartConfig,
    limiter: &RestartLimiter,
    now: Instant,
) -> Diagnosis {
    let mut ev = ev.clone();
    ev.budget = limiter.budget(now);
    let d = diagnose(&ev, policy);
    // Retries of the surroundings (`RetryLater`) are not counted.
    let acts = matches!(
        d.action,
        Action::Restart { .. } | Action::Recreate { .. } | Action::PullThenRecreate { .. }
    );
    if acts && ev.budget.restarts_in_window >= policy.max_restarts {
        let mut out = Diagnosis::give_up(
            Cause::CrashLoop,
            format!(
                "{}; already restarted {} times within {}, giving up until a person acts",
                d.summary,
                ev.budget.restarts_in_window,
                human(policy.window)
            ),
        );
        out.warnings = d.warnings;
        return out;
    }
    d
}

/// "10m", "90s", "2h", "1h30m".
pub(crate) fn human(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, sec) => format!("{sec}s"),
        (0, m, 0) => format!("{m}m"),
        (h, 0, 0) => format!("{h}h"),
        (0, m, sec) => format!("{m}m{sec}s"),
        (h, m, _) => format!("{h}h{m}m"),
    }
}

/// "48 MiB", "1.5 GiB".
pub(crate) fn bytes(n: u64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (MIB * 1024.0))
    } else {
        format!("{:.0} MiB", n as f64 / MIB)
    }
}

/// Restarts per service within the window, and the next backoff. Pure: the
/// caller passes the clock in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartLimiter {
    policy: RestartConfig,
    restarts: VecDeque<Instant>,
}

impl RestartLimiter {
    pub fn new(policy: RestartConfig) -> RestartLimiter {
        RestartLimiter {
            policy,
            restarts: VecDeque::new(),
        }
    }

    /// Remember a restart (or recreate) done at `now`.
    pub fn record(&mut self, now: Instant) {
        self.forget_old(now);
        self.restarts.push_back(now);
    }

    /// The service ran fine long enough: start counting afresh.
    pub fn reset(&mut self) {
        self.restarts.clear();
    }

    pub fn restarts_in_window(&self, now: Instant) -> u32 {
        let n = self
            .restarts
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.policy.window)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// `backoff_min * 2^n` for `n` restarts in the window, at most
    /// `backoff_max`.
    pub fn next_backoff(&self, now: Instant) -> Duration {
        let n = self.restarts_in_window(now);
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.policy
            .backoff_min
            .checked_mul(factor)
            .unwrap_or(self.policy.backoff_max)
            .min(self.policy.backoff_max)
            .max(self.policy.backoff_min.min(self.policy.backoff_max))
    }

    /// True while another restart is allowed within the window.
    pub fn allowed(&self, now: Instant) -> bool {
        self.restarts_in_window(now) < self.policy.max_restarts
    }

    pub fn budget(&self, now: Instant) -> Budget {
        Budget {
            restarts_in_window: self.restarts_in_window(now),
            backoff: self.next_backoff(now),
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(t) = self.restarts.front() {
            if now.saturating_duration_since(*t) >= self.policy.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
    }
}

/// What the text of a failed Compose or Docker call tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFacts {
    pub port_allocated: Option<u16>,
    pub network_missing: Option<String>,
    pub image_missing: Option<String>,
    /// A pull was tried and failed with this error.
    pub pull_failed: Option<String>,
    /// A bind-mount source that does not exist.
    pub bind_missing: Option<String>,
}

impl ErrorFacts {
    /// A failure of the surroundings (registry, network, port, mount), not
    /// of the service itself: waiting and trying again is the fix.
    pub fn environmental(&self) -> bool {
        self.port_allocated.is_some()
            || self.network_missing.is_some()
            || self.image_missing.is_some()
            || self.pull_failed.is_some()
            || self.bind_missing.is_some()
    }
}

impl ErrorFacts {
    /// Reads the messages Docker 20.10+ and Compose v1/v2 print, e.g.
    /// "Bind for 0.0.0.0:8080 failed: port is already allocated",
    /// "listen tcp4 0.0.0.0:8080: bind: address already in use",
    /// "network abc not found", "No such image: x:1",
    /// "pull access denied for x, repository does not exist".
    ///
    /// A failed pull: Compose v1 prints "Pulling web (nginx:1)..." and then
    /// the error; v2 prints " web Pulling" and " web Error <why>" (samples
    /// of both in `tests/fixtures/compose-errors/`).
    pub fn parse(text: &str) -> ErrorFacts {
        let mut facts = ErrorFacts::default();
        // v1: the image being pulled; v2: the service whose image it is.
        let mut pulling: Option<String> = None;
        for line in text.lines() {
            let lower = line.to_ascii_lowercase();
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("Pulling ") {
                // v1: "Pulling web (nginx:1)..."
                // `compose pull` (v1): "Pulling web ... error".
                pulling = rest
                    .split_once(" (")
                    .and_then(|(_, r)| r.split_once(')'))
                    .map(|(image, _)| image.to_string())
                    .or(pulling)
                    .or_else(|| {
                        let svc = rest.split_whitespace().next()?;
                        Some(format!("the image of service {svc}"))
                    });
                continue;
            }
            if let Some((svc, "Pulling")) = trimmed.split_once(' ') {
                pulling.get_or_insert_with(|| format!("the image of service {svc}"));
                continue;
            }
            if let Some(image) = &pulling {
                // v2: " web Error <why>"; v1: the next line that says why.
                let why = match trimmed.split_once(" Error ") {
                    Some((svc, why)) if !svc.contains(' ') => Some(why),
                    _ if lower.contains("error")
                        || lower.contains("denied")
                        || lower.contains("not found")
                        || lower.contains("no such host")
                        || lower.starts_with("get ")
                        || lower.contains("manifest unknown") =>
                    {
                        // v1: "ERROR: for web  Get ...": the service, then why.
                        let why = trimmed.trim_start_matches("ERROR: ");
                        Some(match why.strip_prefix("for ") {
                            Some(rest) => rest.split_once("  ").map_or(rest, |(_, w)| w),
                            None => why,
                        })
                    }
                    _ => None,
                };
                if let (Some(why), None) = (why, &facts.pull_failed) {
                    facts.pull_failed = Some(why.trim().to_string());
                    facts.image_missing.get_or_insert_with(|| image.clone());
                }
            }
            if facts.bind_missing.is_none() {
                if let Some(i) = lower.find("bind source path does not exist: ") {
                    let path = &line[i + "bind source path does not exist: ".len()..];
                    facts.bind_missing = path.split_whitespace().next().map(str::to_string);
                }
            }
            if facts.port_allocated.is_none()
                && (lower.contains("port is already allocated")
                    || lower.contains("address already in use"))
            {
                facts.port_allocated = port_in(line);
            }
            if facts.network_missing.is_none() {
                facts.network_missing = network_in(line, &lower);
            }
            if facts.image_missing.is_none() {
                facts.image_missing = image_in(line, &lower);
            }
        }
        facts
    }
}

/// The port in "Bind for 0.0.0.0:8080 failed" or "listen tcp 0.0.0.0:8080:".
fn port_in(line: &str) -> Option<u16> {
    let lower = line.to_ascii_lowercase();
    let anchor = ["bind for ", "listen tcp4 ", "listen tcp6 ", "listen tcp "]
        .iter()
        .find_map(|a| lower.find(a).map(|i| i + a.len()))?;
    let rest = &line[anchor..];
    let addr = rest.split_whitespace().next()?.trim_end_matches(':');
    let port = addr.rsplit_once(':')?.1;
    port.parse().ok()
}

fn network_in(line: &str, lower: &str) -> Option<String> {
    // "network stackd_default not found", "Network x declared as external,
    // but could not be found."
    let start = lower.find("network ")?;
    let rest = &line[start + "network ".len()..];
    let name = rest.split_whitespace().next()?;
    let tail = &lower[start..];
    (tail.contains("not found") || tail.contains("could not be found"))
        .then(|| name.trim_matches(['"', '\'', ',']).to_string())
}

fn image_in(line: &str, lower: &str) -> Option<String> {
    let clean = |s: &str| {
        s.trim_matches(['"', '\'', ',', ' '])
            .trim_end_matches(':')
            .to_string()
    };
    for prefix in ["no such image: ", "pull access denied for "] {
        if let Some(i) = lower.find(prefix) {
            let rest = &line[i + prefix.len()..];
            return rest.split([',', ' ']).next().map(clean);
        }
    }
    if let Some(i) = lower.find("unable to find image ") {
        let rest = &line[i + "unable to find image ".len()..];
        return rest.split_whitespace().next().map(clean);
    }
    if let Some(i) = lower.find("manifest for ") {
        if lower.contains("not found") {
            let rest = &line[i + "manifest for ".len()..];
            return rest.split_whitespace().next().map(clean);
        }
    }
    None
}

/// A process listening on a TCP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHolder {
    /// `None` when the socket was found but no process could be seen to own
    /// it (another user's, without the right to look).
    pub pid: Option<u32>,
    /// `/proc/PID/comm`, e.g. "nginx" or "docker-proxy".
    pub command: String,
    /// For `docker-proxy`: the container address it forwards to.
    pub forwards_to: Option<String>,
    /// For `docker-proxy`: the container that publishes the port, as
    /// Docker names it (filled in by whoever can ask Docker).
    pub container: Option<String>,
    /// The local address of the listening socket, e.g. "0.0.0.0:8080".
    pub address: String,
    pub inode: u64,
}

impl fmt::Display for PortHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.forwards_to) {
            (Some(pid), _) if self.container.is_some() => write!(
                f,
                "container {} (docker-proxy, pid {pid}, listening on {})",
                self.container.as_deref().unwrap_or_default(),
                self.address
            ),
            (Some(pid), Some(to)) => write!(
                f,
                "a Docker container at {to} (docker-proxy, pid {pid}, listening on {})",
                self.address
            ),
            (Some(pid), None) => write!(
                f,
                "process {pid} ({}) listening on {}",
                self.command, self.address
            ),
            (None, _) => write!(
                f,
                "a socket listening on {} whose process is not visible (another user's?)",
                self.address
            ),
        }
    }
}

/// Who listens on TCP `port`, over IPv4 and IPv6, from `/proc`.
pub fn port_holders(port: u16) -> Result<Vec<PortHolder>, RecoveryError> {
    port_holders_in(Path::new("/proc"), port)
}

/// [`port_holders`] over another procfs root (for tests).
pub fn port_holders_in(proc_root: &Path, port: u16) -> Result<Vec<PortHolder>, RecoveryError> {
    let mut sockets: Vec<(u64, String)> = Vec::new();
    for table in ["net/tcp", "net/tcp6"] {
        let path = proc_root.join(table);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // No IPv6 in this kernel.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                return Err(RecoveryError::Proc {
                    path: path.display().to_string(),
                    source,
                })
            }
        };
        sockets.extend(listening_sockets(&text, port));
    }
    if sockets.is_empty() {
        return Ok(Vec::new());
    }
    let owners = socket_owners(proc_root, sockets.iter().map(|(i, _)| *i).collect());
    let mut out = Vec::new();
    for (inode, address) in sockets {
        let mut found = false;
        for pid in owners.get(&inode).into_iter().flatten() {
            found = true;
            let dir = proc_root.join(pid.to_string());
            let command = std::fs::read_to_string(dir.join("comm"))
                .map(|c| c.trim_end().to_string())
                .unwrap_or_default();
            let forwards_to = if command == "docker-proxy" {
                std::fs::read(dir.join("cmdline"))
                    .ok()
                    .and_then(|c| docker_proxy_target(&c))
            } else {
                None
            };
            out.push(PortHolder {
                pid: Some(*pid),
                command,
                forwards_to,
                container: None,
                address: address.clone(),
                inode,
            });
        }
        if !found {
            out.push(PortHolder {
                pid: None,
                command: String::new(),
                forwards_to: None,
                container: None,
                address,
                inode,
            });
        }
    }
    out.sort_by(|a, b| (a.pid, &a.address).cmp(&(b.pid, &b.address)));
    out.dedup_by(|a, b| a.pid.is_some() && a.pid == b.pid && a.address == b.address);
    Ok(out)
}

/// LISTEN sockets on `port` in a `/proc/net/tcp{,6}` table: (inode, address).
fn listening_sockets(table: &str, port: u16) -> Vec<(u64, String)> {
    const LISTEN: &str = "0A";
    let mut out = Vec::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 10 || fields[3] != LISTEN {
            continue;
        }
        let Some((addr_hex, port_hex)) = fields[1].split_once(':') else {
            continue;
        };
        if u16::from_str_radix(port_hex, 16).ok() != Some(port) {
            continue;
        }
        let Ok(inode) = fields[9].parse::<u64>() else {
            continue;
        };
        if inode == 0 {
            continue;
        }
        out.push((inode, format!("{}:{port}", proc_address(addr_hex))));
    }
    out
}

/// `/proc/net/tcp` addresses are the raw in-memory words: 32-bit groups in
/// host byte order (little-endian on the machines we run on).
fn proc_address(hex: &str) -> String {
    let words: Vec<u32> = (0..hex.len() / 8)
        .filter_map(|i| u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16).ok())
        .collect();
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    match bytes.len() {
        4 => std::net::Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]).to_string(),
        16 => {
            let mut b = [0u8; 16];
            b.copy_from_slice(&bytes);
            format!("[{}]", std::net::Ipv6Addr::from(b))
        }
        _ => hex.to_string(),
    }
}

/// inode → pids, for the wanted socket inodes, from `/proc/*/fd`.
fn socket_owners(proc_root: &Path, wanted: Vec<u64>) -> HashMap<u64, Vec<u32>> {
    let targets: HashMap<String, u64> = wanted
        .into_iter()
        .map(|i| (format!("socket:[{i}]"), i))
        .collect();
    let mut owners: HashMap<u64, Vec<u32>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return owners;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // Processes come and go, and other users' fds may be closed to us.
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if let Some(inode) = link.to_str().and_then(|l| targets.get(l)) {
                let pids = owners.entry(*inode).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    owners
}

/// `docker-proxy -proto tcp -host-ip 0.0.0.0 -host-port 8080 -container-ip
/// 172.17.0.2 -container-port 80` → "172.17.0.2:80".
fn docker_proxy_target(cmdline: &[u8]) -> Option<String> {
    let args: Vec<String> = cmdline
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    Some(format!(
        "{}:{}",
        value("-container-ip")?,
        value("-container-port")?
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RestartConfig {
        RestartConfig {
            on_failure: true,
            max_restarts: 3,
            window: Duration::from_secs(600),
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(60),
            manual_stop: ManualStop::Respect,
            retry_interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn a_stop_outside_stackd_is_respected_unless_reverted() {
        let mut e = ev();
        e.exit_code = Some(137);
        e.stopped_outside = Some("docker stop".into());
        let d = diagnose(&e, &policy());
        assert_eq!(d.cause, Cause::StoppedOutside, "{}", d.summary);
        assert!(d.action.is_none());
        assert!(d.summary.contains("(docker stop)"), "{}", d.summary);
        let revert = RestartConfig {
            manual_stop: ManualStop::Revert,
            ..policy()
        };
        let d = diagnose(&e, &revert);
        assert_eq!(d.cause, Cause::Exited, "{}", d.summary);
        assert!(matches!(d.action, Action::Restart { .. }));
        // A person's stop task or desired state still comes first.
        e.desired = DesiredState::Stopped;
        assert_eq!(diagnose(&e, &policy()).cause, Cause::DesiredStopped);
    }

    fn ev() -> Evidence {
        let mut e = Evidence::new("web", DesiredState::Running);
        e.container = Some("web-app-1".into());
        e.retries = 3;
        e.budget = Budget {
            restarts_in_window: 0,
            backoff: Duration::from_secs(5),
        };
        e
    }

    const D5: Duration = Duration::from_secs(5);

    #[test]
    fn rule_table() {
        type Case = (
            &'static str,
            Box<dyn Fn(&mut Evidence)>,
            Cause,
            &'static str,
        );
        let cases: Vec<Case> = vec![
            ("nothing wrong", Box::new(|_| {}), Cause::Healthy, "none"),
            (
                "exited non-zero → restart",
                Box::new(|e| e.exit_code = Some(2)),
                Cause::Exited,
                "restart",
            ),
            (
                "long-running exited 0 → restart",
                Box::new(|e| e.exit_code = Some(0)),
                Cause::Exited,
                "restart",
            ),
            (
                "one-shot exited 0 → complete",
                Box::new(|e| {
                    e.exit_code = Some(0);
                    e.one_shot = true;
                    e.failed_probes = 9;
                }),
                Cause::Completed,
                "none",
            ),
            (
                "one-shot exited 1 → restart",
                Box::new(|e| {
                    e.exit_code = Some(1);
                    e.one_shot = true;
                }),
                Cause::Exited,
                "restart",
            ),
            (
                "unhealthy below retries → none",
                Box::new(|e| e.failed_probes = 2),
                Cause::Healthy,
                "none",
            ),
            (
                "unhealthy for retries probes → restart",
                Box::new(|e| e.failed_probes = 3),
                Cause::Unhealthy,
                "restart",
            ),
            (
                "OOM → restart",
                Box::new(|e| {
                    e.exit_code = Some(137);
                    e.oom_killed = true;
                }),
                Cause::OomKilled,
                "restart",
            ),
            (
                "container missing → recreate",
                Box::new(|e| e.container_missing = true),
                Cause::ContainerMissing,
                "recreate",
            ),
            (
                "network missing → wait and retry",
                Box::new(|e| e.network_missing = Some("web_default".into())),
                Cause::NetworkMissing,
                "retry",
            ),
            (
                "image missing → wait and retry",
                Box::new(|e| e.image_missing = Some("nginx:1".into())),
                Cause::ImageMissing,
                "retry",
            ),
            (
                "pull failed → wait and retry, never give up",
                Box::new(|e| {
                    e.image_missing = Some("nginx:1".into());
                    e.pull_failed = Some("no registry".into());
                }),
                Cause::PullFailed,
                "retry",
            ),
            (
                "port allocated → wait for it, naming the holder",
                Box::new(|e| {
                    e.exit_code = Some(1);
                    e.port_allocated = Some(PortConflict {
                        port: 8080,
                        holder: Some("process 42 (nginx) listening on 0.0.0.0:8080".into()),
                    });
                }),
                Cause::PortAllocated,
                "retry",
            ),
            (
                "bind source missing → wait and retry",
                Box::new(|e| {
                    e.exit_code = Some(127);
                    e.bind_missing = Some("/mnt/late".into());
                }),
                Cause::BindSourceMissing,
                "retry",
            ),
            (
                "desired stopped → never act",
                Box::new(|e| {
                    e.desired = DesiredState::Stopped;
                    e.exit_code = Some(1);
                    e.container_missing = true;
                }),
                Cause::DesiredStopped,
                "none",
            ),
            (
                "user task active → never act",
                Box::new(|e| {
                    e.user_task_active = true;
                    e.exit_code = Some(1);
                    e.port_allocated = Some(PortConflict {
                        port: 1,
                        holder: None,
                    });
                }),
                Cause::UserTaskActive,
                "none",
            ),
        ];
        for (what, change, cause, action) in cases {
            let mut e = ev();
            change(&mut e);
            let d = diagnose(&e, &policy());
            let got = match d.action {
                Action::Restart { delay } => {
                    assert_eq!(delay, D5, "{what}");
                    "restart"
                }
                Action::Recreate { delay } => {
                    assert_eq!(delay, D5, "{what}");
                    "recreate"
                }
                Action::PullThenRecreate { .. } => "pull",
                Action::RetryLater => "retry",
                Action::None { .. } => "none",
                Action::GiveUp { .. } => "give up",
            };
            assert_eq!((d.cause, got), (cause, action), "{what}: {}", d.summary);
            assert!(!d.summary.is_empty(), "{what}");
        }
    }

    #[test]
    fn oom_warning_names_limit_and_peak() {
        let mut e = ev();
        e.exit_code = Some(137);
        e.oom_killed = true;
        e.memory_limit = Some(256 * 1024 * 1024);
        e.memory_peak = Some(255 * 1024 * 1024);
        let d = diagnose(&e, &policy());
        assert_eq!(d.action, Action::Restart { delay: D5 });
        assert_eq!(d.warnings.len(), 1);
        assert!(d.warnings[0].contains("limit 256 MiB"), "{}", d.warnings[0]);
        assert!(
            d.warnings[0].contains("peak use 255 MiB"),
            "{}",
            d.warnings[0]
        );
    }

    #[test]
    fn port_conflict_names_the_holder() {
        let mut e = ev();
        e.port_allocated = Some(PortConflict {
            port: 8080,
            holder: Some("process 42 (nginx) listening on 0.0.0.0:8080".into()),
        });
        let d = diagnose(&e, &policy());
        assert_eq!(d.cause.outcome(), "waiting");
        assert!(d.summary.contains("8080"), "{}", d.summary);
        assert!(d.summary.contains("process 42 (nginx)"), "{}", d.summary);
    }

    #[test]
    fn restart_off_leaves_failures_alone() {
        let mut e = ev();
        e.exit_code = Some(1);
        let d = diagnose(
            &e,
            &RestartConfig {
                on_failure: false,
                ..policy()
            },
        );
        assert_eq!(d.cause, Cause::RestartDisabled);
        assert!(d.action.is_none());
    }

    #[test]
    fn crash_loop_backs_off_then_gives_up() {
        let t0 = Instant::now();
        let mut limiter = RestartLimiter::new(policy());
        let mut e = ev();
        e.exit_code = Some(1);
        // (seconds after t0 the failure is seen) → expected action
        let mut delays = Vec::new();
        for step in 0..3u64 {
            let now = t0 + Duration::from_secs(step * 10);
            let d = diagnose_with(&e, &policy(), &limiter, now);
            match d.action {
                Action::Restart { delay } => delays.push(delay.as_secs()),
                other => panic!("step {step}: {other:?}"),
            }
            limiter.record(now);
        }
        assert_eq!(delays, [5, 10, 20]);
        let now = t0 + Duration::from_secs(30);
        let d = diagnose_with(&e, &policy(), &limiter, now);
        assert_eq!(d.cause, Cause::CrashLoop);
        assert_eq!(d.cause.outcome(), "gave up");
        assert!(matches!(d.action, Action::GiveUp { .. }));
        assert!(d.summary.contains("3 times within 10m"), "{}", d.summary);
        // Once the window has passed the budget is back.
        let later = t0 + Duration::from_secs(20 + 600);
        assert!(limiter.allowed(later));
        let d = diagnose_with(&e, &policy(), &limiter, later);
        assert_eq!(d.action, Action::Restart { delay: D5 });
    }

    #[test]
    fn backoff_table() {
        let t0 = Instant::now();
        // (restarts recorded, expected backoff in seconds); min 5, max 60
        let cases = [
            (0, 5),
            (1, 10),
            (2, 20),
            (3, 40),
            (4, 60),
            (10, 60),
            (40, 60),
        ];
        for (n, want) in cases {
            let mut l = RestartLimiter::new(RestartConfig {
                max_restarts: 100,
                ..policy()
            });
            for i in 0..n {
                l.record(t0 + Duration::from_millis(i));
            }
            assert_eq!(
                l.next_backoff(t0 + Duration::from_secs(1)),
                Duration::from_secs(want),
                "{n} restarts"
            );
        }
        let mut l = RestartLimiter::new(policy());
        l.record(t0);
        l.reset();
        assert_eq!(l.restarts_in_window(t0), 0);
    }

    #[test]
    fn error_text_table() {
        let cases: [(&str, ErrorFacts); 8] = [
            (
                "Error response from daemon: driver failed programming external connectivity on endpoint web_app_1 (abc): Bind for 0.0.0.0:8080 failed: port is already allocated",
                ErrorFacts { port_allocated: Some(8080), ..Default::default() },
            ),
            (
                "Error starting userland proxy: listen tcp4 0.0.0.0:18080: bind: address already in use",
                ErrorFacts { port_allocated: Some(18080), ..Default::default() },
            ),
            (
                "Error response from daemon: listen tcp6 [::]:443: bind: address already in use",
                ErrorFacts { port_allocated: Some(443), ..Default::default() },
            ),
            (
                "ERROR: for app  Cannot start service app: network 3f2a9c not found",
                ErrorFacts { network_missing: Some("3f2a9c".into()), ..Default::default() },
            ),
            (
                "ERROR: Network shared declared as external, but could not be found. Please create the network manually",
                ErrorFacts { network_missing: Some("shared".into()), ..Default::default() },
            ),
            (
                "Error: No such image: stackd-test/missing:1",
                ErrorFacts { image_missing: Some("stackd-test/missing:1".into()), ..Default::default() },
            ),
            (
                "ERROR: pull access denied for nope/x, repository does not exist or may require 'docker login'",
                ErrorFacts { image_missing: Some("nope/x".into()), ..Default::default() },
            ),
            ("Creating web_app_1 ... done", ErrorFacts::default()),
        ];
        for (text, want) in cases {
            assert_eq!(ErrorFacts::parse(text), want, "{text}");
        }
        let e = ev().with_error_text("Bind for 0.0.0.0:8080 failed: port is already allocated");
        assert_eq!(
            e.port_allocated,
            Some(PortConflict {
                port: 8080,
                holder: None
            })
        );
    }

    /// Real output of Compose v1 (1.29) and v2 (2.26) against Engine 20.10,
    /// kept in `tests/fixtures/compose-errors/`.
    #[test]
    fn reads_what_both_compose_flavors_say() {
        macro_rules! fixture {
            ($name:literal) => {
                include_str!(concat!("../tests/fixtures/compose-errors/", $name))
            };
        }
        let no_host = "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host";
        let pulled = |image: &str| ErrorFacts {
            image_missing: Some(image.to_string()),
            pull_failed: Some(no_host.to_string()),
            ..Default::default()
        };
        let cases: Vec<(&str, ErrorFacts)> = vec![
            (
                fixture!("v1-up-image-pull-fails.txt"),
                pulled("stackd-test/missing:nope"),
            ),
            (
                fixture!("v2-up-image-pull-fails.txt"),
                pulled("the image of service main"),
            ),
            (
                fixture!("v1-pull-fails.txt"),
                pulled("the image of service main"),
            ),
            (
                fixture!("v2-pull-fails.txt"),
                pulled("the image of service main"),
            ),
            (
                fixture!("v2-up-image-missing-pull-never.txt"),
                ErrorFacts {
                    image_missing: Some("stackd-test/missing:nope".into()),
                    ..Default::default()
                },
            ),
            (
                fixture!("v1-up-external-network-missing.txt"),
                ErrorFacts {
                    network_missing: Some("cszz-shared-net".into()),
                    ..Default::default()
                },
            ),
            (
                fixture!("v2-up-external-network-missing.txt"),
                ErrorFacts {
                    network_missing: Some("cszz-shared-net".into()),
                    ..Default::default()
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(ErrorFacts::parse(text), want, "{text}");
            assert!(want.environmental());
        }
        for text in [
            fixture!("v1-up-bind-source-missing.txt"),
            fixture!("v2-up-bind-source-missing.txt"),
        ] {
            let f = ErrorFacts::parse(text);
            assert_eq!(
                f.bind_missing.as_deref(),
                Some("/tmp/cs/nonexistent-dir"),
                "{text}"
            );
            assert!(
                f.port_allocated.is_none() && f.image_missing.is_none(),
                "{f:?}"
            );
        }
        for text in [
            fixture!("v1-up-port-in-use.txt"),
            fixture!("v2-up-port-in-use.txt"),
        ] {
            assert_eq!(
                ErrorFacts::parse(text).port_allocated,
                Some(34755),
                "{text}"
            );
        }
        for text in [
            fixture!("v1-up-port-allocated.txt"),
            fixture!("v2-up-port-allocated.txt"),
        ] {
            assert_eq!(
                ErrorFacts::parse(text).port_allocated,
                Some(34756),
                "{text}"
            );
        }
    }

    #[test]
    fn reads_proc_net_tcp_lines() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1065 1 0 100 0 0 10 0\n\
   1: 0100007F:1F90 0200007F:D2A0 01 00000000:00000000 00:00000000 00000000     0        0 2000 1 0 100 0 0 10 0\n\
   2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 3000 1 0 100 0 0 10 0\n";
        assert_eq!(
            listening_sockets(table, 8080),
            vec![(1065, "127.0.0.1:8080".to_string())]
        );
        let table6 = "header\n   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 77 1 0\n";
        assert_eq!(
            listening_sockets(table6, 8080),
            vec![(77, "[::1]:8080".to_string())]
        );
    }

    #[test]
    fn docker_proxy_cmdline() {
        let cmd = [
            "/usr/bin/docker-proxy",
            "-proto",
            "tcp",
            "-host-ip",
            "0.0.0.0",
            "-host-port",
            "8080",
            "-container-ip",
            "172.17.0.2",
            "-container-port",
            "80",
        ]
        .join("\0");
        let cmd = cmd.as_bytes();
        assert_eq!(docker_proxy_target(cmd).as_deref(), Some("172.17.0.2:80"));
        assert_eq!(docker_proxy_target(b"nginx\0-g\0"), None);
    }

    #[test]
    fn finds_this_process_listening() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let holders = port_holders(port).unwrap();
        let me = std::process::id();
        let mine = holders
            .iter()
            .find(|h| h.pid == Some(me))
            .unwrap_or_else(|| panic!("pid {me} not among {holders:?}"));
        assert_eq!(mine.address, format!("127.0.0.1:{port}"));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(mine.command, comm.trim_end());
        assert!(mine.to_string().contains(&format!("process {me}")));
        drop(listener);
        assert!(port_holders(port).unwrap().is_empty());
    }
}
