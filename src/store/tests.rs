use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

fn temp() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn new_task(kind: &str, service: &str) -> NewTask {
    NewTask {
        kind: kind.to_owned(),
        service: service.to_owned(),
        origin: Origin::Other("test".to_owned()),
    }
}

fn event(kind: &str, n: u64) -> NewEvent {
    NewEvent {
        kind: kind.to_owned(),
        severity: "info".to_owned(),
        service: Some("web".to_owned()),
        summary: format!("event {n}"),
        data: json!({ "n": n }),
    }
}

/// A raw connection to the same file, to look behind the store's back.
/// A failed write must not leave the connection at `synchronous=NORMAL`.
fn assert_synchronous_full(store: &Store) {
    let sync: i64 = store
        .conn()
        .query_row("PRAGMA synchronous", [], |r| r.get(0))
        .unwrap();
    assert_eq!(sync, 2, "synchronous should be FULL (2)");
}

fn raw(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join(DB_FILE)).expect("raw open")
}

#[test]
fn store_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Store>();
}

#[test]
fn enum_names_round_trip() {
    for s in DesiredState::ALL {
        assert_eq!(s.as_str().parse::<DesiredState>(), Ok(*s));
    }
    for s in DesiredSource::ALL {
        assert_eq!(s.as_str().parse::<DesiredSource>(), Ok(*s));
    }
    for s in TaskState::ALL {
        assert_eq!(s.as_str().parse::<TaskState>(), Ok(*s));
        assert_eq!(serde_json::to_value(s).unwrap(), json!(s.as_str()));
    }
    let err = "paused".parse::<DesiredState>().unwrap_err();
    assert_eq!(
        err.to_string(),
        r#"unknown desired state "paused" (expected running, stopped)"#
    );
    let finished: Vec<_> = TaskState::ALL.iter().filter(|s| s.is_finished()).collect();
    assert_eq!(
        finished,
        [
            &TaskState::Succeeded,
            &TaskState::Failed,
            &TaskState::Cancelled
        ]
    );
}

#[test]
fn open_creates_private_state_dir() {
    use std::os::unix::fs::PermissionsExt;
    let dir = temp();
    let state = dir.path().join("a/b/state");
    let store = Store::open(&state).unwrap();
    assert_eq!(store.path(), state.join(DB_FILE));
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    let journal: String = raw(&state)
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(journal, "wal");
}

#[test]
fn open_reports_a_state_dir_it_cannot_create() {
    let dir = temp();
    let file = dir.path().join("file");
    std::fs::write(&file, "").unwrap();
    let err = Store::open(&file.join("state")).unwrap_err();
    assert!(matches!(err, StoreError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains(&*file.to_string_lossy()), "{err}");
}

#[test]
fn desired_state_survives_reopen() {
    let dir = temp();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.desired("web").unwrap(), None);
        store
            .set_desired("web", DesiredState::Stopped, DesiredSource::User)
            .unwrap();
        store
            .set_desired("db", DesiredState::Running, DesiredSource::Config)
            .unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let web = store.desired("web").unwrap().unwrap();
    assert_eq!(web.state, DesiredState::Stopped);
    assert_eq!(web.source, DesiredSource::User);
    let all = store.all_desired().unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["db", "web"]);
    assert_eq!(all["db"].state, DesiredState::Running);
    assert_eq!(all["db"].source, DesiredSource::Config);
}

#[test]
fn a_stop_outside_stackd_is_stored_with_its_door_and_undone_by_a_start() {
    let dir = temp();
    let store = Store::open(dir.path()).unwrap();
    store.set_stopped_outside("web", "docker stop").unwrap();
    let web = store.desired("web").unwrap().unwrap();
    assert_eq!(
        (web.state, web.source, web.detail.as_deref()),
        (
            DesiredState::Stopped,
            DesiredSource::Outside,
            Some("docker stop")
        )
    );
    assert!(web.is_decision());
    assert_eq!(
        web.set_by().to_string(),
        "stopped outside stackd (docker stop)"
    );
    store
        .set_desired("web", DesiredState::Running, DesiredSource::User)
        .unwrap();
    let web = store.desired("web").unwrap().unwrap();
    assert_eq!((web.source, web.detail), (DesiredSource::User, None));
}

