//! `org.stackd1.Service` at `/org/stackd1/service/<escaped name>`.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::zvariant::{OwnedObjectPath, Value};
use zbus::{interface, Connection};

use super::error::Result;
use super::path::task_path;
use super::types::ContainerRow;
use super::Shared;
use crate::control::{Op, ServiceStatus};

pub(super) struct Service {
    pub(super) shared: Shared,
    pub(super) name: String,
}

impl Service {
    fn status(&self) -> zbus::fdo::Result<ServiceStatus> {
        self.shared
            .control
            .service(&self.name)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))
    }

    async fn op(&self, conn: &Connection, header: &Header<'_>, op: Op) -> Result<OwnedObjectPath> {
        self.shared.policy.check(conn, header).await?;
        let task = self
            .shared
            .control
            .request(op, &self.name, &super::manager::origin(header), false)
            .await?;
        self.shared.register_task(task.id).await;
        Ok(task_path(task.id))
    }
}

/// Every property with its value, for one `PropertiesChanged` per change.
pub(super) fn properties(s: &ServiceStatus) -> HashMap<&'static str, Value<'static>> {
    let containers: Vec<ContainerRow> = s.containers.iter().map(ContainerRow::from_info).collect();
    HashMap::from([
        ("Name", Value::from(s.name.clone())),
        ("Host", Value::from(s.host.clone())),
        ("DesiredState", Value::from(s.desired.as_str().to_string())),
        ("DesiredSource", Value::from(s.desired_source.to_string())),
        ("ActiveState", Value::from(s.active_state.to_string())),
        ("SubState", Value::from(s.sub_state.to_string())),
        ("Health", Value::from(s.health.to_string())),
        ("HealthMessage", Value::from(s.health_message.clone())),
        ("Containers", Value::from(containers)),
        ("StateChangeTimestamp", Value::from(s.state_change_usec)),
        ("RestartCount", Value::from(s.restart_count)),
        ("CpuPercent", Value::from(s.cpu_percent)),
        ("MemoryBytes", Value::from(s.memory_bytes)),
        (
            "ComposeFile",
            Value::from(s.compose_file.display().to_string()),
        ),
        ("Ready", Value::from(s.ready)),
        ("Kind", Value::from(s.kind.to_string())),
        ("Description", Value::from(s.description.clone())),
        ("Category", Value::from(s.category.clone())),
        ("RequiredFor", Value::from(s.required_for.clone())),
    ])
}

#[interface(name = "org.stackd1.Service")]
impl Service {
    async fn start(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Start).await
    }

    async fn stop(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Stop).await
    }

    async fn restart(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Restart).await
    }

    async fn update(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Update).await
    }

    #[zbus(property)]
    async fn name(&self) -> String {
        self.name.clone()
    }

    #[zbus(property)]
    async fn host(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.host)
    }

    #[zbus(property)]
    async fn desired_state(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.desired.as_str().to_string())
    }

    /// "user" when a person said start or stop, "config" when it follows auto_start.
    #[zbus(property)]
    async fn desired_source(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.desired_source.to_string())
    }

    #[zbus(property)]
    async fn active_state(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.active_state.to_string())
    }

    #[zbus(property)]
    async fn sub_state(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.sub_state.to_string())
    }

    #[zbus(property)]
    async fn health(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.health.to_string())
    }

    #[zbus(property)]
    async fn health_message(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.health_message)
    }

    #[zbus(property)]
    async fn containers(&self) -> zbus::fdo::Result<Vec<ContainerRow>> {
        Ok(self
            .status()?
            .containers
            .iter()
            .map(ContainerRow::from_info)
            .collect())
    }

    #[zbus(property)]
    async fn state_change_timestamp(&self) -> zbus::fdo::Result<u64> {
        Ok(self.status()?.state_change_usec)
    }

    #[zbus(property)]
    async fn restart_count(&self) -> zbus::fdo::Result<u64> {
        Ok(self.status()?.restart_count)
    }

    /// Running and healthy as a dependent's start waits for it (the probe,
    /// if any, has said healthy); what a task queued by QueueAndWait waits
    /// for.
    #[zbus(property)]
    async fn ready(&self) -> zbus::fdo::Result<bool> {
        Ok(self.status()?.ready)
    }

    #[zbus(property)]
    async fn cpu_percent(&self) -> zbus::fdo::Result<f64> {
        Ok(self.status()?.cpu_percent)
    }

    /// The Compose file the service is deployed from.
    #[zbus(property)]
    async fn compose_file(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.compose_file.display().to_string())
    }

    #[zbus(property)]
    async fn memory_bytes(&self) -> zbus::fdo::Result<u64> {
        Ok(self.status()?.memory_bytes)
    }

    /// `kind`: compose, unit or external.
    #[zbus(property)]
    async fn kind(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.kind.to_string())
    }

    /// `description` from the cluster file; "" when none.
    #[zbus(property)]
    async fn description(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.description)
    }

    /// `category` from the cluster file; "" when none.
    #[zbus(property)]
    async fn category(&self) -> zbus::fdo::Result<String> {
        Ok(self.status()?.category)
    }

    /// `required_for`: the operations that need this service running.
    #[zbus(property)]
    async fn required_for(&self) -> zbus::fdo::Result<Vec<String>> {
        Ok(self.status()?.required_for)
    }
}
