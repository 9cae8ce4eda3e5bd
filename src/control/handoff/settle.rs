//! Settling with a host that answers again: moves in doubt, and services
//! of one host that both want running ([`claim_wins`]).

use std::time::Duration;

use tracing::info;

use super::{single_host, Control, PeerFailure, PeerService, Shared};
use crate::config::{Config, PeerConfig};
use crate::events::Severity;
use crate::state::ActiveState;
use crate::store::{DesiredState, Origin};
use crate::tasks::TaskKind;

/// How long a host may stay silent while it runs a move's task before the
/// move is taken for in doubt: as long as the heartbeat takes to call it
/// lost (`hosts::LOST_AFTER` beats), plus one request's timeout.
pub(super) fn doubt_after(peer: &PeerConfig) -> Duration {
    peer.heartbeat * crate::hosts::LOST_AFTER + peer.timeout
}

/// What another host said when asked about a move in doubt.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
    /// It runs the service: the move completed.
    Moved,
    /// It neither wants nor runs it: the move did not happen.
    NotThere,
    /// It wants it but is still starting it, or did not answer: ask again.
    Unknown,
}

/// Reads a peer's answer about a service moved to it.
pub(super) fn verdict(answer: &Result<Option<PeerService>, PeerFailure>) -> Verdict {
    match answer {
        Ok(Some(s)) if s.desired_state == "running" && s.active_state == ActiveState::Active => {
            Verdict::Moved
        }
        Ok(Some(s))
            if s.desired_state == "running" || s.active_state == ActiveState::Activating =>
        {
            Verdict::Unknown
        }
        Ok(_) => Verdict::NotThere,
        Err(PeerFailure::Refused { kind, .. }) if kind == "NoSuchService" => Verdict::NotThere,
        Err(_) => Verdict::Unknown,
    }
}

/// Of two hosts that both want a service of one host running after they
/// saw each other again, the one that keeps it: the newer claim (the
/// desired state's time; `auto_start` counts as 0), the smaller host name
/// when both are equally old. Both hosts compute the same answer.
pub fn claim_wins(mine: (u64, &str), theirs: (u64, &str)) -> bool {
    match mine.0.cmp(&theirs.0) {
        std::cmp::Ordering::Greater => true,
        std::cmp::Ordering::Less => false,
        std::cmp::Ordering::Equal => mine.1 < theirs.1,
    }
}

impl Control {
    /// What this host does when `host` answers: settle every move to it
    /// that is in doubt, and, when `reunited` (it had stopped answering,
    /// or this is its first answer since this daemon started), look for
    /// services of one host that both want running. The peer heartbeat
    /// calls it after each answer.
    ///
    /// A conflict is resolved by [`claim_wins`]: the newer claim keeps the
    /// service, the other host stops it (desired "migrate to WINNER") and
    /// raises a `handoff-conflict` alert naming both claims.
    pub async fn settle(&self, host: &str, reunited: bool) {
        let cfg = self.config();
        let Ok((peer, url)) = self.shared.link(&cfg, host) else {
            return;
        };
        let Ok(peers) = self.shared.peers() else {
            return;
        };
        let said = self.shared.store.all_desired().unwrap_or_default();
        for (name, d) in &said {
            if d.in_doubt() && d.peer.as_deref() == Some(host) && !self.queue().busy(name) {
                let answer = peers.service(&peer, &url, name).await;
                self.settle_move(&cfg, name, host, verdict(&answer)).await;
            }
        }
        if !reunited {
            return;
        }
        for svc in Shared::local_services(&cfg, &said) {
            let name = svc.name.as_str();
            let mine = said.get(name);
            let (wanted, _) = Shared::desired(svc, mine);
            if !single_host(svc) || wanted != DesiredState::Running || self.queue().busy(name) {
                continue;
            }
            let Ok(Some(theirs)) = peers.service(&peer, &url, name).await else {
                continue;
            };
            if theirs.desired_state != "running" {
                continue;
            }
            let since = mine.filter(|d| d.is_decision()).map_or(0, |d| d.since_usec);
            if claim_wins((since, &cfg.host), (theirs.desired_since_usec, host)) {
                info!(
                    stackd_service = name,
                    "{host} wants {name} running too; this host's claim is newer, {host} stops it"
                );
                continue;
            }
            self.resolve_conflict(&cfg, name, host, since, theirs.desired_since_usec);
        }
    }

