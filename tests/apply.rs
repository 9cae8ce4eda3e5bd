//! `apply` after a config change, reload by SIGHUP, cancel through stackctl,
//! PropertiesChanged on the bus, and the watchdog.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;

fn config(services: &[(&str, bool)]) -> String {
    services
        .iter()
        .map(|(name, auto)| format!("[services.{name}]\nauto_start = {auto}\n"))
        .collect()
}

#[test]
fn docker_apply_starts_new_services_and_stops_only_removed_ones_it_deployed() {
    if !(have_docker() && have_bus()) {
        return;
    }
    ensure_image();
    let env = TestEnv::new("apply");
    let kept = env.add_sleeper("kept");
    let removed = env.add_sleeper("removed");
    let added = env.add_sleeper("added");
    // Somebody runs this project by hand; stackd never managed it.
    let by_hand = env.add_sleeper("byhand");
    env.compose(&by_hand, &["up", "-d"]).expect_success();

    env.write_config(&config(&[(&kept, true), (&removed, true)]));
    let bus = Bus::start(env.dir());
    let mut daemon = Daemon::start(&env, &bus);
    wait_until(Duration::from_secs(60), "boot recovery starts both", || {
        running(&kept) == 1 && running(&removed) == 1
    });
    assert_eq!(running(&added), 0);

    // The new config drops one service and adds one; SIGHUP reloads it.
    env.write_config(&config(&[(&kept, true), (&added, true)]));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "the reload shows the new service",
        || stackctl(&env, &bus, &["list"]).stdout.contains(&added),
    );
    // Reloading alone changes nothing in Docker.
    assert_eq!(running(&added), 0);
    assert_eq!(running(&removed), 1);

    let apply = stackctl(&env, &bus, &["apply"]).expect_success();
    assert!(
        apply.stdout.contains(&format!("{added}: deploy")),
        "{apply}"
    );
    assert!(
        apply.stdout.contains(&format!("{removed}: stop")),
        "{apply}"
    );
    assert_eq!(running(&added), 1, "{apply}");
    assert_eq!(running(&removed), 0, "{apply}");
    assert_eq!(running(&kept), 1);
    assert_eq!(
        running(&by_hand),
        1,
        "a project stackd never deployed is not touched"
    );
    assert!(!apply.stdout.contains(&by_hand), "{apply}");
    let _ = daemon.stop();
}

#[test]
fn docker_cancel_kills_a_running_compose_command() {
    if !(have_docker() && have_bus()) {
        return;
    }
    let image = ensure_image();
    let env = TestEnv::new("cancel");
    let slow = env.add_project("slow", &slow_compose(image));
    env.write_config(&config(&[(&slow, false)]));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let id = stackctl(&env, &bus, &["--no-block", "start", &slow])
        .expect_success()
        .stdout
        .trim()
        .to_string();
    wait_until(
        Duration::from_secs(30),
        "the start task runs Compose",
        || {
            let t = stackctl(&env, &bus, &["task", &id]).stdout;
            t.contains("State: running") && t.contains("up -d")
        },
    );
    let compose_running = || {
        std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .any(|cmd| String::from_utf8_lossy(&cmd).contains(slow.as_str()))
    };
    let task = stackctl(&env, &bus, &["task", &id]);
    assert!(
        compose_running(),
        "docker-compose for {slow} should be running: {task}"
    );

    stackctl(&env, &bus, &["cancel", &id]).expect_success();
    wait_until(Duration::from_secs(20), "the task ends cancelled", || {
        let t = stackctl_json(&env, &bus, &["task", &id]);
        t["state"] == "cancelled"
    });
    let task = stackctl_json(&env, &bus, &["task", &id]);
    assert_eq!(task["result"], "canceled", "{task}");
    wait_until(
        Duration::from_secs(15),
        "no Compose process is left",
        || !compose_running(),
    );
    // Cancelling again is a clear error, not a crash.
    let again = stackctl(&env, &bus, &["cancel", &id]);
    assert_eq!(again.code, 1, "{again}");
    assert!(again.stderr.contains("already finished"), "{again}");
}

#[test]
fn docker_service_changes_are_announced_with_properties_changed() {
    if !(have_docker() && have_bus()) {
        return;
    }
    ensure_image();
    let env = TestEnv::new("propchanged");
    let web = env.add_sleeper("web");
    env.write_config(&config(&[(&web, false)]));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let mut monitor = std::process::Command::new("busctl")
        .arg(format!("--address={}", bus.address()))
        .args([
            "monitor",
            "--json=short",
            "--match",
            "type='signal',interface='org.freedesktop.DBus.Properties',member='PropertiesChanged'",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    stackctl(&env, &bus, &["start", &web]).expect_success();
    std::thread::sleep(Duration::from_millis(500));
    let _ = monitor.kill();
    let out = monitor.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let path = service_path(&web);
    let ours: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["path"] == path.as_str())
        .collect();
    assert!(!ours.is_empty(), "no PropertiesChanged for {path}:\n{text}");
    let active_states: Vec<String> = ours
        .iter()
        .filter_map(|m| {
            m["payload"]["data"][1]["ActiveState"]["data"]
                .as_str()
                .map(String::from)
        })
        .collect();
    assert!(
        active_states.iter().any(|s| s == "activating"),
        "{active_states:?}"
    );
    assert_eq!(
        active_states.last().map(String::as_str),
        Some("active"),
        "{active_states:?}"
    );
}

#[test]
fn the_watchdog_is_fed_when_systemd_asks() {
    if !require(
        "dbus-daemon",
        have_bus(),
        "apt-get install dbus-daemon systemd",
    ) {
        return;
    }
    let env = TestEnv::new("watchdog");
    env.write_config("");
    let bus = Bus::start(env.dir());
    // systemd sets WATCHDOG_PID to the main process: exec keeps the pid
    // the shell reads as $$.
    let config = env.config_path();
    let args = [
        std::ffi::OsStr::new("-c"),
        std::ffi::OsStr::new(r#"WATCHDOG_PID=$$ WATCHDOG_USEC=400000 exec "$0" "$@""#),
        std::ffi::OsStr::new(env!("CARGO_BIN_EXE_stackd")),
        std::ffi::OsStr::new("--user"),
        std::ffi::OsStr::new("--config"),
        config.as_os_str(),
    ];
    // 400 ms: stackd pings every half of it.
    let daemon = Daemon::start_program(std::path::Path::new("/bin/sh"), &args, &env, &bus, &[]);
    daemon.wait_notify(Duration::from_secs(5), "WATCHDOG=1", |m| {
        m.contains("WATCHDOG=1")
    });
    std::thread::sleep(Duration::from_millis(700));
    let pings = daemon
        .notifications()
        .iter()
        .filter(|m| m.contains("WATCHDOG=1"))
        .count();
    assert!(pings >= 3, "expected a ping every 200 ms, got {pings}");
}
