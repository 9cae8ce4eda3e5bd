//! Peer liveness: every `peer.heartbeat` this host asks each other host of
//! `[hosts]` for `GET /v1/host`, records the answer on the core's
//! [`HostBoard`](crate::hosts::HostBoard), and raises `peer-lost` and
//! `peer-back` events (stored, routed to the notification channels, and
//! logged with their MESSAGE_IDs) when the board says a peer changed.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::join_all;
use tracing::{info, warn};

use super::PeerClient;
use crate::config::PeerConfig;
use crate::control::Control;
use crate::events::Severity;
use crate::hosts::{Heartbeat, Transition};
use crate::store::now_usec;
use crate::systemd;

/// Runs until aborted. The set of peers and the interval are read from the
/// configuration at every round, so a reload takes effect at the next one.
///
/// After each round every host that answered is handed to
/// [`Control::settle`]: moves in doubt to it are settled, and when it
/// answers for the first time or after a failed heartbeat (the two hosts
/// may have been cut off from each other) claims on the same service are
/// compared.
pub async fn run(control: Control) {
    let mut answered_last: HashMap<String, bool> = HashMap::new();
    loop {
        let cfg = control.config();
        let Some(peer) = cfg.peer.clone() else {
            tokio::time::sleep(Duration::from_secs(5)).await;
            continue;
        };
        let next = tokio::time::Instant::now() + peer.heartbeat;
        let peers: Vec<(String, String)> = cfg
            .hosts
            .iter()
            .filter(|(name, _)| **name != cfg.host)
            .filter_map(|(name, h)| Some((name.clone(), h.peer.clone()?)))
            .collect();
        let names: Vec<&str> = peers.iter().map(|(n, _)| n.as_str()).collect();
        control.host_board().retain(&names);
        let beats = join_all(peers.iter().map(|(_, url)| beat(url, &peer))).await;
        let mut answered = Vec::new();
        for ((name, url), beat) in peers.iter().zip(beats) {
            let ok = matches!(beat, Heartbeat::Answer { .. });
            let before = answered_last.insert(name.clone(), ok).unwrap_or(false);
            if ok {
                answered.push((name.as_str(), !before));
            }
            if let Some(t) = control.host_board().record(name, url, beat, now_usec()) {
                announce(&control, name, url, t);
            }
        }
        join_all(
            answered
                .iter()
                .map(|(name, reunited)| control.settle(name, *reunited)),
        )
        .await;
        tokio::time::sleep_until(next).await;
    }
}

async fn beat(url: &str, peer: &PeerConfig) -> Heartbeat {
    let client = match PeerClient::new(url, peer) {
        Ok(c) => c,
        Err(e) => return Heartbeat::Failed(e.to_string()),
    };
    match client.host().await {
        Ok(h) => Heartbeat::Answer {
            version: h.version,
            load: h.load_average[0],
            config_hash: h.config_hash,
        },
        Err(e) => Heartbeat::Failed(e.to_string()),
    }
}

fn announce(control: &Control, name: &str, url: &str, t: Transition) {
    let status = control.host_board().get(name).unwrap_or_default();
    let data = serde_json::json!({
        "host": name,
        "address": url,
        "since_usec": status.since_usec,
        "error": status.error,
    });
    match t {
        Transition::Lost => {
            let summary = format!("peer {name} ({url}) stopped answering");
            warn!(message_id = %systemd::MESSAGE_PEER_LOST, stackd_peer = name, "{summary}: {}", status.error);
            control.alert_data(
                Severity::Warning,
                "peer-lost",
                "",
                &summary,
                &status.error,
                data,
            );
        }
        Transition::Back => {
            let summary = format!("peer {name} ({url}) answers again");
            info!(message_id = %systemd::MESSAGE_PEER_BACK, stackd_peer = name, "{summary}");
            control.alert_data(Severity::Info, "peer-back", "", &summary, "", data);
        }
    }
}
