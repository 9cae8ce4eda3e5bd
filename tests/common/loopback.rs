//! Many `stackd` processes on one machine, for the benches that time the
//! peer endpoint across hosts (and the peer token and port of the sim's
//! two-host tests): each host its own temp dir, bus and daemon, on
//! 127.0.0.1, .2, ... of one port, all reading one cluster file.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::{toml_str, Bus, Daemon, TestEnv};

/// The peer token the hosts share.
pub const TOKEN: &str = "bench-token-0123456789";

/// Writes [`TOKEN`] to `dir/peer.token` (0600); its path as a TOML string.
pub fn token_file(dir: &Path) -> String {
    let token = dir.join("peer.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    toml_str(&token.display().to_string())
}

/// A TCP port nobody listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What the cluster is: its hosts, in order (the first is the one asked),
/// and what each of them runs.
pub struct Spec<'a> {
    /// Prefix of the hosts' temp dirs.
    pub name: &'a str,
    pub hosts: Vec<String>,
    /// `[peer] timeout`.
    pub timeout: &'a str,
    /// Services of each host, named HOST`s`N, each a project of `compose`.
    pub services_per_host: usize,
    pub compose: &'a str,
    pub auto_start: bool,
    /// The daemons' environment and arguments besides `--config`/`--host`.
    pub env: &'a [(&'a str, &'a str)],
    pub args: &'a [&'a str],
}

/// The running cluster; dropping it stops every daemon and bus.
pub struct Cluster {
    pub daemons: Vec<Daemon>,
    pub buses: Vec<Bus>,
    pub envs: Vec<TestEnv>,
    /// The cluster file (in the first host's dir) and its text.
    pub file: PathBuf,
    pub text: String,
}

impl Cluster {
    /// Writes the cluster file and starts every host's bus and daemon.
    pub fn start(spec: &Spec<'_>) -> Cluster {
        let envs: Vec<TestEnv> = spec
            .hosts
            .iter()
            .map(|h| TestEnv::new(&format!("{}_{h}", spec.name)))
            .collect();
        let port = free_port();
        let mut text = format!(
            "host = \"{}\"\ncompose_dir = {}\n\n[peer]\ntoken_file = {}\ntimeout = \"{}\"\n\n",
            spec.hosts[0],
            toml_str(&envs[0].compose_dir().display().to_string()),
            token_file(envs[0].dir()),
            spec.timeout,
        );
        for (i, h) in spec.hosts.iter().enumerate() {
            text.push_str(&format!(
                "[hosts.{h}]\npeer = \"http://127.0.0.{}:{port}\"\n",
                i + 1
            ));
        }
        for h in &spec.hosts {
            for s in 0..spec.services_per_host {
                let svc = envs[0].add_project(&format!("{h}s{s}"), spec.compose);
                text.push_str(&format!(
                    "[services.{svc}]\nhost = \"{h}\"\nauto_start = {}\n",
                    spec.auto_start
                ));
            }
        }
        let file = envs[0].dir().join("cluster.toml");
        std::fs::write(&file, &text).unwrap();
        let file_s = file.display().to_string();
        let buses: Vec<Bus> = envs.iter().map(|e| Bus::start(e.dir())).collect();
        let daemons = spec
            .hosts
            .iter()
            .zip(envs.iter().zip(&buses))
            .map(|(h, (env, bus))| {
                let mut args = spec.args.to_vec();
                args.extend(["--config", &file_s, "--host", h]);
                Daemon::start_with(env, bus, spec.env, &args)
            })
            .collect();
        Cluster {
            daemons,
            buses,
            envs,
            file,
            text,
        }
    }
}
