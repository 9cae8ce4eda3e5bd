//! The schema, as a list of migrations numbered by `PRAGMA user_version`.
//!
//! Migration `i` (0-based) takes the database from version `i` to `i + 1`.
//! Append new migrations; never edit one that has shipped.
//!
//! Tables are not `STRICT`: that needs SQLite 3.37, and the `sqlite3` tool
//! of older distributions (Debian 11 has 3.34) could then not open the file
//! when an operator wants to look inside. `CHECK` constraints do the job.

use std::path::Path;

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

pub(super) const MIGRATIONS: &[&str] = &[
    // 1: everything the first release keeps.
    r"
    CREATE TABLE desired (
        service    TEXT PRIMARY KEY NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('running', 'stopped')),
        source     TEXT NOT NULL CHECK (source IN ('config', 'user')),
        since_usec INTEGER NOT NULL
    );

    CREATE TABLE deployed (
        service    TEXT PRIMARY KEY NOT NULL,
        since_usec INTEGER NOT NULL
    );

    CREATE TABLE tasks (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        kind          TEXT NOT NULL,
        service       TEXT NOT NULL,
        origin        TEXT NOT NULL,
        state         TEXT NOT NULL
                      CHECK (state IN ('pending', 'running', 'succeeded', 'failed', 'cancelled')),
        result        TEXT NOT NULL DEFAULT '',
        error         TEXT,
        created_usec  INTEGER NOT NULL,
        started_usec  INTEGER,
        finished_usec INTEGER
    );
    CREATE INDEX tasks_by_service ON tasks (service, id);
    CREATE INDEX tasks_by_state ON tasks (state, id);

    CREATE TABLE task_log (
        task_id INTEGER NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
        line_no INTEGER NOT NULL,
        usec    INTEGER NOT NULL,
        line    TEXT NOT NULL,
        PRIMARY KEY (task_id, line_no)
    ) WITHOUT ROWID;

    CREATE TABLE events (
        seq      INTEGER PRIMARY KEY AUTOINCREMENT,
        usec     INTEGER NOT NULL,
        kind     TEXT NOT NULL,
        severity TEXT NOT NULL,
        service  TEXT,
        summary  TEXT NOT NULL,
        data     TEXT NOT NULL
    );

    CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    );

    CREATE TABLE outbox (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        channel           TEXT NOT NULL,
        dedup_key         TEXT NOT NULL,
        payload           TEXT NOT NULL,
        created_usec      INTEGER NOT NULL,
        attempts          INTEGER NOT NULL DEFAULT 0,
        next_attempt_usec INTEGER NOT NULL,
        last_error        TEXT,
        delivered_usec    INTEGER,
        UNIQUE (channel, dedup_key)
    );
    CREATE INDEX outbox_due ON outbox (next_attempt_usec, id) WHERE delivered_usec IS NULL;
    ",
    // 2: a move between hosts sets the desired state too (source
    // 'migrate'), and `peer` names the other host of the last move. A CHECK
    // cannot be altered in SQLite, so the table is rebuilt.
    r"
    CREATE TABLE desired_v2 (
        service    TEXT PRIMARY KEY NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('running', 'stopped')),
        source     TEXT NOT NULL CHECK (source IN ('config', 'user', 'migrate')),
        since_usec INTEGER NOT NULL,
        peer       TEXT
    );
    INSERT INTO desired_v2 (service, state, source, since_usec)
        SELECT service, state, source, since_usec FROM desired;
    DROP TABLE desired;
    ALTER TABLE desired_v2 RENAME TO desired;
    ",
    // 3: an alert the rate limit holds back is kept in the outbox, `held`,
    // until the window ends and one summary replaces it (marked delivered
    // then): so what was held back survives a restart.
    r"
    ALTER TABLE outbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0 CHECK (held IN (0, 1));
    DROP INDEX outbox_due;
    CREATE INDEX outbox_due ON outbox (next_attempt_usec, id)
        WHERE delivered_usec IS NULL AND held = 0;
    CREATE INDEX outbox_held ON outbox (channel, id)
        WHERE delivered_usec IS NULL AND held = 1;
    ",
    // 4: a person who stopped a service through Docker itself (`docker
    // stop`, Portainer, ...) sets the desired state too (source
    // 'outside'); `detail` says which door ("docker stop", "docker kill").
    r"
    CREATE TABLE desired_v3 (
        service    TEXT PRIMARY KEY NOT NULL,
        state      TEXT NOT NULL CHECK (state IN ('running', 'stopped')),
        source     TEXT NOT NULL CHECK (source IN ('config', 'user', 'migrate', 'outside')),
        since_usec INTEGER NOT NULL,
        peer       TEXT,
        detail     TEXT
    );
    INSERT INTO desired_v3 (service, state, source, since_usec, peer)
        SELECT service, state, source, since_usec, peer FROM desired;
    DROP TABLE desired;
    ALTER TABLE desired_v3 RENAME TO desired;
    ",
    // 5: the images each service ran, so that `prune` keeps the one before
    // the last change (what `rollback` goes back to) and removes only images
    // stackd saw a service it deploys run. `service_images` holds, per
    // service and image reference, the image id it runs now and the one it
    // ran before; `image_history` every image id seen so.
    r"
    CREATE TABLE service_images (
        service      TEXT NOT NULL,
        reference    TEXT NOT NULL,
        current      TEXT NOT NULL,
        previous     TEXT,
        changed_usec INTEGER NOT NULL,
        PRIMARY KEY (service, reference)
    );
    CREATE TABLE image_history (
        image_id   TEXT NOT NULL,
        service    TEXT NOT NULL,
        reference  TEXT NOT NULL,
        last_usec  INTEGER NOT NULL,
        PRIMARY KEY (image_id, service, reference)
    );
    ",
];

/// The schema version this build writes.
pub(super) fn known_version() -> i64 {
    i64::try_from(MIGRATIONS.len()).unwrap_or(i64::MAX)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

/// Brings the database up to [`known_version`], one transaction per
/// migration, and refuses a database newer than this build.
pub(super) fn migrate(conn: &mut Connection, path: &Path) -> Result<i64, StoreError> {
    let known = known_version();
    let too_new = |found| StoreError::TooNew {
        path: path.to_owned(),
        found,
        known,
    };
    let mut version = user_version(conn)?;
    if version > known {
        return Err(too_new(version));
    }
    while version < known {
        // IMMEDIATE takes the write lock first, so of two processes opening
        // the same file at once only one applies a migration; the other
        // sees the new version once it holds the lock.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = user_version(&tx)?;
        if current > known {
            return Err(too_new(current));
        }
        if current != version {
            version = current;
            continue;
        }
        let sql = usize::try_from(current)
            .ok()
            .and_then(|i| MIGRATIONS.get(i))
            .ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "{}: schema version {current} is not a version stackd ever wrote",
                    path.display()
                ))
            })?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", current + 1)?;
        tx.commit()?;
        version = current + 1;
        tracing::info!(path = %path.display(), version, "migrated the state database");
    }
    Ok(version)
}
