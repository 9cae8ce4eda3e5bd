//! The journal channel: one structured log line per alert. Never fails.

use futures_util::future::BoxFuture;
use tracing::{error, info, warn};

use super::{Channel, ChannelError, Delivery};
use crate::events::{Alert, Severity};
use crate::systemd;

pub(super) struct Journal;

/// The catalogued MESSAGE_ID for an alert kind, if it has one.
pub(super) fn message_id(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "recovered" | "reconciled" => systemd::MESSAGE_RECOVERED,
        "task-failed" => systemd::MESSAGE_TASK_FAILED,
        "docker-lost" | "docker-back" => systemd::MESSAGE_DOCKER_LOST,
        "unhealthy" => systemd::MESSAGE_UNHEALTHY,
        "gave-up" => systemd::MESSAGE_GAVE_UP,
        "spike-started" => systemd::MESSAGE_SPIKE_STARTED,
        "spike-ended" => systemd::MESSAGE_SPIKE_ENDED,
        "peer-lost" => systemd::MESSAGE_PEER_LOST,
        "reload-failed" => systemd::MESSAGE_RELOAD_FAILED,
        "peer-back" => systemd::MESSAGE_PEER_BACK,
        "state-write-failed" | "state-write-back" => systemd::MESSAGE_STATE_WRITE,
        "migrate-in-doubt" => systemd::MESSAGE_MIGRATE_IN_DOUBT,
        "migrate-settled" => systemd::MESSAGE_MIGRATE_SETTLED,
        "handoff-conflict" => systemd::MESSAGE_HANDOFF_CONFLICT,
        "disk-low" => systemd::MESSAGE_DISK_LOW,
        _ => return None,
    })
}

/// The fields the catalog entry of an alert kind names besides
/// `STACKD_SERVICE` and `STACKD_HOST` (always there), each with the value
/// it has when the alert does not say: `journalctl -x` then shows a word,
/// never a bare `@PLACEHOLDER@`.
fn kind_fields(kind: &str) -> &'static [(&'static str, &'static str)] {
    match kind {
        "recovered" | "reconciled" => &[
            ("recovered", "none"),
            ("failed", "none"),
            ("left_stopped", "none"),
            ("boot", "false"),
        ],
        "task-failed" => &[("task", "unknown")],
        _ => &[],
    }
}

/// The value of field `name` on the journal entry of `alert`, if it has one.
fn field(alert: &Alert, name: &str) -> Option<String> {
    let fallback = kind_fields(&alert.kind)
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_string());
    alert.field(name).map(str::to_string).or(fallback)
}

macro_rules! log_alert {
    ($level:ident, $a:expr, $id:expr) => {
        $level!(
            message_id = $id.map(tracing::field::display),
            stackd_service = $a.alert.service.as_str(),
            stackd_host = $a.alert.host.as_str(),
            stackd_alert = $a.alert.kind.as_str(),
            stackd_delivery = $a.id.as_str(),
            stackd_task = field(&$a.alert, "task"),
            stackd_recovered = field(&$a.alert, "recovered"),
            stackd_failed = field(&$a.alert, "failed"),
            stackd_left_stopped = field(&$a.alert, "left_stopped"),
            stackd_boot = field(&$a.alert, "boot"),
            "{}{}{}",
            super::title(&$a.alert),
            if $a.alert.body.is_empty() { "" } else { ": " },
            $a.alert.body
        )
    };
}

impl Channel for Journal {
    fn name(&self) -> &str {
        super::JOURNAL
    }

