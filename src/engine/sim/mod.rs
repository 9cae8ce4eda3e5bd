//! The simulator: an in-process container engine and Compose, for
//! `stackd --sim` and fast tests. No Docker, no child processes.
//!
//! It models Compose projects read from their files (`model.rs`: services,
//! image, `depends_on`, healthcheck, replicas, restart policy), containers
//! with ids, names and labels as Compose v2 makes them
//! (`PROJECT-SERVICE-N`, `com.docker.compose.project/service/
//! container-number/config-hash`), states, exit codes, start and finish
//! times, Docker's event stream (create, start, kill, die, stop, oom,
//! `health_status: ...`, destroy) in Docker's order, and the Compose
//! commands stackd runs (`compose.rs`: `up -d`, `stop`, `start`, `down`,
//! `restart`, `pull`, `kill`, `config` and its `-q`, `--hash`, `--images`).
//!
//! Failures are injected through a line protocol (`control.rs`) on a Unix
//! socket that `stackd --sim` serves next to its state: a container that
//! dies now or N ms after each start, an OOM kill, a failing healthcheck, a
//! person's `docker stop`, a Compose command that fails with a given line,
//! slow calls, and an engine that stops answering and comes back.
//!
//! Like Docker, the engine outlives the daemon (`saved.rs`): a restarted
//! `stackd --sim` finds its containers as they were; a new boot id finds
//! them stopped. Injected faults and `slow` belong to the process and are
//! not kept.
//!
//! Not modelled: resource figures (a simulated container has no process
//! or cgroup, so `stackctl top` shows none), volumes (a project mounts
//! nothing; a hand-off carries no data), logs beyond the simulator's own
//! lines, builds, and what an image contains.

mod api;
mod compose;
mod control;
mod model;
mod ports;
mod saved;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::broadcast;

use super::{
    Compose, ComposeFlavor, ContainerInfo, ContainerState, Docker, EngineError, EngineEvent,
    NetworkRecord,
};
pub use control::serve_control;

/// What `stackd --sim` does once it knows its state directory and boot id:
/// the engine's state kept in `sim-state.json` there (the engine outlives
/// the daemon, as Docker does; a new boot id is a reboot), and the control
/// socket served at [`control_path`].
pub fn attach(
    sim: Arc<Sim>,
    state_dir: &std::path::Path,
    boot_id: &str,
) -> std::io::Result<std::path::PathBuf> {
    sim.persist(&state_dir.join("sim-state.json"), boot_id)?;
    serve_control(sim, &control_path(state_dir))
}
use model::{hex, ServiceModel};
use ports::publish;

/// The address a simulated engine reports.
pub const ADDRESS: &str = "sim://stackd";
/// How long after a crash a container with a restart policy is started
/// again by the (simulated) engine.
const POLICY_RESTART_DELAY: Duration = Duration::from_millis(100);

/// Where `stackd --sim` serves the control socket: `$STACKD_SIM_CONTROL`,
/// else `sim.sock` in the state directory.
pub fn control_path(state_dir: &std::path::Path) -> std::path::PathBuf {
    match std::env::var_os("STACKD_SIM_CONTROL") {
        Some(p) if !p.is_empty() => p.into(),
        _ => state_dir.join("sim.sock"),
    }
}

/// How a container ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// `docker stop` (a person's, or Compose's): kill (SIGTERM), die with
    /// 143 (the main process ends on the SIGTERM), stop. The engine does
    /// not restart it.
    Stop,
    /// `docker kill`: kill (SIGKILL), die with 137. Not restarted either.
    Kill,
    /// The main process exited (or was killed from the host) with this code.
    Crash(i64),
    /// The kernel's OOM killer: oom, die with 137.
    Oom,
}

/// A failure the simulator injects at each start of the containers it
/// matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault {
    pub target: Target,
    pub kind: FaultKind,
    pub after: Duration,
    /// Starts left to fail; None for every start.
    pub left: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultKind {
    Exit(i64),
    Oom,
    Unhealthy,
}

/// Which containers a command or fault is about: a project (or one
/// container by name or id), or one service of a project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Project(String),
    Service(String, String),
}

impl Target {
    pub(crate) fn parse(s: &str) -> Target {
        match s.split_once('/') {
            Some((p, svc)) => Target::Service(p.to_string(), svc.to_string()),
            None => Target::Project(s.to_string()),
        }
    }

