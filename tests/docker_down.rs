//! Docker unreachable: stackd still starts and answers, says Docker is
//! unavailable, refuses to start services with a named error, and picks up
//! by itself once the engine's socket comes alive.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    busctl, busctl_error_name, have_bus, have_docker, require, running, stackctl,
    start_service_call, wait_until, which, Bus, Daemon, TestEnv,
};

fn docker_connected(bus: &Bus) -> String {
    busctl(
        bus,
        &[
            "get-property",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "DockerConnected",
        ],
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned()
}

#[test]
fn without_docker_the_daemon_answers_and_refuses_to_start() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("docker_down_unreachable");
    let web = env.add_sleeper("web");
    env.write_config(&format!("[services.{web}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start_with(
        &env,
        &bus,
        &[("DOCKER_HOST", "unix:///nonexistent.sock")],
        &[],
    );

    assert_eq!(docker_connected(&bus), "b false");
    let status = stackctl(&env, &bus, &["status"]).expect_success();
    let docker_line = status
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("Docker:"))
        .unwrap_or_else(|| panic!("no Docker line: {status}"));
    assert!(docker_line.contains("unavailable"), "{status}");
    assert!(
        docker_line.contains("nonexistent.sock"),
        "says why: {status}"
    );
    // The service is still listed (from the config).
    let list = stackctl(&env, &bus, &["list"]).expect_success();
    assert!(list.stdout.contains(&web), "{list}");

    let out = stackctl(&env, &bus, &["start", &web]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("Docker is unavailable"), "{out}");
    assert_eq!(
        busctl_error_name(None, &bus, &start_service_call(&web)).as_deref(),
        Some("org.stackd1.Error.DockerUnavailable")
    );
    assert_eq!(running(&web), 0);
    let status = stackctl(&env, &bus, &["status", &web]);
    assert!(
        status.stdout.contains("Desired: stopped (set by config)"),
        "a refused start does not change the desired state: {status}"
    );
}

/// socat forwarding a unix socket to the real Docker socket. Killed on drop.
struct Forwarder(Child);

impl Forwarder {
    fn start(listen: &Path) -> Forwarder {
        let child = Command::new("socat")
            .arg(format!("UNIX-LISTEN:{},fork", listen.display()))
            .arg("UNIX-CONNECT:/var/run/docker.sock")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        Forwarder(child)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn docker_coming_up_later_is_picked_up() {
    if !have_docker()
        || !have_bus()
        || !require("socat", which("socat").is_some(), "apt-get install socat")
    {
        return;
    }
    let env = TestEnv::new("docker_down_later");
    let auto = env.add_sleeper("auto");
    let manual = env.add_sleeper("manual");
    env.write_config(&format!(
        "[services.{auto}]\nauto_start = true\n\n[services.{manual}]\nauto_start = false\n"
    ));
    let socket = env.dir().join("docker.sock");
    let host = format!("unix://{}", socket.display());
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start_with(&env, &bus, &[("DOCKER_HOST", &host)], &[]);

    assert_eq!(docker_connected(&bus), "b false");
    let out = stackctl(&env, &bus, &["start", &manual]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("Docker is unavailable"), "{out}");

    // The engine "comes up": its socket answers at DOCKER_HOST.
    let _forwarder = Forwarder::start(&socket);
    wait_until(
        Duration::from_secs(60),
        "DockerConnected to turn true",
        || docker_connected(&bus) == "b true",
    );
    let status = stackctl(&env, &bus, &["status"]).expect_success();
    assert!(status.stdout.contains("Docker: connected"), "{status}");
    // The start-up reconcile waited for Docker and starts the auto_start one.
    wait_until(
        Duration::from_secs(120),
        "the auto_start service to run",
        || running(&auto) == 1,
    );
    // Compose runs with the daemon's DOCKER_HOST, through the forwarder.
    stackctl(&env, &bus, &["start", &manual]).expect_success();
    assert_eq!(running(&manual), 1);
    stackctl(&env, &bus, &["status", &manual]).expect_success();
}
