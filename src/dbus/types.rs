//! The shapes that cross the bus, shared by the server objects and the
//! stackctl client so the two cannot drift. zvariant conversions live here,
//! never in the core.

use serde::{Deserialize, Serialize};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Type, Value};

use crate::control::ServiceStatus;
use crate::engine::ContainerInfo;
use crate::health::Health;
use crate::peer::types::{ServiceSummary, Task};
use crate::state::{ActiveState, SubState};
use crate::store::{Origin, TaskRecord};

/// One row of `ListServices`: `(ssssssuo)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type)]
pub struct ServiceRow {
    pub name: String,
    pub host: String,
    pub desired_state: String,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    pub health: Health,
    pub containers: u32,
    pub path: OwnedObjectPath,
}

impl ServiceRow {
    pub fn from_status(s: &ServiceStatus) -> ServiceRow {
        ServiceRow::from_summary(ServiceSummary::from_status(s))
    }

    /// The peer endpoint's `GET /v1/services` element (this host's, or
    /// another host's relayed), with the path of its object here.
    pub fn from_summary(s: ServiceSummary) -> ServiceRow {
        ServiceRow {
            path: super::path::service_path(&s.name),
            name: s.name,
            host: s.host,
            desired_state: s.desired_state,
            active_state: s.active_state,
            sub_state: s.sub_state,
            health: s.health,
            containers: s.containers,
        }
    }
}

/// One row of `ListHosts`: `(ssbtsdss)`, the liveness board's entry
/// itself (name, peer URL, reachable, since µs, version, 1-minute load,
/// config hash, error).
pub type HostRow = crate::hosts::HostStatus;

// The words of a state cross the bus as their text (`s`), as they do the
// peer endpoint's JSON: serde writes them as strings.
macro_rules! as_string {
    ($($t:ty),+) => {
        $(impl Type for $t {
            const SIGNATURE: &'static zbus::zvariant::Signature = <String as Type>::SIGNATURE;
        })+
    };
}
as_string!(ActiveState, SubState, Health, Origin);

// The board's type crosses the bus as it is; its signature is written
// here so that only dbus/ knows zbus. The order is its fields' order
// (zvariant serializes through serde); a test checks it on a real encoding.
impl Type for crate::hosts::HostStatus {
    const SIGNATURE: &'static zbus::zvariant::Signature =
        <(String, String, bool, u64, String, f64, String, String) as Type>::SIGNATURE;
}

/// One element of the Service `Containers` property: `(ssssxtts)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type, Value, OwnedValue)]
pub struct ContainerRow {
    pub name: String,
    /// The Compose service inside the project.
    pub service: String,
    pub state: String,
    /// Docker healthcheck status, or "" when there is none.
    pub health: String,
    /// -1 while it never exited.
    pub exit_code: i64,
    /// When it last started (0 if never).
    pub started_usec: u64,
    pub restart_count: u64,
    pub image: String,
}

impl ContainerRow {
    pub fn from_info(c: &ContainerInfo) -> ContainerRow {
        ContainerRow {
            name: c.name.clone(),
            service: c.service.clone(),
            state: c.state.as_str().to_string(),
            health: c.health.clone().unwrap_or_default(),
            exit_code: c.exit_code.unwrap_or(-1),
            started_usec: c.started_at_usec.unwrap_or(0),
            restart_count: c.restart_count,
            image: c.image.clone(),
        }
    }
}

/// One row of `ListContainerStats`: `(sssdttttt)`, a running container's
/// figures from the monitor's last sample.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type)]
pub struct ContainerStatsRow {
    pub service: String,
    pub container: String,
    pub id: String,
    /// Percent of one core; -1 until a second sample.
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    /// 0: no limit.
    pub memory_limit: u64,
    /// 0: unknown.
    pub pids: u64,
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
}

impl ContainerStatsRow {
    pub fn from_figures(f: &crate::resources::ContainerFigures) -> ContainerStatsRow {
        ContainerStatsRow {
            service: f.service.clone(),
            container: f.name.clone(),
            id: f.id.clone(),
            cpu_percent: f.cpu_percent.unwrap_or(-1.0),
            memory_bytes: f.memory_bytes,
            memory_limit: f.memory_limit.unwrap_or(0),
            pids: f.pids.unwrap_or(0),
            net_rx_bytes: f.net_rx,
            net_tx_bytes: f.net_tx,
        }
    }
}

/// One row of `ListTasks`: `(tsssssto)`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type)]
pub struct TaskRow {
    pub id: u64,
    pub kind: String,
    pub service: String,
    pub state: String,
    pub result: String,
    pub origin: Origin,
    pub created_usec: u64,
    pub path: OwnedObjectPath,
}

impl TaskRow {
    pub fn from_record(t: &TaskRecord) -> TaskRow {
        TaskRow::from_task(Task::from_record(t, None))
    }

    /// The peer endpoint's task (this host's, or another host's relayed),
    /// with the path of its object here.
    pub fn from_task(t: Task) -> TaskRow {
        TaskRow {
            path: super::path::task_path(t.id),
            id: t.id,
            kind: t.kind,
            service: t.service,
            state: t.state,
            result: t.result,
            origin: t.origin,
            created_usec: t.created_usec,
        }
    }
}

/// One row of `ListDependencies`: `(ussss)`, in pre-order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type)]
pub struct DependencyRow {
    /// 0 for the service asked about.
    pub depth: u32,
    pub name: String,
    /// "remote" for another host's service, "unknown" for a name the
    /// config does not know.
    pub active_state: String,
    pub sub_state: String,
    pub health: String,
}

