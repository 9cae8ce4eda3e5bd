//! stackctl about another host of the cluster (`-H`, `--all-hosts`,
//! `logs -H`) goes through the local daemon, which holds the peer token and
//! reads its own cluster file: so it works in `--user` mode without `-c`,
//! and for a member of the daemon's `admin_group` who may not read the
//! 0600 token file, while a stranger is refused as for local changes.
//!
//! Two real daemons on 127.0.0.1 (a) and 127.0.0.2 (b) share one Docker
//! engine. Host a runs as a system daemon (not `--user`, so `admin_group`
//! counts) on a private bus handed to it as the system bus, inside its own
//! mount namespace with a tmpfs on /run/stackd so its private socket is
//! its own. Host b runs in `--user` mode on its own bus.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    have_bus, have_docker, have_setpriv, running, toml_str, wait_until, Bus, Daemon, Output,
    TestEnv,
};

const TOKEN: &str = "remote-test-token-0123456789abcdef";
/// The daemon's `admin_group`: group `staff` (gid 50) exists on Debian.
const ADMIN_GROUP: (&str, &str) = ("staff", "50");
/// A group that gives nothing: `users`.
const OTHER_GROUP: &str = "100";
const NOBODY: u32 = 65534;

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

/// The two hosts; fields drop in order: daemons, buses, then the envs
/// that clean up Docker.
struct Pair {
    _daemons: Vec<Daemon>,
    buses: Vec<Bus>,
    envs: Vec<TestEnv>,
    /// The token file, root's, mode 0600.
    token: std::path::PathBuf,
    svc_a: String,
    svc_b: String,
}

/// b's service prints a marker, then a numbered tick every 200 ms.
fn ticker(image: &str) -> String {
    format!(
        "version: \"2.4\"\nservices:\n  main:\n    image: {image}\n    pull_policy: never\n    \
         command: [\"sh\", \"-c\", \"echo hello-from-b; i=0; while true; do i=$$((i+1)); \
         echo tick-$$i; sleep 0.2; done\"]\n    init: true\n    stop_grace_period: 1s\n"
    )
}

impl Pair {
    fn start(test: &str) -> Pair {
        let envs: Vec<TestEnv> = ["a", "b"]
            .iter()
            .map(|h| TestEnv::new(&format!("{test}_{h}")))
            .collect();
        let port = free_port();
        let token = envs[0].dir().join("peer.token");
        std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let svc_a = envs[0].add_sleeper("rsa");
        let svc_b = envs[0].add_project("rsb", &ticker(common::ensure_image()));
        let rest = format!(
            "[peer]\ntoken_file = {}\ntimeout = \"2s\"\n\n\
             [hosts.a]\npeer = \"http://127.0.0.1:{port}\"\n\
             [hosts.b]\npeer = \"http://127.0.0.2:{port}\"\n\n\
             [services.{svc_a}]\nhost = \"a\"\nauto_start = false\n\
             [services.{svc_b}]\nhost = \"b\"\nauto_start = false\n",
            toml_str(&token.display().to_string()),
        );
        // One cluster; each host its own copy with its own state dir.
        for env in &envs {
            let text = format!(
                "compose_dir = {}\nstate_dir = {}\nboot_id_file = {}\n{}admin_group = \"{}\"\n\n{rest}",
                toml_str(&envs[0].compose_dir().display().to_string()),
                toml_str(&env.state_dir().display().to_string()),
                toml_str(&env.boot_id_file().display().to_string()),
                common::compose_config_line(),
                ADMIN_GROUP.0,
            );
            std::fs::write(env.dir().join("cluster.toml"), text).expect("cluster file");
        }
        let buses: Vec<Bus> = envs.iter().map(|e| Bus::start(e.dir())).collect();
        let file = |i: usize| envs[i].dir().join("cluster.toml").display().to_string();
        // a: a system daemon (no --user) on its bus as the system bus.
        let stackd = env!("CARGO_BIN_EXE_stackd");
        let (file_a, file_b) = (file(0), file(1));
        let script = "mkdir -p /run/stackd && mount -t tmpfs -o mode=0755 tmpfs /run/stackd \
                      && exec \"$0\" \"$@\"";
        let args: Vec<&std::ffi::OsStr> = [
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            stackd,
            "--config",
            &file_a,
            "--host",
            "a",
        ]
        .into_iter()
        .map(std::ffi::OsStr::new)
        .collect();
        let a = Daemon::start_program(
            Path::new("unshare"),
            &args,
            &envs[0],
            &buses[0],
            &[("DBUS_SYSTEM_BUS_ADDRESS", buses[0].address())],
        );
        // b: a --user daemon on its own bus.
        let b = Daemon::start_with(
            &envs[1],
            &buses[1],
            &[],
            &["--config", &file_b, "--host", "b"],
        );
        Pair {
            _daemons: vec![a, b],
            buses,
            envs,
            token,
            svc_a,
            svc_b,
        }
    }
}

