//! The host a service comes to: preparing (preflight, pull), receiving
//! volumes, and the `receive` task (start, wait until healthy).

use bytes::Bytes;
use futures_util::stream::BoxStream;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{
    moving, Control, ControlError, Prepared, Shared, VolumeOffer, VolumeReceipt, POLL, SETTLE,
};
use crate::config::{Config, ServiceConfig};
use crate::events::Event;
use crate::health::Health;
use crate::store::{DesiredState, Origin, TaskRecord};
use crate::tasks::{Failure, Log, TaskKind};
use crate::world::{self, Observed};

impl Control {
    /// The first half of a move to this host (`from` asks): preflight,
    /// then a pull task when images are missing (only then: the start must
    /// not need the network, and an image with `pull_policy: never` is
    /// never pulled). Needs only that the cluster file names the service.
    pub async fn prepare_move(&self, name: &str, from: &str) -> Result<Prepared, ControlError> {
        let cfg = self.config();
        let svc = self.shared.incoming(&cfg, name, from)?.clone();
        let report = self
            .shared
            .preflight(&svc)
            .await
            .map_err(|f| ControlError::PreflightFailed(f.message))?;
        if !report.passed() {
            let lines: Vec<String> = report.fatal().map(|p| p.to_string()).collect();
            return Err(ControlError::PreflightFailed(format!(
                "on {}: {}",
                cfg.host,
                lines.join("\n")
            )));
        }
        let missing = report
            .warnings()
            .any(|p| p.check == crate::preflight::Check::Images);
        let pull = if missing {
            Some(self.queue().submit(
                TaskKind::Pull,
                name,
                &Origin::MigrateFrom(from.to_string()),
            )?)
        } else {
            None
        };
        Ok(Prepared {
            warnings: report.warnings().map(|p| p.to_string()).collect(),
            pull,
        })
    }

    /// The second half: this host manages the service from now on, wants
    /// it running ("migrate from FROM"), and starts it in a receive task.
    pub fn receive_move(&self, name: &str, from: &str) -> Result<TaskRecord, ControlError> {
        let cfg = self.config();
        self.shared.incoming(&cfg, name, from)?;
        let was_local = self.shared.local_service(&cfg, name).is_ok();
        let before = self.shared.store.desired(name)?;
        self.shared
            .store
            .set_moved(name, DesiredState::Running, from)?;
        let task = match self.queue().submit(
            TaskKind::Receive,
            name,
            &Origin::MigrateFrom(from.to_string()),
        ) {
            Ok(t) => t,
            Err(e) => {
                // Not taken: this host must not start it at its next boot.
                self.shared.restore(name, before.as_ref());
                return Err(e.into());
            }
        };
        if !was_local {
            // D-Bus objects, probes and the monitor take it in.
            let _ = self.shared.events.send(Event::ServicesReloaded);
        }
        Ok(task)
    }

    /// A named volume of a service moving here (`offer.from` sends it,
    /// after it stopped the service there and before it asks this host to
    /// start it): made again, empty, with the same name and labels, and
    /// filled with `tar` through a stopped container that mounts it.
    /// `verify`, called once `tar` has ended, says whether what arrived is
    /// what was sent (its size and SHA-256); when it is not, or anything
    /// fails after the volume was made, the volume is removed again.
    pub async fn receive_volume(
        &self,
        offer: &VolumeOffer,
        tar: BoxStream<'static, Bytes>,
        verify: impl FnOnce() -> Result<(u64, String), String>,
    ) -> Result<VolumeReceipt, ControlError> {
        let cfg = self.config();
        let name = offer.service.as_str();
        self.shared.incoming(&cfg, name, &offer.from)?;
        let project = offer.labels.get(crate::engine::docker::PROJECT_LABEL);
        if project.map(String::as_str) != Some(name) {
            return Err(ControlError::Conflict(format!(
                "volume {} is not one of {name}'s (its Compose project label says {:?})",
                offer.volume, project
            )));
        }
        let observed = world::classify(&self.shared.world.containers(name));
        if matches!(observed, Observed::Running | Observed::Partial) {
            return Err(ControlError::Conflict(format!(
                "{name} runs on {}; its volumes are not replaced under it",
                cfg.host
            )));
        }
        let docker = self
            .shared
            .world
            .docker()
            .ok_or_else(|| ControlError::DockerUnavailable(self.shared.world.docker_error()))?;
        let engine = |e: crate::engine::EngineError| {
            if e.is_unavailable() {
                ControlError::DockerUnavailable(e.to_string())
            } else {
                ControlError::Conflict(format!("on {}: {e}", cfg.host))
            }
        };
        let replaced = docker
            .fresh_volume(name, &offer.volume, &offer.driver, &offer.labels)
            .await
            .map_err(engine)?;
        let filled = docker.fill_volume(&offer.volume, &offer.image, tar).await;
        let checked = verify();
        let outcome = match (filled, checked) {
            (Ok(()), Ok((bytes, sha256))) => {
                info!(
                    stackd_service = name,
                    "volume {} received from {}: {bytes} bytes, sha256 {sha256}{}",
                    offer.volume,
                    offer.from,
                    if replaced {
                        " (replaced the one here)"
                    } else {
                        ""
                    }
                );
                return Ok(VolumeReceipt {
                    bytes,
                    sha256,
                    replaced,
                });
            }
            // Docker's refusal first: it may have stopped reading the
            // body, which then looks short.
            (Err(e), _) => {
                let e = engine(e);
                ControlError::Conflict(format!(
                    "volume {} from {}: {e}; the volume was removed again on {}",
                    offer.volume, offer.from, cfg.host
                ))
            }
            (Ok(()), Err(why)) => ControlError::InvalidArgument(format!(
                "volume {} from {}: {why}; the volume was removed again on {}",
                offer.volume, offer.from, cfg.host
            )),
        };
        if let Err(e) = docker.remove_volume(&offer.volume).await {
            tracing::warn!(
                stackd_service = name,
                "cannot remove volume {} after a failed transfer: {e}",
                offer.volume
            );
        }
        Err(outcome)
    }
}

