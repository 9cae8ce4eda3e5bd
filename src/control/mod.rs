//! The one core the adapters share.
//!
//! D-Bus (and later the peer endpoint) call [`Control`]; it answers from the
//! config, the store and the world, and turns requests into tasks. It knows
//! nothing of D-Bus, HTTP or terminals.
//!
//! This file is the facade (`Control`, its shared state, the requests);
//! the rest is split by what it does: `status.rs` projects what the
//! adapters show, `runner.rs` runs one service task, `apply.rs` runs the
//! planner's reconciles, `reload.rs` swaps the config, `alerts.rs` and
//! `diagnose.rs` speak to people; `order.rs`, `fastpath/`, `wait.rs`,
//! `handoff/`, `leave.rs`, `registry.rs` and `units.rs` as their heads say.

use std::sync::{Arc, Mutex, OnceLock, RwLock};

use futures_util::stream::{self, BoxStream, StreamExt};
use thiserror::Error;
use tracing::{info, warn};

use crate::config::{Config, LoadOptions};
use crate::engine::{Compose, ContainerInfo};
use crate::events::{Event, EventSender, Severity};
use crate::store::{DesiredState, Origin, Store, StoreError, TaskFilter, TaskRecord};
use crate::tasks::{Queue, QueueError, TaskKind};
use crate::world::{self, Observed, World};

mod alerts;
mod apply;
mod diagnose;
mod fastpath;
mod reload;
mod runner;
mod status;
use runner::{compose_networks, project_paths, ComposeRunner};
pub use status::{HostValue, ManagerInfo, ServiceStatus, SystemState};
mod order;
pub use order::TreeRow;
mod handoff;
mod leave;
mod registry;
mod units;
mod wait;

#[cfg(test)]
mod tests;
pub use handoff::{
    claim_wins, PeerFailure, PeerService, Peers, Prepared, RemoteTask, VolumeOffer, VolumeReceipt,
};
pub use leave::PlanStep;
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
    /// The services a reconcile (at start, an apply, the engine back) has
    /// planned (`Shared::taken_up`).
    planned: Mutex<std::collections::HashSet<String>>,
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
            planned: Mutex::default(),
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

    /// The project's containers as last observed.
    pub fn containers(&self, name: &str) -> Vec<ContainerInfo> {
        self.shared.containers_of(name)
    }

    /// The connected Docker client, if Docker answers.
    pub fn docker(&self) -> Option<crate::engine::Docker> {
        self.shared.world.docker()
    }

    /// The engine this core runs on (Docker, or a simulator).
    pub fn engine(&self) -> &crate::engine::Engine {
        self.shared.world.engine()
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

    /// Queue an operation. The desired state it implies is stored first, so
    /// it holds even if the task fails or the host reboots before it runs.
    /// Dependencies that are not running are started first; running
    /// dependents (stop) and conflicts (start) refuse it.
    pub fn submit(&self, op: Op, name: &str, origin: &Origin) -> Result<TaskRecord, ControlError> {
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
        let origin = if self.is_new_boot()? {
            Origin::Boot
        } else {
            Origin::Start
        };
        // Not forced by a person: the reconcile itself leaves too many
        // removals alone (see `reconcile`).
        let task = self.apply(&origin, true)?;
        self.shared
            .store
            .set_meta("boot_id", &self.shared.boot_id)?;
        Ok(task)
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
}
