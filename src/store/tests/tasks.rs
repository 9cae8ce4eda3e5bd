//! Tasks: their life and log, ids, what a crash leaves, listing and
//! pruning.

use super::*;

#[test]
fn task_lifecycle_and_log_order() {
    let store = Store::open_in_memory().unwrap();
    let before = now_usec();
    let task = store.create_task(&new_task("deploy", "web")).unwrap();
    assert_eq!(task.state, TaskState::Pending);
    assert_eq!(task.result, "");
    assert_eq!(
        (task.kind.as_str(), task.service.as_str()),
        ("deploy", "web")
    );
    assert_eq!(task.origin.to_string(), "test");
    assert!(task.created_usec >= before);
    assert_eq!((task.started_usec, task.finished_usec), (None, None));

    store.append_task_log(task.id, "queued").unwrap();
    store.start_task(task.id).unwrap();
    store.start_task(task.id).unwrap(); // already running: no change
    let running = store.task(task.id).unwrap().unwrap();
    assert_eq!(running.state, TaskState::Running);
    let started = running.started_usec.unwrap();
    assert!(started >= task.created_usec);

    for i in 0..20 {
        store
            .append_task_log(task.id, &format!("line {i}"))
            .unwrap();
    }
    let done = store
        .finish_task(task.id, TaskState::Succeeded, TaskResult::Done, None)
        .unwrap();
    assert_eq!(done.state, TaskState::Succeeded);
    assert_eq!(done.result, "done");
    assert_eq!(done.started_usec, Some(started));
    assert!(done.finished_usec.unwrap() >= started);
    assert_eq!(store.task(task.id).unwrap().unwrap(), done);

    let log = store.task_log(task.id).unwrap();
    let lines: Vec<_> = log.iter().map(|l| l.line.as_str()).collect();
    let expected: Vec<String> = std::iter::once("queued".to_owned())
        .chain((0..20).map(|i| format!("line {i}")))
        .collect();
    assert_eq!(lines, expected);
    assert!(log.windows(2).all(|w| w[0].usec <= w[1].usec));

    let since = store.task_log_since(task.id, 18).unwrap();
    let numbers: Vec<u64> = since.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, [19, 20, 21]);
    assert_eq!(since[0].1.line, "line 17");
    assert!(store.task_log_since(task.id, 21).unwrap().is_empty());

    // Finished is final.
    assert!(matches!(
        store.finish_task(task.id, TaskState::Failed, TaskResult::Failed, Some("x")),
        Err(StoreError::TaskFinished(id)) if id == task.id
    ));
    assert!(matches!(
        store.start_task(task.id),
        Err(StoreError::TaskFinished(_))
    ));
    // Trailing output is still kept.
    store.append_task_log(task.id, "trailing").unwrap();
    assert_eq!(store.task_log(task.id).unwrap().len(), 22);
}

#[test]
fn task_errors() {
    let store = Store::open_in_memory().unwrap();
    assert_eq!(store.task(42).unwrap(), None);
    assert!(store.task_log(42).unwrap().is_empty());
    assert!(matches!(
        store.start_task(42),
        Err(StoreError::NoSuchTask(42))
    ));
    assert!(matches!(
        store.finish_task(42, TaskState::Failed, TaskResult::Failed, None),
        Err(StoreError::NoSuchTask(42))
    ));
    assert!(matches!(
        store.append_task_log(42, "x"),
        Err(StoreError::NoSuchTask(42))
    ));
    let task = store.create_task(&new_task("stop", "web")).unwrap();
    let err = store
        .finish_task(task.id, TaskState::Running, TaskResult::Done, None)
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFinalState { .. }), "{err:?}");
    // A pending task may finish without starting (cancelled in the queue).
    let cancelled = store
        .finish_task(task.id, TaskState::Cancelled, TaskResult::Canceled, None)
        .unwrap();
    assert_eq!(cancelled.started_usec, None);
    assert!(cancelled.finished_usec.is_some());
    // The failed append above did not leave the connection at NORMAL.
    assert_synchronous_full(&store);
}

#[test]
fn task_ids_are_never_reused() {
    let store = Store::open_in_memory().unwrap();
    let mut last = 0;
    for _ in 0..3 {
        let t = store.create_task(&new_task("pull", "web")).unwrap();
        store
            .finish_task(t.id, TaskState::Succeeded, TaskResult::Done, None)
            .unwrap();
        last = t.id;
    }
    assert_eq!(store.prune_tasks(0).unwrap(), 3);
    let next = store.create_task(&new_task("pull", "web")).unwrap();
    assert_eq!(next.id, last + 1);
}

