//! The supervisor: health and recovery for every service of this host.
//!
//! It listens to the world (the observer's `ServiceChanged`, which follows
//! Docker's die/oom/health_status events within a burst window) and to the
//! probe runner, keeps each service's [`HealthMachine`] and
//! [`RestartLimiter`], and turns failures into recovery tasks through the
//! queue, as the rule table in `recovery.rs` says. Every recovery task's
//! log starts with the evidence and the decision.
//!
//! Architecture invariant: the supervisor never runs Compose; it asks the
//! task queue, like everyone else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::control::Control;
use crate::engine::ContainerState;
use crate::events::{Event, Severity};
use crate::health::{self, Facts, Health, HealthMachine, ProbeResult};
use crate::recovery::{self, Action, Cause, Diagnosis, Evidence, RestartLimiter};
use crate::store::{now_usec, DesiredState};
use crate::tasks::TaskKind;
use crate::world;

/// What the supervisor knows of one service.
struct Slot {
    machine: HealthMachine,
    limiter: RestartLimiter,
    /// Recovery tasks stackd queued (added to Docker's restart counts).
    recoveries: u64,
    /// Why it gave up, until a person starts the service again.
    gave_up: Option<String>,
    /// A recovery is scheduled or running.
    pending: bool,
    /// The cause last announced, so a lasting failure is told once.
    announced: Option<Cause>,
    /// Waiting for the surroundings (image, network, port, mount), since
    /// the first failure of this episode.
    episode: Option<Episode>,
    /// A person's operation failed for a reason of its own (preflight, a
    /// dependency): they were told, and stackd does not retry behind
    /// them until they act again.
    hands_off: bool,
}

