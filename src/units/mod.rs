//! Services backed by systemd units (`kind = "unit"`): an existing unit
//! (`unit = "nginx.service"`) or a binary stackd runs as a transient unit
//! (`exec = [...]`, named `stackd-NAME.service`).
//!
//! systemd is the engine for native processes, as Docker is for
//! containers: this module is what the core knows of it, and it knows no
//! zbus. [`UnitManager`] is the engine-like trait `dbus/systemd1.rs`
//! implements over `org.freedesktop.systemd1`; [`Units`] is the board of
//! what systemd last said about each unit service, fed by that manager's
//! `PropertiesChanged`, read by the core as one pseudo-container per unit
//! ([`UnitState::container`]), so status, the planner, the supervisor's
//! rule table and the resource monitor (the unit's main PID names its
//! cgroup) treat a unit as they treat a one-container Compose project.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::BoxStream;
use thiserror::Error;

use crate::config::{self, ServiceConfig};
use crate::engine::{ContainerInfo, ContainerState};
use crate::events::{Event, EventSender};
use crate::state::{ActiveState, SubState};

/// The prefix of the transient units stackd names after a service.
pub const TRANSIENT_PREFIX: &str = "stackd-";

#[derive(Debug, Error)]
pub enum UnitError {
    /// systemd refused or failed a call (its error name and message).
    #[error("systemd: {0}")]
    Systemd(String),
    /// A job ended with a result other than `done`.
    #[error("{unit}: job {job} ended with result {result}")]
    Job {
        unit: String,
        job: String,
        result: String,
    },
    #[error("no connection to systemd: {0}")]
    Unavailable(String),
    #[error("cannot read the journal of {unit}: {source}")]
    Journal {
        unit: String,
        source: std::io::Error,
    },
}

/// How a unit service's unit is found or made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitSpec {
    /// A unit systemd already knows (`unit = "nginx.service"`).
    Existing { unit: String },
    /// A binary run as a transient unit (`exec = [...]`).
    Transient {
        unit: String,
        description: String,
        exec: Vec<String>,
        working_dir: Option<PathBuf>,
        environment: Vec<(String, String)>,
        user: Option<String>,
    },
}

impl UnitSpec {
    /// The spec of a `kind = "unit"` service; None for any other kind.
    pub fn of(svc: &ServiceConfig) -> Option<UnitSpec> {
        let config::ServiceKind::Unit(spec) = &svc.kind else {
            return None;
        };
        Some(match spec {
            config::UnitSpec::Existing(unit) => UnitSpec::Existing { unit: unit.clone() },
            config::UnitSpec::Transient(exec) => UnitSpec::Transient {
                unit: transient_name(&svc.name),
                description: svc
                    .description
                    .clone()
                    .unwrap_or_else(|| format!("stackd service {}", svc.name)),
                exec: exec.argv.clone(),
                working_dir: exec.working_dir.clone(),
                environment: exec.environment.clone(),
                user: exec.user.clone(),
            },
        })
    }

    pub fn unit(&self) -> &str {
        match self {
            UnitSpec::Existing { unit } | UnitSpec::Transient { unit, .. } => unit,
        }
    }

    pub fn transient(&self) -> bool {
        matches!(self, UnitSpec::Transient { .. })
    }
}

/// The transient unit's name for service `name`.
pub fn transient_name(name: &str) -> String {
    format!("{TRANSIENT_PREFIX}{name}.service")
}

/// What systemd says about a unit: the properties of
/// `org.freedesktop.systemd1.Unit` and `.Service` stackd reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    /// `LoadState`: "loaded", "not-found" (a transient unit that is gone),
    /// "masked", ...
    pub load_state: String,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    /// `Result`: "success", "exit-code", "signal", "core-dump",
    /// "oom-kill", "timeout", ...
    pub result: String,
    /// `ExecMainCode`: 1 exited, 2 killed, 3 dumped (waitid's `si_code`).
    pub exec_main_code: i32,
    /// `ExecMainStatus`: the exit status, or the signal number.
    pub exec_main_status: i32,
    pub main_pid: u32,
    pub control_group: String,
    pub n_restarts: u32,
    /// `ActiveEnterTimestamp`, µs since the epoch (0: never).
    pub active_enter_usec: u64,
    /// `InactiveEnterTimestamp`, µs since the epoch (0: never).
    pub inactive_enter_usec: u64,
}

