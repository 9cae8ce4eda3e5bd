//! Many threads and connections at once, and a writer killed with
//! SIGKILL: every write whole or not at all.

use super::*;

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
                "store::tests::durability::crash_child_writer",
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
