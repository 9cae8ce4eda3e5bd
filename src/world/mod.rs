//! The in-memory view of every Compose project on the host, fed by the
//! observer from Docker's event stream with a full resync after every
//! (re)connect.
//!
//! Architecture invariant: the world is only *observed* here. Nothing in this
//! module changes a container; that is the task queue's job.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use tracing::{debug, warn};

use crate::engine::{ContainerInfo, ContainerState, Docker, Engine};
use crate::events::{Event, EventSender};
use crate::store::now_usec;

mod observer;

pub use observer::observe;

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

/// A person stopped (some of) a project's containers through the Docker
/// API: a `kill` or `stop` event came before the `die`, and no stackd task
/// was working on the project. Docker's own restart policies read the same
/// evidence as intent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutsideStop {
    pub container: String,
    /// "docker stop" (a `stop` event followed) or "docker kill".
    pub door: &'static str,
    pub at_usec: u64,
}

/// stackd's own tasks on one project: while one runs (and a moment after,
/// for events that arrive late) the kills and stops are stackd's.
#[derive(Clone, Copy, Debug, Default)]
struct Acting {
    running: u32,
    /// When the running tasks began (the first of them).
    since_usec: u64,
    last_end_usec: u64,
}

/// Events carry Docker's time (the same clock), and a task's own kills and
/// stops happen before its Compose call returns: a tail of a few
/// milliseconds covers the clock reads.
const ACTING_TAIL_USEC: u64 = 20_000;

/// How long a `kill`/`stop` event counts as the reason of a later `die`
/// (a `docker stop -t 300` waits that long before the kill).
const ASKED_FOR_USEC: u64 = 600_000_000;

/// A `kill` or `stop` event seen for a container, its `die` not yet.
#[derive(Clone, Debug)]
struct Asked {
    door: &'static str,
    at_usec: u64,
    project: String,
    container: String,
}

impl Acting {
    /// Was something Docker did at `at_usec` stackd's own doing?
    fn covers(&self, at_usec: u64) -> bool {
        (self.running > 0 && at_usec >= self.since_usec)
            || at_usec <= self.last_end_usec.saturating_add(ACTING_TAIL_USEC)
    }
}

#[derive(Default)]
struct State {
    docker: Option<Docker>,
    docker_error: String,
    projects: HashMap<String, Project>,
    /// Bumped at each successful (re)connect to Docker.
    generation: u64,
    /// Containers asked to end through the API (`kill`/`stop` events),
    /// not yet dead, by container id.
    asked: HashMap<String, Asked>,
    /// Projects a person stopped from outside stackd, until they start again.
    outside: HashMap<String, OutsideStop>,
    acting: HashMap<String, Acting>,
    /// Containers Docker reported an `oom` for since they last started (its
    /// `OOMKilled` flag can lag behind the `die`).
    oomed: std::collections::HashSet<String>,
    /// Containers whose `die` the event stream has told since they last
    /// started: Docker sends a death's evidence (`oom`, a person's
    /// `kill`/`stop`) before its `die`, so once the `die` is here, so is
    /// the evidence.
    died: std::collections::HashSet<String>,
}

/// Shared, cheap to read. Writers are the observer and the task runner
/// (which refreshes a project right after a Compose command). `engine` is
/// what the observer connects to and where the runner finds Compose.
pub struct World {
    state: RwLock<State>,
    engine: Engine,
}

