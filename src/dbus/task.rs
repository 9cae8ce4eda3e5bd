//! `org.stackd1.Task` at `/org/stackd1/task/<id>`.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::zvariant::Value;
use zbus::{interface, Connection};

use super::error::Result;
use super::Shared;
use crate::store::TaskRecord;

pub(super) struct Task {
    pub(super) shared: Shared,
    pub(super) id: u64,
}

impl Task {
    fn record(&self) -> zbus::fdo::Result<TaskRecord> {
        self.shared
            .control
            .task(self.id)
            .map_err(|e| zbus::fdo::Error::UnknownObject(e.to_string()))
    }
}

pub(super) fn properties(t: &TaskRecord) -> HashMap<&'static str, Value<'static>> {
    HashMap::from([
        ("State", Value::from(t.state.as_str().to_string())),
        ("Result", Value::from(t.result.clone())),
        ("StartedUsec", Value::from(t.started_usec.unwrap_or(0))),
        ("FinishedUsec", Value::from(t.finished_usec.unwrap_or(0))),
        ("Error", Value::from(t.error.clone().unwrap_or_default())),
    ])
}

#[interface(name = "org.stackd1.Task")]
impl Task {
    async fn cancel(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<()> {
        self.shared.policy.check(conn, &header).await?;
        Ok(self.shared.control.cancel(self.id)?)
    }

    /// The whole stored log, one line per element. Needs what reading
    /// the journal needs (`Policy::check_logs`): Compose prints secrets.
    async fn log(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<String>> {
        self.shared.policy.check_logs(conn, &header).await?;
        Ok(self.shared.control.task_log(self.id)?)
    }

    /// The log lines after the first `skip` ones (for following a task).
    async fn log_since(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        skip: u32,
    ) -> Result<Vec<String>> {
        self.shared.policy.check_logs(conn, &header).await?;
        Ok(self
            .shared
            .control
            .task_log(self.id)?
            .into_iter()
            .skip(skip as usize)
            .collect())
    }

    #[zbus(property)]
    async fn id(&self) -> u64 {
        self.id
    }

    #[zbus(property)]
    async fn kind(&self) -> zbus::fdo::Result<String> {
        Ok(self.record()?.kind)
    }

    #[zbus(property)]
    async fn service(&self) -> zbus::fdo::Result<String> {
        Ok(self.record()?.service)
    }

    /// Who asked for it: "dbus:<sender>", "private", "boot", "start", ...
    #[zbus(property)]
    async fn origin(&self) -> zbus::fdo::Result<String> {
        Ok(self.record()?.origin.to_string())
    }

    #[zbus(property)]
    async fn state(&self) -> zbus::fdo::Result<String> {
        Ok(self.record()?.state.as_str().to_string())
    }

    #[zbus(property)]
    async fn result(&self) -> zbus::fdo::Result<String> {
        Ok(self.record()?.result)
    }

    #[zbus(property)]
    async fn created_usec(&self) -> zbus::fdo::Result<u64> {
        Ok(self.record()?.created_usec)
    }

    #[zbus(property)]
    async fn started_usec(&self) -> zbus::fdo::Result<u64> {
        Ok(self.record()?.started_usec.unwrap_or(0))
    }

    #[zbus(property)]
    async fn finished_usec(&self) -> zbus::fdo::Result<u64> {
        Ok(self.record()?.finished_usec.unwrap_or(0))
    }

    #[zbus(property)]
    async fn error(&self) -> zbus::fdo::Result<String> {
        Ok(self.record()?.error.unwrap_or_default())
    }
}
