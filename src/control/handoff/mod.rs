//! Moving a service between hosts, and the hand-off rule.
//!
//! The rule (DESIGN.md): a host starts a service only when no reachable
//! peer reports it running; an unreachable peer blocks a start or a move
//! unless the operator forces it. It applies to services of one host
//! (`host = "x"`); a service of several hosts or `"all"` runs on each of
//! them by design. Boot recovery, `apply` and the supervisor's recoveries
//! do not ask: they bring back what this host was told to run, and a move
//! stores "stopped" on the host it leaves, so they do not start it twice.
//!
//! A move is one `migrate` task on the host the service leaves; the host
//! it goes to runs a `pull` task (after its preflight) and a `receive`
//! task (start, wait until healthy), both asked over the peer endpoint.
//! This module knows no HTTP: [`Peers`] is implemented by `peer::Cluster`.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt};

use super::{project_paths, Control, ControlError, Op, Shared};
use crate::config::{Config, HostSelector, PeerConfig, ServiceConfig};
use crate::events::{Event, Severity};
use crate::store::{DesiredState, Origin, TaskRecord};
use crate::tasks::{Failure, TaskKind};
use crate::world::{self, Observed};

mod peers;
mod receive;
mod send;
mod settle;
pub use peers::{PeerFailure, PeerService, Peers, RemoteTask, VolumeOffer, VolumeReceipt};
pub use settle::claim_wins;
use settle::doubt_after;

/// A volume's tar stream read from Docker by a task of its own, passed on
/// through a small channel. Dropping the `Reader` (the transfer ended, in
/// success or not) ends that task and with it Docker's archive request.
/// Without it a transfer cut off by a silent peer would keep the request
/// open inside the stalled connection's body for as long as TCP retries,
/// and Docker holds the container's lock while it is read: the service
/// could not start here again.
struct Reader(tokio::task::AbortHandle);

impl Reader {
    fn spawn(
        mut tar: BoxStream<'static, Result<Bytes, String>>,
    ) -> (BoxStream<'static, Result<Bytes, String>>, Reader) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let task = tokio::spawn(async move {
            while let Some(chunk) = tar.next().await {
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
        });
        let out = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (chunk, rx))
        })
        .boxed();
        (out, Reader(task.abort_handle()))
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Services placed on one host follow the hand-off rule and may move.
fn single_host(svc: &ServiceConfig) -> bool {
    matches!(&svc.hosts, HostSelector::List(l) if l.len() == 1)
}

/// What the host a service moves to says after its preflight.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The preflight's warnings (missing images among them).
    pub warnings: Vec<String>,
    /// The pull of the images this host lacks; none when it has them all.
    pub pull: Option<TaskRecord>,
}

/// How long a service must stay healthy before a receive counts it so.
const SETTLE: Duration = Duration::from_secs(1);

/// How often a remote task or the local health is looked at while waiting.
const POLL: Duration = Duration::from_millis(250);

/// How a wait for another host's task ended when not in success.
#[derive(Debug)]
enum Remote {
    /// It answered: the task failed or was refused.
    Failed(String),
    /// Its outcome is unknown: no answer.
    Lost(String),
}

impl Remote {
    fn text(&self) -> &str {
        match self {
            Remote::Failed(m) | Remote::Lost(m) => m,
        }
    }
}

/// The service a move's task works on, with its project's directory and
/// Compose file; a failure when the configuration no longer has it.
fn moving(cfg: &Config, name: &str) -> Result<(ServiceConfig, PathBuf, PathBuf), Failure> {
    let svc = cfg
        .service(name)
        .cloned()
        .ok_or_else(|| Failure::failed(format!("{name} is no longer in the configuration")))?;
    let (dir, file) = project_paths(cfg, name)?;
    Ok((svc, dir, file))
}

impl Control {
    /// The other hosts' client; the daemon sets it once at start.
    pub fn set_peers(&self, peers: std::sync::Arc<dyn Peers>) {
        let _ = self.shared.peers.set(peers);
    }

    /// An operation a person asked for. Those that make the service run
    /// (start, restart, update) follow the hand-off rule first.
    pub async fn request(
        &self,
        op: Op,
        name: &str,
        origin: &Origin,
        force: bool,
    ) -> Result<TaskRecord, ControlError> {
        if op.desired() == Some(DesiredState::Running) {
            let cfg = self.config();
            let svc = self.shared.local_service(&cfg, name)?.clone();
            super::registry::refuse_external(&svc, op)?;
            self.shared.check_peers(&cfg, &svc, &[], force).await?;
        }
        self.submit_with(op, name, origin, force)
    }

