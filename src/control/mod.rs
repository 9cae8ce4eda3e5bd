//! The one core the adapters share.
//!
//! D-Bus (and later the peer endpoint) call [`Control`]; it answers from the
//! config, the store and the world, and turns requests into tasks. It knows
//! nothing of D-Bus, HTTP or terminals.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use futures_util::stream::{self, BoxStream, StreamExt};
use thiserror::Error;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{self, Config, LoadOptions, ServiceConfig};
use crate::engine::{Compose, ComposeChoice, ComposeError, ContainerInfo, Invocation};
use crate::events::{Alert, Event, EventSender, Severity};
use crate::reconcile::{self, Action, Facts};
use crate::store::{
    now_usec, Desired, DesiredState, NewEvent, Store, StoreError, TaskFilter, TaskRecord,
};
use crate::systemd;
use crate::tasks::{Failure, Log, Queue, QueueError, RunFuture, Runner, TaskKind};
use crate::world::{self, Observed, World};

mod diagnose;
mod fastpath;
mod order;
pub use order::TreeRow;
mod handoff;
mod leave;
mod registry;
mod units;
mod wait;
pub use handoff::{
    claim_wins, PeerFailure, PeerService, Peers, Prepared, RemoteTask, VolumeOffer, VolumeReceipt,
};
pub use leave::{PlanStep, LEAVING_ORIGIN};
pub use registry::{Readiness, Required};

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("{0}")]
    NoSuchService(String),
    #[error("no such task: {0}")]
    NoSuchTask(u64),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Conflict(String),
    #[error("preflight failed:\n{0}")]
    PreflightFailed(String),
    #[error("Docker is unavailable: {0}")]
    DockerUnavailable(String),
    #[error("the configuration is invalid; the running one stays in force:\n{0}")]
    InvalidConfig(String),
    /// A host of the cluster that must be asked does not answer.
    #[error("{0}")]
    PeerUnreachable(String),
    #[error("stackd is shutting down and takes no new tasks")]
    ShuttingDown,
    /// A file the daemon writes (a pushed cluster file) could not be written.
    #[error("{0}")]
    Io(String),
    #[error("state store: {0}")]
    Store(#[from] StoreError),
}

impl From<QueueError> for ControlError {
    fn from(e: QueueError) -> Self {
        match e {
            QueueError::Closed => ControlError::ShuttingDown,
            QueueError::NoSuchTask(id) => ControlError::NoSuchTask(id),
            QueueError::Finished(id) => {
                ControlError::Conflict(format!("task {id} has already finished"))
            }
            QueueError::Store(e) => ControlError::Store(e),
        }
    }
}

/// One figure of `HostStats`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HostValue {
    Int(u64),
    Float(f64),
}

/// What a person can ask of a service.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Start,
    Stop,
    Restart,
    Update,
    Pull,
    Down,
    /// Back to the previous image (`housekeeping::retag_previous`).
    Rollback,
}

impl Op {
    fn kind(self) -> TaskKind {
        match self {
            Op::Start => TaskKind::Deploy,
            Op::Stop => TaskKind::Stop,
            Op::Restart => TaskKind::Restart,
            Op::Update => TaskKind::Update,
            Op::Pull => TaskKind::Pull,
            Op::Down => TaskKind::Down,
            Op::Rollback => TaskKind::Rollback,
        }
    }

    /// What the operation says about the desired state, if anything.
    fn desired(self) -> Option<DesiredState> {
        match self {
            Op::Start | Op::Restart | Op::Update | Op::Rollback => Some(DesiredState::Running),
            Op::Stop | Op::Down => Some(DesiredState::Stopped),
            Op::Pull => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemState {
    Starting,
    Running,
    Degraded,
    Stopping,
}

impl SystemState {
    pub fn as_str(self) -> &'static str {
        match self {
            SystemState::Starting => "starting",
            SystemState::Running => "running",
            SystemState::Degraded => "degraded",
            SystemState::Stopping => "stopping",
        }
    }
}

/// Everything `stackctl status NAME` and the D-Bus Service object show.
#[derive(Clone, Debug)]
pub struct ServiceStatus {
    pub name: String,
    pub host: String,
    pub desired: DesiredState,
    /// "user" when a person said start/stop, "migrate from HOST" or
    /// "migrate to HOST" after a move, else "config" (auto_start).
    pub desired_source: String,
    /// When a person or a move last set the desired state (µs since the
    /// epoch); 0 when it comes from `auto_start`. Two hosts that both
    /// want a service of one host running compare it: the newer claim
    /// wins (`control/handoff.rs`).
    pub desired_since_usec: u64,
    pub active_state: &'static str,
    pub sub_state: String,
    pub health: &'static str,
    pub health_message: String,
    pub containers: Vec<ContainerInfo>,
    pub state_change_usec: u64,
    pub restart_count: u64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub compose_file: PathBuf,
    /// Running and healthy as a dependent's start waits for it: containers
    /// up, Docker's healthchecks passing, and the probe (if one is
    /// configured) has said healthy, not merely not yet run
    /// (what a task queued with `request_and_wait` waits for).
    pub ready: bool,
    /// `kind`: "compose", "unit" or "external".
    pub kind: &'static str,
    /// `description`, `category` ("" when not set) and `required_for`.
    pub description: String,
    pub category: String,
    pub required_for: Vec<String>,
}

impl ServiceStatus {
    /// One line for a task log: "active (running), health unhealthy: why".
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} ({}), health {}",
            self.active_state, self.sub_state, self.health
        );
        if !self.health_message.is_empty() {
            line.push_str(": ");
            line.push_str(&self.health_message);
        }
        line
    }
}

#[derive(Clone, Debug)]
pub struct ManagerInfo {
    pub version: &'static str,
    pub host: String,
    pub system_state: SystemState,
    pub docker_connected: bool,
    pub docker_error: String,
    pub config_hash: String,
    pub config_path: PathBuf,
    pub boot_id: String,
}

