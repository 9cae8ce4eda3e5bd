//! Who may do what: reading is open to every user, changing state is not.
//! The daemon runs as root here; the caller is uid 65534 (nobody).

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use common::{
    busctl_as, busctl_error_name, containers, have_bus, have_docker, have_setpriv, stackctl_as,
    stackctl_json, start_service_call, Bus, Daemon, TestEnv,
};

const NOBODY: u32 = 65534;

#[test]
fn docker_an_unprivileged_caller_may_read_but_not_start() {
    if !have_docker() || !have_bus() || !have_setpriv() {
        return;
    }
    let env = TestEnv::new("access_nobody");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let list = stackctl_as(NOBODY, &bus, &["list"]).expect_success();
    assert!(list.stdout.contains(&web), "{list}");
    let list = stackctl_as(NOBODY, &bus, &["--output", "json", "list"]).expect_success();
    let rows: serde_json::Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(rows[0]["name"], web.as_str(), "{rows}");

    let out = stackctl_as(NOBODY, &bus, &["start", &web]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("may not"),
        "says access is denied: {out}"
    );
    assert!(
        out.stderr.contains("65534"),
        "names the caller's uid: {out}"
    );

    // busctl prints only the message; the name shows in its debug log.
    let out = busctl_as(NOBODY, &bus, &start_service_call(&web));
    assert!(out.stderr.contains("may not"), "{out}");
    assert_eq!(
        busctl_error_name(Some(NOBODY), &bus, &start_service_call(&web)).as_deref(),
        Some("org.stackd1.Error.AccessDenied")
    );

    // Nothing was started, nothing queued, the desired state untouched.
    assert_eq!(containers(&web), vec![]);
    let tasks = stackctl_json(&env, &bus, &["tasks", "--service", &web]);
    assert_eq!(tasks, serde_json::json!([]), "no task for {web}");
    let row = &stackctl_json(&env, &bus, &["list"])[0];
    assert_eq!(row["desired_state"], "stopped", "{row}");
}

/// `stackctl --user ARGS` as uid 65534 with the supplementary `groups`
/// (numeric, comma-separated), through setpriv.
fn stackctl_with_groups(groups: &str, bus: &Bus, args: &[&str]) -> common::Output {
    let mut cmd = std::process::Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg(format!("--groups={groups}"))
        .env("HOME", "/")
        .arg(env!("CARGO_BIN_EXE_stackctl"))
        .arg("--user")
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .env_remove("XDG_RUNTIME_DIR");
    common::run(&mut cmd, common::COMMAND_TIMEOUT)
}

/// Container output, task logs and diagnoses may carry secrets: a stranger
/// (uid 65534) is refused them with AccessDenied and `status` hides its
/// log lines saying why, while a member of group `adm` reads them, as
/// `journalctl` would let each of them.
#[test]
fn docker_logs_are_kept_from_strangers_and_open_to_adm() {
    if !have_docker() || !have_bus() || !have_setpriv() {
        return;
    }
    let env = TestEnv::new("access_logs");
    let image = common::ensure_image();
    let web = env.add_project(
        "web",
        &format!(
            "version: \"2.4\"\nservices:\n  main:\n    image: {image}\n    pull_policy: never\n    \
             command: [\"sh\", \"-c\", \"echo DB_PASSWORD=hunter2; exec sleep 3600\"]\n    \
             init: true\n    stop_grace_period: 1s\n"
        ),
    );
    env.write_config(&format!("[services.{web}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    common::stackctl(&env, &bus, &["start", &web]).expect_success();
    common::wait_until(
        std::time::Duration::from_secs(30),
        "the password line is in the container's log",
        || {
            common::stackctl(&env, &bus, &["logs", &web])
                .stdout
                .contains("DB_PASSWORD")
        },
    );
    let task = stackctl_json(&env, &bus, &["tasks", "--service", &web])[0]["id"]
        .as_u64()
        .expect("the start task");
    let task_path = format!("/org/stackd1/task/{task}");
    let manager = |method: &'static str| {
        vec![
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            method,
        ]
    };
    let mut service_logs = manager("ServiceLogs");
    service_logs.extend(["sub", &web, "10", "false"]);
    let mut diagnose = manager("Diagnose");
    diagnose.extend(["s", &web]);
    let task_log = vec!["call", "org.stackd1", &task_path, "org.stackd1.Task", "Log"];
    let mut log_since = vec![
        "call",
        "org.stackd1",
        &task_path,
        "org.stackd1.Task",
        "LogSince",
    ];
    log_since.extend(["u", "0"]);

    // A stranger: refused, named, and nothing leaks through status.
    for call in [&service_logs, &diagnose, &task_log, &log_since] {
        assert_eq!(
            busctl_error_name(Some(NOBODY), &bus, call).as_deref(),
            Some("org.stackd1.Error.AccessDenied"),
            "{call:?}"
        );
    }
    let out = stackctl_as(NOBODY, &bus, &["logs", &web]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("may not read logs") && out.stderr.contains("adm"),
        "{out}"
    );
    let status = stackctl_as(NOBODY, &bus, &["status", &web]);
    assert_eq!(status.code, 0, "{status}");
    assert!(
        status.stdout.contains("Active: active"),
        "status is shown: {status}"
    );
    assert!(status.stdout.contains("Log lines hidden"), "{status}");
    assert!(!status.stdout.contains("DB_PASSWORD"), "{status}");
    let out = stackctl_as(NOBODY, &bus, &["diagnose", &web]);
    assert_eq!(out.code, 1, "{out}");
    let out = stackctl_as(NOBODY, &bus, &["task", &task.to_string()]);
    assert!(out.stdout.contains("log lines hidden"), "{out}");

    // Group adm (gid 4): the logs, the task log and the diagnosis.
    let out = stackctl_with_groups("4", &bus, &["logs", &web]).expect_success();
    assert!(out.stdout.contains("DB_PASSWORD=hunter2"), "{out}");
    let status = stackctl_with_groups("4", &bus, &["status", &web]).expect_success();
    assert!(status.stdout.contains("DB_PASSWORD"), "{status}");
    stackctl_with_groups("4", &bus, &["diagnose", &web]).expect_success();
    let out = stackctl_with_groups("4", &bus, &["task", &task.to_string()]).expect_success();
    assert!(!out.stdout.contains("hidden"), "{out}");
    // Other groups do not count.
    let out = stackctl_with_groups("100", &bus, &["logs", &web]);
    assert_eq!(out.code, 1, "{out}");
}
