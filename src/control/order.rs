//! Dependencies and conflicts at run time: what an operation takes (the
//! plan `start --dry-run` shows and `submit` queues), the order its tasks
//! keep, a start's wait for its dependencies to be healthy, and the
//! dependency tree.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Control, ControlError, Op, Shared};
use crate::config::Config;
use crate::deps::{Blocked, Graph, Step, StepAction};
use crate::health::Health;
use crate::state::ActiveState;
use crate::store::{
    DesiredSource, DesiredState, Origin, TaskFilter, TaskRecord, TaskResult, TaskState,
};
use crate::tasks::{Failure, Log, TaskKind};
use crate::world::{self, Observed};

/// How often a start looks at the dependency it waits for.
const POLL: Duration = Duration::from_millis(250);

/// One node of `stackctl dependencies`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeRow {
    /// 0 for the service asked about.
    pub depth: u32,
    pub name: String,
    /// systemd's vocabulary, or "remote" for a service of another host and
    /// "unknown" for a name the config does not know.
    pub active_state: String,
    pub sub_state: String,
    pub health: String,
}

impl Control {
    /// What `op` on `name` takes, in the order the tasks are queued; the
    /// last step is the operation itself.
    /// Without `force`, running dependents (stop) and running conflicts
    /// (start) refuse it with their names.
    pub fn plan(&self, op: Op, name: &str, force: bool) -> Result<Vec<Step>, ControlError> {
        let cfg = self.config();
        super::registry::refuse_external(self.shared.local_service(&cfg, name)?, op)?;
        let graph = Graph::from_services(cfg.local_services());
        let mut running = self.running_set(&cfg);
        let planned = match op {
            Op::Stop | Op::Down => {
                // A dependent whose stop is already queued is on its way
                // down, and this stop waits for it (`prepare`): so
                // `stop web db` stops both, in that order.
                running.retain(|s| !self.stop_queued(s));
                graph.plan_stop(name, &running, force)
            }
            Op::Start | Op::Restart | Op::Update | Op::Rollback => {
                graph.plan_start(name, &running, force)
            }
            Op::Pull => Ok(Vec::new()),
        };
        planned.map_err(|b| match b {
            Blocked::NeededBy(names) => ControlError::Conflict(format!(
                "{name} is needed by running services: {}; stop them first, or use --force to stop them too",
                names.join(", ")
            )),
            Blocked::Conflicts(names) => ControlError::Conflict(format!(
                "{name} conflicts with running services: {}; stop them first, or use --force to stop them",
                names.join(", ")
            )),
        })
    }

    /// Queue an operation with what it takes first (dependencies to start,
    /// with `force` dependents or conflicts to stop). Each task stores the
    /// desired state it implies; their order is kept when they run
    /// (`Shared::prepare`). Returns the task of `name` itself.
    pub fn submit_with(
        &self,
        op: Op,
        name: &str,
        origin: &Origin,
        force: bool,
    ) -> Result<TaskRecord, ControlError> {
        let cfg = self.config();
        super::registry::refuse_external(self.shared.local_service(&cfg, name)?, op)?;
        // Unit services need systemd, not Docker: only a step on a Compose
        // project is refused while Docker is away.
        let compose = |n: &str| cfg.service(n).map_or(true, |s| s.is_compose());
        if compose(name) && !self.shared.world.docker_connected() {
            return Err(ControlError::DockerUnavailable(
                self.shared.world.docker_error(),
            ));
        }
        let steps = self.plan(op, name, force)?;
        if steps.iter().any(|s| compose(&s.service)) && !self.shared.world.docker_connected() {
            return Err(ControlError::DockerUnavailable(
                self.shared.world.docker_error(),
            ));
        }
        for step in steps.iter().filter(|s| s.service != name) {
            let (kind, state) = match step.action {
                StepAction::Start => (TaskKind::Deploy, DesiredState::Running),
                StepAction::Stop => (TaskKind::Stop, DesiredState::Stopped),
            };
            self.queue().submit(kind, &step.service, origin)?;
            self.shared
                .store
                .set_desired(&step.service, state, DesiredSource::User)?;
        }
        let task = self.queue().submit(op.kind(), name, origin)?;
        if let Some(state) = op.desired() {
            self.shared
                .store
                .set_desired(name, state, DesiredSource::User)?;
        }
        Ok(task)
    }

    /// What `name` depends on (or, with `reverse`, what depends on it) as
    /// a tree in pre-order, each node with its state.
    pub fn dependency_tree(&self, name: &str, reverse: bool) -> Result<Vec<TreeRow>, ControlError> {
        let cfg = self.config();
        self.shared.local_service(&cfg, name)?;
        // Every configured service, so another host's dependency shows.
        let graph = Graph::from_services(cfg.services.values());
        let said = self.shared.store.all_desired().unwrap_or_default();
        Ok(graph
            .tree(name, reverse)
            .into_iter()
            .map(|(depth, node)| {
                let (active, sub, health) = match cfg.service(&node) {
                    Some(s) if s.assigned_to(&cfg.host) => {
                        let st = self.shared.status(&cfg, s, said.get(&node));
                        (
                            st.active_state.to_string(),
                            st.sub_state.to_string(),
                            st.health.to_string(),
                        )
                    }
                    Some(_) => ("remote".into(), String::new(), String::new()),
                    None => ("unknown".into(), String::new(), String::new()),
                };
                TreeRow {
                    depth: u32::try_from(depth).unwrap_or(u32::MAX),
                    name: node,
                    active_state: active,
                    sub_state: sub,
                    health,
                }
            })
            .collect())
    }

