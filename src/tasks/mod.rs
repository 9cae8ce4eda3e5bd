//! The task queue: the only place that changes the world.
//!
//! One task at a time per service, at most `max_parallel` at once across the
//! host. Every task is stored before it is queued, every line it prints goes
//! to its stored log, and its end is published as `TaskRemoved`.
//!
//! Architecture invariant: D-Bus, the peer endpoint, health and boot recovery
//! all *ask* the queue for tasks; none of them runs Compose itself. What a
//! task does is the [`Runner`]'s business (the daemon's Compose runner).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::events::{Event, EventSender};
use crate::store::{
    NewEvent, NewTask, Origin, Store, StoreError, TaskRecord, TaskResult, TaskState,
};

/// The operations stackd knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TaskKind {
    /// `up -d`
    Deploy,
    Stop,
    Down,
    Restart,
    /// pull, then `up -d`; a failed pull leaves the deployment untouched.
    Update,
    Pull,
    /// Plan and queue the tasks that bring the host to its desired state.
    Reconcile,
    /// Move the service to another host (on the host it leaves).
    Migrate,
    /// Start a service moved here and wait until it is healthy (on the
    /// host it moves to).
    Receive,
    /// Remove images, stopped containers and networks stackd left behind
    /// (host-wide; `housekeeping/`).
    Prune,
    /// Tag the service's previous image back to its reference, then `up -d`.
    Rollback,
}

impl TaskKind {
    pub const ALL: [TaskKind; 11] = [
        TaskKind::Deploy,
        TaskKind::Stop,
        TaskKind::Down,
        TaskKind::Restart,
        TaskKind::Update,
        TaskKind::Pull,
        TaskKind::Reconcile,
        TaskKind::Migrate,
        TaskKind::Receive,
        TaskKind::Prune,
        TaskKind::Rollback,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskKind::Deploy => "deploy",
            TaskKind::Stop => "stop",
            TaskKind::Down => "down",
            TaskKind::Restart => "restart",
            TaskKind::Update => "update",
            TaskKind::Pull => "pull",
            TaskKind::Reconcile => "reconcile",
            TaskKind::Migrate => "migrate",
            TaskKind::Receive => "receive",
            TaskKind::Prune => "prune",
            TaskKind::Rollback => "rollback",
        }
    }

    pub fn parse(s: &str) -> Option<TaskKind> {
        TaskKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// How long a task of this kind may run before it is killed.
    pub fn timeout(self) -> Duration {
        match self {
            TaskKind::Stop | TaskKind::Down => Duration::from_secs(5 * 60),
            TaskKind::Deploy | TaskKind::Restart | TaskKind::Rollback => {
                Duration::from_secs(10 * 60)
            }
            TaskKind::Prune => Duration::from_secs(30 * 60),
            TaskKind::Update | TaskKind::Pull | TaskKind::Receive => Duration::from_secs(30 * 60),
            TaskKind::Reconcile | TaskKind::Migrate => Duration::from_secs(60 * 60),
        }
    }

    /// A reconcile only coordinates other tasks: it takes no slot of
    /// `max_parallel` (else it could wait forever for tasks it queued).
    fn needs_slot(self) -> bool {
        self != TaskKind::Reconcile
    }

    /// Whether the task makes the service run (`activating`) or stop.
    pub fn starts(self) -> bool {
        matches!(
            self,
            TaskKind::Deploy
                | TaskKind::Restart
                | TaskKind::Update
                | TaskKind::Receive
                | TaskKind::Rollback
        )
    }
}

/// Why a task did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// systemd-style result: failed, timeout, canceled, dependency.
    pub result: TaskResult,
    pub message: String,
}

impl Failure {
    pub fn failed(message: impl Into<String>) -> Failure {
        Failure {
            result: TaskResult::Failed,
            message: message.into(),
        }
    }
}

/// Appends lines to a task's stored log.
#[derive(Clone)]
pub struct Log {
    store: Arc<Store>,
    id: u64,
    service: String,
}