    /// Queue the move of `name` to host `to`. Refused, with nothing
    /// changed, when `to` is this host, unknown, unreachable or does not
    /// know the service, when `to` or another reachable host runs it, or
    /// when another host cannot be asked (unless `force`).
    pub async fn migrate(
        &self,
        name: &str,
        to: &str,
        force: bool,
        origin: &Origin,
    ) -> Result<TaskRecord, ControlError> {
        self.migrate_with(name, to, force, false, origin).await
    }

    /// [`Control::migrate`]; with `volumes` (or the service's
    /// `handoff_volumes`) the move carries the service's named volumes
    /// after the stop, before the start there.
    pub async fn migrate_with(
        &self,
        name: &str,
        to: &str,
        force: bool,
        volumes: bool,
        origin: &Origin,
    ) -> Result<TaskRecord, ControlError> {
        let cfg = self.config();
        let svc = self.shared.local_service(&cfg, name)?.clone();
        self.migrate_checked(&cfg, svc, to, (force, volumes, false), origin)
            .await
    }

    /// The move `apply --all-hosts` asks of the host a service leaves
    /// (`POST /v1/services/{name}/migrate`), for a service with
    /// `handoff_volumes` whose placement changed: as
    /// [`Control::migrate_with`], and also for a service the cluster file
    /// (already pushed here) places on `to` alone while it still runs
    /// here, which is no longer this host's by its `host` key.
    pub async fn migrate_leaving(
        &self,
        name: &str,
        to: &str,
        force: bool,
        volumes: bool,
        origin: &Origin,
    ) -> Result<TaskRecord, ControlError> {
        let cfg = self.config();
        let (svc, placed_elsewhere) = match self.shared.local_service(&cfg, name) {
            Ok(s) => (s.clone(), false),
            Err(not_here) => {
                let Some(s) = cfg.service(name) else {
                    return Err(not_here);
                };
                let placed_there =
                    matches!(&s.hosts, HostSelector::List(l) if l.len() == 1 && l[0] == to);
                let observed = world::classify(&self.shared.world.containers(name));
                if !placed_there || !matches!(observed, Observed::Running | Observed::Partial) {
                    return Err(ControlError::Conflict(format!(
                        "{name} is not {}'s to move: the cluster file does not place it on {to} alone while it runs here ({not_here})",
                        cfg.host
                    )));
                }
                (s.clone(), true)
            }
        };
        let refused = match self
            .migrate_checked(&cfg, svc, to, (force, volumes, true), origin)
            .await
        {
            Ok(task) => return Ok(task),
            Err(e) => e,
        };
        // Refused at once, nothing changed: a service the file placed
        // elsewhere keeps running here, where its data is, and this host
        // keeps it, so that no apply stops it (as when the move fails
        // later, see `start_again`). Unless the target runs it already:
        // then it is there, and this copy is the one to go.
        let target_runs = matches!(&refused, ControlError::Conflict(_)) && !self.queue().busy(name);
        if placed_elsewhere && !target_runs {
            match self.shared.store.set_kept(name, to) {
                Ok(()) => {
                    let _ = self.shared.events.send(Event::ServicesReloaded);
                    return Err(noted(refused, &format!(
                        "{name} keeps running on {}, where its data is (desired \"kept here: its move to {to} failed\")",
                        cfg.host
                    )));
                }
                Err(e) => {
                    tracing::warn!(stackd_service = name, "cannot store the desired state: {e}");
                }
            }
        }
        Err(refused)
    }

