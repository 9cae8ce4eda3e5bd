//! Start, restart or update *and wait*: the task does not end when
//! `up -d` returns but when the service runs and is healthy (the same test
//! a dependent's start waits for: containers up, Docker's healthchecks
//! passing, the probe, if any, has said healthy), within the service's
//! `start_timeout`. Each change of state and health goes into the task's
//! log, so `stackctl start --wait` streams them; when the time is up the
//! task ends with result `timeout`, which a deploy script reads from the
//! exit code and a person later from `stackctl tasks`.
//!
//! Which tasks wait is kept in memory by task id, as the moves are: a
//! task interrupted by a daemon restart is not resumed anyway.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{Control, ControlError, Op, Shared};
use crate::config::Config;
use crate::store::{Origin, TaskRecord, TaskResult};
use crate::tasks::{Failure, Log};

const POLL: Duration = Duration::from_millis(250);
/// Ready must hold this long on end: a container that exits at once looks
/// running for a moment.
const SETTLE: Duration = Duration::from_secs(1);

impl Control {
    /// [`request`](Control::request) for start, restart or update, whose
    /// task then waits until the service is ready.
    pub async fn request_and_wait(
        &self,
        op: Op,
        name: &str,
        origin: &Origin,
        force: bool,
    ) -> Result<TaskRecord, ControlError> {
        if !matches!(op, Op::Start | Op::Restart | Op::Update) {
            return Err(ControlError::InvalidArgument(
                "only start, restart and update can wait for health".to_string(),
            ));
        }
        let task = self.request(op, name, origin, force).await?;
        let store = &self.shared.store;
        let mut waits = self.shared.waits();
        // A task that failed before its Compose step never took its id out.
        waits.retain(|id| {
            store
                .task(*id)
                .ok()
                .flatten()
                .is_some_and(|t| !t.state.is_finished())
        });
        waits.insert(task.id);
        Ok(task)
    }
}

impl Shared {
    pub(super) fn waits(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<u64>> {
        self.waits.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// After a successful Compose step of a task queued by
    /// [`Control::request_and_wait`]: wait until ready, or `timeout`.
    pub(super) async fn wait_ready(
        &self,
        cfg: &Config,
        task: &TaskRecord,
        log: &Log,
        cancel: &CancellationToken,
    ) -> Result<(), Failure> {
        let Some(svc) = cfg.service(&task.service) else {
            return Ok(());
        };
        let limit = svc.start_timeout;
        log.line(&format!(
            "waiting up to {} (start_timeout) for {} to run and be healthy",
            crate::fmt::duration(limit),
            svc.name
        ));
        let started = tokio::time::Instant::now();
        let mut ready_since: Option<tokio::time::Instant> = None;
        let mut last = String::new();
        loop {
            let said = self.store.desired(&svc.name).ok().flatten();
            let st = self.status(cfg, svc, said.as_ref());
            let now = st.summary();
            let elapsed = started.elapsed().as_secs_f64();
            if now != last {
                log.line(&format!("{}: {now} ({elapsed:.1}s)", svc.name));
            }
            ready_since = if st.ready {
                ready_since.or(Some(tokio::time::Instant::now()))
            } else {
                None
            };
            if ready_since.is_some_and(|t| t.elapsed() >= SETTLE) {
                log.line(&format!(
                    "{}: running and healthy after {elapsed:.1}s",
                    svc.name
                ));
                return Ok(());
            }
            if ready_since.is_none() && started.elapsed() >= limit {
                return Err(Failure {
                    result: TaskResult::Timeout,
                    message: format!(
                        "{} was not running and healthy within start_timeout {} ({now})",
                        svc.name,
                        crate::fmt::duration(limit)
                    ),
                });
            }
            last = now;
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = cancel.cancelled() => {
                    return Err(Failure {
                        result: TaskResult::Canceled,
                        message: format!("cancelled while waiting for {} to be healthy", svc.name),
                    })
                }
            }
        }
    }
}
