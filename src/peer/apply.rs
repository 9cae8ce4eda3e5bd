//! `stackctl apply --all-hosts [--dry-run]` and `config push --apply`,
//! run by the caller's own daemon (`Manager.ApplyAllHosts`), which holds
//! the peer token: every host of its cluster file brought to it, with the
//! services whose placement changed moved rather than started twice.
//! Through each host's peer endpoint (`POST /v1/apply`, the move's
//! `prepare`, the start):
//!
//! 1. every host says what left its placement (a dry run of its
//!    leaving-only apply): the services it runs that it no longer should;
//! 2. the hosts those services go to run their preflight (and pull what
//!    is missing) — a failure there stops everything before anything is
//!    stopped;
//! 3. each host stops what left it, and the daemon waits for those stops;
//! 4. the services start where they go, dependencies first (a start
//!    that follows the hand-off rule, so it is refused if another host
//!    still runs the service);
//! 5. every host runs its own apply for the rest.
//!
//! A service that was not running where it left is not started where it
//! goes by step 4; step 5 starts it there if its `auto_start` says so.
//!
//! A service with `handoff_volumes = true` that leaves one host for one
//! other is *carried* instead, before step 3: the host it leaves moves it
//! (`POST /v1/services/{name}/migrate`, a `migrate` task with its named
//! volumes: stop, stream each volume with its checksum, then the start
//! there), and the daemon waits for that task. When the move fails before
//! the start there, the host it leaves runs it again and keeps it (its
//! data is there; desired "kept here: its move to HOST failed"), and the
//! host it should go to is asked to keep it stopped, so that its own apply
//! in step 5 does not start it empty.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;

use std::net::SocketAddr;

use tracing::info;

use super::types::{MigrateRequest, Task};
use super::PeerClient;
use crate::config::{Config, HostSelector};
use crate::control::{Control, ControlError};
use crate::state::ActiveState;
use crate::store::Origin;

/// How often a task on a host is looked at while waiting for it.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait for one task (Compose's own limits are shorter).
const TASK_LIMIT: Duration = Duration::from_secs(900);

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub host: String,
    /// "stop", "preflight", "carry", "start", "apply".
    pub action: String,
    pub service: String,
    pub reason: String,
}

/// What an apply of every host did: its plan, what went as planned and
/// what failed, each a line naming the host.
#[derive(Clone, Debug, Default)]
pub struct Outcome {
    pub plan: Vec<Step>,
    pub done: Vec<String>,
    pub failed: Vec<String>,
}

/// A service leaving `from` for `to` (none: it left the cluster file).
struct Move {
    service: String,
    from: String,
    to: Vec<String>,
    /// Its named volumes go with it (`handoff_volumes`, one host to one):
    /// `from` moves it, volumes and start included.
    carry: bool,
}

/// The hosts a service is placed on, by the cluster file.
fn placed_on(cfg: &Config, service: &str) -> Vec<String> {
    match cfg.service(service).map(|s| &s.hosts) {
        Some(HostSelector::List(l)) => l.clone(),
        Some(HostSelector::All) => cfg.hosts.keys().cloned().collect(),
        None => Vec::new(),
    }
}