struct Shared {
    config: RwLock<Arc<Config>>,
    load_options: LoadOptions,
    store: Arc<Store>,
    world: Arc<World>,
    events: EventSender,
    compose: tokio::sync::Mutex<Option<Compose>>,
    queue: OnceLock<Queue>,
    board: Arc<crate::health::Board>,
    figures: Arc<crate::resources::Figures>,
    hosts: crate::hosts::HostBoard,
    started_usec: u64,
    boot_id: String,
    state: Mutex<SystemState>,
    /// The other hosts (the peer endpoint's client), set by the daemon.
    peers: OnceLock<Arc<dyn handoff::Peers>>,
    /// Target host of each move queued and not yet started, by service.
    moves: Mutex<std::collections::HashMap<String, String>>,
    /// The moves of `moves` asked to carry their named volumes.
    carry: Mutex<std::collections::HashSet<String>>,
    /// Tasks that wait for health after their Compose step (`wait.rs`).
    waits: Mutex<std::collections::HashSet<u64>>,
    /// Options of queued prune tasks (`housekeeping/`).
    housekeeping: crate::housekeeping::Pending,
    /// What preflight learnt from `compose config`, per version of a
    /// project's files.
    config_cache: crate::preflight::ConfigCache,
    /// What systemd says about the `kind = "unit"` services (`units.rs`).
    units: Arc<crate::units::Units>,
    /// Each external service's ActiveState and since when (`registry.rs`).
    external_since: registry::Since,
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Control {
    shared: Arc<Shared>,
}

impl Control {
    pub fn new(
        config: Config,
        load_options: LoadOptions,
        store: Arc<Store>,
        world: Arc<World>,
        events: EventSender,
        boot_id: String,
    ) -> Control {
        let max_parallel = config.max_parallel;
        let shared = Arc::new(Shared {
            config: RwLock::new(Arc::new(config)),
            load_options,
            store: store.clone(),
            world,
            events: events.clone(),
            compose: tokio::sync::Mutex::new(None),
            queue: OnceLock::new(),
            board: crate::health::Board::new(),
            figures: crate::resources::Figures::new(),
            hosts: crate::hosts::HostBoard::default(),
            started_usec: crate::store::now_usec(),
            boot_id,
            state: Mutex::new(SystemState::Starting),
            peers: OnceLock::new(),
            moves: Mutex::default(),
            carry: Mutex::default(),
            waits: Mutex::default(),
            housekeeping: Default::default(),
            config_cache: crate::preflight::ConfigCache::default(),
            units: crate::units::Units::new(),
            external_since: registry::Since::default(),
        });
        let runner = Arc::new(ComposeRunner {
            shared: shared.clone(),
        });
        let queue = Queue::new(store, events, runner, max_parallel);
        let _ = shared.queue.set(queue);
        Control { shared }
    }

    pub fn config(&self) -> Arc<Config> {
        self.shared.config()
    }

    pub fn events(&self) -> &EventSender {
        &self.shared.events
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    pub fn queue(&self) -> &Queue {
        self.shared.queue()
    }

    /// Options of queued prune tasks.
    pub(crate) fn housekeeping(&self) -> &crate::housekeeping::Pending {
        &self.shared.housekeeping
    }

    /// What the supervisor knows of each service's health and recoveries.
    pub fn board(&self) -> &Arc<crate::health::Board> {
        &self.shared.board
    }

    /// The effective desired state (what a person said, else auto_start).
    pub fn desired_state(&self, name: &str) -> DesiredState {
        let cfg = self.config();
        let Some(svc) = cfg.service(name) else {
            return DesiredState::Stopped;
        };
        let said = self.shared.store.desired(name).ok().flatten();
        Shared::desired(svc, said.as_ref()).0
    }

    /// The start-up reconcile has not finished yet.
    pub fn startup_pending(&self) -> bool {
        *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()) == SystemState::Starting
    }

    /// The latest resource figures (the monitor writes them).
    pub fn figures(&self) -> &Arc<crate::resources::Figures> {
        &self.shared.figures
    }

    /// The host's figures from the last sample, with Docker's counts.
    pub fn host_stats(&self) -> Vec<(&'static str, HostValue)> {
        let mut out = Vec::new();
        if let Some(h) = self.shared.figures.host() {
            if let Some(cpu) = h.cpu_percent {
                out.push(("CpuPercent", HostValue::Float(cpu)));
            }
            out.push(("Cpus", HostValue::Int(u64::from(h.cpus))));
            out.push(("Load1", HostValue::Float(h.load[0])));
            out.push(("Load5", HostValue::Float(h.load[1])));
            out.push(("Load15", HostValue::Float(h.load[2])));
            out.push(("MemoryTotal", HostValue::Int(h.memory_total)));
            out.push(("MemoryAvailable", HostValue::Int(h.memory_available)));
            out.push(("SwapTotal", HostValue::Int(h.swap_total)));
            out.push(("SwapFree", HostValue::Int(h.swap_free)));
            out.push(("UptimeSec", HostValue::Int(h.uptime.as_secs())));
            if let Some(d) = h.disks.first() {
                out.push(("StateDirTotal", HostValue::Int(d.total)));
                out.push(("StateDirAvailable", HostValue::Int(d.available)));
            }
        }
        let projects = self.shared.world.project_names();
        let containers: Vec<ContainerInfo> = projects
            .iter()
            .flat_map(|p| self.shared.world.containers(p))
            .collect();
        let running = containers
            .iter()
            .filter(|c| c.state == crate::engine::ContainerState::Running)
            .count();
        out.push(("ComposeContainers", HostValue::Int(containers.len() as u64)));
        out.push(("ComposeContainersRunning", HostValue::Int(running as u64)));
        out
    }

    /// The project's containers as last observed.
    pub fn containers(&self, name: &str) -> Vec<ContainerInfo> {
        self.shared.containers_of(name)
    }

    /// The connected Docker client, if Docker answers.
    pub fn docker(&self) -> Option<crate::engine::Docker> {
        self.shared.world.docker()
    }

    /// How many times the observer has connected to Docker (see
    /// [`World::generation`]).
    pub fn docker_generation(&self) -> u64 {
        self.shared.world.generation()
    }

    /// The configured service of this host whose Compose file creates
    /// `network`, if one does.
    pub fn network_creator(&self, network: &str) -> Option<String> {
        let cfg = self.config();
        let said = self.shared.store.all_desired().unwrap_or_default();
        let local = Shared::local_services(&cfg, &said);
        compose_networks(&local)
            .into_iter()
            .find(|(_, n)| n.creates.iter().any(|c| c == network))
            .map(|(name, _)| name)
    }

    /// Docker's evidence that a person stopped the service from outside
    /// stackd, not acted on yet.
    pub fn outside_stop(&self, name: &str) -> Option<world::OutsideStop> {
        if self.shared.is_unit(name) {
            return self.unit_outside_stop(name);
        }
        self.shared.world.outside_stop(name)
    }

