//! Which daemon answers stackctl: this host's over D-Bus, or another host
//! of the cluster (`-H HOST`) through this host's daemon, which relays the
//! call to that host's peer endpoint with its own token and cluster file
//! (the Manager's `…Host…` methods). Both answer with the same structs,
//! so the printing code does not know which it was; stackctl itself never
//! reads the token or the cluster file.

use super::{exit, Failed, Result};
use crate::dbus::client::{Client, JobMode, ManagerInfo, ServiceInfo, ServiceOp, TaskInfo};
use crate::dbus::types::{ServiceRow, TaskRow};

pub(super) enum Conn {
    Bus(Client),
    /// Another host, through the local daemon.
    Host {
        host: String,
        client: Client,
    },
}

/// Over the relay only start, stop, restart and update go.
fn relayed(op: ServiceOp) -> Result<ServiceOp> {
    match op.host_method() {
        Some(_) => Ok(op),
        None => Err(Failed(
            exit::USAGE,
            format!(
                "{} is not available with -H; run it on the host",
                op.method()
            ),
        )),
    }
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

    /// Queues `op` and returns the task id.
    pub(super) async fn service_op(&self, op: ServiceOp, name: &str) -> Result<u64> {
        Ok(match self {
            Conn::Bus(c) => c.service_op(op, name).await?,
            Conn::Host { host, client } => {
                client
                    .host_op(host, relayed(op)?, name, JobMode::Fail)
                    .await?
            }
        })
    }

    /// Start or stop with a job mode (`Replace`: stop what stands in the
    /// way first, and start even when a peer cannot be asked).
    pub(super) async fn service_op_mode(
        &self,
        op: ServiceOp,
        name: &str,
        mode: JobMode,
    ) -> Result<u64> {
        Ok(match self {
            Conn::Bus(c) => c.service_op_mode(op, name, mode).await?,
            Conn::Host { host, client } => client.host_op(host, relayed(op)?, name, mode).await?,
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
