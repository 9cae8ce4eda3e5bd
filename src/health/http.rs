//! The http probe's client: one `GET` over HTTP/1.1 (rustls for
//! https://, trusting the public roots or only `tls_ca`), read until the
//! server closes, keeping what a probe reports: the status and the first
//! bytes of the body. Hand-written rather than hyper's client, which would
//! hide the answer behind connection pooling and protocol errors; this is
//! one of the two narrow HTTP clients outside `peer/` (ARCHITECTURE.md).

use std::path::Path;
use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::ProbeError;

/// Most of a response body read for `body_contains`.
const MAX_RESPONSE: usize = 1 << 20;

/// A parsed `http[s]://host[:port]/path` URL.
#[derive(Debug, PartialEq, Eq)]
struct HttpUrl {
    /// For connecting: "host:port" ("[::1]:80" for IPv6).
    authority: String,
    /// For the Host header: as written in the URL.
    host_header: String,
    path: String,
    tls: bool,
}

impl HttpUrl {
    /// The host name or address the server's certificate must name.
    fn server_name(&self) -> &str {
        let host = match self.authority.rfind(':') {
            Some(i) => &self.authority[..i],
            None => &self.authority,
        };
        host.trim_start_matches('[').trim_end_matches(']')
    }
}

fn parse_url(url: &str) -> Result<HttpUrl, ProbeError> {
    let bad = |why: &str| ProbeError::BadUrl {
        url: url.to_string(),
        why: why.to_string(),
    };
    let (rest, tls) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (rest, false),
        (_, Some(rest)) => (rest, true),
        _ => return Err(ProbeError::UnsupportedUrl(url.to_string())),
    };
    let (host_port, path) = match rest.find(['/', '?']) {
        Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_string()),
    };
    let path = path.split('#').next().unwrap_or("/").to_string();
    if host_port.is_empty() {
        return Err(bad("no host"));
    }
    if host_port.contains('@') {
        return Err(bad("user:password@ in probe URLs is not supported"));
    }
    let has_port = match host_port.rfind(':') {
        Some(i) => !host_port[i..].contains(']'),
        None => false,
    };
    let authority = if has_port {
        let port = &host_port[host_port.rfind(':').unwrap_or(0) + 1..];
        port.parse::<u16>().map_err(|_| bad("bad port"))?;
        host_port.to_string()
    } else {
        format!("{host_port}:{}", if tls { 443 } else { 80 })
    };
    Ok(HttpUrl {
        authority,
        host_header: host_port.to_string(),
        path,
        tls,
    })
}

fn tls_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Trusts the public web roots, or only the certificates in `ca`. The
/// public one is built once; a CA file is read on every probe, so a
/// renewed certificate is picked up.
fn tls_connector(ca: Option<&Path>) -> Result<TlsConnector, ProbeError> {
    static PUBLIC: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    let tls = |e: &dyn std::fmt::Display| ProbeError::Tls(e.to_string());
    let Some(ca) = ca else {
        return PUBLIC
            .get_or_init(|| {
                use hyper_rustls::ConfigBuilderExt;
                let config = ClientConfig::builder_with_provider(tls_provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_webpki_roots()
                    .with_no_client_auth();
                Ok(TlsConnector::from(Arc::new(config)))
            })
            .clone()
            .map_err(|e| tls(&e));
    };
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| tls(&format!("tls_ca {}: {e}", ca.display())))?;
    if certs.is_empty() {
        return Err(tls(&format!(
            "tls_ca {}: no PEM certificate in it",
            ca.display()
        )));
    }
    for c in certs {
        roots
            .add(c)
            .map_err(|e| tls(&format!("tls_ca {}: {e}", ca.display())))?;
    }
    let config = ClientConfig::builder_with_provider(tls_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Send the request and read the answer until the server closes. A TLS
/// server that closes without close_notify has still answered.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<Vec<u8>, (&'static str, std::io::Error)> {
    stream
        .write_all(request)
        .await
        .map_err(|e| ("sending to", e))?;
    let mut raw = Vec::new();
    match (&mut stream)
        .take(MAX_RESPONSE as u64)
        .read_to_end(&mut raw)
        .await
    {
        Ok(_) => Ok(raw),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Err(e) => Err(("reading from", e)),
    }
}

pub(super) async fn get(
    url: &str,
    expect: &[(u16, u16)],
    body_contains: Option<&str>,
    tls_ca: Option<&Path>,
) -> Result<(bool, String), ProbeError> {
    let target = parse_url(url)?;
    let io = |what: &str| {
        let what = format!("{what} {}", target.authority);
        move |source| ProbeError::Io { what, source }
    };
    let stream = TcpStream::connect(target.authority.as_str())
        .await
        .map_err(io("connecting to"))?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: stackd-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.host_header
    );
    let raw = if target.tls {
        let name = ServerName::try_from(target.server_name().to_string())
            .map_err(|e| ProbeError::Tls(format!("{}: {e}", target.server_name())))?;
        let stream = tls_connector(tls_ca)?
            .connect(name, stream)
            .await
            .map_err(|e| ProbeError::Tls(format!("handshake with {}: {e}", target.authority)))?;
        exchange(stream, request.as_bytes()).await
    } else {
        exchange(stream, request.as_bytes()).await
    }
    .map_err(|(what, e)| io(what)(e))?;
    let response = parse_response(&raw)?;
    let expected = describe_ranges(expect);
    let status_ok = if expect.is_empty() {
        (200..400).contains(&response.status)
    } else {
        expect
            .iter()
            .any(|(lo, hi)| (*lo..=*hi).contains(&response.status))
    };
    if !status_ok {
        return Ok((
            false,
            format!(
                "GET {url} answered {} {} (expected {expected})",
                response.status, response.reason
            ),
        ));
    }
    if let Some(needle) = body_contains {
        let body = String::from_utf8_lossy(&response.body);
        if !body.contains(needle) {
            return Ok((
                false,
                format!(
                    "GET {url} answered {} but the body does not contain {needle:?}",
                    response.status
                ),
            ));
        }
    }
    Ok((true, format!("GET {url} answered {}", response.status)))
}

