//! The Manager's work behind its D-Bus methods: queueing a person's
//! change (mode, authorization, origin), and the rows its reading methods
//! answer with. `mod.rs` keeps the interface itself, one short method each.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::zvariant::{OwnedFd, OwnedObjectPath, OwnedValue};
use zbus::Connection;

use super::Manager;
use crate::control::{Control, ControlError, HostValue, Op};
use crate::dbus::error::{Error, Result};
use crate::dbus::path::task_path;
use crate::dbus::remote;
use crate::dbus::types::{parse_mode, prune_options, DependencyRow, PlanRow, TaskRow};
use crate::store::{Origin, TaskFilter, TaskRecord, TaskState};

impl Manager {
    /// A change a caller asked for, in a job mode ("fail" or "replace"):
    /// mode checked, caller authorized, then `queue` with (force, origin);
    /// the task's object is registered before its path is returned.
    pub(super) async fn queue<F>(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        mode: &str,
        queue: impl FnOnce(bool, Origin) -> F,
    ) -> Result<OwnedObjectPath>
    where
        F: std::future::Future<Output = std::result::Result<TaskRecord, ControlError>>,
    {
        let force = parse_mode(mode).map_err(Error::InvalidArgument)?;
        self.shared.policy.check(conn, header).await?;
        let task = queue(force, origin(header)).await?;
        self.shared.register_task(task.id).await;
        Ok(task_path(task.id))
    }

    pub(super) async fn migrate_as(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        name: &str,
        host: &str,
        mode: &str,
        volumes: bool,
    ) -> Result<OwnedObjectPath> {
        let control = &self.shared.control;
        self.queue(conn, header, mode, |force, origin| async move {
            control
                .migrate_with(name, host, force, volumes, &origin)
                .await
        })
        .await
    }

    pub(super) async fn op(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        op: Op,
        name: &str,
        mode: &str,
    ) -> Result<OwnedObjectPath> {
        let control = &self.shared.control;
        self.queue(conn, header, mode, |force, origin| async move {
            control.request(op, name, &origin, force).await
        })
        .await
    }
}

impl Manager {
    pub(super) async fn apply_as(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        mode: &str,
    ) -> Result<Vec<OwnedObjectPath>> {
        let force = parse_mode(mode).map_err(Error::InvalidArgument)?;
        self.shared.policy.check(conn, header).await?;
        let task = self.shared.control.apply(&origin(header), force)?;
        self.shared.register_task(task.id).await;
        Ok(vec![task_path(task.id)])
    }

    pub(super) async fn reload_as(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        mode: &str,
    ) -> Result<()> {
        let force = parse_mode(mode).map_err(Error::InvalidArgument)?;
        self.shared.policy.check(conn, header).await?;
        let control = self.shared.control.clone();
        Ok(tokio::task::spawn_blocking(move || control.reload(force))
            .await
            .map_err(|e| Error::Failed(e.to_string()))??)
    }
}

impl Manager {
    /// A start, stop, restart or update relayed to `host`, once the caller
    /// may change state here.
    pub(super) async fn host_op(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        host: &str,
        name: &str,
        op: &str,
        mode: &str,
    ) -> Result<u64> {
        let force = parse_mode(mode).map_err(Error::InvalidArgument)?;
        self.shared.policy.check(conn, header).await?;
        let caller = format!("{}@{}", origin(header), self.shared.control.manager().host);
        remote::op(&self.shared.control, host, name, op, force, &caller).await
    }
}

/// Who asked, for the task's `origin` ("dbus::1.42" or "private").
pub(in crate::dbus) fn origin(header: &Header<'_>) -> Origin {
    Origin::dbus(header.sender().map(|s| s.as_str()))
}

pub(in crate::dbus) fn parse_filter(filter: HashMap<String, OwnedValue>) -> Result<TaskFilter> {
    let mut out = TaskFilter::default();
    for (key, value) in filter {
        match key.as_str() {
            "service" => {
                out.service = Some(String::try_from(value).map_err(|_| bad("service", "a string"))?)
            }
            "limit" => {
                out.limit =
                    Some(u32::try_from(value).map_err(|_| bad("limit", "a uint32"))? as usize)
            }
            "state" => {
                let states: Vec<String> = match String::try_from(
                    value
                        .try_clone()
                        .map_err(|e| Error::Failed(e.to_string()))?,
                ) {
                    Ok(s) => vec![s],
                    Err(_) => Vec::<String>::try_from(value)
                        .map_err(|_| bad("state", "a string or an array of strings"))?,
                };
                for s in states {
                    let st: TaskState = s
                        .parse()
                        .map_err(|e| Error::InvalidArgument(format!("{e}")))?;
                    out.states.push(st);
                }
            }
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown filter key {other:?} (known: service, state, limit)"
                )))
            }
        }
    }
    Ok(out)
}

