//! One probe, run once: http (`http.rs`'s GET, over rustls for https://),
//! tcp, command (on the host or through `docker exec`), file.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use tokio::net::TcpStream;

use super::{ProbeError, ProbeResult};
use crate::config::Probe;
use crate::engine::{ContainerState, Docker};

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
            super::http::get(
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const T: Duration = Duration::from_secs(5);

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
