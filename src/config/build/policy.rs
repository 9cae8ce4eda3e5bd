//! A service's policy tables: `health` (its probe), `restart` (the
//! crash-loop budget) and `resources` (spike thresholds).

use std::path::Path;
use std::time::Duration;

use crate::config::raw::{self, At, Loc, Num, RawHealth, RawResources, StrOrInt};
use crate::config::units::{self, parse_bytes, parse_duration, parse_status_ranges};
use crate::config::{HealthConfig, ManualStop, Probe, ResourcesConfig, RestartConfig};

use super::*;

impl Ctx<'_> {
    pub(super) fn health(&mut self, h: &RawHealth, service_dir: &Path) -> HealthConfig {
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

    pub(super) fn restart(&mut self, r: &raw::RawRestart) -> RestartConfig {
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

    pub(super) fn resources(&mut self, r: &RawResources) -> ResourcesConfig {
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
}
