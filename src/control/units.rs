//! The runner's half of `kind = "unit"`: what a task does to a service
//! backed by a systemd unit (`units::UnitManager` instead of Compose), and
//! keeping the followed units in step with the config. Everything else a
//! Compose service has (desired state, the planner, dependencies, the
//! supervisor, resources) reads the unit as its one pseudo-container
//! ([`Shared::containers_of`]).

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::{Control, ControlError, Shared};
use crate::config::Config;
use crate::events::Event;
use crate::store::{TaskRecord, TaskResult};
use crate::tasks::{Failure, Log, TaskKind};
use crate::units::{UnitManager, UnitSpec};

/// How long a unit service's task, or a reconcile, waits for the daemon's
/// connection to systemd (made right after start-up, or retried with
/// backoff when systemd did not answer) before it gives up on it.
pub(super) const CONNECT_WAIT: Duration = Duration::from_secs(30);
/// The longest pause between two tries at connecting to systemd.
const CONNECT_BACKOFF_MAX: Duration = Duration::from_secs(10);

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
        // Right after start-up (a boot's recovery, say) the connection to
        // systemd may still be on its way: wait for it rather than fail.
        let manager = match self.units.manager() {
            Ok(m) => m,
            Err(_) => {
                log.line("waiting for the connection to systemd");
                tokio::select! {
                    m = self.units.wait_manager(CONNECT_WAIT) => {
                        m.map_err(|e| Failure::failed(e.to_string()))?
                    }
                    _ = cancel.cancelled() => return Err(Failure {
                        result: TaskResult::Canceled,
                        message: "cancelled while waiting for systemd".into(),
                    }),
                }
            }
        };
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
        // What a person asks for is checked first, as a Compose deploy is.
        if call != "stop" && task.origin.by_person() {
            if let Err(ControlError::PreflightFailed(problems)) = self.unit_preflight(&spec) {
                for p in problems.lines() {
                    log.line(&format!("preflight {p}"));
                }
                return Err(Failure::failed(format!(
                    "PreflightFailed: {}",
                    problems.replace('\n', "; ")
                )));
            }
        }
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
                    result: TaskResult::Timeout,
                    message: format!("{call} {unit} did not finish within {:?}", kind.timeout()),
                }),
            },
            _ = cancel.cancelled() => Err(Failure {
                result: TaskResult::Canceled,
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

impl Shared {
    /// `stackctl preflight` of a unit service: a connection to systemd,
    /// and for `exec`, a program that can be run and a working directory
    /// that exists (an existing unit's own settings are systemd's to
    /// check when it starts).
    pub(super) fn unit_preflight(&self, spec: &UnitSpec) -> Result<Vec<String>, ControlError> {
        let mut fatal = Vec::new();
        if let Err(e) = self.units.manager() {
            fatal.push(format!("error: {e}"));
        }
        if let UnitSpec::Transient {
            exec, working_dir, ..
        } = spec
        {
            fatal.extend(exec_problems(exec, working_dir.as_deref()));
        }
        if fatal.is_empty() {
            Ok(Vec::new())
        } else {
            Err(ControlError::PreflightFailed(fatal.join("\n")))
        }
    }
}

/// What stops `exec` from running: a program given by its path that is
/// not an executable file, a working directory that is not a directory.
/// A bare program name is looked up by systemd in its own search path.
fn exec_problems(exec: &[String], working_dir: Option<&std::path::Path>) -> Vec<String> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = Vec::new();
    if let Some(program) = exec.first().filter(|p| p.starts_with('/')) {
        match std::fs::metadata(program) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {}
            Ok(_) => out.push(format!("error: exec: {program} is not an executable file")),
            Err(e) => out.push(format!("error: exec: {program}: {e}")),
        }
    }
    if let Some(dir) = working_dir.filter(|d| !d.is_dir()) {
        out.push(format!(
            "error: working_dir: {} is not a directory",
            dir.display()
        ));
    }
    out
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
        let mut backoff = Duration::from_millis(200);
        let mut said = None;
        loop {
            let specs = self.unit_specs();
            if !specs.is_empty() && self.shared.units.manager().is_err() {
                match connect().await {
                    Ok(m) => {
                        info!("connected to systemd for {} unit services", specs.len());
                        self.shared.units.set_manager(m);
                    }
                    Err(e) => {
                        // Tried again with backoff (a reload of the config
                        // is no condition): the tasks that need it wait.
                        let e = e.to_string();
                        if said.as_ref() != Some(&e) {
                            warn!("cannot reach systemd for the unit services (trying again): {e}");
                            said = Some(e.clone());
                        }
                        self.shared.units.set_error(e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(CONNECT_BACKOFF_MAX);
                        continue;
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

    /// A person's stop of a unit service: its unit ended cleanly (a
    /// `systemctl stop`, or a clean exit) while no stackd task worked on
    /// it. The supervisor treats it as Docker's `docker stop`
    /// (`restart.manual_stop`).
    pub(super) fn unit_outside_stop(&self, name: &str) -> Option<crate::world::OutsideStop> {
        let (at, door) = self.shared.units.ended_cleanly(name)?;
        if self.shared.world.stackd_acting(name, at) {
            return None;
        }
        let spec = UnitSpec::of(self.config().service(name)?)?;
        Some(crate::world::OutsideStop {
            container: spec.unit().to_string(),
            door,
            at_usec: at,
        })
    }

    /// Whether this host has a Compose project to manage (else Docker's
    /// absence is nothing to wait for or alert about).
    pub fn uses_docker(&self) -> bool {
        self.shared.uses_docker()
    }

    /// A `kind = "unit"` service: Docker has no say in it.
    pub fn is_unit_service(&self, name: &str) -> bool {
        self.shared.is_unit(name)
    }

    /// The unit's journal for `stackctl logs` (None: not a unit service).
    pub(super) fn unit_logs(
        &self,
        name: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Option<Result<futures_util::stream::BoxStream<'static, String>, ControlError>> {
        let cfg = self.config();
        let spec = UnitSpec::of(cfg.service(name)?)?;
        let user = self.shared.load_options.user_mode;
        Some(
            crate::units::journal(spec.unit(), user, tail, follow)
                .map_err(|e| ControlError::Io(e.to_string())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_problems_name_a_missing_program_and_directory() {
        let ok = exec_problems(
            &["/bin/sh".into(), "-c".into(), "true".into()],
            Some("/".as_ref()),
        );
        assert!(ok.is_empty(), "{ok:?}");
        assert!(exec_problems(&["sh".into()], None).is_empty());
        let bad = exec_problems(&["/no/such/program".into()], Some("/no/such/dir".as_ref()));
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("/no/such/program"));
        assert!(bad[1].contains("/no/such/dir"));
        let plain = std::env::temp_dir().join(format!("stackd-units-{}", std::process::id()));
        std::fs::write(&plain, "not a program").unwrap();
        let not_exec = exec_problems(&[plain.display().to_string()], None);
        let _ = std::fs::remove_file(&plain);
        assert_eq!(not_exec.len(), 1, "{not_exec:?}");
    }
}
