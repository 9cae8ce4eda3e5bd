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

use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{join_all, BoxFuture};
use futures_util::stream::{BoxStream, StreamExt};
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{project_paths, Control, ControlError, Op, Shared};
use crate::config::{Config, Handoff, HostSelector, PeerConfig, ServiceConfig};
use crate::events::{Event, Severity};
use crate::store::{DesiredState, TaskRecord};
use crate::tasks::{Failure, Log, TaskKind};
use crate::world::{self, Observed};

/// What another host says of a service it manages.
#[derive(Clone, Debug)]
pub struct PeerService {
    pub desired_state: String,
    pub active_state: String,
    /// "running", "exited" (every container completed), "partial", ...
    pub sub_state: String,
    /// When a person or a move set its desired state there (0: the
    /// cluster file's `auto_start`).
    pub desired_since_usec: u64,
}

impl PeerService {
    /// Wanted running there, or running there now. A service that host
    /// stopped whose containers all exited 0 shows "active (exited)" (as
    /// a finished one-shot job would): nothing of it runs, so it does not
    /// count.
    fn runs(&self) -> bool {
        self.desired_state == "running" || self.active()
    }

    /// Something of it runs there now (or is being started).
    fn active(&self) -> bool {
        self.active_state == "activating"
            || (self.active_state == "active" && self.sub_state != "exited")
    }
}

/// A task on another host.
#[derive(Clone, Debug)]
pub struct RemoteTask {
    pub state: String,
    pub result: String,
    pub error: String,
}

#[derive(Clone, Debug)]
pub enum PeerFailure {
    /// No answer: refused connection, timeout, TLS, no token.
    Unreachable(String),
    /// An answer with an error: its kind ("PreflightFailed", ...) and text.
    Refused { kind: String, message: String },
}

impl std::fmt::Display for PeerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerFailure::Unreachable(m) => write!(f, "no answer: {m}"),
            PeerFailure::Refused { message, .. } => f.write_str(message),
        }
    }
}

type PeerResult<'a, T> = BoxFuture<'a, Result<T, PeerFailure>>;

/// The other hosts, reached at their peer URL with `[peer]`'s token and
/// timeout.
pub trait Peers: Send + Sync {
    /// The service on that host; `None` when the host does not manage it.
    fn service<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
    ) -> PeerResult<'a, Option<PeerService>>;
    /// Every service the host's cluster file names.
    fn known_services<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
    ) -> PeerResult<'a, Vec<String>>;
    /// Preflight there, and a pull of the images it lacks: the pull
    /// task's id, if one was needed.
    fn prepare<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> PeerResult<'a, Option<u64>>;
    /// Queue the receive task there; its id.
    fn receive<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        name: &'a str,
        from: &'a str,
    ) -> PeerResult<'a, u64>;
    fn task<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        id: u64,
    ) -> PeerResult<'a, RemoteTask>;
    /// Streams one named volume's content (a tar stream) to the host;
    /// what it received and verified (the SHA-256 the sender computed over
    /// the bytes it sent, checked there).
    fn send_volume<'a>(
        &'a self,
        peer: &'a PeerConfig,
        url: &'a str,
        offer: &'a VolumeOffer,
        tar: BoxStream<'static, Result<Bytes, String>>,
    ) -> PeerResult<'a, VolumeReceipt>;
}

/// A named volume a move carries: what the receiving host needs to make
/// it again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeOffer {
    /// The service (the Compose project) it belongs to.
    pub service: String,
    /// The host it comes from.
    pub from: String,
    /// Docker's name for it, the same on both hosts.
    pub volume: String,
    pub driver: String,
    pub labels: std::collections::HashMap<String, String>,
    /// The image the receiving host makes its stopped carrier container
    /// from (one of the service's own, present there after the preflight).
    pub image: String,
}

/// What the receiving host got, as it verified it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeReceipt {
    pub bytes: u64,
    /// Lower-case hex.
    pub sha256: String,
    /// A volume of that name was there already and was replaced.
    pub replaced: bool,
}

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

/// How long a host may stay silent while it runs a move's task before the
/// move is taken for in doubt: as long as the heartbeat takes to call it
/// lost (`hosts::LOST_AFTER` beats), plus one request's timeout.
fn doubt_after(peer: &PeerConfig) -> Duration {
    peer.heartbeat * crate::hosts::LOST_AFTER + peer.timeout
}

/// What another host said when asked about a move in doubt.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// It runs the service: the move completed.
    Moved,
    /// It neither wants nor runs it: the move did not happen.
    NotThere,
    /// It wants it but is still starting it, or did not answer: ask again.
    Unknown,
}

/// Reads a peer's answer about a service moved to it.
fn verdict(answer: &Result<Option<PeerService>, PeerFailure>) -> Verdict {
    match answer {
        Ok(Some(s)) if s.desired_state == "running" && s.active_state == "active" => Verdict::Moved,
        Ok(Some(s)) if s.desired_state == "running" || s.active_state == "activating" => {
            Verdict::Unknown
        }
        Ok(_) => Verdict::NotThere,
        Err(PeerFailure::Refused { kind, .. }) if kind == "NoSuchService" => Verdict::NotThere,
        Err(_) => Verdict::Unknown,
    }
}

/// Of two hosts that both want a service of one host running after they
/// saw each other again, the one that keeps it: the newer claim (the
/// desired state's time; `auto_start` counts as 0), the smaller host name
/// when both are equally old. Both hosts compute the same answer.
pub fn claim_wins(mine: (u64, &str), theirs: (u64, &str)) -> bool {
    match mine.0.cmp(&theirs.0) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => mine.1 < theirs.1,
    }
}

