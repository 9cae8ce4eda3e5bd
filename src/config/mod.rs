//! The cluster file: model, drop-in merge, validation.
//!
//! `load` reads `stackd.toml` and then every `stackd.d/*.toml` next to it in
//! file-name order; later files override scalar keys of earlier ones and
//! tables merge key by key. Every error names `file:line:col` of the key or
//! value at fault and says what was expected. Validation collects all errors
//! of the merged file, not just the first.

mod build;
mod housekeeping;
mod raw;
mod units;
mod write;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use housekeeping::HousekeepingConfig;
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

/// Which hosts run a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostSelector {
    All,
    List(Vec<String>),
}

/// How a service moves between hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    /// Stop on the source, then start on the target.
    StopFirst,
    /// Start on the target, wait until healthy, then stop the source.
    Overlap,
}

/// `[services.NAME]`
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceConfig {
    pub name: String,
    pub hosts: HostSelector,
    pub auto_start: bool,
    pub depends_on: Vec<String>,
    pub conflicts: Vec<String>,
    pub start_order: i64,
    pub start_timeout: Duration,
    /// `compose_dir/name`
    pub dir: PathBuf,
    /// The compose file found in `dir`; `dir/compose.yaml` when it was not
    /// looked for (service of another host, or checks disabled).
    pub compose_file: PathBuf,
    pub health: Option<HealthConfig>,
    pub restart: RestartConfig,
    pub resources: Option<ResourcesConfig>,
    pub handoff: Handoff,
    /// `kind`: what runs the service.
    pub kind: ServiceKind,
    /// `description`: one line saying what the service is for.
    pub description: Option<String>,
    /// `category`: a free word to group services by (`stackctl list
    /// --category`).
    pub category: Option<String>,
    /// `required_for`: the operations that need this service running
    /// (`stackctl required OPERATION`), in the order written, without
    /// duplicates.
    pub required_for: Vec<String>,
}

impl ServiceConfig {
    pub fn assigned_to(&self, host: &str) -> bool {
        match &self.hosts {
            HostSelector::All => true,
            HostSelector::List(hosts) => hosts.iter().any(|h| h == host),
        }
    }

    /// A Compose project (the default kind).
    pub fn is_compose(&self) -> bool {
        self.kind == ServiceKind::Compose
    }

    /// A remote endpoint with probes only: nothing to start or stop.
    pub fn is_external(&self) -> bool {
        self.kind == ServiceKind::External
    }
}

/// `kind`: what runs a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceKind {
    /// `kind = "compose"` (the default): a Compose project in
    /// `compose_dir/NAME`.
    Compose,
    /// `kind = "unit"`: a systemd unit.
    Unit(UnitSpec),
    /// `kind = "external"`: a remote endpoint stackd only probes; it has a
    /// health probe and no lifecycle.
    External,
}

impl ServiceKind {
    /// The word written in the file: `compose`, `unit` or `external`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceKind::Compose => "compose",
            ServiceKind::Unit(_) => "unit",
            ServiceKind::External => "external",
        }
    }
}

/// Which systemd unit a `kind = "unit"` service is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitSpec {
    /// `unit = "nginx.service"`: a unit that exists already.
    Existing(String),
    /// `exec = [...]`: a binary run as a transient unit stackd creates.
    Transient(ExecSpec),
}

/// `exec = [...]` with its optional `working_dir`, `environment`, `user`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    /// Program first, then its arguments, as written.
    pub argv: Vec<String>,
    /// Absolute (a relative path is resolved against the main file's
    /// directory).
    pub working_dir: Option<PathBuf>,
    /// `(NAME, VALUE)` in the order written; a later NAME replaces an
    /// earlier one.
    pub environment: Vec<(String, String)>,
    /// User name or numeric uid the unit runs as; `None`: systemd's default
    /// (root for the system manager, the user in `--user` mode).
    pub user: Option<String>,
}

/// `health = { ... }`
#[derive(Debug, Clone, PartialEq)]
pub struct HealthConfig {
    /// `None`: only Docker's own health check counts.
    pub probe: Option<Probe>,
    pub interval: Duration,
    pub timeout: Duration,
    pub retries: u32,
    pub start_period: Duration,
}

/// One probe kind; at most one per service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Http {
        url: String,
        /// Inclusive ranges of accepted status codes.
        expect_status: Vec<(u16, u16)>,
        body_contains: Option<String>,
        /// For https://: trust the certificates in this PEM file instead of
        /// the public web roots (a self-signed or private CA's service).
        tls_ca: Option<PathBuf>,
    },
    Tcp {
        address: String,
    },
    Command {
        argv: Vec<String>,
        /// Compose service to run it in; `None` runs it on the host.
        container: Option<String>,
    },
    File {
        /// Relative paths are resolved against the service directory.
        path: PathBuf,
        max_age: Option<Duration>,
    },
}

/// `restart = { ... }`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartConfig {
    pub on_failure: bool,
    pub max_restarts: u32,
    pub window: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// What a stop through Docker itself (`docker stop`) means.
    pub manual_stop: ManualStop,
    /// The first wait between retries of an environmental failure (image,
    /// network, port, bind source); it doubles up to
    /// [`RestartConfig::retry_cap`].
    pub retry_interval: Duration,
}

impl RestartConfig {
    /// The longest wait between two retries of an environmental failure.
    pub fn retry_cap(&self) -> Duration {
        self.retry_interval.saturating_mul(5)
    }
}

/// `restart.manual_stop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ManualStop {
    /// A person's stop through the Docker API is their intent: the desired
    /// state becomes stopped ("stopped outside stackd").
    Respect,
    /// The service is forced up again, like a crash.
    Revert,
}

impl Default for RestartConfig {
    fn default() -> Self {
        RestartConfig {
            on_failure: true,
            max_restarts: 5,
            window: Duration::from_secs(600),
            backoff_min: Duration::from_secs(5),
            backoff_max: Duration::from_secs(300),
            manual_stop: ManualStop::Respect,
            retry_interval: Duration::from_secs(60),
        }
    }
}

/// `resources = { ... }`: spike thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct ResourcesConfig {
    pub cpu_percent: Option<f64>,
    pub memory_percent: Option<f64>,
    pub memory: Option<u64>,
    pub sustain: Duration,
    /// A spike clears when usage falls below `threshold * clear_ratio`.
    pub clear_ratio: f64,
    pub cooldown: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// Which events a channel receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelFilter {
    /// The channel's own `min_severity`, else `[notify] min_severity`.
    pub min_severity: Severity,
    /// Empty: every service.
    pub services: Vec<String>,
    /// Empty: every event kind.
    pub kinds: Vec<String>,
}

/// `[notify]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub min_severity: Severity,
    pub email: Option<EmailConfig>,
    pub webhooks: BTreeMap<String, WebhookConfig>,
    pub desktop: Option<ChannelFilter>,
}

/// `[notify.email]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailConfig {
    /// The URL as written.
    pub smtp: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    /// `smtps://`: TLS from the first byte.
    pub implicit_tls: bool,
    /// `None`: STARTTLS when the server offers it.
    pub starttls: Option<bool>,
    pub from: String,
    pub to: Vec<String>,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub filter: ChannelFilter,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookFormat {
    Json,
    Ntfy,
    Slack,
    Discord,
}

/// `[notify.webhook.NAME]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    pub name: String,
    pub url: String,
    pub format: WebhookFormat,
    /// HMAC key for the signature header.
    pub secret_file: Option<PathBuf>,
    pub filter: ChannelFilter,
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