    fn matches(&self, c: &ContainerInfo) -> bool {
        match self {
            Target::Project(p) => &c.project == p || c.name == *p || c.id.starts_with(p.as_str()),
            Target::Service(p, s) => &c.project == p && &c.service == s,
        }
    }
}

#[derive(Clone)]
enum Msg {
    Event(EngineEvent),
    /// The engine stopped answering: every event stream ends.
    Down,
}

struct Ctr {
    info: ContainerInfo,
    healthy_after: Option<Duration>,
    /// Published TCP ports: (host, container).
    ports: Vec<(u16, u16)>,
    /// While it runs, what answers on its host ports.
    listeners: Vec<tokio::task::JoinHandle<()>>,
    /// Bumped at each start: a timer set for an earlier run does nothing.
    epoch: u64,
    /// Stopped or killed through the API: no restart policy applies.
    manual_stop: bool,
    logs: Vec<String>,
}

#[derive(Default)]
struct State {
    containers: BTreeMap<String, Ctr>,
    /// Local images: reference → id (others are local at the registry's
    /// id unless removed).
    images: BTreeMap<String, String>,
    /// References whose image was removed.
    removed: std::collections::BTreeSet<String>,
    /// What a pull gets: reference → id (else an id made from the name).
    registry: BTreeMap<String, String>,
    networks: BTreeMap<String, NetworkRecord>,
    next: u64,
    down: bool,
    slow: Duration,
    faults: Vec<Fault>,
    /// Project → the line its Compose commands fail with.
    compose_fail: BTreeMap<String, String>,
}

/// The simulated engine. Cheap to share; every handle is the same engine.
pub struct Sim {
    me: Weak<Sim>,
    state: Mutex<State>,
    bus: broadcast::Sender<Msg>,
    /// Changed since it was last saved (see `saved.rs`).
    dirty: std::sync::atomic::AtomicBool,
}

fn id_of(seed: &str) -> String {
    hex(&Sha256::digest(seed.as_bytes()))
}

fn unavailable() -> EngineError {
    EngineError::Unavailable {
        address: ADDRESS.to_string(),
        reason: "the simulated engine is not answering (sim: engine down)".to_string(),
        source: None,
    }
}

fn not_found(call: &'static str, what: &str) -> EngineError {
    EngineError::NotFound {
        call,
        what: what.to_string(),
    }
}

impl Sim {
    pub fn new() -> Arc<Sim> {
        Arc::new_cyclic(|me| Sim {
            me: me.clone(),
            state: Mutex::new(State::default()),
            bus: broadcast::channel(4096).0,
            dirty: Default::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn arc(&self) -> Arc<Sim> {
        self.me.upgrade().expect("a Sim is always in its Arc")
    }

    /// A handle on this engine, as [`Docker::connect`] gives Docker's: refused
    /// while the engine is down.
    pub async fn connect(&self) -> Result<Docker, EngineError> {
        self.gate().await?;
        Ok(Docker::over(self.arc()))
    }

    /// This engine's Compose (v2 flavour).
    pub fn compose(&self) -> Compose {
        Compose::over(
            self.arc(),
            &["stackd-sim", "compose"],
            ComposeFlavor::V2,
            "2.29.1-sim",
        )
    }

    /// Every call waits the injected delay, then fails if the engine is down.
    async fn gate(&self) -> Result<(), EngineError> {
        let slow = self.lock().slow;
        if !slow.is_zero() {
            tokio::time::sleep(slow).await;
        }
        if self.lock().down {
            return Err(unavailable());
        }
        Ok(())
    }

    /// Runs `f` on the engine after `delay` (if it still exists).
    fn after(&self, delay: Duration, f: impl FnOnce(&Sim, &mut State) + Send + 'static) {
        let me = self.me.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if let Some(sim) = me.upgrade() {
                let mut st = sim.lock();
                f(&sim, &mut st);
            }
        });
    }

    fn emit(&self, c: &ContainerInfo, action: &str, detail: Option<&str>, exit: Option<i64>) {
        let ev = EngineEvent {
            project: c.project.clone(),
            service: c.service.clone(),
            container_id: c.id.clone(),
            container_name: c.name.clone(),
            action: action.to_string(),
            detail: detail.map(str::to_string),
            exit_code: exit,
            time_usec: crate::time::now_usec(),
        };
        self.touch();
        let _ = self.bus.send(Msg::Event(ev));
    }

    /// The local image `reference` (name or id) names. Every image is
    /// local until it is removed: the simulated host has pulled them all.
    /// Marks the engine changed, to be saved.
    fn touch(&self) {
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn image_id_for(st: &State, reference: &str) -> Option<String> {
        if let Some(id) = st.images.get(reference) {
            return Some(id.clone());
        }
        if let Some(id) = st.images.values().find(|id| id.as_str() == reference) {
            return Some(id.clone());
        }
        let unknown = reference.starts_with("sha256:") || st.removed.contains(reference);
        (!unknown).then(|| Sim::registry_id(st, reference))
    }

    /// The id a pull of `reference` gets.
    fn registry_id(st: &State, reference: &str) -> String {
        st.registry
            .get(reference)
            .cloned()
            .unwrap_or_else(|| format!("sha256:{}", id_of(reference)))
    }

    fn find<'a>(st: &'a State, id: &str) -> Option<&'a Ctr> {
        st.containers.get(id).or_else(|| {
            st.containers
                .values()
                .find(|c| c.info.name == id || (id.len() >= 12 && c.info.id.starts_with(id)))
        })
    }

