//! Bad cluster files, as a user meets them: `stackd --check-config` and
//! `stackctl validate` exit 1 and point at `FILE:LINE:COL`; a running daemon
//! refuses to reload a bad file and keeps its configuration, then takes the
//! fixed one.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

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

/// A cluster file cut after its first service (as a failed copy leaves
/// it): the reload is refused naming the services that would go, the
/// running configuration stays (ConfigHash) and nothing is stopped. Forced,
/// the reload takes it, and then `apply` asks for `--force` before it stops
/// the services no longer assigned to this host.
#[test]
fn docker_a_truncated_file_is_refused_on_reload_until_forced() {
    if !common::have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("config_truncated");
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| env.add_sleeper(n)).collect();
    let whole: String = names
        .iter()
        .map(|n| format!("[services.{n}]\nauto_start = true\n\n"))
        .collect();
    let config = env.write_config(&whole);
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);
    for n in &names {
        common::wait_until(
            std::time::Duration::from_secs(120),
            &format!("{n} running"),
            || common::running(n) > 0,
        );
    }
    let hash = config_hash(&bus);

    // Cut right after the first service's table.
    let text = fs::read_to_string(&config).unwrap();
    let cut = text.find(&format!("[services.{}]", names[1])).unwrap();
    fs::write(&config, &text[..cut]).unwrap();
    let out = stackctl(&env, &bus, &["reload"]);
    assert_eq!(out.code, 1, "{out}");
    for gone in &names[1..] {
        assert!(out.stderr.contains(gone.as_str()), "names {gone}: {out}");
    }
    assert!(
        out.stderr.contains("2 of this host's 3 services") && out.stderr.contains("--force"),
        "{out}"
    );
    assert_eq!(config_hash(&bus), hash, "ConfigHash is unchanged");
    let mut all = names.clone();
    all.sort();
    assert_eq!(listed(&env, &bus), all, "the old services stay");
    // `validate` warns when it can ask the running daemon.
    let v = common::run(
        std::process::Command::new(env!("CARGO_BIN_EXE_stackctl"))
            .args(["--user", "validate", config.to_str().unwrap()])
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
            .env("XDG_RUNTIME_DIR", env.run_dir()),
        common::COMMAND_TIMEOUT,
    );
    assert_eq!(v.code, 0, "{v}");
    assert!(
        v.stderr
            .contains("warning: compared with the running stackd")
            && v.stderr.contains(names[2].as_str()),
        "{v}"
    );
    // An empty file: refused as every service, and `validate` says empty.
    fs::write(&config, "").unwrap();
    let out = stackctl(&env, &bus, &["reload"]);
    assert!(out.code == 1 && out.stderr.contains("every one"), "{out}");
    let v = stackctl_validate(config.to_str().unwrap());
    assert!(v.code == 1 && v.stderr.contains("is empty"), "{v}");
    assert_eq!(config_hash(&bus), hash);

    // Forced: the cut file is taken; nothing stops yet.
    fs::write(&config, &text[..cut]).unwrap();
    stackctl(&env, &bus, &["reload", "--force"]).expect_success();
    assert_ne!(config_hash(&bus), hash);
    assert_eq!(listed(&env, &bus), vec![names[0].clone()]);
    // `apply` refuses to stop two of three services at once.
    let out = stackctl(&env, &bus, &["apply"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("apply refused") && out.stderr.contains("--force"),
        "{out}"
    );
    for n in &names {
        assert!(common::running(n) > 0, "{n} was stopped by a refused apply");
    }
    stackctl(&env, &bus, &["apply", "--force"]).expect_success();
    for gone in &names[1..] {
        common::wait_until(
            std::time::Duration::from_secs(60),
            &format!("{gone} stopped"),
            || common::running(gone) == 0,
        );
    }
    assert!(common::running(&names[0]) > 0);
}

