//! The router: which channels get an alert, once.
//!
//! Pure: no I/O and no clock of its own (every call takes `now_usec`), so
//! the rules are tested on tables of cases. For each channel, in order:
//!
//! 1. filter: the alert's severity is at least the channel's minimum (which
//!    defaults to `[notify] min_severity` in the config), its service is
//!    listed (an empty list means every service; host-wide alerts, with an
//!    empty service, pass any service list: they concern every service on
//!    the host), and its kind is listed (empty: every kind);
//! 2. de-duplication: the same kind + service + summary on the same channel
//!    within `dedup_window` of the last one let through is dropped;
//! 3. rate limit: a token bucket per channel (`burst` tokens, one more every
//!    `refill_every`). An alert that finds the bucket empty is *held*, not
//!    dropped: the caller keeps it in the store's outbox as held back
//!    ([`Routed::held`]), and once a token is back [`Router::summaries_due`]
//!    names the channel, whose held alerts then go as one summary alert
//!    (`kind = "notify-suppressed"`, built by [`summary`]) listing kinds,
//!    services and counts. The count of held alerts per channel is restored
//!    from the store at start ([`Router::restore_held`]), so a restart
//!    sends the summary instead of forgetting it.
//!
//! The journal is the record of last resort: critical alerts reach it
//! whatever de-duplication and rate limit say (a refused reload, which is
//! critical, is always logged with its reason); both still apply to every
//! other channel.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::config::{self, ChannelFilter};
use crate::events::{Alert, Severity};

/// The kind of the summary alert that reports rate-limited alerts.
pub const SUPPRESSED_KIND: &str = "notify-suppressed";

/// De-duplication and rate-limit settings, the same for every channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub dedup_window: Duration,
    /// Alerts a channel may take at once.
    pub burst: u32,
    /// One more token after each of these.
    pub refill_every: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            dedup_window: Duration::from_secs(600),
            burst: 10,
            refill_every: Duration::from_secs(60),
        }
    }
}

/// A channel as the router sees it: a name and what it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub channel: String,
    pub filter: ChannelFilter,
}

/// One alert accepted by one channel: what goes into the outbox.
#[derive(Debug, Clone, PartialEq)]
pub struct Routed {
    pub channel: String,
    /// Identifies the alert (not the channel): the same alert routed again
    /// (a replay after a restart) gets the same key, and the outbox keeps
    /// one item per (channel, key).
    pub dedup_key: String,
    pub alert: Alert,
    /// Held back by the rate limit: keep it for the summary, do not send.
    pub held: bool,
}

#[derive(Debug)]
struct ChannelState {
    route: Route,
    /// (kind, service, summary) → when it was last let through.
    recent: HashMap<(String, String, String), u64>,
    /// Bucket level in microseconds of refill time; one token costs
    /// `refill_every`. Integer arithmetic, no drift.
    level_usec: u64,
    last_refill_usec: u64,
    /// Alerts held back and not yet summarised.
    held: u64,
}

/// Routes alerts to channels. One per daemon; keeps the de-duplication and
/// rate-limit state in memory (a restart forgets it, which at worst lets one
/// duplicate through); what it held back is in the store.
#[derive(Debug)]
pub struct Router {
    limits: Limits,
    channels: Vec<ChannelState>,
}

impl Router {
    pub fn new(routes: Vec<Route>, limits: Limits, now_usec: u64) -> Router {
        let full = limits.refill_every_usec() * u64::from(limits.burst);
        Router {
            limits,
            channels: routes
                .into_iter()
                .map(|route| ChannelState {
                    route,
                    recent: HashMap::new(),
                    level_usec: full,
                    last_refill_usec: now_usec,
                    held: 0,
                })
                .collect(),
        }
    }

    /// The channels an alert goes to, in route order, each marked sent or
    /// held back.
    pub fn route(&mut self, alert: &Alert, now_usec: u64) -> Vec<Routed> {
        let limits = self.limits;
        let window = duration_usec(limits.dedup_window);
        let key = alert_key(alert);
        let mut out = Vec::new();
        for ch in &mut self.channels {
            if !accepts(&ch.route.filter, alert) {
                continue;
            }
            let channel = ch.route.channel.clone();
            let routed = |held| Routed {
                channel: channel.clone(),
                dedup_key: key.clone(),
                alert: alert.clone(),
                held,
            };
            if channel == super::JOURNAL && alert.severity == Severity::Critical {
                out.push(routed(false));
                continue;
            }
            ch.recent
                .retain(|_, at| now_usec.saturating_sub(*at) < window);
            let what = (
                alert.kind.clone(),
                alert.service.clone(),
                alert.summary.clone(),
            );
            if ch.recent.contains_key(&what) {
                continue;
            }
            ch.recent.insert(what, now_usec);
            ch.refill(limits, now_usec);
            if ch.take(limits) {
                out.push(routed(false));
            } else {
                ch.held += 1;
                out.push(routed(true));
            }
        }
        out
    }

    /// Counts `count` held alerts of `channel` found in the store at start.
    pub fn restore_held(&mut self, channel: &str, count: u64) {
        if let Some(ch) = self
            .channels
            .iter_mut()
            .find(|c| c.route.channel == channel)
        {
            ch.held += count;
        }
    }

