//! The supervision board: what the supervisor (`supervise.rs`) knows of
//! each service — its health machine, restart budget, recoveries, the
//! environmental episode it waits out — and what the last Compose call
//! said. The supervisor writes it; the core reads it for `Health`,
//! `HealthMessage`, `RestartCount` and `Diagnose`. It lives here, below the
//! core, so the core can hold it without knowing the supervisor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Health, HealthMachine};
use crate::config::ServiceConfig;
use crate::engine::ContainerState;
use crate::recovery::{self, Cause, Diagnosis, Evidence, RestartLimiter};
use crate::store::DesiredState;
use crate::world;

/// What the supervisor knows of one service.
pub(crate) struct Slot {
    pub(crate) machine: HealthMachine,
    pub(crate) limiter: RestartLimiter,
    /// Recovery tasks stackd queued (added to Docker's restart counts).
    pub(crate) recoveries: u64,
    /// Why it gave up, until a person starts the service again.
    pub(crate) gave_up: Option<String>,
    /// A recovery is scheduled or running.
    pub(crate) pending: bool,
    /// The cause last announced, so a lasting failure is told once.
    pub(crate) announced: Option<Cause>,
    /// Waiting for the surroundings (image, network, port, mount), since
    /// the first failure of this episode.
    pub(crate) episode: Option<Episode>,
    /// A person's operation failed for a reason of its own (preflight, a
    /// dependency): they were told, and stackd does not retry behind
    /// them until they act again.
    pub(crate) hands_off: bool,
}

/// One stretch of environmental failures: told once when it starts, once
/// when the service came back.
#[derive(Clone, Debug)]
pub(crate) struct Episode {
    pub(crate) since: Instant,
    /// Retries queued so far.
    pub(crate) tries: u32,
    pub(crate) summary: String,
    /// The wait before the retry now scheduled.
    pub(crate) next: Duration,
}

/// The wait before retry number `tries` (0-based) of an environmental
/// failure: `interval`, doubling, at most `cap`.
pub fn retry_delay(interval: Duration, cap: Duration, tries: u32) -> Duration {
    let factor = 1u32.checked_shl(tries.min(31)).unwrap_or(u32::MAX);
    interval.saturating_mul(factor).min(cap.max(interval))
}

/// Shared between the supervisor (writer) and the core (reader, for
/// `Health`, `HealthMessage`, `RestartCount` and `Diagnose`).
#[derive(Default)]
pub struct Board {
    slots: Mutex<HashMap<String, Slot>>,
    /// What Compose printed when the service's last Compose call failed
    /// (cleared by one that succeeds): the evidence of environmental
    /// failures.
    failures: Mutex<HashMap<String, String>>,
    /// The Docker connection the supervisor has caught up with (see
    /// `World::generation`): until it has, what the world shows is the
    /// aftermath of an engine restart, for a reconcile to handle.
    generation: std::sync::atomic::AtomicU64,
}

/// Health as the supervisor sees it.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub health: Health,
    pub message: String,
    pub recoveries: u64,
    pub gave_up: bool,
    /// Waiting for the surroundings and retrying.
    pub waiting: bool,
}

impl Board {
    pub fn new() -> Arc<Board> {
        Arc::new(Board::default())
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn verdict(&self, service: &str) -> Option<Verdict> {
        let slots = self.lock();
        let slot = slots.get(service)?;
        let (health, message) = slot.machine.current();
        Some(match (&slot.gave_up, &slot.episode) {
            (Some(why), _) => Verdict {
                health: Health::Unhealthy,
                message: format!("gave up: {why}"),
                recoveries: slot.recoveries,
                gave_up: true,
                waiting: false,
            },
            (None, Some(ep)) => Verdict {
                health: Health::Unhealthy,
                message: format!(
                    "waiting: {}; trying again every {} at most (try {})",
                    ep.summary,
                    crate::fmt::duration(ep.next),
                    ep.tries
                ),
                recoveries: slot.recoveries,
                gave_up: false,
                waiting: true,
            },
            (None, None) => Verdict {
                health,
                message: message.to_string(),
                recoveries: slot.recoveries,
                gave_up: false,
                waiting: false,
            },
        })
    }

    /// What the service's last Compose call said: `Some(output)` when it
    /// failed, `None` when it succeeded.
    pub fn note_compose(&self, service: &str, failed: Option<String>) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match failed {
            Some(text) => f.insert(service.to_string(), text),
            None => f.remove(service),
        };
    }

    pub(crate) fn caught_up(&self, generation: u64) -> bool {
        self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
    }

    pub(crate) fn set_generation(&self, generation: u64) {
        self.generation
            .store(generation, std::sync::atomic::Ordering::SeqCst);
    }

    /// What the service's last failed Compose call tells, if it failed.
    pub fn failure_facts(&self, service: &str) -> Option<recovery::ErrorFacts> {
        self.compose_failure(service)
            .map(|t| recovery::ErrorFacts::parse(&t))
    }

