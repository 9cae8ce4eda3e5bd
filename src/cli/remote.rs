//! Which daemon answers stackctl: this host's over D-Bus, or another host
//! of the cluster (`-H HOST`) through this host's daemon, which relays the
//! call to that host's peer endpoint with its own token and cluster file
//! (the Manager's `…Host…` methods). Both answer with the same structs,
//! so the printing code does not know which it was; stackctl itself never
//! reads the token or the cluster file.

use super::{exit, Failed, Result};
use crate::dbus::client::{Client, ManagerInfo, ServiceInfo, TaskInfo};
use crate::dbus::types::{ServiceRow, TaskRow};

pub(super) enum Conn {
    Bus(Client),
    /// Another host, through the local daemon.
    Host {
        host: String,
        client: Client,
    },
}

/// The operation of a Manager method over the relay: start, stop, restart
/// or update.
fn op_name(method: &str) -> Result<&'static str> {
    Ok(match method {
        "StartService" | "StartServiceMode" => "start",
        "StopService" | "StopServiceMode" => "stop",
        "RestartService" => "restart",
        "UpdateService" => "update",
        other => {
            return Err(Failed(
                exit::USAGE,
                format!("{other} is not available with -H; run it on the host"),
            ))
        }
    })
}

impl Conn {
    /// `-H host`: the local daemon, asking `host` through it; the local
    /// daemon itself when `host` names this host.
    pub(super) async fn to_host(client: Client, host: &str) -> Result<Conn> {
        if client.manager().await?.host == host {
            return Ok(Conn::Bus(client));
        }
        Ok(Conn::Host {
            host: host.to_string(),
            client,
        })
    }

    /// This host's daemon, whichever host the calls are about.
    pub(super) fn local(&self) -> &Client {
        match self {
            Conn::Bus(c) | Conn::Host { client: c, .. } => c,
        }
    }

    pub(super) async fn list_services(&self) -> Result<Vec<ServiceRow>> {
        Ok(match self {
            Conn::Bus(c) => c.list_services().await?,
            Conn::Host { host, client } => client.host_services(host).await?,
        })
    }

    pub(super) async fn service(&self, name: &str) -> Result<ServiceInfo> {
        Ok(match self {
            Conn::Bus(c) => c.service(name).await?,
            Conn::Host { host, client } => client.host_service(host, name).await?,
        })
    }

    pub(super) async fn manager(&self) -> Result<ManagerInfo> {
        Ok(match self {
            Conn::Bus(c) => c.manager().await?,
            Conn::Host { host, client } => client.host_manager(host).await?,
        })
    }

    /// Queues `method` ("StartService", ...) and returns the task id.
    pub(super) async fn service_op(&self, method: &str, name: &str) -> Result<u64> {
        self.service_op_mode(method, name, "fail").await
    }

    /// StartServiceMode/StopServiceMode ("replace": stop what stands in
    /// the way first, and start even when a peer cannot be asked).
    pub(super) async fn service_op_mode(
        &self,
        method: &str,
        name: &str,
        mode: &str,
    ) -> Result<u64> {
        Ok(match self {
            Conn::Bus(c) if method.ends_with("Mode") => {
                c.service_op_mode(method, name, mode).await?
            }
            Conn::Bus(c) => c.service_op(method, name).await?,
            Conn::Host { host, client } => {
                client.host_op(host, op_name(method)?, name, mode).await?
            }
        })
    }

    pub(super) async fn task(&self, id: u64) -> Result<TaskInfo> {
        Ok(match self {
            Conn::Bus(c) => c.task(id).await?,
            Conn::Host { host, client } => client.host_task(host, id).await?,
        })
    }

    pub(super) async fn task_log_since(&self, id: u64, skip: u32) -> Result<Vec<String>> {
        Ok(match self {
            Conn::Bus(c) => c.task_log_since(id, skip).await?,
            Conn::Host { host, client } => client.host_task_log_since(host, id, skip).await?,
        })
    }

    pub(super) async fn tasks(
        &self,
        service: Option<&str>,
        states: &[String],
        limit: Option<u32>,
    ) -> Result<Vec<TaskRow>> {
        Ok(match self {
            Conn::Bus(c) => c.tasks(service, states, limit).await?,
            Conn::Host { host, client } => client.host_tasks(host, service, states, limit).await?,
        })
    }

    /// Container logs; another host's are streamed from its peer endpoint
    /// through the local daemon.
    pub(super) async fn logs(&self, name: &str, lines: u32, follow: bool) -> Result<std::fs::File> {
        Ok(match self {
            Conn::Bus(c) => c.logs(name, lines, follow).await?,
            Conn::Host { host, client } => client.host_logs(host, name, lines, follow).await?,
        })
    }

    pub(super) fn bus(&self) -> Result<&Client> {
        match self {
            Conn::Bus(c) => Ok(c),
            Conn::Host { host, .. } => Err(Failed(
                exit::USAGE,
                format!("this command is not available with -H {host}; run it on that host"),
            )),
        }
    }
}
