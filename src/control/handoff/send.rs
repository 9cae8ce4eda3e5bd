//! The host a service leaves: the peers' checks, the `migrate` task
//! (prepare there, stop here, carry volumes, hand over, wait for it).

use std::time::Duration;

use futures_util::future::join_all;
use futures_util::stream::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    doubt_after, moving, single_host, ControlError, PeerFailure, PeerService, Peers, Reader,
    Remote, Shared, VolumeOffer, POLL,
};
use crate::config::{Config, Handoff, PeerConfig, ServiceConfig};
use crate::events::{Event, Severity};
use crate::store::{DesiredState, TaskRecord};
use crate::tasks::{Failure, Log, TaskKind};

impl Shared {
    /// The hand-off rule for `svc`: every other host with a peer URL but
    /// `skip` is asked at once (each within `[peer] timeout`). Without
    /// other hosts it asks nobody and costs nothing.
    pub(super) async fn check_peers(
        &self,
        cfg: &Config,
        svc: &ServiceConfig,
        skip: &[String],
        force: bool,
    ) -> Result<(), ControlError> {
        if !single_host(svc) {
            return Ok(());
        }
        let others: Vec<(&String, &String)> = cfg
            .hosts
            .iter()
            .filter(|(h, _)| **h != cfg.host && !skip.contains(h))
            .filter_map(|(h, c)| Some((h, c.peer.as_ref()?)))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let name = svc.name.as_str();
        let answers: Vec<(&String, Result<Option<PeerService>, PeerFailure>)> =
            match (&cfg.peer, self.peers.get()) {
                (Some(peer), Some(peers)) => {
                    join_all(
                        others.iter().map(|(h, url)| async move {
                            (*h, peers.service(peer, url, name).await)
                        }),
                    )
                    .await
                }
                _ => others
                    .iter()
                    .map(|(h, _)| {
                        let why = "no [peer] section to reach it with".to_string();
                        (*h, Err(PeerFailure::Unreachable(why)))
                    })
                    .collect(),
            };
        let running: Vec<String> = answers
            .iter()
            .filter_map(|(h, a)| match a {
                Ok(Some(s)) if s.runs() => Some(format!(
                    "{h} (desired {}, {})",
                    s.desired_state, s.active_state
                )),
                _ => None,
            })
            .collect();
        if !running.is_empty() {
            return Err(ControlError::Conflict(format!(
                "{name} runs on {}; a service of one host runs on one host at a time: stop it there or move it with `stackctl migrate`",
                running.join(", ")
            )));
        }
        let silent: Vec<String> = answers
            .iter()
            .filter_map(|(h, a)| a.as_ref().err().map(|e| format!("{h} ({e})")))
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        if force {
            info!(
                stackd_service = name,
                "hand-off rule overridden: cannot ask {}",
                silent.join(", ")
            );
            return Ok(());
        }
        Err(ControlError::PeerUnreachable(format!(
            "cannot ask {} whether it runs {name}; nothing was changed (--force goes ahead if that host is down for good)",
            silent.join(", ")
        )))
    }

