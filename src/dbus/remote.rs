//! The Manager's calls about another host of the cluster (stackctl's
//! `-H HOST`, `list --all-hosts`, `config push`, `logs -H`): this daemon
//! relays them to that host's peer endpoint with its own token and its own
//! cluster file, so a caller needs neither; the Manager authorizes the
//! caller first, as for the same call about this host.
//!
//! Answers keep the shapes of the local calls: rows as `ListServices` and
//! `ListTasks` return them, and property maps named as the `Service`,
//! `Task` and `Manager` objects' properties, so a client reads both alike.
//! Object paths in relayed rows name no object here; task ids are the
//! other host's.

use std::collections::HashMap;

use futures_util::future::join_all;
use zbus::zvariant::{OwnedFd, Value};

use super::error::{Error, Result};
use super::types::{ServiceRow, TaskRow};
use crate::config::{self, Config};
use crate::control::Control;
use crate::peer::types::Task;
use crate::peer::{PeerClient, PeerClientError};
use crate::store::TaskFilter;

/// A property map as `org.freedesktop.DBus.Properties.GetAll` returns one.
pub(super) type Properties = HashMap<&'static str, Value<'static>>;

/// One host's answer to `PushConfig`: `(sssss)`.
pub(super) type PushRow = (String, String, String, String, String);

/// One step of `ApplyAllHosts`'s plan: `(ssss)` host, action, service,
/// reason.
pub(super) type ApplyRow = (String, String, String, String);

/// `ApplyAllHosts(b dry_run, b force)`: the plan, what was done and what
/// failed (`peer::apply`), run here with this host's cluster file and
/// token against every host of its `[hosts]`, this one included (through
/// its own peer endpoint, as the others).
pub(super) async fn apply_all_hosts(
    control: &Control,
    dry_run: bool,
    force: bool,
) -> Result<(Vec<ApplyRow>, Vec<String>, Vec<String>)> {
    let cfg = control.config();
    let mut clients = std::collections::BTreeMap::new();
    for h in cfg.hosts.keys() {
        clients.insert(h.clone(), client_in(&cfg, &cfg, h)?);
    }
    if clients.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "{} has no [hosts]",
            cfg.path.display()
        )));
    }
    let out = crate::peer::apply::apply_all_hosts(&clients, &cfg, dry_run, force)
        .await
        .map_err(Error::Failed)?;
    let plan = out
        .plan
        .into_iter()
        .map(|s| (s.host, s.action, s.service, s.reason))
        .collect();
    Ok((plan, out.done, out.failed))
}

/// The host's answer turned into this bus's named errors, prefixed with the
/// host so a caller knows who said it.
fn relayed(host: &str, e: PeerClientError) -> Error {
    let msg = format!("{host}: {e}");
    match e {
        PeerClientError::Remote { kind, .. } => match kind.as_str() {
            "NoSuchService" => Error::NoSuchService(msg),
            "NoSuchTask" => Error::NoSuchTask(msg),
            "InvalidArgument" => Error::InvalidArgument(msg),
            "Conflict" => Error::Conflict(msg),
            "PreflightFailed" => Error::PreflightFailed(msg),
            "DockerUnavailable" => Error::DockerUnavailable(msg),
            "InvalidConfig" => Error::InvalidConfig(msg),
            "Unauthorized" => Error::Failed(format!("{msg} (the hosts' peer token files differ)")),
            _ => Error::Failed(msg),
        },
        PeerClientError::Connect { .. } => Error::PeerUnreachable(msg),
        PeerClientError::Config(_) | PeerClientError::Setup(_) => Error::Failed(msg),
    }
}

/// A client for `host`'s peer endpoint, from `cfg`'s `[hosts]` and the
/// running configuration's `[peer]` (token, TLS trust, timeout).
fn client_in(cfg: &Config, peer_cfg: &Config, host: &str) -> Result<PeerClient> {
    let url = cfg.peer_url(host).map_err(Error::InvalidArgument)?;
    let peer = peer_cfg.peer.as_ref().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "{} has no [peer] table (token_file): this host cannot reach the others",
            peer_cfg.path.display()
        ))
    })?;
    PeerClient::new(url, peer).map_err(|e| relayed(host, e))
}

