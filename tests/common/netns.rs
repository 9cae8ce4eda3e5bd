//! Hosts that can lose each other: three (or any number of) simulated
//! hosts, each a network namespace of its own holding its own Docker
//! engine (`common/engine.rs`: its own dockerd, data root, containerd
//! namespaces, `docker0`), its own stackd with its own bus, state and
//! copy of the cluster file, joined by veth pairs to one bridge that lives
//! in a namespace of its own (the "switch"), so nothing here touches the
//! machine's own network or engine. Include it with
//! `#[path = "common/netns.rs"] mod netns;` next to `mod common;` and
//! `#[path = "common/engine.rs"] mod engine;`.
//!
//! A host's link is cut by setting its switch port down (`ip link set
//! down`): its packets are then dropped silently, as on a real network
//! whose cable or switch failed (no "connection refused" comes back;
//! requests time out). `tc netem` would do the same but needs the
//! `sch_netem` module, which CI kernels may lack. Healing sets it up again.
//!
//! Drop order (fields are dropped in declaration order): each host's
//! stackd, then its bus, then its engine (which deletes the host's
//! namespace and with it the veth pair), then the switch namespace. All of
//! it runs when a test panics too.

// A fixture module (also included by path): see common/mod.rs.
#![allow(unreachable_pub, clippy::unwrap_used)]
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::common::{
    compose_config_line, run, stackctl, toml_str, Bus, Daemon, Output, TestEnv, COMMAND_TIMEOUT,
};
use super::engine::Engine;

/// Every host's peer token.
pub const TOKEN: &str = "partition-test-token-0123456789abcdef";

/// The peer port every host listens on (each in its own namespace).
pub const PORT: u16 = 7780;

/// The switch: a namespace holding bridge `br0`.
struct Switch {
    name: String,
}

impl Switch {
    fn new(name: String) -> Switch {
        ip(&["netns", "add", &name]);
        let sw = Switch { name };
        ip(&["-n", &sw.name, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw.name, "link", "set", "br0", "up"]);
        sw
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

#[track_caller]
fn ip(args: &[&str]) {
    run(Command::new("ip").args(args), COMMAND_TIMEOUT).expect_success();
}

/// One simulated host. Fields drop in this order: stackd, bus, env, engine.
pub struct Host {
    pub daemon: Option<Daemon>,
    pub bus: Bus,
    pub env: TestEnv,
    pub engine: Engine,
    /// Its name in the cluster file: "a", "b", "c", ...
    pub name: String,
    /// Its address on the bridge.
    pub addr: String,
    /// Its copy of the cluster file.
    pub cluster: PathBuf,
    /// Its port on the switch.
    port: String,
}

impl Host {
    /// `stackctl -c CLUSTER ARGS` over this host's bus, run inside its
    /// namespace (so whatever stackctl asks of other hosts goes over the
    /// bridge, as on a real network).
    #[track_caller]
    pub fn ctl(&self, args: &[&str]) -> Output {
        let cluster = self.cluster.display().to_string();
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.engine.netns()))
            .arg(env!("CARGO_BIN_EXE_stackctl"))
            .args(["--user", "-c", &cluster])
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", self.bus.address())
            .env("XDG_RUNTIME_DIR", self.env.run_dir());
        run(&mut cmd, COMMAND_TIMEOUT)
    }

    /// The same without entering the namespace (plain D-Bus calls).
    #[track_caller]
    pub fn ctl_here(&self, args: &[&str]) -> Output {
        let cluster = self.cluster.display().to_string();
        let mut all = vec!["-c", cluster.as_str()];
        all.extend(args);
        stackctl(&self.env, &self.bus, &all)
    }

    /// `stackctl --output json ARGS`, which must succeed.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let all: Vec<&str> = ["--output", "json"].iter().chain(args).copied().collect();
        let out = self.ctl_here(&all).expect_success();
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Starts (again) this host's stackd inside its namespace.
    #[track_caller]
    pub fn start_daemon(&mut self) {
        assert!(self.daemon.is_none(), "{}'s stackd runs already", self.name);
        let netns = format!("--net=/run/netns/{}", self.engine.netns());
        let cluster = self.cluster.display().to_string();
        let words = [
            netns.as_str(),
            env!("CARGO_BIN_EXE_stackd"),
            "--user",
            "--config",
            &cluster,
            "--host",
            &self.name,
        ];
        let args: Vec<&std::ffi::OsStr> = words.iter().map(std::ffi::OsStr::new).collect();
        let host = self.engine.host();
        self.daemon = Some(Daemon::start_program(
            Path::new("nsenter"),
            &args,
            &self.env,
            &self.bus,
            &[("DOCKER_HOST", &host)],
        ));
    }

