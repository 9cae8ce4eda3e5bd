//! SQLite state: desired state, deployments, tasks and their logs, events,
//! small metadata and the notification outbox.
//!
//! One file, `{state_dir}/stackd.db`, in WAL mode. Every write method is one
//! transaction, so a crash (or SIGKILL, or power loss) leaves each write
//! either whole or absent. Calls are short and synchronous; async callers
//! call them directly.
//!
//! Durability: the connection runs with `synchronous=FULL`, so a write that
//! returned survives power loss (a user's "stop" must not come back as
//! "running" after a power cut). The one exception is
//! [`Store::append_task_log`], which is frequent and cheap to lose: it
//! commits with `synchronous=NORMAL`, which in WAL mode still survives a
//! crash of stackd itself, and the next FULL commit (at the latest the
//! task's `finish_task`) makes those lines durable too.

mod desired;
mod error;
mod events;
mod health;
mod images;
mod origin;
mod outbox;
mod schema;
mod set_by;
mod tasks;
mod types;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, Transaction, TransactionBehavior};

pub use error::StoreError;
pub use health::{WriteFailure, WriteHealth, QUIET_INTERVAL};
pub use images::{SeenImage, ServiceImage};
pub use origin::Origin;
pub use set_by::SetBy;
pub use types::{
    Desired, DesiredSource, DesiredState, EventRecord, LogLine, NewEvent, NewTask, OutboxItem,
    ParseEnumError, TaskFilter, TaskRecord, TaskResult, TaskState, IN_DOUBT, KEPT,
};

/// The database file's name inside the state directory.
pub const DB_FILE: &str = "stackd.db";

/// How long a statement waits for another connection's write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::time::now_usec;

/// The state database. `Send + Sync`; share it with an `Arc`.
pub struct Store {
    conn: Mutex<Connection>,
    path: PathBuf,
    health: health::Health,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) `state_dir/stackd.db`, creating
    /// `state_dir` with mode 0700 if it does not exist, and migrates the
    /// schema. Fails with [`StoreError::TooNew`] if a newer stackd wrote it.
    pub fn open(state_dir: &Path) -> Result<Store, StoreError> {
        create_private_dir(state_dir)?;
        let path = state_dir.join(DB_FILE);
        let open_err = |source| StoreError::Open {
            path: path.clone(),
            source,
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        Self::setup(conn, path.clone(), true).map_err(|e| match e {
            StoreError::Sqlite(source) => open_err(source),
            other => other,
        })
    }

    /// A private database in memory, for tests.
    pub fn open_in_memory() -> Result<Store, StoreError> {
        let conn = Connection::open_in_memory()?;
        Self::setup(conn, PathBuf::from(":memory:"), false)
    }

    fn setup(mut conn: Connection, path: PathBuf, on_disk: bool) -> Result<Store, StoreError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        if on_disk {
            let mode: String =
                conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
            if !mode.eq_ignore_ascii_case("wal") {
                tracing::warn!(
                    path = %path.display(),
                    mode,
                    "the state database is not in WAL mode (does the file system support it?); \
                     readers will wait for writers"
                );
            }
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", true)?;
        let version = schema::migrate(&mut conn, &path)?;
        tracing::debug!(path = %path.display(), version, "opened the state database");
        Ok(Store {
            conn: Mutex::new(conn),
            path,
            health: health::Health::new(),
        })
    }

    /// The database file (":memory:" for an in-memory store).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The connection. A panic while it was held cannot have left a
    /// transaction open (a dropped `Transaction` rolls back), so a
    /// poisoned lock is taken over as is.
    fn conn(&self) -> MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` as one write transaction, committed if `f` returns `Ok`.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let result = Self::write_on(&mut self.conn(), f).map_err(|e| self.locate(e));
        self.account(&result);
        result
    }

    /// Runs `delete`, a `DELETE` of all but the newest `?1` rows, keeping
    /// `keep` of them; says at debug level how many `what` went.
    fn prune_keeping(&self, delete: &str, keep: usize, what: &str) -> Result<usize, StoreError> {
        let deleted = self.write(|tx| Ok(tx.execute(delete, [to_i64(keep)])?))?;
        if deleted > 0 {
            tracing::debug!(deleted, keep, "pruned {what}");
        }
        Ok(deleted)
    }

    /// Tells the write-health tracker how a write went.
    fn account<T>(&self, result: &Result<T, StoreError>) {
        match result {
            Ok(_) => self.health.succeeded(),
            Err(e) => self.health.failed(e),
        }
    }

    /// [`Store::write`] on a connection already locked.
    fn write_on<T>(
        conn: &mut Connection,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        // IMMEDIATE: take the write lock at BEGIN, so a second process on
        // the same file waits (busy timeout) instead of failing halfway.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let value = f(&tx)?;
        tx.commit()?;
        Ok(value)
    }

    /// Runs `f` on the connection, for reads.
    fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&self.conn()).map_err(|e| self.locate(e))
    }

    /// Turns a bare SQLite error into one that names this database.
    fn locate(&self, err: StoreError) -> StoreError {
        match err {
            StoreError::Sqlite(source) => StoreError::Database {
                path: self.path.clone(),
                source,
            },
            other => other,
        }
    }

    /// A [`StoreError::Corrupt`] naming this database.
    fn corrupt(&self, what: impl fmt::Display) -> StoreError {
        StoreError::Corrupt(format!("{}: {what}", self.path.display()))
    }

    /// Parses an enum name read back from `table.column` of row `row`.
    fn parse_enum<T: std::str::FromStr<Err = ParseEnumError>>(
        &self,
        text: &str,
        column: &str,
        row: impl fmt::Display,
    ) -> Result<T, StoreError> {
        text.parse()
            .map_err(|e: ParseEnumError| self.corrupt(format_args!("{column} of {row}: {e}")))
    }

    /// SQLite's own `PRAGMA integrity_check`: `Ok` if it says "ok", else
    /// [`StoreError::Corrupt`] with what it found.
    pub fn integrity_check(&self) -> Result<(), StoreError> {
        let problems = self.read(|conn| {
            let mut stmt = conn.prepare("PRAGMA integrity_check")?;
            let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })?;
        if problems.len() == 1 && problems[0] == "ok" {
            Ok(())
        } else {
            Err(self.corrupt(format_args!(
                "integrity check failed: {}; restore a backup or move the file away",
                problems.join("; ")
            )))
        }
    }
}

/// Creates `dir` (and missing parents) with mode 0700. An existing
/// directory is left as it is.
/// What [`Store::open`] would say about `dir` before anything is created
/// (for `stackd --check-config`): it must be a directory stackd can write,
/// or not exist yet under a directory.
pub fn check_state_dir(dir: &Path) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        path: dir.to_owned(),
        source,
    };
    // The nearest part of the path that exists must be a directory.
    let mut at = Some(dir);
    while let Some(p) = at {
        match std::fs::metadata(p) {
            Ok(m) if m.is_dir() => {
                if p == dir {
                    return nix::unistd::access(
                        dir,
                        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
                    )
                    .map_err(|e| io(std::io::Error::from(e)));
                }
                return Ok(());
            }
            Ok(_) => {
                return Err(io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("{} is not a directory", p.display()),
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => at = p.parent(),
            Err(e) => return Err(io(e)),
        }
    }
    Ok(())
}

fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| StoreError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// Converts a count or id for SQLite, which stores signed 64-bit integers.
fn to_i64(n: impl TryInto<i64>) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}
