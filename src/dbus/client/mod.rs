//! The client side, for stackctl: typed calls over whichever connection
//! reaches the daemon, so the CLI never sees zbus. The calls go through
//! the `#[zbus::proxy]` traits of `proxy.rs`.

use std::collections::HashMap;

use thiserror::Error;
use zbus::proxy::CacheProperties;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::Connection;

use super::path::{self, MANAGER_PATH};
use super::proxy::{ManagerProxy, PropertiesProxy, Props, TaskProxy};
use super::types::{ContainerStatsRow, DependencyRow, HostRow, PlanRow, ServiceRow, TaskRow};
pub use super::types::{JobMode, ServiceOp};
use super::BUS_NAME;
use crate::health::Health;

mod rows;
use rows::{manager_info, service_info, task_filter, task_info};
pub use rows::{ManagerInfo, ReadinessRow, RegistryRow, RequiredRow, ServiceInfo, TaskInfo};

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
    /// The bus or the connection failed underneath (not an answer of the
    /// daemon's): zbus's error, kept as it is.
    #[error(transparent)]
    Bus(zbus::Error),
    #[error(transparent)]
    Fdo(zbus::fdo::Error),
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
                other => ClientError::Fdo(other),
            },
            other => ClientError::Bus(other),
        }
    }
}

