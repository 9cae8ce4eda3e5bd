//! Notifications on a host's bad days, through the daemon with real parts:
//! a state directory on a small tmpfs that fills up while an alert waits in
//! the outbox (nothing spins, the log stays quiet, the mail arrives once
//! with one Message-ID, "full" and "writable again" are said once each),
//! and a burst of alerts with the SMTP server down and a daemon restart in
//! between (every alert reaches the mailbox, alone or in a summary).

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/smtp.rs"]
mod smtp;

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn have_parts() -> bool {
    have_docker()
        && have_bus()
        && require(
            "aiosmtpd",
            smtp::have_aiosmtpd(),
            "python3 -m pip install aiosmtpd",
        )
}

/// A tmpfs mounted on a directory for the test; unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    fn mount(dir: &Path, size: &str) -> Tmpfs {
        let out = run(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
                .arg("tmpfs")
                .arg(dir),
            Duration::from_secs(10),
        );
        assert!(out.success(), "mount a tmpfs on {}: {out}", dir.display());
        Tmpfs {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let out = run(
            Command::new("umount").arg(&self.dir),
            Duration::from_secs(10),
        );
        if !out.success() {
            // Something still holds it (a daemon being reaped): detach it.
            let _ = run(
                Command::new("umount").arg("-l").arg(&self.dir),
                Duration::from_secs(10),
            );
        }
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Writes zeros to `path` until the file system says it is full.
fn fill(path: &Path) {
    let mut f = fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc_enospc()), "{e}");
            break;
        }
    }
    // The last partial chunk too.
    let _ = f.write_all(&[0u8; 512]);
    let _ = f.sync_all();
}

fn libc_enospc() -> i32 {
    nix::errno::Errno::ENOSPC as i32
}

/// utime + stime of `pid` in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The command name may hold spaces; fields after its ')' are plain.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14, stime 15.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    let out = run(
        Command::new("getconf").arg("CLK_TCK"),
        Duration::from_secs(5),
    );
    out.stdout.trim().parse().unwrap_or(100)
}

/// A received mail as a person reads it: folded header lines joined and
/// quoted-printable soft line breaks undone (long lines are sent so).
fn readable(mail: &str) -> String {
    mail.replace("=\r\n", "")
        .replace("=\n", "")
        .replace("\r\n ", " ")
        .replace("=3D", "=")
}

/// The mails received so far, readable.
fn received(sink: &smtp::SmtpSink) -> Vec<String> {
    sink.messages().iter().map(|m| readable(m)).collect()
}

fn message_id(mail: &str) -> String {
    mail.lines()
        .find(|l| l.to_ascii_lowercase().starts_with("message-id:"))
        .unwrap_or_else(|| panic!("no Message-ID: {mail}"))
        .to_string()
}

