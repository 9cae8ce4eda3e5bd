//! The server: listener (own socket or systemd's), connections with limits,
//! the route table, authentication and the handlers over [`Control`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::auth::{self, Limiter, Token};
use super::limits::Gate;
use super::types::{
    ApplyAnswer, ApplyRequest, ConfigPushed, ErrorBody, Events, Host, MoveRequest, OpRequest,
    PrepareAnswer, Service, ServiceSummary, Task, VolumeAnswer,
};
use super::{tls, PeerError};
use crate::config::PeerConfig;
use crate::control::{Control, ControlError, Op, VolumeOffer};
use crate::store::{TaskFilter, TaskState};

/// The OpenAPI document, kept in the repository.
pub const OPENAPI: &str = include_str!("../../peer/openapi.json");

/// Every route the server answers: method and path pattern. `{name}` and
/// `{id}` match one path segment. The dispatcher reads this table, and a
/// test holds it equal to the OpenAPI document.
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/metrics"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/host"),
    ("GET", "/v1/services"),
    ("GET", "/v1/services/{name}"),
    ("GET", "/v1/services/{name}/logs"),
    ("POST", "/v1/services/{name}/start"),
    ("POST", "/v1/services/{name}/stop"),
    ("POST", "/v1/services/{name}/restart"),
    ("POST", "/v1/services/{name}/update"),
    ("POST", "/v1/services/{name}/prepare"),
    ("POST", "/v1/services/{name}/receive"),
    ("POST", "/v1/services/{name}/migrate"),
    ("PUT", "/v1/services/{name}/volumes/{volume}"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/{id}"),
    ("GET", "/v1/events"),
    ("PUT", "/v1/config"),
    ("POST", "/v1/apply"),
];

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
/// Most events in one answer.
const EVENTS_LIMIT: usize = 1000;

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

async fn listener(listen: &str) -> Result<TcpListener, PeerError> {
    let err = |source| PeerError::Listen {
        listen: listen.to_string(),
        source,
    };
    if let Some(std) = systemd_socket() {
        info!("peer endpoint: using the socket passed by systemd");
        std.set_nonblocking(true).map_err(err)?;
        return TcpListener::from_std(std).map_err(err);
    }
    TcpListener::bind(listen).await.map_err(err)
}

/// The first socket systemd passed (`LISTEN_FDS`, `LISTEN_PID`: fd 3).
fn systemd_socket() -> Option<std::net::TcpListener> {
    let fd = sd_notify::listen_fds().ok()?.next()?;
    // SAFETY: sd_notify checked LISTEN_PID is this process, so systemd gave
    // us this descriptor; it is taken once, here, and owned from now on.
    #[allow(unsafe_code)]
    let listener = unsafe { <std::net::TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    Some(listener)
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    state: Arc<State>,
) {
    loop {
        // Room first (connection caps, the descriptors' reserve): until
        // then new connections wait in the kernel's backlog.
        tokio::select! {
            () = state.gate.wait_for_room() => {}
            _ = state.cancel.cancelled() => return,
        }
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    state.gate.accept_failed(&e);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = state.cancel.cancelled() => return,
        };
        let Some(permit) = state.gate.admit(peer.ip()) else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let cancel = state.cancel.clone();
            let service = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
            });
            let builder = {
                let mut b = hyper::server::conn::http1::Builder::new();
                b.timer(TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .keep_alive(true);
                b
            };
            let result = match tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(HEADER_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(s)) => s,
                            Ok(Err(e)) => {
                                debug!("peer {peer}: TLS handshake failed: {e}");
                                return;
                            }
                            Err(_) => return,
                        };
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! { r = conn => r, _ = cancel.cancelled() => Ok(()) }
                }
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! { r = conn => r, _ = cancel.cancelled() => Ok(()) }
                }
            };
            if let Err(e) = result {
                debug!("peer {peer}: connection ended: {e}");
            }
        });
    }
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

