//! The one fixture builder for stackd's integration tests.
//!
//! Every file in `tests/` does `mod common;` and builds its world from here:
//! a private `dbus-daemon` ([`Bus`]), a temp dir with compose projects and a
//! config ([`TestEnv`]), a running `stackd` that told us it is ready
//! ([`Daemon`]), the `stackctl`/`busctl` callers, and Docker helpers over a
//! locally built test image ([`ensure_image`]). Tests use real parts; a part
//! that is missing skips the test, or fails it under `CI=true` ([`require`]).
//!
//! Cleanup is by Drop, so it also happens when a test panics: declare
//! `env`, then `bus`, then `daemon`, and they go away in the reverse order
//! (the daemon first, the project containers last). Set
//! `STACKD_TEST_KEEP=1` to keep a failed test's temp dir for a look.

// The fixtures are a test binary's module: `pub` is their surface to the
// test files, which no other crate sees; and their unwraps are the tests'.
#![allow(unreachable_pub, clippy::unwrap_used)]
// Each test binary compiles this whole module but uses only part of it;
// without this every binary would warn about the helpers it does not call.
#![allow(dead_code)]

mod image;
pub use image::busybox_static;
pub mod loopback;
pub mod moves;

use std::ffi::OsStr;
use std::fmt::{self, Write as _};
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The host name every test config gives the daemon.
pub const HOST: &str = "testhost";
/// How long `Daemon::start` waits for `READY=1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Upper bound for any one command the harness runs (docker, stackctl, ...),
/// so a hung command fails the test instead of hanging the run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(180);

/// The label Compose (v1 and v2) puts on containers, networks and volumes.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";

// ---------------------------------------------------------------------------
// Real parts: present, or skip (fail under CI)
// ---------------------------------------------------------------------------

/// True when running under CI (`CI=true`), where a missing part is a failure.
pub fn in_ci() -> bool {
    matches!(std::env::var("CI").as_deref(), Ok("true" | "1"))
}

/// Checks that a real part the test needs is there. When it is not: under
/// `CI=true` panic saying how to install it, otherwise print a SKIP line and
/// return false so the test can `return`.
#[track_caller]
pub fn require(part: &str, ok: bool, how: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        !in_ci(),
        "{part} is missing and CI=true requires it (install: {how})"
    );
    skip_line(&format!("SKIP: {part} is missing (install: {how})"));
    false
}

/// Written to the terminal past libtest's capture (which takes only what the
/// print macros write), so a plain `cargo test` run shows every skip.
pub fn skip_line(line: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "{line}");
}

/// Docker engine answering, a Compose command, and a static busybox for the
/// test image. Call first in every test that touches Docker:
/// `if !common::have_docker() { return; }`.
#[track_caller]
pub fn have_docker() -> bool {
    static ENGINE: OnceLock<bool> = OnceLock::new();
    let engine = *ENGINE.get_or_init(|| {
        try_run(
            Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
            Duration::from_secs(30),
        )
        .is_ok_and(|out| out.success())
    });
    require(
        "the Docker engine (`docker info` does not answer)",
        engine,
        "apt-get install docker.io, then `service docker start` or run dockerd; .ci/run does both",
    ) && require(
        "Compose (`docker compose` or `docker-compose`)",
        compose_command().is_some(),
        "apt-get install docker-compose",
    ) && require(
        "a static busybox at /bin/busybox (for the test image)",
        busybox_static().is_ok(),
        "apt-get install busybox-static",
    )
}

/// The checks that build a release, packages or a Debian root run only
/// with `STACKD_HEAVY_TESTS=1` (`.ci/run` sets it; under `CI=true` a
/// missing switch is a failure). `what` names them in the SKIP line.
#[track_caller]
pub fn heavy(what: &str) -> bool {
    const HEAVY: &str = "STACKD_HEAVY_TESTS";
    if std::env::var(HEAVY).as_deref() == Ok("1") {
        return true;
    }
    assert!(
        !in_ci(),
        "CI=true runs {what}: set {HEAVY}=1 (.ci/run does)"
    );
    skip_line(&format!("SKIP: {what} run with {HEAVY}=1"));
    false
}

