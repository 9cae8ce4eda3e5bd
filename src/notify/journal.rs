//! The journal channel: one structured log line per alert. Never fails.

use futures_util::future::BoxFuture;
use tracing::{error, info, warn};

use super::{Channel, ChannelError, Delivery};
use crate::events::Severity;
use crate::systemd;

pub(super) struct Journal;

/// The catalogued MESSAGE_ID for an alert kind, if it has one.
pub fn message_id(kind: &str) -> Option<&'static str> {
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
        _ => return None,
    })
}

macro_rules! log_alert {
    ($level:ident, $a:expr, $id:expr) => {
        $level!(
            message_id = $id.map(tracing::field::display),
            stackd_service = $a.alert.service.as_str(),
            stackd_host = $a.alert.host.as_str(),
            stackd_alert = $a.alert.kind.as_str(),
            stackd_delivery = $a.id.as_str(),
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

    /// `journalctl -x` fills a catalog entry's @FIELD@ from the journal
    /// entry and prints the bare field name when the entry lacks it: every
    /// placeholder must be a field the alert's line carries (tests/systemd.rs
    /// checks the same on a real journal).
    #[test]
    fn catalog_placeholders_are_fields_of_the_alert_line() {
        let catalog = include_str!("../../systemd/stackd.catalog");
        let written = [
            "STACKD_SERVICE",
            "STACKD_HOST",
            "STACKD_ALERT",
            "STACKD_DELIVERY",
            "MESSAGE",
        ];
        for word in catalog.split('@').skip(1).step_by(2) {
            if !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c == '_') {
                assert!(
                    written.contains(&word),
                    "systemd/stackd.catalog uses @{word}@, which the journal line of an alert does not carry"
                );
            }
        }
    }

    /// An event is one journal line: the alert's, written here with its
    /// MESSAGE_ID. The modules that raise alerts do not log their own line
    /// with the same MESSAGE_ID next to it.
    #[test]
    fn only_the_journal_channel_writes_message_ids() {
        let sources = [
            ("control/mod.rs", include_str!("../control/mod.rs")),
            ("control/handoff.rs", include_str!("../control/handoff.rs")),
            ("control/order.rs", include_str!("../control/order.rs")),
            ("monitor.rs", include_str!("../monitor.rs")),
            ("supervise.rs", include_str!("../supervise.rs")),
            ("world.rs", include_str!("../world.rs")),
            ("daemon.rs", include_str!("../daemon.rs")),
            ("tasks/mod.rs", include_str!("../tasks/mod.rs")),
            ("recovery.rs", include_str!("../recovery.rs")),
        ];
        for (name, text) in sources {
            assert!(
                !text.contains("message_id ="),
                "src/{name} logs a MESSAGE_ID itself; raise an alert instead"
            );
        }
    }
}
