//! Notifications through the daemon: a failed task reaches a real SMTP
//! server (aiosmtpd) as an email naming host, service and what happened;
//! `stackctl notify test` reports per channel what the real channel did.

mod common;
#[path = "common/smtp.rs"]
mod smtp;

use std::time::Duration;

use common::*;

/// A project whose deploy fails at once: its image would have to be pulled
/// from a registry address where nothing listens.
fn failing_compose() -> String {
    r#"version: "2.4"
services:
  main:
    image: 127.0.0.1:9/stackd-test/absent:1
    command: ["sleep", "3600"]
"#
    .to_string()
}

#[test]
fn a_failed_task_is_mailed_and_notify_test_reports_each_channel() {
    if !have_docker()
        || !have_bus()
        || !require(
            "aiosmtpd",
            smtp::have_aiosmtpd(),
            "python3 -m pip install aiosmtpd",
        )
    {
        return;
    }
    ensure_image();
    let env = TestEnv::new("notify_daemon");
    let broken = env.add_project("broken", &failing_compose());
    let port = smtp::free_port();
    let sink = smtp::SmtpSink::start(port, &env.dir().join("mail"));
    env.write_config(&format!(
        r#"[services.{broken}]
auto_start = false

[notify]
min_severity = "warning"
[notify.email]
smtp = "smtp://127.0.0.1:{port}"
from = "stackd@testhost"
to = ["ops@example.com"]
"#
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let start = stackctl(&env, &bus, &["start", &broken]);
    assert_eq!(start.code, 1, "{start}");

    wait_until(Duration::from_secs(30), "the failure is mailed", || {
        !sink.messages().is_empty()
    });
    let mail = sink.messages().remove(0);
    assert!(mail.contains("Subject: [stackd] testhost:"), "{mail}");
    assert!(mail.contains(&broken), "{mail}");
    assert!(mail.contains("deploy failed"), "{mail}");
    assert!(mail.contains("ops@example.com"), "{mail}");

    // The real channels, through the daemon.
    let test = stackctl(&env, &bus, &["notify", "test"]).expect_success();
    assert!(test.stdout.contains("email: delivered"), "{test}");
    assert!(test.stdout.contains("journal: delivered"), "{test}");
    wait_until(Duration::from_secs(10), "the test message arrives", || {
        sink.messages().len() >= 2
    });
    let unknown = stackctl(&env, &bus, &["notify", "test", "webhook.nope"]);
    assert_eq!(unknown.code, 1, "{unknown}");
    assert!(
        unknown.stdout.contains("no such notification channel"),
        "{unknown}"
    );

    // With the server gone, the test says so instead of pretending.
    drop(sink);
    let down = stackctl(&env, &bus, &["notify", "test", "email"]);
    assert_eq!(down.code, 1, "{down}");
    assert!(down.stdout.contains("email: FAILED"), "{down}");
}