fn describe_ranges(expect: &[(u16, u16)]) -> String {
    if expect.is_empty() {
        return "200-399".to_string();
    }
    expect
        .iter()
        .map(|(lo, hi)| {
            if lo == hi {
                lo.to_string()
            } else {
                format!("{lo}-{hi}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Debug, PartialEq, Eq)]
struct Response {
    status: u16,
    reason: String,
    body: Vec<u8>,
}

fn parse_response(raw: &[u8]) -> Result<Response, ProbeError> {
    let bad = |why: &str| ProbeError::BadResponse(why.to_string());
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("the connection closed before the headers ended"))?;
    let head = String::from_utf8_lossy(&raw[..head_end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/") {
        return Err(bad(&format!("status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad(&format!("status line {status_line:?}")))?;
    let reason = parts.next().unwrap_or("").to_string();
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.to_ascii_lowercase().contains("chunked")
        })
    });
    let body = &raw[head_end + 4..];
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_vec()
    };
    Ok(Response {
        status,
        reason,
        body,
    })
}

/// Decodes a chunked body as far as it goes (a cut-off body keeps what
/// arrived).
fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_line = String::from_utf8_lossy(&data[..eol]);
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let Ok(size) = usize::from_str_radix(size_hex, 16) else {
            break;
        };
        data = &data[eol + 2..];
        if size == 0 {
            break;
        }
        let take = size.min(data.len());
        out.extend_from_slice(&data[..take]);
        data = &data[take..];
        data = data.strip_prefix(b"\r\n").unwrap_or(data);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        let ok = |authority: &str, host: &str, path: &str| {
            Some(HttpUrl {
                authority: authority.into(),
                host_header: host.into(),
                path: path.into(),
                tls: false,
            })
        };
        let tls = |authority: &str, host: &str, path: &str| {
            ok(authority, host, path).map(|u| HttpUrl { tls: true, ..u })
        };
        let cases = [
            (
                "http://127.0.0.1:8080/x",
                ok("127.0.0.1:8080", "127.0.0.1:8080", "/x"),
            ),
            ("http://example", ok("example:80", "example", "/")),
            ("http://h:1?q=1", ok("h:1", "h:1", "/?q=1")),
            ("http://[::1]:9/a/b#frag", ok("[::1]:9", "[::1]:9", "/a/b")),
            ("http://[::1]/", ok("[::1]:80", "[::1]", "/")),
            ("http://h:99999/", None),
            ("http:///x", None),
            ("https://h/", tls("h:443", "h", "/")),
            (
                "https://[::1]:8443/x",
                tls("[::1]:8443", "[::1]:8443", "/x"),
            ),
            ("ftp://h/", None),
        ];
        for (url, want) in cases {
            assert_eq!(parse_url(url).ok(), want, "{url}");
        }
        assert_eq!(
            parse_url("https://[::1]:8443/").unwrap().server_name(),
            "::1"
        );
        assert_eq!(
            parse_url("https://h.example/").unwrap().server_name(),
            "h.example"
        );
        assert!(parse_url("ftp://h/")
            .unwrap_err()
            .to_string()
            .contains("only http:// and https://"));
    }

    #[test]
    fn response_parsing() {
        let r = parse_response(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 2\r\n\r\nno")
            .unwrap();
        assert_eq!(
            (r.status, r.reason.as_str(), &r.body[..]),
            (503, "Service Unavailable", &b"no"[..])
        );
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;x=y\r\npedia\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"Wikipedia");
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
