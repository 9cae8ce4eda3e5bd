//! Which daemon stackctl talks to: the local one over D-Bus, or a host of
//! the cluster over its peer endpoint (`-H HOST`). Both answer with the
//! same structs, so the printing code does not know which it was.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{exit, Failed, Result};
use crate::dbus::client::{Client, ManagerInfo, ServiceInfo, TaskInfo};
use crate::dbus::path;
use crate::dbus::types::{ServiceRow, TaskRow};
use crate::peer::{PeerClient, PeerClientError};

pub(super) enum Conn {
    Bus(Client),
    Peer { host: String, client: PeerClient },
}

impl From<PeerClientError> for Failed {
    fn from(e: PeerClientError) -> Self {
        let code = match e.kind() {
            Some("NoSuchService" | "NoSuchTask") => exit::NO_SUCH,
            Some("InvalidArgument") => exit::USAGE,
            _ => exit::FAILURE,
        };
        Failed(code, e.to_string())
    }
}

/// The same JSON, read into the D-Bus client's struct (the field names match).
fn convert<A: Serialize, B: DeserializeOwned>(a: &A) -> Result<B> {
    serde_json::to_value(a)
        .and_then(serde_json::from_value)
        .map_err(|e| {
            Failed(
                exit::FAILURE,
                format!("unexpected answer from the host: {e}"),
            )
        })
}

/// The route of a method: start, stop, restart or update.
fn op_name(method: &str) -> Result<&'static str> {
    Ok(match method {
        "StartService" | "StartServiceMode" => "start",
        "StopService" | "StopServiceMode" => "stop",
        "RestartService" => "restart",
        "UpdateService" => "update",
        other => {
            return Err(Failed(
                exit::USAGE,
                format!("{other} is not available over the peer endpoint; run it on the host"),
            ))
        }
    })
}

impl Conn {
    pub(super) async fn list_services(&self) -> Result<Vec<ServiceRow>> {
        match self {
            Conn::Bus(c) => Ok(c.list_services().await?),
            Conn::Peer { client, .. } => Ok(client
                .services()
                .await?
                .into_iter()
                .map(|s| ServiceRow {
                    path: path::service_path(&s.name),
                    name: s.name,
                    host: s.host,
                    desired_state: s.desired_state,
                    active_state: s.active_state,
                    sub_state: s.sub_state,
                    health: s.health,
                    containers: s.containers,
                })
                .collect()),
        }
    }

    pub(super) async fn service(&self, name: &str) -> Result<ServiceInfo> {
        match self {
            Conn::Bus(c) => Ok(c.service(name).await?),
            Conn::Peer { client, .. } => convert(&client.service(name).await?),
        }
    }

    pub(super) async fn manager(&self) -> Result<ManagerInfo> {
        match self {
            Conn::Bus(c) => Ok(c.manager().await?),
            Conn::Peer { client, .. } => convert(&client.host().await?),
        }
    }

    /// Queues `method` ("StartService", ...) and returns the task id.
    pub(super) async fn service_op(&self, method: &str, name: &str) -> Result<u64> {
        match self {
            Conn::Bus(c) => Ok(c.service_op(method, name).await?),
            Conn::Peer { client, .. } => {
                let caller = format!("stackctl@{}", local_hostname());
                let op = op_name(method)?;
                Ok(client.op(name, op, Some(&caller), false).await?.id)
            }
        }
    }

    /// StartServiceMode/StopServiceMode ("replace": stop what stands in
    /// the way first, and start even when a peer cannot be asked); over the
    /// peer endpoint "replace" is the request's `force`.
    pub(super) async fn service_op_mode(
        &self,
        method: &str,
        name: &str,
        mode: &str,
    ) -> Result<u64> {
        match self {
            Conn::Bus(c) => Ok(c.service_op_mode(method, name, mode).await?),
            Conn::Peer { client, .. } => {
                let caller = format!("stackctl@{}", local_hostname());
                let op = op_name(method)?;
                let force = mode == "replace";
                Ok(client.op(name, op, Some(&caller), force).await?.id)
            }
        }
    }

    pub(super) async fn task(&self, id: u64) -> Result<TaskInfo> {
        match self {
            Conn::Bus(c) => Ok(c.task(id).await?),
            Conn::Peer { client, .. } => convert(&client.task(id).await?),
        }
    }

    pub(super) async fn task_log_since(&self, id: u64, skip: u32) -> Result<Vec<String>> {
        match self {
            Conn::Bus(c) => Ok(c.task_log_since(id, skip).await?),
            Conn::Peer { client, .. } => Ok(client
                .task(id)
                .await?
                .log
                .unwrap_or_default()
                .into_iter()
                .skip(skip as usize)
                .collect()),
        }
    }

    pub(super) async fn tasks(
        &self,
        service: Option<&str>,
        states: &[String],
        limit: Option<u32>,
    ) -> Result<Vec<TaskRow>> {
        match self {
            Conn::Bus(c) => Ok(c.tasks(service, states, limit).await?),
            Conn::Peer { client, .. } => {
                let rows = client.tasks(service, limit.unwrap_or(20)).await?;
                Ok(rows
                    .into_iter()
                    .filter(|t| states.is_empty() || states.contains(&t.state))
                    .map(|t| TaskRow {
                        path: path::task_path(t.id),
                        id: t.id,
                        kind: t.kind,
                        service: t.service,
                        state: t.state,
                        result: t.result,
                        origin: t.origin,
                        created_usec: t.created_usec,
                    })
                    .collect())
            }
        }
    }

    /// Container logs: over D-Bus only for now.
    pub(super) async fn logs(&self, name: &str, lines: u32, follow: bool) -> Result<std::fs::File> {
        match self {
            Conn::Bus(c) => Ok(c.logs(name, lines, follow).await?),
            Conn::Peer { host, .. } => Err(Failed(
                exit::FAILURE,
                format!("container logs of {host} are not served over the peer endpoint yet"),
            )),
        }
    }

    pub(super) fn bus(&self) -> Result<&Client> {
        match self {
            Conn::Bus(c) => Ok(c),
            Conn::Peer { host, .. } => Err(Failed(
                exit::USAGE,
                format!("this command is not available with -H {host}; run it on that host"),
            )),
        }
    }
}

fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default()
}
