//! One daemon with its peer endpoint on 127.0.0.1, against what a careless
//! or hostile client sends: huge task ids, wrong methods (405 + `Allow`),
//! empty and truncated cluster file pushes (refused, file unchanged, until
//! forced), a burst of wrong tokens (the right token still works), a body
//! announced longer than it is sent (closed), and the D-Bus small ones
//! (ids past 2^63, an empty job mode).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{busctl_error_name, have_bus, have_docker, toml_str, Bus, Daemon, TestEnv};

const TOKEN: &str = "hardening-token-0123456789abcdef0123";

/// A daemon of host `testhost` with `[peer]` on 127.0.0.1:`port`.
pub struct OneHost {
    pub daemon: Daemon,
    pub bus: Bus,
    pub env: TestEnv,
    pub port: u16,
    pub services: Vec<String>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

impl OneHost {
    /// `services` sleepers (auto_start false) and the peer endpoint.
    #[track_caller]
    fn start(test: &str, services: &[&str]) -> OneHost {
        let env = TestEnv::new(test);
        let port = free_port();
        let token = env.dir().join("peer.token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let names: Vec<String> = services.iter().map(|s| env.add_sleeper(s)).collect();
        let mut extra = format!(
            "[peer]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {}\n\n",
            toml_str(&token.display().to_string())
        );
        for n in &names {
            extra.push_str(&format!("[services.{n}]\nauto_start = false\n\n"));
        }
        env.write_config(&extra);
        let bus = Bus::start(env.dir());
        let daemon = Daemon::start(&env, &bus);
        OneHost {
            daemon,
            bus,
            env,
            port,
            services: names,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn config(&self) -> PathBuf {
        self.env.config_path()
    }
}

/// One raw HTTP/1.1 exchange: (status, head, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/toml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn careless_requests_get_the_right_answers() {
    if !have_docker() || !have_bus() {
        return;
    }
    let h = OneHost::start("hardening_small", &["web"]);
    let addr = h.addr();

    // A task id past i64: no such task, not a server error.
    let (status, _, body) = http(
        &addr,
        "GET",
        "/v1/tasks/18446744073709551615",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("NoSuchTask"), "{body}");

    // 405 names what is allowed.
    let (status, head, _) = http(&addr, "DELETE", "/v1/config", Some(TOKEN), "");
    assert_eq!(status, 405, "{head}");
    assert_eq!(header(&head, "allow"), Some("PUT"), "{head}");
    let (status, head, _) = http(&addr, "GET", "/v1/services/web/start", Some(TOKEN), "");
    assert_eq!(status, 405, "{head}");
    assert_eq!(header(&head, "allow"), Some("POST"), "{head}");

    // An empty push, checked or not: 400 with the reason, file unchanged.
    let before = std::fs::read_to_string(h.config()).unwrap();
    for path in [
        "/v1/config",
        "/v1/config?check=true",
        "/v1/config?force=true",
    ] {
        let (status, _, body) = http(&addr, "PUT", path, Some(TOKEN), "");
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("empty"), "{path}: {body}");
        let (status, _, body) = http(&addr, "PUT", path, Some(TOKEN), " \n\n");
        assert_eq!(status, 400, "{path}: {body}");
    }
    assert_eq!(std::fs::read_to_string(h.config()).unwrap(), before);

    // Ten wrong tokens from this address, then more: slowed down with 429,
    // and the right token still gets through at once.
    for i in 0..10 {
        let (status, _, _) = http(&addr, "GET", "/v1/host", Some("wrong"), "");
        assert_eq!(status, 401, "attempt {i}");
    }
    let (status, _, _) = http(&addr, "GET", "/v1/host", Some("wrong"), "");
    assert_eq!(status, 429);
    let t = Instant::now();
    let (status, _, body) = http(&addr, "GET", "/v1/host", Some(TOKEN), "");
    assert_eq!(status, 200, "the right token is locked out: {body}");
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );

    // D-Bus: ids at and past 2^63 are no such task; an empty mode is not
    // a mode.
    let call = |method: &str, sig: &str, args: &[&str]| {
        let mut v = vec![
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            method,
            sig,
        ];
        v.extend(args);
        busctl_error_name(None, &h.bus, &v)
    };
    for id in ["9223372036854775808", "18446744073709551615"] {
        assert_eq!(
            call("GetTask", "t", &[id]).as_deref(),
            Some("org.stackd1.Error.NoSuchTask"),
            "GetTask {id}"
        );
        assert_eq!(
            call("CancelTask", "t", &[id]).as_deref(),
            Some("org.stackd1.Error.NoSuchTask"),
            "CancelTask {id}"
        );
    }
    let web = h.services[0].as_str();
    for m in ["StopServiceMode", "StartServiceMode"] {
        assert_eq!(
            call(m, "ss", &[web, ""]).as_deref(),
            Some("org.stackd1.Error.InvalidArgument"),
            "{m} with an empty mode"
        );
    }
    assert_eq!(
        call("ReloadMode", "s", &[""]).as_deref(),
        Some("org.stackd1.Error.InvalidArgument")
    );
}

/// A push that would take every service of this host is refused (409)
/// naming them, in the check round too; forced, it is written.
#[test]
fn a_push_that_removes_every_service_needs_force() {
    if !have_docker() || !have_bus() {
        return;
    }
    let h = OneHost::start("hardening_push", &["one", "two"]);
    let addr = h.addr();
    let before = std::fs::read_to_string(h.config()).unwrap();
    let cut = before.find("[services.").unwrap();
    let truncated = &before[..cut];
    for path in ["/v1/config?check=true", "/v1/config"] {
        let (status, _, body) = http(&addr, "PUT", path, Some(TOKEN), truncated);
        assert_eq!(status, 409, "{path}: {body}");
        for s in &h.services {
            assert!(body.contains(s.as_str()), "{path} names {s}: {body}");
        }
        assert!(body.contains("force"), "{body}");
    }
    assert_eq!(std::fs::read_to_string(h.config()).unwrap(), before);
    let (status, _, body) = http(
        &addr,
        "PUT",
        "/v1/config?force=true",
        Some(TOKEN),
        truncated,
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(std::fs::read_to_string(h.config()).unwrap(), truncated);
}
