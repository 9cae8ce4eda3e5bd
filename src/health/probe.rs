//! One probe, run once: http (a minimal HTTP/1.1 GET, over rustls for
//! https://), tcp, command (on the host or through `docker exec`), file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use std::sync::{Arc, OnceLock};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

use super::{ProbeError, ProbeResult};
use crate::config::Probe;
use crate::engine::{ContainerState, Docker};

/// Most of a response body read for `body_contains`.
const MAX_RESPONSE: usize = 1 << 20;

/// Where a service's probe runs.
#[derive(Clone, Default)]
pub struct ProbeContext {
    /// The service directory: relative file probe paths and host commands
    /// start here.
    pub dir: PathBuf,
    /// The Compose project (the service name).
    pub project: String,
    /// Needed only by command probes with `container`.
    pub docker: Option<Docker>,
}

/// Runs `probe` once, bounded by `timeout`.
pub async fn run_probe(probe: &Probe, ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
    let start = Instant::now();
    let outcome = match tokio::time::timeout(timeout, probe_once(probe, ctx, timeout)).await {
        Ok(r) => r,
        Err(_) => Err(ProbeError::TimedOut(timeout)),
    };
    let took = start.elapsed();
    match outcome {
        Ok((true, message)) => ProbeResult::ok(message, took),
        Ok((false, message)) => ProbeResult::failed(message, took),
        Err(e) => ProbeResult::failed(format!("{}: {e}", describe(probe)), took),
    }
}

/// "GET http://…", "TCP 127.0.0.1:5432", "command `pg_isready`", "file /x".
fn describe(probe: &Probe) -> String {
    match probe {
        Probe::Http { url, .. } => format!("GET {url}"),
        Probe::Tcp { address } => format!("TCP {address}"),
        Probe::Command { argv, container } => match container {
            Some(c) => format!("command `{}` in {c}", argv.join(" ")),
            None => format!("command `{}`", argv.join(" ")),
        },
        Probe::File { path, .. } => format!("file {}", path.display()),
    }
}

async fn probe_once(
    probe: &Probe,
    ctx: &ProbeContext,
    timeout: Duration,
) -> Result<(bool, String), ProbeError> {
    match probe {
        Probe::Http {
            url,
            expect_status,
            body_contains,
            tls_ca,
        } => {
            http(
                url,
                expect_status,
                body_contains.as_deref(),
                tls_ca.as_deref(),
            )
            .await
        }
        Probe::Tcp { address } => {
            TcpStream::connect(address.as_str())
                .await
                .map_err(|source| ProbeError::Io {
                    what: format!("connecting to {address}"),
                    source,
                })?;
            Ok((true, format!("TCP {address} accepts connections")))
        }
        Probe::Command {
            argv,
            container: None,
        } => host_command(argv, &ctx.dir).await,
        Probe::Command {
            argv,
            container: Some(service),
        } => container_command(argv, service, ctx, timeout).await,
        Probe::File { path, max_age } => file(&ctx.dir.join(path), *max_age),
    }
}

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

async fn http(
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

async fn host_command(argv: &[String], dir: &Path) -> Result<(bool, String), ProbeError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(ProbeError::EmptyCommand);
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The timeout drops this future: the child goes with it.
        .kill_on_drop(true);
    if dir.is_dir() {
        cmd.current_dir(dir);
    }
    let out = cmd.output().await.map_err(|source| ProbeError::Io {
        what: format!("starting {program}"),
        source,
    })?;
    let said = last_line(&out.stderr).or_else(|| last_line(&out.stdout));
    let shown = argv.join(" ");
    Ok(match out.status.code() {
        Some(0) => (true, format!("`{shown}` succeeded")),
        Some(code) => (
            false,
            match said {
                Some(s) => format!("`{shown}` exited with code {code}: {s}"),
                None => format!("`{shown}` exited with code {code}"),
            },
        ),
        None => (false, format!("`{shown}` was killed by a signal")),
    })
}

fn last_line(bytes: &[u8]) -> Option<String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect())
}

