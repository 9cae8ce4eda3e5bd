//! The JSON shapes of the peer endpoint, shared by the server and the
//! client so the two cannot drift. Where a shape crosses both wires it is
//! one type: `Container` is the bus's `ContainerRow`, and the bus client's
//! `TaskInfo` is `Task`, so stackctl prints both alike.

use serde::{Deserialize, Serialize};

use crate::control::{ManagerInfo, ServiceStatus};
use crate::health::Health;
use crate::state::{ActiveState, SubState};
use crate::store::{EventRecord, Origin, SetBy, TaskRecord};

/// One element of `GET /v1/services`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServiceSummary {
    pub name: String,
    pub host: String,
    pub desired_state: String,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    pub health: Health,
    /// Long-running containers (one-off `run` containers not counted).
    pub containers: u32,
}

impl ServiceSummary {
    pub fn from_status(s: &ServiceStatus) -> ServiceSummary {
        ServiceSummary {
            name: s.name.clone(),
            host: s.host.clone(),
            desired_state: s.desired.as_str().to_string(),
            active_state: s.active_state.clone(),
            sub_state: s.sub_state.clone(),
            health: s.health,
            containers: u32::try_from(s.containers.iter().filter(|c| !c.oneoff).count())
                .unwrap_or(u32::MAX),
        }
    }
}

/// One container of a service: the same type as the Service object's
/// `Containers` property on the bus, so the two wires cannot drift.
pub use crate::dbus::types::ContainerRow as Container;

/// `GET /v1/services/{name}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Service {
    pub name: String,
    pub host: String,
    pub desired_state: String,
    pub desired_source: SetBy,
    /// When a person or a move last set the desired state (µs since the
    /// epoch; 0: the cluster file's `auto_start`). Absent from older
    /// hosts' answers.
    #[serde(default)]
    pub desired_since_usec: u64,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    pub health: Health,
    pub health_message: String,
    pub containers: Vec<Container>,
    pub state_change_usec: u64,
    pub restart_count: u64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub compose_file: String,
    /// `kind`: compose, unit or external. Absent from older hosts' answers.
    #[serde(default)]
    pub kind: String,
    /// `description`, `category` ("" when none) and `required_for`.
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub required_for: Vec<String>,
}

impl Service {
    pub fn from_status(s: &ServiceStatus) -> Service {
        Service {
            name: s.name.clone(),
            host: s.host.clone(),
            desired_state: s.desired.as_str().to_string(),
            desired_source: s.desired_source.clone(),
            desired_since_usec: s.desired_since_usec,
            active_state: s.active_state.clone(),
            sub_state: s.sub_state.clone(),
            health: s.health,
            health_message: s.health_message.clone(),
            containers: s.containers.iter().map(Container::from_info).collect(),
            state_change_usec: s.state_change_usec,
            restart_count: s.restart_count,
            cpu_percent: s.cpu_percent,
            memory_bytes: s.memory_bytes,
            compose_file: s.compose_file.display().to_string(),
            kind: s.kind.to_string(),
            description: s.description.clone(),
            category: s.category.clone(),
            required_for: s.required_for.clone(),
        }
    }
}

/// A task; `log` only in `GET /v1/tasks/{id}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Task {
    pub id: u64,
    pub kind: String,
    pub service: String,
    pub origin: Origin,
    pub state: String,
    pub result: String,
    pub created_usec: u64,
    pub started_usec: u64,
    pub finished_usec: u64,
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log: Option<Vec<String>>,
}

impl Task {
    pub fn from_record(t: &TaskRecord, log: Option<Vec<String>>) -> Task {
        Task {
            id: t.id,
            kind: t.kind.clone(),
            service: t.service.clone(),
            origin: t.origin.clone(),
            state: t.state.as_str().to_string(),
            result: t.result.clone(),
            created_usec: t.created_usec,
            started_usec: t.started_usec.unwrap_or(0),
            finished_usec: t.finished_usec.unwrap_or(0),
            error: t.error.clone().unwrap_or_default(),
            log,
        }
    }

    /// Succeeded, failed or cancelled: it will not change again.
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

/// `GET /v1/host`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Host {
    pub host: String,
    pub version: String,
    pub system_state: String,
    pub docker_connected: bool,
    pub docker_error: String,
    pub config_hash: String,
    pub config_path: String,
    pub boot_id: String,
    /// 1, 5 and 15 minute load averages from /proc/loadavg.
    pub load_average: [f64; 3],
    pub uptime_seconds: f64,
    /// Every service the host's cluster file names, its own or not (a
    /// move asks the target whether it knows the service).
    #[serde(default)]
    pub services: Vec<String>,
}