impl Shared {
    /// The `receive` task, on the host the service moves to: start it,
    /// wait until it is healthy within `start_timeout`, else stop it again
    /// and hand the desired state back ("migrate to FROM", stopped).
    pub(in crate::control) async fn receive(
        &self,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let name = task.service.as_str();
        let from = match &task.origin {
            Origin::MigrateFrom(host) => host.clone(),
            _ => "?".to_string(),
        };
        let cfg = self.config();
        let (svc, dir, file) = moving(&cfg, name)?;
        log.line(&format!("{name} moves here from {from}"));
        let deadline = tokio::time::Instant::now() + svc.start_timeout;
        let started = self
            .compose_steps(name, &dir, &file, &[&["up", "-d"]], log, cancel, deadline)
            .await;
        self.world.refresh(name, &self.events).await;
        let outcome = match started {
            Ok(()) => self.wait_healthy(&cfg, &svc, deadline, cancel).await,
            Err(f) => Err(f.message),
        };
        match outcome {
            Ok(()) => {
                if let Err(e) = self.store.mark_deployed(name) {
                    tracing::warn!(stackd_service = name, "cannot record the deployment: {e}");
                }
                let summary = format!("{name} moved here from {from}");
                log.line(&format!("{name} runs and is healthy"));
                self.migrated(
                    name,
                    &summary,
                    serde_json::json!({ "from": from, "to": cfg.host, "task": task.id }),
                );
                Ok(())
            }
            Err(why) => {
                log.line(&why);
                self.set_moved(name, DesiredState::Stopped, &from)?;
                log.line(&format!(
                    "stopping what was started; {name} stays with {from}"
                ));
                let deadline = tokio::time::Instant::now() + TaskKind::Stop.timeout();
                let stopped = self
                    .compose_steps(
                        name,
                        &dir,
                        &file,
                        &[&["stop"]],
                        log,
                        &CancellationToken::new(),
                        deadline,
                    )
                    .await;
                self.world.refresh(name, &self.events).await;
                Err(Failure::failed(match stopped {
                    Ok(()) => format!("{why}; stopped again on {}", cfg.host),
                    Err(f) => format!(
                        "{why}; stopping it again on {} failed too: {}",
                        cfg.host, f.message
                    ),
                }))
            }
        }
    }

    /// Running, and healthy as the probes (or Docker's healthchecks, or
    /// the containers alone) tell, for [`SETTLE`] on end (a container
    /// that exits at once looks running for a moment), before `deadline`.
    pub(super) async fn wait_healthy(
        &self,
        cfg: &Config,
        svc: &ServiceConfig,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let probed = svc.health.as_ref().is_some_and(|h| h.probe.is_some());
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            let said = self.store.desired(&svc.name).ok().flatten();
            let status = self.status(cfg, svc, said.as_ref());
            let observed = world::classify(&status.containers);
            let verdict = self.board.verdict(&svc.name).map(|v| v.health);
            let healthy = observed == Observed::Running
                && status.health == Health::Healthy
                && (!probed || verdict == Some(Health::Healthy));
            let now = tokio::time::Instant::now();
            since = if healthy { since.or(Some(now)) } else { None };
            if since.is_some_and(|t| now.duration_since(t) >= SETTLE) {
                return Ok(());
            }
            if status.health == Health::Unhealthy {
                return Err(format!(
                    "{} is unhealthy: {}",
                    svc.name, status.health_message
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} was not healthy within start_timeout {:?} ({}, health {}{})",
                    svc.name,
                    svc.start_timeout,
                    observed.as_str(),
                    status.health,
                    if status.health_message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", status.health_message)
                    }
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = cancel.cancelled() => return Err("cancelled while waiting for health".to_string()),
            }
        }
    }
}