    /// The checks of a move that refuse at once, then the `migrate` task.
    /// With `leaving` (a move the placement asked for), a target that
    /// wants the service running by its `auto_start` but does not run it
    /// yet is where it should go, not a conflict.
    async fn migrate_checked(
        &self,
        cfg: &Config,
        svc: ServiceConfig,
        to: &str,
        (force, volumes, leaving): (bool, bool, bool),
        origin: &Origin,
    ) -> Result<TaskRecord, ControlError> {
        let name = svc.name.as_str();
        if to == cfg.host {
            return Err(ControlError::InvalidArgument(format!(
                "{name} is on {to} already; name the host it should move to"
            )));
        }
        if !single_host(&svc) {
            return Err(ControlError::InvalidArgument(format!(
                "{name} runs on several hosts by design (its host key names more than one); only a service of one host moves"
            )));
        }
        let (peer, url) = self.shared.link(cfg, to)?;
        if !self.shared.world.docker_connected() {
            return Err(ControlError::DockerUnavailable(
                self.shared.world.docker_error(),
            ));
        }
        if self.queue().busy(name) {
            return Err(ControlError::Conflict(format!(
                "a task of {name} is pending or running; wait for it, then move"
            )));
        }
        let peers = self.shared.peers()?;
        let known = peers
            .known_services(&peer, &url)
            .await
            .map_err(|e| unreachable(to, &e, "nothing was changed"))?;
        if !known.iter().any(|s| s == name) {
            return Err(ControlError::NoSuchService(format!(
                "{to}'s cluster file has no service {name}; give {to} the same cluster file first"
            )));
        }
        match peers.service(&peer, &url, name).await {
            Ok(Some(s)) if (if leaving { s.active() } else { s.runs() }) => {
                return Err(ControlError::Conflict(format!(
                    "{name} runs on {to} already (desired {}, {})",
                    s.desired_state, s.active_state
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(unreachable(to, &e, "nothing was changed")),
        }
        self.shared
            .check_peers(cfg, &svc, &[to.to_string()], force)
            .await?;
        self.shared
            .moves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_string(), to.to_string());
        let mut carry = self.shared.carry.lock().unwrap_or_else(|e| e.into_inner());
        if volumes {
            carry.insert(name.to_string());
        } else {
            carry.remove(name);
        }
        drop(carry);
        let task = self.queue().submit(TaskKind::Migrate, name, origin);
        if task.is_err() {
            self.shared
                .moves
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
            self.shared
                .carry
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(name);
        }
        Ok(task?)
    }
}

/// `e` with `note` after its message.
fn noted(e: ControlError, note: &str) -> ControlError {
    let add = |m: String| format!("{m}; {note}");
    match e {
        ControlError::NoSuchService(m) => ControlError::NoSuchService(add(m)),
        ControlError::InvalidArgument(m) => ControlError::InvalidArgument(add(m)),
        ControlError::Conflict(m) => ControlError::Conflict(add(m)),
        ControlError::PreflightFailed(m) => ControlError::PreflightFailed(add(m)),
        ControlError::DockerUnavailable(m) => ControlError::DockerUnavailable(add(m)),
        ControlError::PeerUnreachable(m) => ControlError::PeerUnreachable(add(m)),
        e => e,
    }
}

fn unreachable(host: &str, e: &PeerFailure, consequence: &str) -> ControlError {
    match e {
        PeerFailure::Unreachable(m) => {
            ControlError::PeerUnreachable(format!("{host} does not answer ({m}); {consequence}"))
        }
        PeerFailure::Refused { message, .. } => {
            ControlError::PeerUnreachable(format!("{host} refused: {message}; {consequence}"))
        }
    }
}

impl Shared {
    /// The `migrated` alert each host of a move sends when its part
    /// ended well; `data` names the hosts and the task.
    fn migrated(&self, name: &str, summary: &str, data: serde_json::Value) {
        self.alert(Severity::Info, "migrated", name, summary, "", data);
    }

    fn peers(&self) -> Result<&dyn Peers, ControlError> {
        self.peers.get().map(|p| p.as_ref()).ok_or_else(|| {
            ControlError::PeerUnreachable("this stackd has no peer client".to_string())
        })
    }

    /// `[peer]` and the peer URL of `host`.
    fn link(&self, cfg: &Config, host: &str) -> Result<(PeerConfig, String), ControlError> {
        let url = cfg
            .hosts
            .get(host)
            .and_then(|h| h.peer.clone())
            .ok_or_else(|| {
                let known: Vec<&str> = cfg
                    .hosts
                    .iter()
                    .filter(|(h, c)| **h != cfg.host && c.peer.is_some())
                    .map(|(h, _)| h.as_str())
                    .collect();
                ControlError::InvalidArgument(format!(
                    "no host {host} with a peer URL in [hosts] (others: {})",
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })?;
        let peer = cfg.peer.clone().ok_or_else(|| {
            ControlError::InvalidArgument(
                "talking to other hosts needs a [peer] section (token_file) in the cluster file"
                    .to_string(),
            )
        })?;
        Ok((peer, url))
    }

    /// A service another host hands to this one: the cluster file must
    /// name it, and `from` must be a host of it.
    fn incoming<'c>(
        &self,
        cfg: &'c Config,
        name: &str,
        from: &str,
    ) -> Result<&'c ServiceConfig, ControlError> {
        // A well-formed request whose sender this host's cluster file does
        // not know: the two files disagree (409), not a malformed request.
        if !cfg.hosts.contains_key(from) || from == cfg.host {
            return Err(ControlError::Conflict(format!(
                "{from} is not another host of {}'s cluster file",
                cfg.host
            )));
        }
        if !self.world.docker_connected() {
            return Err(ControlError::DockerUnavailable(self.world.docker_error()));
        }
        if self.queue().busy(name) {
            return Err(ControlError::Conflict(format!(
                "a task of {name} is pending or running on {}",
                cfg.host
            )));
        }
        cfg.service(name).ok_or_else(|| {
            ControlError::NoSuchService(format!(
                "{}'s cluster file has no service {name}",
                cfg.host
            ))
        })
    }
}

#[cfg(test)]
mod tests;
