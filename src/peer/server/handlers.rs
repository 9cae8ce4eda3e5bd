//! One request answered: route, authenticate (the bearer token and the
//! per-address failure limit), then the handler of its route over
//! [`Control`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;

use futures_util::StreamExt;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tracing::{info, warn};

use super::events::events;
use super::request::{
    apply_request, flag, number, op_request, parse_query, percent_decode, read_body, read_json,
    volume_offer,
};
use super::routes::{allowed_methods, route, OPENAPI};
use super::{bad_request, error, json, text, Failure, Resp, State};
use crate::control::{Control, Op};
use crate::peer::auth;
use crate::peer::types::{
    ApplyAnswer, ConfigPushed, Host, MoveRequest, PrepareAnswer, Service, ServiceSummary, Task,
    VolumeAnswer,
};
use crate::store::{Origin, TaskFilter, TaskState};

pub(super) async fn handle(state: &State, req: Request<Incoming>, peer: SocketAddr) -> Resp {
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
        "/metrics" => text(
            "text/plain; version=0.0.4",
            crate::peer::metrics::render(control),
        ),
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
                let origin = Origin::AllHosts(peer.to_string());
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
            let (tar, check) = crate::peer::volumes::unseal(req.into_body());
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
            &crate::peer::apply::migrate(control, name, read_json(req).await?, peer).await?,
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
            let origin = Origin::peer(peer.ip(), request.caller.as_deref());
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
