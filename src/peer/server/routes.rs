//! The route table: every method and path the endpoint answers, read by
//! the dispatcher (`handlers.rs`) and held equal to the OpenAPI document
//! (`peer/openapi.json`) by a test. A new route is one line in [`ROUTES`],
//! one arm in `handlers::dispatch` and its entry in the document.

use std::collections::BTreeMap;

use hyper::StatusCode;

/// The OpenAPI document, kept in the repository.
pub const OPENAPI: &str = include_str!("../../../peer/openapi.json");

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
}