    /// A service stopped outside stackd runs again and no stackd task
    /// started it: a person started it the same way (`docker start`,
    /// Portainer), so it is wanted running again.
    pub fn started_outside(&self, name: &str) {
        let outside = self
            .shared
            .store
            .desired(name)
            .ok()
            .flatten()
            .is_some_and(|d| d.source == crate::store::DesiredSource::Outside);
        if outside
            && !self.queue().busy(name)
            && world::classify(&self.containers(name)) == Observed::Running
        {
            info!(
                stackd_service = name,
                "started again outside stackd; desired running"
            );
            if let Err(e) = self.shared.store.set_desired(
                name,
                DesiredState::Running,
                crate::store::DesiredSource::User,
            ) {
                warn!(stackd_service = name, "cannot record the start: {e}");
            }
        }
    }

    /// Docker reported an `oom` for the container since it last started.
    pub fn oom_seen(&self, container_id: &str) -> bool {
        self.shared.world.oom_seen(container_id)
    }

    /// The event stream told the container's `die` (see `World::die_seen`).
    pub fn die_seen(&self, container_id: &str) -> bool {
        self.shared.world.die_seen(container_id)
    }

    pub fn forget_outside_stop(&self, name: &str) {
        self.shared.world.clear_outside_stop(name);
        self.shared.units.forget_ended(name);
    }

    /// A person stopped the service through Docker itself: that is their
    /// intent (`restart.manual_stop = "respect"`). The desired state
    /// becomes stopped, so reboots keep it stopped; `stackctl start` undoes
    /// it.
    pub fn stopped_outside(&self, name: &str, stop: &world::OutsideStop) {
        self.shared.world.clear_outside_stop(name);
        self.shared.units.forget_ended(name);
        if let Err(e) = self.shared.store.set_stopped_outside(name, stop.door) {
            warn!(stackd_service = name, "cannot record the stop: {e}");
            return;
        }
        self.shared.board.reset(name);
        self.alert(
            Severity::Info,
            "stopped-outside",
            name,
            &format!(
                "{name} was stopped outside stackd ({}); it stays stopped until `stackctl start {name}`",
                stop.door
            ),
            &format!(
                "container {} ended after a {} through the Docker API, while no stackd task ran for it",
                stop.container, stop.door
            ),
        );
        let _ = self.shared.events.send(Event::ServiceChanged {
            service: name.to_string(),
        });
    }

    pub fn manager(&self) -> ManagerInfo {
        let cfg = self.config();
        ManagerInfo {
            version: env!("CARGO_PKG_VERSION"),
            host: cfg.host.clone(),
            system_state: self.system_state(),
            docker_connected: self.shared.world.docker_connected(),
            docker_error: self.shared.world.docker_error(),
            config_hash: cfg.hash.clone(),
            config_path: cfg.path.clone(),
            boot_id: self.shared.boot_id.clone(),
        }
    }

    /// What the peer heartbeat knows of the other hosts.
    pub fn host_board(&self) -> &crate::hosts::HostBoard {
        &self.shared.hosts
    }

    /// Every host of `[hosts]` (this one too; only this one when the table
    /// is empty), as this host sees it now.
    pub fn list_hosts(&self) -> Vec<crate::hosts::HostStatus> {
        let cfg = self.config();
        let own = || crate::hosts::HostStatus {
            name: cfg.host.clone(),
            address: cfg
                .hosts
                .get(&cfg.host)
                .and_then(|h| h.peer.clone())
                .unwrap_or_default(),
            reachable: true,
            since_usec: self.shared.started_usec,
            version: env!("CARGO_PKG_VERSION").to_string(),
            load: crate::hosts::load_average_1m(),
            config_hash: cfg.hash.clone(),
            error: String::new(),
        };
        if cfg.hosts.is_empty() {
            return vec![own()];
        }
        cfg.hosts
            .iter()
            .map(|(name, h)| {
                if *name == cfg.host {
                    return own();
                }
                self.shared
                    .hosts
                    .get(name)
                    .unwrap_or_else(|| crate::hosts::HostStatus {
                        name: name.clone(),
                        address: h.peer.clone().unwrap_or_default(),
                        error: if h.peer.is_some() {
                            "not heard from yet".into()
                        } else {
                            "no peer URL in [hosts]".into()
                        },
                        ..Default::default()
                    })
            })
            .collect()
    }

    pub fn system_state(&self) -> SystemState {
        let state = *self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state != SystemState::Running {
            return state;
        }
        let degraded = (self.shared.uses_docker() && !self.shared.world.docker_connected())
            || self
                .list_services()
                .iter()
                .any(|s| s.active_state == "failed" || s.health == "unhealthy");
        if degraded {
            SystemState::Degraded
        } else {
            SystemState::Running
        }
    }

    pub fn set_system_state(&self, state: SystemState) {
        *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        let _ = self.shared.events.send(Event::ManagerChanged);
    }

    /// Names of the services this host manages, sorted.
    pub fn service_names(&self) -> Vec<String> {
        self.local_services().into_iter().map(|s| s.name).collect()
    }

