//! A validated service as the rest of the daemon sees it: where it runs,
//! what runs it (`kind`), and its health, restart and resources policies.

use std::path::PathBuf;
use std::time::Duration;

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
    /// `handoff_volumes`: a move carries the named volumes too.
    pub handoff_volumes: bool,
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

/// `resources = { ... }`: spike thresholds, as the spike detector takes
/// them (`resources::SpikeThresholds`). A metric whose threshold is None is
/// not watched.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResourcesConfig {
    /// Per core, like `docker stats` (200 = two cores busy).
    pub cpu_percent: Option<f64>,
    /// Of the container's memory limit, or of host memory without a limit.
    pub memory_percent: Option<f64>,
    /// Bytes.
    pub memory: Option<u64>,
    /// How long a value must stay over the threshold before it counts.
    pub sustain: Duration,
    /// A spike clears when the value falls below `threshold * clear_ratio`.
    pub clear_ratio: f64,
    /// After an announced spike ends, how long until the same metric of the
    /// same key is announced again.
    pub cooldown: Duration,
}
