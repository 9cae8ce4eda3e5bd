//! Tests of the test harness itself (tests/common): the image, the private
//! bus, the temp env and its cleanup, and the daemon fixture driven by a
//! stand-in. None of them needs stackd.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{
    busctl, busctl_as, containers, docker, ensure_image, have_bus, have_docker, have_setpriv,
    require, running, wait_until, which, Bus, Daemon, TestEnv,
};

#[test]
fn docker_image_is_built_once_and_runs_busybox() {
    if !have_docker() {
        return;
    }
    // Several threads at once: one build, every caller gets the name.
    let names: Vec<&str> = (0..4)
        .map(|_| thread::spawn(ensure_image))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| t.join().expect("ensure_image panicked"))
        .collect();
    let image = names[0];
    assert!(names.iter().all(|n| *n == image), "{names:?}");
    // The tag is the recipe's hash, so an image of the same repository built
    // another way (an older checkout's `:1`, an sh-only import) is another
    // image and never taken for this one.
    let (repository, tag) = image.split_once(':').expect("name:tag");
    assert_eq!(repository, "stackd-test/busybox");
    assert!(
        tag.len() == 12 && tag.bytes().all(|b| b.is_ascii_hexdigit()),
        "{image}"
    );

    let out = docker(&["run", "--rm", image, "echo", "ok"]).expect_success();
    assert_eq!(out.stdout, "ok\n");

    let cmd = docker(&[
        "image",
        "inspect",
        "--format",
        "{{json .Config.Cmd}}",
        image,
    ])
    .expect_success();
    assert_eq!(cmd.stdout.trim(), r#"["/bin/sh"]"#);

    // The applets tests rely on are linked, and the shell works.
    let script = "for a in sh sleep httpd true false cat echo nc wget; do \
                  [ -x /bin/$a ] || { echo missing $a; exit 1; }; done; \
                  ! false && true && echo ok";
    let out = docker(&["run", "--rm", image, "sh", "-c", script]).expect_success();
    assert_eq!(out.stdout, "ok\n");
}

#[test]
fn bus_starts_and_answers() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("bus_starts_and_answers");
    let bus = Bus::start(env.dir());
    assert!(bus.address().starts_with("unix:path="), "{}", bus.address());
    let out = busctl(&bus, &["list"]).expect_success();
    assert!(out.stdout.contains("org.freedesktop.DBus"), "{out}");
}

#[test]
fn bus_lets_another_uid_connect() {
    if !have_bus() || !have_setpriv() {
        return;
    }
    let env = TestEnv::new("bus_lets_another_uid_connect");
    let bus = Bus::start(env.dir());
    let out = busctl_as(65534, &bus, &["list"]).expect_success();
    assert!(out.stdout.contains("org.freedesktop.DBus"), "{out}");
    // busctl lists its own connection with the uid the bus saw.
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains("busctl") && l.contains("nobody")),
        "{out}"
    );
}

