//! The client side, for stackctl: typed calls over whichever connection
//! reaches the daemon, so the CLI never sees zbus.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use zbus::zvariant::{OwnedFd, OwnedObjectPath, OwnedValue, Value};
use zbus::Connection;

use super::path::{self, MANAGER_PATH};
use super::types::{
    ContainerRow, ContainerStatsRow, DependencyRow, HostRow, PlanRow, ServiceRow, TaskRow,
};
pub use super::types::{JobMode, ServiceOp};
use super::BUS_NAME;

const MANAGER: &str = "org.stackd1.Manager";
const SERVICE: &str = "org.stackd1.Service";
const TASK: &str = "org.stackd1.Task";

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach stackd: {0}")]
    Connect(String),
    /// The daemon answered with a named error.
    #[error("{message}")]
    Remote { name: String, message: String },
    #[error("{0}")]
    Protocol(String),
}

impl ClientError {
    /// The short error name, e.g. "NoSuchService" for org.stackd1.Error.NoSuchService.
    pub fn remote_name(&self) -> Option<&str> {
        match self {
            ClientError::Remote { name, .. } => Some(name.rsplit('.').next().unwrap_or(name)),
            _ => None,
        }
    }
}

impl From<zbus::Error> for ClientError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => ClientError::Remote {
                name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            zbus::Error::FDO(fdo) => match *fdo {
                zbus::fdo::Error::ServiceUnknown(m) | zbus::fdo::Error::NameHasNoOwner(m) => {
                    ClientError::Connect(format!("stackd is not running on this bus ({m})"))
                }
                other => ClientError::Protocol(other.to_string()),
            },
            other => ClientError::Protocol(other.to_string()),
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub host: String,
    pub desired_state: String,
    pub desired_source: String,
    pub active_state: String,
    pub sub_state: String,
    pub health: String,
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
    pub active_state: String,
    pub health: String,
    pub running: bool,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskInfo {
    pub id: u64,
    pub kind: String,
    pub service: String,
    pub origin: String,
    pub state: String,
    pub result: String,
    pub created_usec: u64,
    pub started_usec: u64,
    pub finished_usec: u64,
    pub error: String,
}

impl TaskInfo {
    pub fn finished(&self) -> bool {
        matches!(self.state.as_str(), "succeeded" | "failed" | "cancelled")
    }
}

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

/// Where to find the daemon.
#[derive(Clone, Debug)]
pub enum Target {
    /// The session bus (`--user`).
    Session,
    /// The system bus.
    System,
    /// The private peer-to-peer socket.
    Private(std::path::PathBuf),
}

impl Target {
    /// systemctl's habits: root talks to the private socket when it exists,
    /// everybody else to the bus. In `--user` mode without a session bus,
    /// the user's private socket under `$XDG_RUNTIME_DIR` serves instead.
    pub fn default_for(user_mode: bool) -> Target {
        if user_mode {
            let have_bus =
                std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some_and(|a| !a.is_empty());
            if !have_bus {
                if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") {
                    let private = std::path::Path::new(&dir).join("stackd/private");
                    if private.exists() {
                        return Target::Private(private);
                    }
                }
            }
            return Target::Session;
        }
        let private = std::path::Path::new("/run/stackd/private");
        if nix::unistd::geteuid().is_root() && private.exists() {
            Target::Private(private.to_path_buf())
        } else {
            Target::System
        }
    }
}

pub struct Client {
    conn: Connection,
    p2p: bool,
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

impl Client {
    pub async fn connect(target: &Target) -> Result<Client> {
        let (conn, p2p) = match target {
            Target::Session => (
                Connection::session()
                    .await
                    .map_err(|e| ClientError::Connect(format!("session bus: {e}")))?,
                false,
            ),
            Target::System => (
                Connection::system()
                    .await
                    .map_err(|e| ClientError::Connect(format!("system bus: {e}")))?,
                false,
            ),
            Target::Private(path) => {
                let stream = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| ClientError::Connect(format!("{}: {e}", path.display())))?;
                let conn = zbus::connection::Builder::unix_stream(stream)
                    .p2p()
                    .build()
                    .await
                    .map_err(|e| ClientError::Connect(format!("{}: {e}", path.display())))?;
                (conn, true)
            }
        };
        Ok(Client { conn, p2p })
    }

