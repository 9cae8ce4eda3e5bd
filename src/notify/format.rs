//! What an alert looks like outside the daemon: its stable delivery id,
//! the JSON the outbox stores and webhooks post (and reading it back), and
//! the title and plain text that mail and the journal show.

use std::fmt;

use sha2::{Digest, Sha256};

use crate::events::{Alert, Severity};
use crate::time::rfc3339;

/// The stable delivery id: 32 hex digits of SHA-256 over host, channel and
/// the alert's dedup key.
pub fn delivery_id(host: &str, channel: &str, dedup_key: &str) -> String {
    let mut h = Sha256::new();
    for part in [host, channel, dedup_key] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex(&h.finalize()[..16])
}

/// The alert as JSON, as the outbox stores it and the JSON webhook posts it.
pub fn alert_json(alert: &Alert) -> serde_json::Value {
    serde_json::json!({
        "severity": alert.severity.as_str(),
        "kind": alert.kind,
        "host": alert.host,
        "service": alert.service,
        "summary": alert.summary,
        "body": alert.body,
        "usec": alert.usec,
        "time": rfc3339(alert.usec),
    })
}

/// An outbox payload: `{"alert": {...}}`, and the journal's `"fields"`
/// when the alert has any.
pub fn payload(alert: &Alert) -> serde_json::Value {
    let mut p = serde_json::json!({ "alert": alert_json(alert) });
    if !alert.fields.is_empty() {
        let fields: serde_json::Map<String, serde_json::Value> = alert
            .fields
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
            .collect();
        p["fields"] = serde_json::Value::Object(fields);
    }
    p
}

/// The alert in an outbox payload, `None` if it is not one.
pub fn alert_from_payload(payload: &serde_json::Value) -> Option<Alert> {
    let a = payload.get("alert")?;
    let s = |k: &str| a.get(k).and_then(|v| v.as_str()).map(str::to_string);
    Some(Alert {
        severity: match a.get("severity")?.as_str()? {
            "info" => Severity::Info,
            "warning" => Severity::Warning,
            "critical" => Severity::Critical,
            _ => return None,
        },
        kind: s("kind")?,
        host: s("host")?,
        service: s("service").unwrap_or_default(),
        summary: s("summary").unwrap_or_default(),
        body: s("body").unwrap_or_default(),
        usec: a.get("usec")?.as_u64()?,
        fields: payload
            .get("fields")
            .and_then(|f| f.as_object())
            .map(|f| {
                f.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// "[stackd] nuc: web probe failed" (the host alone for host-wide alerts).
pub fn title(alert: &Alert) -> String {
    if alert.service.is_empty() {
        format!("[stackd] {}: {}", alert.host, alert.summary)
    } else {
        format!(
            "[stackd] {}: {} {}",
            alert.host, alert.service, alert.summary
        )
    }
}

/// A plain-text account of the alert: host, service, what, when, then the body.
pub fn text(alert: &Alert) -> String {
    let service = if alert.service.is_empty() {
        "(the host as a whole)"
    } else {
        alert.service.as_str()
    };
    let mut t = format!(
        "Host:     {}\nService:  {service}\nWhat:     {} ({}, {})\nWhen:     {}\n",
        alert.host,
        alert.summary,
        alert.kind,
        alert.severity.as_str(),
        rfc3339(alert.usec)
    );
    if !alert.body.is_empty() {
        t.push('\n');
        t.push_str(&alert.body);
        t.push('\n');
    }
    t
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            severity: Severity::Warning,
            kind: "unhealthy".into(),
            host: "nuc".into(),
            service: "web".into(),
            summary: "probe failed".into(),
            body: "GET / answered 503".into(),
            usec: 1_700_000_000_123_456,
            fields: Vec::new(),
        }
    }

    #[test]
    fn payload_round_trips() {
        let a = alert();
        assert_eq!(alert_from_payload(&payload(&a)), Some(a.clone()));
        let mut host_wide = a;
        host_wide.service.clear();
        host_wide.severity = Severity::Critical;
        assert_eq!(
            alert_from_payload(&payload(&host_wide)),
            Some(host_wide.clone())
        );
        assert_eq!(alert_from_payload(&serde_json::json!({"x": 1})), None);
    }

    #[test]
    fn titles_and_text_name_host_service_what_and_when() {
        let a = alert();
        assert_eq!(title(&a), "[stackd] nuc: web probe failed");
        let t = text(&a);
        for part in [
            "Host:     nuc",
            "Service:  web",
            "probe failed (unhealthy, warning)",
            "2023-11-14T22:13:20Z",
            "GET / answered 503",
        ] {
            assert!(t.contains(part), "{part:?} in {t}");
        }
        let mut h = a;
        h.service.clear();
        assert_eq!(title(&h), "[stackd] nuc: probe failed");
    }

    #[test]
    fn delivery_ids_are_stable_per_channel() {
        let id = delivery_id("nuc", "email", "alert:1:ab");
        assert_eq!(id, delivery_id("nuc", "email", "alert:1:ab"));
        assert_eq!(id.len(), 32);
        assert_ne!(id, delivery_id("nuc", "webhook.ops", "alert:1:ab"));
        assert_ne!(id, delivery_id("hp", "email", "alert:1:ab"));
    }
}
