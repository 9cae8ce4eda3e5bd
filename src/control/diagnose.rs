//! `Diagnose`: the evidence the rule table reads, gathered from the core,
//! and its verdict in words a person reads.

use super::{Control, ControlError};
use crate::health::Seen;
use crate::recovery::{self, Evidence};

impl Control {
    /// The evidence and what the rule table would do, without doing it,
    /// in words a person reads (no debug output). Its "restarts" is the
    /// status's `RestartCount` (the one `health` and `status` show: Docker's
    /// restarts of the containers plus stackd's recoveries); the crash-loop
    /// budget, which a person's start or stop resets and which only counts
    /// stackd's restarts within `window`, is named as what it is.
    pub fn diagnose(&self, name: &str) -> Result<Vec<String>, ControlError> {
        let cfg = self.config();
        let svc = self.shared.local_service(&cfg, name)?;
        let policy = svc.restart.clone();
        let status = self.service(name)?;
        let seen = self.seen(name);
        let (ev, d) = self
            .shared
            .board
            .diagnose(name, svc, &seen, |ev| self.enrich(ev));
        let yes_no = |b: bool| if b { "yes" } else { "no" };
        let mut lines = vec![format!("summary: {}", d.summary)];
        lines.push(format!(
            "cause: {} (outcome: {})",
            d.cause.as_str(),
            d.cause.outcome()
        ));
        let action = match &d.action {
            // Already said as the summary: not twice.
            crate::recovery::Action::None { reason } if *reason == d.summary => {
                "nothing".to_string()
            }
            other => action_words(other),
        };
        lines.push(format!("action: {action}"));
        lines.push(format!("desired state: {}", ev.desired.as_str()));
        lines.push(format!(
            "task pending or running: {}",
            yes_no(ev.user_task_active)
        ));
        if let Some(c) = &ev.container {
            let code = ev.exit_code.map_or("none".to_string(), |c| c.to_string());
            lines.push(format!(
                "failed container: {c} (exit code {code}, killed for lack of memory: {})",
                yes_no(ev.oom_killed)
            ));
        }
        lines.push(format!(
            "failed probes: {} in a row ({} turn it unhealthy)",
            ev.failed_probes, ev.retries
        ));
        lines.push(format!("restarts: {}", status.restart_count));
        let next = if ev.budget.backoff.is_zero() {
            String::new()
        } else {
            format!(
                ", the next after {}",
                crate::fmt::duration(ev.budget.backoff)
            )
        };
        lines.push(format!(
            "crash-loop budget: {} of {} restarts used within {}{next}",
            ev.budget.restarts_in_window,
            policy.max_restarts,
            crate::fmt::duration(policy.window),
        ));
        lines.extend(d.warnings.iter().map(|w| format!("warning: {w}")));
        Ok(lines)
    }

    /// Evidence that needs a look around, taken without the board's lock: who
    /// holds a port, which configured service creates a missing network.
    pub(crate) fn enrich(&self, mut ev: Evidence) -> Evidence {
        if let Some(conflict) = ev.port_allocated.as_mut() {
            if conflict.holder.is_none() {
                conflict.holder = recovery::port_holders(conflict.port)
                    .ok()
                    .and_then(|h| h.first().map(|h| h.to_string()));
            }
        }
        if let Some(network) = &ev.network_missing {
            ev.network_creator = self.network_creator(network);
        }
        ev
    }

    /// What the supervisor reads from the core before it takes the board's
    /// lock (the core reads the board to answer status questions).
    pub(crate) fn seen(&self, service: &str) -> Seen {
        let cfg = self.config();
        let containers = self.containers(service);
        let peaks = containers
            .iter()
            .filter_map(|c| Some((c.id.clone(), self.figures().memory_peak(&c.id)?)))
            .collect();
        Seen {
            oomed: containers
                .iter()
                .filter(|c| self.oom_seen(&c.id))
                .map(|c| c.id.clone())
                .collect(),
            peaks,
            compose_failure: self.board().compose_failure(service),
            reconciling: self.queue().busy(""),
            // A unit service's engine is systemd: Docker's absence (a
            // `stackd --user` may have no access to it) is no reason to wait.
            docker_up: self.docker().is_some() || self.is_unit_service(service),
            outside: self.outside_stop(service),
            desired: self.desired_state(service),
            busy: self.queue().busy(service),
            containers,
            retries: cfg
                .service(service)
                .and_then(|s| s.health.as_ref())
                .map_or(1, |h| h.retries.max(1)),
            starting: self.startup_pending(),
            deployed: self.store().deployed().is_ok_and(|d| d.contains(service)),
            applied: self.shared.taken_up(service),
        }
    }
}

/// What the rule table would do, as `diagnose` says it.
fn action_words(action: &crate::recovery::Action) -> String {
    use crate::fmt::duration as human;
    use crate::recovery::Action;
    let after = |d: std::time::Duration| {
        if d.is_zero() {
            "now".to_string()
        } else {
            format!("in {}", human(d))
        }
    };
    match action {
        Action::Restart { delay } => format!("restart the containers {}", after(*delay)),
        Action::Recreate { delay } => {
            format!("recreate what is missing (up -d) {}", after(*delay))
        }
        Action::PullThenRecreate { delay } => {
            format!("pull the image, then recreate (up -d) {}", after(*delay))
        }
        Action::RetryLater => {
            "wait for the surroundings, then run up -d again on the retry_interval cadence"
                .to_string()
        }
        Action::None { reason } => format!("nothing ({reason})"),
        Action::GiveUp { reason } => format!("give up until a person acts ({reason})"),
    }
}
