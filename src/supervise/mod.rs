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

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::control::Control;
use crate::engine::ContainerState;
use crate::events::{Event, Severity};
use crate::health::{self, evidence, retry_delay, slot_for, Board, Episode, Facts, ProbeResult};
use crate::recovery::{self, Action, Cause};
use crate::store::{now_usec, DesiredState, Origin, TaskRecord, TaskResult};
use crate::tasks::TaskKind;
use crate::world;

mod told;
use told::{describe, drop_change};

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
                        .is_ok_and(|t| t.origin.by_person());
                    if by_person && kind != TaskKind::Pull.as_str() {
                        board.reset(&service);
                    }
                }
                Ok(Event::TaskRemoved { id, service, result })
                    if !service.is_empty() && result != TaskResult::Done.as_str() =>
                {
                    // A failed task. A person's that met the surroundings
                    // (a missing image, say) is waited out like any other;
                    // one that failed for a reason of its own (preflight, a
                    // dependency) was answered to the person, and stackd
                    // keeps its hands off until they act again.
                    let by_person = control
                        .task(id)
                        .is_ok_and(|t| t.origin.by_person());
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
                    let queued = control.apply(&Origin::Engine, true);
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
    let seen = control.seen(service);
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
    let ev = control.enrich(ev);
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
    let name = service.to_string();
    later(delay, service, done, async move {
        // Docker went away meanwhile (an engine restart): the reconcile
        // that follows its return decides instead. A unit service's
        // recovery is systemd's business, not Docker's.
        let still = still_wanted(&control, &name)
            && !control.queue().busy("")
            && (!compose
                || (control.docker_generation() == generation && control.docker().is_some()));
        let Some(task) = still
            .then(|| submit_recovery(&control, kind, &name, &evidence_lines, "recovery"))
            .flatten()
        else {
            return;
        };
        let severity = if d.warnings.is_empty() {
            Severity::Warning
        } else {
            Severity::Critical
        };
        control.alert(
            severity,
            "recovering",
            &name,
            &format!("{} (task {}: {})", d.summary, task.id, kind.as_str()),
            &d.warnings.join("\n"),
        );
        let _ = control.queue().wait(task.id).await;
    });
}

/// Whether `service` is still to be brought back when its turn comes:
/// wanted running, and no task of it pending or running.
fn still_wanted(control: &Control, service: &str) -> bool {
    control
        .service(service)
        .is_ok_and(|s| s.desired == DesiredState::Running)
        && !control.queue().busy(service)
}

/// Queue a `recovery` task of `service` whose log starts with `lines`
/// (the evidence and the decision); `None`, with a warning naming `what`
/// could not be queued, when the queue refuses it.
fn submit_recovery(
    control: &Control,
    kind: TaskKind,
    service: &str,
    lines: &[String],
    what: &str,
) -> Option<TaskRecord> {
    match control.queue().submit(kind, service, &Origin::Recovery) {
        Ok(task) => {
            for line in lines {
                let _ = control.store().append_task_log(task.id, line);
            }
            Some(task)
        }
        Err(e) => {
            warn!(stackd_service = %service, "cannot queue the {what}: {e}");
            None
        }
    }
}

/// Run `step` after `delay` in a task of its own, then hand `service` back
/// to the supervisor's loop through `done`, whatever `step` did.
fn later(
    delay: Duration,
    service: &str,
    done: &mpsc::Sender<String>,
    step: impl Future<Output = ()> + Send + 'static,
) {
    let service = service.to_string();
    let done = done.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        step.await;
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
    let name = service.to_string();
    later(delay, service, done, async move {
        let still = still_wanted(&control, &name)
            && control.docker().is_some()
            && control.board().waiting(&name);
        if let Some(task) = still
            .then(|| submit_recovery(&control, TaskKind::Deploy, &name, &lines, "retry"))
            .flatten()
        {
            let _ = control.queue().wait(task.id).await;
        }
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
    let name = service.to_string();
    later(OUTSIDE_GRACE, service, done, async move {
        let now = control.outside_stop(&name);
        let still = now.as_ref().is_some_and(|o| o.container == stop.container)
            && world::classify(&control.containers(&name)) != world::Observed::Running
            && control.desired_state(&name) == DesiredState::Running;
        // A unit's stop is systemd's to tell; Docker has no say in it.
        let engine_up = still
            && (control.is_unit_service(&name)
                || control.docker().is_some() && control.engine().connect().await.is_ok());
        if let (true, Some(now)) = (still && engine_up, now) {
            control.stopped_outside(&name, &now);
        } else if still {
            // The engine is going away: nobody asked for this stop.
            control.forget_outside_stop(&name);
        }
    });
}