/// A task's origin on the host a service moves to.
fn origin_from(host: &str) -> String {
    format!("migrate from {host}")
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
        origin: &str,
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
        origin: &str,
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
        origin: &str,
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
        origin: &str,
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
        origin: &str,
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

    /// The first half of a move to this host (`from` asks): preflight,
    /// then a pull task when images are missing (only then: the start must
    /// not need the network, and an image with `pull_policy: never` is
    /// never pulled). Needs only that the cluster file names the service.
    pub async fn prepare_move(&self, name: &str, from: &str) -> Result<Prepared, ControlError> {
        let cfg = self.config();
        let svc = self.shared.incoming(&cfg, name, from)?.clone();
        let report = self
            .shared
            .preflight(&svc)
            .await
            .map_err(|f| ControlError::PreflightFailed(f.message))?;
        if !report.passed() {
            let lines: Vec<String> = report.fatal().map(|p| p.to_string()).collect();
            return Err(ControlError::PreflightFailed(format!(
                "on {}: {}",
                cfg.host,
                lines.join("\n")
            )));
        }
        let missing = report
            .warnings()
            .any(|p| p.check == crate::preflight::Check::Images);
        let pull = if missing {
            Some(
                self.queue()
                    .submit(TaskKind::Pull, name, &origin_from(from))?,
            )
        } else {
            None
        };
        Ok(Prepared {
            warnings: report.warnings().map(|p| p.to_string()).collect(),
            pull,
        })
    }

    /// The second half: this host manages the service from now on, wants
    /// it running ("migrate from FROM"), and starts it in a receive task.
    pub fn receive_move(&self, name: &str, from: &str) -> Result<TaskRecord, ControlError> {
        let cfg = self.config();
        self.shared.incoming(&cfg, name, from)?;
        let was_local = self.shared.local_service(&cfg, name).is_ok();
        let before = self.shared.store.desired(name)?;
        self.shared
            .store
            .set_moved(name, DesiredState::Running, from)?;
        let task = match self
            .queue()
            .submit(TaskKind::Receive, name, &origin_from(from))
        {
            Ok(t) => t,
            Err(e) => {
                // Not taken: this host must not start it at its next boot.
                self.shared.restore(name, before.as_ref());
                return Err(e.into());
            }
        };
        if !was_local {
            // D-Bus objects, probes and the monitor take it in.
            let _ = self.shared.events.send(Event::ServicesReloaded);
        }
        Ok(task)
    }

    /// A named volume of a service moving here (`offer.from` sends it,
    /// after it stopped the service there and before it asks this host to
    /// start it): made again, empty, with the same name and labels, and
    /// filled with `tar` through a stopped container that mounts it.
    /// `verify`, called once `tar` has ended, says whether what arrived is
    /// what was sent (its size and SHA-256); when it is not, or anything
    /// fails after the volume was made, the volume is removed again.
    pub async fn receive_volume(
        &self,
        offer: &VolumeOffer,
        tar: BoxStream<'static, Bytes>,
        verify: impl FnOnce() -> Result<(u64, String), String>,
    ) -> Result<VolumeReceipt, ControlError> {
        let cfg = self.config();
        let name = offer.service.as_str();
        self.shared.incoming(&cfg, name, &offer.from)?;
        let project = offer.labels.get(crate::engine::docker::PROJECT_LABEL);
        if project.map(String::as_str) != Some(name) {
            return Err(ControlError::Conflict(format!(
                "volume {} is not one of {name}'s (its Compose project label says {:?})",
                offer.volume, project
            )));
        }
        let observed = world::classify(&self.shared.world.containers(name));
        if matches!(observed, Observed::Running | Observed::Partial) {
            return Err(ControlError::Conflict(format!(
                "{name} runs on {}; its volumes are not replaced under it",
                cfg.host
            )));
        }
        let docker = self
            .shared
            .world
            .docker()
            .ok_or_else(|| ControlError::DockerUnavailable(self.shared.world.docker_error()))?;
        let engine = |e: crate::engine::EngineError| {
            if e.is_unavailable() {
                ControlError::DockerUnavailable(e.to_string())
            } else {
                ControlError::Conflict(format!("on {}: {e}", cfg.host))
            }
        };
        let replaced = docker
            .fresh_volume(name, &offer.volume, &offer.driver, &offer.labels)
            .await
            .map_err(engine)?;
        let filled = docker.fill_volume(&offer.volume, &offer.image, tar).await;
        let checked = verify();
        let outcome = match (filled, checked) {
            (Ok(()), Ok((bytes, sha256))) => {
                info!(
                    stackd_service = name,
                    "volume {} received from {}: {bytes} bytes, sha256 {sha256}{}",
                    offer.volume,
                    offer.from,
                    if replaced {
                        " (replaced the one here)"
                    } else {
                        ""
                    }
                );
                return Ok(VolumeReceipt {
                    bytes,
                    sha256,
                    replaced,
                });
            }
            // Docker's refusal first: it may have stopped reading the
            // body, which then looks short.
            (Err(e), _) => {
                let e = engine(e);
                ControlError::Conflict(format!(
                    "volume {} from {}: {e}; the volume was removed again on {}",
                    offer.volume, offer.from, cfg.host
                ))
            }
            (Ok(()), Err(why)) => ControlError::InvalidArgument(format!(
                "volume {} from {}: {why}; the volume was removed again on {}",
                offer.volume, offer.from, cfg.host
            )),
        };
        if let Err(e) = docker.remove_volume(&offer.volume).await {
            tracing::warn!(
                stackd_service = name,
                "cannot remove volume {} after a failed transfer: {e}",
                offer.volume
            );
        }
        Err(outcome)
    }
}