impl World {
    pub fn new(engine: Engine) -> Arc<World> {
        let state = RwLock::default();
        Arc::new(World { state, engine })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
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

    /// How many times the observer has connected to Docker; a bump after
    /// the first is the engine coming back (or the stream being re-made).
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    /// A stackd task starts working on `project`: its kills and stops are
    /// not a person's.
    pub fn begin_task(&self, project: &str) {
        let mut st = self.write();
        let a = st.acting.entry(project.to_string()).or_default();
        if a.running == 0 {
            a.since_usec = now_usec();
        }
        a.running += 1;
    }

    pub fn end_task(&self, project: &str) {
        let mut st = self.write();
        let a = st.acting.entry(project.to_string()).or_default();
        a.running = a.running.saturating_sub(1);
        a.last_end_usec = now_usec();
    }

    /// Was something that happened to `project` at `at_usec` the doing of
    /// one of stackd's own tasks?
    pub fn stackd_acting(&self, project: &str, at_usec: u64) -> bool {
        self.read()
            .acting
            .get(project)
            .is_some_and(|a| a.covers(at_usec))
    }

    /// The person's stop last seen on `project`, while its containers have
    /// not started again.
    pub fn outside_stop(&self, project: &str) -> Option<OutsideStop> {
        let st = self.read();
        if let Some(o) = st.outside.get(project) {
            return Some(o.clone());
        }
        // Docker's list may show a container exited before the event
        // stream has said `die`: a `kill`/`stop` already seen for it, not
        // stackd's, counts as the evidence while the `die` is on its way.
        let acting = st.acting.get(project).copied().unwrap_or_default();
        let down = |id: &str| {
            st.projects.get(project).is_some_and(|p| {
                p.containers
                    .iter()
                    .any(|c| c.id == id && c.state != ContainerState::Running)
            })
        };
        st.asked
            .iter()
            .find(|(id, a)| a.project == project && !acting.covers(a.at_usec) && down(id))
            .map(|(_, a)| OutsideStop {
                container: a.container.clone(),
                door: a.door,
                at_usec: a.at_usec,
            })
    }

    /// Docker reported an `oom` for the container since it last started.
    pub fn oom_seen(&self, container_id: &str) -> bool {
        self.read().oomed.contains(container_id)
    }

    /// The event stream has told the container's `die` since it last
    /// started: everything Docker says before a death (`oom`, `kill`,
    /// the `kill` of a `docker stop`) has been read too.
    pub fn die_seen(&self, container_id: &str) -> bool {
        self.read().died.contains(container_id)
    }

    /// Forget the evidence of a person's stop (it was acted on, or the
    /// engine went away: what it stopped on its way down was no person).
    pub fn clear_outside_stop(&self, project: &str) {
        self.write().outside.remove(project);
    }

    /// Reads Docker's evidence of intent from one event (see [`OutsideStop`]).
    fn note_event(&self, ev: &crate::engine::EngineEvent) {
        let mut st = self.write();
        let at = if ev.time_usec > 0 {
            ev.time_usec
        } else {
            now_usec()
        };
        match ev.action.as_str() {
            "kill" | "stop" => {
                let door = if ev.action == "stop" {
                    "docker stop"
                } else {
                    "docker kill"
                };
                // `stop` follows the `die` of a `docker stop`: it names the door.
                if let Some(o) = st.outside.get_mut(&ev.project) {
                    if o.container == ev.container_name && door == "docker stop" {
                        o.door = door;
                    }
                }
                let entry = st
                    .asked
                    .entry(ev.container_id.clone())
                    .or_insert_with(|| Asked {
                        door,
                        at_usec: at,
                        project: ev.project.clone(),
                        container: ev.container_name.clone(),
                    });
                if door == "docker stop" {
                    entry.door = door;
                }
            }
            "die" => {
                st.died.insert(ev.container_id.clone());
                let asked = st.asked.remove(&ev.container_id);
                let acting = st.acting.get(&ev.project).copied().unwrap_or_default();
                let stackd = acting.covers(at);
                match asked.as_ref().map(|a| (a.door, a.at_usec)) {
                    Some((door, when)) if !stackd && at.saturating_sub(when) <= ASKED_FOR_USEC => {
                        debug!(
                            stackd_service = ev.project,
                            "{} ended after a {door} through the Docker API", ev.container_name
                        );
                        st.outside.insert(
                            ev.project.clone(),
                            OutsideStop {
                                container: ev.container_name.clone(),
                                door,
                                at_usec: at,
                            },
                        );
                    }
                    _ => debug!(
                        stackd_service = ev.project,
                        "{} died (asked: {asked:?}, stackd's task: {stackd})", ev.container_name
                    ),
                }
            }
            // A failure is a failure, whoever sent a signal before.
            "oom" => {
                st.asked.remove(&ev.container_id);
                st.outside.remove(&ev.project);
                st.oomed.insert(ev.container_id.clone());
            }
            // `docker restart` by hand (kill/stop, then start) is no stop.
            "start" => {
                st.asked.remove(&ev.container_id);
                st.outside.remove(&ev.project);
                st.oomed.remove(&ev.container_id);
                st.died.remove(&ev.container_id);
            }
            "destroy" => {
                st.asked.remove(&ev.container_id);
                st.oomed.remove(&ev.container_id);
                st.died.remove(&ev.container_id);
            }
            _ => {}
        }
    }

    /// The engine went away: what it stopped on its way down, nobody asked
    /// for.
    fn forget_intent(&self) {
        let mut st = self.write();
        st.asked.clear();
        st.outside.clear();
        st.died.clear();
    }

    fn set_docker(&self, docker: Option<Docker>, error: String) -> bool {
        let mut st = self.write();
        if docker.is_some() && st.docker.is_none() {
            st.generation += 1;
        }
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

#[cfg(test)]
mod tests;