#[test]
fn env_has_its_layout_and_a_prefix_of_its_own() {
    let env = TestEnv::new("env_layout");
    let other = TestEnv::new("env_layout");
    assert_ne!(env.prefix(), other.prefix());
    assert!(env
        .prefix()
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    assert_eq!(env.project("web"), format!("{}-web", env.prefix()));

    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(env.dir()), 0o755);
    assert_eq!(mode(&env.compose_dir()), 0o755);
    assert_eq!(mode(&env.run_dir()), 0o700);
    assert!(env.state_dir().is_dir());

    let first = fs::read_to_string(env.boot_id_file()).unwrap();
    let second = env.new_boot();
    assert_eq!(second.len(), 36, "{second}");
    assert_ne!(first.trim(), second);
    assert_eq!(
        fs::read_to_string(env.boot_id_file()).unwrap().trim(),
        second
    );

    let web = env.add_project("web", "services: {}\n");
    assert!(env
        .compose_dir()
        .join(&web)
        .join("docker-compose.yml")
        .is_file());
    let config = fs::read_to_string(env.write_config("max_parallel = 2\n")).unwrap();
    for want in [
        "host = \"testhost\"",
        &format!("compose_dir = \"{}\"", env.compose_dir().display()),
        &format!("state_dir = \"{}\"", env.state_dir().display()),
        &format!("boot_id_file = \"{}\"", env.boot_id_file().display()),
        "max_parallel = 2",
    ] {
        assert!(config.contains(want), "{want} not in:\n{config}");
    }

    let dir = env.dir().to_path_buf();
    drop(env);
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn docker_env_drop_removes_its_projects() {
    if !have_docker() {
        return;
    }
    let (project, prefix) = {
        let env = TestEnv::new("env_drop_removes_its_projects");
        let project = env.add_sleeper("drop");
        env.compose(&project, &["up", "-d"]).expect_success();
        wait_until(Duration::from_secs(60), "the sleeper to run", || {
            running(&project) == 1
        });
        let row = &containers(&project)[0];
        assert_eq!(row.service, "main");
        assert_eq!(row.health, None);
        assert!(
            !networks(env.prefix()).is_empty(),
            "no network for {project}"
        );
        (project, env.prefix().to_owned())
    };
    assert_eq!(containers(&project), vec![]);
    assert_eq!(networks(&prefix), Vec::<String>::new());
}

fn networks(prefix: &str) -> Vec<String> {
    docker(&["network", "ls", "--format", "{{.Name}}"])
        .expect_success()
        .stdout
        .lines()
        .filter(|n| n.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// A stand-in for stackd: the `sd_notify` side of the daemon fixture.
fn fake_daemon(env: &TestEnv, bus: &Bus, script: &str) -> Daemon {
    Daemon::start_program(
        Path::new("/bin/sh"),
        &[OsStr::new("-c"), OsStr::new(script)],
        env,
        bus,
        &[("FAKE_GREETING", "hello")],
    )
}

fn have_systemd_notify() -> bool {
    require(
        "systemd-notify",
        which("systemd-notify").is_some(),
        "apt-get install systemd",
    )
}

#[test]
fn daemon_fixture_waits_for_ready_and_stops_with_sigterm() {
    if !have_bus() || !have_systemd_notify() {
        return;
    }
    let env = TestEnv::new("daemon_fixture_ready");
    let bus = Bus::start(env.dir());
    let script = r#"
        trap 'systemd-notify STOPPING=1; exit 0' TERM
        echo "starting on $DBUS_SESSION_BUS_ADDRESS" >&2
        sleep 0.2
        systemd-notify --ready --status="$FAKE_GREETING"
        while :; do sleep 0.1; done
    "#;
    let mut daemon = fake_daemon(&env, &bus, script);
    assert!(daemon.ready_after() >= Duration::from_millis(200));
    assert!(daemon.ready_after() < common::READY_TIMEOUT);
    let status = daemon.wait_notify(Duration::from_secs(5), "STATUS", |l| {
        l.starts_with("STATUS=")
    });
    assert_eq!(status, "STATUS=hello");
    assert!(
        daemon.stderr().contains(bus.address()),
        "{}",
        daemon.stderr()
    );

    assert!(daemon.stop().success());
    daemon.wait_notify(Duration::from_secs(5), "STOPPING=1", |l| l == "STOPPING=1");
    assert!(daemon.notifications()[0].contains("READY=1"));
}

#[test]
fn daemon_fixture_reports_an_early_exit_with_its_stderr() {
    if !have_bus() {
        return;
    }
    let env = TestEnv::new("daemon_fixture_early_exit");
    let bus = Bus::start(env.dir());
    let panic = catch_unwind(AssertUnwindSafe(|| {
        fake_daemon(&env, &bus, "echo 'config: bad key' >&2; exit 3")
    }))
    .map(|_| ())
    .expect_err("start should have panicked");
    let message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("exit status: 3"), "{message}");
    assert!(message.contains("before READY=1"), "{message}");
    assert!(message.contains("config: bad key"), "{message}");
}