type Result<T> = std::result::Result<T, ClientError>;

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
    manager: ManagerProxy<'static>,
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
        // No property cache: stackctl reads each object once, and on the
        // private socket there is no bus to subscribe to changes with.
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(Client { conn, p2p, manager })
    }

    async fn all(&self, path: &str, iface: &str) -> Result<Props> {
        let props = PropertiesProxy::builder(&self.conn)
            .path(path)?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(props.get_all(iface).await?)
    }

    /// A task id from the task path an operation answered with.
    fn task_id(method: &str, path: &OwnedObjectPath) -> Result<u64> {
        path::task_id(path.as_str())
            .ok_or_else(|| ClientError::Protocol(format!("{method} returned {path}, not a task")))
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
        Ok(self.manager.list_hosts().await?)
    }

    pub async fn list_services(&self) -> Result<Vec<ServiceRow>> {
        Ok(self.manager.list_services().await?)
    }

    pub async fn service(&self, name: &str) -> Result<ServiceInfo> {
        let path = self.manager.get_service(name).await?;
        service_info(&self.all(path.as_str(), SERVICE).await?)
    }

    /// Queues `op` on `name` (StartService, ...). Returns the task id.
    pub async fn service_op(&self, op: ServiceOp, name: &str) -> Result<u64> {
        let m = &self.manager;
        let path = match op {
            ServiceOp::Start => m.start_service(name).await?,
            ServiceOp::Stop => m.stop_service(name).await?,
            ServiceOp::Restart => m.restart_service(name).await?,
            ServiceOp::Update => m.update_service(name).await?,
            ServiceOp::Pull => m.pull_service(name).await?,
            ServiceOp::Down => m.down_service(name).await?,
            ServiceOp::Rollback => m.rollback(name).await?,
        };
        Self::task_id(op.method(), &path)
    }

    /// StartServiceMode or StopServiceMode with a job mode. Returns the
    /// task id.
    pub async fn service_op_mode(&self, op: ServiceOp, name: &str, mode: JobMode) -> Result<u64> {
        let mode = mode.as_str();
        let path = match op {
            ServiceOp::Start => self.manager.start_service_mode(name, mode).await?,
            ServiceOp::Stop => self.manager.stop_service_mode(name, mode).await?,
            _ => {
                return Err(ClientError::Protocol(format!(
                    "{} takes no job mode",
                    op.method()
                )))
            }
        };
        Self::task_id(op.mode_method().unwrap_or_default(), &path)
    }

    /// QueueAndWait: start, restart or update whose task waits for the
    /// service to be healthy. Returns the task id.
    pub async fn queue_and_wait(&self, name: &str, op: ServiceOp, mode: JobMode) -> Result<u64> {
        let path = self
            .manager
            .queue_and_wait(name, op.waited(), mode.as_str())
            .await?;
        Self::task_id("QueueAndWait", &path)
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
        let path = self.manager.prune(&options).await?;
        Self::task_id("Prune", &path)
    }

    pub async fn plan_start(&self, name: &str, mode: &str) -> Result<Vec<PlanRow>> {
        Ok(self.manager.plan_start(name, mode).await?)
    }

    pub async fn dependencies(&self, name: &str, reverse: bool) -> Result<Vec<DependencyRow>> {
        Ok(self.manager.list_dependencies(name, reverse).await?)
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
        let path = if with_volumes {
            self.manager.migrate_with(name, host, mode, true).await?
        } else {
            self.manager.migrate_mode(name, host, mode).await?
        };
        Self::task_id("MigrateMode", &path)
    }

    /// ApplyMode: "replace" (`force`) also stops more services no longer
    /// assigned to this host than `reload_guard` allows.
    pub async fn apply(&self, force: bool) -> Result<Vec<u64>> {
        let mode = if force { "replace" } else { "fail" };
        let paths = self.manager.apply_mode(mode).await?;
        Ok(paths
            .iter()
            .filter_map(|p| path::task_id(p.as_str()))
            .collect())
    }

    /// ReloadMode: "replace" (`force`) takes a file that would remove
    /// more services than `reload_guard` allows.
    pub async fn reload(&self, force: bool) -> Result<()> {
        let mode = if force { "replace" } else { "fail" };
        Ok(self.manager.reload_mode(mode).await?)
    }

    pub async fn task(&self, id: u64) -> Result<TaskInfo> {
        let path = self.manager.get_task(id).await?;
        task_info(&self.all(path.as_str(), TASK).await?)
    }

    pub async fn task_log_since(&self, id: u64, skip: u32) -> Result<Vec<String>> {
        let task = TaskProxy::builder(&self.conn)
            .path(path::task_path(id))?
            .cache_properties(CacheProperties::No)
            .build()
            .await?;
        Ok(task.log_since(skip).await?)
    }

    pub async fn tasks(
        &self,
        service: Option<&str>,
        states: &[String],
        limit: Option<u32>,
    ) -> Result<Vec<TaskRow>> {
        let filter = task_filter(service, states, limit);
        Ok(self.manager.list_tasks(&filter).await?)
    }

    /// Host figures by name (`CpuPercent`, `Load1`, `MemoryTotal`, ...):
    /// numbers as f64.
    pub async fn host_stats(&self) -> Result<std::collections::BTreeMap<String, f64>> {
        let raw = self.manager.host_stats().await?;
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
        Ok(self.manager.list_container_stats().await?)
    }

    pub async fn check(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.manager.check_service(name).await?)
    }

    pub async fn list_registry(&self) -> Result<Vec<RegistryRow>> {
        let rows = self.manager.list_registry().await?;
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
        let rows = self.manager.readiness().await?;
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
        let rows = self.manager.required(operation).await?;
        Ok(rows
            .into_iter()
            .map(
                |(name, direct, active_state, health, running)| RequiredRow {
                    name,
                    direct,
                    active_state: active_state.into(),
                    health: Health::read(&health),
                    running,
                },
            )
            .collect())
    }

    pub async fn diagnose(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.manager.diagnose(name).await?)
    }

    /// (channel, delivered, error) for each channel tried.
    pub async fn test_notify(&self, channel: Option<&str>) -> Result<Vec<(String, bool, String)>> {
        Ok(self.manager.test_notify(channel.unwrap_or("")).await?)
    }

    pub async fn cancel(&self, id: u64) -> Result<()> {
        Ok(self.manager.cancel_task(id).await?)
    }

    // Another host of the cluster, through this host's daemon (which
    // holds the peer token); task ids are that host's.

    pub async fn host_services(&self, host: &str) -> Result<Vec<ServiceRow>> {
        Ok(self.manager.list_host_services(host).await?)
    }

    pub async fn host_service(&self, host: &str, name: &str) -> Result<ServiceInfo> {
        service_info(&self.manager.get_host_service(host, name).await?)
    }

    pub async fn host_manager(&self, host: &str) -> Result<ManagerInfo> {
        manager_info(&self.manager.get_host_manager(host).await?)
    }

    pub async fn host_tasks(
        &self,
        host: &str,
        service: Option<&str>,
        states: &[String],
        limit: Option<u32>,
    ) -> Result<Vec<TaskRow>> {
        let filter = task_filter(service, states, limit);
        Ok(self.manager.list_host_tasks(host, &filter).await?)
    }

    pub async fn host_task(&self, host: &str, id: u64) -> Result<TaskInfo> {
        task_info(&self.manager.get_host_task(host, id).await?)
    }

    pub async fn host_task_log_since(&self, host: &str, id: u64, skip: u32) -> Result<Vec<String>> {
        Ok(self.manager.get_host_task_log(host, id, skip).await?)
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
        let (m, mode) = (&self.manager, mode.as_str());
        Ok(match op {
            ServiceOp::Start => m.start_host_service(host, name, mode).await?,
            ServiceOp::Stop => m.stop_host_service(host, name, mode).await?,
            ServiceOp::Restart => m.restart_host_service(host, name, mode).await?,
            ServiceOp::Update => m.update_host_service(host, name, mode).await?,
            _ => {
                return Err(ClientError::Protocol(format!(
                    "no host operation for {}",
                    op.method()
                )))
            }
        })
    }

    /// The read end of a pipe carrying `host`'s service's container logs.
    pub async fn host_logs(
        &self,
        host: &str,
        name: &str,
        lines: u32,
        follow: bool,
    ) -> Result<std::fs::File> {
        let fd = self
            .manager
            .host_service_logs(host, name, lines, follow)
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
        Ok(self.manager.apply_all_hosts(dry_run, force).await?)
    }

    /// PushConfig: `text` ("" for the daemon's own cluster file) to every
    /// host of its [hosts]; (host, outcome, path, hash, error) per host.
    pub async fn push_config(
        &self,
        text: &str,
        force: bool,
    ) -> Result<Vec<(String, String, String, String, String)>> {
        Ok(self.manager.push_config(text, force).await?)
    }

    /// The read end of a pipe carrying the service's container logs.
    pub async fn logs(&self, name: &str, lines: u32, follow: bool) -> Result<std::fs::File> {
        let fd = self.manager.service_logs(name, lines, follow).await?;
        let fd: std::os::fd::OwnedFd = fd.into();
        Ok(std::fs::File::from(fd))
    }
}