#[test]
fn docker_a_full_state_directory_is_said_once_and_nothing_spins_or_repeats() {
    if !have_parts()
        || !require(
            "root (to mount a tmpfs)",
            is_root(),
            "run the test suite as root",
        )
    {
        return;
    }
    ensure_image();
    let env = TestEnv::new("notify_full");
    // Dropped after the daemon (declared before it): unmounted last.
    let _tmpfs = Tmpfs::mount(&env.state_dir(), "8m");
    let broken = env.add_project("broken", &failing_compose());
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
    let daemon = Daemon::start(&env, &bus);

    // An alert waits in the outbox: the server is down.
    let start = stackctl(&env, &bus, &["--no-block", "start", &broken]).expect_success();
    let task = start.stdout.trim().to_string();
    wait_until(Duration::from_secs(30), "a failed email delivery", || {
        daemon
            .stderr()
            .contains("cannot deliver a notification to email (attempt 1)")
    });

    // The state directory fills up.
    let filler = env.state_dir().join("filler");
    fill(&filler);
    let lines_before = daemon.stderr().lines().count();
    let ticks_before = cpu_ticks(daemon.pid());
    let full_since = Instant::now();

    // Said once, as an alert (the journal channel's line, from memory).
    wait_until(
        Duration::from_secs(30),
        "the state-write-failed alert",
        || daemon.stderr().contains("state directory") && daemon.stderr().contains("is full"),
    );
    // The server comes back while the disk is still full: the waiting mail
    // is delivered at its next retry; that it cannot be marked delivered
    // must not send it again.
    std::thread::sleep(Duration::from_secs(8));
    let sink = smtp::SmtpSink::start(port, &env.dir().join("mail"));
    let ours = |sink: &smtp::SmtpSink| -> Vec<String> {
        received(sink)
            .into_iter()
            .filter(|m| m.contains(&format!(" failed (task {task})")))
            .collect()
    };
    wait_until(Duration::from_secs(60), "the waiting mail arrives", || {
        !ours(&sink).is_empty()
    });
    // The "full" alert reaches the mailbox too, from memory.
    wait_until(
        Duration::from_secs(60),
        "the state-write-failed mail",
        || received(&sink).iter().any(|m| m.contains("is full")),
    );
    // Time for retries that must not happen (the channel's back-off is 5 s
    // and doubling; a spin would send hundreds).
    std::thread::sleep(Duration::from_secs(12));
    let full_for = full_since.elapsed();
    // Lines about Docker events are left out: the daemon observes every
    // project on the shared engine, and other tests make those.
    let ours_only = |l: &&str| !l.contains("DEBUG observed ");
    let lines = daemon
        .stderr()
        .lines()
        .skip(lines_before)
        .filter(ours_only)
        .count();
    let ticks = cpu_ticks(daemon.pid()) - ticks_before;
    let per_second = lines as f64 / full_for.as_secs_f64();
    let cpu = ticks as f64 / ticks_per_second() as f64 / full_for.as_secs_f64() * 100.0;
    eprintln!(
        "--- daemon log while the disk was full\n{}",
        daemon
            .stderr()
            .lines()
            .skip(lines_before)
            .collect::<Vec<_>>()
            .join("\n")
    );
    eprintln!(
        "FIGURES disk full for {:.1} s: {lines} log lines ({per_second:.2}/s), CPU {cpu:.1} %",
        full_for.as_secs_f64()
    );
    let window: Vec<String> = daemon
        .stderr()
        .lines()
        .skip(lines_before)
        .map(str::to_string)
        .collect();
    assert!(
        per_second < 10.0,
        "{lines} lines in {full_for:?}:\n{}",
        window.join("\n")
    );
    assert!(cpu < 50.0, "the daemon used {cpu:.1} % of a core");
    let mails = ours(&sink);
    assert_eq!(mails.len(), 1, "delivered once while the disk is full");
    // The store did refuse the bookkeeping (else this test shows nothing).
    assert!(
        window
            .iter()
            .any(|l| l.contains("cannot record the delivery")),
        "{}",
        window.join("\n")
    );
    let full_alerts = received(&sink)
        .into_iter()
        .filter(|m| m.contains("is full"))
        .count();
    assert_eq!(full_alerts, 1, "said once");

    // Space returns: the daemon records what waited and says so, once.
    fs::remove_file(&filler).unwrap();
    wait_until(
        Duration::from_secs(90),
        "the state-write-back alert",
        || daemon.stderr().contains("can write again"),
    );
    std::thread::sleep(Duration::from_secs(6));
    let log = daemon.stderr();
    assert_eq!(log.matches("can write again:").count(), 1, "{log}");
    // Everything resumes: a new alert goes through the outbox and arrives.
    let before = sink.messages().len();
    let again = stackctl(&env, &bus, &["--no-block", "restart", &broken]).expect_success();
    let task2 = again.stdout.trim().to_string();
    wait_until(Duration::from_secs(60), "a new alert is mailed", || {
        received(&sink)
            .iter()
            .any(|m| m.contains(&format!(" failed (task {task2})")))
    });
    assert!(sink.messages().len() > before);
    // The first mail was never sent again, and every mail has its own id.
    let mails = ours(&sink);
    assert!(mails.len() <= 2, "at most twice: {mails:#?}");
    let ids: BTreeSet<String> = mails.iter().map(|m| message_id(m)).collect();
    assert_eq!(ids.len(), 1, "one Message-ID: {ids:?}");
    let all: Vec<String> = sink.messages().iter().map(|m| message_id(m)).collect();
    let unique: BTreeSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len(), "no duplicates: {all:?}");
}

