//! `stackctl apply --all-hosts [--dry-run]` and `config push --apply`:
//! every host of the cluster file brought to it, with the services whose
//! placement changed moved rather than started twice. Through each host's
//! peer endpoint (`POST /v1/apply`, the move's `prepare`, the start):
//!
//! 1. every host says what left its placement (a dry run of its
//!    leaving-only apply): the services it runs that it no longer should;
//! 2. the hosts those services go to run their preflight (and pull what
//!    is missing) — a failure there stops everything before anything is
//!    stopped;
//! 3. each host stops what left it, and stackctl waits for those stops;
//! 4. the services start where they go, dependencies first (a start
//!    that follows the hand-off rule, so it is refused if another host
//!    still runs the service);
//! 5. every host runs its own apply for the rest.
//!
//! A service that was not running where it left is not started where it
//! goes by step 4; step 5 starts it there if its `auto_start` says so.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;

use super::{exit, peer_client, print_json, Failed, Result};
use crate::config::{Config, HostSelector};
use crate::peer::types::Task;
use crate::peer::PeerClient;

impl From<crate::peer::PeerClientError> for Failed {
    fn from(e: crate::peer::PeerClientError) -> Self {
        let code = match e.kind() {
            Some("NoSuchService" | "NoSuchTask") => exit::NO_SUCH,
            Some("InvalidArgument") => exit::USAGE,
            _ => exit::FAILURE,
        };
        Failed(code, e.to_string())
    }
}

/// How often a task on a host is looked at while waiting for it.
const POLL: Duration = Duration::from_millis(250);
/// The longest wait for one task (Compose's own limits are shorter).
const TASK_LIMIT: Duration = Duration::from_secs(900);

/// One line of the plan.
#[derive(Serialize, Clone, Debug)]
struct Step {
    host: String,
    /// "stop", "preflight", "start", "apply".
    action: &'static str,
    service: String,
    reason: String,
}