impl Log {
    pub fn line(&self, line: &str) {
        tracing::debug!(
            stackd_task = self.id,
            stackd_service = %self.service,
            "{line}"
        );
        if let Err(e) = self.store.append_task_log(self.id, line) {
            self.store.note_write_error(
                format_args!("cannot store a log line of task {}", self.id),
                &e,
            );
        }
    }
}

pub type RunFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// What a task does. The daemon's Compose runner implements this.
pub trait Runner: Send + Sync + 'static {
    fn run(&self, task: TaskRecord, log: Log, cancel: CancellationToken) -> RunFuture;

    /// What a task waits for before it takes a slot of `max_parallel`
    /// (other services' tasks, a dependency's health): a task that waits
    /// here holds no slot, so what it waits for can run. The task stays
    /// pending; a failure ends it without running it.
    fn prepare(&self, _task: TaskRecord, _log: Log, _cancel: CancellationToken) -> RunFuture {
        Box::pin(async { Ok(()) })
    }

    /// Whether the task, once prepared, takes a slot of `max_parallel`.
    /// The slots bound Compose runs; a task that only starts existing
    /// containers through the Docker API (a few cheap calls) need not
    /// wait behind them, so a boot's wave starts all at once.
    fn takes_slot(&self, _task: TaskRecord) -> SlotFuture {
        Box::pin(async { true })
    }
}

pub type SlotFuture = Pin<Box<dyn Future<Output = bool> + Send>>;

#[derive(Debug, Error)]
pub enum QueueError {
    #[error("stackd is shutting down and takes no new tasks")]
    Closed,
    #[error("no such task: {0}")]
    NoSuchTask(u64),
    #[error("task {0} has already finished")]
    Finished(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Default)]
struct Lanes {
    /// Pending task ids per service, in order.
    pending: HashMap<String, VecDeque<u64>>,
    /// Services that have a worker draining their lane.
    draining: HashMap<String, ()>,
    /// Cancellation for every pending or running task.
    tokens: HashMap<u64, CancellationToken>,
    /// Running task id → (kind, service).
    running: HashMap<u64, (TaskKind, String)>,
}

struct Inner {
    store: Arc<Store>,
    events: EventSender,
    runner: Arc<dyn Runner>,
    slots: Arc<Semaphore>,
    lanes: Mutex<Lanes>,
    closed: AtomicBool,
    idle: tokio::sync::Notify,
}

/// Cheap to clone; all clones share one queue.
#[derive(Clone)]
pub struct Queue {
    inner: Arc<Inner>,
}

impl Queue {
    pub fn new(
        store: Arc<Store>,
        events: EventSender,
        runner: Arc<dyn Runner>,
        max_parallel: usize,
    ) -> Queue {
        Queue {
            inner: Arc::new(Inner {
                store,
                events,
                runner,
                slots: Arc::new(Semaphore::new(max_parallel.max(1))),
                lanes: Mutex::new(Lanes::default()),
                closed: AtomicBool::new(false),
                idle: tokio::sync::Notify::new(),
            }),
        }
    }