impl Control {
    /// What this host does when `host` answers: settle every move to it
    /// that is in doubt, and, when `reunited` (it had stopped answering,
    /// or this is its first answer since this daemon started), look for
    /// services of one host that both want running. The peer heartbeat
    /// calls it after each answer.
    ///
    /// A conflict is resolved by [`claim_wins`]: the newer claim keeps the
    /// service, the other host stops it (desired "migrate to WINNER") and
    /// raises a `handoff-conflict` alert naming both claims.
    pub async fn settle(&self, host: &str, reunited: bool) {
        let cfg = self.config();
        let Ok((peer, url)) = self.shared.link(&cfg, host) else {
            return;
        };
        let Ok(peers) = self.shared.peers() else {
            return;
        };
        let said = self.shared.store.all_desired().unwrap_or_default();
        for (name, d) in &said {
            if d.in_doubt() && d.peer.as_deref() == Some(host) && !self.queue().busy(name) {
                let answer = peers.service(&peer, &url, name).await;
                self.settle_move(&cfg, name, host, verdict(&answer)).await;
            }
        }
        if !reunited {
            return;
        }
        for svc in Shared::local_services(&cfg, &said) {
            let name = svc.name.as_str();
            let mine = said.get(name);
            let (wanted, _) = Shared::desired(svc, mine);
            if !single_host(svc) || wanted != DesiredState::Running || self.queue().busy(name) {
                continue;
            }
            let Ok(Some(theirs)) = peers.service(&peer, &url, name).await else {
                continue;
            };
            if theirs.desired_state != "running" {
                continue;
            }
            let since = mine.filter(|d| d.is_decision()).map_or(0, |d| d.since_usec);
            if claim_wins((since, &cfg.host), (theirs.desired_since_usec, host)) {
                info!(
                    stackd_service = name,
                    "{host} wants {name} running too; this host's claim is newer, {host} stops it"
                );
                continue;
            }
            self.resolve_conflict(&cfg, name, host, since, theirs.desired_since_usec);
        }
    }

    /// Settles one move in doubt to `host` by what `host` said.
    async fn settle_move(&self, cfg: &Config, name: &str, host: &str, verdict: Verdict) {
        let me = cfg.host.as_str();
        match verdict {
            Verdict::Unknown => {}
            Verdict::Moved => {
                if let Err(e) = self
                    .shared
                    .store
                    .set_moved(name, DesiredState::Stopped, host)
                {
                    tracing::warn!(stackd_service = name, "cannot store the desired state: {e}");
                    return;
                }
                self.shared.alert(
                    Severity::Info,
                    "migrate-settled",
                    name,
                    &format!("{name} runs on {host}: its move from {me} completed"),
                    &format!("{host} answered again and runs {name}; the move that was in doubt is done, {name} stays stopped on {me}."),
                    serde_json::json!({ "from": me, "to": host, "moved": true }),
                );
            }
            Verdict::NotThere => {
                let Some(svc) = cfg.service(name) else {
                    return;
                };
                // Nobody else may run it either (the hand-off rule).
                if let Err(e) = self.shared.check_peers(cfg, svc, &[], false).await {
                    info!(
                        stackd_service = name,
                        "the move to {host} did not happen, but {name} cannot start here yet: {e}"
                    );
                    return;
                }
                if let Err(e) = self
                    .shared
                    .store
                    .set_moved(name, DesiredState::Running, host)
                {
                    tracing::warn!(stackd_service = name, "cannot store the desired state: {e}");
                    return;
                }
                let origin = format!("move to {host} did not happen");
                let task = self.queue().submit(TaskKind::Deploy, name, &origin);
                self.shared.alert(
                    Severity::Warning,
                    "migrate-settled",
                    name,
                    &format!("{name}'s move to {host} did not happen; it starts on {me} again"),
                    &format!(
                        "{host} answered again and does not run {name}: the move that was in doubt did not complete. {name} starts on {me} again{}.",
                        match &task {
                            Ok(t) => format!(" (task {})", t.id),
                            Err(e) => format!(", but the task was refused: {e}; run `stackctl start {name}` on {me}"),
                        }
                    ),
                    serde_json::json!({ "from": me, "to": host, "moved": false }),
                );
            }
        }
    }