impl DependencyRow {
    pub fn from_tree(r: &crate::control::TreeRow) -> DependencyRow {
        DependencyRow {
            depth: r.depth,
            name: r.name.clone(),
            active_state: r.active_state.clone(),
            sub_state: r.sub_state.clone(),
            health: r.health.clone(),
        }
    }
}

/// One row of `PlanStart`: `(sss)`, in the order the tasks would be queued.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Type)]
pub struct PlanRow {
    pub service: String,
    /// "start" or "stop".
    pub action: String,
    /// "requested", "needed by web", "needs db", "conflicts with web".
    pub reason: String,
}

impl PlanRow {
    pub fn from_step(s: &crate::deps::Step) -> PlanRow {
        PlanRow {
            service: s.service.clone(),
            action: s.action.as_str().to_string(),
            reason: s.reason.clone(),
        }
    }
}

/// A job mode as systemd's `StartUnit(name, mode)` takes it: "fail" (the
/// default: running dependents or conflicts refuse the operation) or
/// "replace" (they are stopped first). True for "replace".
pub fn parse_mode(mode: &str) -> Result<bool, String> {
    match mode {
        "fail" => Ok(false),
        "replace" => Ok(true),
        other => Err(format!(
            "unknown mode {other:?} (known: \"fail\", \"replace\")"
        )),
    }
}

/// `Prune`'s options: `images`, `containers`, `networks` and `dry_run`,
/// each a boolean; unknown keys are refused.
pub fn prune_options(
    options: std::collections::HashMap<String, OwnedValue>,
) -> std::result::Result<crate::housekeeping::PruneOptions, String> {
    let (mut images, mut containers, mut networks, mut dry_run) = (false, false, false, false);
    for (key, value) in options {
        let flag = bool::try_from(&value).map_err(|_| format!("option {key} must be a boolean"))?;
        match key.as_str() {
            "images" => images = flag,
            "containers" => containers = flag,
            "networks" => networks = flag,
            "dry_run" => dry_run = flag,
            other => {
                return Err(format!(
                    "unknown prune option {other:?} (known: images, containers, networks, dry_run)"
                ))
            }
        }
    }
    Ok(crate::housekeeping::PruneOptions {
        kinds: crate::housekeeping::Kinds::from_flags(images, containers, networks),
        dry_run,
    })
}

/// An operation on a service that the Manager queues as a task: the
/// core's own `Op`, with the Manager methods that queue it (below); the
/// client calls by these, so stackctl never names a method.
pub use crate::control::Op as ServiceOp;

impl ServiceOp {
    /// The Manager method that queues it.
    pub fn method(self) -> &'static str {
        match self {
            ServiceOp::Start => "StartService",
            ServiceOp::Stop => "StopService",
            ServiceOp::Restart => "RestartService",
            ServiceOp::Update => "UpdateService",
            ServiceOp::Pull => "PullService",
            ServiceOp::Down => "DownService",
            ServiceOp::Rollback => "Rollback",
        }
    }

    /// The method that takes a job mode as well (start and stop only).
    pub(crate) fn mode_method(self) -> Option<&'static str> {
        match self {
            ServiceOp::Start => Some("StartServiceMode"),
            ServiceOp::Stop => Some("StopServiceMode"),
            _ => None,
        }
    }

    /// The method that relays it to another host of the cluster (start,
    /// stop, restart and update only).
    pub fn host_method(self) -> Option<&'static str> {
        match self {
            ServiceOp::Start => Some("StartHostService"),
            ServiceOp::Stop => Some("StopHostService"),
            ServiceOp::Restart => Some("RestartHostService"),
            ServiceOp::Update => Some("UpdateHostService"),
            _ => None,
        }
    }

    /// `QueueAndWait`'s operation: restart and update as themselves,
    /// anything else as a start.
    pub(crate) fn waited(self) -> &'static str {
        match self {
            ServiceOp::Restart => "restart",
            ServiceOp::Update => "update",
            _ => "start",
        }
    }
}

/// systemd's job modes, as the Manager's `…Mode` methods take them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobMode {
    /// Refuse when something stands in the way.
    Fail,
    /// Stop what stands in the way first (and start even when a peer
    /// cannot be asked).
    Replace,
}

impl JobMode {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            JobMode::Fail => "fail",
            JobMode::Replace => "replace",
        }
    }
}

#[cfg(test)]
mod tests {
    use zbus::zvariant::serialized::Context;
    use zbus::zvariant::{to_bytes, Type, LE};

    use super::HostRow;

    /// The board's entry encodes as the `(ssbtsdss)` its signature claims:
    /// a field moved in `hosts.rs` fails here, not on a client.
    #[test]
    fn a_host_row_encodes_as_its_signature() {
        assert_eq!(HostRow::SIGNATURE.to_string(), "(ssbtsdss)");
        let row = HostRow {
            name: "b".into(),
            address: "http://b:7780".into(),
            reachable: true,
            since_usec: 42,
            version: "1.0".into(),
            load: 0.5,
            config_hash: "h".into(),
            error: String::new(),
        };
        let data = to_bytes(Context::new_dbus(LE, 0), &vec![row.clone()]).unwrap();
        type Tuple = (String, String, bool, u64, String, f64, String, String);
        let (back, _): (Vec<Tuple>, _) = data.deserialize().unwrap();
        assert_eq!(
            back,
            vec![(
                row.name,
                row.address,
                true,
                42,
                row.version,
                0.5,
                row.config_hash,
                row.error
            )]
        );
    }
}