    /// The services this host manages: those the cluster file assigns to
    /// it, and those moved here or away from here (see [`Shared::manages`]).
    pub fn local_services(&self) -> Vec<ServiceConfig> {
        let cfg = self.config();
        let said = self.shared.store.all_desired().unwrap_or_default();
        Shared::local_services(&cfg, &said)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The service's config when this host manages it.
    pub fn local_service(&self, name: &str) -> Option<ServiceConfig> {
        let cfg = self.config();
        self.shared.local_service(&cfg, name).ok().cloned()
    }

    pub fn list_services(&self) -> Vec<ServiceStatus> {
        let cfg = self.config();
        // One read of the store for all of them, not one per service.
        let said = self.shared.store.all_desired().unwrap_or_default();
        Shared::local_services(&cfg, &said)
            .into_iter()
            .map(|s| self.shared.status(&cfg, s, said.get(&s.name)))
            .collect()
    }

    pub fn service(&self, name: &str) -> Result<ServiceStatus, ControlError> {
        let cfg = self.config();
        let svc = self.shared.local_service(&cfg, name)?;
        let said = self.shared.store.desired(name)?;
        Ok(self.shared.status(&cfg, svc, said.as_ref()))
    }

    /// Queue an operation. The desired state it implies is stored first, so
    /// it holds even if the task fails or the host reboots before it runs.
    /// Dependencies that are not running are started first; running
    /// dependents (stop) and conflicts (start) refuse it.
    pub fn submit(&self, op: Op, name: &str, origin: &str) -> Result<TaskRecord, ControlError> {
        self.submit_with(op, name, origin, false)
    }

    /// Every problem a deploy of the service would meet, without deploying.
    /// Fatal problems make it an error; warnings alone are listed.
    pub async fn preflight(&self, name: &str) -> Result<Vec<String>, ControlError> {
        let cfg = self.config();
        let svc = self.shared.local_service(&cfg, name)?.clone();
        if let Some(spec) = crate::units::UnitSpec::of(&svc) {
            return self.shared.unit_preflight(&spec);
        }
        let report = self
            .shared
            .preflight(&svc)
            .await
            .map_err(|f| ControlError::PreflightFailed(f.message))?;
        let lines: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        if report.passed() {
            Ok(lines)
        } else {
            Err(ControlError::PreflightFailed(lines.join("\n")))
        }
    }

    /// Plan against the current config and queue what it takes (a
    /// reconcile task). Unless `force`, refused when it would stop more
    /// of this host's services for being no longer assigned than
    /// `reload_guard` lets a reload remove (see [`Shared::removal_guard`]).
    pub fn apply(&self, origin: &str, force: bool) -> Result<TaskRecord, ControlError> {
        if !force {
            if let Some(why) = self
                .shared
                .removal_guard(&reconcile::plan(&self.shared.facts()))
            {
                return Err(ControlError::Conflict(format!(
                    "apply refused: {why}; check the cluster file, or run `stackctl apply --force` \
                     to stop them"
                )));
            }
        }
        Ok(self.queue().submit(TaskKind::Reconcile, "", origin)?)
    }

    /// Re-read the config. A bad file changes nothing and says why; so
    /// does one that would remove too many of this host's services
    /// (`reload_guard`), unless `force`.
    pub fn reload(&self, force: bool) -> Result<(), ControlError> {
        systemd::reloading();
        let path = self.config().path.clone();
        let result = config::load(&path, &self.shared.load_options).map_err(|e| e.to_string());
        let result = result.and_then(|new| match self.config().guard(&new) {
            Some(why) if !force => Err(format!(
                "{}: {why}; check the file, or run `stackctl reload --force` to remove them",
                path.display()
            )),
            _ => Ok(new),
        });
        let outcome = match result {
            Ok(new) => {
                let old = self.config();
                let removed = old.removed_by(&new);
                if !removed.is_empty() {
                    info!(
                        "the reload removes {} of this host's services: {}",
                        removed.len(),
                        removed.join(", ")
                    );
                }
                if new.max_parallel != old.max_parallel {
                    warn!("max_parallel changed; the new value takes effect when stackd restarts");
                }
                info!(
                    "configuration reloaded from {} ({})",
                    path.display(),
                    new.hash
                );
                *self
                    .shared
                    .config
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = Arc::new(new);
                let _ = self.shared.events.send(Event::ServicesReloaded);
                let _ = self.shared.events.send(Event::ManagerChanged);
                Ok(())
            }
            Err(e) => {
                self.alert(
                    Severity::Critical,
                    "reload-failed",
                    "",
                    "reload refused, the running configuration stays in force",
                    &e,
                );
                Err(ControlError::InvalidConfig(e))
            }
        };
        systemd::ready(&self.status_line());
        outcome
    }

    /// Replaces the cluster file with `text` (a push from a peer): checked
    /// as a reload checks the file on disk, and only then written
    /// atomically and reloaded. With `check_only` nothing is written.
    /// Returns the hash of the configuration in force afterwards.
    /// An empty text is refused (a truncated file, almost certainly), and
    /// so, unless `force`, is one that trips `reload_guard`.
    pub fn replace_config(
        &self,
        text: &str,
        check_only: bool,
        force: bool,
    ) -> Result<String, ControlError> {
        if text.trim().is_empty() {
            return Err(ControlError::InvalidArgument(
                "the pushed cluster file is empty (a truncated file?); nothing was written".into(),
            ));
        }
        // One push at a time: the check and the write go together.
        static PUSH: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = PUSH.lock().unwrap_or_else(|e| e.into_inner());
        let path = self.config().path.clone();
        let new = config::check_replacement(&path, text, &self.shared.load_options)
            .map_err(|e| ControlError::InvalidConfig(e.to_string()))?;
        if !force {
            if let Some(why) = self.config().guard(&new) {
                return Err(ControlError::Conflict(format!(
                    "the pushed cluster file was refused: {why}; nothing was written \
                     (push it with `stackctl config push --force` to remove them)"
                )));
            }
        }
        if check_only {
            return Ok(new.hash);
        }
        config::write_atomic(&path, text.as_bytes())
            .map_err(|e| ControlError::Io(format!("cannot write {}: {e}", path.display())))?;
        info!(
            "cluster file {} replaced by a push ({})",
            path.display(),
            new.hash
        );
        // Checked above, with the same drop-ins; forced so that a drop-in
        // changed in between does not leave the new file written but
        // refused.
        self.reload(true)?;
        Ok(self.config().hash.clone())
    }

    pub fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, ControlError> {
        Ok(self.shared.store.list_tasks(filter)?)
    }

    pub fn task(&self, id: u64) -> Result<TaskRecord, ControlError> {
        self.shared
            .store
            .task(id)?
            .ok_or(ControlError::NoSuchTask(id))
    }

    pub fn task_log(&self, id: u64) -> Result<Vec<String>, ControlError> {
        self.task(id)?;
        Ok(self
            .shared
            .store
            .task_log(id)?
            .into_iter()
            .map(|l| l.line)
            .collect())
    }

    pub fn cancel(&self, id: u64) -> Result<(), ControlError> {
        Ok(self.queue().cancel(id)?)
    }

    /// The service's container logs, prefixed with the container name as
    /// `docker compose logs` does. With `follow`, the stream stays open.
    pub fn logs(
        &self,
        name: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> Result<BoxStream<'static, String>, ControlError> {
        let cfg = self.config();
        self.shared.local_service(&cfg, name)?;
        if let Some(journal) = self.unit_logs(name, tail, follow) {
            return journal;
        }
        let docker = self
            .shared
            .world
            .docker()
            .ok_or_else(|| ControlError::DockerUnavailable(self.shared.world.docker_error()))?;
        let mut containers = self.shared.world.containers(name);
        containers.sort_by(|a, b| a.name.cmp(&b.name));
        let streams = containers.into_iter().map(|c| {
            let prefix = c.name.clone();
            docker
                .logs(&c.id, tail, follow)
                .map(move |line| match line {
                    Ok(l) => format!("{prefix} | {l}"),
                    Err(e) => format!("{prefix} | (log stream ended: {e})"),
                })
                .boxed()
        });
        Ok(stream::select_all(streams).boxed())
    }

    /// Find the Compose command ahead of the first task, so boot recovery
    /// does not wait for the probe. A failure here is reported by the task.
    pub async fn detect_compose(&self) {
        let _ = self.shared.compose().await;
    }

    /// The boot id changed since the store last saw one: this host rebooted.
    pub fn is_new_boot(&self) -> Result<bool, ControlError> {
        let last = self.shared.store.meta("boot_id")?;
        Ok(last.as_deref() != Some(self.shared.boot_id.as_str()))
    }

    /// Queue the start-up reconcile (boot recovery when the boot id changed).
    pub fn startup(&self) -> Result<TaskRecord, ControlError> {
        let origin = if self.is_new_boot()? { "boot" } else { "start" };
        // Not forced by a person: the reconcile itself leaves too many
        // removals alone (see `reconcile`).
        let task = self.apply(origin, true)?;
        self.shared
            .store
            .set_meta("boot_id", &self.shared.boot_id)?;
        Ok(task)
    }

    /// The `STATUS=` line for systemd: "12 running, 1 unhealthy".
    pub fn status_line(&self) -> String {
        if self.shared.uses_docker() && !self.shared.world.docker_connected() {
            return "waiting for Docker".to_string();
        }
        let services = self.list_services();
        let running = services
            .iter()
            .filter(|s| s.active_state == "active")
            .count();
        let failed = services
            .iter()
            .filter(|s| s.active_state == "failed" || s.health == "unhealthy")
            .count();
        let busy = self.queue().running_count();
        let mut line = format!("{running} running");
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        if busy > 0 {
            line.push_str(&format!(", {busy} tasks"));
        }
        line
    }

    /// Send a test message through a notification channel (all of them
    /// when `None`), bypassing the outbox, and say what happened.
    pub async fn notify_test(&self, channel: Option<&str>) -> Vec<(String, Result<(), String>)> {
        let cfg = self.config();
        crate::notify::test(&cfg.notify, &cfg.host, channel).await
    }

    /// Store an event and publish it as an alert.
    /// [`alert`](Self::alert) with structured data stored with the event.
    pub fn alert_data(
        &self,
        severity: Severity,
        kind: &str,
        service: &str,
        summary: &str,
        body: &str,
        data: serde_json::Value,
    ) {
        self.shared
            .alert(severity, kind, service, summary, body, data);
    }

    pub fn alert(&self, severity: Severity, kind: &str, service: &str, summary: &str, body: &str) {
        self.shared.alert(
            severity,
            kind,
            service,
            summary,
            body,
            serde_json::Value::Null,
        );
    }
}

impl Shared {
    fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether this host has a Compose project to manage: only then do a
    /// plan, the system's state and its status line depend on Docker
    /// (a config of `kind = "unit"` and external services does not).
    pub(super) fn uses_docker(&self) -> bool {
        self.config().local_services().any(|s| s.is_compose())
    }

