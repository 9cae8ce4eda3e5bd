//! The README's first command, run as a new user would: `scripts/try`
//! builds stackd (release), imports the example image, starts a session bus
//! and the daemon on `examples/`, and `stackctl list` shows `web` running.
//!
//! It builds the release binaries, so it runs with the heavy checks
//! (`STACKD_HEAVY_TESTS=1`, set by `.ci/run`, where the packaging tests need
//! the same build). It manages the example projects `web` and `hello` on the
//! machine's engine: do not run it beside a `scripts/try` of your own.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{have_bus, have_docker, run, wait_until};

/// What `scripts/try` left running, stopped and removed on Drop (also when
/// the test fails): the example projects, the daemon, the bus it started.
struct Tried {
    dir: tempfile::TempDir,
    bus_address: Option<String>,
}

impl Tried {
    fn pid(&self, file: &str) -> Option<i32> {
        std::fs::read_to_string(self.dir.path().join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn stackctl(&self, args: &[&str]) -> common::Output {
        let mut cmd = Command::new(common::repo().join("target/release/stackctl"));
        cmd.arg("--user")
            .args(args)
            .env("XDG_RUNTIME_DIR", self.run_dir());
        if let Some(address) = &self.bus_address {
            cmd.env("DBUS_SESSION_BUS_ADDRESS", address);
        }
        run(&mut cmd, Duration::from_secs(120))
    }

    fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
}

impl Drop for Tried {
    fn drop(&mut self) {
        // As the script tells the user: web depends on hello, and one
        // command takes both down in that order.
        let _ = self.stackctl(&["down", "web", "hello"]);
        for file in ["stackd.pid", "bus.pid"] {
            if let Some(pid) = self.pid(file) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
        }
    }
}

#[test]
fn docker_the_readme_first_command_starts_the_example() {
    if !common::heavy("the quick-start check") || !have_docker() || !have_bus() {
        return;
    }
    let readme = std::fs::read_to_string(common::repo().join("README.md")).expect("README.md");
    let first_command = readme
        .lines()
        .find(|l| l.trim_start().starts_with("scripts/"))
        .expect("a command in the README");
    assert!(
        first_command.trim_start().starts_with("scripts/try"),
        "the README's first command is {first_command:?}"
    );

    let dir = tempfile::Builder::new()
        .prefix("stackd-try-")
        .tempdir()
        .expect("temp dir");
    let mut tried = Tried {
        dir,
        bus_address: None,
    };
    // A new user's shell: no session bus, no runtime dir of ours.
    let out = run(
        Command::new(common::repo().join("scripts/try"))
            .current_dir(common::repo())
            .env("STACKD_TRY_DIR", tried.dir.path())
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("XDG_STATE_HOME"),
        Duration::from_secs(1800),
    );
    // The script prints the line to paste; take the address from it.
    tried.bus_address = out.stdout.lines().find_map(|l| {
        let (_, rest) = l.split_once("export DBUS_SESSION_BUS_ADDRESS='")?;
        Some(rest.split('\'').next()?.to_owned())
    });
    assert!(out.success(), "{out}");
    assert!(tried.pid("bus.pid").is_some(), "no bus started: {out}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()[..]
                .starts_with(&["web", "running", "active"])),
        "{out}"
    );

    // What the README tells the user to do next works from their shell.
    let list = tried.stackctl(&["list"]).expect_success();
    assert!(list.stdout.contains("hello"), "{list}");
    let status = tried.stackctl(&["status", "web"]).expect_success();
    assert!(status.stdout.contains("running"), "{status}");
    wait_until(
        Duration::from_secs(30),
        "the example web server answers on 127.0.0.1:8080",
        || http_get_ok("127.0.0.1:8080"),
    );
    assert_example_log(tried.dir.path());

    // And what it says to do when done: the example's containers go.
    tried.stackctl(&["down", "web", "hello"]).expect_success();
    for project in ["web", "hello"] {
        let left = common::containers(project);
        assert!(left.is_empty(), "{project} left {left:?}");
    }
}

/// `GET /` answered with a 2xx.
fn http_get_ok(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(address) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    if stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.0 2") || answer.starts_with("HTTP/1.1 2")
}

/// The daemon's log is where the script said, and it started cleanly.
fn assert_example_log(dir: &Path) {
    let log = std::fs::read_to_string(dir.join("stackd.log")).expect("stackd.log");
    assert!(!log.contains("panicked"), "{log}");
}