    fn send<'a>(&'a self, d: &'a Delivery) -> BoxFuture<'a, Result<(), ChannelError>> {
        let id = message_id(&d.alert.kind);
        match d.alert.severity {
            Severity::Critical => log_alert!(error, d, id),
            Severity::Warning => log_alert!(warn, d, id),
            Severity::Info => log_alert!(info, d, id),
        }
        Box::pin(std::future::ready(Ok(())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_catalogued_ids() {
        let catalog = include_str!("../../systemd/stackd.catalog");
        for kind in [
            "recovered",
            "task-failed",
            "docker-lost",
            "unhealthy",
            "gave-up",
            "spike-started",
            "spike-ended",
            "peer-lost",
            "reload-failed",
            "state-write-failed",
            "state-write-back",
            "migrate-in-doubt",
            "migrate-settled",
            "handoff-conflict",
            "disk-low",
        ] {
            let id = message_id(kind).unwrap_or_else(|| panic!("{kind} has no MESSAGE_ID"));
            assert_eq!(id.len(), 32);
            assert!(
                catalog.contains(&format!("-- {id}\n")),
                "{kind}: {id} is not in systemd/stackd.catalog"
            );
        }
        assert_eq!(message_id("test"), None);
    }

    /// Every `@FIELD@` the catalog entry of a MESSAGE_ID names is on the
    /// journal entry of every alert kind with that id, read from what the
    /// formatter logs.
    #[test]
    fn every_catalog_placeholder_is_a_field_of_the_entry() {
        use std::collections::BTreeSet;
        use std::sync::{Arc, Mutex};
        use tracing_subscriber::layer::SubscriberExt;

        struct Names(Arc<Mutex<BTreeSet<String>>>);
        impl tracing::field::Visit for Names {
            fn record_debug(&mut self, f: &tracing::field::Field, _: &dyn std::fmt::Debug) {
                self.0.lock().unwrap().insert(f.name().to_ascii_uppercase());
            }
        }
        struct Capture(Arc<Mutex<BTreeSet<String>>>);
        impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Capture {
            fn on_event(
                &self,
                ev: &tracing::Event<'_>,
                _: tracing_subscriber::layer::Context<'_, S>,
            ) {
                ev.record(&mut Names(self.0.clone()));
            }
        }

        let catalog = include_str!("../../systemd/stackd.catalog");
        let mut entries: Vec<(String, BTreeSet<String>)> = Vec::new();
        for block in catalog.split("\n-- ").skip(1) {
            let (id, text) = block.split_once('\n').unwrap();
            let placeholders = text
                .split('@')
                .skip(1)
                .step_by(2)
                .map(str::to_string)
                .collect();
            entries.push((id.trim().to_string(), placeholders));
        }
        assert!(entries.len() >= 10, "{} catalog entries", entries.len());
        let kinds = [
            "recovered",
            "reconciled",
            "task-failed",
            "docker-lost",
            "docker-back",
            "unhealthy",
            "gave-up",
            "spike-started",
            "spike-ended",
            "peer-lost",
            "peer-back",
            "reload-failed",
            "migrate-in-doubt",
            "migrate-settled",
            "handoff-conflict",
            "disk-low",
        ];
        let mut checked = 0;
        for kind in kinds {
            let id = message_id(kind).unwrap();
            let (_, wanted) = entries
                .iter()
                .find(|(i, _)| i == id)
                .unwrap_or_else(|| panic!("{kind}: {id} not in the catalog"));
            for severity in [Severity::Info, Severity::Warning, Severity::Critical] {
                let seen = Arc::new(Mutex::new(BTreeSet::new()));
                let sub = tracing_subscriber::registry().with(Capture(seen.clone()));
                let d = Delivery {
                    id: "d".into(),
                    alert: Alert {
                        severity,
                        kind: kind.into(),
                        host: "h".into(),
                        service: "web".into(),
                        summary: "s".into(),
                        body: String::new(),
                        usec: 1,
                        fields: Vec::new(),
                    },
                };
                tracing::subscriber::with_default(sub, || {
                    drop(Journal.send(&d));
                });
                let seen = seen.lock().unwrap();
                let missing: Vec<&String> = wanted.iter().filter(|p| !seen.contains(*p)).collect();
                assert!(
                    missing.is_empty(),
                    "the journal entry of a {kind} alert lacks {missing:?} that the catalog entry {id} names (it has {seen:?})"
                );
                checked += 1;
            }
        }
        assert_eq!(checked, kinds.len() * 3);
    }

    /// An event is one journal line: the alert's, written here with its
    /// MESSAGE_ID. The modules that raise alerts do not log their own line
    /// with the same MESSAGE_ID next to it.
    #[test]
    fn only_the_journal_channel_writes_message_ids() {
        let sources = [
            ("control/mod.rs", include_str!("../control/mod.rs")),
            ("control/alerts.rs", include_str!("../control/alerts.rs")),
            ("control/apply.rs", include_str!("../control/apply.rs")),
            ("control/reload.rs", include_str!("../control/reload.rs")),
            ("control/runner.rs", include_str!("../control/runner.rs")),
            ("control/status.rs", include_str!("../control/status.rs")),
            (
                "control/diagnose.rs",
                include_str!("../control/diagnose.rs"),
            ),
            (
                "control/handoff/mod.rs",
                include_str!("../control/handoff/mod.rs"),
            ),
            (
                "control/handoff/receive.rs",
                include_str!("../control/handoff/receive.rs"),
            ),
            (
                "control/handoff/send.rs",
                include_str!("../control/handoff/send.rs"),
            ),
            (
                "control/handoff/settle.rs",
                include_str!("../control/handoff/settle.rs"),
            ),
            ("control/order.rs", include_str!("../control/order.rs")),
            ("monitor.rs", include_str!("../monitor.rs")),
            ("supervise/mod.rs", include_str!("../supervise/mod.rs")),
            ("supervise/told.rs", include_str!("../supervise/told.rs")),
            ("world/mod.rs", include_str!("../world/mod.rs")),
            ("world/observer.rs", include_str!("../world/observer.rs")),
            ("daemon.rs", include_str!("../daemon.rs")),
            ("tasks/mod.rs", include_str!("../tasks/mod.rs")),
            ("recovery/mod.rs", include_str!("../recovery/mod.rs")),
        ];
        for (name, text) in sources {
            assert!(
                !text.contains("message_id ="),
                "src/{name} logs a MESSAGE_ID itself; raise an alert instead"
            );
        }
    }
}
