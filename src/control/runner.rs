//! The task runner: one service task (deploy, start, stop, restart, pull,
//! ...) through preflight, the Docker API's fast path or Compose, and the
//! [`ComposeRunner`] the queue calls.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{fastpath, Control, Shared};
use crate::config::{self, Config, ServiceConfig};
use crate::engine::{Compose, ComposeChoice, ComposeError, Invocation};
use crate::events::Severity;
use crate::store::{Origin, TaskRecord, TaskResult};
use crate::tasks::{Failure, Log, RunFuture, Runner, TaskKind};

/// Deploys that bring back what ran before and may start existing
/// containers through the Docker API: the supervisor's, and those of the
/// boot, start-up, interrupted-task and engine-restart reconciles. A
/// person's start goes through Compose as it always did.
fn fast_origin(origin: &Origin) -> bool {
    matches!(
        origin,
        Origin::Recovery | Origin::Boot | Origin::Start | Origin::Interrupted | Origin::Engine
    )
}

/// Below this much free space (Docker's data root, the service's folder) a
/// deploy is refused by preflight.
const PREFLIGHT_MIN_FREE: u64 = 256 << 20;

/// The project folder and compose file of `service`. A service this host
/// did not run when the config was loaded (one moved here since) has its
/// file looked for now; one removed from the config (stackd deployed it and
/// now stops it) is looked for where the config would have put it.
pub(super) fn project_paths(cfg: &Config, service: &str) -> Result<(PathBuf, PathBuf), Failure> {
    if let Some(svc) = cfg.service(service) {
        if svc.compose_file.is_file() {
            return Ok((svc.dir.clone(), svc.compose_file.clone()));
        }
        return Ok(compose_location(&svc.dir)
            .unwrap_or_else(|| (svc.dir.clone(), svc.compose_file.clone())));
    }
    compose_location(&cfg.compose_dir.join(service)).ok_or_else(|| {
        Failure::failed(format!(
            "{service} is no longer in the configuration and {} holds no compose file",
            cfg.compose_dir.join(service).display()
        ))
    })
}

/// The networks each service's Compose file creates and uses (files that
/// cannot be read or parsed give none).
pub(super) fn compose_networks(
    services: &[&ServiceConfig],
) -> Vec<(String, crate::deps::ComposeNetworks)> {
    services
        .iter()
        .filter_map(|s| {
            let text = std::fs::read_to_string(&s.compose_file).ok()?;
            Some((
                s.name.clone(),
                crate::deps::ComposeNetworks::parse(&s.name, &text),
            ))
        })
        .collect()
}

/// The compose file in a project folder, as the config module finds it.
fn compose_location(dir: &std::path::Path) -> Option<(PathBuf, PathBuf)> {
    config::COMPOSE_FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .find(|f| f.is_file())
        .map(|f| (dir.to_path_buf(), f))
}

/// The task runner the queue uses: Compose for service tasks, the planner
/// for reconcile tasks.
pub(super) struct ComposeRunner {
    pub(super) shared: Arc<Shared>,
}

