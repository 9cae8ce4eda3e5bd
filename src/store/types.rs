//! The values the store keeps, as the rest of stackd sees them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{Origin, SetBy};

/// A string that is not one of an enum's names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} {value:?} (expected {})", expected.join(", "))]
pub struct ParseEnumError {
    /// What was being parsed ("desired state", "task state", ...).
    pub what: &'static str,
    /// The text that did not parse.
    pub value: String,
    /// The names that would have.
    pub expected: &'static [&'static str],
}

/// Declares a fieldless enum with fixed lower-case names, `as_str`,
/// `Display`, `FromStr` and serde in the same spelling.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($what:literal) {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub enum $name {
            $( $(#[$vmeta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            const NAMES: &'static [&'static str] = &[$($text),+];

            /// The name stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        what: $what,
                        value: s.to_owned(),
                        expected: Self::NAMES,
                    }),
                }
            }
        }
    };
}

named_enum! {
    /// Whether a service should be up.
    pub enum DesiredState("desired state") {
        Running = "running",
        Stopped = "stopped",
    }
}

named_enum! {
    /// Who decided a service's desired state.
    pub enum DesiredSource("desired-state source") {
        /// `auto_start` in the cluster file; replaced on every config load.
        Config = "config",
        /// A person said start or stop; outlives reboots and config reloads.
        User = "user",
        /// A move between hosts (`Desired::peer` names the other host);
        /// outlives reboots and config reloads like `User`.
        Migrate = "migrate",
        /// A person stopped it through Docker, outside stackd (`docker
        /// stop`, `docker compose stop`, Portainer): `Desired::detail` names
        /// the door. Outlives reboots like `User`; `stackctl start` undoes it.
        Outside = "outside",
    }
}

named_enum! {
    /// Where a task is in its life.
    pub enum TaskState("task state") {
        Pending = "pending",
        Running = "running",
        Succeeded = "succeeded",
        Failed = "failed",
        Cancelled = "cancelled",
    }
}

impl TaskState {
    /// Succeeded, failed or cancelled: the task will not change again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskState::Succeeded | TaskState::Failed | TaskState::Cancelled
        )
    }
}

named_enum! {
    /// How a task ended, named as systemd's `JobRemoved` names results.
    /// A task's stored `result` is one of these once it has finished, and
    /// the empty string before.
    pub enum TaskResult("task result") {
        Done = "done",
        Failed = "failed",
        Canceled = "canceled",
        Timeout = "timeout",
        Interrupted = "interrupted",
        Dependency = "dependency",
        Skipped = "skipped",
    }
}

/// A service's stored desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Desired {
    pub state: DesiredState,
    pub source: DesiredSource,
    /// When `state` last changed (a change of source alone keeps it).
    pub since_usec: u64,
    /// The other host of the last move of this service to or from this
    /// host; kept when a person changes the state afterwards.
    pub peer: Option<String>,
    /// For source `outside`: how it was stopped ("docker stop", "docker
    /// kill"); for source `migrate`: [`IN_DOUBT`] while a move's outcome
    /// is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl Desired {
    /// Said by a person or by a move, not by `auto_start`.
    pub fn is_decision(&self) -> bool {
        self.source != DesiredSource::Config
    }

    /// A move whose target stopped answering before it confirmed the
    /// start (see `Store::set_move_in_doubt`).
    pub fn in_doubt(&self) -> bool {
        self.source == DesiredSource::Migrate && self.detail.as_deref() == Some(IN_DOUBT)
    }

    /// Who set it, as `stackctl status` says: "user", "config", "migrate
    /// from HOST", "migrate to HOST", "stopped outside stackd (docker
    /// stop)", ...
    pub fn set_by(&self) -> SetBy {
        match (self.source, &self.peer) {
            (DesiredSource::Outside, _) => {
                SetBy::Outside(self.detail.as_deref().unwrap_or("docker").to_string())
            }
            (DesiredSource::Migrate, Some(peer)) if self.in_doubt() => SetBy::InDoubt(peer.clone()),
            (DesiredSource::Migrate, Some(peer)) if self.detail.as_deref() == Some(KEPT) => {
                SetBy::KeptHere(peer.clone())
            }
            (DesiredSource::Migrate, Some(peer)) => match self.state {
                DesiredState::Running => SetBy::MigrateFrom(peer.clone()),
                DesiredState::Stopped => SetBy::MigrateTo(peer.clone()),
            },
            (DesiredSource::Config, _) => SetBy::Config,
            (DesiredSource::User, _) => SetBy::User,
            (DesiredSource::Migrate, None) => SetBy::Migrate,
        }
    }
}

/// `Desired::detail` of a move in doubt.
pub const IN_DOUBT: &str = "in doubt";

/// `Desired::detail` of a service kept running where it was: a move that
/// `apply --all-hosts` asked (its placement changed) failed before the
/// target started it, and its data is here (see `Store::set_kept`).
pub const KEPT: &str = "kept";

/// What `create_task` needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTask {
    /// deploy, update, stop, restart, pull, down, prune, migrate, reconcile, ...
    pub kind: String,
    /// The service, or "" for a task on the host.
    pub service: String,
    /// Who asked.
    pub origin: Origin,
}

/// A task as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRecord {
    pub id: u64,
    pub kind: String,
    pub service: String,
    pub origin: Origin,
    pub state: TaskState,
    /// "" while unfinished; then one of [`result`]'s names.
    pub result: String,
    pub error: Option<String>,
    pub created_usec: u64,
    pub started_usec: Option<u64>,
    pub finished_usec: Option<u64>,
}

/// One line of a task's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub usec: u64,
    pub line: String,
}

/// Which tasks `list_tasks` returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskFilter {
    /// Only this service's tasks.
    pub service: Option<String>,
    /// Only tasks in one of these states; empty means every state.
    pub states: Vec<TaskState>,
    /// At most this many (the newest).
    pub limit: Option<usize>,
}

/// What `append_event` needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewEvent {
    pub kind: String,
    pub severity: String,
    pub service: Option<String>,
    pub summary: String,
    pub data: serde_json::Value,
}

/// An event as stored. `seq` only grows, across restarts and pruning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub seq: u64,
    pub usec: u64,
    pub kind: String,
    pub severity: String,
    pub service: Option<String>,
    pub summary: String,
    pub data: serde_json::Value,
}

/// A notification waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxItem {
    pub id: u64,
    pub channel: String,
    pub dedup_key: String,
    pub payload: serde_json::Value,
    pub created_usec: u64,
    /// Failed delivery attempts so far.
    pub attempts: u32,
    pub next_attempt_usec: u64,
    pub last_error: Option<String>,
}
