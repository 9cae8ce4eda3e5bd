//! The reconcile executor: `apply`, the boot and engine-restart
//! reconciles: the facts for the planner, its plan run in waves of tasks.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{compose_networks, units, Control, ControlError, Shared};
use crate::config;
use crate::events::Severity;
use crate::reconcile::{self, Action, Facts};
use crate::store::{Origin, SetBy, TaskRecord, TaskResult};
use crate::systemd;
use crate::tasks::{Failure, Log, TaskKind};
use crate::world;

fn recovery_summary(
    recovered: &[String],
    failed: &[(String, String)],
    stopped: &[String],
) -> String {
    let mut parts = Vec::new();
    if recovered.is_empty() && failed.is_empty() {
        parts.push("nothing needed starting".to_string());
    }
    if !recovered.is_empty() {
        parts.push(format!("started {}", recovered.join(", ")));
    }
    if !failed.is_empty() {
        let names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
        parts.push(format!("failed {}", names.join(", ")));
    }
    if !stopped.is_empty() {
        parts.push(format!("left stopped {}", stopped.join(", ")));
    }
    parts.join("; ")
}

impl Control {
    /// Plan against the current config and queue what it takes (a
    /// reconcile task). Unless `force`, refused when it would stop more
    /// of this host's services for being no longer assigned than
    /// `reload_guard` lets a reload remove (see [`Shared::removal_guard`]).
    pub fn apply(&self, origin: &Origin, force: bool) -> Result<TaskRecord, ControlError> {
        if !force {
            if let Some(why) = self
                .shared
                .removal_guard(&reconcile::plan(&self.shared.facts()))
            {
                return Err(ControlError::Conflict(format!(
                    "apply refused: {why}; check the cluster file, or run `stackctl apply --force` \
                     to stop them"
                )));
            }
        }
        Ok(self.queue().submit(TaskKind::Reconcile, "", origin)?)
    }
}

impl Shared {
    pub(super) fn facts(&self) -> Vec<Facts> {
        let cfg = self.config();
        let deployed = self.store.deployed().unwrap_or_default();
        let all_said = self.store.all_desired().unwrap_or_default();
        let mut local = Shared::local_services(&cfg, &all_said);
        // An external service is never planned: nothing starts or stops it.
        local.retain(|s| !s.is_external());
        let mut names: BTreeSet<String> = local.iter().map(|s| s.name.clone()).collect();
        names.extend(deployed.iter().cloned());
        // A service on an external network another one's Compose file
        // creates comes up after it, `depends_on` or not.
        let by_network = crate::deps::network_dependencies(&compose_networks(&local));
        names
            .into_iter()
            .map(|name| {
                let svc = local.iter().copied().find(|s| s.name == name);
                let said = all_said.get(&name).filter(|d| d.is_decision());
                Facts {
                    configured: svc.is_some(),
                    desired: reconcile::effective_desired(
                        svc.is_some_and(|s| s.auto_start),
                        said.map(|d| d.state),
                    ),
                    user_said: said.is_some(),
                    observed: world::classify(&self.containers_of(&name)),
                    deployed_by_us: deployed.contains(&name),
                    busy: self.queue().busy(&name),
                    depends_on: {
                        let mut d = svc.map(|s| s.depends_on.clone()).unwrap_or_default();
                        for n in by_network.get(&name).into_iter().flatten() {
                            if !d.contains(n) {
                                d.push(n.clone());
                            }
                        }
                        d
                    },
                    start_order: svc.map(|s| s.start_order).unwrap_or(0),
                    name,
                }
            })
            .collect()
    }

    /// Records the configured services a reconcile is about to plan: from
    /// now on they are the supervisor's (see [`Shared::taken_up`]).
    fn note_planned(&self, facts: &[Facts]) {
        let names = facts
            .iter()
            .filter(|f| f.configured)
            .map(|f| f.name.clone());
        self.planned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(names);
    }

    /// Whether `service` is the supervisor's to recover: a reconcile has
    /// planned it (at start, an apply, the engine back), or a person said
    /// start or stop. One a reload added is not, until then: a reload
    /// alone starts and stops nothing.
    pub(super) fn taken_up(&self, service: &str) -> bool {
        self.planned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(service)
            || self
                .store
                .desired(service)
                .ok()
                .flatten()
                .is_some_and(|d| d.is_decision())
    }