impl Runner for ComposeRunner {
    fn run(&self, task: TaskRecord, log: Log, cancel: CancellationToken) -> RunFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            // What this task's Compose calls stop or kill is stackd's doing,
            // never a person's stop (see `world::OutsideStop`).
            let acting = !task.service.is_empty();
            if acting {
                shared.world.begin_task(&task.service);
            }
            let outcome = shared.clone().run_task(task.clone(), log, cancel).await;
            if acting {
                shared.world.end_task(&task.service);
            }
            // A failed service task is an event people are told about; a
            // reconcile says what failed in its own summary, and a cancel
            // was somebody's wish.
            if let Err(f) = &outcome {
                // A failure of the surroundings that stackd itself retries
                // is told once by the supervisor ("waiting"), not per try.
                let retried = !task.origin.by_person()
                    && shared
                        .board
                        .failure_facts(&task.service)
                        .is_some_and(|f| f.environmental());
                if f.result != TaskResult::Canceled
                    && task.kind != TaskKind::Reconcile.as_str()
                    && !retried
                {
                    shared.alert(
                        Severity::Warning,
                        "task-failed",
                        &task.service,
                        &format!("{} {} (task {})", task.kind, f.result, task.id),
                        &f.message,
                        serde_json::json!({ "task": task.id, "kind": task.kind, "result": f.result, "error": f.message }),
                    );
                }
            }
            outcome
        })
    }

    fn prepare(&self, task: TaskRecord, log: Log, cancel: CancellationToken) -> RunFuture {
        let shared = self.shared.clone();
        Box::pin(async move { shared.prepare(&task, &log, &cancel).await })
    }

    /// A reconcile's or the supervisor's deploy whose containers can be
    /// started as they are takes no slot (see `fastpath/`); the check
    /// asks Compose nothing.
    fn takes_slot(&self, task: TaskRecord) -> crate::tasks::SlotFuture {
        let shared = self.shared.clone();
        Box::pin(async move {
            if task.kind != TaskKind::Deploy.as_str()
                || !fast_origin(&task.origin)
                || shared.is_unit(&task.service)
            {
                return true;
            }
            let Ok((dir, file)) = project_paths(&shared.config(), &task.service) else {
                return true;
            };
            shared
                .fast_plan(&task.service, &dir, &file, false)
                .await
                .is_err()
        })
    }
}

impl Shared {
    pub(super) async fn compose(&self) -> Result<Compose, Failure> {
        let mut slot = self.compose.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let choice = match self.config().compose_command {
            config::ComposeCommand::Auto => ComposeChoice::Auto,
            config::ComposeCommand::V2 => ComposeChoice::V2,
            config::ComposeCommand::V1 => ComposeChoice::V1,
        };
        let compose = (self.world.engine().compose(choice).await)
            .map_err(|e| Failure::failed(e.to_string()))?;
        info!("using {}", compose.describe());
        *slot = Some(compose.clone());
        Ok(compose)
    }

    pub(super) async fn preflight(
        &self,
        svc: &ServiceConfig,
    ) -> Result<crate::preflight::PreflightReport, Failure> {
        let compose = self.compose().await?;
        let docker = self.world.docker();
        let (dir, file) = project_paths(&self.config(), &svc.name)?;
        let key = fastpath::file_key(&dir, &file).ok().map(|(k, _)| k);
        Ok(crate::preflight::check_cached(
            &compose,
            docker.as_ref(),
            &crate::preflight::Target {
                project: svc.name.clone(),
                dir,
                file,
            },
            &crate::preflight::Options {
                min_free_bytes: PREFLIGHT_MIN_FREE,
            },
            key.as_deref().map(|k| (&self.config_cache, k)),
        )
        .await)
    }