    /// Running containers of `project` on this host's engine (read from
    /// Docker's API directly: cheap enough to sample every 100 ms).
    pub fn running(&self, project: &str) -> usize {
        running_on(&self.engine.socket(), project).unwrap_or(0)
    }

    /// `GET path` on this host's peer endpoint with `token`, from inside
    /// its namespace (a thread that joins it with `setns`, so no client
    /// program is needed); the response body, or None without an answer.
    pub fn peer_get(&self, path: &str, token: &str) -> Option<String> {
        let netns = format!("/run/netns/{}", self.engine.netns());
        let addr = format!("{}:{PORT}", self.addr);
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        thread::spawn(move || {
            use std::os::fd::AsRawFd;
            let ns = fs::File::open(&netns).ok()?;
            // SAFETY: setns on a descriptor we own and keep open for the
            // call; it changes only this thread's network namespace, and
            // the thread ends after this request.
            #[allow(unsafe_code)]
            let joined = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if joined != 0 {
                return None;
            }
            let mut sock = std::net::TcpStream::connect(&addr).ok()?;
            sock.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            sock.write_all(request.as_bytes()).ok()?;
            let mut text = String::new();
            sock.read_to_string(&mut text).ok()?;
            let (head, body) = text.split_once("\r\n\r\n")?;
            head.starts_with("HTTP/1.1 200").then(|| body.to_string())
        })
        .join()
        .ok()
        .flatten()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        self.daemon.as_ref().map(|d| d.stderr()).unwrap_or_default()
    }
}

/// How many containers of `project` run on the engine at `socket`: one
/// `GET /containers/json` with a label and status filter.
pub fn running_on(socket: &Path, project: &str) -> Option<usize> {
    let filters = format!(
        "{{\"label\":[\"com.docker.compose.project={project}\"],\"status\":[\"running\"]}}"
    );
    let query: String = filters
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let mut sock = UnixStream::connect(socket).ok()?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        sock,
        "GET /v1.41/containers/json?filters={query} HTTP/1.1\r\nHost: docker\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    sock.read_to_string(&mut text).ok()?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(text.matches("\"Id\":").count())
}

/// The hosts, then the switch (dropped last).
pub struct Net {
    pub hosts: Vec<Host>,
    switch: Switch,
}