    /// Local services with containers running.
    /// A stop or down of `service` waits or runs in the queue.
    fn stop_queued(&self, service: &str) -> bool {
        let filter = TaskFilter {
            service: Some(service.to_string()),
            states: vec![TaskState::Pending, TaskState::Running],
            ..Default::default()
        };
        self.shared
            .store
            .list_tasks(&filter)
            .unwrap_or_default()
            .iter()
            .any(|t| matches!(t.kind.as_str(), "stop" | "down"))
    }

    /// An external service counts as running: a start never plans one
    /// (its `prepare` waits for it to be healthy instead).
    fn running_set(&self, cfg: &Config) -> BTreeSet<String> {
        cfg.local_services()
            .filter(|s| s.is_external() || is_up(&self.shared, &s.name))
            .map(|s| s.name.clone())
            .collect()
    }
}

fn is_up(shared: &Shared, name: &str) -> bool {
    matches!(
        world::classify(&shared.containers_of(name)),
        Observed::Running | Observed::Partial
    )
}

impl Shared {
    /// Before a task takes a slot: a stop waits for the stops of its
    /// dependents queued before it, a start for the stops of what
    /// conflicts with it, and then for each dependency to be healthy (up
    /// to the service's `start_timeout`).
    pub(super) async fn prepare(
        &self,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let Some(kind) = TaskKind::parse(&task.kind) else {
            return Ok(());
        };
        let cfg = self.config();
        let Some(svc) = cfg.service(&task.service) else {
            return Ok(());
        };
        let graph = Graph::from_services(cfg.local_services());
        let everyone: BTreeSet<String> = cfg.local_services().map(|s| s.name.clone()).collect();
        let first = if kind.starts() {
            graph.conflicting_running(&task.service, &everyone)
        } else if matches!(kind, TaskKind::Stop | TaskKind::Down) {
            graph.dependents_running(&task.service, &everyone)
        } else {
            Vec::new()
        };
        for other in &first {
            self.await_stops(other, task.id, log, cancel).await?;
        }
        if kind.starts() {
            for dep in svc.depends_on.iter().filter(|d| graph.contains(d)) {
                self.await_healthy(&cfg, dep, svc.start_timeout, log, cancel)
                    .await?;
            }
        }
        Ok(())
    }

    /// Wait for `service`'s stop and down tasks queued before task `before`.
    async fn await_stops(
        &self,
        service: &str,
        before: u64,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let filter = TaskFilter {
            service: Some(service.to_string()),
            states: vec![TaskState::Pending, TaskState::Running],
            ..Default::default()
        };
        let tasks = self.store.list_tasks(&filter).unwrap_or_default();
        for t in tasks
            .iter()
            .filter(|t| t.id < before && matches!(t.kind.as_str(), "stop" | "down"))
        {
            log.line(&format!(
                "waiting for task {} ({} {service}) first",
                t.id, t.kind
            ));
            tokio::select! {
                _ = self.queue().wait(t.id) => {}
                _ = cancel.cancelled() => return Err(cancelled(service)),
            }
        }
        Ok(())
    }

    /// Wait until `dep` runs and is healthy: its containers run, Docker's
    /// healthchecks pass, and its probe (if it has one) said healthy.
    async fn await_healthy(
        &self,
        cfg: &Config,
        dep: &str,
        timeout: Duration,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let Some(svc) = cfg.service(dep) else {
            return Ok(());
        };
        let has_probe = svc.health.as_ref().is_some_and(|h| h.probe.is_some());
        let started = tokio::time::Instant::now();
        let mut waited = false;
        loop {
            let said = self.store.desired(dep).ok().flatten();
            let st = self.status(cfg, svc, said.as_ref());
            let probed = !has_probe
                || self
                    .board
                    .verdict(dep)
                    .is_some_and(|v| v.health == Health::Healthy);
            if st.active_state == ActiveState::Active && st.health == Health::Healthy && probed {
                if waited {
                    log.line(&format!(
                        "dependency {dep} is healthy after {:.1}s",
                        started.elapsed().as_secs_f64()
                    ));
                }
                return Ok(());
            }
            let why = st.summary();
            // An external service is waited for: nothing could start it.
            if !svc.is_external() && !is_up(self, dep) && !self.queue().busy(dep) {
                return Err(Failure {
                    result: TaskResult::Dependency,
                    message: format!(
                        "dependency {dep} is not running and no task is starting it ({why}); start {dep} first"
                    ),
                });
            }
            if !waited {
                log.line(&format!(
                    "waiting up to {timeout:?} for dependency {dep} to be healthy: {why}"
                ));
                waited = true;
            }
            if started.elapsed() >= timeout {
                return Err(Failure {
                    result: TaskResult::Dependency,
                    message: format!(
                        "dependency {dep} was not healthy within {timeout:?} (start_timeout): {why}"
                    ),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = cancel.cancelled() => return Err(cancelled(dep)),
            }
        }
    }
}

fn cancelled(waiting_for: &str) -> Failure {
    Failure {
        result: TaskResult::Canceled,
        message: format!("cancelled while waiting for {waiting_for}"),
    }
}