    /// Waits for a task on another host to end. `Failed` says why it did
    /// not succeed; `Lost` that its outcome is unknown: the host stopped
    /// answering for longer than [`doubt_after`], the limit passed, or
    /// the wait was cancelled.
    pub(super) async fn wait_remote(
        &self,
        peers: &dyn Peers,
        (peer, url, host): (&PeerConfig, &str, &str),
        id: u64,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), Remote> {
        let deadline = tokio::time::Instant::now() + limit;
        let silence = doubt_after(peer);
        let mut last_answer = tokio::time::Instant::now();
        let mut last_error = String::new();
        loop {
            match peers.task(peer, url, id).await {
                Ok(t) if t.state == "succeeded" => return Ok(()),
                Ok(t) if matches!(t.state.as_str(), "failed" | "cancelled") => {
                    return Err(Remote::Failed(format!(
                        "task {id} on {host} {}: {}",
                        t.result, t.error
                    )))
                }
                Ok(_) => last_answer = tokio::time::Instant::now(),
                Err(PeerFailure::Refused { message, .. }) => {
                    last_answer = tokio::time::Instant::now();
                    last_error = message;
                }
                Err(e) => last_error = e.to_string(),
            }
            let now = tokio::time::Instant::now();
            if now.duration_since(last_answer) >= silence {
                return Err(Remote::Lost(format!(
                    "{host} stopped answering while task {id} ran there ({last_error}, for {silence:?})"
                )));
            }
            if now >= deadline {
                return Err(Remote::Lost(format!(
                    "task {id} on {host} did not end within {limit:?}{}",
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({last_error})")
                    }
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = cancel.cancelled() => return Err(Remote::Lost(format!("cancelled while waiting for task {id} on {host}"))),
            }
        }
    }

    /// The `migrate` task, on the host the service leaves.
    pub(in crate::control) async fn migrate(
        &self,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let name = task.service.as_str();
        let to = self
            .moves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| {
                Failure::failed("the move's target host was lost (stackd restarted); ask again")
            })?;
        let carry = self
            .carry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let cfg = self.config();
        let me = cfg.host.clone();
        let failed = |m: String| Failure::failed(m);
        let (svc, dir, file) = moving(&cfg, name)?;
        let (peer, url) = self.link(&cfg, &to).map_err(|e| failed(e.to_string()))?;
        let peers = self.peers().map_err(|e| failed(e.to_string()))?;
        let there = (&peer, url.as_str(), to.as_str());
        let carry = carry || svc.handoff_volumes;
        // The volumes are read while nothing writes them: carrying them
        // stops the service first, whatever its handoff.
        let mode = if carry {
            Handoff::StopFirst
        } else {
            svc.handoff
        };
        let handoff = match mode {
            Handoff::StopFirst => "stop-first",
            Handoff::Overlap => "overlap",
        };
        let mut carried: Vec<String> = Vec::new();
        log.line(&format!(
            "moving {name} from {me} to {to} (handoff {handoff}{})",
            match (carry, svc.handoff) {
                (false, _) => "",
                (true, Handoff::StopFirst) => ", with its named volumes",
                (true, Handoff::Overlap) => {
                    ", with its named volumes: stop-first instead of its overlap, so nothing writes them while they are copied"
                }
            }
        ));

        log.line(&format!("{to}: preflight, then pull what is missing"));
        let untouched = format!("nothing was changed; {name} stays on {me}");
        let pull = peers
            .prepare(&peer, &url, name, &me)
            .await
            .map_err(|e| failed(format!("{to}: {e}; {untouched}")))?;
        match pull {
            Some(pull) => {
                self.wait_remote(peers, there, pull, TaskKind::Pull.timeout(), cancel)
                    .await
                    .map_err(|e| {
                        failed(format!("pulling on {to} failed: {}; {untouched}", e.text()))
                    })?;
                log.line(&format!(
                    "{to}: preflight passed, images pulled (task {pull} there)"
                ));
            }
            None => log.line(&format!("{to}: preflight passed, images present")),
        }

        let before = self
            .store
            .desired(name)
            .map_err(|e| failed(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + TaskKind::Stop.timeout();
        let stop = || {
            log.line(&format!("{me}: stopping {name}"));
            self.compose_steps(name, &dir, &file, &[&["stop"]], log, cancel, deadline)
        };
        // A failure after the stop and before the target's start: the
        // service runs here again, its desired state as it was.
        let put_back = |why: String| {
            self.start_again(
                name,
                (&dir, &file),
                (before.as_ref(), &to),
                why,
                log,
                cancel,
            )
        };
        match mode {
            Handoff::StopFirst => {
                // Stored first: the supervisor must not bring it back.
                self.set_moved(name, DesiredState::Stopped, &to)?;
                if let Err(f) = stop().await {
                    self.restore(name, before.as_ref());
                    self.world.refresh(name, &self.events).await;
                    return Err(failed(format!(
                        "stopping on {me} failed: {}; the move is abandoned and {name}'s desired state on {me} is as before",
                        f.message
                    )));
                }
                self.world.refresh(name, &self.events).await;
                log.line(&format!("{me}: stopped"));
                if carry {
                    // Nothing was asked of the target's start yet: any
                    // failure here puts the service back, its data as it was.
                    match self.carry_volumes(peers, there, name, log, cancel).await {
                        Ok(v) => carried = v,
                        Err(why) => {
                            let why = format!(
                                "{why}; {name}'s volumes on {me} were only read and are untouched"
                            );
                            return Err(put_back(why).await);
                        }
                    }
                }
                let handed = self.hand_over(peers, there, name, &svc, log, cancel).await;
                if let Err(Remote::Lost(why)) = handed {
                    return Err(self.in_doubt(task, name, &to, &why, log));
                }
                if let Err(Remote::Failed(why)) = handed {
                    return Err(put_back(why).await);
                }
            }
            Handoff::Overlap => {
                match self.hand_over(peers, there, name, &svc, log, cancel).await {
                    Ok(()) => {}
                    Err(Remote::Failed(why)) => {
                        return Err(failed(format!(
                            "{why}; {name} kept running on {me}, untouched"
                        )))
                    }
                    Err(Remote::Lost(why)) => {
                        // The target may run it now: one copy is the
                        // rule even for an overlap, so this one stops.
                        if let Err(e) = self.store.set_move_in_doubt(name, &to) {
                            return Err(failed(format!("cannot store the desired state: {e}")));
                        }
                        log.line(&format!("{me}: stopping {name}"));
                        let stopped = stop().await;
                        self.world.refresh(name, &self.events).await;
                        if let Err(f) = stopped {
                            log.line(&format!("stopping on {me} failed: {}", f.message));
                        } else {
                            log.line(&format!("{me}: stopped"));
                        }
                        return Err(self.in_doubt(task, name, &to, &why, log));
                    }
                }
                self.set_moved(name, DesiredState::Stopped, &to)?;
                let stopped = stop().await;
                self.world.refresh(name, &self.events).await;
                if let Err(f) = stopped {
                    return Err(failed(format!(
                        "{name} runs on {to}, but stopping it on {me} failed: {}; it runs on both: stop it here with `stackctl stop {name}`",
                        f.message
                    )));
                }
                log.line(&format!("{me}: stopped"));
            }
        }
        let summary = format!("{name} moved from {me} to {to}");
        log.line(&summary);
        if !carried.is_empty() {
            log.line(&format!(
                "kept on {me}, as they were: volume {} (stackd never removes volumes; remove them with `docker volume rm` once the copy on {to} is trusted)",
                carried.join(", volume ")
            ));
        }
        self.migrated(
            name,
            &summary,
            serde_json::json!({ "from": me, "to": to, "handoff": handoff, "task": task.id }),
        );
        Ok(())
    }

    /// A stop-first move to `to` that failed before the target started
    /// the service: the desired state here as before the move, and the
    /// service started here again. The failure says both.
    ///
    /// A service the cluster file no longer places here (a move asked by
    /// `apply --all-hosts`) is *kept* here: stored as wanted running with
    /// `to` as its peer ([`crate::store::KEPT`]), so that this host
    /// manages it and no apply stops it, since its data is here.
    pub(super) async fn start_again(
        &self,
        name: &str,
        (dir, file): (&std::path::Path, &std::path::Path),
        (before, to): (Option<&crate::store::Desired>, &str),
        why: String,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Failure {
        let cfg = self.config();
        let me = cfg.host.clone();
        log.line(&why);
        self.restore(name, before);
        if self.local_service(&cfg, name).is_err() {
            match self.store.set_kept(name, to) {
                Ok(()) => {
                    log.line(&format!(
                        "the cluster file places {name} on {to}, but its data is on {me}: {me} keeps it (desired running, \"kept here: its move to {to} failed\") until a move carries it: `stackctl migrate {name} {to} --with-volumes` on {me}"
                    ));
                    // D-Bus objects, probes and the monitor take it in.
                    let _ = self.events.send(Event::ServicesReloaded);
                }
                Err(e) => log.line(&format!("cannot store the desired state: {e}")),
            }
        }
        log.line(&format!("{me}: starting {name} again"));
        let deadline = tokio::time::Instant::now() + TaskKind::Deploy.timeout();
        let again = self
            .compose_steps(name, dir, file, &[&["up", "-d"]], log, cancel, deadline)
            .await;
        self.world.refresh(name, &self.events).await;
        Failure::failed(match again {
            Ok(()) => {
                let line = format!("{name} runs on {me} again");
                log.line(&line);
                format!("{why}; {line}")
            }
            Err(f) => format!(
                "{why}; starting it again on {me} failed too ({}): {name} runs nowhere now",
                f.message
            ),
        })
    }

    /// Streams each named volume of the (stopped) service to the target,
    /// one after the other, each read through one of the service's own
    /// stopped containers; the target checks every byte against the
    /// SHA-256 sent after them. Bind mounts and anonymous volumes stay
    /// here, and the log names them. Err says which volume failed and why.
    pub(super) async fn carry_volumes(
        &self,
        peers: &dyn Peers,
        (peer, url, to): (&PeerConfig, &str, &str),
        name: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, String> {
        let me = self.config().host.clone();
        let docker = self.world.docker().ok_or_else(|| {
            format!(
                "Docker is unavailable on {me}: {}",
                self.world.docker_error()
            )
        })?;
        let mounts = docker
            .project_mounts(name)
            .await
            .map_err(|e| format!("cannot list {name}'s volumes on {me}: {e}"))?;
        for left in &mounts.left {
            log.line(&format!("not carried: {left}"));
        }
        if mounts.volumes.is_empty() {
            log.line(&format!("{name} has no named volumes to carry"));
        }
        for v in &mounts.volumes {
            log.line(&format!(
                "{me} -> {to}: carrying volume {} (mounted on {})",
                v.name, v.destination
            ));
            if !v.options.is_empty() {
                let mut opts: Vec<String> =
                    v.options.iter().map(|(k, o)| format!("{k}={o}")).collect();
                opts.sort();
                log.line(&format!(
                    "not carried: the driver_opts of volume {} ({}); {to} makes it with driver {} alone",
                    v.name,
                    opts.join(", "),
                    v.driver
                ));
            }
            let started = std::time::Instant::now();
            // Read by a task of its own, which ends with this iteration:
            // see [`Reader`].
            let (tar, _reader) = Reader::spawn(
                docker
                    .volume_archive(v)
                    .map(|r| r.map_err(|e| e.to_string()))
                    .boxed(),
            );
            let offer = VolumeOffer {
                service: name.to_string(),
                from: me.clone(),
                volume: v.name.clone(),
                driver: v.driver.clone(),
                labels: v.labels.clone(),
                image: v.image.clone(),
            };
            let sent = tokio::select! {
                r = peers.send_volume(peer, url, &offer, tar) => r,
                _ = cancel.cancelled() => return Err(format!("cancelled while carrying volume {}", v.name)),
            };
            let got =
                sent.map_err(|e| format!("carrying volume {} to {to} failed: {e}", v.name))?;
            let secs = started.elapsed().as_secs_f64();
            log.line(&format!(
                "{to}: volume {} received: {} bytes in {secs:.1} s ({:.1} MiB/s), sha256 {} verified there{}",
                v.name,
                got.bytes,
                got.bytes as f64 / 1_048_576.0 / secs.max(1e-3),
                got.sha256,
                if got.replaced {
                    format!(" (the stale volume {} there was replaced)", v.name)
                } else {
                    String::new()
                }
            ));
        }
        Ok(mounts.volumes.into_iter().map(|v| v.name).collect())
    }

    /// Asks the target to start the service and waits for its verdict.
    /// Err says what happened; the target stops its own failed attempt.
    pub(super) async fn hand_over(
        &self,
        peers: &dyn Peers,
        there: (&PeerConfig, &str, &str),
        name: &str,
        svc: &ServiceConfig,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Remote> {
        let (peer, url, to) = there;
        let me = self.config().host.clone();
        log.line(&format!("{to}: starting {name}"));
        // No answer to the receive is no proof it was not taken: the
        // request may have arrived and only the answer been lost.
        let id = peers
            .receive(peer, url, name, &me)
            .await
            .map_err(|e| match e {
                PeerFailure::Refused { .. } => {
                    Remote::Failed(format!("{to} did not take {name}: {e}"))
                }
                PeerFailure::Unreachable(_) => Remote::Lost(format!(
                    "{to} was asked to start {name} and did not answer ({e})"
                )),
            })?;
        // The receive task's own limit is start_timeout; a little more for
        // Compose to create the containers and for the answer to come.
        let limit = svc.start_timeout + Duration::from_secs(60);
        self.wait_remote(peers, there, id, limit, cancel)
            .await
            .map_err(|e| match e {
                Remote::Failed(m) => Remote::Failed(format!("starting on {to} failed: {m}")),
                lost => lost,
            })?;
        log.line(&format!(
            "{to}: {name} runs and is healthy (task {id} there)"
        ));
        Ok(())
    }

    /// A move whose target stopped answering after it was asked to start
    /// the service: the service stays stopped here (it may run there),
    /// the desired state says so ("migrate to TO (in doubt)"), and an
    /// alert says what happens next and what a person can do. The doubt
    /// is settled by [`Control::settle`] once `to` answers again.
    pub(super) fn in_doubt(
        &self,
        task: &TaskRecord,
        name: &str,
        to: &str,
        why: &str,
        log: &Log,
    ) -> Failure {
        let me = self.config().host.clone();
        if let Err(e) = self.store.set_move_in_doubt(name, to) {
            tracing::warn!(stackd_service = name, "cannot store the desired state: {e}");
        }
        log.line(why);
        let summary = format!("{name}'s move from {me} to {to} is in doubt");
        let body = format!(
            "{to} was asked to start {name} and stopped answering before it said whether it did. \
             {name} was running on {me} and stays stopped there so that it does not run on two hosts: \
             it runs on {to} or nowhere. When {to} answers again {me} asks it and either confirms \
             the move or starts {name} on {me} again. If {to} is gone for good, run \
             `stackctl start --force {name}` on {me}."
        );
        log.line(&body);
        self.alert(
            Severity::Warning,
            "migrate-in-doubt",
            name,
            &summary,
            &body,
            serde_json::json!({
                "from": me,
                "to": to,
                "task": task.id,
                "why": why,
                "action": format!("nothing while {to} is away: {me} settles it when {to} answers; if {to} is gone for good: `stackctl start --force {name}` on {me}"),
            }),
        );
        Failure::failed(format!("{summary}: {why}; {body}"))
    }

    pub(super) fn set_moved(
        &self,
        name: &str,
        state: DesiredState,
        peer: &str,
    ) -> Result<(), Failure> {
        self.store
            .set_moved(name, state, peer)
            .map_err(|e| Failure::failed(format!("cannot store the desired state: {e}")))
    }

    pub(super) fn restore(&self, name: &str, before: Option<&crate::store::Desired>) {
        if let Err(e) = self.store.restore_desired(name, before) {
            tracing::warn!(
                stackd_service = name,
                "cannot restore the desired state: {e}"
            );
        }
    }
}
