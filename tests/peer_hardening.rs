//! One daemon with its peer endpoint on 127.0.0.1, against what a careless
//! or hostile client sends: huge task ids, wrong methods (405 + `Allow`),
//! empty and truncated cluster file pushes (refused, file unchanged, until
//! forced), a burst of wrong tokens (the right token still works), a body
//! announced longer than it is sent (closed), the D-Bus small ones (ids
//! past 2^63, an empty job mode), and a flood of 1,100 idle connections
//! against a daemon at a 1024 descriptor limit, under which a restart and a
//! crash recovery still work.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{
    busctl_error_name, docker, have_bus, have_docker, require, running, stackctl, stackctl_json,
    toml_str, wait_until, which, Bus, Daemon, TestEnv,
};

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
        OneHost::start_as(test, services, false, None)
    }

    /// With `auto_start`, and with the daemon started under `prlimit
    /// --nofile=N:N` when `nofile` is given.
    #[track_caller]
    fn start_as(test: &str, services: &[&str], auto_start: bool, nofile: Option<u64>) -> OneHost {
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
            extra.push_str(&format!("[services.{n}]\nauto_start = {auto_start}\n\n"));
        }
        let config = env.write_config(&extra);
        let bus = Bus::start(env.dir());
        let daemon = match nofile {
            None => Daemon::start(&env, &bus),
            Some(n) => {
                let limit = format!("--nofile={n}:{n}");
                let args: Vec<&std::ffi::OsStr> = vec![
                    limit.as_ref(),
                    env!("CARGO_BIN_EXE_stackd").as_ref(),
                    "--user".as_ref(),
                    "--config".as_ref(),
                    config.as_os_str(),
                ];
                Daemon::start_program(std::path::Path::new("prlimit"), &args, &env, &bus, &[])
            }
        };
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

/// One raw HTTP/1.1 exchange sending TOML: (status, head, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    common::http_request(addr, method, path, token, "application/toml", body)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[test]
fn docker_careless_requests_get_the_right_answers() {
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

    // Ten wrong tokens from this address, then more: still 401 but slowed
    // down, and the right token still gets through at once. A missing
    // token is refused without counting.
    for i in 0..10 {
        let (status, _, _) = http(&addr, "GET", "/v1/host", Some("wrong"), "");
        assert_eq!(status, 401, "attempt {i}");
    }
    let t = Instant::now();
    let (status, _, _) = http(&addr, "GET", "/v1/host", Some("wrong"), "");
    assert_eq!(status, 401);
    assert!(
        t.elapsed() >= Duration::from_millis(900),
        "not slowed: {:?}",
        t.elapsed()
    );
    let t = Instant::now();
    let (status, _, _) = http(&addr, "GET", "/v1/host", None, "");
    assert_eq!(status, 401);
    assert!(
        t.elapsed() < Duration::from_millis(900),
        "{:?}",
        t.elapsed()
    );
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
/// naming them, in the check round too, and by `stackctl config push`
/// with nothing written; forced, it is written.
#[test]
fn docker_a_push_that_removes_every_service_needs_force() {
    if !have_docker() || !have_bus() {
        return;
    }
    let h = OneHost::start("hardening_push", &["one", "two"]);
    let addr = h.addr();
    // The host lists itself, so that `config push` knows where to send.
    let hosts = format!("[hosts.{}]\npeer = \"http://{addr}\"\n\n", common::HOST);
    let text = std::fs::read_to_string(h.config()).unwrap();
    let cut = text.find("[services.").unwrap();
    let before = format!("{}{hosts}{}", &text[..cut], &text[cut..]);
    std::fs::write(h.config(), &before).unwrap();
    stackctl(&h.env, &h.bus, &["reload"]).expect_success();
    let truncated = format!("{}{hosts}", &text[..cut]);
    let truncated = truncated.as_str();
    let pushed = h.env.dir().join("pushed.toml");
    std::fs::write(&pushed, truncated).unwrap();
    let push = |force: bool| {
        let mut args = vec!["config", "push", pushed.to_str().unwrap()];
        if force {
            args.push("--force");
        }
        stackctl(&h.env, &h.bus, &args)
    };
    let out = push(false);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stdout.contains("refused") && out.stdout.contains("--force"),
        "{out}"
    );
    assert!(out.stdout.contains("Nothing was written"), "{out}");
    assert_eq!(std::fs::read_to_string(h.config()).unwrap(), before);
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
    // Back, then pushed again by stackctl with --force.
    std::fs::write(h.config(), &before).unwrap();
    stackctl(&h.env, &h.bus, &["reload"]).expect_success();
    let out = push(true);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stdout.contains("written"), "{out}");
    assert_eq!(std::fs::read_to_string(h.config()).unwrap(), truncated);
}
/// A request announcing a longer body than it sends is closed after the
/// body timeout instead of holding its connection.
#[test]
fn docker_a_body_shorter_than_announced_is_closed() {
    if !have_docker() || !have_bus() {
        return;
    }
    let h = OneHost::start("hardening_slow_body", &[]);
    let addr = h.addr();
    let mut s = TcpStream::connect(&addr).unwrap();
    let req = format!(
        "PUT /v1/config?check=true HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 1000\r\n\r\nhost = "
    );
    s.write_all(req.as_bytes()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let t = Instant::now();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let held = t.elapsed();
    assert!(
        held < Duration::from_secs(30),
        "the connection was held {held:?}"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("did not arrive within"), "{text}");
    eprintln!("a short body was answered 408 and closed after {held:?}");
    drop(h);
}

/// The daemon's open descriptors: (all, sockets).
fn fds_of(pid: u32) -> (usize, usize) {
    let mut all = 0;
    let mut sockets = 0;
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("the daemon's fds")
        .flatten()
    {
        all += 1;
        if std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    (all, sockets)
}

/// A non-blocking TCP connection to `to` from the loopback address `from`.
fn connect_from(from: [u8; 4], to: std::net::SocketAddrV4) -> Option<TcpStream> {
    use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, SockaddrIn};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(from[0], from[1], from[2], from[3], 0),
    )
    .ok()?;
    match connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to)) {
        Ok(()) | Err(nix::errno::Errno::EINPROGRESS) => Some(TcpStream::from(fd)),
        Err(_) => None,
    }
}