    /// Why `plan`'s stops of services no longer assigned to this host are
    /// too many to make without a person's `--force`: every one of the
    /// host's services, or more than the config's `reload_guard` of them.
    /// The host's services are those configured here and those still
    /// running that stackd deployed.
    pub(super) fn removal_guard(&self, plan: &reconcile::Plan) -> Option<String> {
        let removed: Vec<String> = plan
            .stops
            .iter()
            .filter(|a| a.reason() == reconcile::NO_LONGER_ASSIGNED)
            .map(|a| a.service().to_string())
            .collect();
        if removed.is_empty() {
            return None;
        }
        let cfg = self.config();
        let before = cfg.local_services().count() + removed.len();
        config::guard_message(before, &removed, cfg.reload_guard)
    }

    /// Plan and carry out: stops at once, then deploys wave by wave.
    pub(super) async fn reconcile(
        &self,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        // The plan needs a complete view of Docker, when it has a Compose
        // project to plan (a config of unit services alone, as a
        // `stackd --user` without access to Docker has, does not wait).
        let mut waited = false;
        while self.uses_docker() && !self.world.docker_connected() {
            if !waited {
                log.line("waiting for Docker to answer");
                systemd::status("waiting for Docker");
                waited = true;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = cancel.cancelled() => return Err(Failure { result: TaskResult::Canceled, message: "cancelled while waiting for Docker".into() }),
            }
        }
        // And a view of systemd's units: one not heard of yet reads as
        // absent.
        let units: Vec<String> = self
            .config()
            .local_services()
            .filter(|s| crate::units::UnitSpec::of(s).is_some())
            .map(|s| s.name.clone())
            .collect();
        if !units.is_empty() {
            let unheard = tokio::select! {
                u = self.units.wait_known(&units, units::CONNECT_WAIT) => u,
                _ = cancel.cancelled() => return Err(Failure { result: TaskResult::Canceled, message: "cancelled while waiting for systemd".into() }),
            };
            if !unheard.is_empty() {
                log.line(&format!(
                    "systemd has said nothing yet about {}; planning without it",
                    unheard.join(", ")
                ));
            }
        }
        let boot = task.origin == Origin::Boot;
        if task.origin == Origin::Engine {
            systemd::status("the Docker engine came back: reconciling");
        }
        let facts = self.facts();
        self.note_planned(&facts);
        let mut plan = reconcile::plan(&facts);
        self.limit_plan(task, &mut plan);
        // The start-up and engine-restart reconciles asked nobody: a
        // cluster file truncated while stackd was down must not stop this
        // host's services. A
        // person's apply was checked (or forced) when it was asked for.
        if matches!(task.origin, Origin::Boot | Origin::Start | Origin::Engine) {
            if let Some(why) = self.removal_guard(&plan) {
                log.line(&format!(
                    "not stopping services no longer assigned to this host: {why}; \
                     `stackctl apply --force` stops them"
                ));
                self.alert(
                    Severity::Critical,
                    "reload-failed",
                    "",
                    "services no longer assigned to this host were left running",
                    &why,
                    serde_json::Value::Null,
                );
                plan.stops
                    .retain(|a| a.reason() != reconcile::NO_LONGER_ASSIGNED);
            }
        }
        for (name, why) in &plan.left {
            log.line(&format!("{name}: left alone ({why})"));
        }
        let total = plan.stops.len() + plan.deploys().count();
        if total > 0 {
            systemd::status(&format!("reconciling {total} services"));
        }
        let mut recovered = Vec::new();
        let mut failed = Vec::new();
        let mut pending = self.submit_wave(&plan.stops, task, log, &mut failed);
        for wave in &plan.waves {
            // Waves run one after another, so dependencies are up first.
            for (name, kind, id) in pending.drain(..) {
                self.settle(&name, kind, id, log, &mut recovered, &mut failed)
                    .await;
            }
            if cancel.is_cancelled() {
                return Err(Failure {
                    result: TaskResult::Canceled,
                    message: "cancelled between waves".into(),
                });
            }
            pending = self.submit_wave(wave, task, log, &mut failed);
        }
        for (name, kind, id) in pending {
            self.settle(&name, kind, id, log, &mut recovered, &mut failed)
                .await;
        }
        let stopped: Vec<String> = plan
            .left
            .iter()
            .filter(|(_, why)| why == "stopped by a user")
            .map(|(n, _)| n.clone())
            .collect();
        // Who stopped each: "set by user", "stopped outside stackd (docker stop)".
        let stopped_by: Vec<String> = stopped
            .iter()
            .map(|n| {
                let who = self
                    .store
                    .desired(n)
                    .ok()
                    .flatten()
                    .map_or(SetBy::User, |d| d.set_by());
                if matches!(who, SetBy::Outside(_)) {
                    format!("{n} ({who})")
                } else {
                    format!("{n} (set by {who})")
                }
            })
            .collect();
        let engine = task.origin == Origin::Engine;
        let mut summary = recovery_summary(&recovered, &failed, &stopped);
        if engine {
            summary = format!("after the Docker engine came back: {summary}");
        }
        log.line(&summary);
        if boot || engine || total > 0 {
            // After a reboot or an engine restart, anything that had to be
            // brought back is worth a person's attention (the default
            // min_severity = "warning" mails it); a routine apply is not.
            let brought_back = (boot || engine) && !recovered.is_empty();
            let severity = if failed.is_empty() && !brought_back {
                Severity::Info
            } else {
                Severity::Warning
            };
            let kind = if boot || engine {
                "recovered"
            } else {
                "reconciled"
            };
            let failed_names: Vec<&str> = failed.iter().map(|(n, _)| n.as_str()).collect();
            let mut body = Vec::new();
            if !recovered.is_empty() {
                body.push(format!("Came back: {}", recovered.join(", ")));
            }
            for (n, why) in &failed {
                body.push(format!("Failed: {n}: {why}"));
            }
            if !stopped_by.is_empty() {
                body.push(format!("Left stopped: {}", stopped_by.join(", ")));
            }
            self.alert(
                severity,
                kind,
                "",
                &summary,
                &body.join("\n"),
                serde_json::json!({
                    "boot": boot,
                    "engine": engine,
                    "recovered": recovered,
                    "failed": failed_names,
                    "failed_why": failed.iter().map(|(n, why)| format!("{n}: {why}")).collect::<Vec<_>>(),
                    "left_stopped": stopped,
                    "left_stopped_by": stopped_by,
                }),
            );
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(Failure {
                result: TaskResult::Dependency,
                message: format!("{} of {total} tasks failed", failed.len()),
            })
        }
    }