impl Net {
    /// Hosts named `names` at 10.77.0.11, .12, ...; each gets `image`
    /// loaded into its engine, and the cluster file `shared` (the
    /// `[peer]`, `[hosts.*]` and `[services.*]` parts are written here;
    /// `services` is appended) with its own `host`, `compose_dir` and
    /// `boot_id_file`. The daemons are not started: write the Compose
    /// files first (`compose(...)`), then call [`start`](Self::start).
    /// None when this machine cannot run a second engine (see
    /// `Engine::start`).
    pub fn new(test: &str, names: &[&str], image: &str, services: &str) -> Option<Net> {
        let tag: String = test
            .chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .take(4)
            .collect();
        let mut engines = Vec::new();
        for _ in names {
            engines.push(Engine::start(&tag)?);
        }
        let switch = Switch::new(format!("{}sw", engines[0].netns()));
        let token = TOKEN;
        let mut hosts_toml = String::new();
        for (i, n) in names.iter().enumerate() {
            hosts_toml.push_str(&format!(
                "[hosts.{n}]\npeer = \"http://10.77.0.{}:{PORT}\"\n",
                11 + i
            ));
        }
        let mut hosts = Vec::new();
        for (i, (name, engine)) in names.iter().zip(engines).enumerate() {
            let port = format!("p{i}");
            let ns = engine.netns().to_string();
            let addr = format!("10.77.0.{}", 11 + i);
            ip(&[
                "link",
                "add",
                "eth0",
                "netns",
                &ns,
                "type",
                "veth",
                "peer",
                "name",
                &port,
                "netns",
                &switch.name,
            ]);
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns, "link", "set", "lo", "up"]);
            ip(&["-n", &switch.name, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &switch.name, "link", "set", &port, "up"]);
            engine.load_image(image);
            let env = TestEnv::new(&format!("{test}_{name}"));
            let token_file = env.dir().join("peer.token");
            fs::write(&token_file, format!("{token}\n")).expect("token");
            fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).expect("chmod");
            let cluster = env.dir().join("cluster.toml");
            let text = format!(
                "host = \"{name}\"\ncompose_dir = {}\nboot_id_file = {}\n{}\n\
                 [peer]\ntoken_file = {}\ntimeout = \"2s\"\nheartbeat = \"1s\"\n\n{hosts_toml}\n{services}",
                toml_str(&env.compose_dir().display().to_string()),
                toml_str(&env.boot_id_file().display().to_string()),
                compose_config_line(),
                toml_str(&token_file.display().to_string()),
            );
            fs::write(&cluster, text).expect("cluster file");
            let bus = Bus::start(env.dir());
            hosts.push(Host {
                daemon: None,
                bus,
                env,
                engine,
                name: name.to_string(),
                addr,
                cluster,
                port,
            });
        }
        Some(Net { hosts, switch })
    }

    /// Writes `project`'s Compose file on every host.
    pub fn compose(&self, project: &str, text: &str) {
        for h in &self.hosts {
            let dir = h.env.compose_dir().join(project);
            fs::create_dir_all(&dir).expect("project dir");
            fs::write(dir.join("docker-compose.yml"), text).expect("compose file");
        }
    }

    /// Writes `project`'s Compose file on host `host` only.
    pub fn compose_on(&self, host: &str, project: &str, text: &str) {
        let dir = self.host(host).env.compose_dir().join(project);
        fs::create_dir_all(&dir).expect("project dir");
        fs::write(dir.join("docker-compose.yml"), text).expect("compose file");
    }

    /// Starts every host's stackd.
    #[track_caller]
    pub fn start(&mut self) {
        for h in &mut self.hosts {
            h.start_daemon();
        }
    }

    /// The host named `name`.
    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|h| h.name == name)
            .unwrap_or_else(|| panic!("no host {name}"))
    }

    /// Cuts `name`'s link: its switch port goes down, and every packet to
    /// or from it is dropped from now on.
    #[track_caller]
    pub fn cut(&self, name: &str) {
        let port = &self.host(name).port;
        ip(&["-n", &self.switch.name, "link", "set", port, "down"]);
    }

    /// Heals `name`'s link.
    #[track_caller]
    pub fn heal(&self, name: &str) {
        let port = &self.host(name).port;
        ip(&["-n", &self.switch.name, "link", "set", port, "up"]);
    }

    /// Slows what reaches `name` to `rate` (tc's words, e.g. "64mbit") with
    /// a token bucket on its switch port (`sch_tbf`; `tc netem` needs
    /// `sch_netem`, which kernels may lack); `None` lifts it.
    #[track_caller]
    pub fn throttle(&self, name: &str, rate: Option<&str>) {
        let port = &self.host(name).port;
        let ns = &self.switch.name;
        let args: Vec<&str> = match rate {
            Some(r) => vec![
                "-n", ns, "qdisc", "replace", "dev", port, "root", "tbf", "rate", r, "burst",
                "64kb", "latency", "200ms",
            ],
            None => vec!["-n", ns, "qdisc", "del", "dev", port, "root"],
        };
        run(Command::new("tc").args(&args), COMMAND_TIMEOUT).expect_success();
    }

    /// A sampler of where `projects` run, every 100 ms, on every host.
    pub fn sampler(&self, projects: &[&str]) -> Sampler {
        let sockets: Vec<(String, PathBuf)> = self
            .hosts
            .iter()
            .map(|h| (h.name.clone(), h.engine.socket()))
            .collect();
        Sampler::start(sockets, projects.iter().map(|p| p.to_string()).collect())
    }
}

/// One reading: at `at`, the hosts on which each project had a running
/// container.
#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Instant,
    pub running: BTreeMap<String, Vec<String>>,
}

/// Reads Docker on every host every 100 ms (directly from each engine's
/// socket, not through stackd) and keeps what it saw.
pub struct Sampler {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    thread: Option<JoinHandle<()>>,
}

/// The sampling period.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);

impl Sampler {
    fn start(sockets: Vec<(String, PathBuf)>, projects: Vec<String>) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, samples) = (stop.clone(), samples.clone());
            thread::spawn(move || {
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let mut running = BTreeMap::new();
                    for p in &projects {
                        let on: Vec<String> = sockets
                            .iter()
                            .filter(|(_, s)| running_on(s, p).unwrap_or(0) > 0)
                            .map(|(h, _)| h.clone())
                            .collect();
                        running.insert(p.clone(), on);
                    }
                    samples.lock().unwrap().push(Sample { at, running });
                    next += SAMPLE_EVERY;
                    let now = Instant::now();
                    if next > now {
                        thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
        };
        Sampler {
            stop,
            samples,
            thread: Some(thread),
        }
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().unwrap().clone()
    }

    /// Samples in which `project` ran on two hosts or more, outside the
    /// windows `allowed` (an overlap move's designed overlap).
    pub fn twice(&self, project: &str, allowed: &[(Instant, Instant)]) -> Vec<Sample> {
        self.samples()
            .into_iter()
            .filter(|s| s.running.get(project).is_some_and(|h| h.len() > 1))
            .filter(|s| !allowed.iter().any(|(a, b)| s.at >= *a && s.at <= *b))
            .collect()
    }

    /// Stops sampling; returns how many samples were taken.
    pub fn stop(&mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.samples.lock().unwrap().len()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop();
    }
}