/// A delivery the full disk kept from being recorded, then a crash: the
/// next daemon sends the mail once more, with the same Message-ID, and no
/// more than that.
#[test]
fn docker_a_crash_before_a_delivery_could_be_recorded_sends_it_again_once_with_the_same_id() {
    if !have_parts()
        || !require(
            "root (to mount a tmpfs)",
            is_root(),
            "run the test suite as root",
        )
    {
        return;
    }
    ensure_image();
    let env = TestEnv::new("notify_full_crash");
    let _tmpfs = Tmpfs::mount(&env.state_dir(), "8m");
    let broken = env.add_project("broken", &failing_compose());
    let port = smtp::free_port();
    env.write_config(&format!(
        r#"[services.{broken}]
auto_start = false

[notify.email]
smtp = "smtp://127.0.0.1:{port}"
from = "stackd@testhost"
to = ["ops@example.com"]
min_severity = "warning"
kinds = ["task-failed"]
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
    let filler = env.state_dir().join("filler");
    fill(&filler);
    let sink = smtp::SmtpSink::start(port, &env.dir().join("mail"));
    let ours = |sink: &smtp::SmtpSink| -> Vec<String> {
        received(sink)
            .into_iter()
            .filter(|m| m.contains(&format!(" failed (task {task})")))
            .collect()
    };
    wait_until(Duration::from_secs(30), "the mail arrives", || {
        !ours(&sink).is_empty()
    });
    wait_until(
        Duration::from_secs(10),
        "its delivery is not recorded",
        || first.stderr().contains("cannot record the delivery"),
    );
    // Not sent again by this daemon: its next retry would have come 10 s
    // after the last.
    std::thread::sleep(Duration::from_secs(11));
    assert_eq!(ours(&sink).len(), 1);

    // A crash, then the space comes back and stackd with it.
    first.kill();
    drop(first);
    fs::remove_file(&filler).unwrap();
    let second = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(30), "the second copy", || {
        ours(&sink).len() >= 2
    });
    wait_until(Duration::from_secs(10), "its delivery is recorded", || {
        second.stderr().contains("to email after 1 failures")
    });
    std::thread::sleep(Duration::from_secs(7));
    let mails = ours(&sink);
    assert_eq!(mails.len(), 2, "at most twice: {mails:#?}");
    assert_eq!(
        message_id(&mails[0]),
        message_id(&mails[1]),
        "one Message-ID"
    );
}

#[test]
fn docker_a_burst_of_alerts_with_smtp_down_and_a_restart_all_reach_the_mailbox() {
    if !have_parts() {
        return;
    }
    ensure_image();
    let env = TestEnv::new("notify_burst");
    let names: Vec<String> = (0..20)
        .map(|i| env.add_project(&format!("b{i:02}"), &failing_compose()))
        .collect();
    let port = smtp::free_port();
    let mut config = String::new();
    for n in &names {
        config.push_str(&format!("[services.{n}]\nauto_start = false\n\n"));
    }
    config.push_str(&format!(
        r#"[notify.email]
smtp = "smtp://127.0.0.1:{port}"
from = "stackd@testhost"
to = ["ops@example.com"]
min_severity = "warning"
"#
    ));
    env.write_config(&config);
    let bus = Bus::start(env.dir());
    let mut first = Daemon::start(&env, &bus);

    let mut args = vec!["--no-block", "start"];
    args.extend(names.iter().map(String::as_str));
    stackctl(&env, &bus, &args).expect_success();
    wait_until(Duration::from_secs(120), "20 failed starts", || {
        let tasks = stackctl_json(&env, &bus, &["tasks", "--state", "failed", "-n", "100"]);
        tasks.as_array().is_some_and(|t| t.len() >= 20)
    });
    wait_until(Duration::from_secs(30), "a failed email delivery", || {
        first
            .stderr()
            .contains("cannot deliver a notification to email (attempt 1)")
    });

    // A refused reload is logged with its reason every time, whatever the
    // de-duplication does with the notification.
    env.write_config(&format!("{config}bogus_key = 1\n"));
    for _ in 0..3 {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(first.pid()).unwrap()),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(700));
    }
    wait_until(Duration::from_secs(10), "three refusals in the log", || {
        first.stderr().matches("reload refused").count() >= 3
    });
    assert!(first.stderr().contains("bogus_key"), "the reason is logged");
    env.write_config(&config);

    assert!(first.stop().success(), "SIGTERM ends stackd cleanly");
    drop(first);
    let second = Daemon::start(&env, &bus);
    let sink = smtp::SmtpSink::start(port, &env.dir().join("mail"));
    // Each failed start is a task-failed alert: it arrives alone, or is
    // counted in a summary of what the rate limit held back ("By kind:
    // task-failed: N"). The boot summary names every service too, so the
    // names alone would not prove it.
    let is_summary = |m: &String| m.contains("held back from email by the rate limit");
    let accounted = |mails: &[String]| -> (usize, usize) {
        let singles = mails
            .iter()
            .filter(|m| !is_summary(m))
            .filter(|m| m.contains("(task-failed, warning)"))
            .count();
        // "By kind: ... task-failed: N" (the list's own lines say
        // "task-failed SERVICE: ...", without the colon).
        let summarised = mails
            .iter()
            .filter(|m| is_summary(m))
            .flat_map(|m| m.split("task-failed: ").skip(1))
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits
                    .parse::<usize>()
                    .expect("a count after task-failed: ")
            })
            .sum();
        (singles, summarised)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut singles, mut summarised) = (0, 0);
    while Instant::now() < deadline {
        (singles, summarised) = accounted(&received(&sink));
        if singles + summarised >= names.len() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mails = received(&sink);
    // Each service is named by its own alert or a summary's list, not
    // only by the start-up reconcile's report.
    for n in &names {
        assert!(
            mails
                .iter()
                .filter(|m| !m.contains("(reconciled, "))
                .any(|m| m.contains(n.as_str())),
            "{n} only in the reconcile report: {mails:#?}\n{}",
            second.stderr()
        );
    }
    assert!(mails.iter().any(is_summary), "no summary: {mails:#?}");
    assert!(
        singles >= 1 && singles + summarised >= names.len(),
        "{singles} task-failed mails one by one, {summarised} in summaries: {mails:#?}"
    );
}
