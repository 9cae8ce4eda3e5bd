//! stackctl as an admin types it: several names at once with a refusal in
//! the middle, `health` as a gate with its counts and exit code, the is-*
//! verbs and systemctl's flags, all against a real daemon and Docker.

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
fn several_names_each_tried_a_refusal_reported_by_name_exit_1() {
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
fn health_counts_and_exits_1_while_a_wanted_service_is_unhealthy() {
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
