//! Webhook channels: an HTTP(S) POST per alert, in one of four shapes.
//!
//! - `json`: the alert as JSON (see [`super::alert_json`]) plus `delivery`;
//! - `ntfy`: the text as a plain body, `Title`, `Priority` and `Tags` headers;
//! - `slack`: `{"text": ...}`; `discord`: `{"content": ...}`.
//!
//! Every request carries `X-Stackd-Delivery: <id>`; with `secret_file` also
//! `X-Stackd-Signature: sha256=<hex HMAC-SHA256 of the body>`, keyed with
//! the file's content less its trailing line end, read for every request.
//! Any 2xx answer is delivery; anything else is retried.
//!
//! HTTP: hyper 1 with hyper-util's client, already in the tree for bollard;
//! https through hyper-rustls (ring, Mozilla's roots from webpki-roots), the
//! same rustls that lettre uses.

use bytes::Bytes;
use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::Sha256;

use super::{alert_json, hex, read_secret, text, title, Channel, ChannelError, Delivery};
use crate::config::{WebhookConfig, WebhookFormat};
use crate::events::{Alert, Severity};

/// The delivery id header.
pub(super) const DELIVERY_HEADER: &str = "x-stackd-delivery";
/// The HMAC signature header.
pub(super) const SIGNATURE_HEADER: &str = "x-stackd-signature";
/// Discord refuses longer messages.
const DISCORD_MAX: usize = 2000;
/// How much of a refusal's body goes into the error.
const ERROR_BODY_MAX: usize = 512;

type HttpClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

pub(super) struct Webhook {
    name: String,
    config: WebhookConfig,
    client: HttpClient,
}

impl Webhook {
    pub(super) fn new(name: String, config: WebhookConfig) -> Webhook {
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_webpki_roots()
            .https_or_http()
            .enable_http1()
            .build();
        Webhook {
            name,
            config,
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    fn request(&self, d: &Delivery) -> Result<Request<Full<Bytes>>, ChannelError> {
        let (content_type, body, extra) = render(self.config.format, d);
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&self.config.url)
            .header(CONTENT_TYPE, content_type)
            .header(USER_AGENT, concat!("stackd/", env!("CARGO_PKG_VERSION")))
            .header(DELIVERY_HEADER, d.id.as_str());
        for (name, value) in extra {
            req = req.header(name, value);
        }
        if let Some(file) = &self.config.secret_file {
            let key = read_secret(file, "webhook secret")?;
            req = req.header(SIGNATURE_HEADER, signature(key.as_bytes(), &body));
        }
        req.body(Full::new(Bytes::from(body))).map_err(|e| {
            ChannelError::Setup(format!(
                "cannot build a request to {}: {e}",
                self.config.url
            ))
        })
    }
}

impl Channel for Webhook {
    fn name(&self) -> &str {
        &self.name
    }

    fn send<'a>(&'a self, d: &'a Delivery) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let req = self.request(d)?;
            let url = &self.config.url;
            let resp = self.client.request(req).await.map_err(|e| {
                // The legacy client's Display is terse; its source says why.
                let why = std::error::Error::source(&e)
                    .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
                ChannelError::Transport(format!("POST {url}: {why}"))
            })?;
            let status = resp.status();
            if status.is_success() {
                return Ok(());
            }
            let body = Limited::new(resp.into_body(), 64 * 1024)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let mut body = String::from_utf8_lossy(&body).trim().to_string();
            truncate(&mut body, ERROR_BODY_MAX);
            Err(ChannelError::Rejected(format!(
                "POST {url} answered {status}{}{body}",
                if body.is_empty() { "" } else { ": " }
            )))
        })
    }
}