    fn key(st: &State, id: &str) -> Option<String> {
        Sim::find(st, id).map(|c| c.info.id.clone())
    }

    /// Creates a container of `svc` (number `n`) in `project`.
    fn create(&self, st: &mut State, project: &str, svc: &ServiceModel, n: u32) -> String {
        st.next += 1;
        let name = format!("{project}-{}-{n}", svc.name);
        let id = id_of(&format!("{name}/{}", st.next));
        let info = ContainerInfo {
            id: id.clone(),
            name: name.clone(),
            project: project.to_string(),
            service: svc.name.clone(),
            number: Some(n),
            oneoff: false,
            image: svc.image.clone(),
            image_id: Sim::image_id_for(st, &svc.image).unwrap_or_default(),
            config_hash: Some(svc.config_hash.clone()),
            state: ContainerState::Created,
            status: "Created".to_string(),
            exit_code: Some(0),
            oom_killed: false,
            restart_count: 0,
            restart_policy: svc.restart.clone(),
            memory_limit: svc.memory_limit,
            health: None,
            started_at_usec: None,
            finished_at_usec: None,
            pid: None,
            error: None,
        };
        self.emit(&info, "create", None, None);
        st.containers.insert(
            id.clone(),
            Ctr {
                info,
                healthy_after: svc.healthy_after,
                ports: svc.ports.clone(),
                listeners: Vec::new(),
                epoch: 0,
                manual_stop: false,
                logs: Vec::new(),
            },
        );
        id
    }

    /// Starts container `id`; one that runs already is left alone.
    fn start_ctr(&self, st: &mut State, id: &str) -> Result<(), EngineError> {
        let faults = st.faults.clone();
        let c = st
            .containers
            .get_mut(id)
            .ok_or_else(|| not_found("start container", id))?;
        if c.info.state == ContainerState::Running {
            return Ok(());
        }
        c.listeners = publish(&c.info.name, &c.ports)?;
        c.epoch += 1;
        c.manual_stop = false;
        let now = crate::time::now_usec();
        c.info.state = ContainerState::Running;
        c.info.status = "Up Less than a second".to_string();
        c.info.exit_code = None;
        c.info.oom_killed = false;
        c.info.error = None;
        c.info.started_at_usec = Some(now);
        c.info.health = c.healthy_after.map(|_| "starting".to_string());
        c.logs.push(format!("sim: {} started", c.info.name));
        let (epoch, info, healthy_after) = (c.epoch, c.info.clone(), c.healthy_after);
        self.emit(&info, "start", None, None);
        if let Some(after) = healthy_after {
            self.schedule_healthy(id, epoch, after);
        }
        for (i, f) in faults.iter().enumerate() {
            if !f.target.matches(&info) || f.left == Some(0) {
                continue;
            }
            if let Some(left) = st.faults[i].left.as_mut() {
                *left -= 1;
            }
            let (id, kind) = (id.to_string(), f.kind);
            self.after(f.after, move |sim, st| {
                let live = st
                    .containers
                    .get(&id)
                    .is_some_and(|c| c.epoch == epoch && c.info.state == ContainerState::Running);
                if !live {
                    return;
                }
                match kind {
                    FaultKind::Exit(code) => sim.end(st, &id, End::Crash(code)),
                    FaultKind::Oom => sim.end(st, &id, End::Oom),
                    FaultKind::Unhealthy => sim.set_health(st, &id, "unhealthy"),
                }
            });
        }
        Ok(())
    }

