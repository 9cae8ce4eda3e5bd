//! The server: listener (own socket or systemd's), connections with limits,
//! the route table, authentication and the handlers over [`Control`].
//!
//! - `listen.rs`: the socket and the accept loop;
//! - `routes.rs`: the route table [`ROUTES`] (held equal to the OpenAPI
//!   document) and the matcher;
//! - `handlers.rs`: authentication and one handler per route;
//! - `request.rs`: decoding queries and bodies ([`decode_request`], fuzzed);
//! - `events.rs`: the `/v1/events` long poll.
//!
//! `/metrics` is rendered by `peer/metrics.rs`. This file holds the server's
//! state, its limits and the shapes every answer takes.

mod events;
mod handlers;
mod listen;
mod request;
mod routes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::auth::{Limiter, Token};
use super::limits::Gate;
use super::types::ErrorBody;
use super::{tls, PeerError};
use crate::config::PeerConfig;
use crate::control::{Control, ControlError};
use listen::{accept_loop, listener};
pub use request::decode_request;
pub use routes::{allowed_methods, route, OPENAPI, ROUTES};

/// Largest request body read.
pub const MAX_BODY: usize = 1 << 20;

/// Time a client has to send its request head; also how long an idle
/// keep-alive connection is held (hyper starts the timer when it waits for
/// the next request).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a client has to send the body it announced; a request that sends
/// less is answered 408 and its connection closed.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Long polls (`/v1/events`) open at once; more get 503.
pub const MAX_LONG_POLLS: usize = 64;

/// Longest `timeout` a long poll may ask for, in seconds.
pub const MAX_POLL_SECONDS: u64 = 300;

struct State {
    control: Control,
    token: Token,
    limiter: Limiter,
    long_polls: AtomicUsize,
    cancel: CancellationToken,
    gate: Arc<Gate>,
}

/// The running server; [`PeerServer::shutdown`] stops it.
pub struct PeerServer {
    cancel: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    local_addr: SocketAddr,
}

impl PeerServer {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, ends open long polls, and waits (bounded) for the
    /// accept loop to end. Requests in flight are cut off.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// Reads the token, takes the listening socket (systemd's when socket
/// activated, else `peer.listen`) and serves `control` on it.
pub async fn serve(control: Control, cfg: &PeerConfig) -> Result<PeerServer, PeerError> {
    let token = Token::load(&cfg.token_file)?;
    let tls = match (&cfg.tls_cert, &cfg.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        _ => None,
    };
    let listener = listener(&cfg.listen).await?;
    let local_addr = listener.local_addr().map_err(|source| PeerError::Listen {
        listen: cfg.listen.clone(),
        source,
    })?;
    info!(
        "peer endpoint listening on {}://{local_addr}",
        if tls.is_some() { "https" } else { "http" }
    );
    let cancel = CancellationToken::new();
    let state = Arc::new(State {
        control,
        token,
        limiter: Limiter::default(),
        long_polls: AtomicUsize::new(0),
        cancel: cancel.clone(),
        gate: Arc::new(Gate::default()),
    });
    let task = tokio::spawn(accept_loop(listener, tls, state));
    Ok(PeerServer {
        cancel,
        task,
        local_addr,
    })
}

/// Answers are whole JSON documents, except the container logs, which
/// stream for as long as the client follows them.
type Resp = Response<UnsyncBoxBody<Bytes, Infallible>>;

struct Failure(StatusCode, String, &'static str);

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        let (status, kind) = match &e {
            ControlError::NoSuchService(_) => (StatusCode::NOT_FOUND, "NoSuchService"),
            ControlError::NoSuchTask(_) => (StatusCode::NOT_FOUND, "NoSuchTask"),
            ControlError::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "InvalidArgument"),
            ControlError::Conflict(_) => (StatusCode::CONFLICT, "Conflict"),
            ControlError::PreflightFailed(_) => (StatusCode::CONFLICT, "PreflightFailed"),
            ControlError::DockerUnavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "DockerUnavailable")
            }
            ControlError::InvalidConfig(_) => (StatusCode::BAD_REQUEST, "InvalidConfig"),
            ControlError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown"),
            ControlError::PeerUnreachable(_) => (StatusCode::BAD_GATEWAY, "PeerUnreachable"),
            ControlError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Store"),
            ControlError::Io(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Io"),
        };
        Failure(status, e.to_string(), kind)
    }
}

fn bad_request(msg: impl Into<String>) -> Failure {
    Failure(StatusCode::BAD_REQUEST, msg.into(), "InvalidArgument")
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Resp {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed_unsync());
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn text(content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()).boxed_unsync());
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

fn error(f: Failure) -> Resp {
    json(
        f.0,
        &ErrorBody {
            error: f.1,
            kind: f.2.to_string(),
        },
    )
}