    /// Settles one move in doubt to `host` by what `host` said.
    pub(super) async fn settle_move(&self, cfg: &Config, name: &str, host: &str, verdict: Verdict) {
        let me = cfg.host.as_str();
        match verdict {
            Verdict::Unknown => {}
            Verdict::Moved => {
                if !self.store_moved(name, DesiredState::Stopped, host) {
                    return;
                }
                self.shared.alert(
                    Severity::Info,
                    "migrate-settled",
                    name,
                    &format!("{name} runs on {host}: its move from {me} completed"),
                    &format!("{host} answered again and runs {name}; the move that was in doubt is done, {name} stays stopped on {me}."),
                    serde_json::json!({ "from": me, "to": host, "moved": true }),
                );
            }
            Verdict::NotThere => {
                let Some(svc) = cfg.service(name) else {
                    return;
                };
                // Nobody else may run it either (the hand-off rule).
                if let Err(e) = self.shared.check_peers(cfg, svc, &[], false).await {
                    info!(
                        stackd_service = name,
                        "the move to {host} did not happen, but {name} cannot start here yet: {e}"
                    );
                    return;
                }
                if !self.store_moved(name, DesiredState::Running, host) {
                    return;
                }
                let origin = Origin::MoveLost(host.to_string());
                let task = self.queue().submit(TaskKind::Deploy, name, &origin);
                self.shared.alert(
                    Severity::Warning,
                    "migrate-settled",
                    name,
                    &format!("{name}'s move to {host} did not happen; it starts on {me} again"),
                    &format!(
                        "{host} answered again and does not run {name}: the move that was in doubt did not complete. {name} starts on {me} again{}.",
                        match &task {
                            Ok(t) => format!(" (task {})", t.id),
                            Err(e) => format!(", but the task was refused: {e}; run `stackctl start {name}` on {me}"),
                        }
                    ),
                    serde_json::json!({ "from": me, "to": host, "moved": false }),
                );
            }
        }
    }

    /// Stores `state` for `name` as set by its move with `host`; false,
    /// with a warning, when the store refuses (and then nothing follows).
    fn store_moved(&self, name: &str, state: DesiredState, host: &str) -> bool {
        let stored = self.shared.store.set_moved(name, state, host);
        if let Err(e) = &stored {
            tracing::warn!(stackd_service = name, "cannot store the desired state: {e}");
        }
        stored.is_ok()
    }

    /// This host lost a conflict found on heal: it stops `name`, which
    /// `winner` keeps.
    pub(super) fn resolve_conflict(
        &self,
        cfg: &Config,
        name: &str,
        winner: &str,
        mine: u64,
        theirs: u64,
    ) {
        let me = cfg.host.as_str();
        if !self.store_moved(name, DesiredState::Stopped, winner) {
            return;
        }
        let origin = Origin::HealConflict(winner.to_string());
        let task = self.queue().submit(TaskKind::Stop, name, &origin);
        let when = |usec: u64| {
            if usec == 0 {
                "by auto_start".to_string()
            } else {
                let ago = crate::store::now_usec().saturating_sub(usec) as f64 / 1e6;
                format!("since {ago:.1} s ago")
            }
        };
        self.shared.alert(
            Severity::Warning,
            "handoff-conflict",
            name,
            &format!("{name} was wanted running on {me} and on {winner}; {winner} keeps it, {me} stops it"),
            &format!(
                "Once {me} and {winner} saw each other again both wanted {name}, a service of one host, running \
                 ({me} {}, {winner} {}). The newer claim wins (ties: the smaller host name), so {name} stops on {me}{}. \
                 If it belongs on {me}, move it back with `stackctl migrate {name} {me}` on {winner}.",
                when(mine),
                when(theirs),
                match &task {
                    Ok(t) => format!(" (task {})", t.id),
                    Err(e) => format!(", but the stop was refused: {e}"),
                }
            ),
            serde_json::json!({
                "winner": winner,
                "loser": me,
                "loser_since_usec": mine,
                "winner_since_usec": theirs,
                "rule": "the newer claim wins; ties: the smaller host name",
            }),
        );
    }
}
