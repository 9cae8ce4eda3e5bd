//! From merged raw files to a validated [`Config`], collecting every error
//! with the place it was written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{
    self, At, Environment, HostSpec, Loc, Merge, Num, RawFile, RawHealth, RawResources, StrOrInt,
    Strings,
};
use super::units::{self, parse_bytes, parse_duration, parse_status_ranges, Fnv};
use super::{
    home_dir, xdg_dir, ChannelFilter, ComposeCommand, Config, ConfigError, Diagnostic, EmailConfig,
    ExecSpec, Handoff, HealthConfig, HostConfig, HostSelector, LoadOptions, ManualStop,
    NotifyConfig, PeerConfig, Probe, ResourcesConfig, RestartConfig, ServiceConfig, ServiceKind,
    Severity, UnitSpec, WebhookConfig, WebhookFormat, COMPOSE_FILE_NAMES, DEFAULT_RELOAD_GUARD,
};

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

    fn service(
        &mut self,
        name: &str,
        at: At,
        s: &raw::RawService,
        sc: &Scope<'_>,
    ) -> ServiceConfig {
        let header = self.header_at(at);
        if !valid_service_name(name) {
            self.err(
                header,
                format!(
                    "invalid service name {name:?}: a Compose project name is expected \
                     (lower-case letters, digits, '_' and '-', starting with a letter or digit)"
                ),
            );
        }
        let hosts = self.host_selector(name, header, s, sc);

        let dir = sc.compose_dir.join(name);
        let found = COMPOSE_FILE_NAMES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| sc.check && p.is_file());
        let runs_here = match &hosts {
            HostSelector::All => true,
            HostSelector::List(l) => l.iter().any(|h| h == sc.host),
        };
        let kind = self.kind(name, header, s);
        if sc.check && runs_here && found.is_none() && kind == ServiceKind::Compose {
            self.err(
                header,
                format!(
                    "service `{name}` runs on this host but {} has no compose file \
                     (looked for {})",
                    dir.display(),
                    COMPOSE_FILE_NAMES.join(", ")
                ),
            );
        }
        let compose_file = found.unwrap_or_else(|| dir.join(COMPOSE_FILE_NAMES[0]));

        let handoff = match &s.handoff {
            None => Handoff::StopFirst,
            Some(l) => match l.value.as_str() {
                "stop-first" => Handoff::StopFirst,
                "overlap" => Handoff::Overlap,
                other => {
                    self.err(
                        l.at,
                        format!(
                            "unknown handoff {other:?}: expected \"stop-first\" or \"overlap\""
                        ),
                    );
                    Handoff::StopFirst
                }
            },
        };

        let mut resources = sc.resources.cloned();
        resources.merge(s.resources.clone());
        if kind == ServiceKind::External {
            // Host-wide thresholds are about containers; an endpoint has none.
            resources = None;
        }
        let description = self.words(&s.description, "description");
        let category = self.words(&s.category, "category");
        let required_for = self.operations(&s.required_for);

        ServiceConfig {
            name: name.to_owned(),
            hosts,
            auto_start: s.auto_start.as_ref().map_or(true, |l| l.value),
            depends_on: names(&s.depends_on),
            conflicts: names(&s.conflicts),
            start_order: s.start_order.as_ref().map_or(0, |l| l.value.0),
            start_timeout: self.positive_duration(&s.start_timeout, Duration::from_secs(120)),
            health: s.health.as_ref().map(|h| self.health(h, &dir)),
            restart: s
                .restart
                .as_ref()
                .map_or_else(RestartConfig::default, |r| self.restart(r)),
            resources: resources.as_ref().map(|r| self.resources(r)),
            compose_file,
            dir,
            handoff,
            kind,
            description,
            category,
            required_for,
        }
    }

    /// `kind` and the keys that belong to one kind only: `unit`/`exec` and
    /// the exec keys for units, a probe and no lifecycle for externals.
    fn kind(&mut self, name: &str, header: At, s: &raw::RawService) -> ServiceKind {
        let written = s.kind.as_ref().map_or("compose", |l| l.value.as_str());
        let kind_at = s.kind.as_ref().map_or(header, |l| l.at);
        let unit_keys: [(Option<At>, &str); 5] = [
            (s.unit.as_ref().map(|l| l.at), "unit"),
            (s.exec.as_ref().map(|l| l.at), "exec"),
            (s.working_dir.as_ref().map(|l| l.at), "working_dir"),
            (s.environment.as_ref().map(|l| l.at), "environment"),
            (s.user.as_ref().map(|l| l.at), "user"),
        ];
        let mut kind = match written {
            "compose" => ServiceKind::Compose,
            "unit" => ServiceKind::Unit(UnitSpec::Existing(String::new())),
            "external" => ServiceKind::External,
            other => {
                self.err(
                    kind_at,
                    format!(
                        "unknown kind {other:?}: expected \"compose\", \"unit\" or \"external\""
                    ),
                );
                return ServiceKind::Compose;
            }
        };
        if !matches!(kind, ServiceKind::Unit(_)) {
            for (at, key) in unit_keys {
                if let Some(at) = at {
                    self.err(
                        at,
                        format!(
                            "{key} only applies to kind = \"unit\" (service `{name}` is kind \
                             = \"{written}\")"
                        ),
                    );
                }
            }
        }
        if let Some(container) = s.health.as_ref().and_then(|h| h.container.as_ref()) {
            if kind != ServiceKind::Compose {
                self.err(
                    container.at,
                    format!(
                        "container only applies to kind = \"compose\": a kind = \"{written}\" \
                         service has no containers; drop it to run the command on the host"
                    ),
                );
            }
        }
        match &mut kind {
            ServiceKind::Compose => {}
            ServiceKind::Unit(spec) => {
                if let Some(u) = self.unit_spec(name, header, s) {
                    *spec = u;
                }
            }
            ServiceKind::External => self.external(name, header, s),
        }
        kind
    }

    /// A unit service: exactly one of `unit` and `exec`; the exec keys only
    /// with `exec`.
    fn unit_spec(&mut self, name: &str, header: At, s: &raw::RawService) -> Option<UnitSpec> {
        match (&s.unit, &s.exec) {
            (None, None) => {
                self.err(
                    header,
                    format!(
                        "service `{name}` is kind = \"unit\" but says neither which unit \
                         (unit = \"nginx.service\") nor what to run (exec = [\"/usr/bin/prog\", \
                         \"--flag\"])"
                    ),
                );
                None
            }
            (Some(u), Some(e)) => {
                let later = u.at.max(e.at);
                self.err(
                    later,
                    "unit and exec exclude each other: unit = names an existing unit, exec = \
                     runs a program as a unit stackd creates",
                );
                None
            }
            (Some(u), None) => {
                for (at, key) in [
                    (s.working_dir.as_ref().map(|l| l.at), "working_dir"),
                    (s.environment.as_ref().map(|l| l.at), "environment"),
                    (s.user.as_ref().map(|l| l.at), "user"),
                ] {
                    if let Some(at) = at {
                        self.err(
                            at,
                            format!(
                                "{key} only applies to exec = [...]; an existing unit \
                                 (unit = {:?}) keeps its own settings",
                                u.value
                            ),
                        );
                    }
                }
                if !valid_unit_name(&u.value) {
                    self.err(
                        u.at,
                        format!(
                            "invalid unit name {:?}: expected a systemd unit name such as \
                             \"nginx.service\"",
                            u.value
                        ),
                    );
                    return None;
                }
                Some(UnitSpec::Existing(u.value.clone()))
            }
            (None, Some(e)) => {
                if e.value.first().map_or(true, |p| p.value.is_empty()) {
                    self.err(
                        e.at,
                        "expected a command as a list of strings, program first, \
                         e.g. [\"/usr/local/bin/agent\", \"--port\", \"9100\"]",
                    );
                }
                let working_dir = self.path(&s.working_dir);
                let environment = s
                    .environment
                    .as_ref()
                    .map(|l| self.environment(&l.value))
                    .unwrap_or_default();
                let user = s.user.as_ref().and_then(|l| {
                    if l.value.is_empty() || l.value.contains(char::is_whitespace) {
                        self.err(l.at, "expected a user name or a numeric uid");
                        None
                    } else {
                        Some(l.value.clone())
                    }
                });
                Some(UnitSpec::Transient(ExecSpec {
                    argv: e.value.values(),
                    working_dir,
                    environment,
                    user,
                }))
            }
        }
    }

    /// `environment`, either form, as `(NAME, VALUE)` pairs.
    fn environment(&mut self, env: &Environment) -> Vec<(String, String)> {
        let pairs: Vec<(At, String, String)> = match env {
            Environment::Table(t) => t
                .iter()
                .map(|(k, v)| (k.at, k.value.clone(), v.value.clone()))
                .collect(),
            Environment::List(l) => l
                .iter()
                .filter_map(|kv| match kv.value.split_once('=') {
                    Some((k, v)) => Some((kv.at, k.to_owned(), v.to_owned())),
                    None => {
                        self.err(
                            kv.at,
                            format!("expected \"NAME=VALUE\", found {:?} (no '=')", kv.value),
                        );
                        None
                    }
                })
                .collect(),
        };
        let mut out: Vec<(String, String)> = Vec::new();
        for (at, k, v) in pairs {
            if !valid_env_name(&k) {
                self.err(
                    at,
                    format!(
                        "invalid environment variable name {k:?}: expected letters, digits \
                         and '_', not starting with a digit"
                    ),
                );
                continue;
            }
            out.retain(|(name, _)| *name != k);
            out.push((k, v));
        }
        out
    }

    /// An external service: a probe (its health is all there is), and none
    /// of the keys that start, stop or restart something.
    fn external(&mut self, name: &str, header: At, s: &raw::RawService) {
        let has_probe = s.health.as_ref().is_some_and(|h| {
            h.http.is_some() || h.tcp.is_some() || h.command.is_some() || h.file.is_some()
        });
        if !has_probe {
            self.err(
                header,
                format!(
                    "service `{name}` is kind = \"external\" and needs a health probe: its \
                     health is all stackd knows of it, e.g. health = {{ http = \
                     \"https://api.example/healthz\" }} (or tcp, command, file)"
                ),
            );
        }
        let first = |l: &Option<Strings>| l.as_ref().map(|v| v.first().map_or(header, |x| x.at));
        let refused: [(Option<At>, &str); 8] = [
            (s.auto_start.as_ref().map(|l| l.at), "auto_start"),
            (first(&s.depends_on), "depends_on"),
            (first(&s.conflicts), "conflicts"),
            (s.start_order.as_ref().map(|l| l.at), "start_order"),
            (s.start_timeout.as_ref().map(|l| l.at), "start_timeout"),
            (s.handoff.as_ref().map(|l| l.at), "handoff"),
            (s.restart.as_ref().map(|_| header), "restart"),
            (s.resources.as_ref().map(|_| header), "resources"),
        ];
        for (at, key) in refused {
            if let Some(at) = at {
                self.err(
                    at,
                    format!(
                        "{key} does not apply to kind = \"external\": stackd only probes \
                         service `{name}`, it never starts, stops or restarts it"
                    ),
                );
            }
        }
    }

    /// `description`, `category`: one line of text.
    fn words(&mut self, v: &Option<Loc<String>>, key: &str) -> Option<String> {
        let l = v.as_ref()?;
        let text = l.value.trim();
        if text.is_empty() || text.contains(['\n', '\r']) {
            self.err(l.at, format!("expected {key} as one line of text"));
            return None;
        }
        Some(text.to_owned())
    }

    /// `required_for`: operation names, without duplicates.
    fn operations(&mut self, v: &Option<Strings>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for op in v.as_deref().unwrap_or_default() {
            if !valid_operation(&op.value) {
                self.err(
                    op.at,
                    format!(
                        "invalid operation name {:?}: expected letters, digits, '.', '-', '_' \
                         or ':', e.g. \"backup\"",
                        op.value
                    ),
                );
            } else if !out.contains(&op.value) {
                out.push(op.value.clone());
            }
        }
        out
    }

    fn host_selector(
        &mut self,
        name: &str,
        header: At,
        s: &raw::RawService,
        sc: &Scope<'_>,
    ) -> HostSelector {
        let Some(spec) = &s.host else {
            return match sc.hosts.len() {
                0 => HostSelector::List(vec![sc.host.to_owned()]),
                1 => HostSelector::List(sc.hosts.keys().cloned().collect()),
                _ => {
                    self.err(
                        header,
                        format!(
                            "service `{name}` does not say which host runs it: \
                             say which host runs it (one of {}), or host = \"all\"",
                            list(sc.hosts.keys())
                        ),
                    );
                    HostSelector::List(Vec::new())
                }
            };
        };
        let entries: Vec<Loc<String>> = match &spec.value {
            HostSpec::One(h) => vec![Loc {
                value: h.clone(),
                at: spec.at,
            }],
            HostSpec::List(l) => l.clone(),
        };
        if entries.is_empty() {
            self.err(
                spec.at,
                "expected at least one host name, or \"all\"; to run the service nowhere, \
                 set auto_start = false",
            );
        }
        if entries.iter().any(|h| h.value == "all") {
            if entries.len() > 1 {
                self.err(spec.at, "\"all\" cannot be combined with other host names");
            }
            return HostSelector::All;
        }
        let mut out: Vec<String> = Vec::new();
        for h in entries {
            let known = if sc.hosts.is_empty() {
                h.value == sc.host
            } else {
                sc.hosts.contains_key(&h.value)
            };
            if !known {
                let expected = if sc.hosts.is_empty() {
                    format!(
                        "[hosts] is empty, so the only host is this one, `{}`; \
                         add [hosts.{}] tables or use \"all\"",
                        sc.host, h.value
                    )
                } else {
                    format!("expected one of {} or \"all\"", list(sc.hosts.keys()))
                };
                self.err(h.at, format!("unknown host `{}`: {expected}", h.value));
            }
            if !out.contains(&h.value) {
                out.push(h.value);
            }
        }
        HostSelector::List(out)
    }

    /// `depends_on` / `conflicts` name existing services; no dependency cycles.
    fn check_references(&mut self, raw: &RawFile) {
        let services = &raw.services.0;
        let mut edges: BTreeMap<&str, Vec<(&str, At)>> = BTreeMap::new();
        for (name, (_, s)) in services {
            let deps = s.depends_on.as_deref().unwrap_or_default();
            let conflicts = s.conflicts.as_deref().unwrap_or_default();
            for (key, list) in [("depends_on", deps), ("conflicts", conflicts)] {
                for d in list {
                    if d.value == *name {
                        let what = if key == "depends_on" {
                            "depend on"
                        } else {
                            "conflict with"
                        };
                        self.err(d.at, format!("service `{name}` cannot {what} itself"));
                    } else if !services.contains_key(&d.value) {
                        self.err(
                            d.at,
                            format!(
                                "{key} names unknown service `{}`: expected one of {}",
                                d.value,
                                list_or_none(services.keys())
                            ),
                        );
                    } else if key == "conflicts" && is_external(&services[&d.value].1) {
                        self.err(
                            d.at,
                            format!(
                                "conflicts names `{}`, which is kind = \"external\": stackd \
                                 never stops it, so it cannot give way",
                                d.value
                            ),
                        );
                    } else if key == "depends_on" {
                        edges.entry(name).or_default().push((&d.value, d.at));
                    } else if deps.iter().any(|x| x.value == d.value) {
                        self.err(
                            d.at,
                            format!(
                                "service `{name}` both depends on and conflicts with `{}`",
                                d.value
                            ),
                        );
                    }
                }
            }
        }
        for (at, message) in find_cycles(&edges) {
            self.err(at, message);
        }
    }

    fn health(&mut self, h: &RawHealth, service_dir: &Path) -> HealthConfig {
        let mut kinds: Vec<(At, &str)> = [
            (h.http.as_ref().map(|l| l.at), "http"),
            (h.tcp.as_ref().map(|l| l.at), "tcp"),
            (h.command.as_ref().map(|l| l.at), "command"),
            (h.file.as_ref().map(|l| l.at), "file"),
        ]
        .into_iter()
        .filter_map(|(at, k)| at.map(|at| (at, k)))
        .collect();
        kinds.sort();
        if kinds.len() > 1 {
            let names: Vec<&str> = kinds.iter().map(|(_, k)| *k).collect();
            self.err(
                kinds[1].0,
                format!(
                    "a health check has at most one probe of http, tcp, command and file; \
                     found {}",
                    names.join(" and ")
                ),
            );
        }
        let only_for = |cx: &mut Self, at: Option<At>, key: &str, probe: &str| {
            if let Some(at) = at {
                if !kinds.iter().any(|(_, k)| *k == probe) {
                    cx.err(at, format!("{key} only applies to a {probe} probe"));
                }
            }
        };
        only_for(
            self,
            h.expect_status.as_ref().map(|l| l.at),
            "expect_status",
            "http",
        );
        only_for(
            self,
            h.body_contains.as_ref().map(|l| l.at),
            "body_contains",
            "http",
        );
        only_for(self, h.tls_ca.as_ref().map(|l| l.at), "tls_ca", "http");
        only_for(
            self,
            h.container.as_ref().map(|l| l.at),
            "container",
            "command",
        );
        only_for(self, h.max_age.as_ref().map(|l| l.at), "max_age", "file");

        let probe = match kinds.first().map(|(_, k)| *k) {
            Some("http") => h
                .http
                .as_ref()
                .and_then(|l| self.url(l, &["http", "https"]))
                .map(|url| {
                    let expect_status = match &h.expect_status {
                        None => vec![(200, 399)],
                        Some(l) => {
                            let text = match &l.value {
                                StrOrInt::Str(s) => s.clone(),
                                StrOrInt::Int(i) => i.to_string(),
                            };
                            parse_status_ranges(&text).unwrap_or_else(|e| {
                                self.err(l.at, e);
                                vec![(200, 399)]
                            })
                        }
                    };
                    let tls_ca = self.path_in(&h.tls_ca, service_dir);
                    Probe::Http {
                        url,
                        expect_status,
                        body_contains: h.body_contains.as_ref().map(|l| l.value.clone()),
                        tls_ca,
                    }
                }),
            Some("tcp") => h.tcp.as_ref().map(|l| {
                if let Err(e) = units::check_host_port(&l.value) {
                    self.err(l.at, e);
                }
                Probe::Tcp {
                    address: l.value.clone(),
                }
            }),
            Some("command") => h.command.as_ref().map(|l| {
                if l.value.first().map_or(true, |p| p.value.is_empty()) {
                    self.err(
                        l.at,
                        "expected a command as a list of strings, program first, \
                         e.g. [\"pg_isready\", \"-q\"]",
                    );
                }
                Probe::Command {
                    argv: l.value.values(),
                    container: h.container.as_ref().map(|c| c.value.clone()),
                }
            }),
            Some(_) => self.path_in(&h.file, service_dir).map(|path| Probe::File {
                path,
                max_age: h
                    .max_age
                    .as_ref()
                    .map(|_| self.positive_duration(&h.max_age, Duration::ZERO)),
            }),
            None => None,
        };
        let retries = match &h.retries {
            None => 3,
            Some(l) => match u32::try_from(l.value.0) {
                Ok(n) if n >= 1 => n,
                _ => {
                    self.err(l.at, "expected a number of retries of 1 or more");
                    3
                }
            },
        };
        HealthConfig {
            probe,
            interval: self.positive_duration(&h.interval, Duration::from_secs(10)),
            timeout: self.positive_duration(&h.timeout, Duration::from_secs(5)),
            retries,
            start_period: self.duration(&h.start_period, Duration::ZERO),
        }
    }

    fn restart(&mut self, r: &raw::RawRestart) -> RestartConfig {
        let default = RestartConfig::default();
        let max_restarts = match &r.max_restarts {
            None => default.max_restarts,
            Some(l) => u32::try_from(l.value.0).unwrap_or_else(|_| {
                self.err(l.at, "expected a number of restarts of 0 or more");
                default.max_restarts
            }),
        };
        let (backoff_min, backoff_max) = match &r.backoff {
            None => (default.backoff_min, default.backoff_max),
            Some(l) => {
                let parsed = match l.value.split_once("..") {
                    Some((a, b)) => parse_duration(a).and_then(|a| Ok((a, parse_duration(b)?))),
                    None => parse_duration(&l.value).map(|d| (d, d)),
                };
                match parsed {
                    Ok((a, b)) if a <= b => (a, b),
                    Ok(_) => {
                        self.err(l.at, "backoff minimum is above its maximum: expected \"MIN..MAX\" with MIN <= MAX");
                        (default.backoff_min, default.backoff_max)
                    }
                    Err(e) => {
                        self.err(
                            l.at,
                            format!(
                                "invalid backoff: {e}; write it as \"MIN..MAX\", e.g. \"5s..5m\""
                            ),
                        );
                        (default.backoff_min, default.backoff_max)
                    }
                }
            }
        };
        let manual_stop = match &r.manual_stop {
            None => default.manual_stop,
            Some(l) => match l.value.as_str() {
                "respect" => ManualStop::Respect,
                "revert" => ManualStop::Revert,
                other => {
                    self.err(
                        l.at,
                        format!(
                            "unknown manual_stop {other:?}: expected \"respect\" or \"revert\""
                        ),
                    );
                    default.manual_stop
                }
            },
        };
        RestartConfig {
            on_failure: r.on_failure.as_ref().map_or(true, |l| l.value),
            max_restarts,
            window: self.positive_duration(&r.window, default.window),
            backoff_min,
            backoff_max,
            manual_stop,
            retry_interval: self.positive_duration(&r.retry_interval, default.retry_interval),
        }
    }

    fn resources(&mut self, r: &RawResources) -> ResourcesConfig {
        let percent = |cx: &mut Self, v: &Option<Loc<Num>>, max: f64| {
            let l = v.as_ref()?;
            if l.value.0.is_finite() && l.value.0 > 0.0 && l.value.0 <= max {
                Some(l.value.0)
            } else {
                cx.err(
                    l.at,
                    format!("expected a percentage above 0 and at most {max}"),
                );
                None
            }
        };
        let cpu_percent = percent(self, &r.cpu_percent, 100_000.0);
        let memory_percent = percent(self, &r.memory_percent, 100.0);
        let memory = r.memory.as_ref().and_then(|l| {
            let bytes = match &l.value {
                StrOrInt::Int(n) => u64::try_from(*n).map_err(|_| {
                    "expected a positive number of bytes, or a size such as \"512M\"".to_owned()
                }),
                StrOrInt::Str(s) => parse_bytes(s),
            };
            match bytes {
                Ok(0) => {
                    self.err(l.at, "expected a memory size above zero");
                    None
                }
                Ok(b) => Some(b),
                Err(e) => {
                    self.err(l.at, e);
                    None
                }
            }
        });
        let clear_ratio = match &r.clear_ratio {
            None => 0.9,
            Some(l) if l.value.0 > 0.0 && l.value.0 <= 1.0 => l.value.0,
            Some(l) => {
                self.err(l.at, "expected a ratio above 0 and at most 1, e.g. 0.9");
                0.9
            }
        };
        ResourcesConfig {
            cpu_percent,
            memory_percent,
            memory,
            sustain: self.duration(&r.sustain, Duration::from_secs(30)),
            clear_ratio,
            cooldown: self.duration(&r.cooldown, Duration::from_secs(600)),
        }
    }

    fn filter(
        &mut self,
        min_severity: &Option<Loc<String>>,
        services: &Option<Strings>,
        kinds: &Option<Strings>,
        default: Severity,
        known: &BTreeSet<&str>,
    ) -> ChannelFilter {
        for s in services.as_deref().unwrap_or_default() {
            if !known.contains(s.value.as_str()) {
                self.err(
                    s.at,
                    format!(
                        "unknown service `{}`: expected one of {}",
                        s.value,
                        list_or_none(known.iter())
                    ),
                );
            }
        }
        for k in kinds.as_deref().unwrap_or_default() {
            if k.value.is_empty() {
                self.err(k.at, "expected an event kind, found an empty string");
            }
        }
        ChannelFilter {
            min_severity: self.severity(min_severity).unwrap_or(default),
            services: names(services),
            kinds: names(kinds),
        }
    }

    fn notify(&mut self, raw: &RawFile, known: &BTreeSet<&str>) -> NotifyConfig {
        let Some(n) = &raw.notify else {
            return NotifyConfig {
                min_severity: Severity::Warning,
                email: None,
                webhooks: BTreeMap::new(),
                desktop: None,
            };
        };
        let min_severity = self.severity(&n.min_severity).unwrap_or(Severity::Warning);
        let email = n
            .email
            .as_ref()
            .and_then(|e| self.email(e, min_severity, known));
        let mut webhooks = BTreeMap::new();
        for (name, (at, w)) in &n.webhook.0 {
            if let Some(hook) = self.webhook(name, *at, w, min_severity, known) {
                webhooks.insert(name.clone(), hook);
            }
        }
        let desktop = n
            .desktop
            .as_ref()
            .map(|d| self.filter(&d.min_severity, &d.services, &d.kinds, min_severity, known));
        NotifyConfig {
            min_severity,
            email,
            webhooks,
            desktop,
        }
    }

    fn email(
        &mut self,
        e: &raw::RawEmail,
        default: Severity,
        known: &BTreeSet<&str>,
    ) -> Option<EmailConfig> {
        if let Some(l) = &e.password {
            self.err(
                l.at,
                "inline passwords are not allowed: put the password in a file only stackd \
                 can read and set password_file = \"/etc/stackd/smtp.password\"",
            );
        }
        // Where to report a missing key: the first key written in the table.
        let anchor = [
            e.smtp.as_ref().map(|l| l.at),
            e.from.as_ref().map(|l| l.at),
            e.to.as_ref().map(|l| l.at),
            e.username.as_ref().map(|l| l.at),
            e.password_file.as_ref().map(|l| l.at),
            e.min_severity.as_ref().map(|l| l.at),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(TOP);
        let mut missing = Vec::new();
        let smtp = e.smtp.as_ref().and_then(|l| match parse_smtp(&l.value) {
            Ok(v) => Some((l, v)),
            Err(m) => {
                self.err(l.at, m);
                None
            }
        });
        if e.smtp.is_none() {
            missing.push("smtp");
        }
        if let (Some(l), Some((_, (_, _, true)))) = (&e.starttls, &smtp) {
            if l.value {
                self.err(
                    l.at,
                    "starttls = true contradicts smtps:// (TLS from the start); use smtp:// \
                     for STARTTLS",
                );
            }
        }
        let from = e.from.as_ref().map(|l| {
            if !l.value.contains('@') {
                self.err(
                    l.at,
                    "expected an email address such as stackd@host.example",
                );
            }
            l.value.clone()
        });
        if from.is_none() {
            missing.push("from");
        }
        let to = match &e.to {
            None => {
                missing.push("to");
                Vec::new()
            }
            Some(l) => {
                if l.value.is_empty() {
                    self.err(l.at, "expected at least one recipient address");
                }
                for a in l.value.iter() {
                    if !a.value.contains('@') {
                        self.err(a.at, "expected an email address such as ops@example.com");
                    }
                }
                l.value.values()
            }
        };
        if !missing.is_empty() {
            self.err(
                anchor,
                format!("[notify.email] needs {}", missing.join(", ")),
            );
        }
        match (&e.username, &e.password_file) {
            (Some(l), None) => self.err(l.at, "username needs password_file too"),
            (None, Some(l)) => self.err(l.at, "password_file needs username too"),
            _ => {}
        }
        let password_file = self.path(&e.password_file);
        let filter = self.filter(&e.min_severity, &e.services, &e.kinds, default, known);
        let (smtp_l, (smtp_host, smtp_port, implicit_tls)) = smtp?;
        Some(EmailConfig {
            smtp: smtp_l.value.clone(),
            smtp_host,
            smtp_port,
            implicit_tls,
            starttls: e.starttls.as_ref().map(|l| l.value),
            from: from?,
            to,
            username: e.username.as_ref().map(|l| l.value.clone()),
            password_file,
            filter,
        })
    }

    fn webhook(
        &mut self,
        name: &str,
        at: At,
        w: &raw::RawWebhook,
        default: Severity,
        known: &BTreeSet<&str>,
    ) -> Option<WebhookConfig> {
        if let Some(l) = &w.secret {
            self.err(
                l.at,
                "inline secrets are not allowed: put the HMAC key in a file only stackd can \
                 read and set secret_file",
            );
        }
        let url = match &w.url {
            None => {
                self.err(
                    self.header_at(at),
                    format!("[notify.webhook.{name}] needs url"),
                );
                None
            }
            Some(l) => self.url(l, &["http", "https"]),
        };
        let format = match &w.format {
            None => WebhookFormat::Json,
            Some(l) => match l.value.as_str() {
                "json" => WebhookFormat::Json,
                "ntfy" => WebhookFormat::Ntfy,
                "slack" => WebhookFormat::Slack,
                "discord" => WebhookFormat::Discord,
                other => {
                    self.err(
                        l.at,
                        format!(
                            "unknown format {other:?}: expected \"json\", \"ntfy\", \"slack\" \
                             or \"discord\""
                        ),
                    );
                    WebhookFormat::Json
                }
            },
        };
        let secret_file = self.path(&w.secret_file);
        let filter = self.filter(&w.min_severity, &w.services, &w.kinds, default, known);
        Some(WebhookConfig {
            name: name.to_owned(),
            url: url?,
            format,
            secret_file,
            filter,
        })
    }
}