#[test]
fn interrupt_unfinished_fails_pending_and_running_only() {
    let dir = temp();
    let (pending, running, done, failed) = {
        let store = Store::open(dir.path()).unwrap();
        let pending = store.create_task(&new_task("deploy", "a")).unwrap().id;
        let running = store.create_task(&new_task("deploy", "b")).unwrap().id;
        store.start_task(running).unwrap();
        store.append_task_log(running, "pulling").unwrap();
        let done = store.create_task(&new_task("deploy", "c")).unwrap().id;
        store.start_task(done).unwrap();
        store
            .finish_task(done, TaskState::Succeeded, TaskResult::Done, None)
            .unwrap();
        let failed = store.create_task(&new_task("deploy", "d")).unwrap().id;
        store
            .finish_task(failed, TaskState::Failed, TaskResult::Failed, Some("boom"))
            .unwrap();
        (pending, running, done, failed)
    };
    // As at start-up after a crash.
    let store = Store::open(dir.path()).unwrap();
    let done_before = store.task(done).unwrap().unwrap();
    let failed_before = store.task(failed).unwrap().unwrap();

    let interrupted = store.interrupt_unfinished().unwrap();
    assert_eq!(
        interrupted.iter().map(|t| t.id).collect::<Vec<_>>(),
        [pending, running]
    );
    for task in &interrupted {
        assert_eq!(task.state, TaskState::Failed);
        assert_eq!(task.result, "interrupted");
        assert!(task.finished_usec.is_some());
        assert_eq!(store.task(task.id).unwrap().as_ref(), Some(task));
    }
    assert_eq!(
        interrupted[0].error.as_deref(),
        Some("stackd stopped while the task was pending")
    );
    assert_eq!(
        interrupted[1].error.as_deref(),
        Some("stackd stopped while the task was running")
    );
    assert_eq!(interrupted[0].started_usec, None);
    let log = store.task_log(running).unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[0].line, "pulling");
    assert!(log[1]
        .line
        .contains("stackd stopped while the task was running"));
    assert_eq!(store.task_log(pending).unwrap().len(), 1);

    assert_eq!(store.task(done).unwrap().unwrap(), done_before);
    assert_eq!(store.task(failed).unwrap().unwrap(), failed_before);
    assert!(store.task_log(done).unwrap().is_empty());
    // Nothing left to interrupt.
    assert!(store.interrupt_unfinished().unwrap().is_empty());
}

#[test]
fn list_tasks_filters_newest_first() {
    let store = Store::open_in_memory().unwrap();
    let mut ids = Vec::new();
    for (i, service) in ["web", "db", "web", "web", "db"].iter().enumerate() {
        let t = store.create_task(&new_task("deploy", service)).unwrap();
        match i {
            0 => {
                store
                    .finish_task(t.id, TaskState::Succeeded, TaskResult::Done, None)
                    .unwrap();
            }
            1 | 2 => store.start_task(t.id).unwrap(),
            3 => {
                store
                    .finish_task(t.id, TaskState::Failed, TaskResult::Failed, Some("x"))
                    .unwrap();
            }
            _ => {}
        }
        ids.push(t.id);
    }
    let list = |filter: TaskFilter| -> Vec<u64> {
        store
            .list_tasks(&filter)
            .unwrap()
            .iter()
            .map(|t| t.id)
            .collect()
    };
    assert_eq!(
        list(TaskFilter::default()),
        [ids[4], ids[3], ids[2], ids[1], ids[0]]
    );
    assert_eq!(
        list(TaskFilter {
            service: Some("web".into()),
            ..TaskFilter::default()
        }),
        [ids[3], ids[2], ids[0]]
    );
    assert_eq!(
        list(TaskFilter {
            states: vec![TaskState::Running, TaskState::Pending],
            ..TaskFilter::default()
        }),
        [ids[4], ids[2], ids[1]]
    );
    assert_eq!(
        list(TaskFilter {
            service: Some("web".into()),
            states: vec![TaskState::Succeeded, TaskState::Failed],
            limit: Some(1),
        }),
        [ids[3]]
    );
    assert_eq!(
        list(TaskFilter {
            limit: Some(2),
            ..TaskFilter::default()
        }),
        [ids[4], ids[3]]
    );
    assert!(list(TaskFilter {
        service: Some("nope".into()),
        ..TaskFilter::default()
    })
    .is_empty());
}

#[test]
fn prune_tasks_keeps_newest_finished_and_all_unfinished() {
    let store = Store::open_in_memory().unwrap();
    let unfinished = store.create_task(&new_task("deploy", "web")).unwrap().id;
    store.append_task_log(unfinished, "waiting").unwrap();
    let mut finished = Vec::new();
    for i in 0..5 {
        let id = store.create_task(&new_task("pull", "web")).unwrap().id;
        store.append_task_log(id, &format!("pull {i}")).unwrap();
        store
            .finish_task(id, TaskState::Succeeded, TaskResult::Done, None)
            .unwrap();
        finished.push(id);
    }
    assert_eq!(store.prune_tasks(2).unwrap(), 3);
    assert_eq!(store.prune_tasks(2).unwrap(), 0);
    let left: Vec<u64> = store
        .list_tasks(&TaskFilter::default())
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect();
    assert_eq!(left, [finished[4], finished[3], unfinished]);
    assert_eq!(store.task_log(unfinished).unwrap().len(), 1);
    assert_eq!(store.task_log(finished[4]).unwrap()[0].line, "pull 4");
    // The logs of pruned tasks went with them.
    let orphans: i64 = store
        .conn()
        .query_row(
            "SELECT COUNT(*) FROM task_log WHERE task_id NOT IN (SELECT id FROM tasks)",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0);
    let lines: i64 = store
        .conn()
        .query_row("SELECT COUNT(*) FROM task_log", [], |r| r.get(0))
        .unwrap();
    assert_eq!(lines, 3);
}

#[test]
fn ids_past_i64_name_no_task() {
    let store = Store::open_in_memory().unwrap();
    assert!(store.task(u64::MAX).unwrap().is_none());
    assert!(store.task(1 << 63).unwrap().is_none());
    assert!(store.task_log(u64::MAX).unwrap().is_empty());
}
