//! Tests of the store: the helpers every topic uses, and the names its
//! enums are stored under.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;

mod desired;
mod durability;
mod events;
mod open;
mod tasks;

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