/// `sha256=<hex>` of HMAC-SHA256(key, body).
pub(super) fn signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC accepts any key");
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Content type, body and extra headers for one delivery in `format`.
fn render(
    format: WebhookFormat,
    d: &Delivery,
) -> (&'static str, Vec<u8>, Vec<(HeaderName, HeaderValue)>) {
    let a = &d.alert;
    match format {
        WebhookFormat::Json => {
            let mut v = alert_json(a);
            v["delivery"] = serde_json::Value::String(d.id.clone());
            ("application/json", v.to_string().into_bytes(), vec![])
        }
        WebhookFormat::Ntfy => {
            let headers = vec![
                (HeaderName::from_static("title"), header_text(&title(a))),
                (
                    HeaderName::from_static("priority"),
                    HeaderValue::from_static(ntfy_priority(a.severity)),
                ),
                (
                    HeaderName::from_static("tags"),
                    header_text(&format!("{},{}", ntfy_tag(a.severity), a.kind)),
                ),
            ];
            ("text/plain; charset=utf-8", text(a).into_bytes(), headers)
        }
        WebhookFormat::Slack => {
            let body = serde_json::json!({ "text": chat_text(a, "*") });
            ("application/json", body.to_string().into_bytes(), vec![])
        }
        WebhookFormat::Discord => {
            let mut content = chat_text(a, "**");
            truncate(&mut content, DISCORD_MAX);
            let body = serde_json::json!({ "content": content });
            ("application/json", body.to_string().into_bytes(), vec![])
        }
    }
}

/// The title in bold (`bold` is the markup's marker), then the text.
fn chat_text(a: &Alert, bold: &str) -> String {
    format!("{bold}{}{bold}\n{}", title(a), text(a))
}

fn ntfy_priority(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "urgent",
        Severity::Warning => "high",
        Severity::Info => "default",
    }
}

/// An emoji short code ntfy shows in front of the title.
fn ntfy_tag(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "rotating_light",
        Severity::Warning => "warning",
        Severity::Info => "information_source",
    }
}

/// A header value from text: control characters become spaces (UTF-8
/// passes as bytes, which ntfy reads as UTF-8).
fn header_text(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    HeaderValue::from_bytes(clean.as_bytes()).unwrap_or_else(|_| HeaderValue::from_static("stackd"))
}

/// Cuts `s` to at most `max` bytes on a character boundary, marking the cut.
fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    s.push('…');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(service: &str, body: &str) -> Delivery {
        Delivery {
            id: "d1".into(),
            alert: Alert {
                severity: Severity::Warning,
                kind: "unhealthy".into(),
                host: "nuc".into(),
                service: service.into(),
                summary: "probe failed".into(),
                body: body.into(),
                usec: 1_700_000_000_000_000,
                fields: Vec::new(),
            },
        }
    }

    #[test]
    fn signature_matches_rfc4231_case_2() {
        // RFC 4231 test case 2: key "Jefe".
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn renders_each_format() {
        let d = delivery("web", "GET / answered 503");
        let (ct, body, headers) = render(WebhookFormat::Json, &d);
        assert_eq!(ct, "application/json");
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["delivery"], "d1");
        assert_eq!(v["service"], "web");
        assert_eq!(v["severity"], "warning");
        assert_eq!(v["time"], "2023-11-14T22:13:20Z");
        assert!(headers.is_empty());

        let (ct, body, headers) = render(WebhookFormat::Ntfy, &d);
        assert!(ct.starts_with("text/plain"));
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("GET / answered 503"));
        let h: Vec<(String, String)> = headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            h,
            [
                ("title".into(), "[stackd] nuc: web probe failed".into()),
                ("priority".into(), "high".into()),
                ("tags".into(), "warning,unhealthy".into()),
            ]
        );

        let (_, body, _) = render(WebhookFormat::Slack, &d);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["text"]
            .as_str()
            .unwrap()
            .starts_with("*[stackd] nuc: web probe failed*\n"));

        let long = "x".repeat(5000);
        let (_, body, _) = render(WebhookFormat::Discord, &delivery("web", &long));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let content = v["content"].as_str().unwrap();
        assert!(content.starts_with("**[stackd] nuc: web probe failed**\n"));
        assert!(content.len() <= DISCORD_MAX && content.ends_with('…'));
    }

    #[test]
    fn truncates_on_char_boundaries() {
        let mut s = "ééééé".to_string(); // 10 bytes
        truncate(&mut s, 7); // room for 4 bytes and the 3-byte mark
        assert_eq!(s, "éé…");
        let mut short = "abc".to_string();
        truncate(&mut short, 3);
        assert_eq!(short, "abc");
    }

    #[test]
    fn header_text_keeps_utf8_and_drops_controls() {
        assert_eq!(header_text("a\nb").to_str().unwrap(), "a b");
        assert_eq!(header_text("café").as_bytes(), "café".as_bytes());
    }
}