/// A debootstrapped Debian 12 root (`scripts/debian-rootfs FLAVOR`:
/// `minbase`, or `systemd` that boots with systemd as PID 1), made once and
/// cached under target/packaging/, as a local image
/// `stackd-test/bookworm-FLAVOR:<tarball time stamp>`: a rebuilt tarball is
/// imported again. Heavy: call after [`heavy`].
pub fn debian_root_image(flavor: &str) -> String {
    let tarball = run(
        Command::new(repo().join("scripts/debian-rootfs"))
            .arg(flavor)
            .current_dir(repo()),
        Duration::from_secs(1800),
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned();
    let tarball = repo().join(tarball);
    let stamp = tarball
        .metadata()
        .and_then(|m| m.modified())
        .expect("tarball time stamp")
        .duration_since(UNIX_EPOCH)
        .expect("time stamp after 1970")
        .as_secs();
    let image = format!("stackd-test/bookworm-{flavor}:{stamp}");
    let present = try_run(
        Command::new("docker").args(["image", "inspect", &image]),
        Duration::from_secs(30),
    )
    .is_ok_and(|o| o.success());
    if !present {
        run(
            Command::new("docker")
                .arg("import")
                .arg(&tarball)
                .arg(&image),
            Duration::from_secs(600),
        )
        .expect_success();
    }
    image
}

/// One raw HTTP/1.1 exchange with a peer endpoint (`Connection: close`):
/// (status, head, body); status 0 when no status line came back (the
/// server closed the connection). A read error ends the answer where it
/// stopped, as a client would see it.
pub fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    content_type: &str,
    body: &str,
) -> (u16, String, String) {
    use std::io::Write as _;
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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

/// The checkout (where Cargo.toml is).
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `dbus-daemon` for [`Bus`] and `busctl` for [`busctl`].
#[track_caller]
pub fn have_bus() -> bool {
    require(
        "dbus-daemon",
        which("dbus-daemon").is_some(),
        "apt-get install dbus-daemon",
    ) && require(
        "busctl",
        which("busctl").is_some(),
        "apt-get install systemd (Debian ships busctl in the systemd package)",
    )
}

/// `setpriv`, for running a caller as another uid ([`stackctl_as`]).
#[track_caller]
pub fn have_setpriv() -> bool {
    require(
        "setpriv",
        which("setpriv").is_some(),
        "apt-get install util-linux",
    )
}

/// The first `name` on `$PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// How to run Compose here: the flavor `STACKD_TEST_COMPOSE` names (`v2`:
/// `docker compose`, `v1`: `docker-compose`), else `docker compose` when
/// the plugin answers, else `docker-compose`; None when the one asked for,
/// or both, do not answer. The daemons the harness starts are configured
/// with the same command ([`compose_config_line`]), so one environment
/// variable runs a whole test binary under one flavor.
pub fn compose_command() -> Option<&'static [String]> {
    static COMMAND: OnceLock<Option<Vec<String>>> = OnceLock::new();
    COMMAND
        .get_or_init(|| {
            let answers = |program: &[&str]| {
                try_run(
                    Command::new(program[0]).args(&program[1..]).arg("version"),
                    Duration::from_secs(60),
                )
                .is_ok_and(|out| out.success())
            };
            let candidates: &[&[&str]] = match std::env::var("STACKD_TEST_COMPOSE").as_deref() {
                Ok("v1") => &[&["docker-compose"]],
                Ok("v2") => &[&["docker", "compose"]],
                Ok("") | Err(_) => &[&["docker", "compose"], &["docker-compose"]],
                Ok(other) => panic!("STACKD_TEST_COMPOSE={other:?}: expected v1 or v2"),
            };
            candidates
                .iter()
                .find(|program| answers(program))
                .map(|program| program.iter().map(|w| w.to_string()).collect())
        })
        .as_deref()
}

/// The `compose_command = "..."` line for a test daemon's config: the
/// command [`compose_command`] chose, so the daemon and the test agree.
/// Empty when there is no Compose (the test has already skipped or failed).
pub fn compose_config_line() -> String {
    compose_command().map_or_else(String::new, |words| {
        format!("compose_command = {}\n", toml_str(&words.join(" ")))
    })
}

// ---------------------------------------------------------------------------
// Running commands
// ---------------------------------------------------------------------------

/// What a command did: exit code (128 + signal when killed), stdout, stderr.
#[derive(Debug, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    /// The command line, for messages.
    pub command: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Panics with the whole output unless the command succeeded.
    #[track_caller]
    pub fn expect_success(self) -> Self {
        assert!(self.success(), "{self}");
        self
    }

    /// Panics with the whole output unless the command failed.
    #[track_caller]
    pub fn expect_failure(self) -> Self {
        assert!(!self.success(), "expected a failure: {self}");
        self
    }
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} exited with code {}", self.command, self.code)?;
        writeln!(f, "--- stdout\n{}", self.stdout.trim_end())?;
        write!(f, "--- stderr\n{}", self.stderr.trim_end())
    }
}

/// Runs `cmd` to the end (stdin closed) and collects its output; panics if it
/// cannot be started or runs longer than `timeout`.
#[track_caller]
pub fn run(cmd: &mut Command, timeout: Duration) -> Output {
    match try_run(cmd, timeout) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    }
}

/// Like [`run`], but reports trouble instead of panicking (for Drop).
///
/// The command runs in a process group of its own, and a timeout kills the
/// whole group: a script's children (a cargo build under
/// `scripts/build-packages`) must not outlive it and collide with the next
/// attempt.
pub fn try_run(cmd: &mut Command, timeout: Duration) -> Result<Output, String> {
    use std::os::unix::process::CommandExt as _;
    let command = format!("{cmd:?}");
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {command}: {e}"))?;
    let stdout = read_all(child.stdout.take());
    let stderr = read_all(child.stderr.take());
    let Some(status) = wait_timeout(&mut child, timeout) else {
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!("{command} did not finish within {timeout:?}"));
    };
    Ok(Output {
        code: exit_code(status),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
        command,
    })
}

fn read_all(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Waits for `child` to exit; None when `timeout` passes first.
fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Polls `f` every 200 ms until it returns true; panics naming `what` when
/// `timeout` passes first.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        thread::sleep(Duration::from_millis(200));
    }
}

// ---------------------------------------------------------------------------
// The test image
// ---------------------------------------------------------------------------

/// The test image's name (`stackd-test/busybox:<recipe hash>`), built
/// first unless Docker has it; see `tests/common/image.rs`, the one builder
/// the library's tests, this harness and the benches share.
#[track_caller]
pub fn ensure_image() -> &'static str {
    image::test_image()
}

/// 64-bit FNV-1a: a stable hash for project prefixes (std's `DefaultHasher`
/// may change between Rust releases).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