/// The route `method path` falls on, with its parameters; Err(status) when
/// the path is unknown (404) or known under another method (405).
pub fn route<'p>(
    method: &str,
    path: &'p str,
) -> Result<(&'static str, BTreeMap<&'static str, &'p str>), StatusCode> {
    let segs: Vec<&str> = path.split('/').collect();
    let mut wrong_method = false;
    for (m, pattern) in ROUTES {
        let pats: Vec<&'static str> = pattern.split('/').collect();
        if pats.len() != segs.len() {
            continue;
        }
        let mut params = BTreeMap::new();
        let matched = pats.iter().zip(&segs).all(|(p, s)| {
            if p.starts_with('{') && p.ends_with('}') {
                params.insert(&p[1..p.len() - 1], *s);
                !s.is_empty()
            } else {
                p == s
            }
        });
        if matched {
            if *m == method {
                return Ok((pattern, params));
            }
            wrong_method = true;
        }
    }
    Err(if wrong_method {
        StatusCode::METHOD_NOT_ALLOWED
    } else {
        StatusCode::NOT_FOUND
    })
}

/// The methods `path` is served with, for the `Allow` header a 405 must
/// carry (RFC 9110, 15.5.6).
pub fn allowed_methods(path: &str) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = ROUTES
        .iter()
        .filter(|(m, _)| route(m, path).is_ok())
        .map(|(m, _)| *m)
        .collect();
    out.dedup();
    out
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

