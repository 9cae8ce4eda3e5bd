//! Docker unreachable: stackd still starts and answers, says Docker is
//! unavailable, refuses to start services with a named error, and picks up
//! by itself once the engine's socket comes alive.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;
#[path = "common/http.rs"]
mod http;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{
    busctl, busctl_error_name, have_bus, have_docker, require, running, stackctl,
    start_service_call, toml_str, wait_until, which, Bus, Daemon, TestEnv,
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
fn docker_absent_the_daemon_answers_and_refuses_to_start() {
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

/// socat forwarding a unix socket to the real Docker socket. Killed on
/// drop with the children it forked for each connection (its process
/// group), so open connections such as the event stream break too.
struct Forwarder(Child);

impl Forwarder {
    fn start(listen: &Path) -> Forwarder {
        let child = Command::new("socat")
            .process_group(0)
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
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
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

#[test]
fn docker_lost_and_back_are_notified() {
    if !have_docker()
        || !have_bus()
        || !require("socat", which("socat").is_some(), "apt-get install socat")
    {
        return;
    }
    let env = TestEnv::new("docker_down_alerts");
    let web = env.add_sleeper("web");
    let socket = env.dir().join("docker.sock");
    let host = format!("unix://{}", socket.display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (port, seen) = rt.block_on(http::http_listener(vec![200]));
    env.write_config(&format!(
        "[services.{web}]\nauto_start = false\n\n[notify.webhook.ops]\nurl = {}\nmin_severity = \"info\"\n",
        toml_str(&format!("http://127.0.0.1:{port}/hook"))
    ));
    let forwarder = Forwarder::start(&socket);
    wait_until(Duration::from_secs(10), "socat listens", || socket.exists());
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start_with(&env, &bus, &[("DOCKER_HOST", &host)], &[]);
    wait_until(Duration::from_secs(30), "DockerConnected", || {
        docker_connected(&bus) == "b true"
    });
    let kinds = || -> Vec<(String, String, String)> {
        seen.lock()
            .unwrap()
            .iter()
            .map(|s| {
                let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
                let field = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
                (field("kind"), field("severity"), field("body"))
            })
            .filter(|(k, _, _)| k.starts_with("docker-"))
            .collect()
    };

    // The engine goes away: its event stream breaks and reconnects fail.
    drop(forwarder);
    wait_until(
        Duration::from_secs(30),
        "DockerConnected to turn false",
        || docker_connected(&bus) == "b false",
    );
    wait_until(
        Duration::from_secs(30),
        "docker-lost at the webhook",
        || !kinds().is_empty(),
    );
    let lost = kinds().remove(0);
    assert_eq!(
        (lost.0.as_str(), lost.1.as_str()),
        ("docker-lost", "critical"),
        "{lost:?}"
    );
    assert!(lost.2.contains("nothing can be started"), "{lost:?}");

    // SIGKILL left socat's socket file behind; it would refuse to listen.
    let _ = std::fs::remove_file(&socket);
    let _forwarder = Forwarder::start(&socket);
    wait_until(Duration::from_secs(60), "DockerConnected again", || {
        docker_connected(&bus) == "b true"
    });
    wait_until(
        Duration::from_secs(30),
        "docker-back at the webhook",
        || kinds().len() >= 2,
    );
    let all = kinds();
    let names: Vec<&str> = all.iter().map(|k| k.0.as_str()).collect();
    assert_eq!(names, ["docker-lost", "docker-back"], "{all:?}");
    assert_eq!(all[1].1, "info", "{all:?}");
    // Once each: nothing more comes while Docker stays up.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(kinds().len(), 2, "{:?}", kinds());
}
