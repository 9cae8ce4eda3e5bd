//! Whether the store can write, and a bounded voice for the writes it
//! could not make.
//!
//! A full state directory (or a read-only file system, a dead disk) makes
//! every write fail the same way, and every part of stackd writes: task
//! logs, events, the outbox's bookkeeping. Without care each failure is a
//! log line and each retry loop spins. So the store keeps one account of
//! its writes here:
//!
//! - [`WriteHealth`]: whether the last write failed, since when, how often,
//!   and why, published on a `tokio::sync::watch` channel
//!   ([`Store::write_health`]) only when it *changes* from writable to
//!   failing or back. The daemon turns the changes into the
//!   `state-write-failed` / `state-write-recovered` alerts.
//! - [`Store::note_write_error`]: the one way callers log a failed write.
//!   It writes at most one line per [`QUIET_INTERVAL`], counting the rest,
//!   so a full disk costs a line a minute, not a line per attempt.
//!
//! What to do about a failed write (back off, keep it in memory) stays
//! with the caller; only the telling is here.

use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tracing::warn;

use super::{now_usec, Store, StoreError};

/// At most one caller's "cannot write" line per interval.
pub const QUIET_INTERVAL: Duration = Duration::from_secs(60);

/// The store's writes as the rest of stackd sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteHealth {
    /// Set while writes fail: from the first failed write to the next one
    /// that succeeds.
    pub failing: Option<WriteFailure>,
    /// Failed writes since the store was opened; only grows.
    pub failures_total: u64,
}

/// A spell of failed writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteFailure {
    pub since_usec: u64,
    /// SQLite said the disk is full (`SQLITE_FULL`).
    pub disk_full: bool,
    /// The first error of the spell, as the store words it.
    pub error: String,
}

impl WriteHealth {
    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }
}

/// The tracker inside [`Store`].
pub(super) struct Health {
    tx: watch::Sender<WriteHealth>,
    quiet: Mutex<Quiet>,
}

#[derive(Default)]
struct Quiet {
    last: Option<Instant>,
    unsaid: u64,
}

impl Health {
    pub(super) fn new() -> Health {
        Health {
            tx: watch::Sender::new(WriteHealth::default()),
            quiet: Mutex::new(Quiet::default()),
        }
    }

    /// A write failed with `err`. Subscribers hear of it only if the store
    /// was writable until now.
    pub(super) fn failed(&self, err: &StoreError) {
        if !err.is_write_failure() {
            return;
        }
        self.tx.send_if_modified(|h| {
            h.failures_total += 1;
            if h.failing.is_some() {
                return false;
            }
            h.failing = Some(WriteFailure {
                since_usec: now_usec(),
                disk_full: err.is_disk_full(),
                error: err.to_string(),
            });
            true
        });
    }

    /// A write succeeded. Subscribers hear of it only if writes failed
    /// until now.
    pub(super) fn succeeded(&self) {
        if self.tx.borrow().failing.is_none() {
            return;
        }
        self.tx.send_if_modified(|h| h.failing.take().is_some());
    }
}

impl Store {
    /// The store's write health; the receiver wakes when writes start
    /// failing and when they work again (not for every failure).
    pub fn write_health(&self) -> watch::Receiver<WriteHealth> {
        self.health.tx.subscribe()
    }

    /// Whether the last write failed.
    pub fn write_failing(&self) -> bool {
        self.health.tx.borrow().is_failing()
    }

    /// Logs that `what` could not be written because of `err`, at most once
    /// per [`QUIET_INTERVAL`] for the whole store; the lines in between are
    /// counted and the count goes into the next line. Errors that are not
    /// failed writes (a missing row, a bug) are always logged.
    pub fn note_write_error(&self, what: impl fmt::Display, err: &StoreError) {
        if !err.is_write_failure() {
            warn!("{what}: {err}");
            return;
        }
        let mut q = self.health.quiet.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if q.last
            .is_some_and(|t| now.duration_since(t) < QUIET_INTERVAL)
        {
            q.unsaid += 1;
            return;
        }
        let unsaid = std::mem::take(&mut q.unsaid);
        q.last = Some(now);
        drop(q);
        if unsaid == 0 {
            warn!(
                "{what}: {err} (further failed writes are counted, not logged, for {}s)",
                QUIET_INTERVAL.as_secs()
            );
        } else {
            warn!(
                "{what}: {err} ({unsaid} more failed writes in the last {}s were not logged)",
                QUIET_INTERVAL.as_secs()
            );
        }
    }
}

impl StoreError {
    /// A statement SQLite refused (disk full, read-only, I/O error, busy),
    /// as opposed to a logical error such as a missing row.
    pub fn is_write_failure(&self) -> bool {
        matches!(self, StoreError::Sqlite(_) | StoreError::Database { .. })
    }

    /// SQLite said the disk is full.
    pub fn is_disk_full(&self) -> bool {
        let source = match self {
            StoreError::Sqlite(s) | StoreError::Database { source: s, .. } => s,
            _ => return false,
        };
        source.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull)
    }
}
