//! What the client reads: the rows and objects the daemon answers with,
//! turned from D-Bus properties into the CLI's types. States are their
//! enums here; their text is read only at this edge.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use zbus::zvariant::{OwnedValue, Value};

use super::{ClientError, Result};
use crate::dbus::proxy::Props;
use crate::dbus::types::ContainerRow;
use crate::health::Health;
use crate::state::{ActiveState, SubState};
use crate::store::{Origin, SetBy};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub host: String,
    pub desired_state: String,
    pub desired_source: SetBy,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    pub health: Health,
    pub health_message: String,
    pub containers: Vec<ContainerRow>,
    pub state_change_usec: u64,
    pub restart_count: u64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub compose_file: String,
    /// Running and healthy as the probe tells (absent over the peer
    /// endpoint, which does not send it).
    #[serde(default)]
    pub ready: bool,
    /// compose, unit or external ("" from a daemon that does not say).
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub required_for: Vec<String>,
}

/// One row of `Manager.ListRegistry`: what the cluster file says of a
/// service.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RegistryRow {
    pub name: String,
    pub kind: String,
    pub description: String,
    pub category: String,
    pub required_for: Vec<String>,
}

/// One row of `Manager.Readiness`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReadinessRow {
    pub name: String,
    /// running, could start or blocked.
    pub verdict: String,
    pub problems: Vec<String>,
}

/// One row of `Manager.Required`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RequiredRow {
    pub name: String,
    /// Named by required_for itself (else a dependency of one that is).
    pub direct: bool,
    pub active_state: ActiveState,
    pub health: Health,
    pub running: bool,
}

/// A task as the Task object's properties tell it: the peer endpoint's
/// task (its `log` left out), so a relayed one reads the same.
pub use crate::peer::types::Task as TaskInfo;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManagerInfo {
    pub version: String,
    pub host: String,
    pub system_state: String,
    pub docker_connected: bool,
    pub docker_error: String,
    pub config_hash: String,
    pub config_path: String,
    pub boot_id: String,
}

fn prop<T>(map: &HashMap<String, OwnedValue>, key: &str) -> Result<T>
where
    T: TryFrom<OwnedValue>,
{
    let v = map
        .get(key)
        .ok_or_else(|| ClientError::Protocol(format!("the daemon did not send property {key}")))?;
    let v = v
        .try_clone()
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    T::try_from(v)
        .map_err(|_| ClientError::Protocol(format!("property {key} has an unexpected type")))
}

pub(super) fn manager_info(m: &Props) -> Result<ManagerInfo> {
    Ok(ManagerInfo {
        version: prop(m, "Version")?,
        host: prop(m, "Host")?,
        system_state: prop(m, "SystemState")?,
        docker_connected: prop(m, "DockerConnected")?,
        docker_error: prop(m, "DockerError")?,
        config_hash: prop(m, "ConfigHash")?,
        config_path: prop(m, "ConfigPath")?,
        boot_id: prop(m, "BootId")?,
    })
}

pub(super) fn service_info(m: &Props) -> Result<ServiceInfo> {
    let containers: Vec<ContainerRow> = {
        let v = m
            .get("Containers")
            .ok_or_else(|| ClientError::Protocol("no Containers property".into()))?;
        let value: Value<'_> = Value::from(
            v.try_clone()
                .map_err(|e| ClientError::Protocol(e.to_string()))?,
        );
        let arr = zbus::zvariant::Array::try_from(value)
            .map_err(|e| ClientError::Protocol(format!("Containers: {e}")))?;
        Vec::<ContainerRow>::try_from(arr)
            .map_err(|e| ClientError::Protocol(format!("Containers: {e}")))?
    };
    Ok(ServiceInfo {
        name: prop(m, "Name")?,
        host: prop(m, "Host")?,
        desired_state: prop(m, "DesiredState")?,
        desired_source: SetBy::parse(&prop::<String>(m, "DesiredSource")?),
        active_state: prop::<String>(m, "ActiveState")?.into(),
        sub_state: prop::<String>(m, "SubState")?.into(),
        health: Health::read(&prop::<String>(m, "Health")?),
        health_message: prop(m, "HealthMessage")?,
        containers,
        state_change_usec: prop(m, "StateChangeTimestamp")?,
        restart_count: prop(m, "RestartCount")?,
        cpu_percent: prop(m, "CpuPercent")?,
        memory_bytes: prop(m, "MemoryBytes")?,
        compose_file: prop(m, "ComposeFile")?,
        // Not among a relayed host's properties.
        ready: prop(m, "Ready").unwrap_or(false),
        // Not among a relayed host's properties, nor an older daemon's.
        kind: prop(m, "Kind").unwrap_or_default(),
        description: prop(m, "Description").unwrap_or_default(),
        category: prop(m, "Category").unwrap_or_default(),
        required_for: prop(m, "RequiredFor").unwrap_or_default(),
    })
}

pub(super) fn task_info(m: &Props) -> Result<TaskInfo> {
    Ok(TaskInfo {
        id: prop(m, "Id")?,
        kind: prop(m, "Kind")?,
        service: prop(m, "Service")?,
        origin: Origin::parse(&prop::<String>(m, "Origin")?),
        state: prop(m, "State")?,
        result: prop(m, "Result")?,
        created_usec: prop(m, "CreatedUsec")?,
        started_usec: prop(m, "StartedUsec")?,
        finished_usec: prop(m, "FinishedUsec")?,
        error: prop(m, "Error")?,
        log: None,
    })
}

/// ListTasks' filter.
pub(super) fn task_filter<'a>(
    service: Option<&'a str>,
    states: &[String],
    limit: Option<u32>,
) -> HashMap<&'static str, Value<'a>> {
    let mut filter: HashMap<&str, Value<'_>> = HashMap::new();
    if let Some(s) = service {
        filter.insert("service", Value::from(s));
    }
    if !states.is_empty() {
        filter.insert("state", Value::from(states.to_vec()));
    }
    if let Some(l) = limit {
        filter.insert("limit", Value::from(l));
    }
    filter
}
