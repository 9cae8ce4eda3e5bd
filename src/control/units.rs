//! The runner's half of `kind = "unit"`: what a task does to a service
//! backed by a systemd unit (`units::UnitManager` instead of Compose), and
//! keeping the followed units in step with the config. Everything else a
//! Compose service has (desired state, the planner, dependencies, the
//! supervisor, resources) reads the unit as its one pseudo-container
//! ([`Shared::containers_of`]).

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Control, Shared};
use crate::config::Config;
use crate::events::Event;
use crate::store::TaskRecord;
use crate::tasks::{Failure, Log, TaskKind};
use crate::units::{UnitManager, UnitSpec};

impl Shared {
    /// The service's containers as last observed: for a unit service, its
    /// unit as one pseudo-container; for a Compose project, Docker's.
    pub(super) fn containers_of(&self, name: &str) -> Vec<crate::engine::ContainerInfo> {
        if self.is_unit(name) {
            return self.units.containers(name);
        }
        self.world.containers(name)
    }

    /// Whether the config makes `name` a `kind = "unit"` service.
    pub(super) fn is_unit(&self, name: &str) -> bool {
        self.config()
            .service(name)
            .is_some_and(|s| UnitSpec::of(s).is_some())
    }

    /// Runs a task of a unit service: start (`Deploy`, `Update`,
    /// `Rollback`: there is no image), `Restart`, `Stop`/`Down`; `Pull`
    /// has nothing to do.
    pub(super) async fn run_unit_task(
        &self,
        cfg: &Config,
        kind: TaskKind,
        spec: UnitSpec,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let manager = self
            .units
            .manager()
            .map_err(|e| Failure::failed(e.to_string()))?;
        let unit = spec.unit().to_string();
        let call = match kind {
            TaskKind::Pull => {
                log.line("nothing to pull: a unit service has no image");
                return Ok(());
            }
            TaskKind::Deploy | TaskKind::Update | TaskKind::Rollback | TaskKind::Receive => "start",
            TaskKind::Restart => "restart",
            TaskKind::Stop | TaskKind::Down => "stop",
            TaskKind::Reconcile | TaskKind::Migrate | TaskKind::Prune => {
                return Err(Failure::failed(format!(
                    "{} is not a task of a unit service",
                    kind.as_str()
                )))
            }
        };
        log.line(&describe(call, &spec, manager.user()));
        let job = async {
            match call {
                "start" => manager.start(&spec).await,
                "restart" => manager.restart(&spec).await,
                _ => manager.stop(&spec).await,
            }
        };
        let outcome = tokio::select! {
            r = tokio::time::timeout(kind.timeout(), job) => match r {
                Ok(r) => r.map_err(|e| Failure::failed(e.to_string())),
                Err(_) => Err(Failure {
                    result: "timeout",
                    message: format!("{call} {unit} did not finish within {:?}", kind.timeout()),
                }),
            },
            _ = cancel.cancelled() => Err(Failure {
                result: "canceled",
                message: "cancelled by request".into(),
            }),
        };
        // What systemd says now, without waiting for the signal.
        match manager.state(&unit).await {
            Ok(state) => {
                log.line(&format!(
                    "{unit}: {} ({}), result {}, main PID {}",
                    state.active_state, state.sub_state, state.result, state.main_pid
                ));
                self.units.note(&task.service, state);
            }
            Err(e) => log.line(&format!("cannot read the state of {unit}: {e}")),
        }
        if let Err(f) = &outcome {
            log.line(&format!("{call} {unit} failed: {}", f.message));
        } else {
            self.board.note_compose(&task.service, None);
            let mark = match kind {
                TaskKind::Stop => Ok(()),
                TaskKind::Down => self.store.unmark_deployed(&task.service),
                _ => self.store.mark_deployed(&task.service),
            };
            if let Err(e) = mark {
                warn!(stackd_service = %task.service, "cannot record the deployment: {e}");
            }
        }
        let _ = self.events.send(Event::ServiceChanged {
            service: task.service.clone(),
        });
        let wait = self.waits().remove(&task.id);
        if wait && outcome.is_ok() {
            return self.wait_ready(cfg, task, log, cancel).await;
        }
        outcome
    }
}

/// The task log's line for a call, as an admin would type it.
fn describe(call: &str, spec: &UnitSpec, user: bool) -> String {
    let user = if user { " --user" } else { "" };
    match spec {
        UnitSpec::Transient {
            unit,
            exec,
            working_dir,
            environment,
            user: run_as,
            ..
        } if call != "stop" => {
            let mut props = String::new();
            if let Some(d) = working_dir {
                props.push_str(&format!(" -p WorkingDirectory={}", d.display()));
            }
            for (k, v) in environment {
                props.push_str(&format!(" -E {k}={v}"));
            }
            if let Some(u) = run_as {
                props.push_str(&format!(" -p User={u}"));
            }
            format!(
                "$ systemd-run{user} --unit {unit} -p Type=exec{props} {} ({call}, as a transient unit)",
                exec.join(" ")
            )
        }
        _ => format!("$ systemctl{user} {call} {}", spec.unit()),
    }
}

impl Control {
    /// What systemd last said about the service's unit (none for other
    /// kinds, or before the first answer).
    pub fn unit_state(&self, name: &str) -> Option<crate::units::UnitState> {
        self.shared.units.state(name)
    }

    /// The board of unit services (the daemon gives it its manager).
    pub fn units(&self) -> &Arc<crate::units::Units> {
        &self.shared.units
    }

    /// The `kind = "unit"` services of this host, with their units.
    pub fn unit_specs(&self) -> Vec<(String, UnitSpec)> {
        self.local_services()
            .iter()
            .filter_map(|s| Some((s.name.clone(), UnitSpec::of(s)?)))
            .collect()
    }

    /// Follows the units of this host's unit services (after start-up and
    /// each reload); connects to systemd with `connect` the first time one
    /// is configured. Runs until the daemon stops.
    pub async fn follow_units<C, F>(&self, connect: C)
    where
        C: Fn() -> F,
        F: std::future::Future<Output = Result<Arc<dyn UnitManager>, crate::units::UnitError>>,
    {
        let mut rx = self.events().subscribe();
        loop {
            let specs = self.unit_specs();
            if !specs.is_empty() && self.shared.units.manager().is_err() {
                match connect().await {
                    Ok(m) => {
                        info!("connected to systemd for {} unit services", specs.len());
                        self.shared.units.set_manager(m);
                    }
                    Err(e) => {
                        warn!("cannot reach systemd for the unit services: {e}");
                        self.shared.units.set_error(e.to_string());
                    }
                }
            }
            self.shared.units.follow_all(specs, self.events());
            loop {
                match rx.recv().await {
                    Ok(Event::ServicesReloaded) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        }
    }

    /// The unit's journal for `stackctl logs` (None: not a unit service).
    pub(super) fn unit_logs(
        &self,
        name: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Option<Result<futures_util::stream::BoxStream<'static, String>, super::ControlError>> {
        let cfg = self.config();
        let spec = UnitSpec::of(cfg.service(name)?)?;
        let user = self.shared.load_options.user_mode;
        Some(
            crate::units::journal(spec.unit(), user, tail, follow)
                .map_err(|e| super::ControlError::Io(e.to_string())),
        )
    }
}