/// `setpriv` as uid 65534 with the supplementary `groups` (numeric,
/// comma-separated), then `program ARGS`.
fn as_nobody(groups: &str, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg(format!("--groups={groups}"))
        .env("HOME", "/")
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("XDG_CONFIG_HOME")
        .arg(program);
    cmd
}

/// `stackctl ARGS` (system mode) as uid 65534 in `groups`, with `bus` as
/// its system bus and no session bus.
fn ctl_system(groups: &str, bus: &Bus, args: &[&str]) -> Output {
    let mut cmd = as_nobody(groups, env!("CARGO_BIN_EXE_stackctl"));
    cmd.args(args)
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus.address())
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    common::run(&mut cmd, common::COMMAND_TIMEOUT)
}

/// The container id of `project`'s one container.
fn container_id(project: &str) -> String {
    common::containers(project)
        .into_iter()
        .next()
        .map(|c| c.id)
        .unwrap_or_default()
}

/// Reads `stackctl logs -f` output until a line satisfies `want` or
/// `timeout` passes; the lines read. The process is killed either way.
fn follow_until(mut cmd: Command, timeout: Duration, want: impl Fn(&str) -> bool) -> Vec<String> {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("stackctl logs -f");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) => {
                let done = want(&line);
                seen.push(line);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    seen
}

/// The number N of a `… | tick-N` log line.
fn tick(line: &str) -> Option<u64> {
    line.rsplit("tick-").next()?.trim().parse().ok()
}

#[test]
fn docker_an_admin_group_member_reaches_other_hosts_without_the_token() {
    if !have_docker() || !have_bus() || !have_setpriv() {
        return;
    }
    let p = Pair::start("remote_group");
    let (member, stranger) = (ADMIN_GROUP.1, OTHER_GROUP);
    let bus_a = &p.buses[0];
    let svc_b = p.svc_b.as_str();

    // The token is root's and 0600: the member cannot read it.
    let mut cat = as_nobody(member, "cat");
    cat.arg(&p.token);
    let out = common::run(&mut cat, common::COMMAND_TIMEOUT);
    assert_ne!(out.code, 0, "nobody read the token: {out}");

    // Reading b through a.
    let out = ctl_system(member, bus_a, &["-H", "b", "list"]).expect_success();
    assert!(out.stdout.contains(svc_b), "{out}");
    assert!(!out.stdout.contains(&p.svc_a), "{out}");
    let out = ctl_system(member, bus_a, &["list", "--all-hosts"]).expect_success();
    for (h, svc) in [("a", &p.svc_a), ("b", &p.svc_b)] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([h, svc.as_str()])),
            "{svc} on {h} missing: {out}"
        );
    }
    assert!(out.stdout.contains("0 unreachable"), "{out}");

    // Changing b through a: start, then restart (a new container process).
    ctl_system(member, bus_a, &["-H", "b", "start", svc_b]).expect_success();
    wait_until(Duration::from_secs(30), "b's service runs", || {
        running(svc_b) == 1
    });
    let before = common::docker(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        &container_id(svc_b),
    ])
    .expect_success()
    .stdout;
    let out = ctl_system(member, bus_a, &["-H", "b", "restart", svc_b]).expect_success();
    let after = common::docker(&[
        "inspect",
        "-f",
        "{{.State.StartedAt}}",
        &container_id(svc_b),
    ])
    .expect_success()
    .stdout;
    assert_ne!(before, after, "the restart did not restart: {out}");
    assert_eq!(running(svc_b), 1);
    // The task is b's, and says who asked through which host.
    let tasks = ctl_system(
        member,
        bus_a,
        &["-o", "json", "-H", "b", "tasks", "--service", svc_b],
    )
    .expect_success();
    let rows: serde_json::Value = serde_json::from_str(&tasks.stdout).unwrap();
    let restart = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "restart")
        .unwrap_or_else(|| panic!("no restart task on b: {tasks}"));
    assert_eq!(restart["state"], "succeeded", "{restart}");
    let origin = restart["origin"].as_str().unwrap();
    assert!(
        origin.starts_with("peer:") && origin.contains(":dbus:") && origin.ends_with("@a"),
        "{origin}"
    );

    // b's container logs, streamed through a; with -f, new lines keep coming.
    let out = ctl_system(member, bus_a, &["logs", "-H", "b", svc_b]).expect_success();
    assert!(out.stdout.contains("hello-from-b"), "{out}");
    let last = out.stdout.lines().filter_map(tick).max().unwrap_or(0);
    let mut cmd = as_nobody(member, env!("CARGO_BIN_EXE_stackctl"));
    cmd.args(["logs", "-H", "b", "-f", "-n", "1", svc_b])
        .env("DBUS_SYSTEM_BUS_ADDRESS", bus_a.address())
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    let seen = follow_until(cmd, Duration::from_secs(20), |l| {
        tick(l).is_some_and(|n| n > last + 3)
    });
    assert!(
        seen.iter().filter_map(|l| tick(l)).any(|n| n > last + 3),
        "no new lines followed past tick-{last}: {seen:?}"
    );
    // The status of b's service shows its log lines too.
    let out = ctl_system(member, bus_a, &["-H", "b", "status", svc_b]).expect_success();
    assert!(out.stdout.contains("Active: active"), "{out}");
    assert!(out.stdout.contains("tick-"), "{out}");

    // A stranger may read the list, as here, but not change or read logs.
    ctl_system(stranger, bus_a, &["-H", "b", "list"]).expect_success();
    let out = ctl_system(stranger, bus_a, &["-H", "b", "stop", svc_b]);
    assert_eq!(out.code, 1, "{out}");
    assert!(
        out.stderr.contains("uid 65534 may not")
            && out.stderr.contains(&format!("group {}", ADMIN_GROUP.0)),
        "{out}"
    );
    let out = ctl_system(stranger, bus_a, &["logs", "-H", "b", svc_b]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("may not read logs"), "{out}");
    assert!(!out.stdout.contains("hello-from-b"), "{out}");
    assert_eq!(running(svc_b), 1, "the refused stop stopped b's service");
    let out = ctl_system(stranger, bus_a, &["config", "push"]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("uid 65534 may not"), "{out}");

    // An unknown host is named as such.
    let out = ctl_system(member, bus_a, &["-H", "zz", "list"]);
    assert_eq!(out.code, 2, "{out}");
    assert!(out.stderr.contains("no host zz"), "{out}");

    // Back home: the member stops it through a.
    ctl_system(member, bus_a, &["-H", "b", "stop", svc_b]).expect_success();
    assert_eq!(running(svc_b), 0);
}