    /// Store a task and queue it behind any other task of the same service.
    pub fn submit(
        &self,
        kind: TaskKind,
        service: &str,
        origin: &Origin,
    ) -> Result<TaskRecord, QueueError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(QueueError::Closed);
        }
        let task = self.inner.store.create_task(&NewTask {
            kind: kind.as_str().to_string(),
            service: service.to_string(),
            origin: origin.clone(),
        })?;
        let spawn_worker = {
            let mut lanes = self.lock();
            lanes.tokens.insert(task.id, CancellationToken::new());
            lanes
                .pending
                .entry(service.to_string())
                .or_default()
                .push_back(task.id);
            lanes.draining.insert(service.to_string(), ()).is_none()
        };
        info!(
            stackd_task = task.id,
            stackd_service = service,
            "queued {} ({origin})",
            kind.as_str()
        );
        record_event(
            &self.inner.store,
            "task-new",
            &task,
            format!("{} {} queued ({origin})", kind.as_str(), task.service),
        );
        let _ = self.inner.events.send(Event::TaskNew {
            id: task.id,
            kind: kind.as_str().to_string(),
            service: service.to_string(),
        });
        let _ = self.inner.events.send(Event::ServiceChanged {
            service: service.to_string(),
        });
        if spawn_worker {
            let inner = self.inner.clone();
            let service = service.to_string();
            tokio::spawn(async move { drain(inner, service).await });
        }
        Ok(task)
    }

    /// Cancel a pending or running task. A running Compose command gets
    /// SIGTERM (then SIGKILL) on its whole process group.
    pub fn cancel(&self, id: u64) -> Result<(), QueueError> {
        let token = self.lock().tokens.get(&id).cloned();
        match token {
            Some(token) => {
                token.cancel();
                Ok(())
            }
            None => match self.inner.store.task(id)? {
                Some(_) => Err(QueueError::Finished(id)),
                None => Err(QueueError::NoSuchTask(id)),
            },
        }
    }

    /// Whether a task for this service is pending or running.
    pub fn busy(&self, service: &str) -> bool {
        // A service keeps its worker until its lane is empty, so this also
        // covers a task between leaving the lane and being marked running.
        self.lock().draining.contains_key(service)
    }

    /// The kind of the task running on a service right now, if any.
    pub fn running_kind(&self, service: &str) -> Option<TaskKind> {
        self.lock()
            .running
            .values()
            .find(|(_, s)| s == service)
            .map(|(k, _)| *k)
    }

    pub fn running_count(&self) -> usize {
        self.lock().running.len()
    }

    /// Wait until a task has finished and return its final record.
    pub async fn wait(&self, id: u64) -> Result<TaskRecord, QueueError> {
        let mut rx = self.inner.events.subscribe();
        loop {
            match self.inner.store.task(id)? {
                None => return Err(QueueError::NoSuchTask(id)),
                Some(t) if t.state.is_finished() => return Ok(t),
                Some(_) => {}
            }
            // Wake on our TaskRemoved, or re-check now and then in case the
            // broadcast lagged.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                loop {
                    match rx.recv().await {
                        Ok(Event::TaskRemoved { id: done, .. }) if done == id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(_) => return,
                    }
                }
            })
            .await;
        }
    }

    /// Stop taking tasks, cancel the pending ones, and wait up to `grace`
    /// for the running ones to finish. Returns how many were still running.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.inner.closed.store(true, Ordering::SeqCst);
        let pending: Vec<u64> = {
            let lanes = self.lock();
            lanes.pending.values().flatten().copied().collect()
        };
        for id in pending {
            if let Some(t) = self.lock().tokens.get(&id) {
                t.cancel();
            }
        }
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let notified = self.inner.idle.notified();
            let left = self.lock().running.len();
            if left == 0 {
                return 0;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.lock().running.len();
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.inner.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finish(&self, task: &TaskRecord, state: TaskState, result: TaskResult, error: Option<&str>) {
        if let Some(msg) = error {
            let _ = self
                .store
                .append_task_log(task.id, &format!("{}: {msg}", result));
        }
        let record = self.store.finish_task(task.id, state, result, error);
        {
            let mut lanes = self.lock();
            lanes.tokens.remove(&task.id);
            lanes.running.remove(&task.id);
        }
        if let Err(e) = record {
            self.store
                .note_write_error(format_args!("cannot store the end of task {}", task.id), &e);
        }
        match state {
            TaskState::Succeeded => info!(
                stackd_task = task.id,
                stackd_service = %task.service,
                "{} finished",
                task.kind
            ),
            _ => warn!(
                stackd_task = task.id,
                stackd_service = %task.service,
                "{} {result}: {}",
                task.kind,
                error.unwrap_or("")
            ),
        }
        record_event(
            &self.store,
            "task-finished",
            &TaskRecord {
                state,
                result: result.to_string(),
                ..task.clone()
            },
            format!("{} {} {result}", task.kind, task.service),
        );
        let _ = self.events.send(Event::TaskRemoved {
            id: task.id,
            service: task.service.clone(),
            result: result.to_string(),
        });
        let _ = self.events.send(Event::ServiceChanged {
            service: task.service.clone(),
        });
        self.idle.notify_waiters();
    }
}