/// One stretch of environmental failures: told once when it starts, once
/// when the service came back.
#[derive(Clone, Debug)]
struct Episode {
    since: Instant,
    /// Retries queued so far.
    tries: u32,
    summary: String,
    /// The wait before the retry now scheduled.
    next: Duration,
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
    pub health: &'static str,
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

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn verdict(&self, service: &str) -> Option<Verdict> {
        let slots = self.lock();
        let slot = slots.get(service)?;
        let (health, message) = slot.machine.current();
        Some(match (&slot.gave_up, &slot.episode) {
            (Some(why), _) => Verdict {
                health: Health::Unhealthy.as_str(),
                message: format!("gave up: {why}"),
                recoveries: slot.recoveries,
                gave_up: true,
                waiting: false,
            },
            (None, Some(ep)) => Verdict {
                health: Health::Unhealthy.as_str(),
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
                health: health.as_str(),
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

    fn caught_up(&self, generation: u64) -> bool {
        self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation
    }

    fn set_generation(&self, generation: u64) {
        self.generation
            .store(generation, std::sync::atomic::Ordering::SeqCst);
    }

    /// What the service's last failed Compose call tells, if it failed.
    pub fn failure_facts(&self, service: &str) -> Option<recovery::ErrorFacts> {
        self.compose_failure(service)
            .map(|t| recovery::ErrorFacts::parse(&t))
    }

    fn compose_failure(&self, service: &str) -> Option<String> {
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

    /// What the rule table says now, without acting.
    pub fn diagnose(&self, control: &Control, service: &str) -> Option<(Evidence, Diagnosis)> {
        let cfg = control.config();
        let svc = cfg.service(service)?;
        let seen = seen(control, service);
        let mut slots = self.lock();
        let slot = slot_for(&mut slots, service, svc);
        let ev = evidence(service, &seen, slot);
        drop(slots);
        let ev = enrich(control, ev);
        let mut slots = self.lock();
        let slot = slot_for(&mut slots, service, svc);
        let d = recovery::diagnose_with(&ev, &svc.restart, &slot.limiter, Instant::now());
        Some((ev, d))
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

fn slot_for<'a>(
    slots: &'a mut HashMap<String, Slot>,
    service: &str,
    svc: &crate::config::ServiceConfig,
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
struct Seen {
    desired: DesiredState,
    busy: bool,
    containers: Vec<crate::engine::ContainerInfo>,
    retries: u32,
    starting: bool,
    /// stackd deployed it (so missing containers went missing, rather than
    /// never having been made: a new service waits for `apply`).
    deployed: bool,
    /// The monitor's highest memory use sampled, per container id.
    peaks: HashMap<String, u64>,
    /// What Compose printed when the last Compose call failed.
    compose_failure: Option<String>,
    /// A reconcile (boot, engine back, apply) is queued or running.
    reconciling: bool,
    docker_up: bool,
    /// Docker's evidence that a person stopped it (see `world::OutsideStop`).
    outside: Option<world::OutsideStop>,
    /// Containers Docker reported an `oom` for.
    oomed: Vec<String>,
}

fn seen(control: &Control, service: &str) -> Seen {
    let cfg = control.config();
    let containers = control.containers(service);
    let peaks = containers
        .iter()
        .filter_map(|c| Some((c.id.clone(), control.figures().memory_peak(&c.id)?)))
        .collect();
    Seen {
        oomed: containers
            .iter()
            .filter(|c| control.oom_seen(&c.id))
            .map(|c| c.id.clone())
            .collect(),
        peaks,
        compose_failure: control.board().compose_failure(service),
        reconciling: control.queue().busy(""),
        // A unit service's engine is systemd: Docker's absence (a
        // `stackd --user` may have no access to it) is no reason to wait.
        docker_up: control.docker().is_some() || control.is_unit_service(service),
        outside: control.outside_stop(service),
        desired: control.desired_state(service),
        busy: control.queue().busy(service),
        containers,
        retries: cfg
            .service(service)
            .and_then(|s| s.health.as_ref())
            .map_or(1, |h| h.retries.max(1)),
        starting: control.startup_pending(),
        deployed: control
            .store()
            .deployed()
            .is_ok_and(|d| d.contains(service)),
    }
}

/// The evidence for the rule table, from what was seen and the slot.
fn evidence(service: &str, seen: &Seen, slot: &Slot) -> Evidence {
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
    let _ = seen.deployed;
    ev.container_missing = seen.desired == DesiredState::Running
        && world::classify(containers) == world::Observed::Absent;
    match &seen.compose_failure {
        Some(text) => ev.with_error_text(text),
        None => ev,
    }
}

/// Evidence that needs a look around, taken without the board's lock: who
/// holds a port, which configured service creates a missing network.
fn enrich(control: &Control, mut ev: Evidence) -> Evidence {
    if let Some(conflict) = ev.port_allocated.as_mut() {
        if conflict.holder.is_none() {
            conflict.holder = recovery::port_holders(conflict.port)
                .ok()
                .and_then(|h| h.first().map(|h| h.to_string()));
        }
    }
    if let Some(network) = &ev.network_missing {
        ev.network_creator = control.network_creator(network);
    }
    ev
}

/// Start the probes of every local service that declares one.
fn start_probes(control: &Control, tx: mpsc::Sender<(String, ProbeResult)>) -> health::ProbeRunner {
    let cfg = control.config();
    let services = control
        .local_services()
        .into_iter()
        .filter_map(|s| Some((s.name, s.health?)))
        .collect();
    health::spawn_probes(services, &cfg.compose_dir, control.docker(), tx)
}

/// Run until the daemon stops (the task is aborted).
pub async fn run(control: Control, board: Arc<Board>) {
    let (probe_tx, mut probe_rx) = mpsc::channel::<(String, ProbeResult)>(256);
    let (done_tx, mut done_rx) = mpsc::channel::<String>(64);
    let mut probes = start_probes(&control, probe_tx.clone());
    let mut probes_had_docker = control.docker().is_some();
    let mut events = control.events().subscribe();
    let mut was_starting = true;
    // The observer's connection count last seen: a bump after the first
    // connection is the Docker engine back from a restart.
    let mut generation = control.docker_generation();
    board.set_generation(generation);
    loop {
        tokio::select! {
            Some((service, result)) = probe_rx.recv() => {
                observe(&control, &board, &service, Some(&result), &done_tx);
            }
            Some(service) = done_rx.recv() => {
                if let Some(slot) = board.lock().get_mut(&service) {
                    slot.pending = false;
                }
                observe(&control, &board, &service, None, &done_tx);
            }
            ev = events.recv() => match ev {
                Ok(Event::ServiceChanged { service }) => {
                    observe(&control, &board, &service, None, &done_tx);
                }
                Ok(Event::TaskNew { id, service, kind }) => {
                    let by_person = control
                        .task(id)
                        .is_ok_and(|t| crate::control::by_person(&t.origin));
                    if by_person && kind != TaskKind::Pull.as_str() {
                        board.reset(&service);
                    }
                }
                Ok(Event::TaskRemoved { id, service, result })
                    if !service.is_empty() && result != "done" =>
                {
                    // A failed task. A person's that met the surroundings
                    // (a missing image, say) is waited out like any other;
                    // one that failed for a reason of its own (preflight, a
                    // dependency) was answered to the person, and stackd
                    // keeps its hands off until they act again.
                    let by_person = control
                        .task(id)
                        .is_ok_and(|t| crate::control::by_person(&t.origin));
                    let environmental = board
                        .failure_facts(&service)
                        .is_some_and(|f| f.environmental());
                    if by_person && !environmental {
                        if let Some(svc) = control.local_service(&service) {
                            slot_for(&mut board.lock(), &service, &svc).hands_off = true;
                        }
                    } else {
                        // The event comes while the task's worker still holds
                        // the lane; looked at now, the service would read as
                        // "a task is running" and, with nothing else
                        // changing, never be looked at again.
                        look_again_once_free(&control, &service, vec![service.clone()]);
                    }
                }
                Ok(Event::ServicesReloaded) => {
                    probes.stop().await;
                    probes = start_probes(&control, probe_tx.clone());
                    // Health and restart settings may have changed: start afresh.
                    board.lock().clear();
                }
                Ok(Event::ManagerChanged) if was_starting && !control.startup_pending() => {
                    // Boot recovery is done: look at everything once, for
                    // what failed while it ran.
                    was_starting = false;
                    generation = control.docker_generation();
                    board.set_generation(generation);
                    for name in control.service_names() {
                        observe(&control, &board, &name, None, &done_tx);
                    }
                }
                Ok(Event::ManagerChanged)
                    if !was_starting
                        && control.docker().is_some()
                        && control.docker_generation() > generation =>
                {
                    // The engine is back (or its event stream was re-made):
                    // what its shutdown stopped is brought back like at boot,
                    // in dependency waves, with no restart budget spent.
                    generation = control.docker_generation();
                    let queued = control.apply("engine", true);
                    // The reconcile is queued before the supervisor looks
                    // again (it stays out of the way while one runs).
                    board.set_generation(generation);
                    match queued {
                        Ok(t) => info!("the Docker engine is back; reconcile task {} brings back what it stopped", t.id),
                        Err(e) => warn!("the Docker engine is back but no reconcile could be queued: {e}"),
                    }
                    probes.stop().await;
                    probes_had_docker = true;
                    probes = start_probes(&control, probe_tx.clone());
                }
                Ok(Event::TaskRemoved { service, .. }) if service.is_empty() => {
                    // A reconcile ended (after an engine restart, an apply):
                    // once its lane is free, look at everything once, for
                    // what it could not fix.
                    look_again_once_free(&control, "", control.service_names());
                }
                Ok(Event::ManagerChanged) => {
                    // Container probes need Docker: restart them once it is back.
                    let has = control.docker().is_some();
                    if has != probes_had_docker {
                        probes_had_docker = has;
                        probes.stop().await;
                        probes = start_probes(&control, probe_tx.clone());
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                _ => {}
            },
        }
    }
    probes.stop().await;
}

/// Once no task holds `lane` (a service's, or "" for the host's
/// reconciles), at most 5 s from now, announces each of `services` as
/// changed, so the loop looks at them again with the task gone.
fn look_again_once_free(control: &Control, lane: &str, services: Vec<String>) {
    let control = control.clone();
    let lane = lane.to_string();
    tokio::spawn(async move {
        for _ in 0..100 {
            if !control.queue().busy(&lane) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for service in services {
            let _ = control.events().send(Event::ServiceChanged { service });
        }
    });
}

fn observe(
    control: &Control,
    board: &Arc<Board>,
    service: &str,
    probe: Option<&ProbeResult>,
    done: &mpsc::Sender<String>,
) {
    let Some(svc) = control.local_service(service) else {
        return;
    };
    let seen = seen(control, service);
    if seen.desired == DesiredState::Stopped
        && !seen.busy
        && world::classify(&seen.containers) == world::Observed::Running
    {
        control.started_outside(service);
    }
    let facts = if svc.is_external() {
        // An endpoint is "up" as far as the machine goes: its probe decides.
        Facts {
            expected: 1,
            running: 1,
            ..Facts::default()
        }
    } else {
        Facts::from_containers(&seen.containers, now_usec())
    };
    let mut slots = board.lock();
    let slot = slot_for(&mut slots, service, &svc);
    let change = slot.machine.observe(&facts, probe);
    // Boot recovery handles what is down at start, and a reconcile what
    // an engine restart stopped; the supervisor takes over once they are
    // done. Without Docker there is nothing to decide on.
    let skip = slot.pending
        || slot.hands_off
        || seen.starting
        || seen.reconciling
        || !seen.docker_up
        || (svc.is_compose() && !board.caught_up(control.docker_generation()));
    let ev = evidence(service, &seen, slot);
    drop(slots);
    let ev = enrich(control, ev);
    if let Some(change) = change {
        drop_change(control, service, &change);
    }
    if svc.is_external() {
        // Alerts on its health, and no recovery: stackd cannot restart it.
        return;
    }
    let mut slots = board.lock();
    if skip {
        return;
    }
    let Some(slot) = slots.get_mut(service) else {
        return;
    };
    // Docker sends a death's evidence (its `oom`, the `kill` of a
    // person's `docker kill`/`docker stop`) before the `die`, so once the
    // event stream has told the `die`, all of it is here and the decision
    // is made at once. Only a container seen dead in Docker's list before
    // its `die` came through the stream is waited for, up to [`SETTLE`].
    let unheard: Vec<String> =
        if ev.oom_killed || ev.stopped_outside.is_some() || told_by_systemd(control, service) {
            Vec::new()
        } else {
            let now = now_usec();
            let settle = u64::try_from(SETTLE.as_micros()).unwrap_or(u64::MAX);
            seen.containers
                .iter()
                .filter(|c| {
                    !c.oneoff
                        && !world::is_complete(c)
                        && matches!(c.state, ContainerState::Exited | ContainerState::Dead)
                        && c.finished_at_usec
                            .is_some_and(|t| now.saturating_sub(t) < settle)
                        && !control.die_seen(&c.id)
                })
                .map(|c| c.id.clone())
                .collect()
        };
    if !unheard.is_empty() {
        slot.pending = true;
        drop(slots);
        let (control, service, done) = (control.clone(), service.to_string(), done.clone());
        tokio::spawn(async move {
            let until = tokio::time::Instant::now() + SETTLE;
            while tokio::time::Instant::now() < until
                && !unheard.iter().all(|id| control.die_seen(id))
            {
                tokio::time::sleep(DIE_POLL).await;
            }
            let _ = done.send(service).await;
        });
        return;
    }
    let now = Instant::now();
    let d = recovery::diagnose_with(&ev, &svc.restart, &slot.limiter, now);
    tracing::debug!(
        stackd_service = service,
        "diagnosis: {:?}: {}",
        d.cause,
        d.summary
    );
    let kind = match d.action {
        Action::Restart { .. } => TaskKind::Restart,
        Action::Recreate { .. } => TaskKind::Deploy,
        Action::PullThenRecreate { .. } => TaskKind::Update,
        Action::GiveUp { ref reason } => {
            if slot.gave_up.is_none() {
                slot.gave_up = Some(reason.clone());
                slot.announced = Some(d.cause);
                drop(slots);
                // The journal channel logs the alert with its MESSAGE_ID.
                let body: Vec<&str> = std::iter::once(reason.as_str())
                    .chain(d.warnings.iter().map(String::as_str))
                    .collect();
                control.alert(
                    Severity::Critical,
                    "gave-up",
                    service,
                    &d.summary,
                    &body.join("\n"),
                );
                let _ = control.events().send(Event::ServiceChanged {
                    service: service.to_string(),
                });
            }
            return;
        }
        Action::None { .. } if d.cause == Cause::StoppedOutside => {
            slot.pending = true;
            drop(slots);
            if let Some(stop) = seen.outside {
                confirm_outside_stop(control, service, stop, done);
            }
            return;
        }
        Action::None { .. } => {
            let running = world::classify(&seen.containers) == world::Observed::Running;
            let came_back = match d.cause {
                Cause::Healthy if running => slot.episode.take(),
                Cause::DesiredStopped | Cause::StoppedOutside => {
                    slot.episode = None;
                    None
                }
                _ => None,
            };
            if d.cause == Cause::Healthy {
                slot.announced = None;
            }
            drop(slots);
            if let Some(ep) = came_back {
                control.alert(
                    Severity::Warning,
                    "came-back",
                    service,
                    &format!(
                        "{service} came back after {} waiting ({} tries)",
                        crate::fmt::duration(ep.since.elapsed()),
                        ep.tries
                    ),
                    &format!("it waited for: {}", ep.summary),
                );
                let _ = control.events().send(Event::ServiceChanged {
                    service: service.to_string(),
                });
            }
            return;
        }
        Action::RetryLater => {
            let first = slot.episode.is_none();
            let ep = slot.episode.get_or_insert_with(|| Episode {
                since: Instant::now(),
                tries: 0,
                summary: String::new(),
                next: Duration::ZERO,
            });
            let delay = retry_delay(
                svc.restart.retry_interval,
                svc.restart.retry_cap(),
                ep.tries,
            );
            ep.tries += 1;
            ep.summary = d.summary.clone();
            ep.next = delay;
            let tries = ep.tries;
            slot.pending = true;
            slot.gave_up = None;
            drop(slots);
            if first {
                control.alert(
                    Severity::Warning,
                    "waiting",
                    service,
                    &d.summary,
                    &format!(
                        "stackd tries again in {}, then less and less often (at most every {}); it never gives up on this. The service is back when what it waits for is.",
                        crate::fmt::duration(delay),
                        crate::fmt::duration(svc.restart.retry_cap())
                    ),
                );
            }
            let _ = control.events().send(Event::ServiceChanged {
                service: service.to_string(),
            });
            let mut lines = describe(&ev, &d, TaskKind::Deploy, delay, tries, 0);
            if let Some(last) = lines.iter_mut().find(|l| l.starts_with("decision:")) {
                *last = format!(
                    "decision: deploy ({}), try {tries} after {delay:?}; environmental, never gives up",
                    d.cause.as_str()
                );
            }
            retry_later(control, service, delay, lines, done);
            return;
        }
    };
    // The first recovery in a window is immediate; then back off.
    let delay = if slot.limiter.restarts_in_window(now) == 0 {
        Duration::ZERO
    } else {
        slot.limiter.next_backoff(now)
    };
    slot.limiter.record(now);
    slot.recoveries += 1;
    slot.pending = true;
    let attempt = slot.limiter.restarts_in_window(now);
    let max = svc.restart.max_restarts;
    drop(slots);
    let evidence_lines = describe(&ev, &d, kind, delay, attempt, max);
    info!(stackd_service = service, "recovery: {}", d.summary);
    let generation = control.docker_generation();
    let compose = svc.is_compose();
    let control = control.clone();
    let service = service.to_string();
    let done = done.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        // Docker went away meanwhile (an engine restart): the reconcile
        // that follows its return decides instead. A unit service's
        // recovery is systemd's business, not Docker's.
        let still_wanted = control
            .service(&service)
            .is_ok_and(|s| s.desired == DesiredState::Running)
            && !control.queue().busy(&service)
            && !control.queue().busy("")
            && (!compose
                || (control.docker_generation() == generation && control.docker().is_some()));
        if still_wanted {
            match control.queue().submit(kind, &service, "recovery") {
                Ok(task) => {
                    for line in &evidence_lines {
                        let _ = control.store().append_task_log(task.id, line);
                    }
                    let severity = if d.warnings.is_empty() {
                        Severity::Warning
                    } else {
                        Severity::Critical
                    };
                    control.alert(
                        severity,
                        "recovering",
                        &service,
                        &format!("{} (task {}: {})", d.summary, task.id, kind.as_str()),
                        &d.warnings.join("\n"),
                    );
                    let _ = control.queue().wait(task.id).await;
                }
                Err(e) => warn!(stackd_service = %service, "cannot queue the recovery: {e}"),
            }
        }
        let _ = done.send(service).await;
    });
}

/// Queue the next `up -d` of a service that waits for its surroundings.
fn retry_later(
    control: &Control,
    service: &str,
    delay: Duration,
    lines: Vec<String>,
    done: &mpsc::Sender<String>,
) {
    let control = control.clone();
    let service = service.to_string();
    let done = done.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let still_wanted = control
            .service(&service)
            .is_ok_and(|s| s.desired == DesiredState::Running)
            && !control.queue().busy(&service)
            && control.docker().is_some()
            && control.board().waiting(&service);
        if still_wanted {
            match control
                .queue()
                .submit(TaskKind::Deploy, &service, "recovery")
            {
                Ok(task) => {
                    for line in &lines {
                        let _ = control.store().append_task_log(task.id, line);
                    }
                    let _ = control.queue().wait(task.id).await;
                }
                Err(e) => warn!(stackd_service = %service, "cannot queue the retry: {e}"),
            }
        }
        let _ = done.send(service).await;
    });
}

/// Where unit deaths enter: a `kind = "unit"` service's evidence is
/// whole when systemd reports the death (its `Result` says `oom-kill`,
/// `signal` or `exit-code`; a person's `systemctl stop` ends with
/// `success`, no failure), so nothing is waited for.
fn told_by_systemd(control: &Control, service: &str) -> bool {
    control.unit_state(service).is_some()
}

/// How long a death seen in Docker's list is waited for in the event
/// stream (whose `die` comes after its evidence: an `oom`, a person's
/// `kill`/`stop`) before deciding without it.
const SETTLE: Duration = Duration::from_millis(300);

/// How often that wait looks whether the `die` has come.
const DIE_POLL: Duration = Duration::from_millis(5);

/// How long a stop through Docker must hold before it is taken for a
/// person's intent: a `docker restart` by hand starts the container again
/// well within it.
const OUTSIDE_GRACE: Duration = Duration::from_millis(1500);

/// A person stopped `service` through Docker (a `kill`/`stop` before the
/// `die`, no stackd task): after [`OUTSIDE_GRACE`], if it is still down and
/// the engine still takes new connections (an engine shutting down stops
/// its containers the same way, but has closed its socket first), the
/// desired state becomes stopped with source "stopped outside stackd".
fn confirm_outside_stop(
    control: &Control,
    service: &str,
    stop: world::OutsideStop,
    done: &mpsc::Sender<String>,
) {
    let control = control.clone();
    let service = service.to_string();
    let done = done.clone();
    tokio::spawn(async move {
        tokio::time::sleep(OUTSIDE_GRACE).await;
        let now = control.outside_stop(&service);
        let still = now.as_ref().is_some_and(|o| o.container == stop.container)
            && world::classify(&control.containers(&service)) != world::Observed::Running
            && control.desired_state(&service) == DesiredState::Running;
        // A unit's stop is systemd's to tell; Docker has no say in it.
        let engine_up = still
            && (control.is_unit_service(&service)
                || control.docker().is_some() && crate::engine::Docker::connect().await.is_ok());
        if let (true, Some(now)) = (still && engine_up, now) {
            control.stopped_outside(&service, &now);
        } else if still {
            // The engine is going away: nobody asked for this stop.
            control.forget_outside_stop(&service);
        }
        let _ = done.send(service).await;
    });
}

/// A change of health: an event people are told about, then the world's
/// view of the service is announced again (D-Bus properties).
fn drop_change(control: &Control, service: &str, change: &health::Change) {
    info!(
        stackd_service = service,
        "health {} -> {}: {}",
        change.from.as_str(),
        change.to.as_str(),
        change.message
    );
    match change.to {
        Health::Unhealthy => {
            control.alert(
                Severity::Warning,
                "unhealthy",
                service,
                &format!("{service} is unhealthy: {}", change.message),
                "",
            );
        }
        Health::Healthy if change.from == Health::Unhealthy || change.from == Health::Degraded => {
            control.alert(
                Severity::Info,
                "healthy",
                service,
                &format!("{service} is healthy again"),
                "",
            );
        }
        _ => {}
    }
    let _ = control.events().send(Event::ServiceChanged {
        service: service.to_string(),
    });
}

/// The first lines of a recovery task's log: what was seen, what was decided.
fn describe(
    ev: &Evidence,
    d: &Diagnosis,
    kind: TaskKind,
    delay: Duration,
    attempt: u32,
    max: u32,
) -> Vec<String> {
    let mut lines = vec![format!("recovery: {}", d.summary)];
    let mut seen = Vec::new();
    if let Some(c) = &ev.container {
        seen.push(format!("container {c}"));
    }
    if let Some(code) = ev.exit_code {
        seen.push(format!("exit code {code}"));
    }
    if ev.oom_killed {
        seen.push("killed by the OOM killer".to_string());
    }
    if ev.failed_probes > 0 {
        seen.push(format!(
            "{} failed probes of {}",
            ev.failed_probes, ev.retries
        ));
    }
    if ev.container_missing {
        seen.push("no containers".to_string());
    }
    if let Some(image) = &ev.image_missing {
        seen.push(format!("Compose: image {image} missing"));
    }
    if let Some(err) = &ev.pull_failed {
        seen.push(format!("Compose: pull failed: {err}"));
    }
    if let Some(network) = &ev.network_missing {
        seen.push(format!("Compose: network {network} not found"));
    }
    if let Some(c) = &ev.port_allocated {
        seen.push(format!(
            "Compose: host port {} already allocated{}",
            c.port,
            c.holder
                .as_ref()
                .map_or(String::new(), |h| format!(" (held by {h})"))
        ));
    }
    if let Some(path) = &ev.bind_missing {
        seen.push(format!("Compose: bind source {path} does not exist"));
    }
    if let Some(door) = &ev.stopped_outside {
        seen.push(format!("stopped outside stackd ({door})"));
    }
    lines.push(format!("evidence: {}", seen.join(", ")));
    lines.push(format!(
        "decision: {} ({}), attempt {attempt} of {max}, after {delay:?}",
        kind.as_str(),
        d.cause.as_str()
    ));
    lines.extend(d.warnings.iter().map(|w| format!("warning: {w}")));
    lines
}
