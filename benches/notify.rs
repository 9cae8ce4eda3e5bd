//! Figure for notifications: event-to-email-accepted latency.
//!
//! 100 alerts, one at a time, from `Event::Alert` on the bus to the local
//! SMTP server (aiosmtpd, tests/helpers/smtp_sink.py) having accepted the
//! message: router, outbox push (a durable SQLite write), worker wake-up,
//! SMTP conversation. "Accepted" is the time the server wrote the message,
//! just before its 250 reply (the file's mtime). Then the same 100 as one
//! burst. Goal: p99 of the one-at-a-time run < 500 ms.
//!
//! Run it with `cargo bench --bench notify`. Without `--bench` (as in
//! `cargo test --all-targets`) it does nothing.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/smtp.rs"]
mod smtp;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use stackd::config::{ChannelFilter, EmailConfig, NotifyConfig, Severity};
use stackd::events::{self, Alert, Event};
use stackd::notify::{self, Limits, Options};
use stackd::store::Store;

const ALERTS: usize = 100;
const GOAL_P99: Duration = Duration::from_millis(500);

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("notify benchmark skipped: run it with `cargo bench --bench notify`");
        return;
    }
    if !smtp::have_aiosmtpd() {
        println!("notify benchmark skipped: python3 with aiosmtpd is missing");
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ok = rt.block_on(run());
    std::process::exit(if ok { 0 } else { 1 });
}

async fn run() -> bool {
    let tmp = tempfile::tempdir().unwrap();
    let port = smtp::free_port();
    let sink = smtp::SmtpSink::start(port, &tmp.path().join("mail"));
    let filter = ChannelFilter {
        min_severity: Severity::Warning,
        services: vec![],
        kinds: vec![],
    };
    let config = NotifyConfig {
        min_severity: Severity::Warning,
        email: Some(EmailConfig {
            smtp: format!("smtp://127.0.0.1:{port}"),
            smtp_host: "127.0.0.1".into(),
            smtp_port: port,
            implicit_tls: false,
            starttls: None,
            from: "stackd@bench.example".into(),
            to: vec!["ops@example.com".into()],
            username: None,
            password_file: None,
            filter,
        }),
        webhooks: BTreeMap::new(),
        desktop: None,
    };
    let store = Arc::new(Store::open(&tmp.path().join("state")).unwrap());
    let bus = events::channel();
    // No rate limit in the way: the figure is the path, not the policy.
    let opts = Options {
        limits: Limits {
            burst: 10_000,
            ..Limits::default()
        },
        ..Options::default()
    };
    let handle = notify::spawn_with(&config, "bench".into(), store, bus.clone(), opts);

    let alert = |i: usize| Alert {
        severity: events::Severity::Warning,
        kind: "unhealthy".into(),
        host: "bench".into(),
        service: format!("svc{i}"),
        summary: format!("probe {i} failed"),
        body: "GET /health answered 503".into(),
        usec: stackd::store::now_usec(),
        fields: Vec::new(),
    };

    // One at a time.
    let mut one = Vec::new();
    for i in 0..ALERTS {
        let sent = SystemTime::now();
        bus.send(Event::Alert(alert(i))).unwrap();
        sink.wait_for(i + 1, Duration::from_secs(30)).await;
        let file = sink.files()[i].clone();
        let accepted = std::fs::metadata(file).unwrap().modified().unwrap();
        one.push(accepted.duration_since(sent).unwrap_or_default());
    }

    // A burst.
    let sent = SystemTime::now();
    for i in ALERTS..2 * ALERTS {
        bus.send(Event::Alert(alert(i))).unwrap();
    }
    sink.wait_for(2 * ALERTS, Duration::from_secs(120)).await;
    let burst: Vec<Duration> = sink.files()[ALERTS..]
        .iter()
        .map(|f| {
            let t = std::fs::metadata(f).unwrap().modified().unwrap();
            t.duration_since(sent).unwrap_or_default()
        })
        .collect();
    handle.shutdown().await;

    let (p50, p99, max) = percentiles(&mut one);
    let (b50, b99, bmax) = percentiles(&mut burst.clone());
    let pass = p99 < GOAL_P99;
    println!();
    println!("{:<58} {:>10}  goal", "figure", "value");
    println!(
        "{:<58} {:>10}  < {} ms {}",
        format!("event→email accepted, one at a time, p99 ({ALERTS} alerts)"),
        ms(p99),
        GOAL_P99.as_millis(),
        if pass { "PASS" } else { "FAIL" }
    );
    println!("{:<58} {:>10}", "  p50", ms(p50));
    println!("{:<58} {:>10}", "  max", ms(max));
    println!(
        "{:<58} {:>10}",
        format!("burst of {ALERTS}: last accepted (p100) after"),
        ms(bmax)
    );
    println!(
        "{:<58} {:>10}",
        "  burst p50 / p99",
        format!("{} / {}", ms(b50), ms(b99))
    );
    pass
}

#[allow(
    clippy::cast_possible_truncation,
    reason = "an index into a short list, computed in f64"
)]
fn percentiles(v: &mut [Duration]) -> (Duration, Duration, Duration) {
    v.sort();
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    (at(0.50), at(0.99), v[v.len() - 1])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