/// `ExecMainCode` values (waitid's `si_code`).
const CLD_EXITED: i32 = 1;
const CLD_KILLED: i32 = 2;
const CLD_DUMPED: i32 = 3;

impl UnitState {
    /// The exit code as Docker would say it: the status, or 128 + the
    /// signal for a process killed by one; None while it runs or when it
    /// never ran.
    pub fn exit_code(&self) -> Option<i64> {
        match self.exec_main_code {
            CLD_EXITED => Some(i64::from(self.exec_main_status)),
            CLD_KILLED | CLD_DUMPED => Some(128 + i64::from(self.exec_main_status)),
            _ => None,
        }
    }

    /// Running, as far as a service's health and its dependents care.
    pub fn running(&self) -> bool {
        matches!(
            self.active_state,
            ActiveState::Active | ActiveState::Reloading
        )
    }

    /// Coming from `was`, this state is an end systemd calls a success: a
    /// stop job's SIGTERM (`systemctl stop`, whoever typed it) or a clean
    /// exit, then inactive or already collected (a transient unit that
    /// ended well is unloaded at once). A crash ends as `failed` and
    /// stays loaded. systemd's own `Restart=on-failure` leaves such an end
    /// alone; so does stackd, when it did not ask for it.
    pub fn ends_cleanly(&self, was: &UnitState) -> bool {
        was.running()
            && !self.running()
            && self.active_state != ActiveState::Failed
            && (self.result == "success" || self.load_state == "not-found")
    }

    /// How a clean end came about, in words for the alert: a stop's
    /// signal (or a transient unit already collected, which only a clean
    /// end is) or the program's own exit 0.
    pub fn clean_end(&self) -> &'static str {
        if self.exec_main_code == CLD_EXITED {
            "exit 0 under systemd"
        } else {
            "systemctl stop"
        }
    }

    /// The unit as the one "container" of its service, so the code that
    /// reads Compose projects (classify, status, the supervisor's
    /// evidence, the resource monitor) reads it too. None when systemd
    /// has no such unit loaded and it is not running (a transient unit
    /// that was never started or was collected): the service is absent.
    pub fn container(&self, service: &str, unit: &str) -> Option<ContainerInfo> {
        let running = matches!(
            self.active_state,
            ActiveState::Active | ActiveState::Reloading | ActiveState::Deactivating
        );
        if self.load_state != "loaded" && !running {
            return None;
        }
        let state = match self.active_state {
            ActiveState::Active | ActiveState::Reloading | ActiveState::Deactivating => {
                ContainerState::Running
            }
            ActiveState::Activating => ContainerState::Restarting,
            ActiveState::Failed => ContainerState::Exited,
            ActiveState::Inactive => ContainerState::Exited,
            ActiveState::Other(_) => ContainerState::Unknown,
        };
        let stopped = state != ContainerState::Running;
        // A unit that never ran, or ended as systemd calls a success (a
        // stop's SIGTERM included), says 0.
        let exit_code = stopped.then(|| {
            if self.result == "success" {
                0
            } else {
                self.exit_code().unwrap_or(0)
            }
        });
        Some(ContainerInfo {
            id: unit.to_string(),
            name: unit.to_string(),
            project: service.to_string(),
            service: unit.to_string(),
            number: None,
            oneoff: false,
            image: String::new(),
            image_id: String::new(),
            config_hash: None,
            state,
            status: format!("{} ({})", self.active_state, self.sub_state),
            exit_code,
            oom_killed: self.result == "oom-kill",
            restart_count: u64::from(self.n_restarts),
            // Never "complete": a unit that ended is stopped, not a
            // finished one-shot.
            restart_policy: "unit".to_string(),
            memory_limit: None,
            health: None,
            started_at_usec: (self.active_enter_usec > 0).then_some(self.active_enter_usec),
            finished_at_usec: (stopped && self.inactive_enter_usec > 0)
                .then_some(self.inactive_enter_usec),
            pid: (self.main_pid > 0).then_some(self.main_pid),
            error: (self.active_state == ActiveState::Failed)
                .then(|| format!("result {}", self.result)),
        })
    }
}

/// Called with each new state of a followed unit.
pub type OnChange = Arc<dyn Fn(UnitState) + Send + Sync>;

