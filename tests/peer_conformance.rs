//! Third-party clients against the peer endpoint, as an integrator would
//! point them at it: schemathesis (PyPI `schemathesis`) generates requests
//! from the served `/v1/openapi.json` with a valid token and checks every
//! answer against the document (status codes, content types, schemas,
//! `Allow` on 405, no 5xx, auth really enforced); Prometheus's `promtool
//! check metrics` (Debian `prometheus`) lints `/metrics`. Under CI=true a
//! missing tool fails the test.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{have_bus, have_docker, require, toml_str, which, Bus, Daemon, Output, TestEnv};

const TOKEN: &str = "conformance-token-0123456789abcdef0123";

/// schemathesis's configuration: the one check that cannot hold for
/// `PUT /v1/config`. Its body is TOML, and the document can say "a
/// non-empty string" but not "a valid cluster file", so a schema-valid
/// string is rightly refused (400 with file:line:col) when it is not one.
const ST_CONFIG: &str = r#"
[[operations]]
include-path = "/v1/config"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"#;

/// A daemon with one service and its peer endpoint on 127.0.0.1.
fn start(test: &str) -> (TestEnv, Bus, Daemon, u16) {
    let env = TestEnv::new(test);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let token = env.dir().join("peer.token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let web = env.add_sleeper("web");
    env.write_config(&format!(
        "[peer]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {}\n\n[services.{web}]\nauto_start = false\n",
        toml_str(&token.display().to_string())
    ));
    let bus = Bus::start(env.dir());
    let daemon = Daemon::start(&env, &bus);
    (env, bus, daemon, port)
}

/// `GET path` with the token: the body.
fn get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

#[test]
fn docker_schemathesis_finds_nothing_against_the_served_document() {
    if !have_docker() || !have_bus() {
        return;
    }
    let st = which("schemathesis").or_else(|| which("st"));
    if !require("schemathesis", st.is_some(), "pip install schemathesis") {
        return;
    }
    let (env, _bus, daemon, port) = start("conformance_st");
    let report = env.dir().join("schemathesis");
    // /v1/events is a long poll: a generated `after` past the last event
    // waits `timeout` seconds (up to 300) by design, which a request
    // timeout would report as a hang; its parameters are checked by the
    // fuzzing of the others and by tests/peer.rs.
    let config = env.dir().join("schemathesis.toml");
    std::fs::write(&config, ST_CONFIG).expect("schemathesis.toml");
    let mut cmd = Command::new(st.unwrap());
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(format!("http://127.0.0.1:{port}/v1/openapi.json"))
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--checks", "all"])
        .args(["--phases", "examples,coverage,fuzzing"])
        .args(["--max-examples", "25"])
        // Generous: a loaded 2-core machine, other tests running beside
        // it, has taken over 20 s to answer a logs request.
        .args(["--request-timeout", "60"])
        .args(["--workers", "1"])
        .args(["--seed", "17"])
        .args(["--exclude-path", "/v1/events"])
        .args(["--report", "junit", "--report-dir"])
        .arg(&report)
        .env("NO_COLOR", "1")
        .env("SCHEMATHESIS_TELEMETRY", "false")
        // Its example cache (.schemathesis/) goes to the temp dir, not
        // the checkout.
        .current_dir(env.dir())
        .stdin(Stdio::null());
    let out: Output = common::run(&mut cmd, Duration::from_secs(900));
    let log = daemon.stderr();
    assert_eq!(
        out.code, 0,
        "schemathesis found failures:\n{}\n{}\n--- daemon log ---\n{}",
        out.stdout, out.stderr, log
    );
    eprintln!(
        "{}",
        out.stdout
            .lines()
            .rev()
            .take(12)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn docker_promtool_accepts_the_metrics() {
    if !have_docker() || !have_bus() {
        return;
    }
    if !require(
        "promtool",
        which("promtool").is_some(),
        "apt-get install prometheus",
    ) {
        return;
    }
    let (_env, _bus, _daemon, port) = start("conformance_promtool");
    let metrics = get(port, "/metrics");
    assert!(metrics.contains("stackd_build_info"), "{metrics}");
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(metrics.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool: {said}\n{metrics}");
    assert!(
        said.trim().is_empty(),
        "promtool has remarks: {said}\n{metrics}"
    );
}
