//! From merged raw files to a validated [`Config`], collecting every error
//! with the place it was written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{self, At, Loc, Merge, RawFile, RawResources, Strings};
use super::units::{self, parse_duration, Fnv};
use super::{
    home_dir, xdg_dir, ComposeCommand, Config, ConfigError, Diagnostic, HostConfig, LoadOptions,
    PeerConfig, Severity, DEFAULT_RELOAD_GUARD,
};

mod notify;
mod placement;
mod policy;
mod service;

#[cfg(test)]
pub(super) use placement::find_cycles;

/// Line 1, column 1 of the main file.
const TOP: At = At { file: 0, offset: 0 };

/// `sample_interval`: its default and bounds.
const DEFAULT_SAMPLE_INTERVAL: Duration = Duration::from_secs(5);
const MIN_SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
const MAX_SAMPLE_INTERVAL: Duration = Duration::from_secs(3600);

pub(super) fn build(
    sources: &[(PathBuf, String)],
    opts: &LoadOptions,
    compose_dir_check: bool,
) -> Result<Config, ConfigError> {
    let Some((main, _)) = sources.first() else {
        return Err(ConfigError::Invalid(vec![Diagnostic {
            file: PathBuf::new(),
            line: 1,
            col: 1,
            message: "no configuration file given".into(),
        }]));
    };
    let mut merged = RawFile::default();
    let mut hash = Fnv::new();
    for (i, (path, text)) in sources.iter().enumerate() {
        let file = raw::parse_file(text, i).map_err(|e| {
            let (line, col) = units::line_col(text, e.span().map_or(0, |s| s.start));
            ConfigError::Parse(Diagnostic {
                file: path.clone(),
                line,
                col,
                message: e.message().lines().collect::<Vec<_>>().join(": "),
            })
        })?;
        merged.merge(file);
        hash.write(&(text.len() as u64).to_le_bytes());
        hash.write(text.as_bytes());
    }
    let mut cx = Ctx {
        sources,
        base: main.parent().unwrap_or(Path::new("")).to_path_buf(),
        user: opts.user_mode,
        errors: Vec::new(),
    };
    let config = cx.config(merged, opts, compose_dir_check, hash.hex());
    if cx.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigError::Invalid(cx.diagnostics()))
    }
}

struct Ctx<'a> {
    sources: &'a [(PathBuf, String)],
    /// Directory of the main file; relative paths are resolved against it.
    base: PathBuf,
    user: bool,
    errors: Vec<(At, String)>,
}

/// What a service needs to know about the rest of the file.
struct Scope<'a> {
    host: &'a str,
    hosts: &'a BTreeMap<String, HostConfig>,
    compose_dir: &'a Path,
    resources: Option<&'a RawResources>,
    check: bool,
}

