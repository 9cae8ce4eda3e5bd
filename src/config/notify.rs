//! The validated `[notify]` section: severities, each channel's filter,
//! `[notify.email]` and `[notify.webhook.NAME]`.

use std::collections::BTreeMap;
use std::path::PathBuf;

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
