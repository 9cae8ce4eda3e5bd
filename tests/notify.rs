//! Notifications end to end with real parts: a real SMTP server (aiosmtpd,
//! tests/helpers/smtp_sink.py) and a real HTTP listener. These drive the
//! notify module's public API directly (spawn, the event bus, the store);
//! the daemon and stackctl wiring is tested where it is added.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/http.rs"]
mod http;
#[path = "common/smtp.rs"]
mod smtp;

use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use http::http_listener;
use stackd::config::{
    ChannelFilter, EmailConfig, NotifyConfig, Severity, WebhookConfig, WebhookFormat,
};
use stackd::events::{self, Alert, Event};
use stackd::notify::{self, router::alert_key, Backoff, Options};
use stackd::store::Store;

const HOST: &str = "testhost";

/// aiosmtpd importable by python3, or skip (fail under CI).
fn have_aiosmtpd() -> bool {
    let ok = smtp::have_aiosmtpd();
    common::require(
        "python3 with aiosmtpd",
        ok,
        "apt-get install python3-pip && python3 -m pip install aiosmtpd (or bash .ci/run --setup-only)",
    )
}

fn filter(min: Severity) -> ChannelFilter {
    ChannelFilter {
        min_severity: min,
        services: vec![],
        kinds: vec![],
    }
}

fn email_config(port: u16) -> NotifyConfig {
    NotifyConfig {
        min_severity: Severity::Warning,
        email: Some(EmailConfig {
            smtp: format!("smtp://127.0.0.1:{port}"),
            smtp_host: "127.0.0.1".into(),
            smtp_port: port,
            implicit_tls: false,
            // The sink offers no STARTTLS; opportunistic would also do.
            starttls: None,
            from: "stackd@testhost.example".into(),
            to: vec!["ops@example.com".into()],
            username: None,
            password_file: None,
            filter: filter(Severity::Warning),
        }),
        webhooks: BTreeMap::new(),
        desktop: None,
    }
}

fn alert(kind: &str, service: &str, summary: &str) -> Alert {
    Alert {
        severity: events::Severity::Critical,
        kind: kind.into(),
        host: HOST.into(),
        service: service.into(),
        summary: summary.into(),
        body: "the last three probes answered 503".into(),
        usec: stackd::store::now_usec(),
        fields: Vec::new(),
    }
}