impl Ctx<'_> {
    fn err(&mut self, at: At, message: impl Into<String>) {
        self.errors.push((at, message.into()));
    }

    fn diagnostics(&mut self) -> Vec<Diagnostic> {
        self.errors.sort();
        self.errors.dedup();
        self.errors
            .iter()
            .map(|(at, message)| {
                let (path, text) = &self.sources[at.file.min(self.sources.len() - 1)];
                let (line, col) = units::line_col(text, at.offset);
                Diagnostic {
                    file: path.clone(),
                    line,
                    col,
                    message: message.clone(),
                }
            })
            .collect()
    }

    /// For a key written in a table header (`[services.web]`), the header's
    /// opening bracket; otherwise the key itself.
    fn header_at(&self, at: At) -> At {
        let Some((_, text)) = self.sources.get(at.file) else {
            return at;
        };
        let Some(before) = text.get(..at.offset) else {
            return at;
        };
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let line = &before[line_start..];
        let indent = line.len() - line.trim_start().len();
        if line.trim_start().starts_with('[') {
            At {
                file: at.file,
                offset: line_start + indent,
            }
        } else {
            at
        }
    }

    fn duration(&mut self, v: &Option<Loc<String>>, default: Duration) -> Duration {
        match v {
            None => default,
            Some(l) => match parse_duration(&l.value) {
                Ok(d) => d,
                Err(e) => {
                    self.err(l.at, e);
                    default
                }
            },
        }
    }

    fn positive_duration(&mut self, v: &Option<Loc<String>>, default: Duration) -> Duration {
        let d = self.duration(v, default);
        if let Some(l) = v {
            if d.is_zero() && parse_duration(&l.value).is_ok() {
                self.err(l.at, "expected a duration above zero");
                return default;
            }
        }
        d
    }

    /// A path; relative ones are resolved against `base`.
    fn path_in(&mut self, v: &Option<Loc<PathBuf>>, base: &Path) -> Option<PathBuf> {
        let l = v.as_ref()?;
        if l.value.as_os_str().is_empty() {
            self.err(l.at, "expected a path, found an empty string");
            return None;
        }
        Some(base.join(&l.value))
    }

    fn path(&mut self, v: &Option<Loc<PathBuf>>) -> Option<PathBuf> {
        let base = self.base.clone();
        self.path_in(v, &base)
    }

    fn severity(&mut self, v: &Option<Loc<String>>) -> Option<Severity> {
        let l = v.as_ref()?;
        match l.value.as_str() {
            "info" => Some(Severity::Info),
            "warning" => Some(Severity::Warning),
            "critical" => Some(Severity::Critical),
            other => {
                self.err(
                    l.at,
                    format!(
                        "unknown severity {other:?}: expected \"info\", \"warning\" or \"critical\""
                    ),
                );
                None
            }
        }
    }

    fn url(&mut self, l: &Loc<String>, schemes: &[&str]) -> Option<String> {
        let ok = l.value.split_once("://").is_some_and(|(scheme, rest)| {
            schemes.contains(&scheme) && !rest.is_empty() && !rest.contains(char::is_whitespace)
        });
        if ok {
            Some(l.value.clone())
        } else {
            let expected: Vec<String> = schemes.iter().map(|s| format!("{s}://")).collect();
            self.err(
                l.at,
                format!(
                    "invalid URL {:?}: expected a URL starting with {}",
                    l.value,
                    expected.join(" or ")
                ),
            );
            None
        }
    }

    fn config(&mut self, raw: RawFile, opts: &LoadOptions, check: bool, hash: String) -> Config {
        let host_at = raw.host.as_ref().map_or(TOP, |l| l.at);
        let host = match (&opts.host_override, &raw.host) {
            (Some(h), _) => h.clone(),
            (None, Some(l)) => l.value.clone(),
            (None, None) => machine_hostname(),
        };
        if host.is_empty() || host == "all" {
            self.err(
                host_at,
                format!("invalid host name {host:?}: expected a name other than \"\" and \"all\""),
            );
        }

        let mut hosts = BTreeMap::new();
        for (name, (at, h)) in &raw.hosts.0 {
            if !valid_host_name(name) {
                self.err(
                    *at,
                    format!(
                        "invalid host name {name:?}: expected letters, digits, '.', '-' or '_' \
                         (and not \"all\")"
                    ),
                );
            }
            let peer = h
                .peer
                .as_ref()
                .and_then(|p| self.url(p, &["http", "https"]));
            hosts.insert(name.clone(), HostConfig { peer });
        }
        if !hosts.is_empty() && !hosts.contains_key(&host) {
            let source = if opts.host_override.is_some() {
                "given on the command line"
            } else if raw.host.is_some() {
                "from the host key"
            } else {
                "the machine's hostname"
            };
            self.err(
                host_at,
                format!(
                    "this host is `{host}` ({source}) but [hosts] names only {}: \
                     add [hosts.{host}] or set host = \"NAME\" to one of them",
                    list(hosts.keys())
                ),
            );
        }

        let compose_dir = self.path(&raw.compose_dir).unwrap_or_else(|| {
            if self.user {
                home_dir().join("stacks")
            } else {
                PathBuf::from("/opt/stacks")
            }
        });
        let state_dir = self.path(&raw.state_dir).unwrap_or_else(|| {
            if self.user {
                xdg_dir("XDG_STATE_HOME", ".local/state").join("stackd")
            } else {
                PathBuf::from("/var/lib/stackd")
            }
        });
        let runtime_dir = if self.user {
            match std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
                Some(p) if p.is_absolute() => p.join("stackd"),
                _ => state_dir.join("run"),
            }
        } else {
            PathBuf::from("/run/stackd")
        };

        let compose_command = match &raw.compose_command {
            None => ComposeCommand::Auto,
            Some(l) => match l.value.as_str() {
                "auto" => ComposeCommand::Auto,
                "docker compose" => ComposeCommand::V2,
                "docker-compose" => ComposeCommand::V1,
                other => {
                    self.err(
                        l.at,
                        format!(
                            "unknown compose_command {other:?}: expected \"auto\", \
                             \"docker compose\" or \"docker-compose\""
                        ),
                    );
                    ComposeCommand::Auto
                }
            },
        };
        let max_parallel = match &raw.max_parallel {
            None => 4,
            Some(l) => match usize::try_from(l.value.0) {
                Ok(n) if (1..=64).contains(&n) => n,
                _ => {
                    self.err(l.at, "expected a number of tasks from 1 to 64");
                    4
                }
            },
        };
        let sample_interval = self.duration(&raw.sample_interval, DEFAULT_SAMPLE_INTERVAL);
        let sample_interval = match &raw.sample_interval {
            Some(l) if !(MIN_SAMPLE_INTERVAL..=MAX_SAMPLE_INTERVAL).contains(&sample_interval) => {
                self.err(l.at, "expected a sampling interval from 1s to 1h");
                DEFAULT_SAMPLE_INTERVAL
            }
            _ => sample_interval,
        };
        let reload_guard = match &raw.reload_guard {
            None => DEFAULT_RELOAD_GUARD,
            Some(l) => match l.value.fraction() {
                Some(f) if (0.0..=1.0).contains(&f) => f,
                _ => {
                    self.err(
                        l.at,
                        "expected a fraction from 0 to 1 (0.5) or a percentage (\"50%\")",
                    );
                    DEFAULT_RELOAD_GUARD
                }
            },
        };
        let admin_group = match &raw.admin_group {
            None => Some("stackd".to_owned()),
            Some(l) if l.value.is_empty() => None,
            Some(l) => Some(l.value.clone()),
        };
        let boot_id_file = self
            .path(&raw.boot_id_file)
            .unwrap_or_else(|| PathBuf::from("/proc/sys/kernel/random/boot_id"));

        let own_url = hosts.get(&host).and_then(|h| h.peer.clone());
        let peer = raw.peer.as_ref().map(|p| self.peer(p, own_url.as_deref()));
        let resources = raw.resources.as_ref().map(|r| self.resources(r));

        let scope = Scope {
            host: &host,
            hosts: &hosts,
            compose_dir: &compose_dir,
            resources: raw.resources.as_ref(),
            check,
        };
        let mut services = BTreeMap::new();
        for (name, (at, s)) in &raw.services.0 {
            let service = self.service(name, *at, s, &scope);
            services.insert(name.clone(), service);
        }
        self.check_references(&raw);
        let names: BTreeSet<&str> = raw.services.0.keys().map(String::as_str).collect();
        let notify = self.notify(&raw, &names);
        let (housekeeping, errors) = super::housekeeping::build(raw.housekeeping.as_ref());
        self.errors.extend(errors);

        Config {
            path: self.sources[0].0.clone(),
            files: self.sources.iter().map(|(p, _)| p.clone()).collect(),
            host,
            compose_dir,
            state_dir,
            runtime_dir,
            compose_command,
            max_parallel,
            sample_interval,
            admin_group,
            boot_id_file,
            reload_guard,
            hosts,
            peer,
            resources,
            services,
            notify,
            housekeeping,
            hash,
        }
    }

    /// `own_url` is this host's `[hosts.NAME] peer`: without `listen`, the
    /// endpoint binds the address and port the other hosts are told to use.
    fn peer(&mut self, p: &raw::RawPeer, own_url: Option<&str>) -> PeerConfig {
        let from_url = own_url
            .and_then(|u| u.split_once("://").map(|(_, rest)| rest))
            .map(|rest| rest.trim_end_matches('/'))
            .filter(|a| units::check_host_port(a).is_ok());
        let listen = match &p.listen {
            None => from_url.unwrap_or("0.0.0.0:7780").to_owned(),
            Some(l) => {
                if let Err(e) = units::check_host_port(&l.value) {
                    self.err(l.at, e);
                }
                l.value.clone()
            }
        };
        let token_file = self.path(&p.token_file).unwrap_or_else(|| {
            if self.user {
                xdg_dir("XDG_CONFIG_HOME", ".config").join("stackd/peer.token")
            } else {
                PathBuf::from("/etc/stackd/peer.token")
            }
        });
        let tls_cert = self.path(&p.tls_cert);
        let tls_key = self.path(&p.tls_key);
        match (&p.tls_cert, &p.tls_key) {
            (Some(l), None) => self.err(l.at, "tls_cert needs tls_key too"),
            (None, Some(l)) => self.err(l.at, "tls_key needs tls_cert too"),
            _ => {}
        }
        let tls_ca = self.path(&p.tls_ca);
        let tls_pin_sha256 = p.tls_pin_sha256.as_ref().and_then(|l| {
            let hex: String = l.value.chars().filter(|c| *c != ':').collect();
            if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
                Some(hex.to_ascii_lowercase())
            } else {
                self.err(
                    l.at,
                    "expected a SHA-256 fingerprint: 64 hex digits, colons allowed",
                );
                None
            }
        });
        PeerConfig {
            listen,
            token_file,
            tls_cert,
            tls_key,
            tls_ca,
            tls_pin_sha256,
            timeout: self.positive_duration(&p.timeout, Duration::from_secs(2)),
            heartbeat: self.positive_duration(&p.heartbeat, Duration::from_secs(5)),
        }
    }
}

fn names(v: &Option<Strings>) -> Vec<String> {
    v.as_ref().map(Strings::values).unwrap_or_default()
}

fn list<'a>(items: impl Iterator<Item = &'a String>) -> String {
    items
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn list_or_none<'a, S: AsRef<str> + 'a>(items: impl Iterator<Item = &'a S>) -> String {
    let v: Vec<String> = items.map(|s| format!("`{}`", s.as_ref())).collect();
    if v.is_empty() {
        "(no services are defined)".into()
    } else {
        v.join(", ")
    }
}

/// The kernel's host name (what gethostname(2) returns; read from procfs
/// because nix's `hostname` feature is not enabled), else `localhost`.
fn machine_hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

fn valid_host_name(name: &str) -> bool {
    name != "all"
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