    pub fn compose_failure(&self, service: &str) -> Option<String> {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(service)
            .cloned()
    }

    /// The service waits for its surroundings (its retries skip preflight:
    /// the evidence is what Compose itself said).
    pub fn waiting(&self, service: &str) -> bool {
        self.lock()
            .get(service)
            .is_some_and(|s| s.episode.is_some())
    }

    /// What the rule table says now, without acting: `seen` is what the
    /// core showed a moment ago, `enrich` looks around (port holders, a
    /// network's creator) without the board's lock.
    pub(crate) fn diagnose(
        &self,
        service: &str,
        svc: &ServiceConfig,
        seen: &Seen,
        enrich: impl FnOnce(Evidence) -> Evidence,
    ) -> (Evidence, Diagnosis) {
        let mut slots = self.lock();
        let slot = slot_for(&mut slots, service, svc);
        let ev = evidence(service, seen, slot);
        drop(slots);
        let ev = enrich(ev);
        let mut slots = self.lock();
        let slot = slot_for(&mut slots, service, svc);
        let d = recovery::diagnose_with(&ev, &svc.restart, &slot.limiter, Instant::now());
        (ev, d)
    }

    /// A person started, restarted or stopped the service: forget the
    /// crash-loop budget and the "gave up".
    pub fn reset(&self, service: &str) {
        if let Some(slot) = self.lock().get_mut(service) {
            slot.limiter.reset();
            slot.gave_up = None;
            slot.announced = None;
            slot.episode = None;
            slot.hands_off = false;
        }
    }
}

pub(crate) fn slot_for<'a>(
    slots: &'a mut HashMap<String, Slot>,
    service: &str,
    svc: &ServiceConfig,
) -> &'a mut Slot {
    slots.entry(service.to_string()).or_insert_with(|| Slot {
        machine: HealthMachine::new(svc.health.as_ref()),
        limiter: RestartLimiter::new(svc.restart.clone()),
        recoveries: 0,
        gave_up: None,
        pending: false,
        announced: None,
        episode: None,
        hands_off: false,
    })
}

/// What the supervisor reads from the core before it takes the board's lock
/// (the core reads the board to answer status questions).
pub(crate) struct Seen {
    pub(crate) desired: DesiredState,
    pub(crate) busy: bool,
    pub(crate) containers: Vec<crate::engine::ContainerInfo>,
    pub(crate) retries: u32,
    pub(crate) starting: bool,
    /// stackd deployed it.
    pub(crate) deployed: bool,
    /// A reconcile planned it, or a person said start or stop: a service a
    /// reload added and nobody applied yet is not brought up.
    pub(crate) applied: bool,
    /// The monitor's highest memory use sampled, per container id.
    pub(crate) peaks: HashMap<String, u64>,
    /// What Compose printed when the last Compose call failed.
    pub(crate) compose_failure: Option<String>,
    /// A reconcile (boot, engine back, apply) is queued or running.
    pub(crate) reconciling: bool,
    pub(crate) docker_up: bool,
    /// Docker's evidence that a person stopped it (see `world::OutsideStop`).
    pub(crate) outside: Option<world::OutsideStop>,
    /// Containers Docker reported an `oom` for.
    pub(crate) oomed: Vec<String>,
}

/// The evidence for the rule table, from what was seen and the slot.
pub(crate) fn evidence(service: &str, seen: &Seen, slot: &Slot) -> Evidence {
    let mut ev = Evidence::new(service, seen.desired);
    ev.user_task_active = seen.busy;
    let containers = &seen.containers;
    let failed = containers.iter().find(|c| {
        !c.oneoff
            && !world::is_complete(c)
            && matches!(c.state, ContainerState::Exited | ContainerState::Dead)
    });
    if let Some(c) = failed {
        ev.container = Some(c.name.clone());
        ev.exit_code = c.exit_code;
        ev.oom_killed = c.oom_killed || seen.oomed.contains(&c.id);
        ev.memory_limit = c.memory_limit;
        ev.memory_peak = seen.peaks.get(&c.id).copied();
    }
    ev.one_shot = !containers.is_empty() && containers.iter().all(world::is_complete);
    ev.retries = seen.retries;
    if world::classify(containers) != world::Observed::Running {
        ev.stopped_outside = seen.outside.as_ref().map(|o| o.door.to_string());
    }
    ev.failed_probes = slot.machine.consecutive_failures();
    if slot.machine.current().0 == Health::Unhealthy {
        ev.failed_probes = ev.failed_probes.max(ev.retries);
    }
    // No containers while it should run, whether or not stackd made them
    // before (a boot that never got to create them, a `docker rm`).
    ev.container_missing = seen.desired == DesiredState::Running
        && world::classify(containers) == world::Observed::Absent;
    // A service a reload added is not recovered until `apply` or a person
    // takes it up: a reload alone starts and stops nothing.
    ev.not_applied = !seen.deployed && !seen.applied;
    match &seen.compose_failure {
        Some(text) => ev.with_error_text(text),
        None => ev,
    }
}