/// A service leaving `from` for `to` (none: it left the cluster file).
struct Move {
    service: String,
    from: String,
    to: Vec<String>,
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

fn failed(m: String) -> Failed {
    Failed(exit::FAILURE, m)
}

/// Waits for task `id` on `host` to end; Err says how it ended.
async fn wait_task(client: &PeerClient, host: &str, id: u64) -> Result<Task> {
    let deadline = tokio::time::Instant::now() + TASK_LIMIT;
    loop {
        match client.task(id).await {
            Ok(t) if t.state == "succeeded" => return Ok(t),
            Ok(t) if matches!(t.state.as_str(), "failed" | "cancelled") => {
                return Err(failed(format!(
                    "task {id} on {host} {}: {}",
                    t.result, t.error
                )))
            }
            Ok(_) | Err(_) if tokio::time::Instant::now() < deadline => {}
            Ok(t) => {
                return Err(failed(format!(
                    "task {id} on {host} still {} after {TASK_LIMIT:?}",
                    t.state
                )))
            }
            Err(e) => return Err(failed(format!("task {id} on {host}: {e}"))),
        }
        tokio::time::sleep(POLL).await;
    }
}

pub(super) async fn apply_all_hosts(
    cfg: &Config,
    dry_run: bool,
    force: bool,
    json: bool,
) -> Result<u8> {
    let mut clients: BTreeMap<String, PeerClient> = BTreeMap::new();
    for h in cfg.hosts.keys() {
        clients.insert(h.clone(), peer_client(cfg, h)?);
    }
    if clients.is_empty() {
        return Err(Failed(
            exit::USAGE,
            format!("{} has no [hosts]", cfg.path.display()),
        ));
    }
    let say = |line: String| {
        if !json {
            println!("{line}");
        }
    };

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
                return Err(failed(format!(
                    "{host}: {e}; nothing was changed on any host"
                )))
            }
        };
        for p in leaving.plan.iter().filter(|p| p.action == "stop") {
            let to = placed_on(cfg, &p.service)
                .into_iter()
                .filter(|h| *h != host)
                .collect();
            moves.push(Move {
                service: p.service.clone(),
                from: host.clone(),
                to,
            });
        }
        for p in all.plan {
            let moved = moves.iter().any(|m| m.service == p.service);
            if !moved {
                rest.push(Step {
                    host: host.clone(),
                    action: if p.action == "stop" { "stop" } else { "start" },
                    service: p.service,
                    reason: p.reason,
                });
            }
        }
    }
    moves.sort_by_key(|m| (depth(cfg, &m.service, &mut Vec::new()), m.service.clone()));

    let mut plan: Vec<Step> = Vec::new();
    for m in moves.iter().rev() {
        plan.push(Step {
            host: m.from.clone(),
            action: "stop",
            service: m.service.clone(),
            reason: if m.to.is_empty() {
                "no longer in the cluster file's placement".into()
            } else {
                format!("moves to {}", m.to.join(", "))
            },
        });
    }
    for m in &moves {
        for t in &m.to {
            plan.push(Step {
                host: t.clone(),
                action: "preflight",
                service: m.service.clone(),
                reason: format!("before {} stops on {}", m.service, m.from),
            });
        }
    }
    for m in &moves {
        for t in &m.to {
            plan.push(Step {
                host: t.clone(),
                action: "start",
                service: m.service.clone(),
                reason: format!("moved from {}, after its stop there", m.from),
            });
        }
    }
    plan.extend(rest.iter().cloned());
    if dry_run {
        if json {
            return print_json(&plan);
        }
        if plan.is_empty() {
            println!("nothing to do on any host");
        }
        for s in &plan {
            println!(
                "{:<10} {:<9} {}  ({})",
                s.host, s.action, s.service, s.reason
            );
        }
        return Ok(exit::OK);
    }

    // 2. Preflight (and pulls) where the services go, before any stop.
    for m in &moves {
        for t in &m.to {
            let c = &clients[t];
            let prepared = c.prepare(&m.service, &m.from).await.map_err(|e| {
                failed(format!(
                    "preflight of {} on {t}: {e}; nothing was stopped",
                    m.service
                ))
            })?;
            if let Some(pull) = prepared.pull {
                wait_task(c, t, pull.id).await.map_err(|Failed(_, e)| {
                    failed(format!(
                        "pulling {} on {t}: {e}; nothing was stopped",
                        m.service
                    ))
                })?;
            }
            say(format!("{t}: preflight of {} passed", m.service));
        }
    }

    // 3. The stops, each host's in one task; wait for all of them.
    let mut code = exit::OK;
    let mut not_stopped: Vec<&str> = Vec::new();
    let sources: Vec<&String> = {
        let mut s: Vec<&String> = moves.iter().map(|m| &m.from).collect();
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
            Err(e) => Err(failed(format!("{host}: {e}"))),
        };
        let here = moves.iter().filter(|m| m.from == *host);
        match outcome {
            Ok(()) => {
                for m in here {
                    say(format!("{host}: stopped {}", m.service));
                }
            }
            Err(Failed(_, e)) => {
                code = exit::FAILURE;
                for m in here {
                    eprintln!(
                        "{host}: stopping {} failed ({e}); it is not started elsewhere",
                        m.service
                    );
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
                Err(e) => Err(failed(e.to_string())),
            };
            match started {
                Ok(()) => say(format!(
                    "{t}: started {} (moved from {})",
                    m.service, m.from
                )),
                Err(Failed(_, e)) => {
                    code = exit::FAILURE;
                    eprintln!("{t}: starting {} failed: {e}", m.service);
                }
            }
        }
    }

    // 5. Every host's own apply for the rest.
    for (host, c) in &clients {
        let applied = match c.apply(false, false, force).await {
            Ok(a) => match a.task {
                Some(t) => wait_task(c, host, t.id).await.map(|_| ()),
                None => Ok(()),
            },
            Err(e) => Err(failed(e.to_string())),
        };
        match applied {
            Ok(()) => say(format!("{host}: applied")),
            Err(Failed(_, e)) => {
                code = exit::FAILURE;
                eprintln!("{host}: apply failed: {e}");
            }
        }
    }
    if json {
        print_json(&plan)?;
    }
    Ok(code)
}