/// How deep `service` sits in the cluster file's dependency graph (0: it
/// depends on nothing); starts go by increasing depth.
fn depth(cfg: &Config, service: &str, seen: &mut Vec<String>) -> usize {
    if seen.iter().any(|s| s == service) {
        return 0;
    }
    seen.push(service.to_string());
    let d = cfg
        .service(service)
        .map(|s| {
            s.depends_on
                .iter()
                .map(|dep| 1 + depth(cfg, dep, seen))
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    seen.pop();
    d
}

/// Waits for task `id` on `host` to end; Err says how it ended.
async fn wait_task(client: &PeerClient, host: &str, id: u64) -> Result<Task, String> {
    let deadline = tokio::time::Instant::now() + TASK_LIMIT;
    loop {
        match client.task(id).await {
            Ok(t) if t.state == "succeeded" => return Ok(t),
            Ok(t) if matches!(t.state.as_str(), "failed" | "cancelled") => {
                return Err(format!("task {id} on {host} {}: {}", t.result, t.error))
            }
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {}
            Ok(t) => {
                return Err(format!(
                    "task {id} on {host} still {} after {TASK_LIMIT:?}",
                    t.state
                ))
            }
            Err(e) => return Err(format!("task {id} on {host}: {e}")),
        }
        tokio::time::sleep(POLL).await;
    }
}

/// One carried move: `m.from` moves the service to `m.to[0]` with its
/// volumes, and the daemon waits for that `migrate` task. Err is the line
/// for the outcome's `failed`, saying where the service runs now.
async fn carry(
    clients: &BTreeMap<String, PeerClient>,
    m: &Move,
    force: bool,
) -> Result<(), String> {
    let (from, to, name) = (&m.from, &m.to[0], &m.service);
    let src = &clients[from];
    let moved = match src
        .migrate(name, to, true, Some("apply --all-hosts"), force)
        .await
    {
        Ok(task) => wait_task(src, from, task.id).await.map(|_| ()),
        Err(e) => Err(format!("{from} did not move it: {e}")),
    };
    let Err(why) = moved else {
        return Ok(());
    };
    // Where is it now? When it runs where it was, it is kept there (its
    // data is there); the host it should go to is told to keep it
    // stopped, so that its own apply does not start it without its data.
    let runs_there = src
        .service(name)
        .await
        .is_ok_and(|s| s.active_state == ActiveState::Active);
    if !runs_there {
        return Err(format!(
            "{from}: moving {name} to {to} with its named volumes failed: {why}; it is not started elsewhere (see the migrate task on {from})"
        ));
    }
    let held = match clients[to]
        .op(name, "stop", Some(&format!("apply --all-hosts (kept on {from})")), false)
        .await
    {
        Ok(_) => format!("{to} keeps it stopped"),
        Err(e) => format!(
            "{to} could not be told to keep it stopped ({e}): run `stackctl stop {name}` on {to} before its next apply"
        ),
    };
    Err(format!(
        "{from}: moving {name} to {to} with its named volumes failed: {why}; {from} keeps it where its data is (desired \"kept here: its move to {to} failed\"), {held}; once the cause is fixed: `stackctl migrate {name} {to} --with-volumes` on {from}"
    ))
}

/// `POST /v1/services/{name}/migrate`, asked of this host by the daemon
/// that runs an `apply --all-hosts` (see [`carry`]): the move of a
/// service it runs to `ask.to` ([`Control::migrate_leaving`]).
pub(super) async fn migrate(
    control: &Control,
    name: &str,
    ask: MigrateRequest,
    peer: SocketAddr,
) -> Result<Task, ControlError> {
    let origin = Origin::peer(peer.ip(), ask.caller.as_deref());
    // A well-formed request naming a target this host's cluster file
    // cannot move the service to: the two files disagree (409), as for
    // a move's other steps, not a malformed request.
    let task = control
        .migrate_leaving(name, &ask.to, ask.force, ask.volumes, &origin)
        .await
        .map_err(|e| match e {
            ControlError::InvalidArgument(m) => ControlError::Conflict(m),
            e => e,
        })?;
    info!(stackd_service = %name, stackd_task = task.id, "{peer} asks to move {name} to {}", ask.to);
    Ok(Task::from_record(&task, None))
}

/// Brings every host of `clients` (one per host of `cfg`'s `[hosts]`) to
/// `cfg`; with `dry_run` only the plan. Err, with nothing changed on any
/// host, when a host cannot say what it would do or a preflight where a
/// service goes fails; failures after that are in the outcome's `failed`.
pub async fn apply_all_hosts(
    clients: &BTreeMap<String, PeerClient>,
    cfg: &Config,
    dry_run: bool,
    force: bool,
) -> Result<Outcome, String> {
    let mut out = Outcome::default();

    // 1. What leaves each host, and each host's own plan.
    let asks = join_all(clients.iter().map(|(h, c)| async move {
        let leaving = c.apply(true, true, force).await;
        let all = c.apply(false, true, force).await;
        (h.clone(), leaving, all)
    }))
    .await;
    let mut moves: Vec<Move> = Vec::new();
    let mut rest: Vec<Step> = Vec::new();
    for (host, leaving, all) in asks {
        let (leaving, all) = match (leaving, all) {
            (Ok(l), Ok(a)) => (l, a),
            (Err(e), _) | (_, Err(e)) => {
                return Err(format!("{host}: {e}; nothing was changed on any host"))
            }
        };
        for p in leaving.plan.iter().filter(|p| p.action == "stop") {
            let to: Vec<String> = placed_on(cfg, &p.service)
                .into_iter()
                .filter(|h| *h != host)
                .collect();
            let carry = cfg.service(&p.service).is_some_and(|s| s.handoff_volumes) && to.len() == 1;
            moves.push(Move {
                service: p.service.clone(),
                from: host.clone(),
                to,
                carry,
            });
        }
        for p in all.plan {
            let moved = moves.iter().any(|m| m.service == p.service);
            if !moved {
                rest.push(Step {
                    host: host.clone(),
                    action: if p.action == "stop" { "stop" } else { "start" }.to_string(),
                    service: p.service,
                    reason: p.reason,
                });
            }
        }
    }
    moves.sort_by_key(|m| (depth(cfg, &m.service, &mut Vec::new()), m.service.clone()));

    for m in moves.iter().rev() {
        out.plan.push(Step {
            host: m.from.clone(),
            action: "stop".into(),
            service: m.service.clone(),
            reason: if m.to.is_empty() {
                "no longer in the cluster file's placement".into()
            } else if m.carry {
                format!("moves to {} with its named volumes", m.to.join(", "))
            } else {
                format!("moves to {}", m.to.join(", "))
            },
        });
    }
    for m in &moves {
        for t in &m.to {
            out.plan.push(Step {
                host: t.clone(),
                action: "preflight".into(),
                service: m.service.clone(),
                reason: format!("before {} stops on {}", m.service, m.from),
            });
        }
    }
    for m in moves.iter().filter(|m| m.carry) {
        out.plan.push(Step {
            host: m.from.clone(),
            action: "carry".into(),
            service: m.service.clone(),
            reason: format!(
                "its named volumes to {}, after its stop, before its start there (handoff_volumes)",
                m.to.join(", ")
            ),
        });
    }
    for m in &moves {
        for t in &m.to {
            out.plan.push(Step {
                host: t.clone(),
                action: "start".into(),
                service: m.service.clone(),
                reason: format!("moved from {}, after its stop there", m.from),
            });
        }
    }
    out.plan.extend(rest.iter().cloned());
    if dry_run {
        return Ok(out);
    }

    // 2. Preflight (and pulls) where the services go, before any stop.
    for m in &moves {
        for t in &m.to {
            let c = &clients[t];
            let prepared = c.prepare(&m.service, &m.from).await.map_err(|e| {
                format!(
                    "preflight of {} on {t}: {e}; nothing was stopped",
                    m.service
                )
            })?;
            if let Some(pull) = prepared.pull {
                wait_task(c, t, pull.id).await.map_err(|e| {
                    format!("pulling {} on {t}: {e}; nothing was stopped", m.service)
                })?;
            }
            out.done
                .push(format!("{t}: preflight of {} passed", m.service));
        }
    }

    // 3a. The carried moves, one at a time, dependencies first: the host
    // a service leaves stops it, streams its volumes, and has it started
    // where it goes.
    let mut carried: Vec<&str> = Vec::new();
    for m in moves.iter().filter(|m| m.carry) {
        let (from, to) = (&m.from, &m.to[0]);
        match carry(clients, m, force).await {
            Ok(()) => {
                out.done.push(format!(
                    "{from}: moved {} to {to} with its named volumes",
                    m.service
                ));
                out.done
                    .push(format!("{to}: started {} (moved from {from})", m.service));
            }
            Err(e) => out.failed.push(e),
        }
        carried.push(&m.service);
    }

    // 3. The stops, each host's in one task; wait for all of them.
    let mut not_stopped: Vec<&str> = carried.clone();
    let sources: Vec<&String> = {
        let mut s: Vec<&String> = moves.iter().filter(|m| !m.carry).map(|m| &m.from).collect();
        s.sort();
        s.dedup();
        s
    };
    for host in sources {
        let c = &clients[host];
        let outcome = match c.apply(true, false, force).await {
            Ok(a) => match a.task {
                Some(t) => wait_task(c, host, t.id).await.map(|_| ()),
                None => Ok(()),
            },
            Err(e) => Err(format!("{host}: {e}")),
        };
        let here = moves.iter().filter(|m| m.from == *host && !m.carry);
        match outcome {
            Ok(()) => {
                for m in here {
                    out.done.push(format!("{host}: stopped {}", m.service));
                }
            }
            Err(e) => {
                for m in here {
                    out.failed.push(format!(
                        "{host}: stopping {} failed ({e}); it is not started elsewhere",
                        m.service
                    ));
                    not_stopped.push(&m.service);
                }
            }
        }
    }

    // 4. The starts where they go, dependencies first.
    for m in &moves {
        if not_stopped.contains(&m.service.as_str()) {
            continue;
        }
        for t in &m.to {
            let c = &clients[t];
            let caller = format!("apply --all-hosts (from {})", m.from);
            let started = match c.op(&m.service, "start", Some(&caller), false).await {
                Ok(task) => wait_task(c, t, task.id).await.map(|_| ()),
                Err(e) => Err(e.to_string()),
            };
            match started {
                Ok(()) => out.done.push(format!(
                    "{t}: started {} (moved from {})",
                    m.service, m.from
                )),
                Err(e) => out
                    .failed
                    .push(format!("{t}: starting {} failed: {e}", m.service)),
            }
        }
    }

    // 5. Every host's own apply for the rest.
    for (host, c) in clients {
        let applied = match c.apply(false, false, force).await {
            Ok(a) => match a.task {
                Some(t) => wait_task(c, host, t.id).await.map(|_| ()),
                None => Ok(()),
            },
            Err(e) => Err(e.to_string()),
        };
        match applied {
            Ok(()) => out.done.push(format!("{host}: applied")),
            Err(e) => out.failed.push(format!("{host}: apply failed: {e}")),
        }
    }
    Ok(out)
}
