//! A Docker engine of a test's own: a second `dockerd` in a network
//! namespace of its own, with its own data root, exec root, socket,
//! containerd namespaces and cgroup parent, so a test can stop and restart
//! it (or later run several, one per simulated host) without touching the
//! machine's engine. Include it with
//! `#[path = "common/engine.rs"] mod engine;` next to `mod common;`.
//!
//! Never started with `--bridge none`: in the host's namespace that makes
//! dockerd delete the host's `docker0`. In its own namespace it makes a
//! `docker0` of its own there, and `--iptables=false --ip-masq=false` keep
//! it away from the host's firewall. The storage driver is `vfs`, which
//! works on any filesystem (the test image is a few MB).
//!
//! Drop stops the engine (SIGTERM, then SIGKILL), deletes the namespace and
//! removes its directories; the containerd namespaces it leaves behind are
//! empty.

// A fixture module (also included by path): see common/mod.rs.
#![allow(unreachable_pub, clippy::unwrap_used)]
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use super::common::{require, run, try_run, which, Output, COMMAND_TIMEOUT};

/// How long a start may take before the engine is taken for broken.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a stop may take (its containers get their stop timeout).
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Engine {
    /// The namespace, containerd namespace and cgroup parent all use it.
    name: String,
    root: PathBuf,
    child: Option<Child>,
}

impl Engine {
    /// Starts an engine (`tag` goes into its names). None, after saying
    /// what is missing, when this machine cannot run one (under `CI=true`
    /// that fails the test instead).
    pub fn start(tag: &str) -> Option<Engine> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let root_user = fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
        });
        let tools = ["dockerd", "ip", "nsenter"]
            .iter()
            .all(|t| which(t).is_some());
        if !require(
            "a second dockerd (root, dockerd, ip, nsenter)",
            root_user && tools,
            "run as root on a host with Docker Engine and iproute2",
        ) {
            return None;
        }
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("stk{tag}{}x{seq}", std::process::id());
        // Short: the socket path must fit in sun_path (108 bytes).
        let root = PathBuf::from(format!("/tmp/{name}"));
        let _ = fs::remove_dir_all(&root);
        for sub in ["data", "exec"] {
            fs::create_dir_all(root.join(sub)).expect("engine dirs");
        }
        fs::write(root.join("empty.json"), "{}\n").expect("engine config");
        run(
            Command::new("ip").args(["netns", "add", &name]),
            COMMAND_TIMEOUT,
        )
        .expect_success();
        let mut engine = Engine {
            name,
            root,
            child: None,
        };
        engine.spawn();
        engine.wait_answers();
        Some(engine)
    }

    /// The network namespace it runs in (`/run/netns/NAME`); the netns
    /// harness (`common/netns.rs`) wires it to its bridge and runs that
    /// host's stackd in it too.
    pub fn netns(&self) -> &str {
        &self.name
    }

    /// `unix:///tmp/.../d.sock`, for `DOCKER_HOST`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("d.sock")
    }

    /// Its dockerd's own log.
    pub fn log(&self) -> String {
        fs::read_to_string(self.root.join("dockerd.log")).unwrap_or_default()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the engine already runs");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.root.join("dockerd.log"))
            .expect("engine log");
        let dir = |sub: &str| self.root.join(sub).display().to_string();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.name))
            .arg("dockerd")
            .args(["--config-file", &dir("empty.json")])
            .args(["--data-root", &dir("data")])
            .args(["--exec-root", &dir("exec")])
            .args(["-H", &self.host()])
            .args(["--pidfile", &dir("dockerd.pid")])
            .args(["--iptables=false", "--ip-masq=false"])
            .args(["--containerd-namespace", &self.name])
            .args(["--containerd-plugins-namespace", &format!("{}p", self.name)])
            .args(["--cgroup-parent", &self.name])
            .args(["--storage-driver", "vfs"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("engine log"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
    }

    /// Waits until the engine answers; returns when it did.
    #[track_caller]
    pub fn wait_answers(&self) -> Instant {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let out = try_run(
                Command::new("docker").args([
                    "-H",
                    &self.host(),
                    "version",
                    "--format",
                    "{{.Server.Version}}",
                ]),
                Duration::from_secs(10),
            );
            if out.is_ok_and(|o| o.success()) {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "the test's engine did not answer within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the engine as `systemctl stop docker` would (SIGTERM: it stops
    /// its containers, then exits).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops and starts it again (its containers stay, stopped); returns
    /// when it answers again.
    pub fn restart(&mut self) -> Instant {
        self.stop();
        self.spawn();
        self.wait_answers()
    }

    /// `docker -H <this engine> ARGS`.
    #[track_caller]
    pub fn docker(&self, args: &[&str]) -> Output {
        run(
            Command::new("docker").arg("-H").arg(self.host()).args(args),
            COMMAND_TIMEOUT,
        )
    }

    /// Copies an image of the machine's engine into this one.
    pub fn load_image(&self, image: &str) {
        let script = format!("docker save {image} | docker -H {} load", self.host());
        run(Command::new("sh").args(["-c", &script]), COMMAND_TIMEOUT).expect_success();
    }

    /// Running containers of a Compose project on this engine.
    pub fn running(&self, project: &str) -> usize {
        let filter = format!("label=com.docker.compose.project={project}");
        let out = try_run(
            Command::new("docker").args([
                "-H",
                &self.host(),
                "ps",
                "-q",
                "--filter",
                &filter,
                "--filter",
                "status=running",
            ]),
            Duration::from_secs(30),
        );
        out.map_or(0, |o| o.stdout.lines().filter(|l| !l.is_empty()).count())
    }

    /// The id of the project's first container on this engine.
    pub fn container(&self, project: &str) -> String {
        let filter = format!("label=com.docker.compose.project={project}");
        self.docker(&["ps", "-aq", "--filter", &filter])
            .expect_success()
            .stdout
            .lines()
            .next()
            .unwrap_or_default()
            .to_string()
    }
}

/// Unmounts whatever is still mounted under `root` (after a hard kill).
fn unmount_under(root: &Path) {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let prefix = root.display().to_string();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").args(["-l", p]).status();
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if thread::panicking() {
            eprintln!("--- the test's engine log\n{}", self.log());
        }
        if let Some(child) = self.child.as_mut() {
            // A quick end: its containers die with it.
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
        }
        self.stop();
        unmount_under(&self.root);
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        let _ = fs::remove_dir_all(&self.root);
    }
}