    /// This host lost a conflict found on heal: it stops `name`, which
    /// `winner` keeps.
    fn resolve_conflict(&self, cfg: &Config, name: &str, winner: &str, mine: u64, theirs: u64) {
        let me = cfg.host.as_str();
        if let Err(e) = self
            .shared
            .store
            .set_moved(name, DesiredState::Stopped, winner)
        {
            tracing::warn!(stackd_service = name, "cannot store the desired state: {e}");
            return;
        }
        let origin = format!("conflict on heal: {winner} keeps it");
        let task = self.queue().submit(TaskKind::Stop, name, &origin);
        let when = |usec: u64| {
            if usec == 0 {
                "by auto_start".to_string()
            } else {
                let ago = crate::store::now_usec().saturating_sub(usec) as f64 / 1e6;
                format!("since {ago:.1} s ago")
            }
        };
        self.shared.alert(
            Severity::Warning,
            "handoff-conflict",
            name,
            &format!("{name} was wanted running on {me} and on {winner}; {winner} keeps it, {me} stops it"),
            &format!(
                "Once {me} and {winner} saw each other again both wanted {name}, a service of one host, running \
                 ({me} {}, {winner} {}). The newer claim wins (ties: the smaller host name), so {name} stops on {me}{}. \
                 If it belongs on {me}, move it back with `stackctl migrate {name} {me}` on {winner}.",
                when(mine),
                when(theirs),
                match &task {
                    Ok(t) => format!(" (task {})", t.id),
                    Err(e) => format!(", but the stop was refused: {e}"),
                }
            ),
            serde_json::json!({
                "winner": winner,
                "loser": me,
                "loser_since_usec": mine,
                "winner_since_usec": theirs,
                "rule": "the newer claim wins; ties: the smaller host name",
            }),
        );
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

    /// The hand-off rule for `svc`: every other host with a peer URL but
    /// `skip` is asked at once (each within `[peer] timeout`). Without
    /// other hosts it asks nobody and costs nothing.
    async fn check_peers(
        &self,
        cfg: &Config,
        svc: &ServiceConfig,
        skip: &[String],
        force: bool,
    ) -> Result<(), ControlError> {
        if !single_host(svc) {
            return Ok(());
        }
        let others: Vec<(&String, &String)> = cfg
            .hosts
            .iter()
            .filter(|(h, _)| **h != cfg.host && !skip.contains(h))
            .filter_map(|(h, c)| Some((h, c.peer.as_ref()?)))
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let name = svc.name.as_str();
        let answers: Vec<(&String, Result<Option<PeerService>, PeerFailure>)> =
            match (&cfg.peer, self.peers.get()) {
                (Some(peer), Some(peers)) => {
                    join_all(
                        others.iter().map(|(h, url)| async move {
                            (*h, peers.service(peer, url, name).await)
                        }),
                    )
                    .await
                }
                _ => others
                    .iter()
                    .map(|(h, _)| {
                        let why = "no [peer] section to reach it with".to_string();
                        (*h, Err(PeerFailure::Unreachable(why)))
                    })
                    .collect(),
            };
        let running: Vec<String> = answers
            .iter()
            .filter_map(|(h, a)| match a {
                Ok(Some(s)) if s.runs() => Some(format!(
                    "{h} (desired {}, {})",
                    s.desired_state, s.active_state
                )),
                _ => None,
            })
            .collect();
        if !running.is_empty() {
            return Err(ControlError::Conflict(format!(
                "{name} runs on {}; a service of one host runs on one host at a time: stop it there or move it with `stackctl migrate`",
                running.join(", ")
            )));
        }
        let silent: Vec<String> = answers
            .iter()
            .filter_map(|(h, a)| a.as_ref().err().map(|e| format!("{h} ({e})")))
            .collect();
        if silent.is_empty() {
            return Ok(());
        }
        if force {
            info!(
                stackd_service = name,
                "hand-off rule overridden: cannot ask {}",
                silent.join(", ")
            );
            return Ok(());
        }
        Err(ControlError::PeerUnreachable(format!(
            "cannot ask {} whether it runs {name}; nothing was changed (--force goes ahead if that host is down for good)",
            silent.join(", ")
        )))
    }

    /// Waits for a task on another host to end. `Failed` says why it did
    /// not succeed; `Lost` that its outcome is unknown: the host stopped
    /// answering for longer than [`doubt_after`], the limit passed, or
    /// the wait was cancelled.
    async fn wait_remote(
        &self,
        peers: &dyn Peers,
        (peer, url, host): (&PeerConfig, &str, &str),
        id: u64,
        limit: Duration,
        cancel: &CancellationToken,
    ) -> Result<(), Remote> {
        let deadline = tokio::time::Instant::now() + limit;
        let silence = doubt_after(peer);
        let mut last_answer = tokio::time::Instant::now();
        let mut last_error = String::new();
        loop {
            match peers.task(peer, url, id).await {
                Ok(t) if t.state == "succeeded" => return Ok(()),
                Ok(t) if matches!(t.state.as_str(), "failed" | "cancelled") => {
                    return Err(Remote::Failed(format!(
                        "task {id} on {host} {}: {}",
                        t.result, t.error
                    )))
                }
                Ok(_) => last_answer = tokio::time::Instant::now(),
                Err(PeerFailure::Refused { message, .. }) => {
                    last_answer = tokio::time::Instant::now();
                    last_error = message;
                }
                Err(e) => last_error = e.to_string(),
            }
            let now = tokio::time::Instant::now();
            if now.duration_since(last_answer) >= silence {
                return Err(Remote::Lost(format!(
                    "{host} stopped answering while task {id} ran there ({last_error}, for {silence:?})"
                )));
            }
            if now >= deadline {
                return Err(Remote::Lost(format!(
                    "task {id} on {host} did not end within {limit:?}{}",
                    if last_error.is_empty() {
                        String::new()
                    } else {
                        format!(" ({last_error})")
                    }
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = cancel.cancelled() => return Err(Remote::Lost(format!("cancelled while waiting for task {id} on {host}"))),
            }
        }
    }

    /// The `migrate` task, on the host the service leaves.
    pub(super) async fn migrate(
        &self,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let name = task.service.as_str();
        let to = self
            .moves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .ok_or_else(|| {
                Failure::failed("the move's target host was lost (stackd restarted); ask again")
            })?;
        let carry = self
            .carry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        let cfg = self.config();
        let me = cfg.host.clone();
        let failed = |m: String| Failure::failed(m);
        let svc = cfg
            .service(name)
            .cloned()
            .ok_or_else(|| failed(format!("{name} is no longer in the configuration")))?;
        let (peer, url) = self.link(&cfg, &to).map_err(|e| failed(e.to_string()))?;
        let peers = self.peers().map_err(|e| failed(e.to_string()))?;
        let (dir, file) = project_paths(&cfg, name)?;
        let there = (&peer, url.as_str(), to.as_str());
        let carry = carry || svc.handoff_volumes;
        // The volumes are read while nothing writes them: carrying them
        // stops the service first, whatever its handoff.
        let mode = if carry {
            Handoff::StopFirst
        } else {
            svc.handoff
        };
        let handoff = match mode {
            Handoff::StopFirst => "stop-first",
            Handoff::Overlap => "overlap",
        };
        let mut carried: Vec<String> = Vec::new();
        log.line(&format!(
            "moving {name} from {me} to {to} (handoff {handoff}{})",
            match (carry, svc.handoff) {
                (false, _) => "",
                (true, Handoff::StopFirst) => ", with its named volumes",
                (true, Handoff::Overlap) => {
                    ", with its named volumes: stop-first instead of its overlap, so nothing writes them while they are copied"
                }
            }
        ));

        log.line(&format!("{to}: preflight, then pull what is missing"));
        let untouched = format!("nothing was changed; {name} stays on {me}");
        let pull = peers
            .prepare(&peer, &url, name, &me)
            .await
            .map_err(|e| failed(format!("{to}: {e}; {untouched}")))?;
        match pull {
            Some(pull) => {
                self.wait_remote(peers, there, pull, TaskKind::Pull.timeout(), cancel)
                    .await
                    .map_err(|e| {
                        failed(format!("pulling on {to} failed: {}; {untouched}", e.text()))
                    })?;
                log.line(&format!(
                    "{to}: preflight passed, images pulled (task {pull} there)"
                ));
            }
            None => log.line(&format!("{to}: preflight passed, images present")),
        }

        let before = self
            .store
            .desired(name)
            .map_err(|e| failed(e.to_string()))?;
        let deadline = tokio::time::Instant::now() + TaskKind::Stop.timeout();
        let stop = || {
            log.line(&format!("{me}: stopping {name}"));
            self.compose_steps(name, &dir, &file, &[&["stop"]], log, cancel, deadline)
        };
        match mode {
            Handoff::StopFirst => {
                // Stored first: the supervisor must not bring it back.
                self.set_moved(name, DesiredState::Stopped, &to)?;
                if let Err(f) = stop().await {
                    self.restore(name, before.as_ref());
                    self.world.refresh(name, &self.events).await;
                    return Err(failed(format!(
                        "stopping on {me} failed: {}; the move is abandoned and {name}'s desired state on {me} is as before",
                        f.message
                    )));
                }
                self.world.refresh(name, &self.events).await;
                log.line(&format!("{me}: stopped"));
                if carry {
                    // Nothing was asked of the target's start yet: any
                    // failure here puts the service back, its data as it was.
                    match self.carry_volumes(peers, there, name, log, cancel).await {
                        Ok(v) => carried = v,
                        Err(why) => {
                            let why = format!(
                                "{why}; {name}'s volumes on {me} were only read and are untouched"
                            );
                            return Err(self
                                .start_again(
                                    name,
                                    (&dir, &file),
                                    (before.as_ref(), &to),
                                    why,
                                    log,
                                    cancel,
                                )
                                .await);
                        }
                    }
                }
                let handed = self.hand_over(peers, there, name, &svc, log, cancel).await;
                if let Err(Remote::Lost(why)) = handed {
                    return Err(self.in_doubt(task, name, &to, &why, log));
                }
                if let Err(Remote::Failed(why)) = handed {
                    return Err(self
                        .start_again(
                            name,
                            (&dir, &file),
                            (before.as_ref(), &to),
                            why,
                            log,
                            cancel,
                        )
                        .await);
                }
            }
            Handoff::Overlap => {
                match self.hand_over(peers, there, name, &svc, log, cancel).await {
                    Ok(()) => {}
                    Err(Remote::Failed(why)) => {
                        return Err(failed(format!(
                            "{why}; {name} kept running on {me}, untouched"
                        )))
                    }
                    Err(Remote::Lost(why)) => {
                        // The target may run it now: one copy is the
                        // rule even for an overlap, so this one stops.
                        if let Err(e) = self.store.set_move_in_doubt(name, &to) {
                            return Err(failed(format!("cannot store the desired state: {e}")));
                        }
                        log.line(&format!("{me}: stopping {name}"));
                        let stopped = stop().await;
                        self.world.refresh(name, &self.events).await;
                        if let Err(f) = stopped {
                            log.line(&format!("stopping on {me} failed: {}", f.message));
                        } else {
                            log.line(&format!("{me}: stopped"));
                        }
                        return Err(self.in_doubt(task, name, &to, &why, log));
                    }
                }
                self.set_moved(name, DesiredState::Stopped, &to)?;
                let stopped = stop().await;
                self.world.refresh(name, &self.events).await;
                if let Err(f) = stopped {
                    return Err(failed(format!(
                        "{name} runs on {to}, but stopping it on {me} failed: {}; it runs on both: stop it here with `stackctl stop {name}`",
                        f.message
                    )));
                }
                log.line(&format!("{me}: stopped"));
            }
        }
        let summary = format!("{name} moved from {me} to {to}");
        log.line(&summary);
        if !carried.is_empty() {
            log.line(&format!(
                "kept on {me}, as they were: volume {} (stackd never removes volumes; remove them with `docker volume rm` once the copy on {to} is trusted)",
                carried.join(", volume ")
            ));
        }
        self.alert(
            Severity::Info,
            "migrated",
            name,
            &summary,
            "",
            serde_json::json!({ "from": me, "to": to, "handoff": handoff, "task": task.id }),
        );
        Ok(())
    }

    /// A stop-first move to `to` that failed before the target started
    /// the service: the desired state here as before the move, and the
    /// service started here again. The failure says both.
    ///
    /// A service the cluster file no longer places here (a move asked by
    /// `apply --all-hosts`) is *kept* here: stored as wanted running with
    /// `to` as its peer ([`crate::store::KEPT`]), so that this host
    /// manages it and no apply stops it, since its data is here.
    async fn start_again(
        &self,
        name: &str,
        (dir, file): (&std::path::Path, &std::path::Path),
        (before, to): (Option<&crate::store::Desired>, &str),
        why: String,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Failure {
        let cfg = self.config();
        let me = cfg.host.clone();
        log.line(&why);
        self.restore(name, before);
        if self.local_service(&cfg, name).is_err() {
            match self.store.set_kept(name, to) {
                Ok(()) => {
                    log.line(&format!(
                        "the cluster file places {name} on {to}, but its data is on {me}: {me} keeps it (desired running, \"kept here: its move to {to} failed\") until a move carries it: `stackctl migrate {name} {to} --with-volumes` on {me}"
                    ));
                    // D-Bus objects, probes and the monitor take it in.
                    let _ = self.events.send(Event::ServicesReloaded);
                }
                Err(e) => log.line(&format!("cannot store the desired state: {e}")),
            }
        }
        log.line(&format!("{me}: starting {name} again"));
        let deadline = tokio::time::Instant::now() + TaskKind::Deploy.timeout();
        let again = self
            .compose_steps(name, dir, file, &[&["up", "-d"]], log, cancel, deadline)
            .await;
        self.world.refresh(name, &self.events).await;
        Failure::failed(match again {
            Ok(()) => {
                let line = format!("{name} runs on {me} again");
                log.line(&line);
                format!("{why}; {line}")
            }
            Err(f) => format!(
                "{why}; starting it again on {me} failed too ({}): {name} runs nowhere now",
                f.message
            ),
        })
    }

    /// Streams each named volume of the (stopped) service to the target,
    /// one after the other, each read through one of the service's own
    /// stopped containers; the target checks every byte against the
    /// SHA-256 sent after them. Bind mounts and anonymous volumes stay
    /// here, and the log names them. Err says which volume failed and why.
    async fn carry_volumes(
        &self,
        peers: &dyn Peers,
        (peer, url, to): (&PeerConfig, &str, &str),
        name: &str,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, String> {
        let me = self.config().host.clone();
        let docker = self.world.docker().ok_or_else(|| {
            format!(
                "Docker is unavailable on {me}: {}",
                self.world.docker_error()
            )
        })?;
        let mounts = docker
            .project_mounts(name)
            .await
            .map_err(|e| format!("cannot list {name}'s volumes on {me}: {e}"))?;
        for left in &mounts.left {
            log.line(&format!("not carried: {left}"));
        }
        if mounts.volumes.is_empty() {
            log.line(&format!("{name} has no named volumes to carry"));
        }
        for v in &mounts.volumes {
            log.line(&format!(
                "{me} -> {to}: carrying volume {} (mounted on {})",
                v.name, v.destination
            ));
            if !v.options.is_empty() {
                let mut opts: Vec<String> =
                    v.options.iter().map(|(k, o)| format!("{k}={o}")).collect();
                opts.sort();
                log.line(&format!(
                    "not carried: the driver_opts of volume {} ({}); {to} makes it with driver {} alone",
                    v.name,
                    opts.join(", "),
                    v.driver
                ));
            }
            let started = std::time::Instant::now();
            // Read by a task of its own, which ends with this iteration:
            // see [`Reader`].
            let (tar, _reader) = Reader::spawn(
                docker
                    .volume_archive(v)
                    .map(|r| r.map_err(|e| e.to_string()))
                    .boxed(),
            );
            let offer = VolumeOffer {
                service: name.to_string(),
                from: me.clone(),
                volume: v.name.clone(),
                driver: v.driver.clone(),
                labels: v.labels.clone(),
                image: v.image.clone(),
            };
            let sent = tokio::select! {
                r = peers.send_volume(peer, url, &offer, tar) => r,
                _ = cancel.cancelled() => return Err(format!("cancelled while carrying volume {}", v.name)),
            };
            let got =
                sent.map_err(|e| format!("carrying volume {} to {to} failed: {e}", v.name))?;
            let secs = started.elapsed().as_secs_f64();
            log.line(&format!(
                "{to}: volume {} received: {} bytes in {secs:.1} s ({:.1} MiB/s), sha256 {} verified there{}",
                v.name,
                got.bytes,
                got.bytes as f64 / 1_048_576.0 / secs.max(1e-3),
                got.sha256,
                if got.replaced {
                    format!(" (the stale volume {} there was replaced)", v.name)
                } else {
                    String::new()
                }
            ));
        }
        Ok(mounts.volumes.into_iter().map(|v| v.name).collect())
    }

    /// Asks the target to start the service and waits for its verdict.
    /// Err says what happened; the target stops its own failed attempt.
    async fn hand_over(
        &self,
        peers: &dyn Peers,
        there: (&PeerConfig, &str, &str),
        name: &str,
        svc: &ServiceConfig,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Remote> {
        let (peer, url, to) = there;
        let me = self.config().host.clone();
        log.line(&format!("{to}: starting {name}"));
        // No answer to the receive is no proof it was not taken: the
        // request may have arrived and only the answer been lost.
        let id = peers
            .receive(peer, url, name, &me)
            .await
            .map_err(|e| match e {
                PeerFailure::Refused { .. } => {
                    Remote::Failed(format!("{to} did not take {name}: {e}"))
                }
                PeerFailure::Unreachable(_) => Remote::Lost(format!(
                    "{to} was asked to start {name} and did not answer ({e})"
                )),
            })?;
        // The receive task's own limit is start_timeout; a little more for
        // Compose to create the containers and for the answer to come.
        let limit = svc.start_timeout + Duration::from_secs(60);
        self.wait_remote(peers, there, id, limit, cancel)
            .await
            .map_err(|e| match e {
                Remote::Failed(m) => Remote::Failed(format!("starting on {to} failed: {m}")),
                lost => lost,
            })?;
        log.line(&format!(
            "{to}: {name} runs and is healthy (task {id} there)"
        ));
        Ok(())
    }

    /// A move whose target stopped answering after it was asked to start
    /// the service: the service stays stopped here (it may run there),
    /// the desired state says so ("migrate to TO (in doubt)"), and an
    /// alert says what happens next and what a person can do. The doubt
    /// is settled by [`Control::settle`] once `to` answers again.
    fn in_doubt(&self, task: &TaskRecord, name: &str, to: &str, why: &str, log: &Log) -> Failure {
        let me = self.config().host.clone();
        if let Err(e) = self.store.set_move_in_doubt(name, to) {
            tracing::warn!(stackd_service = name, "cannot store the desired state: {e}");
        }
        log.line(why);
        let summary = format!("{name}'s move from {me} to {to} is in doubt");
        let body = format!(
            "{to} was asked to start {name} and stopped answering before it said whether it did. \
             {name} was running on {me} and stays stopped there so that it does not run on two hosts: \
             it runs on {to} or nowhere. When {to} answers again {me} asks it and either confirms \
             the move or starts {name} on {me} again. If {to} is gone for good, run \
             `stackctl start --force {name}` on {me}."
        );
        log.line(&body);
        self.alert(
            Severity::Warning,
            "migrate-in-doubt",
            name,
            &summary,
            &body,
            serde_json::json!({
                "from": me,
                "to": to,
                "task": task.id,
                "why": why,
                "action": format!("nothing while {to} is away: {me} settles it when {to} answers; if {to} is gone for good: `stackctl start --force {name}` on {me}"),
            }),
        );
        Failure::failed(format!("{summary}: {why}; {body}"))
    }

    fn set_moved(&self, name: &str, state: DesiredState, peer: &str) -> Result<(), Failure> {
        self.store
            .set_moved(name, state, peer)
            .map_err(|e| Failure::failed(format!("cannot store the desired state: {e}")))
    }

    fn restore(&self, name: &str, before: Option<&crate::store::Desired>) {
        if let Err(e) = self.store.restore_desired(name, before) {
            tracing::warn!(
                stackd_service = name,
                "cannot restore the desired state: {e}"
            );
        }
    }

    /// The `receive` task, on the host the service moves to: start it,
    /// wait until it is healthy within `start_timeout`, else stop it again
    /// and hand the desired state back ("migrate to FROM", stopped).
    pub(super) async fn receive(
        &self,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let name = task.service.as_str();
        let from = task
            .origin
            .strip_prefix("migrate from ")
            .unwrap_or("?")
            .to_string();
        let cfg = self.config();
        let svc = cfg
            .service(name)
            .cloned()
            .ok_or_else(|| Failure::failed(format!("{name} is no longer in the configuration")))?;
        let (dir, file) = project_paths(&cfg, name)?;
        log.line(&format!("{name} moves here from {from}"));
        let deadline = tokio::time::Instant::now() + svc.start_timeout;
        let started = self
            .compose_steps(name, &dir, &file, &[&["up", "-d"]], log, cancel, deadline)
            .await;
        self.world.refresh(name, &self.events).await;
        let outcome = match started {
            Ok(()) => self.wait_healthy(&cfg, &svc, deadline, cancel).await,
            Err(f) => Err(f.message),
        };
        match outcome {
            Ok(()) => {
                if let Err(e) = self.store.mark_deployed(name) {
                    tracing::warn!(stackd_service = name, "cannot record the deployment: {e}");
                }
                let summary = format!("{name} moved here from {from}");
                log.line(&format!("{name} runs and is healthy"));
                self.alert(
                    Severity::Info,
                    "migrated",
                    name,
                    &summary,
                    "",
                    serde_json::json!({ "from": from, "to": cfg.host, "task": task.id }),
                );
                Ok(())
            }
            Err(why) => {
                log.line(&why);
                self.set_moved(name, DesiredState::Stopped, &from)?;
                log.line(&format!(
                    "stopping what was started; {name} stays with {from}"
                ));
                let deadline = tokio::time::Instant::now() + TaskKind::Stop.timeout();
                let stopped = self
                    .compose_steps(
                        name,
                        &dir,
                        &file,
                        &[&["stop"]],
                        log,
                        &CancellationToken::new(),
                        deadline,
                    )
                    .await;
                self.world.refresh(name, &self.events).await;
                Err(Failure::failed(match stopped {
                    Ok(()) => format!("{why}; stopped again on {}", cfg.host),
                    Err(f) => format!(
                        "{why}; stopping it again on {} failed too: {}",
                        cfg.host, f.message
                    ),
                }))
            }
        }
    }

    /// Running, and healthy as the probes (or Docker's healthchecks, or
    /// the containers alone) tell, for [`SETTLE`] on end (a container
    /// that exits at once looks running for a moment), before `deadline`.
    async fn wait_healthy(
        &self,
        cfg: &Config,
        svc: &ServiceConfig,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Result<(), String> {
        let probed = svc.health.as_ref().is_some_and(|h| h.probe.is_some());
        let mut since: Option<tokio::time::Instant> = None;
        loop {
            let said = self.store.desired(&svc.name).ok().flatten();
            let status = self.status(cfg, svc, said.as_ref());
            let observed = world::classify(&status.containers);
            let verdict = self.board.verdict(&svc.name).map(|v| v.health);
            let healthy = observed == Observed::Running
                && status.health == "healthy"
                && (!probed || verdict == Some("healthy"));
            let now = tokio::time::Instant::now();
            since = if healthy { since.or(Some(now)) } else { None };
            if since.is_some_and(|t| now.duration_since(t) >= SETTLE) {
                return Ok(());
            }
            if status.health == "unhealthy" {
                return Err(format!(
                    "{} is unhealthy: {}",
                    svc.name, status.health_message
                ));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "{} was not healthy within start_timeout {:?} ({}, health {}{})",
                    svc.name,
                    svc.start_timeout,
                    observed.as_str(),
                    status.health,
                    if status.health_message.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", status.health_message)
                    }
                ));
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = cancel.cancelled() => return Err("cancelled while waiting for health".to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn there(desired: &str, active: &str) -> Result<Option<PeerService>, PeerFailure> {
        Ok(Some(PeerService {
            desired_state: desired.into(),
            active_state: active.into(),
            sub_state: "running".into(),
            desired_since_usec: 1,
        }))
    }

    #[test]
    fn a_move_in_doubt_is_settled_only_by_a_clear_answer() {
        assert_eq!(verdict(&there("running", "active")), Verdict::Moved);
        // Still starting there, or wanted but not up yet: ask again.
        assert_eq!(verdict(&there("running", "activating")), Verdict::Unknown);
        assert_eq!(verdict(&there("running", "failed")), Verdict::Unknown);
        // Its receive failed and handed it back, or it never got it.
        assert_eq!(verdict(&there("stopped", "inactive")), Verdict::NotThere);
        assert_eq!(verdict(&Ok(None)), Verdict::NotThere);
        let refused = |kind: &str| {
            Err(PeerFailure::Refused {
                kind: kind.into(),
                message: "x".into(),
            })
        };
        assert_eq!(verdict(&refused("NoSuchService")), Verdict::NotThere);
        assert_eq!(verdict(&refused("Unauthorized")), Verdict::Unknown);
        let silent = Err(PeerFailure::Unreachable("timeout".into()));
        assert_eq!(verdict(&silent), Verdict::Unknown);
    }

    #[test]
    fn a_stopped_service_whose_containers_exited_0_does_not_run_there() {
        let svc = |desired: &str, active: &str, sub: &str| PeerService {
            desired_state: desired.into(),
            active_state: active.into(),
            sub_state: sub.into(),
            desired_since_usec: 0,
        };
        assert!(!svc("stopped", "active", "exited").runs());
        assert!(!svc("stopped", "inactive", "dead").runs());
        assert!(svc("stopped", "active", "running").runs());
        assert!(svc("stopped", "activating", "deploy").runs());
        assert!(svc("running", "active", "exited").runs());
        assert!(svc("running", "inactive", "dead").runs());
    }

    #[test]
    fn the_newer_claim_wins_and_both_hosts_agree() {
        let cases = [
            ((20, "a"), (10, "c"), true),
            ((10, "a"), (20, "c"), false),
            // auto_start (0) loses to any decision.
            ((0, "a"), (5, "c"), false),
            // Equally old: the smaller host name.
            ((7, "a"), (7, "c"), true),
            ((7, "c"), (7, "a"), false),
            ((0, "b"), (0, "a"), false),
        ];
        for (mine, theirs, wins) in cases {
            assert_eq!(claim_wins(mine, theirs), wins, "{mine:?} vs {theirs:?}");
            // The other host computes the opposite: exactly one keeps it.
            assert_eq!(claim_wins(theirs, mine), !wins, "{theirs:?} vs {mine:?}");
        }
    }

    #[test]
    fn doubt_comes_after_the_heartbeat_would_call_the_host_lost() {
        let peer = PeerConfig {
            listen: String::new(),
            token_file: "/t".into(),
            tls_cert: None,
            tls_key: None,
            tls_ca: None,
            tls_pin_sha256: None,
            timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(5),
        };
        assert_eq!(doubt_after(&peer), Duration::from_secs(17));
    }
}
