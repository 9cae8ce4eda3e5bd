//! What the supervisor tells people: a change of health as an event, and
//! the first lines of a recovery task's log (the evidence and the decision).

use std::time::Duration;

use tracing::info;

use crate::control::Control;
use crate::events::{Event, Severity};
use crate::health::{self, Health};
use crate::recovery::{Diagnosis, Evidence};
use crate::tasks::TaskKind;

/// A change of health: an event people are told about, then the world's
/// view of the service is announced again (D-Bus properties).
pub(super) fn drop_change(control: &Control, service: &str, change: &health::Change) {
    info!(
        stackd_service = service,
        "health {} -> {}: {}",
        change.from.as_str(),
        change.to.as_str(),
        change.message
    );
    match change.to {
        Health::Unhealthy => {
            control.alert(
                Severity::Warning,
                "unhealthy",
                service,
                &format!("{service} is unhealthy: {}", change.message),
                "",
            );
        }
        Health::Healthy if change.from == Health::Unhealthy || change.from == Health::Degraded => {
            control.alert(
                Severity::Info,
                "healthy",
                service,
                &format!("{service} is healthy again"),
                "",
            );
        }
        _ => {}
    }
    let _ = control.events().send(Event::ServiceChanged {
        service: service.to_string(),
    });
}

/// The first lines of a recovery task's log: what was seen, what was decided.
pub(super) fn describe(
    ev: &Evidence,
    d: &Diagnosis,
    kind: TaskKind,
    delay: Duration,
    attempt: u32,
    max: u32,
) -> Vec<String> {
    let mut lines = vec![format!("recovery: {}", d.summary)];
    let mut seen = Vec::new();
    if let Some(c) = &ev.container {
        seen.push(format!("container {c}"));
    }
    if let Some(code) = ev.exit_code {
        seen.push(format!("exit code {code}"));
    }
    if ev.oom_killed {
        seen.push("killed by the OOM killer".to_string());
    }
    if ev.failed_probes > 0 {
        seen.push(format!(
            "{} failed probes of {}",
            ev.failed_probes, ev.retries
        ));
    }
    if ev.container_missing {
        seen.push("no containers".to_string());
    }
    if let Some(image) = &ev.image_missing {
        seen.push(format!("Compose: image {image} missing"));
    }
    if let Some(err) = &ev.pull_failed {
        seen.push(format!("Compose: pull failed: {err}"));
    }
    if let Some(network) = &ev.network_missing {
        seen.push(format!("Compose: network {network} not found"));
    }
    if let Some(c) = &ev.port_allocated {
        seen.push(format!(
            "Compose: host port {} already allocated{}",
            c.port,
            c.holder
                .as_ref()
                .map_or(String::new(), |h| format!(" (held by {h})"))
        ));
    }
    if let Some(path) = &ev.bind_missing {
        seen.push(format!("Compose: bind source {path} does not exist"));
    }
    if let Some(door) = &ev.stopped_outside {
        seen.push(format!("stopped outside stackd ({door})"));
    }
    lines.push(format!("evidence: {}", seen.join(", ")));
    lines.push(format!(
        "decision: {} ({}), attempt {attempt} of {max}, after {delay:?}",
        kind.as_str(),
        d.cause.as_str()
    ));
    lines.extend(d.warnings.iter().map(|w| format!("warning: {w}")));
    lines
}