/// What stackd asks of systemd. Implemented over D-Bus by
/// `dbus::systemd1::Systemd`; every call that starts a job waits for the
/// job to end and fails when its result is not `done`.
pub trait UnitManager: Send + Sync {
    /// Starts the unit (a transient one is created, after a failed one of
    /// the same name is reset). Running already is success.
    fn start<'a>(&'a self, spec: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>>;
    fn stop<'a>(&'a self, spec: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>>;
    /// `RestartUnit` for an existing unit; stop and start again for a
    /// transient one (its properties are those of the current config).
    fn restart<'a>(&'a self, spec: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>>;
    fn state<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<UnitState, UnitError>>;
    /// Calls `on_change` with the unit's state now and after each of its
    /// `PropertiesChanged`, until the returned future is dropped.
    fn follow(&self, unit: String, on_change: OnChange) -> BoxFuture<'static, ()>;
    /// Whether this manager is the user's (`stackd --user`): the journal
    /// is read with `--user-unit` then.
    fn user(&self) -> bool;
}

struct Followed {
    spec: UnitSpec,
    state: Option<UnitState>,
    /// When the unit last went from running to an end systemd calls a
    /// success (see [`UnitState::ends_cleanly`]); cleared when it runs
    /// again.
    ended_cleanly: Option<(u64, &'static str)>,
    task: tokio::task::JoinHandle<()>,
}

/// What systemd last said about each unit service, and the manager that
/// says it. Cheap to share.
#[derive(Default)]
pub struct Units {
    manager: OnceLock<Arc<dyn UnitManager>>,
    /// Woken when the manager is set and when a followed unit's state
    /// first arrives.
    changed: tokio::sync::Notify,
    followed: Mutex<HashMap<String, Followed>>,
    error: Mutex<Option<String>>,
}

impl Units {
    pub fn new() -> Arc<Units> {
        Arc::new(Units::default())
    }

    /// The systemd connection, once the daemon has one.
    pub fn set_manager(&self, manager: Arc<dyn UnitManager>) {
        let _ = self.manager.set(manager);
        self.changed.notify_waiters();
    }

    /// The systemd connection, waiting up to `timeout` for the daemon to
    /// make it (right after start-up it may not be up yet, and a task
    /// that came first must not fail for that).
    pub async fn wait_manager(&self, timeout: Duration) -> Result<Arc<dyn UnitManager>, UnitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            // Registered before the check: a set_manager in between wakes it.
            let changed = self.changed.notified();
            if let Some(m) = self.manager.get() {
                return Ok(m.clone());
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.manager();
            }
        }
    }

    /// Waits up to `timeout` until systemd has said something about the
    /// unit of each of `services` (a plan made before would read a unit
    /// that runs as absent). Returns the services still unheard of.
    pub async fn wait_known(&self, services: &[String], timeout: Duration) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            let unheard: Vec<String> = {
                let f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
                services
                    .iter()
                    .filter(|s| !f.get(*s).is_some_and(|slot| slot.state.is_some()))
                    .cloned()
                    .collect()
            };
            if unheard.is_empty() {
                return unheard;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return unheard;
            }
        }
    }

    /// Why there is no manager (the connection failed), for errors.
    pub fn set_error(&self, error: String) {
        *self.error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
    }

    pub fn manager(&self) -> Result<Arc<dyn UnitManager>, UnitError> {
        self.manager.get().cloned().ok_or_else(|| {
            UnitError::Unavailable(
                self.error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .unwrap_or_else(|| "not connected yet".into()),
            )
        })
    }

    /// Follows the unit of every service in `specs` (service name, spec)
    /// and forgets the services no longer there; each change is stored
    /// and announced as `ServiceChanged`. Without a manager it does
    /// nothing (the daemon calls it again once it has one).
    pub fn follow_all(self: &Arc<Self>, specs: Vec<(String, UnitSpec)>, events: &EventSender) {
        let Some(manager) = self.manager.get().cloned() else {
            return;
        };
        let mut followed = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        followed.retain(|name, f| {
            let keep = specs.iter().any(|(n, s)| n == name && *s == f.spec);
            if !keep {
                f.task.abort();
            }
            keep
        });
        for (name, spec) in specs {
            if followed.contains_key(&name) {
                continue;
            }
            let on_change: OnChange = {
                let units = Arc::downgrade(self);
                let events = events.clone();
                let name = name.clone();
                Arc::new(move |state: UnitState| {
                    let Some(units) = units.upgrade() else {
                        return;
                    };
                    let (changed, first) = {
                        let mut f = units.followed.lock().unwrap_or_else(|e| e.into_inner());
                        match f.get_mut(&name) {
                            Some(slot) if slot.state.as_ref() != Some(&state) => {
                                let first = slot.state.is_none();
                                if state.running() {
                                    slot.ended_cleanly = None;
                                } else if slot
                                    .state
                                    .as_ref()
                                    .is_some_and(|was| state.ends_cleanly(was))
                                {
                                    slot.ended_cleanly =
                                        Some((crate::time::now_usec(), state.clean_end()));
                                }
                                slot.state = Some(state);
                                (true, first)
                            }
                            _ => (false, false),
                        }
                    };
                    if first {
                        units.changed.notify_waiters();
                    }
                    if changed {
                        let _ = events.send(Event::ServiceChanged {
                            service: name.clone(),
                        });
                    }
                })
            };
            let task = tokio::spawn(manager.follow(spec.unit().to_string(), on_change));
            followed.insert(
                name,
                Followed {
                    spec,
                    state: None,
                    ended_cleanly: None,
                    task,
                },
            );
        }
    }

    /// When the service's unit last ended cleanly while running, and how
    /// (a `systemctl stop`, or a clean exit), if it has not run since: the
    /// caller tells whether that was stackd's own doing.
    pub fn ended_cleanly(&self, service: &str) -> Option<(u64, &'static str)> {
        let f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        f.get(service).and_then(|slot| slot.ended_cleanly)
    }

    /// Forget a clean end (acted on, or stackd's own).
    pub fn forget_ended(&self, service: &str) {
        let mut f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = f.get_mut(service) {
            slot.ended_cleanly = None;
        }
    }

    /// Stores a state read outside the follower (after a task's job), so
    /// the core sees it without waiting for the signal.
    pub fn note(&self, service: &str, state: UnitState) {
        let mut f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = f.get_mut(service) {
            slot.state = Some(state);
        }
    }

    /// The service's unit as its one pseudo-container (none while it is
    /// absent or not heard of yet).
    pub fn containers(&self, service: &str) -> Vec<ContainerInfo> {
        let f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        f.get(service)
            .and_then(|slot| {
                slot.state
                    .as_ref()
                    .and_then(|s| s.container(service, slot.spec.unit()))
            })
            .into_iter()
            .collect()
    }

    /// The last state systemd reported for the service's unit.
    pub fn state(&self, service: &str) -> Option<UnitState> {
        let f = self.followed.lock().unwrap_or_else(|e| e.into_inner());
        f.get(service).and_then(|slot| slot.state.clone())
    }
}

