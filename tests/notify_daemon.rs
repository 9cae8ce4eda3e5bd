//! Notifications through the daemon: a failed task reaches a real SMTP
//! server (aiosmtpd) as an email naming host, service and what happened;
//! `stackctl notify test` reports per channel what the real channel did; a
//! mail waits in the outbox while the server is down, across a daemon
//! restart, and arrives once; `stackctl notify-agent` shows alerts on a
//! (fake) desktop notification server.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/smtp.rs"]
mod smtp;

use std::time::Duration;

use common::*;

/// Docker, a bus and aiosmtpd: the parts the mail tests drive.
fn have_parts() -> bool {
    have_docker()
        && have_bus()
        && require(
            "aiosmtpd",
            smtp::have_aiosmtpd(),
            "python3 -m pip install aiosmtpd",
        )
}

#[test]
fn docker_a_failed_task_is_mailed_and_notify_test_reports_each_channel() {
    if !have_parts() {
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

/// What the fake notification server was asked to show.
#[derive(Debug, Clone)]
struct Shown {
    app_name: String,
    icon: String,
    summary: String,
    body: String,
    urgency: Option<u8>,
}

/// A stand-in for the desktop's notification server on a session bus.
struct FakeNotifications {
    shown: std::sync::Arc<std::sync::Mutex<Vec<Shown>>>,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl FakeNotifications {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app_name: String,
        _replaces_id: u32,
        app_icon: String,
        summary: String,
        body: String,
        _actions: Vec<String>,
        hints: std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
        _expire_timeout: i32,
    ) -> u32 {
        let urgency = hints.get("urgency").and_then(|v| u8::try_from(v).ok());
        let mut shown = self.shown.lock().unwrap();
        shown.push(Shown {
            app_name,
            icon: app_icon,
            summary,
            body,
            urgency,
        });
        u32::try_from(shown.len()).unwrap()
    }
}

#[test]
fn docker_the_notify_agent_shows_a_failed_task_on_the_desktop() {
    if !have_docker() || !have_bus() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("notify_agent");
    let broken = env.add_project("broken", &failing_compose());
    // The desktop gets failed tasks only.
    let good = format!(
        "[services.{broken}]\nauto_start = false\n\n[notify.desktop]\nkinds = [\"task-failed\"]\n"
    );
    env.write_config(&good);
    let bus = Bus::start(env.dir());
    let session = Bus::start(&env.dir().join("session"));
    let _daemon = Daemon::start(&env, &bus);

    let shown = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _server = rt.block_on(async {
        zbus::connection::Builder::address(session.address())
            .unwrap()
            .name("org.freedesktop.Notifications")
            .unwrap()
            .serve_at(
                "/org/freedesktop/Notifications",
                FakeNotifications {
                    shown: shown.clone(),
                },
            )
            .unwrap()
            .build()
            .await
            .unwrap()
    });

    // The daemon's bus is the agent's system bus here.
    let log = env.dir().join("agent.log");
    let agent = std::process::Command::new(env!("CARGO_BIN_EXE_stackctl"))
        .arg("notify-agent")
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .env("DBUS_SESSION_BUS_ADDRESS", session.address())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = KillOnDrop(agent);
    wait_for_notify_agent(&bus);

    // A refused reload is an alert too (reload-failed), but not one of the
    // kinds [notify.desktop] asks for: no Alert signal, nothing shown.
    env.write_config(&format!("{good}bogus = 1\n"));
    assert_eq!(stackctl(&env, &bus, &["reload"]).code, 1);
    env.write_config(&good);
    let start = stackctl(&env, &bus, &["start", &broken]);
    assert_eq!(start.code, 1, "{start}");
    wait_until(Duration::from_secs(20), "the desktop notification", || {
        !shown.lock().unwrap().is_empty()
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        shown.lock().unwrap().len(),
        1,
        "{:?}",
        shown.lock().unwrap()
    );
    let n = shown.lock().unwrap()[0].clone();
    assert_eq!(n.app_name, "stackd", "{n:?}");
    assert!(
        n.summary.starts_with(&format!("{HOST}: {broken} "))
            && n.summary.contains(" failed (task "),
        "{n:?}"
    );
    assert!(n.body.contains("127.0.0.1:9"), "{n:?}");
    assert_eq!(n.urgency, Some(1), "a warning is normal urgency: {n:?}");
    assert_eq!(n.icon, "dialog-warning", "{n:?}");
    let printed = std::fs::read_to_string(&log).unwrap();
    assert!(
        printed.contains(&format!("shown: {HOST}: {broken}")),
        "{printed}"
    );
}

#[test]
fn docker_a_mail_waits_out_a_dead_smtp_server_and_a_daemon_restart_and_arrives_once() {
    if !have_parts() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("notify_outbox");
    let broken = env.add_project("broken", &failing_compose());
    // Nothing listens on the port yet.
    let port = smtp::free_port();
    env.write_config(&format!(
        r#"[services.{broken}]
auto_start = false

[notify.email]
smtp = "smtp://127.0.0.1:{port}"
from = "stackd@testhost"
to = ["ops@example.com"]
min_severity = "warning"
"#
    ));
    let bus = Bus::start(env.dir());
    let mut first = Daemon::start(&env, &bus);
    let start = stackctl(&env, &bus, &["--no-block", "start", &broken]).expect_success();
    let task = start.stdout.trim().to_string();
    wait_until(Duration::from_secs(30), "a failed email delivery", || {
        first
            .stderr()
            .contains("cannot deliver a notification to email (attempt 1)")
    });
    assert!(first.stop().success(), "SIGTERM ends stackd cleanly");
    drop(first);

    let second = Daemon::start(&env, &bus);
    let sink = smtp::SmtpSink::start(port, &env.dir().join("mail"));
    wait_until(Duration::from_secs(60), "the queued mail arrives", || {
        !sink.messages().is_empty()
    });
    // The restarted daemon delivered the item the first one left behind.
    wait_until(Duration::from_secs(10), "the delivery is logged", || {
        second.stderr().contains("to email after 1 failures")
    });
    // Let retries that should not happen have their chance (the first
    // back-off step is 5 s).
    std::thread::sleep(Duration::from_secs(7));
    let mails = sink.messages();
    let ours: Vec<&String> = mails
        .iter()
        .filter(|m| m.contains(&format!(" failed (task {task})")))
        .collect();
    assert_eq!(ours.len(), 1, "exactly one copy: {mails:#?}");
    assert!(ours[0].contains(&broken), "{}", ours[0]);
    // (The restart's own reconcile deploys the service again and fails
    // again: other alerts, each with its own Message-ID, each once.)
    let ids: Vec<&str> = mails
        .iter()
        .map(|m| {
            m.lines()
                .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
                .unwrap_or_else(|| panic!("no Message-ID: {m}"))
        })
        .collect();
    assert!(
        ids.iter().all(|id| id.ends_with("@stackd.testhost>")),
        "{ids:?}"
    );
    let unique: std::collections::BTreeSet<&&str> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

#[test]
fn docker_a_reboot_with_default_settings_mails_what_came_back_and_what_stayed_stopped() {
    if !have_parts() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("notify_reboot");
    let a = env.add_sleeper("a");
    let b = env.add_sleeper("b");
    let c = env.add_sleeper("c");
    let port = smtp::free_port();
    let sink = smtp::SmtpSink::start(port, &env.dir().join("mail"));
    // No min_severity: the documented default ("warning") applies.
    env.write_config(&format!(
        r#"[services.{a}]
auto_start = true
[services.{b}]
auto_start = true
[services.{c}]
auto_start = true

[notify.email]
smtp = "smtp://127.0.0.1:{port}"
from = "stackd@testhost"
to = ["ops@example.com"]
"#
    ));
    let bus = Bus::start(env.dir());
    let mut daemon = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(120), "all three to run", || {
        [&a, &b, &c].iter().all(|p| running(p) == 1)
    });
    stackctl(&env, &bus, &["stop", &c]).expect_success();
    // Whatever the first start mailed has arrived before the reboot.
    std::thread::sleep(Duration::from_secs(2));
    let before = sink.messages().len();

    // The host goes down hard: daemon killed, containers gone, new boot id.
    daemon.kill();
    remove_projects(&format!("{}-", env.prefix()));
    env.new_boot();
    let _daemon = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(120), "a and b to come back", || {
        running(&a) == 1 && running(&b) == 1
    });
    wait_until(Duration::from_secs(30), "the recovery is mailed", || {
        sink.messages().len() > before
    });
    // Nothing else about this reboot follows.
    std::thread::sleep(Duration::from_secs(3));
    let mails: Vec<String> = sink.messages().split_off(before);
    assert_eq!(mails.len(), 1, "one mail: {mails:#?}");
    let mail = mails[0].replace("=\r\n", "").replace("\r\n", "\n");
    assert!(mail.contains("Came back:"), "{mail}");
    assert!(mail.contains(&a) && mail.contains(&b), "{mail}");
    assert!(
        mail.contains(&format!("Left stopped: {c} (set by user)")),
        "{mail}"
    );
    assert_eq!(running(&c), 0);
}