    fn queue(&self) -> &Queue {
        self.queue.get().expect("queue is set in Control::new")
    }

    /// Whether this host manages `svc`: the cluster file assigns it here
    /// (`host =` is the initial placement), or a move brought it here or
    /// took it away from here (the stored desired state names a peer). A
    /// host a service moved away from keeps showing it, stopped, with
    /// "migrate to HOST".
    fn manages(cfg: &Config, svc: &ServiceConfig, said: Option<&Desired>) -> bool {
        svc.assigned_to(&cfg.host) || said.is_some_and(|d| d.peer.is_some())
    }

    fn local_services<'c>(
        cfg: &'c Config,
        said: &std::collections::BTreeMap<String, Desired>,
    ) -> Vec<&'c ServiceConfig> {
        cfg.services
            .values()
            .filter(|s| Shared::manages(cfg, s, said.get(&s.name)))
            .collect()
    }

    fn local_service<'c>(
        &self,
        cfg: &'c Config,
        name: &str,
    ) -> Result<&'c ServiceConfig, ControlError> {
        let said = self.store.desired(name)?;
        match cfg.service(name) {
            Some(s) if Shared::manages(cfg, s, said.as_ref()) => Ok(s),
            Some(s) => Err(ControlError::NoSuchService(format!(
                "service {name} is not assigned to this host ({}); it runs on {}",
                cfg.host,
                match &s.hosts {
                    config::HostSelector::All => "all hosts".to_string(),
                    config::HostSelector::List(l) => l.join(", "),
                }
            ))),
            None => Err(ControlError::NoSuchService(format!(
                "no such service: {name} (`stackctl list` shows the configured ones)"
            ))),
        }
    }

    /// The effective desired state, and who set it.
    fn desired(svc: &ServiceConfig, said: Option<&Desired>) -> (DesiredState, String) {
        match said.filter(|d| d.is_decision()) {
            Some(d) => (d.state, d.describe_source()),
            None => (
                reconcile::effective_desired(svc.auto_start, None),
                "config".to_string(),
            ),
        }
    }

    fn status(&self, cfg: &Config, svc: &ServiceConfig, said: Option<&Desired>) -> ServiceStatus {
        if svc.is_external() {
            return self.external_status(cfg, svc, said);
        }
        let containers = self.containers_of(&svc.name);
        let observed = world::classify(&containers);
        let (desired, desired_source) = Shared::desired(svc, said);
        let running_kind = self.queue().running_kind(&svc.name);
        let failed = world::any_failed(&containers);
        let (active_state, sub_state) = match (running_kind, observed) {
            (Some(k), _) if k.starts() => ("activating", k.as_str().to_string()),
            (Some(k), _) if k != TaskKind::Pull => ("deactivating", k.as_str().to_string()),
            (_, Observed::Running) => {
                let long = containers
                    .iter()
                    .any(|c| !c.oneoff && !world::is_complete(c));
                (
                    "active",
                    if long { "running" } else { "exited" }.to_string(),
                )
            }
            (_, Observed::Partial) => ("active", "partial".to_string()),
            (_, Observed::Stopped) if desired == DesiredState::Running && failed => {
                ("failed", "failed".to_string())
            }
            (_, Observed::Stopped) => ("inactive", "exited".to_string()),
            (_, Observed::Absent) => ("inactive", "dead".to_string()),
        };
        let (mut health, mut health_message) = health_of(&containers, observed, desired);
        let mut recoveries = 0;
        let mut gave_up = false;
        let mut probed_healthy = false;
        let mut waiting = false;
        let has_probe = svc.health.as_ref().is_some_and(|h| h.probe.is_some());
        if has_probe && health == "healthy" {
            // Containers up is not yet healthy when a probe decides: until
            // the supervisor's view says otherwise, it has not spoken.
            health = "starting";
            health_message = "waiting for the first probe".to_string();
        }
        if let Some(v) = self.board.verdict(&svc.name) {
            probed_healthy = v.health == "healthy";
            recoveries = v.recoveries;
            gave_up = v.gave_up;
            waiting = v.waiting && observed != Observed::Running;
            // The supervisor's view (probes, debounced) wins once it has one.
            if v.health != "unknown" || gave_up {
                health = v.health;
                health_message = v.message;
            }
        }
        let (active_state, sub_state) = if gave_up && running_kind.is_none() {
            ("failed", "gave-up".to_string())
        } else if waiting && running_kind.is_none() {
            // As systemd's "activating (auto-restart)": it will try again.
            ("activating", "waiting".to_string())
        } else {
            (active_state, sub_state)
        };
        // Not "active": a task that waits for it shows it as activating.
        let ready = active_state != "failed"
            && observed == Observed::Running
            && health == "healthy"
            && (!has_probe || probed_healthy);
        ServiceStatus {
            name: svc.name.clone(),
            host: cfg.host.clone(),
            desired,
            desired_source,
            desired_since_usec: said.filter(|d| d.is_decision()).map_or(0, |d| d.since_usec),
            active_state,
            sub_state,
            health,
            health_message,
            // A unit service's last change is systemd's (Docker has none);
            // it has no Compose file either.
            state_change_usec: match self.units.state(&svc.name) {
                Some(u) if !svc.is_compose() => u.active_enter_usec.max(u.inactive_enter_usec),
                _ => self.world.changed_usec(&svc.name),
            },
            restart_count: containers.iter().map(|c| c.restart_count).sum::<u64>() + recoveries,
            cpu_percent: self.figures.service(&svc.name).cpu_percent,
            memory_bytes: self.figures.service(&svc.name).memory_bytes,
            compose_file: if svc.is_compose() {
                svc.compose_file.clone()
            } else {
                PathBuf::new()
            },
            containers,
            ready,
            kind: svc.kind.as_str(),
            description: svc.description.clone().unwrap_or_default(),
            category: svc.category.clone().unwrap_or_default(),
            required_for: svc.required_for.clone(),
        }
    }

    fn alert(
        &self,
        severity: Severity,
        kind: &str,
        service: &str,
        summary: &str,
        body: &str,
        data: serde_json::Value,
    ) {
        let host = self.config().host.clone();
        if let Err(e) = self.store.append_event(&NewEvent {
            kind: kind.to_string(),
            severity: severity.as_str().to_string(),
            service: (!service.is_empty()).then(|| service.to_string()),
            summary: summary.to_string(),
            data: data.clone(),
        }) {
            self.store
                .note_write_error(format_args!("cannot store event {kind}"), &e);
        }
        let fields = journal_fields(&data);
        let _ = self.events.send(Event::Alert(Alert {
            severity,
            kind: kind.to_string(),
            host,
            service: service.to_string(),
            summary: summary.to_string(),
            body: body.to_string(),
            usec: now_usec(),
            fields,
        }));
    }

    async fn compose(&self) -> Result<Compose, Failure> {
        let mut slot = self.compose.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let choice = match self.config().compose_command {
            config::ComposeCommand::Auto => ComposeChoice::Auto,
            config::ComposeCommand::V2 => ComposeChoice::V2,
            config::ComposeCommand::V1 => ComposeChoice::V1,
        };
        let compose = Compose::detect(choice)
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        info!("using {}", compose.describe());
        *slot = Some(compose.clone());
        Ok(compose)
    }

    async fn preflight(
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

    async fn run_task(
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
                task.origin.as_str(),
                "boot" | "start" | "interrupted" | "engine"
            )
            && !self.board.waiting(&task.service);
        // The supervisor's restart of containers that exist as the file
        // says is checked only if it has to go through Compose: the start
        // through the API proves what preflight would, and a recovery of an
        // unchanged project runs no Compose at all.
        let check_later = checked && !by_person(&task.origin);
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
                result: "canceled",
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
    async fn checked(&self, cfg: &Config, service: &str, log: &Log) -> Result<(), Failure> {
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

    /// The fast path (`fastpath.rs`) for the tasks that may take it: a
    /// restart (stop and start through the API), and the deploys of
    /// recovery, boot, start-up and engine reconciles, which bring back
    /// what ran before. None: this task goes through Compose, unasked.
    #[allow(clippy::too_many_arguments)]
    async fn try_fast(
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
    async fn compose_steps(
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
                        result: "canceled",
                        message: "cancelled by request".into(),
                    },
                    ComposeError::TimedOut(t) => Failure {
                        result: "timeout",
                        message: format!("{} did not finish within {t:?}", args.join(" ")),
                    },
                    other => Failure::failed(format!("{}: {other}", args.join(" "))),
                });
            }
        }
        self.board.note_compose(service, None);
        Ok(())
    }

    fn facts(&self) -> Vec<Facts> {
        let cfg = self.config();
        let deployed = self.store.deployed().unwrap_or_default();
        let all_said = self.store.all_desired().unwrap_or_default();
        let mut local = Shared::local_services(&cfg, &all_said);
        // An external service is never planned: nothing starts or stops it.
        local.retain(|s| !s.is_external());
        let mut names: BTreeSet<String> = local.iter().map(|s| s.name.clone()).collect();
        names.extend(deployed.iter().cloned());
        // A service on an external network another one's Compose file
        // creates comes up after it, `depends_on` or not.
        let by_network = crate::deps::network_dependencies(&compose_networks(&local));
        names
            .into_iter()
            .map(|name| {
                let svc = local.iter().copied().find(|s| s.name == name);
                let said = all_said.get(&name).filter(|d| d.is_decision());
                Facts {
                    configured: svc.is_some(),
                    desired: reconcile::effective_desired(
                        svc.is_some_and(|s| s.auto_start),
                        said.map(|d| d.state),
                    ),
                    user_said: said.is_some(),
                    observed: world::classify(&self.containers_of(&name)),
                    deployed_by_us: deployed.contains(&name),
                    busy: self.queue().busy(&name),
                    depends_on: {
                        let mut d = svc.map(|s| s.depends_on.clone()).unwrap_or_default();
                        for n in by_network.get(&name).into_iter().flatten() {
                            if !d.contains(n) {
                                d.push(n.clone());
                            }
                        }
                        d
                    },
                    start_order: svc.map(|s| s.start_order).unwrap_or(0),
                    name,
                }
            })
            .collect()
    }

    /// Why `plan`'s stops of services no longer assigned to this host are
    /// too many to make without a person's `--force`: every one of the
    /// host's services, or more than the config's `reload_guard` of them.
    /// The host's services are those configured here and those still
    /// running that stackd deployed.
    fn removal_guard(&self, plan: &reconcile::Plan) -> Option<String> {
        let removed: Vec<String> = plan
            .stops
            .iter()
            .filter(|a| a.reason() == reconcile::NO_LONGER_ASSIGNED)
            .map(|a| a.service().to_string())
            .collect();
        if removed.is_empty() {
            return None;
        }
        let cfg = self.config();
        let before = cfg.local_services().count() + removed.len();
        config::guard_message(before, &removed, cfg.reload_guard)
    }

    /// Plan and carry out: stops at once, then deploys wave by wave.
    async fn reconcile(
        &self,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        // The plan needs a complete view of Docker, when it has a Compose
        // project to plan (a config of unit services alone, as a
        // `stackd --user` without access to Docker has, does not wait).
        let mut waited = false;
        while self.uses_docker() && !self.world.docker_connected() {
            if !waited {
                log.line("waiting for Docker to answer");
                systemd::status("waiting for Docker");
                waited = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = cancel.cancelled() => return Err(Failure { result: "canceled", message: "cancelled while waiting for Docker".into() }),
            }
        }
        // And a view of systemd's units: one not heard of yet reads as
        // absent.
        let units: Vec<String> = self
            .config()
            .local_services()
            .filter(|s| crate::units::UnitSpec::of(s).is_some())
            .map(|s| s.name.clone())
            .collect();
        if !units.is_empty() {
            let unheard = tokio::select! {
                u = self.units.wait_known(&units, units::CONNECT_WAIT) => u,
                _ = cancel.cancelled() => return Err(Failure { result: "canceled", message: "cancelled while waiting for systemd".into() }),
            };
            if !unheard.is_empty() {
                log.line(&format!(
                    "systemd has said nothing yet about {}; planning without it",
                    unheard.join(", ")
                ));
            }
        }
        let boot = task.origin == "boot";
        if task.origin == "engine" {
            systemd::status("the Docker engine came back: reconciling");
        }
        let mut plan = reconcile::plan(&self.facts());
        self.limit_plan(task, &mut plan);
        // The start-up and engine-restart reconciles asked nobody: a
        // cluster file truncated while stackd was down must not stop this
        // host's services. A
        // person's apply was checked (or forced) when it was asked for.
        if matches!(task.origin.as_str(), "boot" | "start" | "engine") {
            if let Some(why) = self.removal_guard(&plan) {
                log.line(&format!(
                    "not stopping services no longer assigned to this host: {why}; \
                     `stackctl apply --force` stops them"
                ));
                self.alert(
                    Severity::Critical,
                    "reload-failed",
                    "",
                    "services no longer assigned to this host were left running",
                    &why,
                    serde_json::Value::Null,
                );
                plan.stops
                    .retain(|a| a.reason() != reconcile::NO_LONGER_ASSIGNED);
            }
        }
        for (name, why) in &plan.left {
            log.line(&format!("{name}: left alone ({why})"));
        }
        let total = plan.stops.len() + plan.deploys().count();
        if total > 0 {
            systemd::status(&format!("reconciling {total} services"));
        }
        let mut recovered = Vec::new();
        let mut failed = Vec::new();
        let mut pending = self.submit_wave(&plan.stops, task, log, &mut failed);
        for wave in &plan.waves {
            // Waves run one after another, so dependencies are up first.
            for (name, kind, id) in pending.drain(..) {
                self.settle(&name, kind, id, log, &mut recovered, &mut failed)
                    .await;
            }
            if cancel.is_cancelled() {
                return Err(Failure {
                    result: "canceled",
                    message: "cancelled between waves".into(),
                });
            }
            pending = self.submit_wave(wave, task, log, &mut failed);
        }
        for (name, kind, id) in pending {
            self.settle(&name, kind, id, log, &mut recovered, &mut failed)
                .await;
        }
        let stopped: Vec<String> = plan
            .left
            .iter()
            .filter(|(_, why)| why == "stopped by a user")
            .map(|(n, _)| n.clone())
            .collect();
        // Who stopped each: "set by user", "stopped outside stackd (docker stop)".
        let stopped_by: Vec<String> = stopped
            .iter()
            .map(|n| {
                let who = self
                    .store
                    .desired(n)
                    .ok()
                    .flatten()
                    .map(|d| d.describe_source())
                    .unwrap_or_else(|| "user".into());
                if who.starts_with("stopped outside") {
                    format!("{n} ({who})")
                } else {
                    format!("{n} (set by {who})")
                }
            })
            .collect();
        let engine = task.origin == "engine";
        let mut summary = recovery_summary(&recovered, &failed, &stopped);
        if engine {
            summary = format!("after the Docker engine came back: {summary}");
        }
        log.line(&summary);
        if boot || engine || total > 0 {
            // After a reboot or an engine restart, anything that had to be
            // brought back is worth a person's attention (the default
            // min_severity = "warning" mails it); a routine apply is not.
            let brought_back = (boot || engine) && !recovered.is_empty();
            let severity = if failed.is_empty() && !brought_back {
                Severity::Info
            } else {
                Severity::Warning
            };
            let kind = if boot || engine {
                "recovered"
            } else {
                "reconciled"
            };
            let failed_names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
            let mut body = Vec::new();
            if !recovered.is_empty() {
                body.push(format!("Came back: {}", recovered.join(", ")));
            }
            for (n, why) in &failed {
                body.push(format!("Failed: {n}: {why}"));
            }
            if !stopped_by.is_empty() {
                body.push(format!("Left stopped: {}", stopped_by.join(", ")));
            }
            self.alert(
                severity,
                kind,
                "",
                &summary,
                &body.join("\n"),
                serde_json::json!({
                    "boot": boot,
                    "engine": engine,
                    "recovered": recovered,
                    "failed": failed_names,
                    "failed_why": failed.iter().map(|(n, why)| format!("{n}: {why}")).collect::<Vec<_>>(),
                    "left_stopped": stopped,
                    "left_stopped_by": stopped_by,
                }),
            );
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Failure {
                result: "dependency",
                message: format!("{} of {total} tasks failed", failed.len()),
            })
        }
    }

    fn submit_wave(
        &self,
        actions: &[Action],
        task: &TaskRecord,
        log: &Log,
        failed: &mut Vec<(String, String)>,
    ) -> Vec<(String, TaskKind, u64)> {
        let mut ids = Vec::new();
        for a in actions {
            let kind = match a {
                Action::Deploy { .. } => TaskKind::Deploy,
                Action::Stop { .. } => TaskKind::Stop,
            };
            log.line(&format!(
                "{}: {} ({})",
                a.service(),
                kind.as_str(),
                a.reason()
            ));
            match self.queue().submit(kind, a.service(), &task.origin) {
                Ok(t) => ids.push((a.service().to_string(), kind, t.id)),
                Err(e) => failed.push((a.service().to_string(), e.to_string())),
            }
        }
        ids
    }

    async fn settle(
        &self,
        name: &str,
        kind: TaskKind,
        id: u64,
        log: &Log,
        recovered: &mut Vec<String>,
        failed: &mut Vec<(String, String)>,
    ) {
        match self.queue().wait(id).await {
            Ok(t) if t.state == crate::store::TaskState::Succeeded => {
                log.line(&format!("{name}: {} done (task {id})", kind.as_str()));
                if kind == TaskKind::Deploy {
                    recovered.push(name.to_string());
                }
            }
            Ok(t) => {
                let why = t.error.unwrap_or(t.result);
                log.line(&format!(
                    "{name}: {} failed (task {id}): {why}",
                    kind.as_str()
                ));
                failed.push((name.to_string(), why));
            }
            Err(e) => failed.push((name.to_string(), e.to_string())),
        }
    }
}

