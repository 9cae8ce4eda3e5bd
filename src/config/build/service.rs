//! One `[services.NAME]` table: its name, `kind` and the keys of each
//! kind (unit spec, exec environment, external's limits), and the
//! registry's words (`description`, `category`, `required_for`).

use std::time::Duration;

use crate::config::raw::{self, At, Environment, Loc, Merge, Strings};
use crate::config::{
    ExecSpec, Handoff, HostSelector, RestartConfig, ServiceConfig, ServiceKind, UnitSpec,
    COMPOSE_FILE_NAMES,
};

use super::*;

impl Ctx<'_> {
    pub(super) fn service(
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
            handoff_volumes: s.handoff_volumes.as_ref().is_some_and(|l| l.value),
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
}

/// `^[a-z0-9][a-z0-9_-]*$`, the Compose project name rule.
fn valid_service_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

pub(super) fn is_external(s: &raw::RawService) -> bool {
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