/// Keep a task's life-cycle in the durable event log, before it is
/// broadcast, so a reader of `events_after` woken by the broadcast finds it
/// (the peer endpoint's `/v1/events` long poll).
fn record_event(store: &Store, kind: &str, task: &TaskRecord, summary: String) {
    let event = NewEvent {
        kind: kind.to_string(),
        severity: "info".to_string(),
        service: (!task.service.is_empty()).then(|| task.service.clone()),
        summary,
        data: serde_json::json!({
            "task": task.id,
            "kind": task.kind,
            "state": task.state.as_str(),
            "result": task.result,
        }),
    };
    if let Err(e) = store.append_event(&event) {
        store.note_write_error(
            format_args!("cannot store the event of task {}", task.id),
            &e,
        );
    }
}

/// Run a service's tasks one after another until its lane is empty.
async fn drain(inner: Arc<Inner>, service: String) {
    loop {
        let next = {
            let mut lanes = inner.lock();
            match lanes.pending.get_mut(&service).and_then(|q| q.pop_front()) {
                Some(id) => Some((id, lanes.tokens.get(&id).cloned().unwrap_or_default())),
                None => {
                    lanes.pending.remove(&service);
                    lanes.draining.remove(&service);
                    None
                }
            }
        };
        let Some((id, cancel)) = next else { return };
        let task = match inner.store.task(id) {
            Ok(Some(t)) => t,
            other => {
                warn!(
                    stackd_task = id,
                    "queued task vanished from the store: {other:?}"
                );
                continue;
            }
        };
        let kind = TaskKind::parse(&task.kind).unwrap_or(TaskKind::Reconcile);
        let log = Log {
            store: inner.store.clone(),
            id,
            service: service.clone(),
        };
        if let Err(f) = inner
            .runner
            .prepare(task.clone(), log.clone(), cancel.clone())
            .await
        {
            let state = if f.result == TaskResult::Canceled {
                TaskState::Cancelled
            } else {
                TaskState::Failed
            };
            inner.finish(&task, state, f.result, Some(&f.message));
            continue;
        }
        // Wait for a slot, unless cancelled while waiting.
        let permit = if kind.needs_slot() && inner.runner.takes_slot(task.clone()).await {
            tokio::select! {
                p = inner.slots.clone().acquire_owned() => p.ok(),
                _ = cancel.cancelled() => None,
            }
        } else {
            None
        };
        if cancel.is_cancelled() {
            let why = if inner.closed.load(Ordering::SeqCst) {
                "stackd is shutting down"
            } else {
                "cancelled while pending"
            };
            inner.finish(&task, TaskState::Cancelled, TaskResult::Canceled, Some(why));
            continue;
        }
        if let Err(e) = inner.store.start_task(id) {
            inner.finish(
                &task,
                TaskState::Failed,
                TaskResult::Failed,
                Some(&e.to_string()),
            );
            continue;
        }
        inner.lock().running.insert(id, (kind, service.clone()));
        record_event(
            &inner.store,
            "task-started",
            &TaskRecord {
                state: TaskState::Running,
                ..task.clone()
            },
            format!("{} {} started", task.kind, task.service),
        );
        let _ = inner.events.send(Event::TaskStarted { id });
        let _ = inner.events.send(Event::ServiceChanged {
            service: service.clone(),
        });
        let outcome = inner.runner.run(task.clone(), log, cancel.clone()).await;
        drop(permit);
        match outcome {
            Ok(()) => inner.finish(&task, TaskState::Succeeded, TaskResult::Done, None),
            Err(f) if f.result == TaskResult::Canceled => inner.finish(
                &task,
                TaskState::Cancelled,
                TaskResult::Canceled,
                Some(&f.message),
            ),
            Err(f) => inner.finish(&task, TaskState::Failed, f.result, Some(&f.message)),
        }
    }
}

#[cfg(test)]
mod tests;