#[test]
fn desired_since_moves_only_when_the_state_changes() {
    let store = Store::open_in_memory().unwrap();
    store
        .set_desired("web", DesiredState::Running, DesiredSource::Config)
        .unwrap();
    let first = store.desired("web").unwrap().unwrap();
    std::thread::sleep(Duration::from_millis(2));
    store
        .set_desired("web", DesiredState::Running, DesiredSource::User)
        .unwrap();
    let same = store.desired("web").unwrap().unwrap();
    assert_eq!(same.since_usec, first.since_usec);
    assert_eq!(same.source, DesiredSource::User);
    std::thread::sleep(Duration::from_millis(2));
    store
        .set_desired("web", DesiredState::Stopped, DesiredSource::User)
        .unwrap();
    let changed = store.desired("web").unwrap().unwrap();
    assert!(changed.since_usec > first.since_usec);
    assert_eq!(changed.state, DesiredState::Stopped);

    store.forget_desired("web").unwrap();
    store.forget_desired("web").unwrap();
    assert_eq!(store.desired("web").unwrap(), None);
    assert!(store.all_desired().unwrap().is_empty());
}

#[test]
fn deployed_and_meta() {
    let store = Store::open_in_memory().unwrap();
    assert!(store.deployed().unwrap().is_empty());
    store.mark_deployed("web").unwrap();
    store.mark_deployed("web").unwrap();
    store.mark_deployed("db").unwrap();
    assert_eq!(
        store.deployed().unwrap(),
        BTreeSet::from(["db".to_owned(), "web".to_owned()])
    );
    store.unmark_deployed("web").unwrap();
    store.unmark_deployed("nope").unwrap();
    assert_eq!(store.deployed().unwrap(), BTreeSet::from(["db".to_owned()]));

    assert_eq!(store.meta("boot_id").unwrap(), None);
    store.set_meta("boot_id", "a").unwrap();
    store.set_meta("boot_id", "b").unwrap();
    assert_eq!(store.meta("boot_id").unwrap().as_deref(), Some("b"));
}

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
fn event_seq_is_monotonic_and_survives_reopen_and_pruning() {
    let dir = temp();
    {
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.last_event_seq().unwrap(), 0);
        assert!(store.events_after(0, 10).unwrap().is_empty());
        let mut last = 0;
        for n in 0..5 {
            let seq = store.append_event(&event("state", n)).unwrap();
            assert!(seq > last);
            last = seq;
        }
        assert_eq!(store.last_event_seq().unwrap(), last);
    }
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_event_seq().unwrap(), 5);
    let all = store.events_after(0, 100).unwrap();
    assert_eq!(
        all.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(all[2].data, json!({ "n": 2 }));
    assert_eq!(all[2].summary, "event 2");
    assert_eq!(all[2].service.as_deref(), Some("web"));
    assert_eq!(all[2].severity, "info");
    let page = store.events_after(2, 2).unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);

    let no_service = NewEvent {
        service: None,
        ..event("peer-lost", 9)
    };
    assert_eq!(store.append_event(&no_service).unwrap(), 6);
    assert_eq!(store.events_after(5, 10).unwrap()[0].service, None);

    assert_eq!(store.prune_events(2).unwrap(), 4);
    let left = store.events_after(0, 100).unwrap();
    assert_eq!(left.iter().map(|e| e.seq).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(store.prune_events(0).unwrap(), 2);
    assert_eq!(store.last_event_seq().unwrap(), 6);
    drop(store);
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.last_event_seq().unwrap(), 6);
    assert_eq!(store.append_event(&event("state", 7)).unwrap(), 7);
}