fn client(control: &Control, host: &str) -> Result<PeerClient> {
    let cfg = control.config();
    client_in(&cfg, &cfg, host)
}

/// `ListHostServices(s host)`.
pub(super) async fn list_services(control: &Control, host: &str) -> Result<Vec<ServiceRow>> {
    let rows = client(control, host)?
        .services()
        .await
        .map_err(|e| relayed(host, e))?;
    Ok(rows.into_iter().map(ServiceRow::from_summary).collect())
}

/// `GetHostService(s host, s name)`: the Service object's properties as
/// the host reports them (`Ready` is not among them).
pub(super) async fn service(control: &Control, host: &str, name: &str) -> Result<Properties> {
    let s = client(control, host)?
        .service(name)
        .await
        .map_err(|e| relayed(host, e))?;
    Ok(HashMap::from([
        ("Name", Value::from(s.name)),
        ("Host", Value::from(s.host)),
        ("DesiredState", Value::from(s.desired_state)),
        ("DesiredSource", Value::from(s.desired_source.to_string())),
        ("ActiveState", Value::from(s.active_state.to_string())),
        ("SubState", Value::from(s.sub_state.to_string())),
        ("Health", Value::from(s.health.as_str())),
        ("HealthMessage", Value::from(s.health_message)),
        ("Containers", Value::from(s.containers)),
        ("StateChangeTimestamp", Value::from(s.state_change_usec)),
        ("RestartCount", Value::from(s.restart_count)),
        ("CpuPercent", Value::from(s.cpu_percent)),
        ("MemoryBytes", Value::from(s.memory_bytes)),
        ("ComposeFile", Value::from(s.compose_file)),
    ]))
}

/// `GetHostManager(s host)`: the host's Manager properties.
pub(super) async fn manager(control: &Control, host: &str) -> Result<Properties> {
    let h = client(control, host)?
        .host()
        .await
        .map_err(|e| relayed(host, e))?;
    Ok(HashMap::from([
        ("Version", Value::from(h.version)),
        ("Host", Value::from(h.host)),
        ("SystemState", Value::from(h.system_state)),
        ("DockerConnected", Value::from(h.docker_connected)),
        ("DockerError", Value::from(h.docker_error)),
        ("ConfigHash", Value::from(h.config_hash)),
        ("ConfigPath", Value::from(h.config_path)),
        ("BootId", Value::from(h.boot_id)),
    ]))
}

/// `ListHostTasks(s host, a{sv} filter)`: the peer route takes one
/// service and a limit; several states are filtered here.
pub(super) async fn tasks(
    control: &Control,
    host: &str,
    filter: TaskFilter,
) -> Result<Vec<TaskRow>> {
    let limit = u32::try_from(filter.limit.unwrap_or(20).min(1000)).unwrap_or(1000);
    let rows = client(control, host)?
        .tasks(filter.service.as_deref(), limit)
        .await
        .map_err(|e| relayed(host, e))?;
    let states: Vec<&str> = filter.states.iter().map(|s| s.as_str()).collect();
    Ok(rows
        .into_iter()
        .filter(|t| states.is_empty() || states.contains(&t.state.as_str()))
        .map(TaskRow::from_task)
        .collect())
}

async fn task_with_log(control: &Control, host: &str, id: u64) -> Result<Task> {
    client(control, host)?
        .task(id)
        .await
        .map_err(|e| relayed(host, e))
}

/// `GetHostTask(s host, t id)`: the Task object's properties.
pub(super) async fn task(control: &Control, host: &str, id: u64) -> Result<Properties> {
    let t = task_with_log(control, host, id).await?;
    Ok(HashMap::from([
        ("Id", Value::from(t.id)),
        ("Kind", Value::from(t.kind)),
        ("Service", Value::from(t.service)),
        ("Origin", Value::from(t.origin.to_string())),
        ("State", Value::from(t.state)),
        ("Result", Value::from(t.result)),
        ("CreatedUsec", Value::from(t.created_usec)),
        ("StartedUsec", Value::from(t.started_usec)),
        ("FinishedUsec", Value::from(t.finished_usec)),
        ("Error", Value::from(t.error)),
    ]))
}