// ---------------------------------------------------------------------------
// Bus: a private dbus-daemon
// ---------------------------------------------------------------------------

/// A private `dbus-daemon` listening on a unix socket in the test's temp
/// dir. Any uid may connect (tests call stackd as uid 65534 too). Killed on
/// Drop.
pub struct Bus {
    child: Child,
    address: String,
    log: PathBuf,
}

impl Bus {
    /// Starts a bus in `dir/bus/` and returns once it accepts connections.
    #[track_caller]
    pub fn start(dir: &Path) -> Bus {
        Bus::start_with(dir, bus_config)
            .unwrap_or_else(|log| panic!("dbus-daemon did not start; its log:\n{log}"))
    }

    /// A bus like the system bus: Debian's default policy from
    /// /usr/share/dbus-1/system.conf (method calls denied unless a policy
    /// file allows them, names owned by nobody) plus `<include>` of
    /// `policy`. Err holds dbus-daemon's log when it refuses the config.
    pub fn start_system_like(dir: &Path, policy: &Path) -> Result<Bus, String> {
        let policy = policy.to_path_buf();
        Bus::start_with(dir, move |socket| system_like_config(socket, &policy))
    }

    /// A bus in `dir/bus/` on the config `config(socket)` gives; Err holds
    /// dbus-daemon's log when it did not start.
    pub fn start_with(dir: &Path, config: impl FnOnce(&Path) -> String) -> Result<Bus, String> {
        let dir = dir.join("bus");
        fs::create_dir_all(&dir).expect("bus dir");
        // Other uids must reach the socket: the dir is 0755 and dbus-daemon
        // makes the socket itself 0777.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod bus dir");
        let socket = dir.join("socket");
        let config_file = dir.join("bus.conf");
        fs::write(&config_file, config(&socket)).expect("bus config");
        let log = dir.join("dbus-daemon.log");
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config_file.display()))
            .args(["--nofork", "--nopidfile", "--nosyslog", "--print-address=1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("bus log"))
            .spawn()
            .map_err(|e| format!("cannot start dbus-daemon: {e}"))?;

        // dbus-daemon prints its address once it listens; EOF means it died.
        let stdout = child.stdout.take().expect("dbus-daemon stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let printed = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let address = format!("unix:path={}", socket.display());
        let bus = Bus {
            child,
            address,
            log,
        };
        if printed.starts_with("unix:") {
            Ok(bus)
        } else {
            Err(bus.log())
        }
    }

    /// The bus address, for `DBUS_SESSION_BUS_ADDRESS` or `busctl --address=`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// What dbus-daemon wrote to stderr.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn bus_config(socket: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<!-- Written by tests/common: a private test bus. -->
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <!-- Without this only the bus's own uid may connect; tests call the
         daemon as uid 65534 as well. stackd itself decides who may change
         state, so the bus lets everything through. -->
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
  </policy>
</busconfig>
"#,
        xml_escape(&socket.display().to_string())
    )
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ---------------------------------------------------------------------------
// TestEnv: temp dir, compose projects, config, boot id
// ---------------------------------------------------------------------------

/// One test's world on disk, plus a project-name prefix of its own so tests
/// can run in parallel. Drop removes every container, network and volume of
/// a Compose project starting with that prefix, then the temp dir.
pub struct TestEnv {
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    name: String,
    prefix: String,
}

impl TestEnv {
    /// Layout of `root` (0755, so uid 65534 can reach the bus socket):
    /// `compose/`, `state/`, `run/` (0700, the daemon's `XDG_RUNTIME_DIR`),
    /// `boot_id`, and `stackd.toml` holding the base config.
    pub fn new(test_name: &str) -> TestEnv {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let seed = format!("{test_name}/{}/{seq}/{nanos}", std::process::id());
        // Lowercase letters and digits only: valid for Compose v1 and v2.
        let prefix = format!("st{:08x}", fnv1a(seed.as_bytes()) & 0xffff_ffff);

        let dir = tempfile::Builder::new()
            .prefix("stackd-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_path_buf();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).expect("chmod temp dir");
        for (sub, mode) in [("compose", 0o755), ("state", 0o755), ("run", 0o700)] {
            fs::create_dir(root.join(sub)).expect("env dir");
            fs::set_permissions(root.join(sub), fs::Permissions::from_mode(mode))
                .expect("chmod env dir");
        }
        let env = TestEnv {
            dir: Some(dir),
            root,
            name: test_name.to_owned(),
            prefix,
        };
        env.new_boot();
        env.write_config("");
        env
    }

    /// The temp dir.
    pub fn dir(&self) -> &Path {
        &self.root
    }
    pub fn compose_dir(&self) -> PathBuf {
        self.root.join("compose")
    }
    pub fn state_dir(&self) -> PathBuf {
        self.root.join("state")
    }
    /// The daemon's `XDG_RUNTIME_DIR` (its private socket is under it).
    pub fn run_dir(&self) -> PathBuf {
        self.root.join("run")
    }
    pub fn boot_id_file(&self) -> PathBuf {
        self.root.join("boot_id")
    }
    pub fn config_path(&self) -> PathBuf {
        self.root.join("stackd.toml")
    }
    /// This test's project prefix, e.g. `st1a2b3c4d`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The full service/project name for `name`: `<prefix>-<name>`.
    pub fn project(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// Writes `compose/<project>/docker-compose.yml` and returns the project
    /// (= service) name, `self.project(name)`.
    pub fn add_project(&self, name: &str, compose_yaml: &str) -> String {
        let project = self.project(name);
        let dir = self.compose_dir().join(&project);
        fs::create_dir_all(&dir).expect("project dir");
        fs::write(dir.join("docker-compose.yml"), compose_yaml).expect("compose file");
        project
    }

    /// [`add_project`](Self::add_project) with [`sleeper_compose`] on the
    /// test image (built if needed).
    pub fn add_sleeper(&self, name: &str) -> String {
        self.add_project(name, &sleeper_compose(ensure_image()))
    }

    /// Writes `stackd.toml`: `compose_dir`, `state_dir`, `boot_id_file` and
    /// `host = "testhost"`, then `extra` (top-level keys first, then tables
    /// such as `[services.<project>]`). Returns the file's path.
    pub fn write_config(&self, extra: &str) -> PathBuf {
        let text = format!(
            "# Written by tests/common for test {}.\n\
             host = {}\ncompose_dir = {}\nstate_dir = {}\nboot_id_file = {}\n{}\n{extra}",
            self.name,
            toml_str(HOST),
            toml_str(&self.compose_dir().display().to_string()),
            toml_str(&self.state_dir().display().to_string()),
            toml_str(&self.boot_id_file().display().to_string()),
            compose_config_line(),
        );
        let path = self.config_path();
        fs::write(&path, text).expect("stackd.toml");
        path
    }

    /// Writes a fresh boot id, as a reboot would, and returns it.
    pub fn new_boot(&self) -> String {
        let id = random_uuid();
        fs::write(self.boot_id_file(), format!("{id}\n")).expect("boot_id");
        id
    }

    /// Runs Compose by hand on a project under `compose/` (a project someone
    /// started outside stackd, say): `-p <project> -f <its compose file>`.
    #[track_caller]
    pub fn compose(&self, project: &str, args: &[&str]) -> Output {
        let dir = self.compose_dir().join(project);
        let file = [
            "compose.yaml",
            "compose.yml",
            "docker-compose.yml",
            "docker-compose.yaml",
        ]
        .iter()
        .map(|f| dir.join(f))
        .find(|f| f.exists())
        .unwrap_or_else(|| panic!("no compose file in {}", dir.display()));
        let command = compose_command().expect("no Compose command; call have_docker() first");
        let mut cmd = Command::new(&command[0]);
        cmd.args(&command[1..])
            .arg("-p")
            .arg(project)
            .arg("-f")
            .arg(&file)
            .args(args)
            .current_dir(&dir);
        run(&mut cmd, COMMAND_TIMEOUT)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        remove_projects(&format!("{}-", self.prefix));
        if thread::panicking() && std::env::var_os("STACKD_TEST_KEEP").is_some() {
            if let Some(dir) = self.dir.take() {
                eprintln!("STACKD_TEST_KEEP: kept {}", dir.keep().display());
            }
        }
    }
}

/// Removes the containers, networks and volumes of every Compose project
/// whose name starts with `prefix`. Never panics (it runs in Drop).
pub fn remove_projects(prefix: &str) {
    let list = |args: &[&str]| -> Vec<String> {
        let Ok(out) = try_run(Command::new("docker").args(args), COMMAND_TIMEOUT) else {
            return Vec::new();
        };
        out.stdout
            .lines()
            .filter_map(|line| {
                let (id, names) = line.split_once(' ')?;
                names
                    .split(' ')
                    .any(|n| n.starts_with(prefix))
                    .then(|| id.to_owned())
            })
            .collect()
    };
    let remove = |args: &[&str], ids: Vec<String>| {
        if !ids.is_empty() {
            let _ = try_run(Command::new("docker").args(args).args(ids), COMMAND_TIMEOUT);
        }
    };
    let label = format!("{{{{.Label \"{PROJECT_LABEL}\"}}}}");
    let filter = format!("label={PROJECT_LABEL}");
    remove(
        &["rm", "--force", "--volumes"],
        list(&[
            "ps",
            "--all",
            "--filter",
            &filter,
            "--format",
            &format!("{{{{.ID}}}} {label}"),
        ]),
    );
    // Networks and volumes by label or by name (`<project>_default`).
    remove(
        &["network", "rm"],
        list(&[
            "network",
            "ls",
            "--format",
            &format!("{{{{.ID}}}} {{{{.Name}}}} {label}"),
        ]),
    );
    // A volume's id is its name, so the name is listed twice.
    remove(
        &["volume", "rm", "--force"],
        list(&[
            "volume",
            "ls",
            "--format",
            &format!("{{{{.Name}}}} {{{{.Name}}}} {label}"),
        ]),
    );
}

/// A project whose deploy fails at once: its image would have to be pulled
/// from a registry address where nothing listens.
pub fn failing_compose() -> String {
    r#"version: "2.4"
services:
  main:
    image: 127.0.0.1:9/stackd-test/absent:1
    command: ["sleep", "3600"]
"#
    .to_string()
}

/// A compose file (format 2.4, which Compose v1 and v2 both accept) with one
/// service `main` running `sleep 3600`, never pulled, stopping at once.
pub fn sleeper_compose(image: &str) -> String {
    format!(
        r#"version: "2.4"
services:
  main:
    image: {image}
    pull_policy: never
    command: ["sleep", "3600"]
    # tini forwards SIGTERM to sleep (PID 1 ignores it otherwise).
    init: true
    stop_grace_period: 1s
"#
    )
}

/// A project whose `compose up -d` takes ~8 s: `main` waits for `slow` to
/// turn healthy, which it does only after a while.
pub fn slow_compose(image: &str) -> String {
    format!(
        r#"version: "2.4"
services:
  slow:
    image: {image}
    pull_policy: never
    command: ["sh", "-c", "sleep 8; touch /tmp/ready; exec sleep 3600"]
    init: true
    stop_grace_period: 1s
    healthcheck:
      test: ["CMD", "test", "-f", "/tmp/ready"]
      interval: 1s
      timeout: 1s
      retries: 3
      start_period: 60s
  main:
    image: {image}
    pull_policy: never
    command: ["sleep", "3600"]
    init: true
    stop_grace_period: 1s
    depends_on:
      slow:
        condition: service_healthy
"#
    )
}

/// A TOML basic string.
pub fn toml_str(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A random UUID from the kernel, shaped like `/proc/sys/kernel/random/boot_id`.
pub fn random_uuid() -> String {
    fs::read_to_string("/proc/sys/kernel/random/uuid")
        .expect("read /proc/sys/kernel/random/uuid")
        .trim()
        .to_owned()
}

// ---------------------------------------------------------------------------
// Daemon: a running stackd
// ---------------------------------------------------------------------------

static DAEMON_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running `stackd --user` that has sent `READY=1`. Its stdout and stderr
/// go to a log file in the temp dir; every `sd_notify` datagram is recorded.
/// Killed on Drop; when the test is panicking, Drop prints the daemon's log.
pub struct Daemon {
    child: Child,
    spawned: Instant,
    ready_after: Duration,
    log: PathBuf,
    notes: Arc<Mutex<Vec<(Instant, String)>>>,
    stop_reader: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Daemon {
    /// `stackd --user --config <env>/stackd.toml` on `bus`; returns after
    /// `READY=1`, panicking with the daemon's log if it exits first or takes
    /// longer than [`READY_TIMEOUT`].
    #[track_caller]
    pub fn start(env: &TestEnv, bus: &Bus) -> Daemon {
        Daemon::start_with(env, bus, &[], &[])
    }

    /// [`start`](Self::start) with extra environment (`DOCKER_HOST`, ...) and
    /// extra arguments (`--host NAME`, ...). A `--config` among `extra_args`
    /// replaces the env's config file.
    #[track_caller]
    pub fn start_with(
        env: &TestEnv,
        bus: &Bus,
        extra_env: &[(&str, &str)],
        extra_args: &[&str],
    ) -> Daemon {
        let config = env.config_path();
        let mut args: Vec<&OsStr> = vec![OsStr::new("--user")];
        if !extra_args
            .iter()
            .any(|a| *a == "--config" || a.starts_with("--config="))
        {
            args.extend([OsStr::new("--config"), config.as_os_str()]);
        }
        args.extend(extra_args.iter().map(OsStr::new));
        Daemon::start_program(
            Path::new(env!("CARGO_BIN_EXE_stackd")),
            &args,
            env,
            bus,
            extra_env,
        )
    }

    /// Starts any program the way stackd is started (the harness's own tests
    /// use a stand-in) and waits for `READY=1`.
    #[track_caller]
    pub fn start_program(
        program: &Path,
        args: &[&OsStr],
        env: &TestEnv,
        bus: &Bus,
        extra_env: &[(&str, &str)],
    ) -> Daemon {
        let seq = DAEMON_SEQ.fetch_add(1, Ordering::Relaxed);
        let socket_path = env.dir().join(format!("notify-{seq}.sock"));
        let socket = UnixDatagram::bind(&socket_path).expect("bind NOTIFY_SOCKET");
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("notify socket timeout");
        let notes = Arc::new(Mutex::new(Vec::new()));
        let stop_reader = Arc::new(AtomicBool::new(false));
        let reader = {
            let notes = Arc::clone(&notes);
            let stop = Arc::clone(&stop_reader);
            thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                        notes.lock().unwrap().push((Instant::now(), text));
                    }
                }
            })
        };

        let log = env.dir().join(format!("daemon-{seq}.log"));
        let log_file = File::create(&log).expect("daemon log");
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
            .env("XDG_RUNTIME_DIR", env.run_dir())
            .env("XDG_STATE_HOME", env.dir().join("xdg-state"))
            .env("XDG_CONFIG_HOME", env.dir().join("xdg-config"))
            .env("NOTIFY_SOCKET", &socket_path)
            // Whatever started the tests may run under systemd: the daemon
            // must not inherit its journal, sockets or watchdog.
            .env_remove("JOURNAL_STREAM")
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_FDNAMES")
            .env_remove("LISTEN_PID")
            .env_remove("WATCHDOG_USEC")
            .env_remove("WATCHDOG_PID")
            .env_remove("INVOCATION_ID")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("daemon log"))
            .stderr(log_file);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "stackd=debug,info");
        }
        cmd.envs(extra_env.iter().copied());
        let spawned = Instant::now();
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));

        let mut daemon = Daemon {
            child,
            spawned,
            ready_after: Duration::ZERO,
            log,
            notes,
            stop_reader,
            reader: Some(reader),
        };
        // Dropping `daemon` on the way out of a panic here kills the child.
        daemon.ready_after = daemon.wait_ready();
        daemon
    }

    #[track_caller]
    fn wait_ready(&mut self) -> Duration {
        let deadline = self.spawned + READY_TIMEOUT;
        loop {
            let ready = self
                .notes
                .lock()
                .unwrap()
                .iter()
                .find(|(_, text)| text.lines().any(|l| l == "READY=1"))
                .map(|(at, _)| *at);
            if let Some(at) = ready {
                return at.duration_since(self.spawned);
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the daemon exited ({status}) before READY=1\n{}",
                    self.report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the daemon sent no READY=1 within {READY_TIMEOUT:?}\n{}",
                self.report()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn report(&self) -> String {
        format!(
            "--- notifications\n{}\n--- daemon log ({})\n{}",
            self.notifications().join("\n--\n"),
            self.log.display(),
            self.stderr().trim_end()
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Time from spawn to the `READY=1` datagram.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// Every `sd_notify` datagram so far, in order (a datagram may hold several
    /// `KEY=VALUE` lines).
    pub fn notifications(&self) -> Vec<String> {
        self.notes
            .lock()
            .unwrap()
            .iter()
            .map(|(_, text)| text.clone())
            .collect()
    }

    /// Waits for a notify line (from any datagram so far or to come) for
    /// which `pred` holds, and returns it; panics naming `what` on timeout.
    #[track_caller]
    pub fn wait_notify(
        &self,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut found = None;
        let deadline = Instant::now() + timeout;
        while found.is_none() {
            found = self
                .notifications()
                .iter()
                .flat_map(|text| text.lines())
                .find(|line| pred(line))
                .map(str::to_owned);
            assert!(
                found.is_some() || Instant::now() < deadline,
                "timed out after {timeout:?} waiting for notification {what}\n{}",
                self.report()
            );
            thread::sleep(Duration::from_millis(20));
        }
        found.unwrap_or_default()
    }

    /// What the daemon wrote to stderr (and stdout) so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The exit status if the daemon has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait (30 s at most, else SIGKILL and panic) and return
    /// the exit status.
    #[track_caller]
    pub fn stop(&mut self) -> ExitStatus {
        if let Some(status) = self.exited() {
            return status;
        }
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        kill(pid, Signal::SIGTERM).expect("SIGTERM the daemon");
        let Some(status) = wait_timeout(&mut self.child, Duration::from_secs(30)) else {
            self.kill();
            panic!(
                "the daemon did not exit within 30 s of SIGTERM\n{}",
                self.report()
            );
        };
        status
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill();
        self.stop_reader.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        if thread::panicking() {
            eprintln!("{}", self.report());
        }
    }
}

/// Runs the stackd binary once (`--check-config`, `--version`, ...).
#[track_caller]
pub fn stackd(args: &[&str]) -> Output {
    run(
        Command::new(env!("CARGO_BIN_EXE_stackd")).args(args),
        COMMAND_TIMEOUT,
    )
}

// ---------------------------------------------------------------------------
// Callers: stackctl and busctl, as root or as another uid
// ---------------------------------------------------------------------------

/// `stackctl --user ARGS` against the env's daemon on `bus`.
#[track_caller]
pub fn stackctl(env: &TestEnv, bus: &Bus, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
    cmd.arg("--user")
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .env("XDG_RUNTIME_DIR", env.run_dir());
    run(&mut cmd, COMMAND_TIMEOUT)
}

/// `stackctl --user ARGS` with no session bus in its environment: it
/// reaches the daemon over the private socket in `$XDG_RUNTIME_DIR/stackd`.
#[track_caller]
pub fn stackctl_private(env: &TestEnv, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
    cmd.arg("--user")
        .args(args)
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env("XDG_RUNTIME_DIR", env.run_dir());
    run(&mut cmd, COMMAND_TIMEOUT)
}

/// `stackctl --user --output json ARGS`, which must succeed; its stdout
/// parsed.
#[track_caller]
pub fn stackctl_json(env: &TestEnv, bus: &Bus, args: &[&str]) -> serde_json::Value {
    let args: Vec<&str> = ["--output", "json"].iter().chain(args).copied().collect();
    let out = stackctl(env, bus, &args).expect_success();
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

/// The highest task id the daemon knows (0 when none): later tasks are
/// the ones a step of the test caused.
pub fn max_task_id(env: &TestEnv, bus: &Bus) -> u64 {
    stackctl_json(env, bus, &["tasks", "-n", "1000"])
        .as_array()
        .expect("tasks as a JSON array")
        .iter()
        .filter_map(|t| t["id"].as_u64())
        .max()
        .unwrap_or(0)
}

/// Kills the main process of `container` (name or id) by its host PID: a
/// crash as Docker sees one, a `die` with no `kill` event before it
/// (`docker kill` through the API would be a person's stop).
#[track_caller]
pub fn crash(container: &str) {
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", container])
        .expect_success()
        .stdout
        .trim()
        .to_string();
    assert!(pid.parse::<u32>().is_ok_and(|p| p > 0), "pid {pid:?}");
    run(Command::new("kill").args(["-9", &pid]), COMMAND_TIMEOUT).expect_success();
}

/// `stackctl --user ARGS` as `uid` (with gid `uid` and no supplementary
/// groups), through `setpriv`. It gets only the bus, no `XDG_RUNTIME_DIR`:
/// the daemon's is root's (0700), as another user's would be.
#[track_caller]
pub fn stackctl_as(uid: u32, bus: &Bus, args: &[&str]) -> Output {
    let mut cmd = as_uid(uid);
    cmd.arg(env!("CARGO_BIN_EXE_stackctl"))
        .arg("--user")
        .args(args)
        .env("DBUS_SESSION_BUS_ADDRESS", bus.address())
        .env_remove("XDG_RUNTIME_DIR");
    run(&mut cmd, COMMAND_TIMEOUT)
}

/// Waits until `stackctl notify-agent` holds its name on `bus` (it adds its
/// match rule for the `Alert` signal as it connects), then a moment more so
/// the rule is in place before the test raises an alert.
pub fn wait_for_notify_agent(bus: &Bus) {
    wait_until(Duration::from_secs(10), "the agent subscribes", || {
        busctl(bus, &["list", "--no-pager"])
            .stdout
            .contains("stackctl")
    });
    std::thread::sleep(Duration::from_millis(500));
}

/// `busctl --address=<bus> ARGS`.
#[track_caller]
pub fn busctl(bus: &Bus, args: &[&str]) -> Output {
    let mut cmd = Command::new("busctl");
    cmd.arg(format!("--address={}", bus.address())).args(args);
    run(&mut cmd, COMMAND_TIMEOUT)
}

/// The object path of a service, escaped as the daemon (and systemd) does.
pub fn service_path(name: &str) -> String {
    let escaped: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect();
    format!("/org/stackd1/service/{escaped}")
}

/// The arguments of `busctl call` for `Manager.StartService(name)`.
pub fn start_service_call(name: &str) -> Vec<&str> {
    vec![
        "call",
        "org.stackd1",
        "/org/stackd1",
        "org.stackd1.Manager",
        "StartService",
        "s",
        name,
    ]
}

/// `busctl ARGS` (as `uid` when given), which must fail: the D-Bus error
/// name of the reply, read from busctl's debug log (`error-name=...`);
/// without it busctl prints only the message.
#[track_caller]
pub fn busctl_error_name(uid: Option<u32>, bus: &Bus, args: &[&str]) -> Option<String> {
    let mut cmd = match uid {
        Some(uid) => {
            let mut cmd = as_uid(uid);
            cmd.arg("busctl");
            cmd
        }
        None => Command::new("busctl"),
    };
    cmd.env("SYSTEMD_LOG_LEVEL", "debug")
        .arg(format!("--address={}", bus.address()))
        .args(args);
    let out = run(&mut cmd, COMMAND_TIMEOUT).expect_failure();
    out.stderr
        .lines()
        .filter(|l| l.contains("type=error"))
        .find_map(|l| {
            l.split_once("error-name=")?
                .1
                .split(' ')
                .next()
                .map(str::to_owned)
        })
}

/// `busctl --address=<bus> ARGS` as `uid`, through `setpriv`.
#[track_caller]
pub fn busctl_as(uid: u32, bus: &Bus, args: &[&str]) -> Output {
    let mut cmd = as_uid(uid);
    cmd.arg("busctl")
        .arg(format!("--address={}", bus.address()))
        .args(args);
    run(&mut cmd, COMMAND_TIMEOUT)
}

/// `setpriv --reuid=UID --regid=UID --clear-groups`, program to follow.
fn as_uid(uid: u32) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .env("HOME", "/");
    cmd
}

// ---------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------

/// `docker ARGS`.
#[track_caller]
pub fn docker(args: &[&str]) -> Output {
    run(Command::new("docker").args(args), COMMAND_TIMEOUT)
}

/// One container of a Compose project, as Docker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRow {
    pub id: String,
    /// Without the leading `/`.
    pub name: String,
    /// The Compose service (`com.docker.compose.service`).
    pub service: String,
    /// created, running, paused, restarting, exited, dead...
    pub state: String,
    pub exit_code: i64,
    /// starting, healthy or unhealthy; None without a healthcheck.
    pub health: Option<String>,
}

/// The containers of Compose project `project` (found by label, as stackd
/// does), sorted by name.
#[track_caller]
pub fn containers(project: &str) -> Vec<ContainerRow> {
    let filter = format!("label={PROJECT_LABEL}={project}");
    let ps =
        docker(&["ps", "--all", "--quiet", "--no-trunc", "--filter", &filter]).expect_success();
    let ids: Vec<&str> = ps.stdout.split_whitespace().collect();
    if ids.is_empty() {
        return Vec::new();
    }
    // The JSON, not a --format template: templates fail on keys that are
    // absent (`.State.Health` without a healthcheck). A container removed
    // since `ps` makes inspect fail but the others are still printed.
    let mut args = vec!["inspect"];
    args.extend(&ids);
    let out = docker(&args);
    let json: Vec<serde_json::Value> = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("docker inspect printed no JSON ({e}): {out}"));
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let mut rows: Vec<ContainerRow> = json
        .iter()
        .map(|c| ContainerRow {
            id: text(&c["Id"]),
            name: text(&c["Name"]).trim_start_matches('/').to_owned(),
            service: text(&c["Config"]["Labels"]["com.docker.compose.service"]),
            state: text(&c["State"]["Status"]),
            exit_code: c["State"]["ExitCode"].as_i64().unwrap_or(-1),
            health: c["State"]["Health"]["Status"].as_str().map(str::to_owned),
        })
        .collect();
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

/// How many of `project`'s containers are running.
#[track_caller]
pub fn running(project: &str) -> usize {
    containers(project)
        .iter()
        .filter(|c| c.state == "running")
        .count()
}

// ---------------------------------------------------------------------------
// Two hosts: moving services between daemons
// ---------------------------------------------------------------------------
//
// The "hosts" share this machine's one Docker engine, so every daemon sees
// every Compose project. To tell where a container came from, each host has
// its own compose dir and its own compose file for a service, with the
// Compose service named after the host ([`host_sleeper`]): a container of
// Compose service `main_b` was started by host b.

/// A sleeper as Compose service `main_{host}` that exits 0 when stopped (so
/// a stopped one counts as a finished job, not a failure, in the other
/// host's view of the project); with `ready_after`, a Docker healthcheck
/// that passes that many seconds after the start; with `volume`, that
/// volume line.
pub fn host_sleeper(host: &str, ready_after: Option<u32>, volume: Option<&str>) -> String {
    let mut text = format!(
        "version: \"2.4\"\nservices:\n  main_{host}:\n    image: {}\n    pull_policy: never\n    init: true\n    stop_grace_period: 5s\n",
        ensure_image()
    );
    match ready_after {
        Some(s) => text.push_str(&format!(
            "    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep {s}; touch /tmp/ready; sleep 3600 & wait\"]\n    healthcheck:\n      test: [\"CMD\", \"test\", \"-f\", \"/tmp/ready\"]\n      interval: 1s\n      timeout: 1s\n      retries: 3\n"
        )),
        None => text.push_str(
            "    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; sleep 3600 & wait\"]\n",
        ),
    }
    if let Some(v) = volume {
        text.push_str(&format!("    volumes: [\"{v}\"]\n"));
    }
    text
}

/// Two daemons, hosts a (127.0.0.1) and b (127.0.0.2), each with its own
/// env (compose dir, state, bus) and its own copy of the cluster file,
/// differing only in `host`, `compose_dir` and `boot_id_file`. Declare the
/// env that owns the services' names before it, so its containers are
/// removed after the daemons stop.
pub struct TwoHosts {
    pub envs: Vec<TestEnv>,
    pub clusters: Vec<PathBuf>,
    pub buses: Vec<Bus>,
    pub daemons: Vec<Daemon>,
    pub port: u16,
}

impl TwoHosts {
    /// `services` is (name, handoff, compose file on a, on b); each is
    /// placed on a, with `auto_start = false`.
    #[track_caller]
    pub fn start(token: &str, test: &str, services: &[(&str, &str, String, String)]) -> TwoHosts {
        let envs: Vec<TestEnv> = ["a", "b"]
            .iter()
            .map(|h| TestEnv::new(&format!("{test}_{h}")))
            .collect();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let token_file = envs[0].dir().join("peer.token");
        fs::write(&token_file, format!("{token}\n")).expect("token");
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut shared = format!(
            "[peer]\ntoken_file = {}\ntimeout = \"2s\"\n\n[hosts.a]\npeer = \"http://127.0.0.1:{port}\"\n[hosts.b]\npeer = \"http://127.0.0.2:{port}\"\n",
            toml_str(&token_file.display().to_string())
        );
        for (name, handoff, on_a, on_b) in services {
            shared.push_str(&format!(
                "\n[services.{name}]\nhost = \"a\"\nauto_start = false\nhandoff = \"{handoff}\"\nstart_timeout = \"60s\"\n"
            ));
            for (env, text) in envs.iter().zip([on_a, on_b]) {
                let dir = env.compose_dir().join(name);
                fs::create_dir_all(&dir).expect("project dir");
                fs::write(dir.join("docker-compose.yml"), text).expect("compose file");
            }
        }
        let clusters: Vec<PathBuf> = envs
            .iter()
            .zip(["a", "b"])
            .map(|(env, host)| {
                let path = env.dir().join("cluster.toml");
                let text = format!(
                    "host = \"{host}\"\ncompose_dir = {}\nboot_id_file = {}\n{}\n{shared}",
                    toml_str(&env.compose_dir().display().to_string()),
                    toml_str(&env.boot_id_file().display().to_string()),
                    compose_config_line(),
                );
                fs::write(&path, text).expect("cluster file");
                path
            })
            .collect();
        let buses: Vec<Bus> = envs.iter().map(|e| Bus::start(e.dir())).collect();
        let daemons = ["a", "b"]
            .iter()
            .zip(envs.iter().zip(&buses).zip(&clusters))
            .map(|(h, ((env, bus), cluster))| {
                let cluster = cluster.display().to_string();
                Daemon::start_with(env, bus, &[], &["--config", &cluster, "--host", h])
            })
            .collect();
        TwoHosts {
            envs,
            clusters,
            buses,
            daemons,
            port,
        }
    }

    /// `stackctl -c CLUSTER ARGS` against host `i` (0 = a, 1 = b) over D-Bus.
    #[track_caller]
    pub fn ctl(&self, i: usize, args: &[&str]) -> Output {
        let cluster = self.clusters[i].display().to_string();
        let mut all = vec!["-c", cluster.as_str()];
        all.extend(args);
        stackctl(&self.envs[i], &self.buses[i], &all)
    }

    /// Host `i`'s peer endpoint, `127.0.0.N:PORT`.
    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.{}:{}", i + 1, self.port)
    }
}

/// A bus like the system bus: its default policy is the one in Debian's
/// /usr/share/dbus-1/system.conf (method calls denied unless a policy file
/// allows them, names owned by nobody), plus `include`.
fn system_like_config(socket: &Path, include: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Peer"/>
  </policy>
  <include>{include}</include>
</busconfig>
"#,
        socket = socket.display(),
        include = include.display()
    )
}