/// `--user` mode with no `-c` and no `~/.config/stackd/stackd.toml`: the
/// daemon's own cluster file names the hosts (what the issue saw fail with
/// "No such file").
#[test]
fn docker_user_mode_needs_no_cluster_file_of_its_own() {
    if !have_docker() || !have_bus() || !have_setpriv() {
        return;
    }
    let p = Pair::start("remote_user");
    let (env_b, bus_b) = (&p.envs[1], &p.buses[1]);
    let home = tempfile::tempdir().unwrap();
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stackctl"));
        cmd.arg("--user")
            .args(args)
            .env("HOME", home.path())
            .env_remove("XDG_CONFIG_HOME")
            .env("DBUS_SESSION_BUS_ADDRESS", bus_b.address())
            .env("XDG_RUNTIME_DIR", env_b.run_dir());
        common::run(&mut cmd, common::COMMAND_TIMEOUT)
    };
    let out = ctl(&["-H", "a", "list"]).expect_success();
    assert!(out.stdout.contains(&p.svc_a), "{out}");
    let out = ctl(&["list", "--all-hosts"]).expect_success();
    assert!(
        out.stdout.contains(&p.svc_a) && out.stdout.contains(&p.svc_b),
        "{out}"
    );
    // -H naming this host itself is this host.
    let out = ctl(&["-H", "b", "list"]).expect_success();
    assert!(out.stdout.contains(&p.svc_b), "{out}");
    // a start on a through b, and its task followed to the end.
    ctl(&["-H", "a", "start", &p.svc_a]).expect_success();
    assert_eq!(running(&p.svc_a), 1);
    let out = ctl(&["-H", "a", "is-active", &p.svc_a]).expect_success();
    assert_eq!(out.stdout.trim(), "active", "{out}");
    ctl(&["-H", "a", "stop", &p.svc_a]).expect_success();
    assert_eq!(running(&p.svc_a), 0);
    // The same stackctl as another user: b's daemon is --user, nobody
    // else may change through it.
    let mut cmd = as_nobody(OTHER_GROUP, env!("CARGO_BIN_EXE_stackctl"));
    cmd.args(["--user", "-H", "a", "start", &p.svc_a])
        .env("DBUS_SESSION_BUS_ADDRESS", bus_b.address());
    let out = common::run(&mut cmd, common::COMMAND_TIMEOUT);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("--user mode"), "{out}");
    assert_eq!(running(&p.svc_a), 0);
}