/// Every dependency cycle, once each, reported at the edge written last
/// (the one that closed the cycle), as `a -> b -> a` starting from there.
pub(super) fn find_cycles(edges: &BTreeMap<&str, Vec<(&str, At)>>) -> Vec<(At, String)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = edges.keys().map(|k| (*k, Mark::New)).collect();
    let mut seen: BTreeSet<Vec<&str>> = BTreeSet::new();
    let mut out = Vec::new();
    for &root in edges.keys() {
        if mark.get(root) != Some(&Mark::New) {
            continue;
        }
        // Iterative DFS: (node, index of the next edge to follow); `via[i]`
        // is the edge taken from stack[i] to stack[i + 1].
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        let mut via: Vec<At> = Vec::new();
        mark.insert(root, Mark::Open);
        while let Some(top) = stack.len().checked_sub(1) {
            let (node, next) = stack[top];
            let out_edges = edges.get(node).map_or(&[][..], Vec::as_slice);
            let Some(&(to, at)) = out_edges.get(next) else {
                mark.insert(node, Mark::Done);
                stack.pop();
                via.pop();
                continue;
            };
            stack[top].1 += 1;
            match mark.get(to).copied().unwrap_or(Mark::Done) {
                Mark::New => {
                    mark.insert(to, Mark::Open);
                    stack.push((to, 0));
                    via.push(at);
                }
                Mark::Open => {
                    let Some(start) = stack.iter().position(|(n, _)| *n == to) else {
                        continue;
                    };
                    let nodes: Vec<&str> = stack[start..].iter().map(|(n, _)| *n).collect();
                    let mut ats: Vec<At> = via[start..].to_vec();
                    ats.push(at);
                    let mut key = nodes.clone();
                    key.sort_unstable();
                    if !seen.insert(key) {
                        continue;
                    }
                    let blame = (0..ats.len()).max_by_key(|&i| ats[i]).unwrap_or(0);
                    let mut path: Vec<&str> = (0..=nodes.len())
                        .map(|i| nodes[(blame + i) % nodes.len()])
                        .collect();
                    path.dedup();
                    out.push((
                        ats[blame],
                        format!("dependency cycle: {}", path.join(" -> ")),
                    ));
                }
                Mark::Done => {}
            }
        }
    }
    out
}