fn bad(key: &str, want: &str) -> Error {
    Error::InvalidArgument(format!("filter {key} must be {want}"))
}

impl Manager {
    /// QueueAndWait: start, restart or update, its task waiting for health.
    pub(super) async fn queue_and_wait_as(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        name: &str,
        operation: &str,
        mode: &str,
    ) -> Result<OwnedObjectPath> {
        let op = match operation {
            "start" => Op::Start,
            "restart" => Op::Restart,
            "update" => Op::Update,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "operation {other:?}: expected start, restart or update"
                )))
            }
        };
        let control = &self.shared.control;
        self.queue(conn, header, mode, |force, origin| async move {
            control.request_and_wait(op, name, &origin, force).await
        })
        .await
    }

    pub(super) async fn prune_as(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        let opts = prune_options(options).map_err(Error::InvalidArgument)?;
        let control = &self.shared.control;
        self.queue(conn, header, "fail", |_, origin| async move {
            control.prune(opts, &origin)
        })
        .await
    }

    pub(super) async fn rollback_as(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        let control = &self.shared.control;
        self.queue(conn, header, "fail", |_, origin| async move {
            control.rollback(name, &origin).await
        })
        .await
    }
}

// What the Manager's reading methods answer, built from the core.

pub(super) fn plan_start(control: &Control, name: &str, mode: &str) -> Result<Vec<PlanRow>> {
    let force = parse_mode(mode).map_err(Error::InvalidArgument)?;
    Ok(control
        .plan(Op::Start, name, force)?
        .iter()
        .map(PlanRow::from_step)
        .collect())
}

pub(super) fn dependencies(
    control: &Control,
    name: &str,
    reverse: bool,
) -> Result<Vec<DependencyRow>> {
    Ok(control
        .dependency_tree(name, reverse)?
        .iter()
        .map(DependencyRow::from_tree)
        .collect())
}

pub(super) fn list_tasks(
    control: &Control,
    filter: HashMap<String, OwnedValue>,
) -> Result<Vec<TaskRow>> {
    let filter = parse_filter(filter)?;
    Ok(control
        .list_tasks(&filter)?
        .iter()
        .map(TaskRow::from_record)
        .collect())
}

pub(super) fn logs(control: &Control, name: &str, lines: u32, follow: bool) -> Result<OwnedFd> {
    let tail = (lines > 0).then_some(lines as usize);
    let stream = control.logs(name, tail, follow)?;
    crate::dbus::logs::pipe(stream).map_err(|e| Error::Failed(format!("cannot open a pipe: {e}")))
}

pub(super) async fn readiness(control: &Control) -> Vec<(String, String, Vec<String>)> {
    control
        .readiness()
        .await
        .into_iter()
        .map(|r| (r.name, r.verdict.to_string(), r.problems))
        .collect()
}

pub(super) fn required(
    control: &Control,
    operation: &str,
) -> Vec<(String, bool, String, String, bool)> {
    control
        .required(operation)
        .into_iter()
        .map(|r| {
            let (state, health) = (r.active_state.to_string(), r.health.to_string());
            (r.name, r.direct, state, health, r.running)
        })
        .collect()
}

pub(super) fn registry(control: &Control) -> Vec<(String, String, String, String, Vec<String>)> {
    control
        .local_services()
        .into_iter()
        .map(|s| {
            (
                s.name,
                s.kind.as_str().to_string(),
                s.description.unwrap_or_default(),
                s.category.unwrap_or_default(),
                s.required_for,
            )
        })
        .collect()
}

pub(super) fn host_stats(control: &Control) -> HashMap<String, OwnedValue> {
    control
        .host_stats()
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                HostValue::Int(i) => OwnedValue::from(i),
                HostValue::Float(f) => OwnedValue::from(f),
            };
            (k.to_string(), v)
        })
        .collect()
}

pub(super) async fn notify_test(control: &Control, channel: &str) -> Vec<(String, bool, String)> {
    let channel = (!channel.is_empty()).then_some(channel);
    control
        .notify_test(channel)
        .await
        .into_iter()
        .map(|(name, r)| match r {
            Ok(()) => (name, true, String::new()),
            Err(e) => (name, false, e),
        })
        .collect()
}
