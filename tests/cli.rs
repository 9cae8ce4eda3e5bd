//! stackctl as an admin types it: several names at once with a refusal in
//! the middle, `health` as a gate with its counts and exit code, the is-*
//! verbs and systemctl's flags, all against a real daemon and Docker.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

const SETTLE: Duration = Duration::from_secs(60);

/// `[services.NAME]` with a file probe on `file` (healthy while it exists).
fn probed(name: &str, file: &std::path::Path, extra: &str) -> String {
    format!(
        "[services.{name}]\nauto_start = false\nhealth = {{ file = {}, interval = \"1s\", timeout = \"1s\", retries = 1 }}\nrestart = {{ on_failure = false }}\n{extra}\n",
        toml_str(&file.display().to_string())
    )
}

#[test]
fn docker_several_names_each_tried_a_refusal_reported_by_name_exit_1() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("cli_several");
    let a = env.add_sleeper("a");
    let db = env.add_sleeper("db");
    let web = env.add_sleeper("web");
    let c = env.add_sleeper("c");
    env.write_config(&format!(
        "[services.{a}]\nauto_start = false\n[services.{c}]\nauto_start = false\n\
         [services.{db}]\nauto_start = false\n[services.{web}]\nauto_start = false\ndepends_on = [\"{db}\"]\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    // An unknown name in the middle: the two others start all the same.
    let out = stackctl(&env, &bus, &["start", &a, "nope", &c]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.lines().any(|l| l.starts_with("nope: ")),
        "the refusal starts with the name: {out}"
    );
    assert_eq!(running(&a), 1, "{out}");
    assert_eq!(running(&c), 1, "{out}");

    // A refusal of another kind in the middle: db is needed by web.
    stackctl(&env, &bus, &["start", &web]).expect_success();
    assert_eq!(running(&db), 1);
    let out = stackctl(&env, &bus, &["stop", &a, &db, &c]);
    assert_eq!(out.code, 1, "{out}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with(&format!("{db}: ")))
        .unwrap_or_else(|| panic!("no line for {db}: {out}"));
    assert!(line.contains("needed by running services"), "{out}");
    assert_eq!(running(&a), 0, "{out}");
    assert_eq!(running(&c), 0, "{out}");
    assert_eq!(running(&db), 1, "{out}");

    // All accepted: 0. A single unknown name keeps its own code, 4.
    stackctl(&env, &bus, &["start", &a, &c]).expect_success();
    assert_eq!(stackctl(&env, &bus, &["restart", "nope"]).code, 4);
}

#[test]
fn docker_health_counts_and_exits_1_while_a_wanted_service_is_unhealthy() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("cli_health");
    let good = env.add_sleeper("good");
    let bad = env.add_sleeper("bad");
    let idle = env.add_sleeper("idle");
    let good_file = env.dir().join("good.ok");
    let bad_file = env.dir().join("bad.ok");
    std::fs::write(&good_file, "").unwrap();
    env.write_config(&format!(
        "{}{}[services.{idle}]\nauto_start = false\n",
        probed(&good, &good_file, ""),
        probed(&bad, &bad_file, "")
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &good, &bad]).expect_success();

    wait_until(SETTLE, "bad probed unhealthy", || {
        let out = stackctl(&env, &bus, &["health"]);
        out.stdout.contains("1 healthy, 1 unhealthy, 1 not running")
    });
    let out = stackctl(&env, &bus, &["health"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("SERVICE"), "{out}");
    // Only the named ones count.
    assert_eq!(stackctl(&env, &bus, &["health", &good]).code, 0);
    assert_eq!(stackctl(&env, &bus, &["health", &bad]).code, 1);
    // --no-legend: rows only.
    let out = stackctl(&env, &bus, &["health", "--no-legend"]);
    assert_eq!(out.stdout.lines().count(), 3, "{out}");
    assert!(!out.stdout.contains("SERVICE") && !out.stdout.contains("healthy,"));

    std::fs::write(&bad_file, "").unwrap();
    wait_until(SETTLE, "bad probed healthy", || {
        stackctl(&env, &bus, &["health"])
            .stdout
            .contains("2 healthy, 1 not running")
    });
    let out = stackctl(&env, &bus, &["health"]);
    assert_eq!(out.code, 0, "{out}");
}

/// A service that prints five long numbered lines, then sleeps.
fn chatty_compose(image: &str) -> String {
    format!(
        r#"version: "2.4"
services:
  main:
    image: {image}
    pull_policy: never
    command: ["sh", "-c", "for i in 1 2 3 4 5; do echo line-$$i-of-a-log-that-runs-well-past-forty-columns; done; exec sleep 3600"]
    init: true
    stop_grace_period: 1s
"#
    )
}

/// A service whose container exits with code 3 at once.
fn exiting_compose(image: &str) -> String {
    format!(
        r#"version: "2.4"
services:
  main:
    image: {image}
    pull_policy: never
    command: ["sh", "-c", "exit 3"]
    init: true
"#
    )
}

/// stackctl on a terminal (a pty from util-linux `script`) with
/// `$COLUMNS` set, as a person at a shell that exports it runs it; its
/// output with the pty's CR LF turned back into LF.
fn stackctl_tty(env: &TestEnv, bus: &Bus, columns: &str, args: &[&str]) -> Output {
    let line: Vec<String> = std::iter::once(env!("CARGO_BIN_EXE_stackctl"))
        .chain(std::iter::once("--user"))
        .chain(args.iter().copied())
        .map(|a| format!("'{a}'"))
        .collect();
    let mut cmd = std::process::Command::new("script");
    cmd.args(["-qec", &line.join(" "), "/dev/null"])
        .env("COLUMNS", columns)
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .env("XDG_RUNTIME_DIR", env.run_dir());
    let mut out = run(&mut cmd, COMMAND_TIMEOUT);
    out.stdout = out.stdout.replace("\r\n", "\n");
    out
}

#[test]
fn docker_is_verbs_answer_with_systemctls_exit_codes() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("cli_is");
    let on = env.add_sleeper("on");
    let off = env.add_sleeper("off");
    let bad = env.add_project("bad", &exiting_compose(ensure_image()));
    env.write_config(&format!(
        "[services.{on}]\nauto_start = false\n[services.{off}]\nauto_start = false\n\
         [services.{bad}]\nauto_start = false\nrestart = {{ on_failure = false }}\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &on, &bad]).expect_success();
    wait_until(SETTLE, "bad seen failed", || {
        stackctl(&env, &bus, &["is-failed", &bad]).code == 0
    });

    let check = |args: &[&str], code: i32, stdout: &str| {
        let out = stackctl(&env, &bus, args);
        assert_eq!((out.code, out.stdout.as_str()), (code, stdout), "{out}");
    };
    // is-active: 0 when at least one is active, else 3; 4 for unknown.
    check(&["is-active", &on], 0, "active\n");
    check(&["is-active", &off], 3, "inactive\n");
    check(&["is-active", &bad], 3, "failed\n");
    check(&["is-active", &off, &on], 0, "inactive\nactive\n");
    check(&["is-active", "nope"], 4, "unknown\n");
    check(&["is-active", "-q", &on], 0, "");
    check(&["is-active", "--quiet", &off], 3, "");
    // is-failed: 0 when at least one failed, else 1.
    check(&["is-failed", &bad], 0, "failed\n");
    check(&["is-failed", &on, &off], 1, "active\ninactive\n");
    check(&["is-failed", "nope"], 4, "unknown\n");
    // is-wanted: the desired state; 0 when at least one is wanted running.
    check(&["is-wanted", &on], 0, "running\n");
    check(&["is-wanted", &off], 1, "stopped\n");
    check(&["is-wanted", &bad], 0, "running\n");
    check(&["is-wanted", "-q", &off], 1, "");
    stackctl(&env, &bus, &["stop", &on]).expect_success();
    check(&["is-wanted", &on], 1, "stopped\n");
    check(&["is-active", &on], 3, "inactive\n");
}

#[test]
fn docker_systemctl_flags_no_pager_full_lines_quiet_no_legend() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("cli_flags");
    let talk = env.add_project("talk", &chatty_compose(ensure_image()));
    let quiet = env.add_sleeper("quiet");
    env.write_config(&format!(
        "[services.{talk}]\nauto_start = false\n[services.{quiet}]\nauto_start = false\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    // -q: nothing on stdout while the task runs; the exit code answers.
    let out = stackctl(&env, &bus, &["-q", "start", &quiet]).expect_success();
    assert_eq!(out.stdout, "", "{out}");
    let out = stackctl(&env, &bus, &["start", &talk]).expect_success();
    assert!(!out.stdout.is_empty(), "without -q the task log is shown");
    wait_until(SETTLE, "all five lines logged", || {
        stackctl(&env, &bus, &["logs", &talk])
            .stdout
            .contains("line-5")
    });

    // --no-pager is accepted; -n picks the last lines, 0 none.
    let out = stackctl(&env, &bus, &["status", &talk, "--no-pager"]).expect_success();
    assert!(out.stdout.contains("line-1") && out.stdout.contains("line-5"));
    let out = stackctl(&env, &bus, &["status", &talk, "-n", "2"]).expect_success();
    assert!(
        !out.stdout.contains("line-3")
            && out.stdout.contains("line-4")
            && out.stdout.contains("line-5"),
        "{out}"
    );
    let out = stackctl(&env, &bus, &["status", &talk, "--lines", "0"]).expect_success();
    assert!(!out.stdout.contains("line-"), "{out}");

    // On a terminal $COLUMNS ellipsizes; -l/--full does not, nor a pipe.
    let out = stackctl_tty(&env, &bus, "40", &["status", &talk]).expect_success();
    let log: Vec<&str> = out.stdout.lines().filter(|l| l.contains("line-")).collect();
    assert_eq!(log.len(), 5, "{out}");
    assert!(
        log.iter()
            .all(|l| l.chars().count() == 40 && l.ends_with('…')),
        "{out}"
    );
    for flag in ["-l", "--full"] {
        let out = stackctl_tty(&env, &bus, "40", &["status", &talk, flag]).expect_success();
        assert!(out.stdout.contains("past-forty-columns"), "{flag}: {out}");
    }
    let piped = stackctl(&env, &bus, &["status", &talk]).expect_success();
    assert!(piped.stdout.contains("past-forty-columns"), "{piped}");

    // --no-legend: rows only, in list and tasks.
    let out = stackctl(&env, &bus, &["list"]).expect_success();
    assert!(out.stdout.contains("SERVICE") && out.stdout.contains("2 services listed."));
    let out = stackctl(&env, &bus, &["list", "--no-legend"]).expect_success();
    assert_eq!(out.stdout.lines().count(), 2, "{out}");
    assert!(!out.stdout.contains("SERVICE") && !out.stdout.contains("listed"));
    let out = stackctl(&env, &bus, &["tasks", "--no-legend", "--service", &talk]).expect_success();
    assert_eq!(out.stdout.lines().count(), 1, "{out}");
    assert!(!out.stdout.contains("KIND"), "{out}");
    let out = stackctl(&env, &bus, &["tasks", "--service", &talk]).expect_success();
    assert!(out.stdout.contains("1 task listed."), "{out}");
}

#[test]
fn docker_diagnose_speaks_words_and_counts_restarts_as_health_does() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("cli_diagnose");
    // Docker's own restart policy restarts it twice, then it stays down;
    // stackd is told not to act, so only Docker's restarts count.
    let crash = env.add_project(
        "crash",
        &exiting_compose(ensure_image()).replace(
            "    init: true\n",
            "    init: true\n    restart: on-failure:2\n",
        ),
    );
    env.write_config(&format!(
        "[services.{crash}]\nauto_start = false\nrestart = {{ on_failure = false }}\n"
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    stackctl(&env, &bus, &["start", &crash]).expect_success();
    let restarts = || {
        let out = stackctl(&env, &bus, &["--output", "json", "health", &crash]);
        let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
        v[0]["restart_count"].as_u64().unwrap()
    };
    wait_until(SETTLE, "Docker restarted it twice and gave up", || {
        restarts() == 2 && stackctl(&env, &bus, &["is-failed", &crash]).code == 0
    });

    let out = stackctl(&env, &bus, &["diagnose", &crash]).expect_success();
    for debug in ["{", "}", "None", "Some(", "Duration", "\""] {
        assert!(!out.stdout.contains(debug), "{debug:?} in: {out}");
    }
    assert!(out.stdout.lines().any(|l| l == "restarts: 2"), "{out}");
    assert!(out.stdout.lines().any(|l| l == "action: nothing"), "{out}");
    assert!(out.stdout.contains("desired state: running"), "{out}");
    assert!(
        out.stdout
            .contains("crash-loop budget: 0 of 5 restarts used within 10m"),
        "{out}"
    );
    // status says the same figure.
    let status = stackctl(&env, &bus, &["status", &crash]);
    assert!(
        status.stdout.lines().any(|l| l.trim() == "Restarts: 2"),
        "{status}"
    );

    // Singular footer, and the Tasks: block in columns under its label.
    let out = stackctl(&env, &bus, &["list"]).expect_success();
    assert!(out.stdout.contains("\n1 service listed.\n"), "{out}");
    stackctl(&env, &bus, &["stop", &crash]).expect_success();
    let status = stackctl(&env, &bus, &["status", &crash]);
    let tasks: Vec<&str> = status
        .stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Tasks:"))
        .take_while(|l| l.contains('#'))
        .collect();
    assert_eq!(tasks.len(), 2, "{status}");
    assert!(tasks[0].starts_with("       Tasks: #"), "{status}");
    let col = |l: &str, c: char| l.find(c).unwrap();
    assert_eq!(col(tasks[0], '#'), col(tasks[1], '#'), "{status}");
    assert_eq!(col(tasks[0], '('), col(tasks[1], '('), "{status}");
}

#[test]
fn docker_start_wait_returns_once_the_probe_says_healthy_or_times_out() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("cli_wait");
    let slow = env.add_sleeper("slow");
    let never = env.add_sleeper("never");
    let slow_file = env.dir().join("slow.ok");
    let never_file = env.dir().join("never.ok");
    env.write_config(&format!(
        "{}{}",
        probed(&slow, &slow_file, "start_timeout = \"60s\""),
        probed(&never, &never_file, "start_timeout = \"4s\"")
    ));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    // The probe's file appears 3 s after the container runs (not after the
    // start is asked for: on a loaded machine Compose alone may take that
    // long), so the probe has said "unhealthy" first.
    let t0 = std::time::Instant::now();
    let maker = {
        let file = slow_file.clone();
        let project = slow.clone();
        std::thread::spawn(move || {
            wait_until(SETTLE, "the slow service's container runs", || {
                running(&project) > 0
            });
            std::thread::sleep(Duration::from_secs(3));
            std::fs::write(file, "").unwrap();
        })
    };
    let out = stackctl(&env, &bus, &["start", "--wait", &slow]);
    let took = t0.elapsed();
    maker.join().unwrap();
    assert_eq!(out.code, 0, "{out}");
    assert!(
        took >= Duration::from_secs(3),
        "returned after {took:?}: {out}"
    );
    assert!(
        out.stdout
            .contains(&format!("{slow}: running and healthy after")),
        "{out}"
    );
    // The health changes were streamed on the way: not yet, then healthy.
    let changes: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with(&format!("{slow}: ")) && l.contains(", health "))
        .collect();
    let unhealthy = changes.iter().position(|l| l.contains("health unhealthy"));
    let healthy = changes.iter().position(|l| l.contains("health healthy"));
    assert!(
        unhealthy.is_some() && healthy.is_some() && unhealthy < healthy,
        "{out}"
    );
    assert_eq!(stackctl(&env, &bus, &["is-active", &slow]).code, 0);

    // restart --wait on a healthy service returns 0 as well.
    let out = stackctl(&env, &bus, &["restart", "--wait", &slow]);
    assert_eq!(out.code, 0, "{out}");

    // Never healthy: "timeout" and exit 1 once its start_timeout passed.
    let t0 = std::time::Instant::now();
    let out = stackctl(&env, &bus, &["start", "--wait", &never]);
    let took = t0.elapsed();
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains(") timeout: ")
            && out.stderr.contains(&format!(
                "{never} was not running and healthy within start_timeout 4s"
            )),
        "{out}"
    );
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(60),
        "{took:?}"
    );
    // The task says so too, for whoever looks later.
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &never]);
    assert_eq!(tasks[0]["result"], "timeout", "{tasks}");
    // --no-block with --wait queues the waiting task and prints its id.
    let out = stackctl(&env, &bus, &["restart", "--wait", "--no-block", &slow]).expect_success();
    let id: u64 = out.stdout.trim().parse().expect("a task id");
    wait_until(SETTLE, "the waiting restart succeeded", || {
        stackctl_json(&env, &bus, &["task", &id.to_string()])["result"] == "done"
    });
}