#[test]
fn opening_twice_is_idempotent() {
    let dir = temp();
    let first = Store::open(dir.path()).unwrap();
    first
        .set_desired("web", DesiredState::Running, DesiredSource::Config)
        .unwrap();
    // A second store on the same file while the first is open, then again.
    let second = Store::open(dir.path()).unwrap();
    assert!(second.desired("web").unwrap().is_some());
    drop((first, second));
    let third = Store::open(dir.path()).unwrap();
    assert!(third.desired("web").unwrap().is_some());
    let version: i64 = raw(dir.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, schema::known_version());
    third.integrity_check().unwrap();
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = temp();
    drop(Store::open(dir.path()).unwrap());
    raw(dir.path())
        .pragma_update(None, "user_version", 99)
        .unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    match &err {
        StoreError::TooNew { found, known, .. } => {
            assert_eq!(*found, 99);
            assert_eq!(*known, schema::known_version());
        }
        other => panic!("expected TooNew, got {other:?}"),
    }
    let message = err.to_string();
    assert!(message.contains(&*dir.path().join(DB_FILE).to_string_lossy()));
    let expected = format!(
        "newer stackd (schema 99, this build knows {})",
        schema::known_version()
    );
    assert!(message.contains(&expected), "{message}");
    // And the file was not touched.
    let version: i64 = raw(dir.path())
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 99);
}

#[test]
fn a_file_that_is_not_a_database_is_reported_with_its_path() {
    let dir = temp();
    std::fs::write(dir.path().join(DB_FILE), vec![b'x'; 4096]).unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(matches!(err, StoreError::Open { .. }), "{err:?}");
    assert!(err
        .to_string()
        .contains(&*dir.path().join(DB_FILE).to_string_lossy()));
}

#[test]
fn bad_enum_text_read_back_is_corrupt() {
    let dir = temp();
    let store = Store::open(dir.path()).unwrap();
    let id = store.create_task(&new_task("deploy", "web")).unwrap().id;
    // CHECK constraints keep bad names out; a hand edit that drops them
    // is what this guards against.
    store
        .conn()
        .execute_batch(
            "PRAGMA ignore_check_constraints = ON;
             UPDATE tasks SET state = 'exploded';
             PRAGMA ignore_check_constraints = OFF;",
        )
        .unwrap();
    let err = store.task(id).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("tasks.state of task 1"), "{message}");
    assert!(message.contains("\"exploded\""), "{message}");
}

#[test]
fn outbox_due_retry_delivered() {
    let store = Store::open_in_memory().unwrap();
    let payload = json!({ "summary": "web is unhealthy" });
    let a = store.outbox_push("email", "event-1", &payload).unwrap();
    let b = store
        .outbox_push("webhook.ops", "event-1", &payload)
        .unwrap();
    assert_ne!(a, b);
    // Same channel and key: the same item, nothing new.
    assert_eq!(
        store
            .outbox_push("email", "event-1", &json!("other"))
            .unwrap(),
        a
    );

    let now = now_usec();
    let due = store.outbox_due(now, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [a, b]);
    assert_eq!(due[0].payload, payload);
    assert_eq!(due[0].channel, "email");
    assert_eq!(due[0].dedup_key, "event-1");
    assert_eq!(due[0].attempts, 0);
    assert_eq!(due[0].last_error, None);
    assert_eq!(store.outbox_due(now, 1).unwrap().len(), 1);

    store
        .outbox_retry(a, now + 5_000_000, "connection refused")
        .unwrap();
    let due = store.outbox_due(now, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [b]);
    let later = store.outbox_due(now + 5_000_000, 10).unwrap();
    assert_eq!(later.iter().map(|i| i.id).collect::<Vec<_>>(), [b, a]);
    assert_eq!(later[1].attempts, 1);
    assert_eq!(later[1].last_error.as_deref(), Some("connection refused"));
    store.outbox_retry(a, now + 6_000_000, "timeout").unwrap();
    let again = store.outbox_due(now + 6_000_000, 10).unwrap();
    assert_eq!(again[1].attempts, 2);

    store.outbox_delivered(b).unwrap();
    store.outbox_delivered(b).unwrap();
    store.outbox_delivered(a).unwrap();
    assert!(store.outbox_due(u64::MAX, 10).unwrap().is_empty());
    // Delivered items still dedup.
    assert_eq!(store.outbox_push("email", "event-1", &payload).unwrap(), a);
    assert!(store.outbox_due(u64::MAX, 10).unwrap().is_empty());

    assert!(matches!(
        store.outbox_delivered(999),
        Err(StoreError::NoSuchOutboxItem(999))
    ));
    assert!(matches!(
        store.outbox_retry(999, 0, "x"),
        Err(StoreError::NoSuchOutboxItem(999))
    ));

    let c = store.outbox_push("email", "event-2", &payload).unwrap();
    assert!(c > b);
    assert_eq!(store.outbox_prune(1).unwrap(), 1); // a goes, b stays, c undelivered
    assert_eq!(store.outbox_due(u64::MAX, 10).unwrap()[0].id, c);
    assert_ne!(store.outbox_push("email", "event-1", &payload).unwrap(), a);
}