async fn container_command(
    argv: &[String],
    service: &str,
    ctx: &ProbeContext,
    timeout: Duration,
) -> Result<(bool, String), ProbeError> {
    let docker = ctx
        .docker
        .as_ref()
        .ok_or_else(|| ProbeError::NoDocker(service.to_string()))?;
    let container = docker
        .list_containers(Some(&ctx.project))
        .await?
        .into_iter()
        .find(|c| c.service == service && !c.oneoff && c.state == ContainerState::Running)
        .ok_or_else(|| ProbeError::NoContainer {
            project: ctx.project.clone(),
            service: service.to_string(),
        })?;
    let code = docker.exec(&container.id, argv, timeout).await?;
    let shown = argv.join(" ");
    Ok(if code == 0 {
        (true, format!("`{shown}` in {} succeeded", container.name))
    } else {
        (
            false,
            format!("`{shown}` in {} exited with code {code}", container.name),
        )
    })
}

fn file(path: &Path, max_age: Option<Duration>) -> Result<(bool, String), ProbeError> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok((false, format!("{} does not exist", path.display())))
        }
        Err(source) => {
            return Err(ProbeError::Io {
                what: format!("reading {}", path.display()),
                source,
            })
        }
    };
    let Some(max_age) = max_age else {
        return Ok((true, format!("{} exists", path.display())));
    };
    let modified = meta.modified().map_err(|source| ProbeError::Io {
        what: format!("reading the modification time of {}", path.display()),
        source,
    })?;
    // A time in the future counts as fresh.
    let age = SystemTime::now()
        .duration_since(modified)
        .unwrap_or(Duration::ZERO);
    if age <= max_age {
        Ok((
            true,
            format!("{} was modified {}s ago", path.display(), age.as_secs()),
        ))
    } else {
        Ok((
            false,
            format!(
                "{} was last modified {}s ago (at most {}s allowed)",
                path.display(),
                age.as_secs(),
                max_age.as_secs()
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

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

    /// A one-request HTTP server answering `response`.
    async fn serve_once(response: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(got.starts_with(b"GET /health HTTP/1.1\r\n"));
            s.write_all(response.as_bytes()).await.unwrap();
        });
        format!("http://{addr}/health")
    }

    fn http_probe(url: &str, expect: Vec<(u16, u16)>, body: Option<&str>) -> Probe {
        Probe::Http {
            url: url.into(),
            expect_status: expect,
            body_contains: body.map(str::to_string),
            tls_ca: None,
        }
    }

    #[tokio::test]
    async fn http_probe_table() {
        let ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nall is well";
        let e503 = "HTTP/1.1 503 Service Unavailable\r\n\r\n";
        // (response, expected ranges, body substring, ok, message contains)
        type Case = (
            &'static str,
            Vec<(u16, u16)>,
            Option<&'static str>,
            bool,
            &'static str,
        );
        let cases: [Case; 5] = [
            (ok200, vec![], None, true, "answered 200"),
            (ok200, vec![], Some("well"), true, "answered 200"),
            (
                ok200,
                vec![],
                Some("sick"),
                false,
                "does not contain \"sick\"",
            ),
            (
                e503,
                vec![],
                None,
                false,
                "503 Service Unavailable (expected 200-399)",
            ),
            (
                e503,
                vec![(200, 200), (500, 503)],
                None,
                true,
                "answered 503",
            ),
        ];
        for (response, expect, body, ok, says) in cases {
            let url = serve_once(response).await;
            let r = run_probe(&http_probe(&url, expect, body), &ProbeContext::default(), T).await;
            assert_eq!(r.ok, ok, "{response:?}: {}", r.message);
            assert!(r.message.contains(says), "{:?} lacks {says:?}", r.message);
        }
    }

    #[tokio::test]
    async fn http_probe_refused_and_silent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let r = run_probe(
            &http_probe(&format!("http://127.0.0.1:{port}/"), vec![], None),
            &ProbeContext::default(),
            T,
        )
        .await;
        assert!(!r.ok);
        assert!(
            r.message.contains("connecting to 127.0.0.1"),
            "{}",
            r.message
        );

        // Accepts, never answers: the timeout ends it.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", silent.local_addr().unwrap());
        let r = run_probe(
            &http_probe(&url, vec![], None),
            &ProbeContext::default(),
            Duration::from_millis(300),
        )
        .await;
        assert!(!r.ok);
        assert!(
            r.message.contains("no answer within 300ms"),
            "{}",
            r.message
        );
        assert!(r.took >= Duration::from_millis(300));

        // https:// to a plain-HTTP server: the handshake fails, and says so.
        let plain = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("https://{}/", plain.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut s, _) = plain.accept().await.unwrap();
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let r = run_probe(&http_probe(&url, vec![], None), &ProbeContext::default(), T).await;
        assert!(
            !r.ok && r.message.contains("TLS: handshake with"),
            "{}",
            r.message
        );
    }

    #[tokio::test]
    async fn tcp_probe() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let r = run_probe(
            &Probe::Tcp {
                address: address.clone(),
            },
            &ProbeContext::default(),
            T,
        )
        .await;
        assert!(r.ok, "{}", r.message);
        drop(listener);
        let r = run_probe(&Probe::Tcp { address }, &ProbeContext::default(), T).await;
        assert!(!r.ok);
        assert!(r.message.contains("refused"), "{}", r.message);
    }

    fn command(argv: &[&str]) -> Probe {
        Probe::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            container: None,
        }
    }

    #[tokio::test]
    async fn host_command_probe() {
        let ctx = ProbeContext::default();
        assert!(run_probe(&command(&["true"]), &ctx, T).await.ok);
        let r = run_probe(&command(&["sh", "-c", "echo broken >&2; exit 3"]), &ctx, T).await;
        assert!(!r.ok);
        assert!(
            r.message.contains("exited with code 3: broken"),
            "{}",
            r.message
        );
        let r = run_probe(&command(&["sleep", "5"]), &ctx, Duration::from_millis(200)).await;
        assert!(
            !r.ok && r.message.contains("no answer within"),
            "{}",
            r.message
        );
        assert!(r.took < Duration::from_secs(2));
        let r = run_probe(&command(&["/nonexistent/probe"]), &ctx, T).await;
        assert!(
            !r.ok && r.message.contains("starting /nonexistent/probe"),
            "{}",
            r.message
        );
    }

    #[tokio::test]
    async fn file_probe() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = ProbeContext {
            dir: dir.path().to_path_buf(),
            ..Default::default()
        };
        let probe = |max_age| Probe::File {
            path: "beat".into(),
            max_age,
        };
        let r = run_probe(&probe(None), &ctx, T).await;
        assert!(
            !r.ok && r.message.contains("does not exist"),
            "{}",
            r.message
        );
        std::fs::write(dir.path().join("beat"), "x").unwrap();
        assert!(run_probe(&probe(None), &ctx, T).await.ok);
        assert!(
            run_probe(&probe(Some(Duration::from_secs(60))), &ctx, T)
                .await
                .ok
        );
        let old = SystemTime::now() - Duration::from_secs(120);
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("beat"))
            .unwrap()
            .set_modified(old)
            .unwrap();
        let r = run_probe(&probe(Some(Duration::from_secs(60))), &ctx, T).await;
        assert!(!r.ok && r.message.contains("at most 60s"), "{}", r.message);
    }

    #[tokio::test]
    async fn docker_container_command_probe() {
        use crate::engine::testing::{self, Project};
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        let image = testing::test_image();
        let project = Project::new(
            &compose,
            "hprobe",
            &format!(
                "  box:\n    image: {image}\n    pull_policy: never\n    command: [\"sleep\", \"600\"]\n    stop_signal: SIGKILL\n"
            ),
        );
        compose
            .run(
                &project.invocation(&["up", "-d"]),
                &|_| {},
                &tokio_util::sync::CancellationToken::new(),
                Duration::from_secs(120),
            )
            .await
            .unwrap();
        let ctx = ProbeContext {
            dir: project.dir.path().to_path_buf(),
            project: project.name.clone(),
            docker: Some(docker),
        };
        let in_box = |argv: &[&str], service: &str| Probe::Command {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            container: Some(service.to_string()),
        };
        let r = run_probe(&in_box(&["true"], "box"), &ctx, T).await;
        assert!(r.ok, "{}", r.message);
        let r = run_probe(&in_box(&["sh", "-c", "exit 4"], "box"), &ctx, T).await;
        assert!(
            !r.ok && r.message.contains("exited with code 4"),
            "{}",
            r.message
        );
        let r = run_probe(&in_box(&["true"], "nope"), &ctx, T).await;
        assert!(
            !r.ok && r.message.contains("no running container"),
            "{}",
            r.message
        );
        let no_docker = ProbeContext {
            docker: None,
            ..ctx.clone()
        };
        let r = run_probe(&in_box(&["true"], "box"), &no_docker, T).await;
        assert!(
            !r.ok && r.message.contains("Docker is not connected"),
            "{}",
            r.message
        );
    }
}