async fn handle(state: &State, req: Request<Incoming>, peer: SocketAddr) -> Resp {
    let path = req.uri().path().to_string();
    let (pattern, params) = match route(req.method().as_str(), &path) {
        Ok(r) => r,
        Err(status) => {
            let kind = if status == StatusCode::NOT_FOUND {
                "NotFound"
            } else {
                "MethodNotAllowed"
            };
            let mut r = error(Failure(
                status,
                format!("no route for {} {path}", req.method()),
                kind,
            ));
            if status == StatusCode::METHOD_NOT_ALLOWED {
                if let Ok(v) = HeaderValue::from_str(&allowed_methods(&path).join(", ")) {
                    r.headers_mut().insert(header::ALLOW, v);
                }
            }
            return r;
        }
    };
    if pattern != "/healthz" {
        if let Err(resp) = authenticate(state, &req, peer).await {
            return *resp;
        }
    }
    let result = dispatch(state, pattern, &params, req, peer).await;
    let mut r = result.unwrap_or_else(error);
    if r.status() == StatusCode::REQUEST_TIMEOUT {
        // The rest of a body that did not come must not be read as the
        // next request.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// The bearer token, checked before the failure limit: a right token is
/// always let through, so a scanner or a misconfigured peer behind the same
/// address cannot lock a real peer out. Wrong tokens from an address that
/// used up its failures are still answered 401 (the credential is what is
/// wrong), but only after [`auth::BLOCKED_DELAY`] and no longer logged one
/// by one, which slows guessing down; the token's length (a random 32 bytes
/// or more) is what makes guessing futile.
async fn authenticate(
    state: &State,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> Result<(), Box<Resp>> {
    let presented = auth::bearer(
        req.headers()
            .get(header::AUTHORIZATION)
            .map(HeaderValue::as_bytes),
    );
    if presented.is_some_and(|t| state.token.matches(t)) {
        return Ok(());
    }
    // A missing token guesses nothing: refused, not counted.
    if presented.is_some() {
        if state.limiter.blocked(peer.ip()) {
            state.limiter.fail(peer.ip());
            tokio::time::sleep(auth::BLOCKED_DELAY).await;
        } else {
            let n = state.limiter.fail(peer.ip());
            warn!(
                stackd_peer = %peer,
                "peer request {} {} from {peer} refused: wrong token ({n} failures in this minute{})",
                req.method(),
                req.uri().path(),
                if n >= auth::MAX_FAILURES {
                    "; more are answered slowly and not logged one by one"
                } else {
                    ""
                }
            );
        }
    }
    let mut r = error(Failure(
        StatusCode::UNAUTHORIZED,
        "a valid bearer token is required (Authorization: Bearer TOKEN)".into(),
        "Unauthorized",
    ));
    r.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    Err(Box::new(r))
}

async fn dispatch(
    state: &State,
    pattern: &'static str,
    params: &BTreeMap<&'static str, &str>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Resp, Failure> {
    let control = &state.control;
    let query = parse_query(req.uri().query().unwrap_or(""))?;
    let name = percent_decode(params.get("name").copied().unwrap_or(""))?;
    let name = name.as_str();
    Ok(match pattern {
        "/healthz" => json(StatusCode::OK, &serde_json::json!({"status": "ok"})),
        "/metrics" => text("text/plain; version=0.0.4", super::metrics::render(control)),
        "/v1/openapi.json" => text("application/json", OPENAPI),
        "/v1/host" => {
            let mut host = Host::from_manager(&control.manager());
            host.services = control.config().services.keys().cloned().collect();
            json(StatusCode::OK, &host)
        }
        "/v1/services/{name}/prepare" => {
            let from = read_json::<MoveRequest>(req).await?.from;
            let prepared = control.prepare_move(name, &from).await?;
            info!(stackd_service = %name, "{from} ({peer}) prepares to move {name} here");
            let status = if prepared.pull.is_some() {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            json(status, &PrepareAnswer::from_prepared(&prepared))
        }
        "/v1/apply" => {
            let ask = apply_request(&read_body(req).await?)?;
            let plan = control.apply_plan(ask.leaving);
            let (status, task) = if ask.dry_run {
                (StatusCode::OK, None)
            } else if ask.leaving {
                (StatusCode::ACCEPTED, control.apply_leaving(ask.force)?)
            } else {
                let origin = format!("apply --all-hosts ({peer})");
                (
                    StatusCode::ACCEPTED,
                    Some(control.apply(&origin, ask.force)?),
                )
            };
            if let Some(t) = &task {
                info!(
                    stackd_task = t.id,
                    "{peer} asks for an apply{}",
                    if ask.leaving {
                        " of what left this host"
                    } else {
                        ""
                    }
                );
            }
            json(status, &ApplyAnswer::new(&plan, task.as_ref()))
        }
        "/v1/services/{name}/volumes/{volume}" => {
            let volume = percent_decode(params.get("volume").copied().unwrap_or(""))?;
            let offer = volume_offer(name, &volume, &query)?;
            let (tar, check) = super::volumes::unseal(req.into_body());
            info!(stackd_service = %name, "{} ({peer}) sends volume {volume}", offer.from);
            let got = control
                .receive_volume(&offer, tar, move || check.verdict())
                .await?;
            json(
                StatusCode::OK,
                &VolumeAnswer {
                    volume,
                    bytes: got.bytes,
                    sha256: got.sha256,
                    replaced: got.replaced,
                },
            )
        }
        "/v1/services/{name}/migrate" => json(
            StatusCode::ACCEPTED,
            &super::apply::migrate(control, name, read_json(req).await?, peer).await?,
        ),
        "/v1/services/{name}/receive" => {
            let from = read_json::<MoveRequest>(req).await?.from;
            let task = control.receive_move(name, &from)?;
            info!(stackd_service = %name, stackd_task = task.id, "{from} ({peer}) hands {name} over");
            json(StatusCode::ACCEPTED, &Task::from_record(&task, None))
        }
        "/v1/services" => {
            let rows: Vec<ServiceSummary> = control
                .list_services()
                .iter()
                .map(ServiceSummary::from_status)
                .collect();
            json(StatusCode::OK, &rows)
        }
        "/v1/services/{name}" => json(
            StatusCode::OK,
            &Service::from_status(&control.service(name)?),
        ),
        "/v1/services/{name}/logs" => logs(control, name, &query)?,
        "/v1/tasks" => {
            let filter = TaskFilter {
                service: query.get("service").cloned(),
                states: match query.get("state") {
                    Some(s) => vec![s
                        .parse::<TaskState>()
                        .map_err(|e| bad_request(e.to_string()))?],
                    None => Vec::new(),
                },
                limit: Some(match number(&query, "limit", 20)? {
                    n if n > 1000 => return Err(bad_request("limit is at most 1000")),
                    n => usize::try_from(n).unwrap_or(1000),
                }),
            };
            let rows: Vec<Task> = control
                .list_tasks(&filter)?
                .iter()
                .map(|t| Task::from_record(t, None))
                .collect();
            json(StatusCode::OK, &rows)
        }
        "/v1/tasks/{id}" => {
            let id = params
                .get("id")
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| bad_request("the task id must be a number"))?;
            let task = control.task(id)?;
            let log = control.task_log(id)?;
            json(StatusCode::OK, &Task::from_record(&task, Some(log)))
        }
        "/v1/events" => events(state, &query).await?,
        "/v1/config" => {
            let check_only = flag(&query, "check")?;
            let force = flag(&query, "force")?;
            let body = read_body(req).await?;
            // Located as the other diagnostics of a push are: in the file
            // it would become.
            let text = crate::config::utf8_text(&control.manager().config_path, body.to_vec())
                .map_err(|e| bad_request(e.to_string()))?;
            let c = control.clone();
            let hash =
                tokio::task::spawn_blocking(move || c.replace_config(&text, check_only, force))
                    .await
                    .map_err(|e| {
                        Failure(StatusCode::INTERNAL_SERVER_ERROR, e.to_string(), "Io")
                    })??;
            if !check_only {
                info!("cluster file replaced by a push from {peer} ({hash})");
            }
            let m = control.manager();
            json(
                StatusCode::OK,
                &ConfigPushed {
                    host: m.host,
                    config_path: m.config_path.display().to_string(),
                    config_hash: hash,
                    written: !check_only,
                },
            )
        }
        op_route => {
            let op = match op_route.rsplit('/').next() {
                Some("start") => Op::Start,
                Some("stop") => Op::Stop,
                Some("restart") => Op::Restart,
                Some("update") => Op::Update,
                _ => {
                    return Err(Failure(
                        StatusCode::NOT_FOUND,
                        "no such route".into(),
                        "NotFound",
                    ))
                }
            };
            let request = op_request(&read_body(req).await?)?;
            let origin = match request.caller {
                Some(c) => format!(
                    "peer:{}:{}",
                    peer.ip(),
                    c.chars().take(64).collect::<String>()
                ),
                None => format!("peer:{}", peer.ip()),
            };
            let task = control.request(op, name, &origin, request.force).await?;
            info!(stackd_service = %name, stackd_task = task.id, "{op:?} requested over the peer endpoint by {peer}");
            json(StatusCode::ACCEPTED, &Task::from_record(&task, None))
        }
    })
}

/// `GET /v1/services/{name}/logs`: the lines `stackctl logs` prints, one
/// chunk each, so `stackctl logs -H HOST -f` (relayed by the caller's own
/// daemon) follows another host as it follows this one. An unknown service
/// or Docker being away is a JSON error before anything is streamed.
fn logs(control: &Control, name: &str, query: &BTreeMap<String, String>) -> Result<Resp, Failure> {
    let tail = match number(query, "lines", 0)? {
        0 => None,
        n if n > 100_000 => return Err(bad_request("lines is at most 100000")),
        n => Some(usize::try_from(n).unwrap_or(100_000)),
    };
    let follow = flag(query, "follow")?;
    let lines = control.logs(name, tail, follow)?;
    let frames = lines.map(|mut l| {
        l.push('\n');
        Ok::<_, Infallible>(Frame::data(Bytes::from(l)))
    });
    let mut r = Response::new(BodyExt::boxed_unsync(StreamBody::new(frames)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    Ok(r)
}

/// The optional JSON body of a service operation.
fn op_request(body: &[u8]) -> Result<OpRequest, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(OpRequest::default());
    }
    parse_json(body)
}

/// The optional body of `POST /v1/apply`: none is `{}`.
fn apply_request(body: &[u8]) -> Result<ApplyRequest, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ApplyRequest::default());
    }
    parse_json(body)
}

