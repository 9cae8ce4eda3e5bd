//! The one error type of the store.

use std::path::PathBuf;

use super::TaskState;

/// Everything the store can fail with.
///
/// Messages name the database file where one is involved and say what an
/// operator can do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused a statement. The store's methods report this as
    /// [`StoreError::Database`], which names the file; this variant carries
    /// the error inside the store (and from `open_in_memory`).
    #[error("state database error: {0}")]
    Sqlite(#[from] rusqlite::Error),

    /// SQLite refused a statement on the open database `path` (disk full,
    /// I/O error, locked for longer than the busy timeout, ...).
    #[error("the state database {} failed: {source}{}", path.display(), hint(source))]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The database file could not be opened or set up.
    #[error(
        "cannot open the state database {}: {source} \
         (check that the directory is writable by stackd and that the file is a SQLite database)",
        path.display()
    )]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },

    /// The state directory could not be created.
    #[error(
        "cannot create the state directory {}: {source} \
         (create it, owned by the user stackd runs as, or set state_dir in the config)",
        path.display()
    )]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The database was written by a newer stackd; this build must not touch it.
    #[error(
        "the database {} was written by a newer stackd (schema {found}, this build knows {known}); \
         run the newer stackd, or move the file away to start with an empty state",
        path.display()
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        known: i64,
    },

    /// `finish_task` (or `start_task`) on a task that already finished.
    #[error("task {0} has already finished")]
    TaskFinished(u64),

    /// No task with this id (never created, or pruned).
    #[error("no task with id {0}")]
    NoSuchTask(u64),

    /// `finish_task` was asked to finish a task into a state that is not final.
    #[error(
        "task {id} cannot finish as {state}: a finished task is succeeded, failed or cancelled"
    )]
    NotFinalState { id: u64, state: TaskState },

    /// No outbox item with this id (never pushed, or pruned).
    #[error("no outbox item with id {0}")]
    NoSuchOutboxItem(u64),

    /// A value read back from the database makes no sense to this build.
    /// A value read back from the database makes no sense to this build
    /// (say, a task state it does not know). The text names the file, the
    /// column and the row.
    #[error("corrupt state database: {0}")]
    Corrupt(String),
}

/// What an operator can do about a SQLite error, if there is something.
fn hint(err: &rusqlite::Error) -> &'static str {
    use rusqlite::ErrorCode;
    match err.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => " (free some disk space; stackd keeps going once it can write)",
        Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => {
            " (check that the file and its directory are writable by the user stackd runs as)"
        }
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
            " (another process holds the database locked; is a second stackd running on this state directory?)"
        }
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            " (the file is damaged; restore a backup or move it away to start with an empty state)"
        }
        Some(ErrorCode::SystemIoFailure) => " (the disk reported an I/O error; check the kernel log)",
        _ => "",
    }
}