#[test]
fn held_outbox_items_wait_for_one_summary_that_survives_a_reopen() {
    let dir = temp();
    let store = Store::open(dir.path()).unwrap();
    let h1 = store.outbox_hold("email", "alert-1", &json!(1)).unwrap();
    let h2 = store.outbox_hold("email", "alert-2", &json!(2)).unwrap();
    let other = store.outbox_hold("journal", "alert-1", &json!(1)).unwrap();
    // Held items are never due, and a held key is pushed at most once.
    assert!(store.outbox_due(u64::MAX, 10).unwrap().is_empty());
    assert_eq!(
        store.outbox_hold("email", "alert-1", &json!(9)).unwrap(),
        h1
    );
    drop(store);

    // A restart finds them.
    let store = Store::open(dir.path()).unwrap();
    let all = store.outbox_held(None, 10).unwrap();
    assert_eq!(
        all.iter().map(|i| i.id).collect::<Vec<_>>(),
        [h1, h2, other]
    );
    let email = store.outbox_held(Some("email"), 10).unwrap();
    assert_eq!(email.len(), 2);
    assert_eq!(email[1].payload, json!(2));

    let s = store
        .outbox_summarise("email", "summary:1-2", &json!("both"), &[h1, h2])
        .unwrap();
    // The summary is due; the held items are done, the other channel's not.
    let due = store.outbox_due(u64::MAX, 10).unwrap();
    assert_eq!(due.iter().map(|i| i.id).collect::<Vec<_>>(), [s]);
    assert_eq!(due[0].payload, json!("both"));
    assert!(store.outbox_held(Some("email"), 10).unwrap().is_empty());
    assert_eq!(store.outbox_held(None, 10).unwrap()[0].id, other);
    // Summarising again (a retry after a lost answer) changes nothing.
    assert_eq!(
        store
            .outbox_summarise("email", "summary:1-2", &json!("both"), &[h1, h2])
            .unwrap(),
        s
    );
    assert_eq!(store.outbox_due(u64::MAX, 10).unwrap().len(), 1);
}