    pub(super) async fn run_task(
        self: Arc<Self>,
        task: TaskRecord,
        log: Log,
        cancel: CancellationToken,
    ) -> Result<(), Failure> {
        let kind = TaskKind::parse(&task.kind)
            .ok_or_else(|| Failure::failed(format!("unknown task kind {}", task.kind)))?;
        match kind {
            TaskKind::Reconcile => return self.reconcile(&task, &log, &cancel).await,
            TaskKind::Migrate => return self.migrate(&task, &log, &cancel).await,
            TaskKind::Receive => return self.receive(&task, &log, &cancel).await,
            TaskKind::Prune => {
                let control = Control {
                    shared: self.clone(),
                };
                return crate::housekeeping::prune_task(&control, &task, &log, &cancel).await;
            }
            _ => {}
        }
        let deadline = tokio::time::Instant::now() + kind.timeout();
        let cfg = self.config();
        if let Some(spec) = cfg
            .service(&task.service)
            .and_then(crate::units::UnitSpec::of)
        {
            return self
                .run_unit_task(&cfg, kind, spec, &task, &log, &cancel)
                .await;
        }
        let (dir, file) = project_paths(&cfg, &task.service)?;
        if !self.world.docker_connected() {
            return Err(Failure::failed(format!(
                "Docker is unavailable: {}",
                self.world.docker_error()
            )));
        }
        // Compose is found (`compose version`) when a step needs it: a
        // start through the Docker API does not wait for it.
        // Boot recovery and apply bring back what ran before, fast; what a
        // person or the supervisor asks for is checked first, every problem
        // at once.
        // Retries of a service that waits for its surroundings read
        // Compose's own words instead.
        let checked = kind.starts()
            && !matches!(
                task.origin,
                Origin::Boot | Origin::Start | Origin::Interrupted | Origin::Engine
            )
            && !self.board.waiting(&task.service);
        // The supervisor's restart of containers that exist as the file
        // says is checked only if it has to go through Compose: the start
        // through the API proves what preflight would, and a recovery of an
        // unchanged project runs no Compose at all.
        let check_later = checked && !task.origin.by_person();
        if checked && !check_later {
            self.checked(&cfg, &task.service, &log).await?;
        }
        // The images it ran before, so a change leaves the previous one
        // recorded (what prune keeps and rollback goes back to).
        // A start through the Docker API keeps every image as it is (the
        // fast path takes only containers on their image's current id), so
        // this is recorded before Compose runs, not on the fast path.
        let docker = self.world.docker();
        let may_be_fast =
            kind == TaskKind::Restart || (kind == TaskKind::Deploy && fast_origin(&task.origin));
        if kind.starts() && !may_be_fast {
            crate::housekeeping::record_images(docker.as_ref(), &self.store, &task.service).await;
        }
        // Only a rollback's steps read this, so only a rollback finds Compose here.
        let rollback = [crate::housekeeping::rollback_step(
            if kind == TaskKind::Rollback {
                self.compose().await?.flavor()
            } else {
                crate::engine::ComposeFlavor::V2
            },
        )];
        if kind == TaskKind::Rollback {
            crate::housekeeping::retag_previous(docker.as_ref(), &self.store, &task.service, &log)
                .await?;
        }
        let steps: &[&[&str]] = match kind {
            TaskKind::Deploy => &[&["up", "-d", "--remove-orphans"]],
            TaskKind::Stop => &[&["stop"]],
            TaskKind::Down => &[&["down", "--remove-orphans"]],
            TaskKind::Restart => &[&["restart"], &["up", "-d", "--remove-orphans"]],
            TaskKind::Update => &[&["pull"], &["up", "-d", "--remove-orphans"]],
            TaskKind::Pull => &[&["pull"]],
            TaskKind::Rollback => &rollback,
            TaskKind::Reconcile | TaskKind::Migrate | TaskKind::Receive | TaskKind::Prune => &[],
        };
        let key = fastpath::file_key(&dir, &file).ok().map(|(k, _)| k);
        let mut through_compose = true;
        let outcome = match self
            .try_fast(&task, kind, &dir, &file, &log, &cancel, deadline)
            .await
        {
            Some(Ok(())) => {
                through_compose = false;
                log.line("started through the Docker API");
                self.board.note_compose(&task.service, None);
                Ok(())
            }
            Some(Err(fastpath::Miss::Cancelled)) => Err(Failure {
                result: TaskResult::Canceled,
                message: "cancelled by request".into(),
            }),
            Some(Err(fastpath::Miss::Compose(why))) => {
                log.line(&format!("through Compose: {why}"));
                if check_later {
                    self.checked(&cfg, &task.service, &log).await?;
                }
                if kind.starts() {
                    crate::housekeeping::record_images(docker.as_ref(), &self.store, &task.service)
                        .await;
                }
                self.compose_steps(&task.service, &dir, &file, steps, &log, &cancel, deadline)
                    .await
            }
            None => {
                if check_later {
                    self.checked(&cfg, &task.service, &log).await?;
                }
                self.compose_steps(&task.service, &dir, &file, steps, &log, &cancel, deadline)
                    .await
            }
        };
        if let (true, true, Some(key)) = (outcome.is_ok(), through_compose, &key) {
            if matches!(
                kind,
                TaskKind::Deploy | TaskKind::Restart | TaskKind::Update
            ) {
                self.record_deployed(&task.service, &dir, &file, key).await;
            }
        }
        if outcome.is_ok() {
            let mark = match kind {
                TaskKind::Deploy | TaskKind::Restart | TaskKind::Update | TaskKind::Rollback => {
                    self.store.mark_deployed(&task.service)
                }
                TaskKind::Down => self.store.unmark_deployed(&task.service),
                _ => Ok(()),
            };
            if let Err(e) = mark {
                warn!(stackd_service = %task.service, "cannot record the deployment: {e}");
            }
        }
        if outcome.is_ok() && kind.starts() {
            crate::housekeeping::record_images(docker.as_ref(), &self.store, &task.service).await;
        }
        self.world.refresh(&task.service, &self.events).await;
        let wait = self.waits().remove(&task.id);
        if wait && outcome.is_ok() {
            return self.wait_ready(&cfg, &task, &log, &cancel).await;
        }
        outcome
    }

