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

use std::time::{Duration, Instant};

mod compose_errors;
mod limiter;
mod ports;

pub use compose_errors::ErrorFacts;
pub use limiter::RestartLimiter;
pub use ports::{port_holders, port_holders_in, PortHolder, RecoveryError};

use crate::config::{ManualStop, RestartConfig};
use crate::store::DesiredState;

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
    /// No reconcile has planned it since a reload added it, stackd never
    /// deployed it and no person said start or stop: it is not the
    /// supervisor's until `apply` (or a person) takes it up.
    pub not_applied: bool,
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
            not_applied: false,
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
    /// Configured by a reload and never taken up: `apply` (or a person's
    /// `start`) brings it up, not the supervisor.
    NotApplied,
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
            Cause::NotApplied => "not-applied",
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
            | Cause::RestartDisabled
            | Cause::NotApplied => "ok",
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
    if ev.not_applied {
        return Diagnosis::none(
            Cause::NotApplied,
            format!("{svc} was added by a reload and nothing has taken it up yet; `stackctl apply` or `stackctl start {svc}` does"),
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
                crate::fmt::mib(limit),
                crate::fmt::mib(peak)
            )),
            (Some(limit), None) => warning.push_str(&format!(
                ": limit {}; raise it if the service needs more",
                crate::fmt::mib(limit)
            )),
            (None, Some(peak)) => warning.push_str(&format!(
                " (no container limit; peak use {}): the host ran out of memory",
                crate::fmt::mib(peak)
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
                crate::fmt::duration(policy.window)
            ),
        );
        out.warnings = d.warnings;
        return out;
    }
    d
}

#[cfg(test)]
mod tests;
