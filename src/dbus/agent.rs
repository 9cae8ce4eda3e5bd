//! `stackctl notify-agent`: follows the daemon's `Alert` signal and shows
//! each alert as a desktop notification through
//! `org.freedesktop.Notifications.Notify` on the session bus.
//!
//! The daemon is watched through its well-known name, so the agent keeps
//! working across daemon restarts; it ends (and systemd restarts it) when a
//! bus connection is lost.

use std::collections::HashMap;

use futures_util::StreamExt;
use zbus::zvariant::Value;
use zbus::Connection;

use super::client::{ClientError, Target};
use super::path::MANAGER_PATH;
use super::BUS_NAME;

/// The application name desktop notifications carry.
pub const APP_NAME: &str = "stackd";

const NOTIFICATIONS: &str = "org.freedesktop.Notifications";
const NOTIFICATIONS_PATH: &str = "/org/freedesktop/Notifications";

/// One `Alert` signal, in the order of its arguments.
#[derive(Debug, Clone, PartialEq, serde::Deserialize, zbus::zvariant::Type)]
pub struct AlertSignal {
    pub severity: String,
    pub kind: String,
    pub host: String,
    pub service: String,
    pub summary: String,
    pub body: String,
    pub usec: u64,
}

/// What a desktop notification shows for an alert: summary, body, the
/// freedesktop urgency (0 low, 1 normal, 2 critical) and an icon name.
pub fn desktop(alert: &AlertSignal) -> (String, String, u8, &'static str) {
    let summary = if alert.service.is_empty() {
        format!("{}: {}", alert.host, alert.summary)
    } else {
        format!("{}: {} {}", alert.host, alert.service, alert.summary)
    };
    let (urgency, icon) = match alert.severity.as_str() {
        "critical" => (2, "dialog-error"),
        "warning" => (1, "dialog-warning"),
        _ => (0, "dialog-information"),
    };
    (summary, alert.body.clone(), urgency, icon)
}

/// Runs until a connection is lost. `daemon` is the bus stackd is on (the
/// system bus, or the session bus with `--user`); `shown` is called with
/// the summary of each notification shown, `failed` with why one was not.
pub async fn run(
    daemon: &Target,
    mut shown: impl FnMut(&str),
    mut failed: impl FnMut(&str),
) -> Result<(), ClientError> {
    let watch = match daemon {
        Target::Session => Connection::session().await,
        Target::System | Target::Private(_) => Connection::system().await,
    }
    .map_err(|e| ClientError::Connect(format!("the daemon's bus: {e}")))?;
    let session = Connection::session()
        .await
        .map_err(|e| ClientError::Connect(format!("the session bus: {e}")))?;
    let proxy = zbus::proxy::Builder::<zbus::Proxy<'_>>::new(&watch)
        .destination(BUS_NAME)?
        .path(MANAGER_PATH)?
        .interface("org.stackd1.Manager")?
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    let mut alerts = proxy.receive_signal("Alert").await?;
    while let Some(msg) = alerts.next().await {
        let alert: AlertSignal = match msg.body().deserialize() {
            Ok(a) => a,
            Err(e) => {
                failed(&format!("an Alert signal that does not parse: {e}"));
                continue;
            }
        };
        let (summary, body, urgency, icon) = desktop(&alert);
        let hints = HashMap::from([
            ("urgency", Value::U8(urgency)),
            ("desktop-entry", Value::from(APP_NAME)),
        ]);
        let reply = session
            .call_method(
                Some(NOTIFICATIONS),
                NOTIFICATIONS_PATH,
                Some(NOTIFICATIONS),
                "Notify",
                &(
                    APP_NAME,
                    0u32,
                    icon,
                    summary.as_str(),
                    body.as_str(),
                    Vec::<&str>::new(),
                    hints,
                    -1i32,
                ),
            )
            .await;
        match reply {
            Ok(_) => shown(&summary),
            Err(e) => failed(&format!("cannot show {summary:?}: {e}")),
        }
    }
    Err(ClientError::Connect(
        "the connection to the daemon's bus was closed".to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_become_urgency_and_icon() {
        let mut a = AlertSignal {
            severity: "critical".into(),
            kind: "gave-up".into(),
            host: "nuc".into(),
            service: "web".into(),
            summary: "gave up".into(),
            body: "5 restarts in 10m".into(),
            usec: 1,
        };
        assert_eq!(
            desktop(&a),
            (
                "nuc: web gave up".to_string(),
                "5 restarts in 10m".to_string(),
                2,
                "dialog-error"
            )
        );
        a.severity = "warning".into();
        assert_eq!(desktop(&a).2, 1);
        a.severity = "info".into();
        a.service.clear();
        let (summary, _, urgency, icon) = desktop(&a);
        assert_eq!(
            (summary.as_str(), urgency, icon),
            ("nuc: gave up", 0, "dialog-information")
        );
    }
}
