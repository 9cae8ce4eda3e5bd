//! The email channel: one message per alert over SMTP (lettre, rustls).
//!
//! `smtps://` is TLS from the first byte; `smtp://` is plain, STARTTLS when
//! the server offers it (`starttls` unset), STARTTLS or nothing
//! (`starttls = true`), or never TLS (`starttls = false`). The password is
//! read from `password_file` for every message, so a changed password needs
//! no reload.

use std::time::{Duration, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{read_secret, text, title, Channel, ChannelError, Delivery, SEND_TIMEOUT};
use crate::config::EmailConfig;

pub(super) struct Email {
    config: EmailConfig,
    host: String,
}

impl Email {
    pub(super) fn new(config: EmailConfig, host: String) -> Email {
        Email { config, host }
    }

    /// The message for a delivery: subject, Message-ID from the delivery
    /// id, Date from the alert's time, a plain-text body.
    pub(super) fn message(&self, d: &Delivery) -> Result<Message, ChannelError> {
        let addr = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| ChannelError::Setup(format!("invalid email address {a:?}: {e}")))
        };
        let mut b = Message::builder()
            .from(addr(&self.config.from)?)
            .subject(title(&d.alert))
            .message_id(Some(message_id(&d.id, &self.host)))
            .date(UNIX_EPOCH + Duration::from_micros(d.alert.usec).min(far_future()))
            .user_agent(format!("stackd/{}", env!("CARGO_PKG_VERSION")))
            .header(ContentType::TEXT_PLAIN);
        for to in &self.config.to {
            b = b.to(addr(to)?);
        }
        b.body(text(&d.alert))
            .map_err(|e| ChannelError::Setup(format!("cannot build the message: {e}")))
    }

    fn transport(&self) -> Result<AsyncSmtpTransport<Tokio1Executor>, ChannelError> {
        let c = &self.config;
        let tls = || {
            TlsParameters::new(c.smtp_host.clone())
                .map_err(|e| ChannelError::Setup(format!("TLS set-up for {}: {e}", c.smtp_host)))
        };
        let tls = if c.implicit_tls {
            Tls::Wrapper(tls()?)
        } else {
            match c.starttls {
                None => Tls::Opportunistic(tls()?),
                Some(true) => Tls::Required(tls()?),
                Some(false) => Tls::None,
            }
        };
        let mut t = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(c.smtp_host.as_str())
            .port(c.smtp_port)
            .tls(tls)
            .timeout(Some(SEND_TIMEOUT));
        if let (Some(user), Some(file)) = (&c.username, &c.password_file) {
            let password = read_secret(file, "SMTP password")?;
            t = t.credentials(Credentials::new(user.clone(), password));
        }
        Ok(t.build())
    }
}

impl Channel for Email {
    fn name(&self) -> &str {
        super::EMAIL
    }

    fn send<'a>(&'a self, d: &'a Delivery) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let message = self.message(d)?;
            let transport = self.transport()?;
            transport.send(message).await.map(|_| ()).map_err(|e| {
                let what = format!("SMTP {}: {e}", self.config.smtp);
                if e.is_permanent() || e.is_transient() {
                    ChannelError::Rejected(what)
                } else {
                    ChannelError::Transport(what)
                }
            })
        })
    }
}

/// `<ID@stackd.HOST>`, the host reduced to what a message id may hold.
pub(super) fn message_id(delivery_id: &str, host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    format!("<{delivery_id}@stackd.{host}>")
}

/// Dates past this are clamped (a corrupt time must not panic).
fn far_future() -> Duration {
    Duration::from_secs(253_402_300_799) // 9999-12-31T23:59:59Z
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ChannelFilter, Severity as CS};
    use crate::events::{Alert, Severity};

    fn config() -> EmailConfig {
        EmailConfig {
            smtp: "smtp://127.0.0.1:2525".into(),
            smtp_host: "127.0.0.1".into(),
            smtp_port: 2525,
            implicit_tls: false,
            starttls: Some(false),
            from: "stackd@nuc.lan".into(),
            to: vec!["ops@example.com".into(), "Me <me@example.com>".into()],
            username: None,
            password_file: None,
            filter: ChannelFilter {
                min_severity: CS::Warning,
                services: vec![],
                kinds: vec![],
            },
        }
    }

    #[test]
    fn message_has_subject_id_date_and_body() {
        let e = Email::new(config(), "nuc".into());
        let d = Delivery {
            id: "0123456789abcdef0123456789abcdef".into(),
            alert: Alert {
                severity: Severity::Critical,
                kind: "gave-up".into(),
                host: "nuc".into(),
                service: "web".into(),
                summary: "restarted 5 times in 10min; giving up".into(),
                body: "last exit code 137".into(),
                usec: 1_700_000_000_000_000,
                fields: Vec::new(),
            },
        };
        let raw = String::from_utf8(e.message(&d).unwrap().formatted()).unwrap();
        for part in [
            "Subject: [stackd] nuc: web restarted 5 times in 10min; giving up\r\n",
            "Message-ID: <0123456789abcdef0123456789abcdef@stackd.nuc>\r\n",
            "Date: Tue, 14 Nov 2023 22:13:20 +0000\r\n",
            "From: stackd@nuc.lan\r\n",
            "To: ops@example.com, Me <me@example.com>\r\n",
            "2023-11-14T22:13:20Z",
            "last exit code 137",
        ] {
            assert!(raw.contains(part), "{part:?} in\n{raw}");
        }
    }

    #[test]
    fn message_ids_are_well_formed() {
        assert_eq!(message_id("ab", "my host_1"), "<ab@stackd.my-host-1>");
    }

    #[tokio::test]
    async fn unreadable_password_file_is_a_setup_error() {
        let mut c = config();
        c.username = Some("u".into());
        c.password_file = Some("/nonexistent/stackd-smtp.password".into());
        let e = Email::new(c, "nuc".into());
        let err = e.transport().err().unwrap();
        assert!(
            matches!(&err, ChannelError::Setup(m) if m.contains("/nonexistent/stackd-smtp.password")),
            "{err:?}"
        );
    }
}
