//! The cluster file as written: every leaf value remembers where it was
//! written (file index + byte offset), every table is optional, and later
//! files merge over earlier ones.
//!
//! Tables themselves carry no span: toml gives none for implicit tables
//! (`[notify.email]` without `[notify]`, dotted keys), so only leaves and map
//! keys are located.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Unexpected, Visitor};

thread_local! {
    /// Index of the file being deserialized; stamped into every [`Loc`].
    static CURRENT_FILE: Cell<usize> = const { Cell::new(0) };
}

/// Parses one file's text, stamping `file` into every location.
pub(crate) fn parse_file(text: &str, file: usize) -> Result<RawFile, toml::de::Error> {
    CURRENT_FILE.with(|c| c.set(file));
    toml::from_str(text)
}

/// Where something was written: which source file, which byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct At {
    pub file: usize,
    pub offset: usize,
}

/// A value with the place it was written.
#[derive(Debug, Clone)]
pub(crate) struct Loc<T> {
    pub value: T,
    pub at: At,
}

// The protocol toml uses for `toml::Spanned`; reimplemented so that a table
// given where a plain value is expected gets a sensible message instead of
// the one `Spanned` produces for tables without a span.
const SPANNED_NAME: &str = "$__serde_spanned_private_Spanned";
const SPANNED_START: &str = "$__serde_spanned_private_start";
const SPANNED_END: &str = "$__serde_spanned_private_end";
const SPANNED_VALUE: &str = "$__serde_spanned_private_value";

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loc<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct LocVisitor<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for LocVisitor<T> {
            type Value = Loc<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Loc<T>, A::Error> {
                let key: Option<String> = map.next_key()?;
                if key.as_deref() != Some(SPANNED_START) {
                    return Err(de::Error::invalid_type(Unexpected::Map, &"a value"));
                }
                let offset: usize = map.next_value()?;
                let _: Option<String> = map.next_key()?;
                let _end: usize = map.next_value()?;
                let _: Option<String> = map.next_key()?;
                let value: T = map.next_value()?;
                let file = CURRENT_FILE.with(Cell::get);
                Ok(Loc {
                    value,
                    at: At { file, offset },
                })
            }
        }
        d.deserialize_struct(
            SPANNED_NAME,
            &[SPANNED_START, SPANNED_END, SPANNED_VALUE],
            LocVisitor(PhantomData),
        )
    }
}

/// A table of named sub-tables (`[services.NAME]`, `[hosts.NAME]`, ...),
/// each with the location of its name.
#[derive(Debug, Clone)]
pub(crate) struct LocMap<R>(pub BTreeMap<String, (At, R)>);

impl<R> Default for LocMap<R> {
    fn default() -> Self {
        LocMap(BTreeMap::new())
    }
}

/// The header of a named table, for error messages.
pub(crate) trait Section {
    const HEADER: &'static str;
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

impl<'de, R: Deserialize<'de> + Section> Deserialize<'de> for LocMap<R> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct MapVisitor<R>(PhantomData<R>);
        impl<'de, R: Deserialize<'de> + Section> Visitor<'de> for MapVisitor<R> {
            type Value = LocMap<R>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "tables written as {}", R::HEADER)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LocMap<R>, A::Error> {
                let mut out = BTreeMap::new();
                while let Some(key) = map.next_key::<Loc<String>>()? {
                    let value: R = map.next_value()?;
                    out.insert(key.value, (key.at, value));
                }
                Ok(LocMap(out))
            }
        }
        d.deserialize_map(MapVisitor(PhantomData))
    }
}

/// `host = "nuc"`, `host = ["nuc", "hp"]` or `host = "all"`.
#[derive(Debug, Clone)]
pub(crate) enum HostSpec {
    One(String),
    List(Vec<Loc<String>>),
}

impl<'de> Deserialize<'de> for HostSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct HostVisitor;
        impl<'de> Visitor<'de> for HostVisitor {
            type Value = HostSpec;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a host name, a list of host names, or \"all\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<HostSpec, E> {
                Ok(HostSpec::One(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<HostSpec, A::Error> {
                let mut out = Vec::new();
                while let Some(h) = seq.next_element::<Loc<String>>()? {
                    out.push(h);
                }
                Ok(HostSpec::List(out))
            }
        }
        d.deserialize_any(HostVisitor)
    }
}

/// `environment = { K = "V" }` or `environment = ["K=V"]`; each value
/// located.
#[derive(Debug, Clone)]
pub(crate) enum Environment {
    Table(Vec<(Loc<String>, Loc<String>)>),
    List(Vec<Loc<String>>),
}

