//! A small HTTP/1.1 client for the peer endpoint (stackctl `-H`, and other
//! hosts): one connection per request, bearer token, one deadline for the
//! whole exchange. hyper's own client connection, already in the tree.

use std::path::Path;
use std::time::Duration;

use futures_util::stream::BoxStream;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{header, Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::de::DeserializeOwned;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::auth::Token;
use super::types::{
    ApplyAnswer, ApplyRequest, ConfigPushed, ErrorBody, Events, Host, MigrateRequest, MoveRequest,
    OpRequest, PrepareAnswer, Service, ServiceSummary, Task, VolumeAnswer,
};
use crate::config::PeerConfig;
use crate::control::VolumeOffer;

mod body;
use body::{encode, lines_of, service_path, Body};

#[derive(Debug, Error)]
pub enum PeerClientError {
    #[error("{url}: {message}")]
    Connect {
        url: String,
        message: String,
        /// What failed underneath (the socket, TLS, HTTP), when anything
        /// did; its text is `message`.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The host answered with an error body.
    #[error("{message}")]
    Remote {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("{0}")]
    Config(String),
    /// The token file or the TLS trust of `[peer]` is unusable.
    #[error(transparent)]
    Setup(#[from] super::PeerError),
}

impl PeerClientError {
    /// "NoSuchService", "Unauthorized", ... when the host answered.
    pub fn kind(&self) -> Option<&str> {
        match self {
            PeerClientError::Remote { kind, .. } => Some(kind),
            _ => None,
        }
    }
}

type Result<T> = std::result::Result<T, PeerClientError>;

/// What a move's `prepare` may take on top of `[peer] timeout`: the host
/// runs its preflight (Compose, Docker, disk) before it answers.
const PREFLIGHT_TIME: Duration = Duration::from_secs(120);
/// How an `https://` host's certificate is checked.
#[derive(Clone, Copy, Debug)]
pub enum Trust<'a> {
    /// `tls_pin_sha256`: exactly the certificate with this fingerprint.
    Pin(&'a str),
    /// `tls_ca`: a certificate for the host's name or address that this CA signed.
    Ca(&'a Path),
    /// Plain HTTP only.
    None,
}

#[derive(Clone)]
pub struct PeerClient {
    /// `http://host:port` or `https://host:port`, no trailing slash.
    base: String,
    authority: String,
    token: Token,
    timeout: Duration,
    tls: Option<(tokio_rustls::TlsConnector, String)>,
}

impl PeerClient {
    /// A client for `url` with the token and timeout of `[peer]`.
    pub fn new(url: &str, peer: &PeerConfig) -> Result<PeerClient> {
        let token = Token::load(&peer.token_file)?;
        let trust = match (&peer.tls_pin_sha256, &peer.tls_ca) {
            (Some(pin), _) => Trust::Pin(pin),
            (None, Some(ca)) => Trust::Ca(ca),
            (None, None) => Trust::None,
        };
        PeerClient::with_token(url, token, peer.timeout, trust)
    }

    pub fn with_token(
        url: &str,
        token: Token,
        timeout: Duration,
        trust: Trust<'_>,
    ) -> Result<PeerClient> {
        let bad = |m: &str| PeerClientError::Config(format!("peer URL {url:?}: {m}"));
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("expected http://HOST:PORT or https://HOST:PORT"));
        };
        let authority = rest.trim_end_matches('/').to_string();
        if authority.is_empty() || authority.contains('/') {
            return Err(bad("expected no path after HOST:PORT"));
        }
        let authority = if authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            authority
        } else {
            format!("{authority}:{}", if https { 443 } else { 80 })
        };
        let tls = if https {
            let connector = match trust {
                Trust::Pin(pin) => super::tls::pinned(pin),
                Trust::Ca(ca) => super::tls::connector(ca),
                Trust::None => {
                    return Err(PeerClientError::Config(format!(
                        "{url} is https but [peer] sets neither tls_ca nor tls_pin_sha256; \
                         one of them is needed to check the host's certificate"
                    )))
                }
            }?;
            let host = authority
                .rsplit_once(':')
                .map_or(authority.as_str(), |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            Some((connector, host))
        } else {
            None
        };
        Ok(PeerClient {
            base: url.trim_end_matches('/').to_string(),
            authority,
            token,
            timeout,
            tls,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    pub async fn host(&self) -> Result<Host> {
        self.get("/v1/host").await
    }

    pub async fn services(&self) -> Result<Vec<ServiceSummary>> {
        self.get("/v1/services").await
    }

    pub async fn service(&self, name: &str) -> Result<Service> {
        self.get(&format!("/v1/services/{}", encode(name))).await
    }

    /// `op` is start, stop, restart or update; `force` overrides an
    /// unreachable host of the hand-off rule.
    pub async fn op(
        &self,
        name: &str,
        op: &str,
        caller: Option<&str>,
        force: bool,
    ) -> Result<Task> {
        let body = OpRequest {
            caller: caller.map(str::to_string),
            force,
        };
        self.post_json(&service_path(name, op), &body, Duration::ZERO)
            .await
    }

    /// `POST /v1/services/{name}/migrate`: the host moves `name` to `to`
    /// (with its named volumes when `volumes`); the migrate task there.
    pub async fn migrate(
        &self,
        name: &str,
        to: &str,
        volumes: bool,
        caller: Option<&str>,
        force: bool,
    ) -> Result<Task> {
        let body = MigrateRequest {
            to: to.to_string(),
            volumes,
            caller: caller.map(str::to_string),
            force,
        };
        self.post_json(&service_path(name, "migrate"), &body, Duration::ZERO)
            .await
    }

    /// `POST /v1/apply`: the host's apply plan, and unless `dry_run` its
    /// apply (with `leaving`, only the stops of what left the host).
    pub async fn apply(&self, leaving: bool, dry_run: bool, force: bool) -> Result<ApplyAnswer> {
        let body = ApplyRequest {
            leaving,
            dry_run,
            force,
        };
        self.post_json("/v1/apply", &body, Duration::from_secs(10))
            .await
    }

    /// The host `from` moves `name` here: preflight, pull what is missing.
    pub async fn prepare(&self, name: &str, from: &str) -> Result<PrepareAnswer> {
        self.move_step(name, "prepare", from).await
    }

    /// The host `from` hands `name` over: the receive task.
    pub async fn receive(&self, name: &str, from: &str) -> Result<Task> {
        self.move_step(name, "receive", from).await
    }

    async fn move_step<T: DeserializeOwned>(
        &self,
        name: &str,
        step: &str,
        from: &str,
    ) -> Result<T> {
        let body = MoveRequest {
            from: from.to_string(),
        };
        // Preflight runs Compose on the host before it answers.
        self.post_json(&service_path(name, step), &body, PREFLIGHT_TIME)
            .await
    }

    /// `PUT /v1/services/{name}/volumes/{volume}`: streams `tar` (a named
    /// volume's content) to the host, with its SHA-256 after it, and
    /// checks that the host reports what was sent. No deadline for the
    /// whole transfer: it fails when nothing could be sent for a while
    /// (the host or the link is gone), or when the host has not answered
    /// within `[peer] timeout` plus two minutes after the last byte.
    pub async fn put_volume(
        &self,
        offer: &VolumeOffer,
        tar: BoxStream<'static, std::result::Result<Bytes, String>>,
    ) -> Result<VolumeAnswer> {
        let labels = serde_json::to_string(&offer.labels).unwrap_or_default();
        let path = format!(
            "/v1/services/{}/volumes/{}?from={}&image={}&driver={}&labels={}",
            encode(&offer.service),
            encode(&offer.volume),
            encode(&offer.from),
            encode(&offer.image),
            encode(&offer.driver),
            encode(&labels)
        );
        let (body, progress) = super::volumes::seal(tar);
        let exchange = self.exchange::<VolumeAnswer>(Method::PUT, &path, Body::Stream(body));
        tokio::pin!(exchange);
        let stall = self.timeout * 3 + Duration::from_secs(5);
        let answer_time = self.timeout + Duration::from_secs(120);
        let mut seen = (0u64, tokio::time::Instant::now());
        let mut done_at: Option<tokio::time::Instant> = None;
        let answer = loop {
            tokio::select! {
                r = &mut exchange => break r?,
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
            let now = tokio::time::Instant::now();
            let sent = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
            if progress.done.load(std::sync::atomic::Ordering::Relaxed) {
                let at = *done_at.get_or_insert(now);
                if now.duration_since(at) > answer_time {
                    return Err(self.connect_error(format!(
                        "no answer within {answer_time:?} after the last of {sent} bytes"
                    )));
                }
            } else if sent != seen.0 {
                seen = (sent, now);
            } else if now.duration_since(seen.1) > stall {
                return Err(self.connect_error(format!(
                    "the transfer stalled: nothing could be sent for {stall:?} after {sent} bytes"
                )));
            }
        };
        let sent = progress.bytes.load(std::sync::atomic::Ordering::Relaxed);
        let sha = progress
            .sha256
            .lock()
            .map(|s| s.clone())
            .unwrap_or_default();
        if answer.bytes != sent || answer.sha256 != sha {
            return Err(PeerClientError::Remote {
                status: 200,
                kind: "ChecksumMismatch".into(),
                message: format!(
                    "{} reports {} bytes with SHA-256 {}, but {sent} bytes with SHA-256 {sha} were sent",
                    self.base, answer.bytes, answer.sha256
                ),
            });
        }
        Ok(answer)
    }

    pub async fn task(&self, id: u64) -> Result<Task> {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    pub async fn tasks(&self, service: Option<&str>, limit: u32) -> Result<Vec<Task>> {
        let mut path = format!("/v1/tasks?limit={limit}");
        if let Some(s) = service {
            path.push_str(&format!("&service={}", encode(s)));
        }
        self.get(&path).await
    }

    pub async fn events(&self, after: u64, timeout_s: u64) -> Result<Events> {
        self.get(&format!("/v1/events?after={after}&timeout={timeout_s}"))
            .await
    }

    /// `PUT /v1/config`: the host checks `text` as its cluster file and,
    /// unless `check_only`, writes it and reloads.
    /// `PUT /v1/config`; `force` passes the host's `reload_guard`.
    pub async fn push_config(
        &self,
        text: &str,
        check_only: bool,
        force: bool,
    ) -> Result<ConfigPushed> {
        let path = format!("/v1/config?check={check_only}&force={force}");
        let body = Body::Toml(text.as_bytes().to_vec());
        self.request(Method::PUT, &path, body).await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.request(Method::GET, path, Body::Json(Vec::new()))
            .await
    }

    async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T> {
        // Long polls get their own timeout on top of the connection's.
        let extra = path
            .split_once("timeout=")
            .and_then(|(_, t)| t.split('&').next()?.parse::<u64>().ok())
            .unwrap_or(0);
        self.request_within(method, path, body, Duration::from_secs(extra))
            .await
    }

    /// `POST path` with `body` as JSON, whose answer may take `extra` on
    /// top of `[peer] timeout`.
    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
        extra: Duration,
    ) -> Result<T> {
        let body = serde_json::to_vec(body).unwrap_or_default();
        self.request_within(Method::POST, path, Body::Json(body), extra)
            .await
    }

    /// A request that may take `extra` on top of `[peer] timeout`.
    async fn request_within<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
        extra: Duration,
    ) -> Result<T> {
        let limit = self.timeout + extra;
        match tokio::time::timeout(limit, self.exchange(method, path, body)).await {
            Ok(r) => r,
            Err(_) => Err(self.connect_error(format!("no answer within {limit:?}"))),
        }
    }

    fn connect_error(&self, message: String) -> PeerClientError {
        PeerClientError::Connect {
            url: self.base.clone(),
            message,
            source: None,
        }
    }

    /// A connection error that keeps what failed as its source.
    fn connect_failed(&self, e: impl std::error::Error + Send + Sync + 'static) -> PeerClientError {
        PeerClientError::Connect {
            url: self.base.clone(),
            message: e.to_string(),
            source: Some(Box::new(e)),
        }
    }

    async fn exchange<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<T> {
        let resp = self.open(method, path, body).await?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| self.connect_failed(e))?
            .to_bytes();
        self.answer(path, status, &bytes)
    }

    /// The JSON document of a 2xx answer, else the host's error.
    fn answer<T: DeserializeOwned>(
        &self,
        path: &str,
        status: StatusCode,
        bytes: &[u8],
    ) -> Result<T> {
        if status.is_success() {
            return serde_json::from_slice(bytes)
                .map_err(|e| self.connect_error(format!("unexpected answer to {path}: {e}")));
        }
        let err: ErrorBody = serde_json::from_slice(bytes).unwrap_or_else(|_| ErrorBody {
            error: String::from_utf8_lossy(bytes).into_owned(),
            kind: String::new(),
        });
        Err(PeerClientError::Remote {
            status: status.as_u16(),
            kind: err.kind,
            message: err.error,
        })
    }

    /// `GET /v1/services/{name}/logs`: the service's container log lines
    /// as they come (`lines` 0: all of them; with `follow`, until the host
    /// closes the stream or the stream is dropped). The deadline covers
    /// the answer's head only; a stream cut short ends with a line saying
    /// why.
    pub async fn logs(
        &self,
        name: &str,
        lines: u32,
        follow: bool,
    ) -> Result<BoxStream<'static, String>> {
        let path = format!(
            "/v1/services/{}/logs?lines={lines}&follow={follow}",
            encode(name)
        );
        let open = self.open(Method::GET, &path, Body::Json(Vec::new()));
        let resp = match tokio::time::timeout(self.timeout, open).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(self.connect_error(format!("no answer within {:?}", self.timeout)))
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| self.connect_failed(e))?
                .to_bytes();
            return Err(self
                .answer::<serde_json::Value>(&path, status, &bytes)
                .err()
                .unwrap_or_else(|| self.connect_error(format!("{path}: status {status}"))));
        }
        Ok(lines_of(resp.into_body(), self.base.clone()))
    }

    /// Sends the request; the answer's head, its body still to read.
    async fn open(&self, method: Method, path: &str, body: Body) -> Result<Response<Incoming>> {
        let tcp = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| self.connect_failed(e))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            Some((connector, host)) => {
                let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.clone())
                    .map_err(|e| self.connect_failed(e))?;
                let stream = connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| self.connect_error(format!("TLS: {e}")))?;
                self.send(stream, method, path, body).await
            }
            None => self.send(tcp, method, path, body).await,
        }
    }

    async fn send<S>(
        &self,
        stream: S,
        method: Method,
        path: &str,
        body: Body,
    ) -> Result<Response<Incoming>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.connect_failed(e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.authority)
            .header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.token.as_str()),
            )
            .header(
                header::USER_AGENT,
                concat!("stackd/", env!("CARGO_PKG_VERSION")),
            );
        let whole = |b: Vec<u8>| {
            Full::new(Bytes::from(b))
                .map_err(|never| match never {})
                .boxed_unsync()
        };
        let (content_type, body) = match body {
            Body::Json(b) if b.is_empty() => ("", whole(b)),
            Body::Toml(b) if b.is_empty() => ("", whole(b)),
            Body::Json(b) => ("application/json", whole(b)),
            Body::Toml(b) => ("application/toml", whole(b)),
            Body::Stream(b) => ("application/octet-stream", b),
        };
        if !content_type.is_empty() {
            req = req.header(header::CONTENT_TYPE, content_type);
        }
        let req = req.body(body).map_err(|e| self.connect_failed(e))?;
        sender
            .send_request(req)
            .await
            .map_err(|e| self.connect_failed(e))
    }
}
