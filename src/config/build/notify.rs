//! `[notify]`: channel filters, `[notify.email]` (with its SMTP URL) and
//! `[notify.webhook.NAME]`.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::raw::{self, At, Loc, RawFile, Strings};
use crate::config::{
    ChannelFilter, EmailConfig, NotifyConfig, Severity, WebhookConfig, WebhookFormat,
};

use super::*;

impl Ctx<'_> {
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

    pub(super) fn notify(&mut self, raw: &RawFile, known: &BTreeSet<&str>) -> NotifyConfig {
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
