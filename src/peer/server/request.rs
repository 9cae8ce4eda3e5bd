//! What a client sends, decoded: the query, percent-encoding, bodies
//! (bounded in size and time, JSON objects only) and each route's request
//! shape. [`decode_request`] runs all of it without a server, for the fuzz
//! targets.

use std::collections::BTreeMap;

use http_body_util::{BodyExt, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, StatusCode};

use super::routes::route;
use super::{bad_request, Failure, BODY_TIMEOUT, MAX_BODY};
use crate::control::VolumeOffer;
use crate::peer::types::{ApplyRequest, MoveRequest, OpRequest};

/// The optional JSON body of a service operation.
pub(super) fn op_request(body: &[u8]) -> Result<OpRequest, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(OpRequest::default());
    }
    parse_json(body)
}

/// The optional body of `POST /v1/apply`: none is `{}`.
pub(super) fn apply_request(body: &[u8]) -> Result<ApplyRequest, Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(ApplyRequest::default());
    }
    parse_json(body)
}

/// The query of `PUT /v1/services/{name}/volumes/{volume}`: `from` and
/// `image` required, `driver` and `labels` (a JSON object of strings)
/// optional.
pub(super) fn volume_offer(
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
            drop(parse_json::<crate::peer::types::MigrateRequest>(body).map_err(fail)?)
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

pub(super) async fn read_body(req: Request<Incoming>) -> Result<Bytes, Failure> {
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

pub(super) async fn read_json<T: serde::de::DeserializeOwned>(
    req: Request<Incoming>,
) -> Result<T, Failure> {
    parse_json(&read_body(req).await?)
}

pub(super) fn parse_query(q: &str) -> Result<BTreeMap<String, String>, Failure> {
    let mut out = BTreeMap::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Ok(out)
}

pub(super) fn percent_decode(s: &str) -> Result<String, Failure> {
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

pub(super) fn number(
    q: &BTreeMap<String, String>,
    key: &str,
    default: u64,
) -> Result<u64, Failure> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => v
            .parse()
            .map_err(|_| bad_request(format!("{key} must be a non-negative integer, not {v:?}"))),
    }
}

/// A boolean query parameter: absent is false.
pub(super) fn flag(q: &BTreeMap<String, String>, key: &str) -> Result<bool, Failure> {
    match q.get(key).map(String::as_str) {
        None | Some("false" | "0") => Ok(false),
        Some("true" | "1" | "") => Ok(true),
        Some(v) => Err(bad_request(format!(
            "{key} must be true or false, not {v:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
