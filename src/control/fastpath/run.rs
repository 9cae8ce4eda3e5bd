//! Running the fast path: stopping and starting a plan's containers
//! through the Docker API, and each service's plan (or why there is none).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::super::Shared;
use super::{
    decide, file_key, hashes_of, record, recorded, Decision, Miss, Plan, StartError, Step,
};
use crate::engine::{ContainerState, Docker};
use crate::tasks::Log;
/// How often a start looks at a container it waits for.
const POLL: Duration = Duration::from_millis(50);

/// Stops every running container of `plan`, dependents first (as Compose's
/// `restart` and `stop` do), each within its service's stop grace period.
pub(super) async fn stop(docker: &Docker, plan: &Plan, log: &Log) -> Result<(), StartError> {
    for wave in plan.waves.iter().rev() {
        let stops = wave.iter().flat_map(|step| {
            step.containers.iter().map(move |id| async move {
                docker.stop(id, step.stop_grace).await?;
                Ok::<_, StartError>(())
            })
        });
        for r in futures_util::future::join_all(stops).await {
            r?;
        }
        for step in wave {
            log.line(&format!(
                "stopped {} ({} containers)",
                step.service,
                step.containers.len()
            ));
        }
    }
    Ok(())
}

/// Starts the containers of `plan` (all of them when `everything`, else
/// only those that were stopped) wave by wave, each after its
/// dependencies' conditions hold, and waits until each runs.
pub(super) async fn start(
    docker: &Docker,
    plan: &Plan,
    everything: bool,
    log: &Log,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Result<(), StartError> {
    let by_service: HashMap<&str, &Step> = plan
        .waves
        .iter()
        .flatten()
        .map(|s| (s.service.as_str(), s))
        .collect();
    for wave in &plan.waves {
        let starts = wave.iter().map(|step| {
            let by_service = &by_service;
            async move {
                for (dep, condition) in &step.after {
                    if let Some(d) = by_service.get(dep.as_str()) {
                        wait_condition(docker, d, condition, cancel, deadline).await?;
                    }
                }
                let ids = if everything {
                    &step.containers
                } else {
                    &step.stopped
                };
                for id in ids {
                    docker.start(id).await?;
                }
                for id in ids {
                    wait_running(docker, id).await?;
                }
                if !ids.is_empty() {
                    log.line(&format!(
                        "started {} ({} containers)",
                        step.service,
                        ids.len()
                    ));
                }
                Ok::<_, StartError>(())
            }
        });
        for r in futures_util::future::join_all(starts).await {
            r?;
        }
    }
    Ok(())
}

/// A started container runs (Docker's start returns once its process has
/// started); one that exited at once is a failed start.
async fn wait_running(docker: &Docker, id: &str) -> Result<(), StartError> {
    match docker.inspect(id).await? {
        Some(c)
            if matches!(
                c.state,
                ContainerState::Running | ContainerState::Restarting
            ) =>
        {
            Ok(())
        }
        // A one-shot container may have run to completion already.
        Some(c) if c.exit_code == Some(0) => Ok(()),
        Some(c) => Err(StartError::Failed(format!(
            "container {} is {} right after its start{}",
            c.name,
            c.state,
            c.exit_code
                .map(|e| format!(" (exit code {e})"))
                .unwrap_or_default()
        ))),
        None => Err(StartError::Failed(format!(
            "container {id} vanished during its start"
        ))),
    }
}

/// Waits until `dep`'s containers meet Compose's `depends_on` condition.
async fn wait_condition(
    docker: &Docker,
    dep: &Step,
    condition: &str,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Result<(), StartError> {
    if condition == "service_started" {
        return Ok(());
    }
    loop {
        let mut met = true;
        for id in &dep.containers {
            let c = docker.inspect(id).await?.ok_or_else(|| {
                StartError::Failed(format!("container {id} of {} vanished", dep.service))
            })?;
            let ok = match condition {
                "service_healthy" => match c.health.as_deref() {
                    Some("healthy") => true,
                    Some(_) => false,
                    None => {
                        return Err(StartError::Failed(format!(
                            "{} has no healthcheck to wait for",
                            dep.service
                        )))
                    }
                },
                "service_completed_successfully" => match c.exit_code {
                    Some(0) if c.state != ContainerState::Running => true,
                    Some(code) if c.state != ContainerState::Running => {
                        return Err(StartError::Failed(format!(
                            "{} did not complete successfully (exit code {code})",
                            dep.service
                        )))
                    }
                    _ => false,
                },
                other => {
                    return Err(StartError::Failed(format!(
                        "unknown depends_on condition {other:?}"
                    )))
                }
            };
            met &= ok;
        }
        if met {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Failed(format!(
                "{} did not become {condition} in time",
                dep.service
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = cancel.cancelled() => return Err(StartError::Cancelled),
        }
    }
}

impl Shared {
    /// The fast path's plan for `service`, or why there is none. Without
    /// `ask`, a file whose hashes were never recorded is a miss (no
    /// Compose call); with it, `config --hash '*'` is asked once per file.
    pub(in crate::control) async fn fast_plan(
        &self,
        service: &str,
        dir: &Path,
        file: &Path,
        ask: bool,
    ) -> Result<(Docker, Plan), Miss> {
        let docker = self
            .world
            .docker()
            .ok_or_else(|| "Docker is not connected".to_string())?;
        let (key, project) =
            file_key(dir, file).map_err(|e| format!("cannot read the Compose file: {e}"))?;
        let containers = docker
            .list_containers(Some(service))
            .await
            .map_err(|e| e.to_string())?;
        if containers.iter().all(|c| c.oneoff) {
            return Err("no container of the project exists".to_string().into());
        }
        let hashes = match recorded(&self.store, service, &key) {
            Some(h) => h,
            None if ask => {
                let compose = self
                    .compose()
                    .await
                    .map_err(|f| format!("no Compose: {}", f.message))?;
                let h = compose
                    .config_hashes(service, dir, file)
                    .await
                    .map_err(|e| format!("config --hash: {e}"))?;
                record(&self.store, service, &key, h.clone());
                h
            }
            None => {
                return Err("the Compose file's config hashes are not known yet"
                    .to_string()
                    .into())
            }
        };
        let mut image_ids = HashMap::new();
        for c in &containers {
            if !image_ids.contains_key(&c.image) {
                let id = docker.image_id(&c.image).await.map_err(|e| e.to_string())?;
                image_ids.insert(c.image.clone(), id);
            }
        }
        match decide(&project, &hashes, &containers, &image_ids) {
            Decision::Start(plan) => Ok((docker, plan)),
            Decision::Compose(why) => Err(why.into()),
        }
    }

    /// Starts `service`'s existing containers through the Docker API
    /// (`restart`: stops the running ones first), or says why Compose
    /// must do it.
    #[allow(clippy::too_many_arguments)]
    pub(in crate::control) async fn fast_start(
        &self,
        service: &str,
        dir: &Path,
        file: &Path,
        restart: bool,
        log: &Log,
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Result<(), Miss> {
        let (docker, plan) = self.fast_plan(service, dir, file, true).await?;
        log.line(
            "the containers exist and match the Compose file: starting them through the Docker API",
        );
        let run = async {
            if restart {
                stop(&docker, &plan, log).await?;
            }
            start(&docker, &plan, restart, log, cancel, deadline).await
        };
        match run.await {
            Ok(()) => Ok(()),
            Err(StartError::Cancelled) => Err(Miss::Cancelled),
            Err(e) => Err(format!("the start through the Docker API failed: {e}").into()),
        }
    }

    /// After Compose deployed `service` from the files with content hash
    /// `key`, its containers carry the config hashes that those files give:
    /// remember them, so the next recovery or boot asks Compose nothing.
    pub(in crate::control) async fn record_deployed(
        &self,
        service: &str,
        dir: &Path,
        file: &Path,
        key: &str,
    ) {
        // The files changed during the deploy: which version won is unknown.
        if file_key(dir, file).ok().map(|(k, _)| k).as_deref() != Some(key) {
            return;
        }
        let Some(docker) = self.world.docker() else {
            return;
        };
        if let Ok(containers) = docker.list_containers(Some(service)).await {
            if let Some(h) = hashes_of(&containers) {
                record(&self.store, service, key, h);
            }
        }
    }
}