/// `GetHostTaskLog(s host, t id, u skip)`: the log lines after the first
/// `skip`, as the Task object's `LogSince`.
pub(super) async fn task_log(
    control: &Control,
    host: &str,
    id: u64,
    skip: u32,
) -> Result<Vec<String>> {
    let t = task_with_log(control, host, id).await?;
    Ok(t.log
        .unwrap_or_default()
        .into_iter()
        .skip(skip as usize)
        .collect())
}

/// `StartHostService`, `StopHostService`, `RestartHostService`,
/// `UpdateHostService`: the task id on that host. Mode "replace" is the
/// peer request's `force`. `caller` is recorded in the task's origin there.
pub(super) async fn op(
    control: &Control,
    host: &str,
    name: &str,
    op: &str,
    force: bool,
    caller: &str,
) -> Result<u64> {
    let task = client(control, host)?
        .op(name, op, Some(caller), force)
        .await
        .map_err(|e| relayed(host, e))?;
    Ok(task.id)
}

/// `HostServiceLogs(s host, s name, u lines, b follow)`: the host's
/// container log lines, streamed into the returned pipe as `ServiceLogs`
/// does for this host's.
pub(super) async fn logs(
    control: &Control,
    host: &str,
    name: &str,
    lines: u32,
    follow: bool,
) -> Result<OwnedFd> {
    let stream = client(control, host)?
        .logs(name, lines, follow)
        .await
        .map_err(|e| relayed(host, e))?;
    super::logs::pipe(stream).map_err(|e| Error::Failed(format!("cannot open a pipe: {e}")))
}

/// `PushConfig(s text, b force)`: `text` (this host's own cluster file when
/// empty) to every host of its `[hosts]`, in two rounds: every host checks
/// it first; only when all accept does each write it and reload. A row per
/// host: (host, outcome, config path, config hash, error), outcome being
/// "written", "checked" (accepted, not written because another refused),
/// "refused" or "unreachable". The hosts are the pushed file's; the token
/// and TLS trust are the running configuration's, which the hosts accept
/// today.
pub(super) async fn push_config(
    control: &Control,
    user_mode: bool,
    text: &str,
    force: bool,
) -> Result<Vec<PushRow>> {
    let running = control.config();
    let text = if text.is_empty() {
        std::fs::read_to_string(&running.path)
            .map_err(|e| Error::Failed(format!("{}: {e}", running.path.display())))?
    } else {
        text.to_string()
    };
    if text.trim().is_empty() {
        return Err(Error::InvalidArgument(
            "the file is empty (a truncated file?); nothing was pushed".into(),
        ));
    }
    let opts = config::LoadOptions {
        user_mode,
        host_override: None,
    };
    // Read here only for [hosts]; each host checks it as itself.
    let pushed = config::parse_str(&text, &running.path, &opts, false)
        .map_err(|e| Error::InvalidConfig(e.to_string()))?;
    if pushed.hosts.is_empty() {
        return Err(Error::InvalidArgument(
            "the file has no [hosts] to push to".into(),
        ));
    }
    let mut hosts = Vec::new();
    for name in pushed.hosts.keys() {
        hosts.push((name.clone(), client_in(&pushed, &running, name)?));
    }
    let checks = join_all(hosts.iter().map(|(_, c)| c.push_config(&text, true, force))).await;
    let (results, ok_outcome) = if checks.iter().all(std::result::Result::is_ok) {
        let writes = join_all(
            hosts
                .iter()
                .map(|(_, c)| c.push_config(&text, false, force)),
        )
        .await;
        (writes, "written")
    } else {
        (checks, "checked")
    };
    Ok(hosts
        .into_iter()
        .zip(results)
        .map(|((host, _), r)| match r {
            Ok(p) => (
                host,
                ok_outcome.to_string(),
                p.config_path,
                p.config_hash,
                String::new(),
            ),
            Err(e) => {
                let outcome = if e.kind().is_some() {
                    "refused"
                } else {
                    "unreachable"
                };
                (
                    host,
                    outcome.to_string(),
                    String::new(),
                    String::new(),
                    e.to_string(),
                )
            }
        })
        .collect())
}