/// Everything at once from several threads, through one shared store and
/// through a second store (a second connection) on the same file.
#[test]
fn concurrent_use_from_threads() {
    const THREADS: usize = 6;
    const ROUNDS: usize = 25;
    let dir = temp();
    let shared = Arc::new(Store::open(dir.path()).unwrap());
    let other = Arc::new(Store::open(dir.path()).unwrap());
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let store = if t % 2 == 0 {
                Arc::clone(&shared)
            } else {
                Arc::clone(&other)
            };
            std::thread::spawn(move || -> Result<Vec<u64>, StoreError> {
                let service = format!("svc{t}");
                let mut seqs = Vec::new();
                for round in 0..ROUNDS {
                    let task = store.create_task(&new_task("deploy", &service))?;
                    store.start_task(task.id)?;
                    store.append_task_log(task.id, "one")?;
                    store.append_task_log(task.id, "two")?;
                    store.finish_task(task.id, TaskState::Succeeded, TaskResult::Done, None)?;
                    let state = if round % 2 == 0 {
                        DesiredState::Running
                    } else {
                        DesiredState::Stopped
                    };
                    store.set_desired(&service, state, DesiredSource::User)?;
                    store.mark_deployed(&service)?;
                    seqs.push(store.append_event(&event("task", round as u64))?);
                    store.outbox_push("email", &format!("{t}-{round}"), &json!(round))?;
                    store.set_meta(&format!("k{t}"), &round.to_string())?;
                    store.list_tasks(&TaskFilter {
                        service: Some(service.clone()),
                        states: vec![],
                        limit: Some(5),
                    })?;
                    store.events_after(0, 10)?;
                    store.all_desired()?;
                }
                Ok(seqs)
            })
        })
        .collect();
    let mut seqs = Vec::new();
    for handle in handles {
        let mine = handle
            .join()
            .expect("thread panicked")
            .expect("store error");
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "per-thread seqs grow");
        seqs.extend(mine);
    }
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), THREADS * ROUNDS, "every seq is unique");
    assert_eq!(shared.last_event_seq().unwrap(), (THREADS * ROUNDS) as u64);

    let tasks = shared.list_tasks(&TaskFilter::default()).unwrap();
    assert_eq!(tasks.len(), THREADS * ROUNDS);
    for task in &tasks {
        assert_eq!(task.state, TaskState::Succeeded);
        let log = shared.task_log(task.id).unwrap();
        assert_eq!(
            log.iter().map(|l| l.line.as_str()).collect::<Vec<_>>(),
            ["one", "two"]
        );
    }
    assert_eq!(shared.all_desired().unwrap().len(), THREADS);
    assert_eq!(shared.deployed().unwrap().len(), THREADS);
    assert_eq!(
        shared.outbox_due(u64::MAX, 1000).unwrap().len(),
        THREADS * ROUNDS
    );
    shared.integrity_check().unwrap();
}

/// Set in the environment of the child process of `crash_safety`.
const CRASH_DIR_ENV: &str = "STACKD_STORE_CRASH_TEST_DIR";

/// The child half of `crash_safety`: writes in a loop until it is killed.
/// Ignored in ordinary runs; the parent runs it with `--ignored`.
#[test]
#[ignore = "run by crash_safety in a child process"]
fn crash_child_writer() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let store = Store::open(dir).unwrap();
    for round in 0u64.. {
        let task = store.create_task(&new_task("deploy", "web")).unwrap();
        store.start_task(task.id).unwrap();
        for i in 0..3 {
            store
                .append_task_log(task.id, &format!("line {i}"))
                .unwrap();
        }
        store
            .finish_task(task.id, TaskState::Succeeded, TaskResult::Done, None)
            .unwrap();
        let state = if round % 2 == 0 {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        };
        store
            .set_desired("web", state, DesiredSource::User)
            .unwrap();
        store.append_event(&event("task", round)).unwrap();
        store
            .outbox_push("email", &round.to_string(), &json!(round))
            .unwrap();
        if round == 20 {
            std::fs::write(dir.join("running"), "").unwrap();
        }
    }
}