/// Deploys that bring back what ran before and may start existing
/// containers through the Docker API: the supervisor's, and those of the
/// boot, start-up, interrupted-task and engine-restart reconciles. A
/// person's start goes through Compose as it always did.
fn fast_origin(origin: &str) -> bool {
    matches!(
        origin,
        "recovery" | "boot" | "start" | "interrupted" | "engine"
    )
}

/// Below this much free space (Docker's data root, the service's folder) a
/// deploy is refused by preflight.
const PREFLIGHT_MIN_FREE: u64 = 256 << 20;

/// The project folder and compose file of `service`. A service this host
/// did not run when the config was loaded (one moved here since) has its
/// file looked for now; one removed from the config (stackd deployed it and
/// now stops it) is looked for where the config would have put it.
fn project_paths(cfg: &Config, service: &str) -> Result<(PathBuf, PathBuf), Failure> {
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
fn compose_networks(services: &[&ServiceConfig]) -> Vec<(String, crate::deps::ComposeNetworks)> {
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

fn recovery_summary(
    recovered: &[String],
    failed: &[(String, String)],
    stopped: &[String],
) -> String {
    let mut parts = Vec::new();
    if recovered.is_empty() && failed.is_empty() {
        parts.push("nothing needed starting".to_string());
    }
    if !recovered.is_empty() {
        parts.push(format!("started {}", recovered.join(", ")));
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        parts.push(format!("failed {}", names.join(", ")));
    }
    if !stopped.is_empty() {
        parts.push(format!("left stopped {}", stopped.join(", ")));
    }
    parts.join("; ")
}

/// Health as far as containers and Docker's healthchecks tell.
fn health_of(
    containers: &[ContainerInfo],
    observed: Observed,
    desired: DesiredState,
) -> (&'static str, String) {
    let live: Vec<&ContainerInfo> = containers.iter().filter(|c| !c.oneoff).collect();
    if let Some(c) = live
        .iter()
        .find(|c| c.health.as_deref() == Some("unhealthy"))
    {
        return (
            "unhealthy",
            format!("{} fails its Docker healthcheck", c.name),
        );
    }
    let bad = live
        .iter()
        .find(|c| world::any_failed(std::slice::from_ref(**c)));
    match observed {
        Observed::Absent | Observed::Stopped if desired == DesiredState::Running => match bad {
            Some(c) if c.oom_killed => (
                "unhealthy",
                format!("{} was killed for lack of memory", c.name),
            ),
            Some(c) => (
                "unhealthy",
                format!("{} exited with code {}", c.name, c.exit_code.unwrap_or(-1)),
            ),
            None => ("unknown", "not running".to_string()),
        },
        Observed::Absent | Observed::Stopped => ("unknown", "stopped".to_string()),
        Observed::Partial => {
            let down: Vec<&str> = live
                .iter()
                .filter(|c| {
                    !world::is_complete(c) && c.state != crate::engine::ContainerState::Running
                })
                .map(|c| c.name.as_str())
                .collect();
            ("degraded", format!("not running: {}", down.join(", ")))
        }
        Observed::Running => {
            if let Some(c) = live
                .iter()
                .find(|c| c.health.as_deref() == Some("starting"))
            {
                (
                    "starting",
                    format!("{} is starting (Docker healthcheck)", c.name),
                )
            } else {
                ("healthy", String::new())
            }
        }
    }
}

/// The journal fields (`STACKD_TASK`, `STACKD_RECOVERED`, ...) of an
/// alert, from the structured data stored with its event: lists joined by
/// ", " ("none" when empty), numbers and booleans as text.
fn journal_fields(data: &serde_json::Value) -> Vec<(String, String)> {
    let Some(map) = data.as_object() else {
        return Vec::new();
    };
    // The journal wants the reasons and the who, where the data has them.
    fn source(k: &'static str) -> &'static str {
        match k {
            "failed" => "failed_why",
            "left_stopped" => "left_stopped_by",
            other => other,
        }
    }
    ["task", "recovered", "failed", "left_stopped", "boot"]
        .iter()
        .filter_map(|k| {
            let v = map.get(source(k)).or_else(|| map.get(*k))?;
            let text = match v {
                serde_json::Value::Array(items) if items.is_empty() => "none".to_string(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((k.to_string(), text))
        })
        .collect()
}

/// A person asked for the task (D-Bus, the private socket, a peer), not
/// stackd itself (boot, start, engine, recovery).
pub fn by_person(origin: &str) -> bool {
    origin.starts_with("dbus:") || origin == "private" || origin.starts_with("peer")
}

/// The task runner the queue uses: Compose for service tasks, the planner
/// for reconcile tasks.
struct ComposeRunner {
    shared: Arc<Shared>,
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
                let retried = !by_person(&task.origin)
                    && shared
                        .board
                        .failure_facts(&task.service)
                        .is_some_and(|f| f.environmental());
                if f.result != "canceled" && task.kind != TaskKind::Reconcile.as_str() && !retried {
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
    /// started as they are takes no slot (see `fastpath.rs`); the check
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
