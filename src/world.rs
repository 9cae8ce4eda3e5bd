//! The in-memory view of every Compose project on the host, fed by the
//! observer from Docker's event stream with a full resync after every
//! (re)connect.
//!
//! Architecture invariant: the world is only *observed* here. Nothing in this
//! file changes a container; that is the task queue's job.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures_util::StreamExt;
use tracing::{debug, warn};

use crate::engine::{ContainerInfo, ContainerState, Docker};
use crate::events::{Event, EventSender};
use crate::store::now_usec;

/// What Docker shows of a project, reduced to what the planner needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observed {
    /// No containers at all.
    Absent,
    /// Containers exist, none of the long-running ones is running.
    Stopped,
    /// Some long-running containers run, some do not.
    Partial,
    /// Every long-running container runs (completed one-shot jobs aside).
    Running,
}

impl Observed {
    pub fn as_str(self) -> &'static str {
        match self {
            Observed::Absent => "absent",
            Observed::Stopped => "stopped",
            Observed::Partial => "partial",
            Observed::Running => "running",
        }
    }
}

/// A one-shot container (an init or migration job) that exited 0 and that
/// its restart policy will not bring back is complete, not stopped.
pub fn is_complete(c: &ContainerInfo) -> bool {
    c.state == ContainerState::Exited
        && c.exit_code == Some(0)
        && matches!(c.restart_policy.as_str(), "" | "no" | "on-failure")
}

/// Classify a project's containers. `compose run` containers are ignored.
pub fn classify(containers: &[ContainerInfo]) -> Observed {
    let project: Vec<&ContainerInfo> = containers.iter().filter(|c| !c.oneoff).collect();
    if project.is_empty() {
        return Observed::Absent;
    }
    let long_running: Vec<&&ContainerInfo> = project.iter().filter(|c| !is_complete(c)).collect();
    if long_running.is_empty() {
        return Observed::Running;
    }
    let running = long_running
        .iter()
        .filter(|c| c.state == ContainerState::Running)
        .count();
    if running == long_running.len() {
        Observed::Running
    } else if running > 0 {
        Observed::Partial
    } else {
        Observed::Stopped
    }
}

/// True when a long-running container ended badly (non-zero exit, dead, OOM).
pub fn any_failed(containers: &[ContainerInfo]) -> bool {
    containers.iter().filter(|c| !c.oneoff).any(|c| {
        c.oom_killed
            || c.state == ContainerState::Dead
            || (c.state == ContainerState::Exited && c.exit_code.unwrap_or(0) != 0)
    })
}

#[derive(Clone, Debug, Default)]
struct Project {
    containers: Vec<ContainerInfo>,
    /// When the classification last changed (microseconds since the epoch).
    changed_usec: u64,
}

#[derive(Default)]
struct State {
    docker: Option<Docker>,
    docker_error: String,
    projects: HashMap<String, Project>,
}

/// Shared, cheap to read. Writers are the observer and the task runner
/// (which refreshes a project right after a Compose command).
#[derive(Default)]
pub struct World {
    state: RwLock<State>,
}

impl World {
    pub fn new() -> Arc<World> {
        Arc::new(World::default())
    }

    /// The connected Docker client, if Docker answers.
    pub fn docker(&self) -> Option<Docker> {
        self.read().docker.clone()
    }

    pub fn docker_connected(&self) -> bool {
        self.read().docker.is_some()
    }

    /// Why Docker is not connected (empty when it is).
    pub fn docker_error(&self) -> String {
        self.read().docker_error.clone()
    }

    pub fn containers(&self, project: &str) -> Vec<ContainerInfo> {
        self.read()
            .projects
            .get(project)
            .map(|p| p.containers.clone())
            .unwrap_or_default()
    }

    pub fn changed_usec(&self, project: &str) -> u64 {
        self.read()
            .projects
            .get(project)
            .map(|p| p.changed_usec)
            .unwrap_or(0)
    }

    /// Every project Docker shows, managed or not.
    pub fn project_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.read().projects.keys().cloned().collect();
        names.sort();
        names
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn set_docker(&self, docker: Option<Docker>, error: String) -> bool {
        let mut st = self.write();
        let changed = st.docker.is_some() != docker.is_some();
        st.docker = docker;
        st.docker_error = error;
        changed
    }

