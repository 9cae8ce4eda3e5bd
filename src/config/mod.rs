//! The cluster file: model, drop-in merge, validation.
//!
//! `load` reads `stackd.toml` and then every `stackd.d/*.toml` next to it in
//! file-name order; later files override scalar keys of earlier ones and
//! tables merge key by key. Every error names `file:line:col` of the key or
//! value at fault and says what was expected. Validation collects all errors
//! of the merged file, not just the first.

mod build;
mod housekeeping;
mod notify;
mod raw;
mod service;
mod units;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use housekeeping::HousekeepingConfig;
pub use notify::{
    ChannelFilter, EmailConfig, NotifyConfig, Severity, WebhookConfig, WebhookFormat,
};
pub use service::{
    ExecSpec, Handoff, HealthConfig, HostSelector, ManualStop, Probe, ResourcesConfig,
    RestartConfig, ServiceConfig, ServiceKind, UnitSpec,
};
pub use units::parse_duration;
pub use write::{check_replacement, write_atomic};

/// Compose file names looked for in a service directory, first match wins.
pub const COMPOSE_FILE_NAMES: [&str; 4] = [
    "compose.yaml",
    "compose.yml",
    "docker-compose.yml",
    "docker-compose.yaml",
];

/// How to read the cluster file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadOptions {
    /// `--user`: defaults under `$HOME` and the XDG directories.
    pub user_mode: bool,
    /// Own host name, overriding the `host` key and the machine's hostname.
    pub host_override: Option<String>,
}

/// One place in one file, with what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Why a cluster file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not TOML, or a key is unknown or has the wrong type.
    #[error("{0}")]
    Parse(Diagnostic),
    /// The merged file parsed but says something impossible.
    #[error("{}", DisplayAll(.0))]
    Invalid(Vec<Diagnostic>),
}

impl ConfigError {
    /// Every diagnostic carried by the error (none for I/O errors).
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            ConfigError::Io { .. } => &[],
            ConfigError::Parse(d) => std::slice::from_ref(d),
            ConfigError::Invalid(v) => v,
        }
    }
}

struct DisplayAll<'a>(&'a [Diagnostic]);

impl fmt::Display for DisplayAll<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// `compose_command`: which Compose CLI to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ComposeCommand {
    /// Detect at start: `docker compose` if it works, else `docker-compose`.
    Auto,
    /// `docker compose`
    V2,
    /// `docker-compose`
    V1,
}

/// The merged, validated cluster file as seen from one host.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The main file.
    pub path: PathBuf,
    /// The main file, then the drop-ins, in merge order.
    pub files: Vec<PathBuf>,
    /// This host's name.
    pub host: String,
    pub compose_dir: PathBuf,
    pub state_dir: PathBuf,
    /// Not a key: `/run/stackd`, or `$XDG_RUNTIME_DIR/stackd` in user mode.
    pub runtime_dir: PathBuf,
    pub compose_command: ComposeCommand,
    pub max_parallel: usize,
    /// How often the monitor samples the host and every container.
    pub sample_interval: Duration,
    pub admin_group: Option<String>,
    pub boot_id_file: PathBuf,
    /// The share of this host's services a reload or push may remove
    /// without `--force` (0 to 1); removing every one is always refused.
    pub reload_guard: f64,
    pub hosts: BTreeMap<String, HostConfig>,
    pub peer: Option<PeerConfig>,
    /// Host-wide resource thresholds (top-level `[resources]`); services
    /// inherit these keys unless they set their own.
    pub resources: Option<ResourcesConfig>,
    pub services: BTreeMap<String, ServiceConfig>,
    pub notify: NotifyConfig,
    /// `[housekeeping]`: scheduled prune and the disk warning.
    pub housekeeping: HousekeepingConfig,
    /// Stable hex digest of the source texts, in merge order.
    pub hash: String,
}