/// The unit's journal (`journalctl -u UNIT -o cat`, `--user-unit` for the
/// user's manager), each line prefixed with the unit's name as the
/// container logs are with the container's; with `follow`, the stream
/// stays open (`-f`).
pub fn journal(
    unit: &str,
    user: bool,
    tail: Option<usize>,
    follow: bool,
) -> Result<BoxStream<'static, String>, UnitError> {
    use futures_util::StreamExt;
    use tokio::io::AsyncBufReadExt;
    let mut cmd = tokio::process::Command::new("journalctl");
    cmd.arg(if user { "--user-unit" } else { "--unit" })
        .arg(unit)
        .args(["--output", "cat", "--no-pager", "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    match tail {
        Some(n) => cmd.arg(format!("--lines={n}")),
        None => cmd.arg("--lines=all"),
    };
    if follow {
        cmd.arg("--follow");
    }
    let mut child = cmd.spawn().map_err(|source| UnitError::Journal {
        unit: unit.to_string(),
        source,
    })?;
    let Some(stdout) = child.stdout.take() else {
        return Err(UnitError::Journal {
            unit: unit.to_string(),
            source: std::io::Error::other("no stdout"),
        });
    };
    let prefix = unit.to_string();
    let lines = tokio_stream_lines(tokio::io::BufReader::new(stdout).lines());
    // The child lives as long as the stream (kill_on_drop).
    Ok(lines
        .map(move |l| {
            let _keep = &child;
            format!("{prefix} | {l}")
        })
        .boxed())
}

fn tokio_stream_lines<R>(lines: tokio::io::Lines<R>) -> BoxStream<'static, String>
where
    R: tokio::io::AsyncBufRead + Unpin + Send + 'static,
{
    use futures_util::StreamExt;
    futures_util::stream::unfold(lines, |mut lines| async move {
        match lines.next_line().await {
            Ok(Some(l)) => Some((l, lines)),
            _ => None,
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests;
