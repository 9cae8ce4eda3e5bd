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
//!    `refill_every`). An alert that finds the bucket empty is counted, not
//!    sent; once a token is back the channel gets one summary alert
//!    (`kind = "notify-suppressed"`) saying how many of which kind it missed.

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
    suppressed: Suppressed,
}

#[derive(Debug, Default)]
struct Suppressed {
    count: u64,
    since_usec: u64,
    worst: Option<Severity>,
    by_kind: BTreeMap<String, u64>,
}

/// Routes alerts to channels. One per daemon; keeps the de-duplication and
/// rate-limit state in memory (a restart forgets it, which at worst lets one
/// duplicate through).
#[derive(Debug)]
pub struct Router {
    limits: Limits,
    host: String,
    channels: Vec<ChannelState>,
}

impl Router {
    pub fn new(routes: Vec<Route>, limits: Limits, host: String, now_usec: u64) -> Router {
        let full = limits.refill_every_usec() * u64::from(limits.burst);
        Router {
            limits,
            host,
            channels: routes
                .into_iter()
                .map(|route| ChannelState {
                    route,
                    recent: HashMap::new(),
                    level_usec: full,
                    last_refill_usec: now_usec,
                    suppressed: Suppressed::default(),
                })
                .collect(),
        }
    }

    /// The channels an alert goes to, in route order; a summary of
    /// suppressed alerts may follow an alert on its channel.
    pub fn route(&mut self, alert: &Alert, now_usec: u64) -> Vec<Routed> {
        let limits = self.limits;
        let window = duration_usec(limits.dedup_window);
        let key = alert_key(alert);
        let mut out = Vec::new();
        for ch in &mut self.channels {
            if !accepts(&ch.route.filter, alert) {
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
            ch.refill(limits, now_usec);
            if !ch.take(limits) {
                ch.suppressed.add(alert, now_usec);
                continue;
            }
            ch.recent.insert(what, now_usec);
            out.push(Routed {
                channel: ch.route.channel.clone(),
                dedup_key: key.clone(),
                alert: alert.clone(),
            });
            if let Some(summary) = ch.summary(limits, &self.host, now_usec) {
                out.push(summary);
            }
        }
        out
    }

    /// Summaries of suppressed alerts for every channel whose bucket has a
    /// token again. Call now and then (every `refill_every`), so a burst
    /// followed by silence is still reported.
    pub fn flush(&mut self, now_usec: u64) -> Vec<Routed> {
        let limits = self.limits;
        let host = self.host.clone();
        self.channels
            .iter_mut()
            .filter_map(|ch| {
                ch.refill(limits, now_usec);
                ch.summary(limits, &host, now_usec)
            })
            .collect()
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

    /// The summary alert for what was suppressed, if anything was and a
    /// token is there for it.
    fn summary(&mut self, limits: Limits, host: &str, now_usec: u64) -> Option<Routed> {
        if self.suppressed.count == 0 || !self.take(limits) {
            return None;
        }
        let s = std::mem::take(&mut self.suppressed);
        let kinds = s
            .by_kind
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join("\n");
        let alert = Alert {
            severity: s.worst.unwrap_or(Severity::Info),
            kind: SUPPRESSED_KIND.to_string(),
            host: host.to_string(),
            service: String::new(),
            summary: format!(
                "{} {} not sent to {} (rate limit)",
                s.count,
                if s.count == 1 { "alert" } else { "alerts" },
                self.route.channel
            ),
            body: format!(
                "Alerts suppressed since {} by kind:\n{kinds}\n\
                 See them all with \"journalctl -u stackd\".",
                super::rfc3339(s.since_usec)
            ),
            usec: now_usec,
            fields: Vec::new(),
        };
        Some(Routed {
            channel: self.route.channel.clone(),
            dedup_key: format!("suppressed:{}:{}", s.since_usec, now_usec),
            alert,
        })
    }
}

impl Suppressed {
    fn add(&mut self, alert: &Alert, now_usec: u64) {
        if self.count == 0 {
            self.since_usec = now_usec;
        }
        self.count += 1;
        self.worst = self.worst.max(Some(alert.severity));
        *self.by_kind.entry(alert.kind.clone()).or_default() += 1;
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
mod tests {
    use super::*;
    use crate::config::Severity as CS;

    const S: u64 = 1_000_000;

    fn filter(min: CS, services: &[&str], kinds: &[&str]) -> ChannelFilter {
        ChannelFilter {
            min_severity: min,
            services: services.iter().map(|s| s.to_string()).collect(),
            kinds: kinds.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn alert(sev: Severity, kind: &str, service: &str, summary: &str, usec: u64) -> Alert {
        Alert {
            severity: sev,
            kind: kind.into(),
            host: "nuc".into(),
            service: service.into(),
            summary: summary.into(),
            body: String::new(),
            usec,
            fields: Vec::new(),
        }
    }

    #[test]
    fn filters() {
        use Severity::*;
        // (min, services, kinds, alert severity, kind, service, accepted)
        type Case<'a> = (
            CS,
            &'a [&'a str],
            &'a [&'a str],
            Severity,
            &'a str,
            &'a str,
            bool,
        );
        let cases: &[Case] = &[
            (CS::Warning, &[], &[], Warning, "unhealthy", "web", true),
            (CS::Warning, &[], &[], Critical, "unhealthy", "web", true),
            (CS::Warning, &[], &[], Info, "recovered", "", false),
            (CS::Info, &[], &[], Info, "recovered", "", true),
            (CS::Critical, &[], &[], Warning, "gave-up", "web", false),
            (CS::Info, &["web"], &[], Info, "unhealthy", "web", true),
            (CS::Info, &["web"], &[], Info, "unhealthy", "db", false),
            // Host-wide alerts pass a service list.
            (CS::Info, &["web"], &[], Warning, "docker-lost", "", true),
            (CS::Info, &[], &["gave-up"], Warning, "gave-up", "web", true),
            (
                CS::Info,
                &[],
                &["gave-up"],
                Warning,
                "unhealthy",
                "web",
                false,
            ),
            (
                CS::Info,
                &["db"],
                &["gave-up"],
                Warning,
                "gave-up",
                "web",
                false,
            ),
            (
                CS::Warning,
                &["web"],
                &["gave-up"],
                Info,
                "gave-up",
                "web",
                false,
            ),
        ];
        for (i, (min, services, kinds, sev, kind, service, want)) in cases.iter().enumerate() {
            let got = accepts(
                &filter(*min, services, kinds),
                &alert(*sev, kind, service, "x", 1),
            );
            assert_eq!(got, *want, "case {i}: {cases:?}", cases = cases[i]);
        }
    }

    fn router(limits: Limits) -> Router {
        Router::new(
            vec![
                Route {
                    channel: "journal".into(),
                    filter: filter(CS::Info, &[], &[]),
                },
                Route {
                    channel: "email".into(),
                    filter: filter(CS::Warning, &[], &[]),
                },
                Route {
                    channel: "webhook.ops".into(),
                    filter: filter(CS::Info, &["db"], &[]),
                },
            ],
            limits,
            "nuc".into(),
            0,
        )
    }

    fn channels(out: &[Routed]) -> Vec<String> {
        out.iter()
            .map(|r| format!("{}:{}", r.channel, r.alert.kind))
            .collect()
    }

    #[test]
    fn routes_to_every_channel_that_accepts() {
        let mut r = router(Limits::default());
        let cases: &[(Alert, &[&str])] = &[
            (
                alert(Severity::Warning, "unhealthy", "web", "a", 1),
                &["journal:unhealthy", "email:unhealthy"],
            ),
            (
                alert(Severity::Info, "recovered", "", "b", 2),
                &["journal:recovered", "webhook.ops:recovered"],
            ),
            (
                alert(Severity::Critical, "gave-up", "db", "c", 3),
                &["journal:gave-up", "email:gave-up", "webhook.ops:gave-up"],
            ),
        ];
        for (a, want) in cases {
            let out = r.route(a, a.usec);
            assert_eq!(channels(&out), *want, "{a:?}");
            assert!(out.iter().all(|o| o.dedup_key == alert_key(a)));
        }
    }

    #[test]
    fn dedups_within_the_window_per_channel() {
        let limits = Limits {
            dedup_window: Duration::from_secs(60),
            ..Limits::default()
        };
        let mut r = router(limits);
        let a = |usec, summary: &str| alert(Severity::Warning, "unhealthy", "web", summary, usec);
        // (time, summary, channels it reaches)
        let cases: &[(u64, &str, usize)] = &[
            (0, "probe failed", 2),
            (10 * S, "probe failed", 0),    // same, inside the window
            (20 * S, "probe timed out", 2), // another summary
            (59 * S, "probe failed", 0),
            (60 * S, "probe failed", 2), // the window has passed
            (61 * S, "probe failed", 0),
        ];
        for (at, summary, n) in cases {
            let out = r.route(&a(*at, summary), *at);
            assert_eq!(out.len(), *n, "at {at} {summary}: {out:?}");
        }
        // Another service or kind is not a duplicate.
        assert_eq!(
            r.route(
                &alert(Severity::Warning, "unhealthy", "db", "probe failed", 62 * S),
                62 * S
            )
            .len(),
            3
        );
        assert_eq!(
            r.route(
                &alert(Severity::Warning, "gave-up", "web", "probe failed", 63 * S),
                63 * S
            )
            .len(),
            2
        );
    }

    #[test]
    fn rate_limits_and_summarises() {
        let limits = Limits {
            dedup_window: Duration::from_secs(1),
            burst: 3,
            refill_every: Duration::from_secs(10),
        };
        let mut r = Router::new(
            vec![Route {
                channel: "email".into(),
                filter: filter(CS::Info, &[], &[]),
            }],
            limits,
            "nuc".into(),
            0,
        );
        let a = |i: u64, sev| alert(sev, "task-failed", "web", &format!("task {i}"), i);
        // A burst of 8 at t=0: 3 pass, 5 are counted.
        let mut sent = 0;
        for i in 0..8 {
            let sev = if i == 6 {
                Severity::Critical
            } else {
                Severity::Warning
            };
            sent += r.route(&a(i, sev), 0).len();
        }
        assert_eq!(sent, 3);
        // Nothing to flush before a token is back.
        assert!(r.flush(9 * S).is_empty());
        // A token is back: one summary, with the worst severity.
        let out = r.flush(10 * S);
        assert_eq!(out.len(), 1);
        let s = &out[0].alert;
        assert_eq!(s.kind, SUPPRESSED_KIND);
        assert_eq!(s.severity, Severity::Critical);
        assert_eq!(s.summary, "5 alerts not sent to email (rate limit)");
        assert!(s.body.contains("task-failed: 5"), "{}", s.body);
        assert!(r.flush(30 * S).is_empty(), "the summary is sent once");
        // After a quiet spell the whole burst is there again, no more.
        let mut sent = 0;
        for i in 100..110 {
            sent += r.route(&a(i, Severity::Warning), 100 * S).len();
        }
        assert_eq!(sent, 3);
    }

    #[test]
    fn summary_follows_an_alert_when_tokens_allow() {
        let limits = Limits {
            dedup_window: Duration::from_secs(1),
            burst: 1,
            refill_every: Duration::from_secs(10),
        };
        let mut r = Router::new(
            vec![Route {
                channel: "journal".into(),
                filter: filter(CS::Info, &[], &[]),
            }],
            limits,
            "nuc".into(),
            0,
        );
        let a = |i: u64| alert(Severity::Warning, "unhealthy", "web", &format!("{i}"), i);
        assert_eq!(r.route(&a(1), 0).len(), 1);
        assert_eq!(r.route(&a(2), S).len(), 0);
        // 25 s later: two tokens' worth of time but the bucket holds one,
        // so the alert goes and the summary waits for the next token.
        assert_eq!(channels(&r.route(&a(3), 25 * S)), ["journal:unhealthy"]);
        let out = r.flush(35 * S);
        assert_eq!(channels(&out), ["journal:notify-suppressed"]);
        assert_eq!(
            out[0].alert.summary,
            "1 alert not sent to journal (rate limit)"
        );
    }

    #[test]
    fn alert_key_is_stable_and_distinct() {
        let a = alert(Severity::Warning, "unhealthy", "web", "x", 5);
        assert_eq!(alert_key(&a), alert_key(&a.clone()));
        let mut b = a.clone();
        b.usec = 6;
        assert_ne!(alert_key(&a), alert_key(&b));
        let mut c = a.clone();
        c.summary = "y".into();
        assert_ne!(alert_key(&a), alert_key(&c));
        assert!(alert_key(&a).starts_with("alert:5:"));
    }
}