/// The query of `PUT /v1/services/{name}/volumes/{volume}`: `from` and
/// `image` required, `driver` and `labels` (a JSON object of strings)
/// optional.
fn volume_offer(
    name: &str,
    volume: &str,
    query: &BTreeMap<String, String>,
) -> Result<VolumeOffer, Failure> {
    let need = |k: &str| {
        query
            .get(k)
            .filter(|v| !v.is_empty())
            .cloned()
            .ok_or_else(|| bad_request(format!("the query needs {k}")))
    };
    let labels = match query.get("labels").map(String::as_str) {
        None | Some("") => Default::default(),
        Some(text) => serde_json::from_str(text)
            .map_err(|e| bad_request(format!("labels must be a JSON object of strings: {e}")))?,
    };
    // Docker's own rule for volume names.
    let valid = volume
        .bytes()
        .enumerate()
        .all(|(i, b)| b.is_ascii_alphanumeric() || (i > 0 && matches!(b, b'_' | b'.' | b'-')));
    if volume.is_empty() || !valid {
        return Err(bad_request(format!("{volume:?} is not a volume name")));
    }
    Ok(VolumeOffer {
        service: name.to_string(),
        from: need("from")?,
        volume: volume.to_string(),
        driver: query.get("driver").cloned().unwrap_or_default(),
        labels,
        image: need("image")?,
    })
}