    async fn call<B, R>(&self, path: &str, iface: &str, method: &str, body: &B) -> Result<R>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
        R: for<'d> serde::Deserialize<'d> + zbus::zvariant::Type,
    {
        let dest = if self.p2p { None } else { Some(BUS_NAME) };
        let reply = self
            .conn
            .call_method(dest, path, Some(iface), method, body)
            .await?;
        reply
            .body()
            .deserialize::<R>()
            .map_err(|e| ClientError::Protocol(format!("{method}: {e}")))
    }

    async fn all(&self, path: &str, iface: &str) -> Result<HashMap<String, OwnedValue>> {
        self.call(path, "org.freedesktop.DBus.Properties", "GetAll", &(iface,))
            .await
    }

    /// Whether the daemon runs now, asked without starting it (a bus may
    /// activate a service on a call to its name).
    pub async fn daemon_running(&self) -> bool {
        if self.p2p {
            return true;
        }
        match zbus::fdo::DBusProxy::new(&self.conn).await {
            Ok(p) => match zbus::names::BusName::try_from(BUS_NAME) {
                Ok(name) => p.name_has_owner(name).await.unwrap_or(false),
                Err(_) => false,
            },
            Err(_) => false,
        }
    }

    pub async fn manager(&self) -> Result<ManagerInfo> {
        manager_info(&self.all(MANAGER_PATH, MANAGER).await?)
    }

