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
    let cases: &[Case<'_>] = &[
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

fn sent(out: &[Routed]) -> usize {
    out.iter().filter(|r| !r.held).count()
}

#[test]
fn rate_limits_hold_back_and_summarise() {
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
        0,
    );
    let a = |i: u64, sev| alert(sev, "task-failed", "web", &format!("task {i}"), i);
    // A burst of 8 at t=0: 3 are sent, 5 are held back, none is lost.
    let mut routed = Vec::new();
    for i in 0..8 {
        let sev = if i == 6 {
            Severity::Critical
        } else {
            Severity::Warning
        };
        routed.extend(r.route(&a(i, sev), 0));
    }
    assert_eq!(routed.len(), 8);
    assert_eq!(sent(&routed), 3);
    assert!(routed[3..].iter().all(|x| x.held));
    // Nothing to summarise before a token is back.
    assert!(r.summaries_due(9 * S).is_empty());
    // A token is back: the channel's summary is due until it is queued.
    assert_eq!(r.summaries_due(10 * S), ["email"]);
    assert_eq!(r.summaries_due(10 * S), ["email"]);
    r.summarised("email");
    assert!(
        r.summaries_due(10 * S).is_empty(),
        "the summary is sent once"
    );
    // The summary took the token: the next alert waits for another one.
    assert!(r.route(&a(20, Severity::Warning), 10 * S)[0].held);
    // After a quiet spell the whole burst is there again, no more.
    r.summarised("email");
    let mut n = 0;
    for i in 100..110 {
        n += sent(&r.route(&a(i, Severity::Warning), 100 * S));
    }
    assert_eq!(n, 3);
}

#[test]
fn held_counts_survive_in_the_store_and_are_restored() {
    let limits = Limits {
        dedup_window: Duration::from_secs(1),
        burst: 2,
        refill_every: Duration::from_secs(10),
    };
    let mut r = router(limits);
    assert!(r.summaries_due(0).is_empty());
    r.restore_held("email", 7);
    r.restore_held("webhook.nope", 1);
    // A fresh router has full buckets: the summary is due at once.
    assert_eq!(r.summaries_due(0), ["email"]);
}

#[test]
fn critical_alerts_always_reach_the_journal() {
    let limits = Limits {
        dedup_window: Duration::from_secs(600),
        burst: 1,
        refill_every: Duration::from_secs(60),
    };
    let mut r = router(limits);
    let gave_up = alert(Severity::Critical, "gave-up", "web", "giving up", 1);
    for i in 0..5 {
        let out = r.route(&gave_up, i * S);
        let journal: Vec<_> = out.iter().filter(|o| o.channel == "journal").collect();
        assert_eq!(journal.len(), 1, "{i}: {out:?}");
        assert!(!journal[0].held, "{i}");
        // Email: the first is sent, the same one again is a duplicate.
        let email = out.iter().filter(|o| o.channel == "email").count();
        assert_eq!(email, usize::from(i == 0), "{i}: {out:?}");
    }
    // A warning on the journal still meets the rate limit.
    let w = |i: u64| alert(Severity::Warning, "unhealthy", "db", &format!("{i}"), i);
    assert!(!r.route(&w(10), 10 * S)[0].held);
    assert!(r.route(&w(11), 11 * S)[0].held);
}

#[test]
fn a_summary_counts_kinds_and_services_and_lists_the_alerts() {
    let held = vec![
        alert(Severity::Warning, "task-failed", "web", "deploy failed", S),
        alert(Severity::Critical, "gave-up", "db", "giving up", 2 * S),
        alert(
            Severity::Warning,
            "task-failed",
            "web",
            "deploy failed again",
            3 * S,
        ),
        alert(Severity::Info, "docker-back", "", "Docker is back", 4 * S),
    ];
    let s = summary("nuc", "email", &held, 10 * S);
    assert_eq!(s.kind, SUPPRESSED_KIND);
    assert_eq!(s.severity, Severity::Critical);
    assert_eq!(s.service, "");
    assert_eq!(s.summary, "4 alerts held back from email by the rate limit");
    for part in [
        "task-failed: 2",
        "gave-up: 1",
        "web: 2",
        "db: 1",
        "(the host): 1",
        "critical gave-up db: giving up",
        "1970-01-01T00:00:03Z warning task-failed web: deploy failed again",
        "journalctl -u stackd",
    ] {
        assert!(s.body.contains(part), "{part:?} in\n{}", s.body);
    }
    let one = summary("nuc", "journal", &held[..1], 10 * S);
    assert_eq!(one.service, "web");
    assert_eq!(one.severity, Severity::Warning);
    assert!(!one.body.contains("journalctl"), "{}", one.body);
    let many: Vec<Alert> = (0..60)
        .map(|i| alert(Severity::Warning, "unhealthy", "web", &format!("{i}"), i))
        .collect();
    assert!(summary("nuc", "email", &many, 0)
        .body
        .contains("... and 10 more"));
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