    /// The channels holding alerts back whose bucket has a token again:
    /// their summary is due. Call now and then (every `refill_every`) and
    /// after routing, so a burst followed by silence is still reported;
    /// call [`Router::summarised`] once a summary is queued.
    pub fn summaries_due(&mut self, now_usec: u64) -> Vec<String> {
        let limits = self.limits;
        self.channels
            .iter_mut()
            .filter_map(|ch| {
                ch.refill(limits, now_usec);
                (ch.held > 0 && ch.level_usec >= limits.refill_every_usec())
                    .then(|| ch.route.channel.clone())
            })
            .collect()
    }

    /// `channel`'s summary is queued: it costs a token and the count starts
    /// over.
    pub fn summarised(&mut self, channel: &str) {
        let limits = self.limits;
        if let Some(ch) = self
            .channels
            .iter_mut()
            .find(|c| c.route.channel == channel)
        {
            ch.take(limits);
            ch.held = 0;
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

impl Limits {
    fn refill_every_usec(self) -> u64 {
        duration_usec(self.refill_every).max(1)
    }
}

impl ChannelState {
    fn refill(&mut self, limits: Limits, now_usec: u64) {
        let full = limits.refill_every_usec() * u64::from(limits.burst);
        let elapsed = now_usec.saturating_sub(self.last_refill_usec);
        self.level_usec = self.level_usec.saturating_add(elapsed).min(full);
        self.last_refill_usec = self.last_refill_usec.max(now_usec);
    }

    fn take(&mut self, limits: Limits) -> bool {
        let cost = limits.refill_every_usec();
        if self.level_usec >= cost {
            self.level_usec -= cost;
            true
        } else {
            false
        }
    }
}

/// Held alerts listed one by one in a summary; the rest are counted.
const SUMMARY_LINES: usize = 50;

/// The summary alert for the alerts `held` back on `channel`: the worst
/// severity, the one service if they all concern one, and a body that
/// counts them by kind and by service and lists them (the first
/// [`SUMMARY_LINES`]).
pub fn summary(host: &str, channel: &str, held: &[Alert], now_usec: u64) -> Alert {
    let mut by_kind: BTreeMap<&str, u64> = BTreeMap::new();
    let mut by_service: BTreeMap<&str, u64> = BTreeMap::new();
    for a in held {
        *by_kind.entry(a.kind.as_str()).or_default() += 1;
        let service = if a.service.is_empty() {
            "(the host)"
        } else {
            a.service.as_str()
        };
        *by_service.entry(service).or_default() += 1;
    }
    let count = |m: &BTreeMap<&str, u64>| {
        m.iter()
            .map(|(k, n)| format!("  {k}: {n}"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let since = held.iter().map(|a| a.usec).min().unwrap_or(now_usec);
    let mut lines: Vec<String> = held
        .iter()
        .take(SUMMARY_LINES)
        .map(|a| {
            format!(
                "  {} {} {} {}{}{}",
                super::rfc3339(a.usec),
                a.severity.as_str(),
                a.kind,
                if a.service.is_empty() {
                    ""
                } else {
                    a.service.as_str()
                },
                if a.service.is_empty() { "" } else { ": " },
                a.summary
            )
        })
        .collect();
    if held.len() > SUMMARY_LINES {
        lines.push(format!("  ... and {} more", held.len() - SUMMARY_LINES));
    }
    let services: Vec<&&str> = by_service.keys().collect();
    Alert {
        severity: held
            .iter()
            .map(|a| a.severity)
            .max()
            .unwrap_or(Severity::Info),
        kind: SUPPRESSED_KIND.to_string(),
        host: host.to_string(),
        service: match (services.as_slice(), held.first()) {
            ([_], Some(a)) => a.service.clone(),
            _ => String::new(),
        },
        summary: format!(
            "{} {} held back from {channel} by the rate limit",
            held.len(),
            if held.len() == 1 { "alert" } else { "alerts" },
        ),
        body: format!(
            "Alerts held back since {}:\n{}\n\nBy kind:\n{}\n\nBy service:\n{}{}",
            super::rfc3339(since),
            lines.join("\n"),
            count(&by_kind),
            count(&by_service),
            if channel == super::JOURNAL {
                ""
            } else {
                "\n\nThe journal has each of them: journalctl -u stackd"
            }
        ),
        usec: now_usec,
        fields: Vec::new(),
    }
}

/// Does `filter` let `alert` through?
pub fn accepts(filter: &ChannelFilter, alert: &Alert) -> bool {
    severity_from_config(filter.min_severity) <= alert.severity
        && (filter.services.is_empty()
            || alert.service.is_empty()
            || filter.services.contains(&alert.service))
        && (filter.kinds.is_empty() || filter.kinds.contains(&alert.kind))
}

pub fn severity_from_config(s: config::Severity) -> Severity {
    match s {
        config::Severity::Info => Severity::Info,
        config::Severity::Warning => Severity::Warning,
        config::Severity::Critical => Severity::Critical,
    }
}

/// The alert's identity: its time, kind, service and summary.
pub fn alert_key(alert: &Alert) -> String {
    let mut h = Sha256::new();
    for part in [
        alert.host.as_bytes(),
        alert.kind.as_bytes(),
        alert.service.as_bytes(),
        alert.summary.as_bytes(),
    ] {
        h.update(part);
        h.update([0]);
    }
    let digest = h.finalize();
    format!("alert:{}:{}", alert.usec, super::hex(&digest[..8]))
}

fn duration_usec(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