    /// Replace one project's containers. Returns true when anything a user
    /// could see changed.
    pub fn set_project(&self, project: &str, containers: Vec<ContainerInfo>) -> bool {
        let mut st = self.write();
        let entry = st.projects.entry(project.to_string()).or_default();
        if entry.containers == containers {
            return false;
        }
        if classify(&entry.containers) != classify(&containers) || entry.changed_usec == 0 {
            entry.changed_usec = now_usec();
        }
        entry.containers = containers;
        true
    }

    /// Replace everything after a resync; returns the projects that changed.
    fn replace_all(&self, all: BTreeMap<String, Vec<ContainerInfo>>) -> Vec<String> {
        let known: Vec<String> = self.project_names();
        let mut changed = Vec::new();
        for name in known {
            if !all.contains_key(&name) && self.set_project(&name, Vec::new()) {
                changed.push(name);
            }
        }
        for (name, containers) in all {
            if self.set_project(&name, containers) {
                changed.push(name);
            }
        }
        changed
    }

    /// Re-read one project from Docker (after a task or an event).
    pub async fn refresh(&self, project: &str, events: &EventSender) {
        let Some(docker) = self.docker() else { return };
        match docker.list_containers(Some(project)).await {
            Ok(containers) => {
                debug!(
                    stackd_service = project,
                    "observed {}",
                    classify(&containers).as_str()
                );
                if self.set_project(project, containers) {
                    let _ = events.send(Event::ServiceChanged {
                        service: project.to_string(),
                    });
                }
            }
            Err(e) => warn!(service = project, "cannot list containers: {e}"),
        }
    }
}

/// How often the observer re-reads everything even when events flow, to
/// heal anything an event could not tell (a missed event, a clock jump).
const RESYNC_EVERY: Duration = Duration::from_secs(60);

/// How long events of a burst are collected before the projects they name
/// are read again.
const COALESCE: Duration = Duration::from_millis(50);

/// The observer: connect to Docker (retrying with backoff), resync, then
/// follow the event stream. Runs until the task is aborted.
pub async fn observe(world: Arc<World>, events: EventSender) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let docker = match Docker::connect().await {
            Ok(d) => d,
            Err(e) => {
                let msg = e.to_string();
                if world.set_docker(None, msg.clone()) {
                    let _ = events.send(Event::ManagerChanged);
                }
                warn!("Docker is unavailable: {msg}; retrying in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        // Subscribe before the resync so no change falls between the two.
        let mut stream = Box::pin(docker.events());
        match docker.list_containers(None).await {
            Ok(list) => {
                let mut all: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
                for c in list {
                    all.entry(c.project.clone()).or_default().push(c);
                }
                // The view is complete before anyone is told Docker is back,
                // so nobody plans on a half-read world.
                for service in world.replace_all(all) {
                    let _ = events.send(Event::ServiceChanged { service });
                }
                if world.set_docker(Some(docker.clone()), String::new()) {
                    debug!("connected to Docker");
                    let _ = events.send(Event::ManagerChanged);
                }
                backoff = Duration::from_millis(500);
            }
            Err(e) => {
                world.set_docker(None, e.to_string());
                let _ = events.send(Event::ManagerChanged);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        }
        // Events of one project come in bursts (create, start, health...):
        // collect them for a moment and read each project once per burst.
        let mut dirty: std::collections::BTreeSet<String> = Default::default();
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut quiet_since = tokio::time::Instant::now();
        let lost = loop {
            let wake = flush_at.unwrap_or(quiet_since + RESYNC_EVERY);
            tokio::select! {
                next = stream.next() => match next {
                    None => break Some("the event stream ended".to_string()),
                    Some(Err(e)) => break Some(e.to_string()),
                    // Healthchecks run as execs every interval; they change
                    // nothing a user sees (health_status events do).
                    Some(Ok(ev)) if ev.action.starts_with("exec_") => {}
                    Some(Ok(ev)) => {
                        dirty.insert(ev.project);
                        flush_at.get_or_insert_with(|| tokio::time::Instant::now() + COALESCE);
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    if dirty.is_empty() {
                        break None; // quiet for a while: periodic resync
                    }
                    flush_at = None;
                    for project in std::mem::take(&mut dirty) {
                        world.refresh(&project, &events).await;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
            }
        };
        if let Some(why) = lost {
            debug!("lost Docker: {why}; reconnecting");
            world.set_docker(None, why);
            let _ = events.send(Event::ManagerChanged);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }
}