/// `--check-config` refuses what the daemon would refuse at start: a state
/// directory that is a file, a token file others may read, and a boot id
/// file that is no boot id (read boundedly: `/dev/zero` answers at once).
/// A file that is not UTF-8 is located like any other error.
#[test]
fn check_config_refuses_what_the_daemon_would() {
    let env = TestEnv::new("config_check_host");
    let path = env.dir().join("host.toml");
    let check = |text: &str| {
        fs::write(&path, text).unwrap();
        let t = std::time::Instant::now();
        let out = stackd(&["--check-config", "--config", path.to_str().unwrap()]);
        (out, t.elapsed())
    };
    let base = format!(
        "host = \"h\"\ncompose_dir = {}\nboot_id_file = {}\n",
        common::toml_str(&env.compose_dir().display().to_string()),
        common::toml_str(&env.boot_id_file().display().to_string()),
    );
    let (ok, _) = check(&base);
    assert_eq!(ok.code, 0, "{ok}");

    let (out, _) = check(&format!("{base}state_dir = \"/etc/passwd\"\n"));
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("/etc/passwd") && out.stderr.contains("not a directory"),
        "{out}"
    );

    let token = env.dir().join("peer.token");
    fs::write(&token, "secret-token-0123456789\n").unwrap();
    fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let peer = format!(
        "\n[peer]\nlisten = \"127.0.0.1:1\"\ntoken_file = {}\n",
        common::toml_str(&token.display().to_string())
    );
    let (out, _) = check(&format!("{base}{peer}"));
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("0644") && out.stderr.contains("chmod 600"),
        "{out}"
    );
    fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    assert_eq!(check(&format!("{base}{peer}")).0.code, 0);

    let zero = base.replace(
        &common::toml_str(&env.boot_id_file().display().to_string()),
        "\"/dev/zero\"",
    );
    let (out, took) = check(&zero);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("/dev/zero") && out.stderr.contains("not a boot id"),
        "{out}"
    );
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");

    // Not UTF-8: the position of the first bad byte.
    fs::write(&path, [base.as_bytes(), b"# caf\xe9\n"].concat()).unwrap();
    let validate = stackctl_validate(path.to_str().unwrap());
    let out = stackd(&["--check-config", "--config", path.to_str().unwrap()]);
    let at = format!("{}:4:6: byte 0xe9 is not UTF-8", path.display());
    for o in [out, validate] {
        assert_eq!(o.code, 1, "{o}");
        assert!(o.stderr.contains(&at), "{at}: {o}");
    }
}

/// The cluster file was cut while stackd was down: the start-up reconcile
/// does not stop the services the file no longer names (nobody asked it
/// to), says so in its log and as an alert, and a person's `apply --force`
/// still can.
#[test]
fn docker_a_file_truncated_while_stopped_does_not_stop_services_at_start() {
    if !common::have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("config_truncated_start");
    let names: Vec<String> = ["a", "b", "c"].iter().map(|n| env.add_sleeper(n)).collect();
    let whole: String = names
        .iter()
        .map(|n| format!("[services.{n}]\nauto_start = true\n\n"))
        .collect();
    let config = env.write_config(&whole);
    let bus = Bus::start(env.dir());
    let mut daemon = Daemon::start(&env, &bus);
    for n in &names {
        common::wait_until(
            std::time::Duration::from_secs(120),
            &format!("{n} running"),
            || common::running(n) > 0,
        );
    }
    daemon.stop();
    let text = fs::read_to_string(&config).unwrap();
    let cut = text.find(&format!("[services.{}]", names[1])).unwrap();
    fs::write(&config, &text[..cut]).unwrap();
    let daemon = Daemon::start(&env, &bus);
    let reconcile = || {
        stackctl_json(&env, &bus, &["tasks"])
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "reconcile" && t["origin"] == "start")
            .cloned()
    };
    common::wait_until(
        std::time::Duration::from_secs(60),
        "the start-up reconcile ends",
        || reconcile().is_some_and(|t| t["state"] == "succeeded" || t["state"] == "failed"),
    );
    let id = reconcile().unwrap()["id"].to_string();
    let log = stackctl(&env, &bus, &["task", &id]).stdout;
    assert!(
        log.contains("not stopping services no longer assigned") && log.contains("--force"),
        "{log}"
    );
    for n in &names {
        assert!(common::running(n) > 0, "{n} was stopped at start:\n{log}");
    }
    assert!(
        daemon.stderr().contains("left running"),
        "the alert is logged:\n{}",
        daemon.stderr()
    );
    stackctl(&env, &bus, &["apply", "--force"]).expect_success();
    for gone in &names[1..] {
        common::wait_until(
            std::time::Duration::from_secs(60),
            &format!("{gone} stopped"),
            || common::running(gone) == 0,
        );
    }
}
