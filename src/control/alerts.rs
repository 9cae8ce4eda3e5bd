//! Alerts: stored as events, written to the journal with their fields,
//! and routed to the notification channels.

use super::{Control, Shared};
use crate::events::{Alert, Event, Severity};
use crate::store::{now_usec, NewEvent};

/// The journal fields (`STACKD_TASK`, `STACKD_RECOVERED`, ...) of an
/// alert, from the structured data stored with its event: lists joined by
/// ", " ("none" when empty), numbers and booleans as text.
fn journal_fields(data: &serde_json::Value) -> Vec<(String, String)> {
    let Some(map) = data.as_object() else {
        return Vec::new();
    };
    // The journal wants the reasons and the who, where the data has them.
    fn source(k: &'static str) -> &'static str {
        match k {
            "failed" => "failed_why",
            "left_stopped" => "left_stopped_by",
            other => other,
        }
    }
    ["task", "recovered", "failed", "left_stopped", "boot"]
        .iter()
        .filter_map(|k| {
            let v = map.get(source(k)).or_else(|| map.get(*k))?;
            let text = match v {
                serde_json::Value::Array(items) if items.is_empty() => "none".to_string(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_string))
                    .collect::<Vec<_>>()
                    .join(", "),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((k.to_string(), text))
        })
        .collect()
}

impl Control {
    /// Send a test message through a notification channel (all of them
    /// when `None`), bypassing the outbox, and say what happened.
    pub async fn notify_test(&self, channel: Option<&str>) -> Vec<(String, Result<(), String>)> {
        let cfg = self.config();
        crate::notify::test(&cfg.notify, &cfg.host, channel).await
    }

    /// Store an event and publish it as an alert.
    /// [`alert`](Self::alert) with structured data stored with the event.
    pub fn alert_data(
        &self,
        severity: Severity,
        kind: &str,
        service: &str,
        summary: &str,
        body: &str,
        data: serde_json::Value,
    ) {
        self.shared
            .alert(severity, kind, service, summary, body, data);
    }

    pub fn alert(&self, severity: Severity, kind: &str, service: &str, summary: &str, body: &str) {
        self.shared.alert(
            severity,
            kind,
            service,
            summary,
            body,
            serde_json::Value::Null,
        );
    }
}

impl Shared {
    pub(super) fn alert(
        &self,
        severity: Severity,
        kind: &str,
        service: &str,
        summary: &str,
        body: &str,
        data: serde_json::Value,
    ) {
        let host = self.config().host.clone();
        if let Err(e) = self.store.append_event(&NewEvent {
            kind: kind.to_string(),
            severity: severity.as_str().to_string(),
            service: (!service.is_empty()).then(|| service.to_string()),
            summary: summary.to_string(),
            data: data.clone(),
        }) {
            self.store
                .note_write_error(format_args!("cannot store event {kind}"), &e);
        }
        let fields = journal_fields(&data);
        let _ = self.events.send(Event::Alert(Alert {
            severity,
            kind: kind.to_string(),
            host,
            service: service.to_string(),
            summary: summary.to_string(),
            body: body.to_string(),
            usec: now_usec(),
            fields,
        }));
    }
}