/// Decodes what a client controls before any handler runs: the route, the
/// path parameters, the query and, for operations, the JSON body. The fuzz
/// targets (`fuzz/`, `tests/fuzz.rs`) feed it arbitrary input; it must
/// answer, never panic. Err is the status and reason the client would get.
pub fn decode_request(method: &str, target: &str, body: &[u8]) -> Result<(), (StatusCode, String)> {
    let fail = |f: Failure| (f.0, f.1);
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (pattern, params) =
        route(method, path).map_err(|s| (s, format!("no route for {method} {path}")))?;
    parse_query(query).map_err(fail)?;
    for v in params.values() {
        percent_decode(v).map_err(fail)?;
    }
    match pattern {
        "/v1/services/{name}/prepare" | "/v1/services/{name}/receive" => {
            parse_json::<MoveRequest>(body).map_err(fail)?;
        }
        "/v1/apply" => {
            apply_request(body).map_err(fail)?;
        }
        "/v1/services/{name}/migrate" => {
            drop(parse_json::<super::types::MigrateRequest>(body).map_err(fail)?)
        }
        "/v1/services/{name}/volumes/{volume}" => {
            let query = parse_query(query).map_err(fail)?;
            let name = percent_decode(params.get("name").copied().unwrap_or("")).map_err(fail)?;
            let volume =
                percent_decode(params.get("volume").copied().unwrap_or("")).map_err(fail)?;
            volume_offer(&name, &volume, &query).map_err(fail)?;
        }
        _ if method == "POST" && pattern.starts_with("/v1/services/") => {
            op_request(body).map_err(fail)?;
        }
        _ => {}
    }
    Ok(())
}

async fn read_body(req: Request<Incoming>) -> Result<Bytes, Failure> {
    let collect = Limited::new(req.into_body(), MAX_BODY).collect();
    let Ok(read) = tokio::time::timeout(BODY_TIMEOUT, collect).await else {
        return Err(Failure(
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {}s",
                BODY_TIMEOUT.as_secs()
            ),
            "RequestTimeout",
        ));
    };
    match read {
        Ok(b) => Ok(b.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Failure(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {MAX_BODY} bytes"),
            "TooLarge",
        )),
        Err(e) => Err(bad_request(format!("cannot read the request body: {e}"))),
    }
}

/// Every body is a JSON object; serde would also take a struct written as
/// an array (`[]`), which the document does not allow.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Failure> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("malformed JSON body: {e}")))?;
    if !value.is_object() {
        return Err(bad_request("the body must be a JSON object"));
    }
    serde_json::from_value(value).map_err(|e| bad_request(format!("malformed JSON body: {e}")))
}

async fn read_json<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Failure> {
    parse_json(&read_body(req).await?)
}