/// A writer killed with SIGKILL at an arbitrary point leaves a database
/// that opens, passes integrity_check, and holds every write whole or not
/// at all.
#[test]
fn crash_safety() {
    for attempt in 0..3u64 {
        let dir = temp();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "store::tests::crash_child_writer",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("re-run the test binary");
        let deadline = Instant::now() + Duration::from_secs(60);
        while !dir.path().join("running").exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("crash child exited early: {status}");
            }
            assert!(Instant::now() < deadline, "crash child never got going");
            std::thread::sleep(Duration::from_millis(5));
        }
        // Let it run a little longer, a different time each attempt.
        std::thread::sleep(Duration::from_millis(30 + 45 * attempt));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success());

        let store = Store::open(dir.path()).unwrap();
        store.integrity_check().unwrap();

        let mut tasks = store.list_tasks(&TaskFilter::default()).unwrap();
        tasks.reverse();
        assert!(tasks.len() > 20, "only {} tasks", tasks.len());
        // Ids are 1..=n without gaps: every create either happened or not.
        let ids: Vec<u64> = tasks.iter().map(|t| t.id).collect();
        assert_eq!(ids, (1..=tasks.len() as u64).collect::<Vec<_>>());
        let (last, earlier) = tasks.split_last().unwrap();
        for task in earlier {
            assert_eq!(task.state, TaskState::Succeeded, "task {}", task.id);
            assert_eq!(task.result, "done");
            assert!(task.started_usec.is_some() && task.finished_usec.is_some());
            let log = store.task_log(task.id).unwrap();
            assert_eq!(log.len(), 3, "task {}", task.id);
        }
        // The last task is in some state of its life, but a consistent one.
        match last.state {
            TaskState::Pending => assert!(last.started_usec.is_none()),
            TaskState::Running => assert!(last.started_usec.is_some()),
            TaskState::Succeeded => assert!(last.finished_usec.is_some()),
            other => panic!("task {} is {other}", last.id),
        }
        let numbers: Vec<u64> = store
            .task_log_since(last.id, 0)
            .unwrap()
            .iter()
            .map(|(n, _)| *n)
            .collect();
        assert_eq!(numbers, (1..=numbers.len() as u64).collect::<Vec<_>>());

        // Events: no gaps, and one per completed round (the last round may
        // have died before or after its event).
        let events = store.events_after(0, usize::MAX).unwrap();
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=events.len() as u64).collect::<Vec<_>>());
        assert!(events.len() + 1 >= tasks.len() && events.len() <= tasks.len());
        assert!(store.desired("web").unwrap().is_some());

        // Start-up recovery finds at most the one task that was in flight.
        let interrupted = store.interrupt_unfinished().unwrap();
        assert!(interrupted.len() <= 1);
        if let Some(task) = interrupted.first() {
            assert_eq!(task.id, last.id);
            assert_eq!(task.result, "interrupted");
        }
    }
}

