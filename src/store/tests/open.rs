//! Opening: the state directory, schema versions and migrations, and
//! refusing (with the file named) what is not a stackd database.

use super::*;

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