    pub async fn list_hosts(&self) -> Result<Vec<HostRow>> {
        self.call(MANAGER_PATH, MANAGER, "ListHosts", &()).await
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceRow>> {
        self.call(MANAGER_PATH, MANAGER, "ListServices", &()).await
    }

    pub async fn service(&self, name: &str) -> Result<ServiceInfo> {
        let path: OwnedObjectPath = self
            .call(MANAGER_PATH, MANAGER, "GetService", &(name,))
            .await?;
        service_info(&self.all(path.as_str(), SERVICE).await?)
    }

    /// Queues `op` on `name` (StartService, ...). Returns the task id.
    pub async fn service_op(&self, op: ServiceOp, name: &str) -> Result<u64> {
        let method = op.method();
        let path: OwnedObjectPath = self.call(MANAGER_PATH, MANAGER, method, &(name,)).await?;
        path::task_id(path.as_str())
            .ok_or_else(|| ClientError::Protocol(format!("{method} returned {path}, not a task")))
    }

    /// StartServiceMode or StopServiceMode with a job mode. Returns the
    /// task id.
    pub async fn service_op_mode(&self, op: ServiceOp, name: &str, mode: JobMode) -> Result<u64> {
        let method = op
            .mode_method()
            .ok_or_else(|| ClientError::Protocol(format!("{} takes no job mode", op.method())))?;
        let path: OwnedObjectPath = self
            .call(MANAGER_PATH, MANAGER, method, &(name, mode.as_str()))
            .await?;
        path::task_id(path.as_str())
            .ok_or_else(|| ClientError::Protocol(format!("{method} returned {path}, not a task")))
    }

    /// QueueAndWait: start, restart or update whose task waits for the
    /// service to be healthy. Returns the task id.
    pub async fn queue_and_wait(&self, name: &str, op: ServiceOp, mode: JobMode) -> Result<u64> {
        let path: OwnedObjectPath = self
            .call(
                MANAGER_PATH,
                MANAGER,
                "QueueAndWait",
                &(name, op.waited(), mode.as_str()),
            )
            .await?;
        path::task_id(path.as_str()).ok_or_else(|| {
            ClientError::Protocol(format!("QueueAndWait returned {path}, not a task"))
        })
    }

    /// `Prune` with the given kinds (none: all) and dry run; the task id.
    pub async fn prune(
        &self,
        images: bool,
        containers: bool,
        networks: bool,
        dry_run: bool,
    ) -> Result<u64> {
        let mut options: HashMap<&str, Value<'_>> = HashMap::new();
        for (key, on) in [
            ("images", images),
            ("containers", containers),
            ("networks", networks),
            ("dry_run", dry_run),
        ] {
            if on {
                options.insert(key, Value::from(true));
            }
        }
        let path: OwnedObjectPath = self
            .call(MANAGER_PATH, MANAGER, "Prune", &(options,))
            .await?;
        path::task_id(path.as_str())
            .ok_or_else(|| ClientError::Protocol(format!("Prune returned {path}, not a task")))
    }

    pub async fn plan_start(&self, name: &str, mode: &str) -> Result<Vec<PlanRow>> {
        self.call(MANAGER_PATH, MANAGER, "PlanStart", &(name, mode))
            .await
    }

    pub async fn dependencies(&self, name: &str, reverse: bool) -> Result<Vec<DependencyRow>> {
        self.call(MANAGER_PATH, MANAGER, "ListDependencies", &(name, reverse))
            .await
    }

    /// `MigrateMode` ("replace" when forced), or `MigrateWith` when the
    /// move carries the named volumes: the migrate task's id.
    pub async fn migrate(
        &self,
        name: &str,
        host: &str,
        force: bool,
        with_volumes: bool,
    ) -> Result<u64> {
        let mode = if force { "replace" } else { "fail" };
        let path: OwnedObjectPath = if with_volumes {
            self.call(
                MANAGER_PATH,
                MANAGER,
                "MigrateWith",
                &(name, host, mode, true),
            )
            .await?
        } else {
            self.call(MANAGER_PATH, MANAGER, "MigrateMode", &(name, host, mode))
                .await?
        };
        path::task_id(path.as_str()).ok_or_else(|| {
            ClientError::Protocol(format!("MigrateMode returned {path}, not a task"))
        })
    }

    /// ApplyMode: "replace" (`force`) also stops more services no longer
    /// assigned to this host than `reload_guard` allows.
    pub async fn apply(&self, force: bool) -> Result<Vec<u64>> {
        let mode = if force { "replace" } else { "fail" };
        let paths: Vec<OwnedObjectPath> = self
            .call(MANAGER_PATH, MANAGER, "ApplyMode", &(mode,))
            .await?;
        Ok(paths
            .iter()
            .filter_map(|p| path::task_id(p.as_str()))
            .collect())
    }

    /// ReloadMode: "replace" (`force`) takes a file that would remove
    /// more services than `reload_guard` allows.
    pub async fn reload(&self, force: bool) -> Result<()> {
        let mode = if force { "replace" } else { "fail" };
        self.call(MANAGER_PATH, MANAGER, "ReloadMode", &(mode,))
            .await
    }

    pub async fn task(&self, id: u64) -> Result<TaskInfo> {
        let path: OwnedObjectPath = self.call(MANAGER_PATH, MANAGER, "GetTask", &(id,)).await?;
        task_info(&self.all(path.as_str(), TASK).await?)
    }

    pub async fn task_log_since(&self, id: u64, skip: u32) -> Result<Vec<String>> {
        self.call(path::task_path(id).as_str(), TASK, "LogSince", &(skip,))
            .await
    }

    pub async fn tasks(
        &self,
        service: Option<&str>,
        states: &[String],
        limit: Option<u32>,
    ) -> Result<Vec<TaskRow>> {
        let filter = task_filter(service, states, limit);
        self.call(MANAGER_PATH, MANAGER, "ListTasks", &(filter,))
            .await
    }

    /// Host figures by name (`CpuPercent`, `Load1`, `MemoryTotal`, ...):
    /// numbers as f64.
    pub async fn host_stats(&self) -> Result<std::collections::BTreeMap<String, f64>> {
        let raw: HashMap<String, OwnedValue> =
            self.call(MANAGER_PATH, MANAGER, "HostStats", &()).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(k, v)| {
                let n = match &*v {
                    Value::F64(f) => *f,
                    Value::U64(u) => *u as f64,
                    _ => return None,
                };
                Some((k, n))
            })
            .collect())
    }

    /// Every running container's figures from the daemon's last sample.
    pub async fn container_stats(&self) -> Result<Vec<ContainerStatsRow>> {
        self.call(MANAGER_PATH, MANAGER, "ListContainerStats", &())
            .await
    }

    pub async fn check(&self, name: &str) -> Result<Vec<String>> {
        self.call(MANAGER_PATH, MANAGER, "CheckService", &(name,))
            .await
    }

    pub async fn list_registry(&self) -> Result<Vec<RegistryRow>> {
        let rows: Vec<(String, String, String, String, Vec<String>)> = self
            .call(MANAGER_PATH, MANAGER, "ListRegistry", &())
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, kind, description, category, required_for)| RegistryRow {
                    name,
                    kind,
                    description,
                    category,
                    required_for,
                },
            )
            .collect())
    }

    pub async fn readiness(&self) -> Result<Vec<ReadinessRow>> {
        let rows: Vec<(String, String, Vec<String>)> =
            self.call(MANAGER_PATH, MANAGER, "Readiness", &()).await?;
        Ok(rows
            .into_iter()
            .map(|(name, verdict, problems)| ReadinessRow {
                name,
                verdict,
                problems,
            })
            .collect())
    }

    pub async fn required(&self, operation: &str) -> Result<Vec<RequiredRow>> {
        let rows: Vec<(String, bool, String, String, bool)> = self
            .call(MANAGER_PATH, MANAGER, "Required", &(operation,))
            .await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, direct, active_state, health, running)| RequiredRow {
                    name,
                    direct,
                    active_state,
                    health,
                    running,
                },
            )
            .collect())
    }

    pub async fn diagnose(&self, name: &str) -> Result<Vec<String>> {
        self.call(MANAGER_PATH, MANAGER, "Diagnose", &(name,)).await
    }

    /// (channel, delivered, error) for each channel tried.
    pub async fn test_notify(&self, channel: Option<&str>) -> Result<Vec<(String, bool, String)>> {
        self.call(
            MANAGER_PATH,
            MANAGER,
            "TestNotify",
            &(channel.unwrap_or(""),),
        )
        .await
    }

    pub async fn cancel(&self, id: u64) -> Result<()> {
        self.call(MANAGER_PATH, MANAGER, "CancelTask", &(id,)).await
    }

    // Another host of the cluster, through this host's daemon (which
    // holds the peer token); task ids are that host's.

    pub async fn host_services(&self, host: &str) -> Result<Vec<ServiceRow>> {
        self.call(MANAGER_PATH, MANAGER, "ListHostServices", &(host,))
            .await
    }

    pub async fn host_service(&self, host: &str, name: &str) -> Result<ServiceInfo> {
        let m: Props = self
            .call(MANAGER_PATH, MANAGER, "GetHostService", &(host, name))
            .await?;
        service_info(&m)
    }

    pub async fn host_manager(&self, host: &str) -> Result<ManagerInfo> {
        let m: Props = self
            .call(MANAGER_PATH, MANAGER, "GetHostManager", &(host,))
            .await?;
        manager_info(&m)
    }

    pub async fn host_tasks(
        &self,
        host: &str,
        service: Option<&str>,
        states: &[String],
        limit: Option<u32>,
    ) -> Result<Vec<TaskRow>> {
        let filter = task_filter(service, states, limit);
        self.call(MANAGER_PATH, MANAGER, "ListHostTasks", &(host, filter))
            .await
    }

    pub async fn host_task(&self, host: &str, id: u64) -> Result<TaskInfo> {
        let m: Props = self
            .call(MANAGER_PATH, MANAGER, "GetHostTask", &(host, id))
            .await?;
        task_info(&m)
    }

    pub async fn host_task_log_since(&self, host: &str, id: u64, skip: u32) -> Result<Vec<String>> {
        self.call(MANAGER_PATH, MANAGER, "GetHostTaskLog", &(host, id, skip))
            .await
    }

    /// `op` (start, stop, restart or update) on `host`'s service. The
    /// task id on that host.
    pub async fn host_op(
        &self,
        host: &str,
        op: ServiceOp,
        name: &str,
        mode: JobMode,
    ) -> Result<u64> {
        let method = op.host_method().ok_or_else(|| {
            ClientError::Protocol(format!("no host operation for {}", op.method()))
        })?;
        self.call(MANAGER_PATH, MANAGER, method, &(host, name, mode.as_str()))
            .await
    }

    /// The read end of a pipe carrying `host`'s service's container logs.
    pub async fn host_logs(
        &self,
        host: &str,
        name: &str,
        lines: u32,
        follow: bool,
    ) -> Result<std::fs::File> {
        let fd: OwnedFd = self
            .call(
                MANAGER_PATH,
                MANAGER,
                "HostServiceLogs",
                &(host, name, lines, follow),
            )
            .await?;
        let fd: std::os::fd::OwnedFd = fd.into();
        Ok(std::fs::File::from(fd))
    }

    /// ApplyAllHosts: the plan (host, action, service, reason), what was
    /// done and what failed.
    pub async fn apply_all_hosts(
        &self,
        dry_run: bool,
        force: bool,
    ) -> Result<(
        Vec<(String, String, String, String)>,
        Vec<String>,
        Vec<String>,
    )> {
        self.call(MANAGER_PATH, MANAGER, "ApplyAllHosts", &(dry_run, force))
            .await
    }

    /// PushConfig: `text` ("" for the daemon's own cluster file) to every
    /// host of its [hosts]; (host, outcome, path, hash, error) per host.
    pub async fn push_config(
        &self,
        text: &str,
        force: bool,
    ) -> Result<Vec<(String, String, String, String, String)>> {
        self.call(MANAGER_PATH, MANAGER, "PushConfig", &(text, force))
            .await
    }

    /// The read end of a pipe carrying the service's container logs.
    pub async fn logs(&self, name: &str, lines: u32, follow: bool) -> Result<std::fs::File> {
        let fd: OwnedFd = self
            .call(MANAGER_PATH, MANAGER, "ServiceLogs", &(name, lines, follow))
            .await?;
        let fd: std::os::fd::OwnedFd = fd.into();
        Ok(std::fs::File::from(fd))
    }
}

type Props = HashMap<String, OwnedValue>;

fn manager_info(m: &Props) -> Result<ManagerInfo> {
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

fn service_info(m: &Props) -> Result<ServiceInfo> {
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
        desired_source: prop(m, "DesiredSource")?,
        active_state: prop(m, "ActiveState")?,
        sub_state: prop(m, "SubState")?,
        health: prop(m, "Health")?,
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

fn task_info(m: &Props) -> Result<TaskInfo> {
    Ok(TaskInfo {
        id: prop(m, "Id")?,
        kind: prop(m, "Kind")?,
        service: prop(m, "Service")?,
        origin: prop(m, "Origin")?,
        state: prop(m, "State")?,
        result: prop(m, "Result")?,
        created_usec: prop(m, "CreatedUsec")?,
        started_usec: prop(m, "StartedUsec")?,
        finished_usec: prop(m, "FinishedUsec")?,
        error: prop(m, "Error")?,
    })
}

/// ListTasks' filter.
fn task_filter<'a>(
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