    /// The healthcheck says "healthy" `after` a start (of run `epoch`).
    fn schedule_healthy(&self, id: &str, epoch: u64, after: Duration) {
        let id = id.to_string();
        self.after(after, move |sim, st| {
            if let Some(c) = st.containers.get_mut(&id) {
                if c.epoch == epoch
                    && c.info.state == ContainerState::Running
                    && c.info.health.as_deref() == Some("starting")
                {
                    c.info.health = Some("healthy".to_string());
                    sim.emit(&c.info, "health_status", Some("healthy"), None);
                }
            }
        });
    }

    fn set_health(&self, st: &mut State, id: &str, health: &str) {
        if let Some(c) = st.containers.get_mut(id) {
            if c.info.state == ContainerState::Running && c.info.health.as_deref() != Some(health) {
                c.info.health = Some(health.to_string());
                self.emit(&c.info, "health_status", Some(health), None);
            }
        }
    }

    /// Ends a running container `how`, with Docker's events in Docker's
    /// order, and applies its restart policy.
    fn end(&self, st: &mut State, id: &str, how: End) {
        let Some(c) = st.containers.get_mut(id) else {
            return;
        };
        if c.info.state != ContainerState::Running {
            return;
        }
        let code = match how {
            End::Stop => 143,
            End::Kill | End::Oom => 137,
            End::Crash(code) => code,
        };
        match how {
            End::Stop => self.emit(&c.info, "kill", Some("15"), None),
            End::Kill => self.emit(&c.info, "kill", Some("9"), None),
            End::Oom => self.emit(&c.info, "oom", None, None),
            End::Crash(_) => {}
        }
        for l in c.listeners.drain(..) {
            l.abort();
        }
        c.info.state = ContainerState::Exited;
        c.info.status = format!("Exited ({code}) Less than a second ago");
        c.info.exit_code = Some(code);
        c.info.oom_killed = how == End::Oom;
        c.info.finished_at_usec = Some(crate::time::now_usec());
        c.info.health = None;
        c.manual_stop = matches!(how, End::Stop | End::Kill);
        c.logs
            .push(format!("sim: {} exited with {code}", c.info.name));
        self.emit(&c.info, "die", None, Some(code));
        if how == End::Stop {
            self.emit(&c.info, "stop", None, None);
        }
        let restarts = match c.info.restart_policy.as_str() {
            "always" | "unless-stopped" => !c.manual_stop,
            p if p.starts_with("on-failure") => !c.manual_stop && code != 0,
            _ => false,
        };
        if restarts {
            let (id, epoch) = (id.to_string(), c.epoch);
            self.after(POLICY_RESTART_DELAY, move |sim, st| {
                let Some(c) = st.containers.get_mut(&id) else {
                    return;
                };
                if c.epoch != epoch || c.manual_stop || c.info.state == ContainerState::Running {
                    return;
                }
                c.info.restart_count += 1;
                let _ = sim.start_ctr(st, &id);
            });
        }
    }

    fn remove(&self, st: &mut State, id: &str) {
        if let Some(c) = st.containers.remove(id) {
            for l in &c.listeners {
                l.abort();
            }
            self.emit(&c.info, "destroy", None, None);
        }
    }

    /// The ids of the containers `target` names, sorted by name.
    fn matching(st: &State, target: &Target) -> Vec<String> {
        let mut v: Vec<&Ctr> = st
            .containers
            .values()
            .filter(|c| target.matches(&c.info))
            .collect();
        v.sort_by(|a, b| a.info.name.cmp(&b.info.name));
        v.into_iter().map(|c| c.info.id.clone()).collect()
    }

    /// Stops answering (every event stream ends with an error, every call
    /// fails as unreachable) or answers again. Containers keep running.
    pub fn set_down(&self, down: bool) {
        self.lock().down = down;
        if down {
            let _ = self.bus.send(Msg::Down);
        }
    }

    fn snapshot(st: &State, project: Option<&str>) -> Vec<ContainerInfo> {
        let mut out: Vec<ContainerInfo> = st
            .containers
            .values()
            .filter(|c| project.map_or(true, |p| c.info.project == p))
            .map(|c| c.info.clone())
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}