    /// Runs preflight on `service` and writes its problems into the log;
    /// a fatal one fails the task with `PreflightFailed`.
    pub(super) async fn checked(
        &self,
        cfg: &Config,
        service: &str,
        log: &Log,
    ) -> Result<(), Failure> {
        let Some(svc) = cfg.service(service) else {
            return Ok(());
        };
        let report = self.preflight(svc).await?;
        for p in &report.problems {
            log.line(&format!("preflight {p}"));
        }
        if !report.passed() {
            let fatal: Vec<String> = report.fatal().map(|p| p.to_string()).collect();
            return Err(Failure::failed(format!(
                "PreflightFailed: {}",
                fatal.join("; ")
            )));
        }
        Ok(())
    }

    /// The fast path (`fastpath/`) for the tasks that may take it: a
    /// restart (stop and start through the API), and the deploys of
    /// recovery, boot, start-up and engine reconciles, which bring back
    /// what ran before. None: this task goes through Compose, unasked.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn try_fast(
        &self,
        task: &TaskRecord,
        kind: TaskKind,
        dir: &std::path::Path,
        file: &std::path::Path,
        log: &Log,
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Option<Result<(), fastpath::Miss>> {
        let restart = match kind {
            TaskKind::Restart => true,
            TaskKind::Deploy if fast_origin(&task.origin) => false,
            _ => return None,
        };
        Some(
            self.fast_start(&task.service, dir, file, restart, log, cancel, deadline)
                .await,
        )
    }

    /// Runs Compose `steps` one after another on `service`, each line of
    /// output into the task log; the first failure ends it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn compose_steps(
        &self,
        service: &str,
        dir: &std::path::Path,
        file: &std::path::Path,
        steps: &[&[&str]],
        log: &Log,
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Result<(), Failure> {
        let compose = self.compose().await?;
        // What Compose says is kept too: a failure's words are the
        // evidence the supervisor's rule table reads.
        let said = Arc::new(Mutex::new(Vec::<String>::new()));
        let sink = {
            let log = log.clone();
            let said = said.clone();
            move |line: &str| {
                log.line(line);
                let mut said = said.lock().unwrap_or_else(|e| e.into_inner());
                if said.len() < 200 {
                    said.push(line.to_string());
                }
            }
        };
        for args in steps {
            said.lock().unwrap_or_else(|e| e.into_inner()).clear();
            let inv = Invocation {
                project: service.to_string(),
                dir: dir.to_path_buf(),
                file: file.to_path_buf(),
                args: args.iter().map(|a| a.to_string()).collect(),
            };
            log.line(&format!("$ {} {}", compose.describe(), args.join(" ")));
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let Err(e) = compose.run(&inv, &sink, cancel, left).await {
                let text = said.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                if !matches!(e, ComposeError::Cancelled) {
                    self.board.note_compose(service, Some(text));
                }
                return Err(match e {
                    ComposeError::Cancelled => Failure {
                        result: TaskResult::Canceled,
                        message: "cancelled by request".into(),
                    },
                    ComposeError::TimedOut(t) => Failure {
                        result: TaskResult::Timeout,
                        message: format!("{} did not finish within {t:?}", args.join(" ")),
                    },
                    other => Failure::failed(format!("{}: {other}", args.join(" "))),
                });
            }
        }
        self.board.note_compose(service, None);
        Ok(())
    }
}
