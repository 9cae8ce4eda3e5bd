//! The cluster file as written: every leaf value remembers where it was
//! written (file index + byte offset), every table is optional, and later
//! files merge over earlier ones.
//!
//! Tables themselves carry no span: toml gives none for implicit tables
//! (`[notify.email]` without `[notify]`, dotted keys), so only leaves and map
//! keys are located.

mod located;
mod merge;

use std::path::PathBuf;

pub(crate) use located::{
    At, Environment, HostSpec, Int, Loc, LocMap, Num, Section, StrOrInt, StrOrNum, Strings,
};
pub(crate) use merge::Merge;

/// Parses one file's text, stamping `file` into every location.
pub(crate) fn parse_file(text: &str, file: usize) -> Result<RawFile, toml::de::Error> {
    located::CURRENT_FILE.with(|c| c.set(file));
    toml::from_str(text)
}

type L<T> = Option<Loc<T>>;
type Names = Option<Strings>;

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawFile {
    pub host: L<String>,
    pub compose_dir: L<PathBuf>,
    pub state_dir: L<PathBuf>,
    pub compose_command: L<String>,
    pub max_parallel: L<Int>,
    pub sample_interval: L<String>,
    pub admin_group: L<String>,
    pub boot_id_file: L<PathBuf>,
    pub reload_guard: L<StrOrNum>,
    #[serde(default)]
    pub hosts: LocMap<RawHost>,
    pub peer: Option<RawPeer>,
    #[serde(default)]
    pub services: LocMap<RawService>,
    pub resources: Option<RawResources>,
    pub notify: Option<RawNotify>,
    pub housekeeping: Option<RawHousekeeping>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [housekeeping] table")]
pub(crate) struct RawHousekeeping {
    pub prune: L<String>,
    pub disk_warning: L<StrOrNum>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [hosts.NAME] table")]
pub(crate) struct RawHost {
    pub peer: L<String>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [peer] table")]
pub(crate) struct RawPeer {
    pub listen: L<String>,
    pub token_file: L<PathBuf>,
    pub tls_cert: L<PathBuf>,
    pub tls_key: L<PathBuf>,
    pub tls_ca: L<PathBuf>,
    pub tls_pin_sha256: L<String>,
    pub timeout: L<String>,
    pub heartbeat: L<String>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [services.NAME] table")]
pub(crate) struct RawService {
    pub host: L<HostSpec>,
    pub auto_start: L<bool>,
    pub depends_on: Names,
    pub conflicts: Names,
    pub start_order: L<Int>,
    pub start_timeout: L<String>,
    pub health: Option<RawHealth>,
    pub restart: Option<RawRestart>,
    pub resources: Option<RawResources>,
    pub handoff: L<String>,
    pub handoff_volumes: L<bool>,
    pub kind: L<String>,
    pub unit: L<String>,
    pub exec: L<Strings>,
    pub working_dir: L<PathBuf>,
    pub environment: L<Environment>,
    pub user: L<String>,
    pub description: L<String>,
    pub category: L<String>,
    pub required_for: Names,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a health table")]
pub(crate) struct RawHealth {
    pub http: L<String>,
    pub expect_status: L<StrOrInt>,
    pub body_contains: L<String>,
    pub tls_ca: L<PathBuf>,
    pub tcp: L<String>,
    pub command: L<Strings>,
    pub container: L<String>,
    pub file: L<PathBuf>,
    pub max_age: L<String>,
    pub interval: L<String>,
    pub timeout: L<String>,
    pub retries: L<Int>,
    pub start_period: L<String>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a restart table")]
pub(crate) struct RawRestart {
    pub on_failure: L<bool>,
    pub max_restarts: L<Int>,
    pub window: L<String>,
    pub backoff: L<String>,
    pub manual_stop: L<String>,
    pub retry_interval: L<String>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a resources table")]
pub(crate) struct RawResources {
    pub cpu_percent: L<Num>,
    pub memory_percent: L<Num>,
    pub memory: L<StrOrInt>,
    pub sustain: L<String>,
    pub clear_ratio: L<Num>,
    pub cooldown: L<String>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [notify] table")]
pub(crate) struct RawNotify {
    pub min_severity: L<String>,
    pub email: Option<RawEmail>,
    #[serde(default)]
    pub webhook: LocMap<RawWebhook>,
    pub desktop: Option<RawDesktop>,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [notify.email] table")]
pub(crate) struct RawEmail {
    pub smtp: L<String>,
    pub starttls: L<bool>,
    pub from: L<String>,
    pub to: L<Strings>,
    pub username: L<String>,
    pub password_file: L<PathBuf>,
    /// Accepted by the parser only to be refused with a useful message.
    pub password: L<toml::Value>,
    pub min_severity: L<String>,
    pub services: Names,
    pub kinds: Names,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [notify.webhook.NAME] table")]
pub(crate) struct RawWebhook {
    pub url: L<String>,
    pub format: L<String>,
    pub secret_file: L<PathBuf>,
    /// Accepted by the parser only to be refused with a useful message.
    pub secret: L<toml::Value>,
    pub min_severity: L<String>,
    pub services: Names,
    pub kinds: Names,
}

#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [notify.desktop] table")]
pub(crate) struct RawDesktop {
    pub min_severity: L<String>,
    pub services: Names,
    pub kinds: Names,
}

impl Section for RawHost {
    const HEADER: &'static str = "[hosts.NAME]";
}
impl Section for RawService {
    const HEADER: &'static str = "[services.NAME]";
}
impl Section for RawWebhook {
    const HEADER: &'static str = "[notify.webhook.NAME]";
}