fn parse_query(q: &str) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, Failure> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| bad_request(format!("bad percent-encoding in {s:?}")))?;
                out.push(hex);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad_request(format!("{s:?} is not UTF-8")))
}

fn number(q: &BTreeMap<String, String>, key: &str, default: u64) -> Result<u64, Failure> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| bad_request(format!("{key} must be a non-negative integer, not {v:?}"))),
    }
}

/// A boolean query parameter: absent is false.
fn flag(q: &BTreeMap<String, String>, key: &str) -> Result<bool, Failure> {
    match q.get(key).map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(v) => Err(bad_request(format!(
            "{key} must be true or false, not {v:?}"
        ))),
    }
}

/// Decrements the long-poll count when the poll ends, however it ends.
struct PollSlot<'a>(&'a AtomicUsize);

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /v1/events?after=SEQ&timeout=S`: the stored events after SEQ at
/// once, else the first ones to come within S seconds (default 30).
async fn events(state: &State, query: &BTreeMap<String, String>) -> Result<Resp, Failure> {
    let after = number(query, "after", 0)?;
    let timeout = number(query, "timeout", 30)?;
    if timeout > MAX_POLL_SECONDS {
        return Err(bad_request(format!(
            "timeout is at most {MAX_POLL_SECONDS} seconds"
        )));
    }
    if state.long_polls.fetch_add(1, Ordering::SeqCst) >= MAX_LONG_POLLS {
        state.long_polls.fetch_sub(1, Ordering::SeqCst);
        return Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_LONG_POLLS} event polls are open already; try again later"),
            "TooManyPolls",
        ));
    }
    let _slot = PollSlot(&state.long_polls);
    // Subscribed before the first read: an event stored after that read is
    // also broadcast after it, and wakes us.
    let mut rx = state.control.events().subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let store = state.control.store();
    loop {
        let found = store
            .events_after(after, EVENTS_LIMIT)
            .map_err(ControlError::from)?;
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            let next = found.last().map_or(after, |e| e.seq);
            return Ok(json(
                StatusCode::OK,
                &Events {
                    events: found,
                    next,
                },
            ));
        }
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.recv()) => {
                if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) = r {
                    return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, "stackd is stopping".into(), "ShuttingDown"));
                }
            }
            _ = state.cancel.cancelled() => {
                return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, "stackd is stopping".into(), "ShuttingDown"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_with_params() {
        let (p, params) = route("GET", "/v1/services/web").unwrap();
        assert_eq!(p, "/v1/services/{name}");
        assert_eq!(params["name"], "web");
        assert_eq!(
            route("POST", "/v1/services/web/start").unwrap().0,
            "/v1/services/{name}/start"
        );
        assert_eq!(
            route("GET", "/v1/services/web/start"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(route("GET", "/v1/nothing"), Err(StatusCode::NOT_FOUND));
        assert_eq!(allowed_methods("/v1/services/web/start"), vec!["POST"]);
        assert_eq!(allowed_methods("/v1/config"), vec!["PUT"]);
        assert_eq!(route("GET", "/v1/services/"), Err(StatusCode::NOT_FOUND));
    }

    /// Every route served is in the OpenAPI document, and every path and
    /// method in the document is served.
    #[test]
    fn openapi_matches_routes() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI).expect("openapi.json parses");
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for method in ops.as_object().expect("operations").keys() {
                if method == "parameters" {
                    continue;
                }
                documented.insert((method.to_uppercase(), path.clone()));
            }
        }
        let served: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p)| (m.to_string(), p.to_string()))
            .collect();
        assert_eq!(documented, served);
        for (m, p) in ROUTES {
            let concrete = p.replace("{name}", "x").replace("{id}", "1");
            assert_eq!(route(m, &concrete).unwrap().0, *p);
        }
    }

    #[test]
    fn query_parsing() {
        let q = parse_query("after=5&timeout=1&service=a%2Db+c")
            .ok()
            .unwrap();
        assert_eq!(q["after"], "5");
        assert_eq!(q["service"], "a-b c");
        assert!(parse_query("x=%zz").is_err());
    }
}