/// `smtp://host[:port]` or `smtps://host[:port]` → (host, port, implicit TLS).
fn parse_smtp(url: &str) -> Result<(String, u16, bool), String> {
    let bad = |why: &str| {
        format!(
            "invalid smtp URL {url:?}: {why}; expected smtp://HOST[:PORT] or \
             smtps://HOST[:PORT], e.g. \"smtp://mail.lan:25\""
        )
    };
    let (implicit, rest) = if let Some(r) = url.strip_prefix("smtp://") {
        (false, r)
    } else if let Some(r) = url.strip_prefix("smtps://") {
        (true, r)
    } else {
        return Err(bad("unknown scheme"));
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(bad(
            "credentials in the URL are not allowed (use username and password_file)",
        ));
    }
    if authority.contains(['/', '?', '#']) || authority.contains(char::is_whitespace) {
        return Err(bad("unexpected path"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, p.parse::<u16>().map_err(|_| bad("port out of range"))?)
        }
        _ => (authority, if implicit { 465 } else { 25 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad("missing host"));
    }
    Ok((host.to_owned(), port, implicit))
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

/// `^[a-z0-9][a-z0-9_-]*$`, the Compose project name rule.
fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

fn is_external(s: &raw::RawService) -> bool {
    s.kind.as_ref().is_some_and(|l| l.value == "external")
}

/// `NAME.TYPE` with a systemd unit type, and no '/' or whitespace.
fn valid_unit_name(name: &str) -> bool {
    const TYPES: [&str; 11] = [
        "service",
        "socket",
        "target",
        "device",
        "mount",
        "automount",
        "swap",
        "timer",
        "path",
        "slice",
        "scope",
    ];
    name.rsplit_once('.').is_some_and(|(stem, ty)| {
        !stem.is_empty()
            && TYPES.contains(&ty)
            && !name.contains('/')
            && !name.contains(char::is_whitespace)
            && name.len() <= 255
    })
}

/// `[A-Za-z_][A-Za-z0-9_]*`, what a shell and systemd accept.
fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn valid_operation(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
}

fn valid_host_name(name: &str) -> bool {
    name != "all"
        && !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}