impl Config {
    /// The peer URL of `host` in `[hosts]`, or a sentence saying why there
    /// is none (no such host, naming those there are; no `peer` key).
    pub fn peer_url(&self, host: &str) -> Result<&str, String> {
        let spec = self.hosts.get(host).ok_or_else(|| {
            format!(
                "no host {host} in [hosts] of {} (hosts: {})",
                self.path.display(),
                self.hosts.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        spec.peer
            .as_deref()
            .ok_or_else(|| format!("[hosts.{host}] has no peer URL"))
    }

    /// Services assigned to this host, by name.
    pub fn local_services(&self) -> impl Iterator<Item = &ServiceConfig> {
        self.services
            .values()
            .filter(move |s| s.assigned_to(&self.host))
    }

    /// "12 services, 5 on host nuc": what `--check-config` and
    /// `stackctl validate` say of a good file.
    pub fn summary(&self) -> String {
        format!(
            "{} services, {} on host {}",
            self.services.len(),
            self.local_services().count(),
            self.host
        )
    }

    pub fn service(&self, name: &str) -> Option<&ServiceConfig> {
        self.services.get(name)
    }

    /// The services this host runs under `self` that `new` no longer
    /// assigns to it (deleted, or given to another host), by name.
    pub fn removed_by(&self, new: &Config) -> Vec<String> {
        self.local_services()
            .filter(|s| {
                new.service(&s.name)
                    .map_or(true, |n| !n.assigned_to(&new.host))
            })
            .map(|s| s.name.clone())
            .collect()
    }

    /// Why `new` may not replace `self` without being forced: it would take
    /// every service of this host, or more than `reload_guard` of them
    /// (the running configuration's guard: a truncated file must not lower
    /// its own bar). None when it may.
    pub fn guard(&self, new: &Config) -> Option<String> {
        let before = self.local_services().count();
        let removed = self.removed_by(new);
        guard_message(before, &removed, self.reload_guard)
    }
}

/// `reload_guard` when the file does not set it: half.
pub const DEFAULT_RELOAD_GUARD: f64 = 0.5;

/// The refusal for losing `removed` of `before` services, if it trips the
/// guard: all of them, or more than `guard` of them.
pub fn guard_message(before: usize, removed: &[String], guard: f64) -> Option<String> {
    let n = removed.len();
    if n == 0 || (n < before && n as f64 <= guard * before as f64) {
        return None;
    }
    let which = if n == before {
        "every one".to_string()
    } else {
        format!("more than reload_guard ({:.0}%)", guard * 100.0)
    };
    Some(format!(
        "it would remove {n} of this host's {before} services, {which}: {} \
         (a truncated or wrong file?)",
        removed.join(", ")
    ))
}

/// `[hosts.NAME]`
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostConfig {
    /// Base URL of the host's peer endpoint, e.g. `https://192.168.1.10:7780`.
    pub peer: Option<String>,
}

/// `[peer]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    /// `listen`; else the address of this host's own `[hosts.NAME] peer`
    /// URL; else `0.0.0.0:7780`.
    pub listen: String,
    pub token_file: PathBuf,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_ca: Option<PathBuf>,
    /// Lower-case hex, 64 digits, colons removed.
    pub tls_pin_sha256: Option<String>,
    pub timeout: Duration,
    pub heartbeat: Duration,
}

/// Reads the main file and its drop-ins, merges and validates them.
pub fn load(path: &Path, opts: &LoadOptions) -> Result<Config, ConfigError> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut sources = vec![(path.clone(), read(&path)?)];
    for dropin in dropin_files(&path)? {
        let text = read(&dropin)?;
        sources.push((dropin, text));
    }
    parse_sources(&sources, opts, true)
}

/// Parses one file's text as if it were the whole cluster file (no drop-ins).
/// With `compose_dir_check`, services of this host must have a compose file.
pub fn parse_str(
    text: &str,
    file: &Path,
    opts: &LoadOptions,
    compose_dir_check: bool,
) -> Result<Config, ConfigError> {
    parse_sources(
        &[(file.to_path_buf(), text.to_owned())],
        opts,
        compose_dir_check,
    )
}

/// Parses and merges `(path, text)` pairs: the main file first, then the
/// drop-ins in merge order.
pub fn parse_sources(
    sources: &[(PathBuf, String)],
    opts: &LoadOptions,
    compose_dir_check: bool,
) -> Result<Config, ConfigError> {
    build::build(sources, opts, compose_dir_check)
}

/// `/etc/stackd/stackd.toml`, or `$XDG_CONFIG_HOME/stackd/stackd.toml`
/// (`~/.config/stackd/stackd.toml`) in user mode.
pub fn default_config_path(user_mode: bool) -> PathBuf {
    if user_mode {
        xdg_dir("XDG_CONFIG_HOME", ".config").join("stackd/stackd.toml")
    } else {
        PathBuf::from("/etc/stackd/stackd.toml")
    }
}

fn read(path: &Path) -> Result<String, ConfigError> {
    let bytes = std::fs::read(path).map_err(|source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    utf8_text(path, bytes)
}

/// The file's bytes as text; bytes that are not UTF-8 are a diagnostic at
/// the line and column of the first bad byte, as any other error is.
pub fn utf8_text(path: &Path, bytes: Vec<u8>) -> Result<String, ConfigError> {
    String::from_utf8(bytes).map_err(|e| {
        let bad = e.utf8_error().valid_up_to();
        let good = &e.as_bytes()[..bad];
        let line = 1 + good.iter().filter(|b| **b == b'\n').count();
        let line_start = good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        // Columns count characters, as the TOML diagnostics do.
        let col = 1 + String::from_utf8_lossy(&good[line_start..]).chars().count();
        ConfigError::Parse(Diagnostic {
            file: path.to_path_buf(),
            line,
            col,
            message: format!(
                "byte 0x{:02x} is not UTF-8; the cluster file must be UTF-8 text",
                e.as_bytes()[bad]
            ),
        })
    })
}

/// `<dir of main>/stackd.d/*.toml`, sorted by file name; hidden files and
/// anything that is not a regular file are skipped.
fn dropin_files(main: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let dir = main
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("stackd.d");
    let io_err = |source| ConfigError::Io {
        path: dir.clone(),
        source,
    };
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err)?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let path = entry.path();
        if std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// The user's home directory: `$HOME`, else the password database, else `/`.
fn home_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("HOME").map(PathBuf::from) {
        if h.is_absolute() {
            return h;
        }
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map_or_else(|| PathBuf::from("/"), |u| u.dir)
}

/// An XDG base directory: `$VAR` when absolute, else `~/fallback`.
fn xdg_dir(var: &str, fallback: &str) -> PathBuf {
    match std::env::var_os(var).map(PathBuf::from) {
        Some(p) if p.is_absolute() => p,
        _ => home_dir().join(fallback),
    }
}
