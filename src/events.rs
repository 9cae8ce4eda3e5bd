//! The in-process event bus.
//!
//! Everything that happens inside the daemon and that an adapter may want to
//! tell somebody about is published here first: task life-cycle, service
//! changes, manager changes and alerts. Adapters (D-Bus, later the peer
//! endpoint and the notification router) subscribe; nobody polls.

use tokio::sync::broadcast;

/// How loud an alert is (the config's `min_severity` filters on it).
pub use crate::config::Severity;

/// Something a person should be told about (the D-Bus `Alert` signal, and
/// later email, webhooks and desktop notifications).
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub severity: Severity,
    /// A short machine-readable kind: `recovered`, `task-failed`, `docker-lost`, ...
    pub kind: String,
    pub host: String,
    /// Empty when the alert is about the host as a whole.
    pub service: String,
    pub summary: String,
    pub body: String,
    pub usec: u64,
    /// Structured values for the journal entry, by field name without the
    /// `STACKD_` prefix, lower-case: `task`, `recovered`, `failed`,
    /// `left_stopped`, `boot` (what `systemd/stackd.catalog` names).
    pub fields: Vec<(String, String)>,
}

impl Alert {
    /// The value of one of [`fields`](Self::fields).
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A task was queued.
    TaskNew {
        id: u64,
        kind: String,
        service: String,
    },
    /// A task started running.
    TaskStarted {
        id: u64,
    },
    /// A task reached a final state (like systemd's `JobRemoved`).
    TaskRemoved {
        id: u64,
        service: String,
        result: String,
    },
    /// Something visible about one service changed (containers, desired
    /// state, the task running on it).
    ServiceChanged {
        service: String,
    },
    /// The set of configured services changed (after a reload).
    ServicesReloaded,
    /// A manager property changed (system state, Docker connection, config).
    ManagerChanged,
    Alert(Alert),
}

pub type EventSender = broadcast::Sender<Event>;

/// A bus with room for bursts (a resync touches every service at once).
pub fn channel() -> EventSender {
    broadcast::channel(4096).0
}