    pub(super) fn submit_wave(
        &self,
        actions: &[Action],
        task: &TaskRecord,
        log: &Log,
        failed: &mut Vec<(String, String)>,
    ) -> Vec<(String, TaskKind, u64)> {
        let mut ids = Vec::new();
        for a in actions {
            let kind = match a {
                Action::Deploy { .. } => TaskKind::Deploy,
                Action::Stop { .. } => TaskKind::Stop,
            };
            log.line(&format!(
                "{}: {} ({})",
                a.service(),
                kind.as_str(),
                a.reason()
            ));
            match self.queue().submit(kind, a.service(), &task.origin) {
                Ok(t) => ids.push((a.service().to_string(), kind, t.id)),
                Err(e) => failed.push((a.service().to_string(), e.to_string())),
            }
        }
        ids
    }

    pub(super) async fn settle(
        &self,
        name: &str,
        kind: TaskKind,
        id: u64,
        log: &Log,
        recovered: &mut Vec<String>,
        failed: &mut Vec<(String, String)>,
    ) {
        match self.queue().wait(id).await {
            Ok(t) if t.state == crate::store::TaskState::Succeeded => {
                log.line(&format!("{name}: {} done (task {id})", kind.as_str()));
                if kind == TaskKind::Deploy {
                    recovered.push(name.to_string());
                }
            }
            Ok(t) => {
                let why = t.error.unwrap_or(t.result);
                log.line(&format!(
                    "{name}: {} failed (task {id}): {why}",
                    kind.as_str()
                ));
                failed.push((name.to_string(), why));
            }
            Err(e) => failed.push((name.to_string(), e.to_string())),
        }
    }
}