/// Short back-off so retries happen within a test.
fn fast() -> Options {
    Options {
        backoff: Backoff {
            first: Duration::from_millis(200),
            max: Duration::from_secs(1),
        },
        ..Options::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_arrives_as_email_naming_host_service_what_and_when() {
    if !have_aiosmtpd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = smtp::free_port();
    let sink = smtp::SmtpSink::start(port, &tmp.path().join("mail"));
    let store = Arc::new(Store::open(&tmp.path().join("state")).unwrap());
    let bus = events::channel();
    let handle = notify::spawn(&email_config(port), HOST.into(), store.clone(), bus.clone());

    // Below min_severity for email: journal only.
    let mut quiet = alert("recovered", "", "all services back");
    quiet.severity = events::Severity::Info;
    bus.send(Event::Alert(quiet)).unwrap();
    let a = alert("unhealthy", "web", "health check failed 3 times");
    bus.send(Event::Alert(a.clone())).unwrap();

    let mail = sink.wait_for(1, Duration::from_secs(20)).await;
    let m = &mail[0];
    let when = notify::rfc3339(a.usec);
    for part in [
        "Subject: [stackd] testhost: web health check failed 3 times",
        "From: stackd@testhost.example",
        "To: ops@example.com",
        "Host:     testhost",
        "Service:  web",
        "health check failed 3 times (unhealthy, critical)",
        &format!("When:     {when}"),
        "the last three probes answered 503",
    ] {
        assert!(m.contains(part), "{part:?} missing from\n{m}");
    }
    let id = notify::delivery_id(HOST, notify::EMAIL, &alert_key(&a));
    assert!(
        m.contains(&format!("Message-ID: <{id}@stackd.testhost>")),
        "{m}"
    );
    // Delivered means marked so: nothing left due.
    wait_async(Duration::from_secs(5), "the outbox to drain", || {
        store.outbox_due(u64::MAX, 10).unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        sink.messages().len(),
        1,
        "the info alert must not be mailed"
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_the_alert_waits_in_the_outbox_and_a_restarted_worker_sends_it_once() {
    if !have_aiosmtpd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let port = smtp::free_port(); // nothing listens there yet
    let config = email_config(port);
    let a = alert("gave-up", "db", "restarted 5 times in 10min; giving up");

    {
        let store = Arc::new(Store::open(&state).unwrap());
        let bus = events::channel();
        let handle = notify::spawn_with(&config, HOST.into(), store.clone(), bus.clone(), fast());
        bus.send(Event::Alert(a.clone())).unwrap();
        wait_async(Duration::from_secs(10), "a failed attempt", || {
            store
                .outbox_due(u64::MAX, 10)
                .unwrap()
                .iter()
                .any(|i| i.channel == "email" && i.attempts >= 2)
        })
        .await;
        let pending = store.outbox_due(u64::MAX, 10).unwrap();
        let item = pending.iter().find(|i| i.channel == "email").unwrap();
        assert!(
            item.last_error
                .as_deref()
                .unwrap_or("")
                .contains("127.0.0.1"),
            "{item:?}"
        );
        // The daemon stops (as a crash would: tasks aborted, nothing flushed).
        drop(handle);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;

    let sink = smtp::SmtpSink::start(port, &tmp.path().join("mail"));
    // A new daemon: the store reopened from the same directory, a new bus
    // on which nothing is sent.
    let store = Arc::new(Store::open(&state).unwrap());
    let handle = notify::spawn_with(
        &config,
        HOST.into(),
        store.clone(),
        events::channel(),
        fast(),
    );
    let mail = sink.wait_for(1, Duration::from_secs(20)).await;
    assert!(
        mail[0].contains("Subject: [stackd] testhost: db restarted 5 times in 10min; giving up"),
        "{}",
        mail[0]
    );
    let id = notify::delivery_id(HOST, notify::EMAIL, &alert_key(&a));
    assert!(
        mail[0].contains(&id),
        "the delivery id survives the restart"
    );
    wait_async(Duration::from_secs(5), "the outbox to drain", || {
        store.outbox_due(u64::MAX, 10).unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(sink.messages().len(), 1, "exactly one copy");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_gets_signed_json_and_a_refusal_is_retried_with_the_same_id() {
    let tmp = tempfile::tempdir().unwrap();
    let secret_file = tmp.path().join("hook.secret");
    std::fs::write(&secret_file, "s3cret-key\n").unwrap();
    // The first answer is a 500: the same delivery comes again.
    let (port, seen) = http_listener(vec![500, 200]).await;
    let config = NotifyConfig {
        min_severity: Severity::Warning,
        email: None,
        webhooks: BTreeMap::from([(
            "ops".to_string(),
            WebhookConfig {
                name: "ops".into(),
                url: format!("http://127.0.0.1:{port}/hooks/stackd"),
                format: WebhookFormat::Json,
                secret_file: Some(secret_file),
                filter: ChannelFilter {
                    min_severity: Severity::Warning,
                    services: vec!["web".into()],
                    kinds: vec![],
                },
            },
        )]),
        desktop: None,
    };
    let store = Arc::new(Store::open(&tmp.path().join("state")).unwrap());
    let bus = events::channel();
    let handle = notify::spawn_with(&config, HOST.into(), store.clone(), bus.clone(), fast());
    // Another service: filtered out.
    bus.send(Event::Alert(alert("unhealthy", "db", "probe failed")))
        .unwrap();
    let a = alert("unhealthy", "web", "probe failed");
    bus.send(Event::Alert(a.clone())).unwrap();

    wait_async(Duration::from_secs(10), "two requests", || {
        seen.lock().unwrap().len() >= 2
    })
    .await;
    wait_async(Duration::from_secs(5), "the outbox to drain", || {
        store.outbox_due(u64::MAX, 10).unwrap().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one refusal, one success: {seen:?}");
    let id = notify::delivery_id(HOST, "webhook.ops", &alert_key(&a));
    for req in &seen {
        assert_eq!(req.head, "POST /hooks/stackd HTTP/1.1");
        assert_eq!(req.headers["content-type"], "application/json");
        assert_eq!(req.headers["x-stackd-delivery"], id);
        // Recompute the signature over the body as received.
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret-key").unwrap();
        mac.update(&req.body);
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(req.headers["x-stackd-signature"], format!("sha256={want}"));
        let v: serde_json::Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(v["service"], "web");
        assert_eq!(v["host"], HOST);
        assert_eq!(v["kind"], "unhealthy");
        assert_eq!(v["severity"], "critical");
        assert_eq!(v["summary"], "probe failed");
        assert_eq!(v["delivery"], id.as_str());
        assert_eq!(v["time"], notify::rfc3339(a.usec));
    }
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_test_sends_through_the_real_channels_and_reports() {
    if !have_aiosmtpd() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let port = smtp::free_port();
    let sink = smtp::SmtpSink::start(port, &tmp.path().join("mail"));
    let (hook_port, seen) = http_listener(vec![404]).await;
    let mut config = email_config(port);
    config.webhooks.insert(
        "chat".into(),
        WebhookConfig {
            name: "chat".into(),
            url: format!("http://127.0.0.1:{hook_port}/"),
            format: WebhookFormat::Slack,
            secret_file: None,
            filter: filter(Severity::Warning),
        },
    );
    let results = notify::test(&config, HOST, None).await;
    let names: Vec<&str> = results.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["journal", "email", "webhook.chat"]);
    assert_eq!(results[0].1, Ok(()));
    assert_eq!(results[1].1, Ok(()));
    let err = results[2].1.as_ref().unwrap_err();
    assert!(err.contains("404"), "{err}");
    let mail = sink.wait_for(1, Duration::from_secs(5)).await;
    assert!(mail[0].contains("Subject: [stackd] testhost: test notification"));
    let v: serde_json::Value = serde_json::from_slice(&seen.lock().unwrap()[0].body).unwrap();
    assert!(v["text"].as_str().unwrap().contains("test notification"));

    let only = notify::test(&config, HOST, Some("email")).await;
    assert_eq!(only, [("email".to_string(), Ok(()))]);
    let unknown = notify::test(&config, HOST, Some("pager")).await;
    assert_eq!(unknown.len(), 1);
    let err = unknown[0].1.as_ref().unwrap_err();
    assert!(err.contains("journal, email, webhook.chat"), "{err}");
    // SMTP down: reported, not hidden.
    drop(sink);
    let down = notify::test(&config, HOST, Some("email")).await;
    assert!(down[0].1.is_err(), "{down:?}");
}

async fn wait_async(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
