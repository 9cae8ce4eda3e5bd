//! The registry's view of the services: what each one is (`kind`,
//! `description`, `category`, `required_for`), the external services that
//! stackd only probes, and the questions a person asks of the whole list:
//! what runs, what could start and what blocks it (`readiness`), and which
//! services an operation needs (`required`).
//!
//! An external service (`kind = "external"`) has no lifecycle: every
//! operation on it is refused, the reconcile planner never sees it, and
//! its state is its probe's verdict in systemd's words:
//!
//! | probe says | ActiveState  | SubState  |
//! |------------|--------------|-----------|
//! | healthy    | active       | running   |
//! | unhealthy  | failed       | unhealthy |
//! | nothing yet| activating   | probing   |

use std::collections::{BTreeSet, HashMap};

use super::{Control, ControlError, Op, ServiceStatus, Shared};
use crate::config::{Config, ServiceConfig};
use crate::deps::Graph;
use crate::health::Health;
use crate::state::{ActiveState, SubState};
use crate::store::Desired;

/// One row of `stackctl readiness`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub name: String,
    /// `running`, `could start` or `blocked`.
    pub verdict: &'static str,
    /// What blocks it (preflight's fatal problems, a dependency that is
    /// blocked, an external service that is not healthy); empty otherwise.
    pub problems: Vec<String>,
}

/// One row of `stackctl required OPERATION`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Required {
    pub name: String,
    /// Named by `required_for` itself, not only a dependency of one that is.
    pub direct: bool,
    pub active_state: ActiveState,
    pub health: Health,
    /// ActiveState `active`.
    pub running: bool,
}

/// Each external service's last ActiveState and when it was first seen:
/// its `StateChangeTimestamp` (it has no containers to date it).
#[derive(Default)]
pub(super) struct Since(std::sync::Mutex<HashMap<String, (ActiveState, u64)>>);

impl Since {
    fn note(&self, service: &str, state: &ActiveState) -> u64 {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(service) {
            Some((s, usec)) if s == state => *usec,
            _ => {
                let now = crate::time::now_usec();
                map.insert(service.to_string(), (state.clone(), now));
                now
            }
        }
    }
}

/// Why an operation on an external service is refused.
pub(super) fn refuse_external(svc: &ServiceConfig, op: Op) -> Result<(), ControlError> {
    if !svc.is_external() {
        return Ok(());
    }
    Err(ControlError::Conflict(format!(
        "{} is kind = \"external\": stackd only probes it and cannot {} it; manage it where it \
         runs",
        svc.name,
        op_word(op)
    )))
}

fn op_word(op: Op) -> &'static str {
    match op {
        Op::Start => "start",
        Op::Stop => "stop",
        Op::Restart => "restart",
        Op::Update => "update",
        Op::Pull => "pull",
        Op::Down => "take down",
        Op::Rollback => "roll back",
    }
}

impl Shared {
    /// The status of an external service: its probe's verdict.
    pub(super) fn external_status(
        &self,
        cfg: &Config,
        svc: &ServiceConfig,
        said: Option<&Desired>,
    ) -> ServiceStatus {
        let (desired, desired_source) = Shared::desired(svc, said);
        let (health, message) = self
            .board
            .verdict(&svc.name)
            .map(|v| (v.health, v.message))
            .unwrap_or((Health::Unknown, "not probed yet".to_string()));
        let (active_state, sub_state) = match health {
            Health::Healthy => (ActiveState::Active, SubState::Running),
            Health::Unhealthy | Health::Degraded => (ActiveState::Failed, SubState::Unhealthy),
            Health::Unknown | Health::Starting => (ActiveState::Activating, SubState::Probing),
        };
        ServiceStatus {
            name: svc.name.clone(),
            host: cfg.host.clone(),
            desired,
            desired_source,
            desired_since_usec: 0,
            state_change_usec: self.external_since.note(&svc.name, &active_state),
            active_state,
            sub_state,
            health,
            health_message: message,
            containers: Vec::new(),
            restart_count: 0,
            cpu_percent: 0.0,
            memory_bytes: 0,
            compose_file: std::path::PathBuf::new(),
            ready: health == Health::Healthy,
            kind: svc.kind.as_str(),
            description: svc.description.clone().unwrap_or_default(),
            category: svc.category.clone().unwrap_or_default(),
            required_for: svc.required_for.clone(),
        }
    }
}

impl Control {
    /// Per local service: running, could start, or blocked and why. A
    /// Compose service is blocked by its preflight's fatal problems or by
    /// a dependency that is blocked; an external one by its probe.
    pub async fn readiness(&self) -> Vec<Readiness> {
        let cfg = self.config();
        let services = self.list_services();
        let mut out: Vec<Readiness> = Vec::new();
        // Dependencies first, so a dependent sees their verdict.
        let graph = Graph::from_services(cfg.local_services());
        let mut order: Vec<String> = Vec::new();
        for wave in graph.start_waves() {
            order.extend(wave);
        }
        for s in &services {
            if !order.contains(&s.name) {
                order.push(s.name.clone());
            }
        }
        for name in order {
            let Some(st) = services.iter().find(|s| s.name == name) else {
                continue;
            };
            let Some(svc) = cfg.service(&name) else {
                continue;
            };
            let row = if st.active_state == ActiveState::Active && (svc.is_external() || st.ready) {
                Readiness {
                    name,
                    verdict: "running",
                    problems: Vec::new(),
                }
            } else if svc.is_external() {
                Readiness {
                    name,
                    verdict: "blocked",
                    problems: vec![format!(
                        "external, not healthy: {} ({})",
                        st.health, st.health_message
                    )],
                }
            } else if st.active_state == ActiveState::Active {
                // Up but not (yet) healthy: it runs, with its health told.
                Readiness {
                    name,
                    verdict: "running",
                    problems: vec![format!("health {}: {}", st.health, st.health_message)],
                }
            } else {
                let mut problems: Vec<String> = match self.preflight(&name).await {
                    Ok(_) => Vec::new(),
                    Err(ControlError::PreflightFailed(text)) => {
                        text.lines().map(str::to_owned).collect()
                    }
                    Err(e) => vec![e.to_string()],
                };
                for dep in &svc.depends_on {
                    if out.iter().any(|r| &r.name == dep && r.verdict == "blocked") {
                        problems.push(format!("dependency {dep} is blocked"));
                    }
                }
                Readiness {
                    name,
                    verdict: if problems.is_empty() {
                        "could start"
                    } else {
                        "blocked"
                    },
                    problems,
                }
            };
            out.push(row);
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The local services whose `required_for` names `operation`, then
    /// their dependencies (each once), with their state.
    pub fn required(&self, operation: &str) -> Vec<Required> {
        let cfg = self.config();
        let local: Vec<ServiceConfig> = self.local_services();
        let direct: Vec<String> = local
            .iter()
            .filter(|s| s.required_for.iter().any(|o| o == operation))
            .map(|s| s.name.clone())
            .collect();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        let mut names: Vec<String> = Vec::new();
        let mut stack: Vec<String> = direct.iter().rev().cloned().collect();
        while let Some(n) = stack.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            if let Some(s) = cfg.service(&n) {
                stack.extend(s.depends_on.iter().rev().cloned());
            }
            names.push(n);
        }
        names
            .into_iter()
            .filter_map(|n| {
                let st = self.service(&n).ok()?;
                Some(Required {
                    direct: direct.contains(&n),
                    name: n,
                    running: st.active_state == ActiveState::Active,
                    active_state: st.active_state,
                    health: st.health,
                })
            })
            .collect()
    }
}