#[test]
fn sqlite_errors_name_the_database_file() {
    let dir = temp();
    let store = Store::open(dir.path()).unwrap();
    store
        .conn()
        .pragma_update(None, "query_only", true)
        .unwrap();
    let err = store
        .set_desired("web", DesiredState::Running, DesiredSource::User)
        .unwrap_err();
    assert!(matches!(err, StoreError::Database { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains(&*dir.path().join(DB_FILE).to_string_lossy()),
        "{message}"
    );
    assert!(message.contains("writable"), "{message}");
    // The log append path restores FULL even when its write fails.
    let task_err = store.append_task_log(1, "x").unwrap_err();
    assert!(
        matches!(task_err, StoreError::Database { .. }),
        "{task_err:?}"
    );
    assert_synchronous_full(&store);
}

#[test]
fn a_move_is_stored_with_its_peer_and_kept_through_a_later_user_decision() {
    let store = Store::open_in_memory().unwrap();
    store
        .set_moved("web", DesiredState::Running, "hosta")
        .unwrap();
    let moved = store.desired("web").unwrap().unwrap();
    assert_eq!(moved.source, DesiredSource::Migrate);
    assert_eq!(moved.peer.as_deref(), Some("hosta"));
    assert_eq!(moved.set_by().to_string(), "migrate from hosta");
    // A person stops it afterwards: their word counts, the peer stays.
    store
        .set_desired("web", DesiredState::Stopped, DesiredSource::User)
        .unwrap();
    let said = store.desired("web").unwrap().unwrap();
    assert_eq!(
        (said.source, said.peer.as_deref()),
        (DesiredSource::User, Some("hosta"))
    );
    assert_eq!(said.set_by().to_string(), "user");
    store
        .set_moved("web", DesiredState::Stopped, "hostb")
        .unwrap();
    assert_eq!(
        store.desired("web").unwrap().unwrap().set_by().to_string(),
        "migrate to hostb"
    );
    // Putting back what was read earlier restores it exactly.
    store.restore_desired("web", Some(&moved)).unwrap();
    assert_eq!(store.desired("web").unwrap().unwrap(), moved);
    store.restore_desired("web", None).unwrap();
    assert_eq!(store.desired("web").unwrap(), None);
}

#[test]
fn a_kept_service_is_wanted_running_here_with_the_host_it_did_not_reach() {
    let store = Store::open_in_memory().unwrap();
    store
        .set_desired("db", DesiredState::Running, DesiredSource::User)
        .unwrap();
    store.set_kept("db", "b").unwrap();
    let kept = store.desired("db").unwrap().unwrap();
    assert_eq!(
        (
            kept.state,
            kept.source,
            kept.peer.as_deref(),
            kept.detail.as_deref()
        ),
        (
            DesiredState::Running,
            DesiredSource::Migrate,
            Some("b"),
            Some(super::KEPT)
        )
    );
    assert!(kept.is_decision() && !kept.in_doubt());
    assert_eq!(kept.set_by().to_string(), "kept here: its move to b failed");
    // The move that later succeeds clears the mark.
    store.set_moved("db", DesiredState::Stopped, "b").unwrap();
    let moved = store.desired("db").unwrap().unwrap();
    assert_eq!(moved.set_by().to_string(), "migrate to b");
    assert_eq!(moved.detail, None);
}

#[test]
fn a_version_1_database_keeps_its_desired_states() {
    let dir = temp();
    {
        let mut conn = raw(dir.path());
        conn.execute_batch(schema::MIGRATIONS[0]).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute(
            "INSERT INTO desired (service, state, source, since_usec) VALUES ('web', 'stopped', 'user', 42)",
            [],
        )
        .unwrap();
        drop(conn.transaction().unwrap());
    }
    let store = Store::open(dir.path()).unwrap();
    let web = store.desired("web").unwrap().unwrap();
    assert_eq!(
        (web.state, web.source, web.since_usec, web.peer),
        (DesiredState::Stopped, DesiredSource::User, 42, None)
    );
    store.set_moved("web", DesiredState::Stopped, "b").unwrap();
    store.integrity_check().unwrap();
}

#[test]
fn ids_past_i64_name_no_task() {
    let store = Store::open_in_memory().unwrap();
    assert!(store.task(u64::MAX).unwrap().is_none());
    assert!(store.task(1 << 63).unwrap().is_none());
    assert!(store.task_log(u64::MAX).unwrap().is_empty());
}

#[test]
fn check_state_dir_refuses_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    std::fs::write(&file, "x").unwrap();
    let e = super::check_state_dir(&file).unwrap_err().to_string();
    assert!(e.contains("is not a directory"), "{e}");
    assert!(super::check_state_dir(&file.join("below")).is_err());
    assert!(super::check_state_dir(&dir.path().join("new/state")).is_ok());
    assert!(super::check_state_dir(dir.path()).is_ok());
}

#[test]
fn record_image_keeps_the_one_before_the_last_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.record_image("web", "app:1", "sha256:a").unwrap());
    assert!(!store.record_image("web", "app:1", "sha256:a").unwrap());
    assert!(store.record_image("web", "app:1", "sha256:b").unwrap());
    assert!(store.record_image("web", "app:1", "sha256:c").unwrap());
    let images = store.service_images(Some("web")).unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].current, "sha256:c");
    assert_eq!(images[0].previous.as_deref(), Some("sha256:b"));
    let seen: Vec<String> = store
        .seen_images()
        .unwrap()
        .into_iter()
        .map(|s| s.image_id)
        .collect();
    assert_eq!(seen, ["sha256:a", "sha256:b", "sha256:c"]);
    store.forget_image("sha256:b").unwrap();
    assert_eq!(store.service_images(None).unwrap()[0].previous, None);
    assert_eq!(store.seen_images().unwrap().len(), 2);
}