impl Host {
    pub fn from_manager(m: &ManagerInfo) -> Host {
        Host {
            host: m.host.clone(),
            version: m.version.to_string(),
            system_state: m.system_state.as_str().to_string(),
            docker_connected: m.docker_connected,
            docker_error: m.docker_error.clone(),
            config_hash: m.config_hash.clone(),
            config_path: m.config_path.display().to_string(),
            boot_id: m.boot_id.clone(),
            load_average: load_average(),
            uptime_seconds: uptime(),
            services: Vec::new(),
        }
    }
}

fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, field) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = field.parse().unwrap_or(0.0);
    }
    out
}

fn uptime() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `GET /v1/events`: the events after `after`, and where to go on from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Events {
    pub events: Vec<EventRecord>,
    /// Pass this as `after` next time (the last event's seq, or `after`
    /// itself when none came).
    pub next: u64,
}

/// The optional body of `POST /v1/services/{name}/{op}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpRequest {
    /// Who asks, for the task's origin (e.g. "stackctl@hosta"); the source
    /// address is recorded in any case.
    #[serde(default)]
    pub caller: Option<String>,
    /// start, restart, update: go ahead when another host of the cluster
    /// cannot be asked whether it runs the service (the hand-off rule).
    #[serde(default)]
    pub force: bool,
}

/// The body of `POST /v1/services/{name}/prepare` and `.../receive`: the
/// host the service moves from asks the one it moves to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRequest {
    /// The host the service leaves (a host of the cluster file).
    pub from: String,
}

/// The body of `POST /v1/services/{name}/migrate`: the move a host is
/// asked to make of a service it runs (by `apply --all-hosts`, for a
/// service with `handoff_volumes` whose placement changed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MigrateRequest {
    /// The host it moves to.
    pub to: String,
    /// Carry its named volumes (as `stackctl migrate --with-volumes`).
    #[serde(default)]
    pub volumes: bool,
    /// Who asks, for the task's origin.
    #[serde(default)]
    pub caller: Option<String>,
    /// Go ahead when another host cannot be asked (the hand-off rule).
    #[serde(default)]
    pub force: bool,
}

/// The answer to `PUT /v1/services/{name}/volumes/{volume}`: what arrived
/// and matched the sender's checksum.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VolumeAnswer {
    pub volume: String,
    /// The tar stream's length, without the trailing digest.
    pub bytes: u64,
    /// Its SHA-256, lower-case hex.
    pub sha256: String,
    /// A volume of that name was there and was replaced.
    pub replaced: bool,
}

/// The answer to `POST /v1/services/{name}/prepare`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PrepareAnswer {
    /// The preflight's warnings, e.g. an image that will be pulled.
    pub warnings: Vec<String>,
    /// The pull of the missing images; null when every image is present.
    pub pull: Option<Task>,
}

impl PrepareAnswer {
    pub fn from_prepared(p: &crate::control::Prepared) -> PrepareAnswer {
        PrepareAnswer {
            warnings: p.warnings.clone(),
            pull: p.pull.as_ref().map(|t| Task::from_record(t, None)),
        }
    }
}

/// The body of `POST /v1/apply` (every field optional).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    /// Only stop the services that left this host's placement (the first
    /// round of `stackctl apply --all-hosts`).
    #[serde(default)]
    pub leaving: bool,
    /// Answer the plan, do nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop them even when they are more than `reload_guard` allows.
    #[serde(default)]
    pub force: bool,
}

/// One step of an apply's plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// "stop" or "start".
    pub action: String,
    pub service: String,
    pub reason: String,
}

/// The answer to `POST /v1/apply`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApplyAnswer {
    /// What the apply does (did, with `dry_run`: would do), in order.
    pub plan: Vec<PlanStep>,
    /// The reconcile task; null with `dry_run`, or when a leaving-only
    /// apply has nothing to stop.
    pub task: Option<Task>,
}

impl ApplyAnswer {
    pub fn new(plan: &[crate::control::PlanStep], task: Option<&TaskRecord>) -> ApplyAnswer {
        ApplyAnswer {
            plan: plan
                .iter()
                .map(|p| PlanStep {
                    action: p.action.to_string(),
                    service: p.service.clone(),
                    reason: p.reason.clone(),
                })
                .collect(),
            task: task.map(|t| Task::from_record(t, None)),
        }
    }
}

/// The answer to `PUT /v1/config`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigPushed {
    pub host: String,
    /// The file that was (or, with `check`, would be) replaced.
    pub config_path: String,
    /// The hash of the configuration in force now (with `check`: of the
    /// one the pushed file would make).
    pub config_hash: String,
    /// False when only checked.
    pub written: bool,
}

/// Every error body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub kind: String,
}
