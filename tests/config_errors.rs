//! Bad cluster files, as a user meets them: `stackd --check-config` and
//! `stackctl validate` exit 1 and point at `FILE:LINE:COL`; a running daemon
//! refuses to reload a bad file and keeps its configuration, then takes the
//! fixed one.

mod common;

use std::fs;
use std::path::Path;

use common::{busctl, have_bus, stackctl, stackctl_json, stackd, Bus, Daemon, Output, TestEnv};

/// `FILE:LINE:COL` of the first `needle` in `file` (1-based, in characters),
/// so the expected position comes from the file itself.
fn position(file: &Path, needle: &str) -> String {
    let text = fs::read_to_string(file).unwrap();
    let (n, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not in {}:\n{text}", file.display()));
    let col = line[..line.find(needle).unwrap()].chars().count() + 1;
    format!("{}:{}:{}", file.display(), n + 1, col)
}

/// Both checkers fail with exit code 1 and print a line starting with
/// `at: ` and holding `says`.
#[track_caller]
fn assert_rejected(config: &Path, at: &str, says: &str) {
    let config = config.to_str().unwrap();
    let check = stackd(&["--check-config", "--config", config]);
    let validate = stackctl_validate(config);
    for out in [check, validate] {
        assert_eq!(out.code, 1, "{out}");
        let printed = format!("{}{}", out.stdout, out.stderr);
        let line = printed
            .lines()
            .find(|l| l.starts_with(&format!("{at}: ")))
            .unwrap_or_else(|| panic!("no line starting with {at}: {out}"));
        assert!(line.contains(says), "{line:?} should say {says:?}");
    }
}

/// `stackctl validate FILE`: no daemon needed.
fn stackctl_validate(config: &str) -> Output {
    common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_stackctl")).args(["validate", config]),
        common::COMMAND_TIMEOUT,
    )
}

#[test]
fn unknown_key_is_reported_at_the_key() {
    let env = TestEnv::new("config_unknown_key");
    let web = env.add_project("web", "services: {}\n");
    let config = env.write_config(&format!(
        "[services.{web}]\nauto_start = true\ncolour = \"red\"\n"
    ));
    assert_rejected(
        &config,
        &position(&config, "colour"),
        "unknown field `colour`",
    );
}

#[test]
fn wrong_type_is_reported_at_the_value() {
    let env = TestEnv::new("config_wrong_type");
    let web = env.add_project("web", "services: {}\n");
    let config = env.write_config(&format!(
        "max_parallel = 2\n\n[services.{web}]\nauto_start = \"yes\"\n"
    ));
    assert_rejected(&config, &position(&config, "\"yes\""), "expected a boolean");
}

#[test]
fn dependency_cycle_across_a_drop_in_is_reported_where_it_closes() {
    let env = TestEnv::new("config_cycle");
    let a = env.add_project("a", "services: {}\n");
    let b = env.add_project("b", "services: {}\n");
    let config = env.write_config(&format!("[services.{a}]\ndepends_on = [\"{b}\"]\n"));
    let drop_in_dir = env.dir().join("stackd.d");
    fs::create_dir(&drop_in_dir).unwrap();
    let drop_in = drop_in_dir.join("10-x.toml");
    fs::write(
        &drop_in,
        format!(
            "# b, from a drop-in\n[services.{b}]\nauto_start = false\ndepends_on = [\"{a}\"]\n"
        ),
    )
    .unwrap();
    assert_rejected(
        &config,
        &position(&drop_in, &format!("\"{a}\"")),
        &format!("dependency cycle: {b} -> {a} -> {b}"),
    );
    // The same drop-in without the back edge: the merged file is fine.
    fs::write(&drop_in, format!("[services.{b}]\nauto_start = false\n")).unwrap();
    let ok = stackd(&["--check-config", "--config", config.to_str().unwrap()]).expect_success();
    assert!(ok.stdout.contains("ok (2 services"), "{ok}");
}

#[test]
fn missing_compose_file_is_reported_at_the_service() {
    let env = TestEnv::new("config_missing_compose");
    let web = env.add_project("web", "services: {}\n");
    let ghost = env.project("ghost");
    let config = env.write_config(&format!(
        "[services.{web}]\n\n[services.{ghost}]\nauto_start = true\n"
    ));
    assert_rejected(
        &config,
        &position(&config, &format!("[services.{ghost}]")),
        &format!("service `{ghost}` runs on this host but"),
    );
    let out = stackd(&["--check-config", "--config", config.to_str().unwrap()]);
    assert!(out.stderr.contains("has no compose file"), "{out}");
}

fn config_hash(bus: &Bus) -> String {
    busctl(
        bus,
        &[
            "get-property",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "ConfigHash",
        ],
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned()
}

fn listed(env: &TestEnv, bus: &Bus) -> Vec<String> {
    let mut names: Vec<String> = stackctl_json(env, bus, &["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn reload_with_a_bad_file_keeps_the_running_config() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("config_reload");
    let web = env.add_project("web", "services: {}\n");
    let api = env.add_project("api", "services: {}\n");
    let good = format!("[services.{web}]\nauto_start = false\n");
    let config = env.write_config(&good);
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    let hash = config_hash(&bus);
    assert!(hash.starts_with("s \"") && hash.len() > 6, "{hash}");
    assert_eq!(listed(&env, &bus), vec![web.clone()]);

    // A broken file: the reload is refused with the position.
    env.write_config(&format!("{good}restart_policy = \"always\"\n"));
    let at = position(&config, "restart_policy");
    let out = stackctl(&env, &bus, &["reload"]);
    assert_ne!(out.code, 0, "{out}");
    assert!(
        out.stderr
            .contains(&format!("{at}: unknown field `restart_policy`")),
        "reload names {at}: {out}"
    );
    assert_eq!(
        listed(&env, &bus),
        vec![web.clone()],
        "the old services stay"
    );
    assert_eq!(config_hash(&bus), hash, "ConfigHash is unchanged");
    let status = stackctl(&env, &bus, &["status", &web]);
    assert_eq!(status.code, 3, "{status}");
    assert!(
        daemon.stderr().contains("c273d99cff4c47a885f38ec5d2c2d975"),
        "the refusal is logged with its MESSAGE_ID:\n{}",
        daemon.stderr()
    );

    // Fixed, with one more service: the reload takes it.
    env.write_config(&format!("{good}\n[services.{api}]\nauto_start = false\n"));
    stackctl(&env, &bus, &["reload"]).expect_success();
    let mut both = vec![web.clone(), api.clone()];
    both.sort();
    assert_eq!(listed(&env, &bus), both);
    assert_ne!(config_hash(&bus), hash, "ConfigHash follows the new file");
    assert!(
        daemon
            .notifications()
            .iter()
            .any(|n| n.lines().any(|l| l == "RELOADING=1")),
        "RELOADING=1 was sent: {:?}",
        daemon.notifications()
    );
}
