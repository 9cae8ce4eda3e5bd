//! The queue's own rules (order, parallelism, cancel), with a runner that
//! sleeps instead of running Compose. Compose itself is exercised by the
//! integration tests against the real engine.

use super::*;
use std::sync::atomic::AtomicUsize;

fn test() -> Origin {
    Origin::Other("test".to_string())
}

struct Sleeper {
    now: AtomicUsize,
    peak: AtomicUsize,
    order: Mutex<Vec<(String, u64)>>,
}

impl Runner for Arc<Sleeper> {
    fn run(&self, task: TaskRecord, log: Log, cancel: CancellationToken) -> RunFuture {
        let me = self.clone();
        Box::pin(async move {
            let n = me.now.fetch_add(1, Ordering::SeqCst) + 1;
            me.peak.fetch_max(n, Ordering::SeqCst);
            me.order
                .lock()
                .unwrap()
                .push((task.service.clone(), task.id));
            log.line("working");
            // "hold" works until it is cancelled, however slow the machine.
            let work = if task.service == "hold" {
                Duration::from_secs(3600)
            } else {
                Duration::from_millis(50)
            };
            let r = tokio::select! {
                _ = tokio::time::sleep(work) => Ok(()),
                _ = cancel.cancelled() => Err(Failure { result: TaskResult::Canceled, message: "cancelled by request".into() }),
            };
            me.now.fetch_sub(1, Ordering::SeqCst);
            r
        })
    }

    /// "after-a" waits until a task of "a" ran; "never" cannot start.
    fn prepare(&self, task: TaskRecord, _log: Log, _cancel: CancellationToken) -> RunFuture {
        let me = self.clone();
        Box::pin(async move {
            match task.service.as_str() {
                "after-a" => {
                    for _ in 0..200 {
                        if me.order.lock().unwrap().iter().any(|(s, _)| s == "a") {
                            return Ok(());
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(Failure::failed("a never ran"))
                }
                "never" => Err(Failure {
                    result: TaskResult::Dependency,
                    message: "what it needs is down".into(),
                }),
                _ => Ok(()),
            }
        })
    }
}

fn queue(max: usize) -> (Queue, Arc<Sleeper>, Arc<Store>) {
    let store = Arc::new(Store::open_in_memory().unwrap());
    let runner = Arc::new(Sleeper {
        now: AtomicUsize::new(0),
        peak: AtomicUsize::new(0),
        order: Mutex::new(vec![]),
    });
    let q = Queue::new(
        store.clone(),
        crate::events::channel(),
        Arc::new(runner.clone()),
        max,
    );
    (q, runner, store)
}

#[tokio::test]
async fn one_task_per_service_and_at_most_max_parallel() {
    let (q, runner, store) = queue(2);
    let mut ids = vec![];
    for s in ["a", "a", "b", "c", "d"] {
        ids.push(q.submit(TaskKind::Deploy, s, &test()).unwrap().id);
    }
    for id in &ids {
        let t = q.wait(*id).await.unwrap();
        assert_eq!(t.state, TaskState::Succeeded);
        assert_eq!(store.task_log(*id).unwrap()[0].line, "working");
    }
    assert_eq!(runner.peak.load(Ordering::SeqCst), 2);
    // The two tasks of `a` ran in the order they were queued.
    let order = runner.order.lock().unwrap().clone();
    let a: Vec<u64> = order
        .iter()
        .filter(|(s, _)| s == "a")
        .map(|(_, id)| *id)
        .collect();
    assert_eq!(a, vec![ids[0], ids[1]]);
    // Same service never overlapped: the second started after the first ended.
    let first = store.task(ids[0]).unwrap().unwrap();
    let second = store.task(ids[1]).unwrap().unwrap();
    assert!(second.started_usec.unwrap() >= first.finished_usec.unwrap());
}

#[tokio::test]
async fn cancel_pending_and_running() {
    let (q, runner, _store) = queue(1);
    let running = q.submit(TaskKind::Deploy, "hold", &test()).unwrap().id;
    let pending = q.submit(TaskKind::Deploy, "hold", &test()).unwrap().id;
    // Cancel the first once it runs (a cancel before would find it pending).
    while runner.now.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    q.cancel(pending).unwrap();
    q.cancel(running).unwrap();
    let r = q.wait(running).await.unwrap();
    let p = q.wait(pending).await.unwrap();
    assert_eq!(r.state, TaskState::Cancelled);
    assert_eq!(p.state, TaskState::Cancelled);
    assert!(matches!(q.cancel(running), Err(QueueError::Finished(_))));
    assert!(matches!(q.cancel(999), Err(QueueError::NoSuchTask(999))));
}

#[tokio::test]
async fn a_preparing_task_holds_no_slot() {
    let (q, runner, _store) = queue(1);
    let waiting = q.submit(TaskKind::Deploy, "after-a", &test()).unwrap().id;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a = q.submit(TaskKind::Deploy, "a", &test()).unwrap().id;
    let never = q.submit(TaskKind::Deploy, "never", &test()).unwrap().id;
    assert_eq!(q.wait(a).await.unwrap().state, TaskState::Succeeded);
    assert_eq!(q.wait(waiting).await.unwrap().state, TaskState::Succeeded);
    let n = q.wait(never).await.unwrap();
    assert_eq!(
        (n.state, n.result.as_str()),
        (TaskState::Failed, TaskResult::Dependency.as_str())
    );
    let order: Vec<String> = runner
        .order
        .lock()
        .unwrap()
        .iter()
        .map(|(s, _)| s.clone())
        .collect();
    assert_eq!(order, vec!["a", "after-a"]);
}

#[tokio::test]
async fn shutdown_refuses_new_tasks_and_waits_for_running_ones() {
    let (q, _runner, _store) = queue(1);
    let id = q.submit(TaskKind::Stop, "a", &test()).unwrap().id;
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(q.shutdown(Duration::from_secs(5)).await, 0);
    assert_eq!(q.wait(id).await.unwrap().state, TaskState::Succeeded);
    assert!(matches!(
        q.submit(TaskKind::Stop, "a", &test()),
        Err(QueueError::Closed)
    ));
}