/// 1,100 idle connections from 40 loopback addresses against a daemon
/// whose descriptor limit is 1024 (soft and hard): the endpoint holds at
/// most its caps, so `stackctl restart` and a crash recovery (the
/// container's main process killed by its host PID) still run, and the
/// flood is logged in a line per interval, not per connection.
#[test]
fn docker_a_connection_flood_leaves_descriptors_for_tasks() {
    if !have_docker() || !have_bus() {
        return;
    }
    if !require(
        "prlimit",
        which("prlimit").is_some(),
        "apt-get install util-linux",
    ) {
        return;
    }
    // The test itself needs more than 1,100 descriptors.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= 2048,
        "the test needs a hard limit of 2048 files, has {hard}"
    );

    let h = OneHost::start_as("hardening_flood", &["web"], true, Some(1024));
    let web = h.services[0].clone();
    wait_until(Duration::from_secs(60), "web runs", || running(&web) == 1);
    let pid = h.daemon.pid();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(
        line.split_whitespace().filter(|w| *w == "1024").count() == 2,
        "{line}"
    );
    let (fds_before, sockets_before) = fds_of(pid);

    let to = std::net::SocketAddrV4::new(std::net::Ipv4Addr::LOCALHOST, h.port);
    let started = Instant::now();
    let mut flood = Vec::new();
    for i in 0..1100u32 {
        let from = [127, 0, 1, 1 + (i % 40) as u8];
        if let Some(s) = connect_from(from, to) {
            flood.push(s);
        }
    }
    assert_eq!(flood.len(), 1100, "the test could not open its connections");
    std::thread::sleep(Duration::from_secs(2));
    let (fds_flood, sockets_flood) = fds_of(pid);
    let held = sockets_flood.saturating_sub(sockets_before);

    // A person's restart, then a crash and its recovery, under the flood.
    let restart = stackctl(&h.env, &h.bus, &["restart", &web]);
    assert_eq!(restart.code, 0, "restart under the flood: {restart}");
    let main_pid = || -> i32 {
        docker(&["inspect", "-f", "{{.State.Pid}}", &format!("{web}-main-1")])
            .stdout
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let crashed = main_pid();
    assert!(crashed > 0);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(crashed),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_until(
        Duration::from_secs(60),
        "a recovery brings web back",
        || {
            let p = main_pid();
            p > 0 && p != crashed && running(&web) == 1
        },
    );
    let tasks = stackctl_json(&h.env, &h.bus, &["tasks", "--service", &web]);
    let recovery = tasks
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["origin"] == "recovery")
        .unwrap_or_else(|| panic!("no recovery task: {tasks}"));
    wait_until(Duration::from_secs(30), "the recovery task ends", || {
        let t = stackctl_json(&h.env, &h.bus, &["task", &recovery["id"].to_string()]);
        t["state"] != "running" && t["state"] != "pending"
    });
    let t = stackctl_json(&h.env, &h.bus, &["task", &recovery["id"].to_string()]);
    assert_eq!(t["result"], "done", "{t}");
    let (fds_peak, _) = fds_of(pid);
    let flood_secs = started.elapsed().as_secs_f64();

    // Released: the endpoint answers again at once.
    drop(flood);
    wait_until(
        Duration::from_secs(30),
        "the endpoint answers after the flood",
        || http(&h.addr(), "GET", "/v1/host", Some(TOKEN), "").0 == 200,
    );
    let (_, sockets_after) = fds_of(pid);
    let log = h.daemon.stderr();
    let pressure = log.matches("peer endpoint under pressure").count();
    eprintln!(
        "flood figures: daemon fds {fds_before} before, {fds_flood} under 1,100 connections \
         ({held} connections held), {fds_peak} after a restart and a recovery, sockets back to \
         {sockets_after} (from {sockets_before}); {pressure} pressure lines in {flood_secs:.0}s"
    );
    assert!(held <= 256 + 4, "held {held} connections");
    assert!(fds_peak < 1024 - 128, "{fds_peak} descriptors open");
    assert!(pressure >= 1, "the flood is logged:\n{log}");
    assert!(
        (pressure as f64) <= flood_secs / 10.0 + 2.0,
        "{pressure} lines in {flood_secs:.0}s: more than one per interval"
    );
    assert!(!log.contains("Too many open files"), "{log}");
}