impl<'de> Deserialize<'de> for Environment {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Environment;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a table of variables, e.g. { RUST_LOG = \"info\" }, or a list of \
                     \"NAME=VALUE\" strings",
                )
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Environment, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = map.next_key::<Loc<String>>()? {
                    let v: Loc<String> = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Environment::Table(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Environment, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Loc<String>>()? {
                    out.push(s);
                }
                Ok(Environment::List(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value that may be written as a string or an integer
/// (`memory = 536870912` or `memory = "512M"`, `expect_status = 200`).
#[derive(Debug, Clone)]
pub(crate) enum StrOrInt {
    Str(String),
    Int(i64),
}

impl<'de> Deserialize<'de> for StrOrInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrInt;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Str(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrInt, E> {
                Ok(StrOrInt::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrInt, E> {
                i64::try_from(v)
                    .map(StrOrInt::Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A value that may be written as a string or a number
/// (`reload_guard = 0.5` or `reload_guard = "50%"`).
#[derive(Debug, Clone)]
pub(crate) enum StrOrNum {
    Str(String),
    Num(f64),
}

impl StrOrNum {
    /// A share as a number (`0.1`) or a percentage (`"10%"`), unchecked;
    /// None when a string is not a percentage.
    pub(crate) fn fraction(&self) -> Option<f64> {
        match self {
            StrOrNum::Num(n) => Some(*n),
            StrOrNum::Str(s) => s
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<f64>().ok())
                .map(|p| p / 100.0),
        }
    }
}

impl<'de> Deserialize<'de> for StrOrNum {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = StrOrNum;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a fraction such as 0.5 or a percentage such as \"50%\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Str(v.to_owned()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<StrOrNum, E> {
                Ok(StrOrNum::Num(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// An integer; exists for the error message ("expected an integer", not "i64").
#[derive(Debug, Clone, Copy)]
pub(crate) struct Int(pub i64);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Int;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Int, E> {
                Ok(Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Int, E> {
                i64::try_from(v)
                    .map(Int)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }
        }
        d.deserialize_any(V)
    }
}

/// A number, integer or float; exists for the error message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Num(pub f64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v as f64))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v))
            }
        }
        d.deserialize_any(V)
    }
}

/// A list of strings, each located; exists for the error message
/// ("expected a list of strings", not "a sequence").
#[derive(Debug, Clone, Default)]
pub(crate) struct Strings(pub Vec<Loc<String>>);

impl<'de> Deserialize<'de> for Strings {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of strings, e.g. [\"a\", \"b\"]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Loc<String>>()? {
                    out.push(s);
                }
                Ok(Strings(out))
            }
        }
        d.deserialize_seq(V)
    }
}

impl std::ops::Deref for Strings {
    type Target = [Loc<String>];
    fn deref(&self) -> &[Loc<String>] {
        &self.0
    }
}

impl Strings {
    pub(super) fn values(&self) -> Vec<String> {
        self.0.iter().map(|l| l.value.clone()).collect()
    }
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

/// Merging a later file over an earlier one: a later leaf replaces an
/// earlier one, tables merge key by key.
pub(crate) trait Merge {
    fn merge(&mut self, later: Self);
}

impl<R: Merge> Merge for Option<R> {
    fn merge(&mut self, later: Self) {
        match (self.as_mut(), later) {
            (_, None) => {}
            (None, Some(l)) => *self = Some(l),
            (Some(e), Some(l)) => e.merge(l),
        }
    }
}

impl<R: Merge> Merge for LocMap<R> {
    fn merge(&mut self, later: Self) {
        for (name, (at, value)) in later.0 {
            match self.0.get_mut(&name) {
                // The first definition keeps its location: that is where the
                // table was introduced.
                Some((_, existing)) => existing.merge(value),
                None => {
                    self.0.insert(name, (at, value));
                }
            }
        }
    }
}

/// Implements [`Merge`] for a raw struct. The destructuring pattern is
/// exhaustive, so a field missing from the lists is a compile error.
macro_rules! merge_struct {
    ($name:ident; leaves: $($leaf:ident),* ; tables: $($table:ident),* $(,)?) => {
        impl Merge for $name {
            fn merge(&mut self, later: Self) {
                let $name { $($leaf,)* $($table,)* } = later;
                $( if $leaf.is_some() { self.$leaf = $leaf; } )*
                $( self.$table.merge($table); )*
            }
        }
    };
}

merge_struct!(RawFile;
    leaves: host, compose_dir, state_dir, compose_command, max_parallel, sample_interval,
        admin_group, boot_id_file, reload_guard;
    tables: hosts, peer, services, resources, notify, housekeeping);
merge_struct!(RawHousekeeping; leaves: prune, disk_warning; tables: );
merge_struct!(RawHost; leaves: peer; tables: );
merge_struct!(RawPeer;
    leaves: listen, token_file, tls_cert, tls_key, tls_ca, tls_pin_sha256, timeout, heartbeat;
    tables: );
merge_struct!(RawService;
    leaves: host, auto_start, depends_on, conflicts, start_order, start_timeout, handoff,
        handoff_volumes, kind, unit, exec, working_dir, environment, user, description, category, required_for;
    tables: health, restart, resources);
merge_struct!(RawHealth;
    leaves: http, expect_status, body_contains, tls_ca, tcp, command, container, file, max_age,
        interval, timeout, retries, start_period;
    tables: );
merge_struct!(RawRestart; leaves: on_failure, max_restarts, window, backoff, manual_stop, retry_interval; tables: );
merge_struct!(RawResources;
    leaves: cpu_percent, memory_percent, memory, sustain, clear_ratio, cooldown;
    tables: );
merge_struct!(RawNotify; leaves: min_severity; tables: email, webhook, desktop);
merge_struct!(RawEmail;
    leaves: smtp, starttls, from, to, username, password_file, password, min_severity,
        services, kinds;
    tables: );
merge_struct!(RawWebhook;
    leaves: url, format, secret_file, secret, min_severity, services, kinds;
    tables: );
merge_struct!(RawDesktop; leaves: min_severity, services, kinds; tables: );
