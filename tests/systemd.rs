//! The .deb under a real systemd as PID 1, checked as an administrator
//! would: the unit, reload, the watchdog, journald fields and the message
//! catalog, the system bus, group and polkit authorization, socket
//! activation of the peer endpoint, and a Compose service across a reboot
//! and a crash. Heavy (a release build, debootstrap, a booted container),
//! so it runs only with `STACKD_HEAVY_TESTS=1` (as tests/packaging.rs;
//! `.ci/run` sets it); under `CI=true` a missing part fails.
//!
//! The machine: a Debian 12 root from `scripts/debian-rootfs systemd`
//! (debootstrap with systemd, dbus, polkitd, curl; cached under
//! target/packaging/), imported with `docker import` and booted with
//! /sbin/init. Without `--privileged` (refused on these hosts) systemd
//! boots with SYS_ADMIN, no seccomp filter, the host's cgroup namespace and
//! /sys/fs/cgroup bind-mounted read-write, and tmpfs on /run and /run/lock.
//! Docker is the host's engine: its socket, its `docker` client and the
//! Compose v2 plugin are bind-mounted read-only, so the containers stackd
//! starts are siblings on the host (no bind mounts in the test's compose
//! file: its paths would be the host's). Nothing comes from a registry.
//!
//! Services of `kind = "unit"` too: a transient unit running busybox
//! httpd (busybox-static is in the root) with a Compose service that
//! depends on it, across a reboot and a `kill -9` of the unit's process,
//! and a person's `systemctl stop` of it left alone until `stackctl start`;
//! the same step prints the figures of the units bench: a death of the
//! unit brought back by stackd against systemd's own `Restart=on-failure`
//! on the same binary. Also `depends_on` the other way (a unit service
//! after the Compose service it needs, at boot and on a forced stop), a
//! unit the admin wrote (`unit = "hello.service"`), `stackctl -H` relayed
//! from a stackd outside the machine to the machine's peer endpoint, and
//! `stackd --user` as the packaged user unit of a lingering user, its unit
//! service in that user's systemd, without Docker.
//!
//! The desktop notification path under a real notification daemon is
//! tests/desktop.rs's (dunst on Xvfb).
//!
//! One test, one boot: booting takes seconds, and every check is a step of
//! an admin's session on the same machine. Each step prints its duration.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{require, run, try_run, which, Output};

const BUILD_TIMEOUT: Duration = Duration::from_secs(1800);
const EXEC_TIMEOUT: Duration = Duration::from_secs(300);
/// The host's Docker client and Compose v2 plugin, mounted into the machine.
const DOCKER_CLI: &str = "/usr/bin/docker";
const COMPOSE_PLUGIN: &str = "/usr/local/lib/docker/cli-plugins/docker-compose";
const CONFIG: &str = "/etc/stackd/stackd.toml";
const BOOT_ID: &str = "/etc/stackd/boot_id";

/// The newest .deb under target/debian after `scripts/build-packages deb`.
fn build_deb() -> PathBuf {
    run(
        Command::new(common::repo().join("scripts/build-packages"))
            .arg("deb")
            .current_dir(common::repo()),
        BUILD_TIMEOUT,
    )
    .expect_success();
    let dir = common::repo().join("target/debian");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .max_by_key(|p| p.metadata().and_then(|m| m.modified()).ok())
        .unwrap_or_else(|| panic!("no .deb in {}", dir.display()))
}

/// A booted container with systemd as PID 1; removed on Drop, with every
/// Compose project whose name starts with its prefix (they run on the
/// host's engine).
struct Machine {
    name: String,
    prefix: String,
}

impl Machine {
    fn boot(image: &str, deb: &Path, prefix: &str) -> Machine {
        let name = format!("{prefix}-machine");
        let machine = Machine {
            name: name.clone(),
            prefix: prefix.to_owned(),
        };
        run(
            Command::new("docker")
                .args(["run", "--detach", "--name", &name, "--hostname", "sdhost"])
                .args([
                    "--cap-add",
                    "SYS_ADMIN",
                    "--security-opt",
                    "seccomp=unconfined",
                ])
                .args(["--cgroupns=host", "-v", "/sys/fs/cgroup:/sys/fs/cgroup:rw"])
                .args(["--tmpfs", "/run", "--tmpfs", "/run/lock"])
                .args(["-v", "/var/run/docker.sock:/var/run/docker.sock"])
                .args(["-v", &format!("{DOCKER_CLI}:/usr/bin/docker:ro")])
                .args(["-v", &format!("{COMPOSE_PLUGIN}:{COMPOSE_PLUGIN}:ro")])
                .args(["-v", &format!("{}:/tmp/stackd.deb:ro", deb.display())])
                .args([image, "/sbin/init"]),
            Duration::from_secs(120),
        )
        .expect_success();
        machine
    }

    /// `bash -c script` in the machine, as root.
    fn sh(&self, script: &str) -> Output {
        run(
            Command::new("docker").args(["exec", &self.name, "bash", "-c", script]),
            EXEC_TIMEOUT,
        )
    }

    /// [`sh`](Self::sh) that must succeed; its trimmed stdout.
    #[track_caller]
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.success(),
            "{out}\n--- stackd's journal\n{}",
            self.journal()
        );
        out.stdout.trim().to_owned()
    }

    fn journal(&self) -> String {
        self.sh("journalctl -u stackd -u stackd.socket --no-pager -n 60 -o short-precise")
            .stdout
    }

    /// `systemctl show -p PROP --value UNIT`.
    fn prop(&self, unit: &str, prop: &str) -> String {
        self.ok(&format!("systemctl show -p {prop} --value {unit}"))
    }

    /// A property of the manager over the system bus, as busctl prints it
    /// (`s "..."`).
    fn manager_prop(&self, prop: &str) -> String {
        self.ok(&format!(
            "busctl get-property org.stackd1 /org/stackd1 org.stackd1.Manager {prop}"
        ))
    }

    /// Polls `script` every 300 ms until `done(output)`; panics with the
    /// last output and the journal when `timeout` passes first.
    #[track_caller]
    fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        script: &str,
        done: impl Fn(&Output) -> bool,
    ) -> Output {
        let deadline = Instant::now() + timeout;
        loop {
            let out = self.sh(script);
            if done(&out) {
                return out;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; last answer:\n{out}\n--- stackd's journal\n{}",
                self.journal()
            );
            thread::sleep(Duration::from_millis(300));
        }
    }

    /// Writes `text` to `path` in the machine (through a quoted heredoc).
    fn write(&self, path: &str, text: &str) {
        assert!(!text.contains("\nSTACKD_EOF\n"));
        self.ok(&format!("cat >{path} <<'STACKD_EOF'\n{text}\nSTACKD_EOF"));
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = try_run(
            Command::new("docker").args(["rm", "--force", "--volumes", &self.name]),
            Duration::from_secs(120),
        );
        common::remove_projects(&self.prefix);
    }
}

/// A systemd time span as `systemctl show` prints it ("30s", "1min 30s",
/// "2min", "500ms").
fn span(text: &str) -> Duration {
    text.split_whitespace()
        .map(|part| {
            let split = part
                .find(|c: char| !c.is_ascii_digit() && c != '.')
                .unwrap_or(part.len());
            let (n, unit) = part.split_at(split);
            let n: f64 = n
                .parse()
                .unwrap_or_else(|_| panic!("not a time span: {text:?}"));
            let secs = match unit {
                "us" => n / 1e6,
                "ms" => n / 1e3,
                "s" | "" => n,
                "min" => n * 60.0,
                "h" => n * 3600.0,
                _ => panic!("not a time span: {text:?}"),
            };
            Duration::from_secs_f64(secs)
        })
        .sum()
}

/// An object path element as systemd escapes it: every byte outside
/// `[A-Za-z0-9]` becomes `_xx`.
fn bus_escape(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("_{b:02x}")
            }
        })
        .collect()
}

fn step(name: &str, started: &mut Instant) {
    eprintln!("STEP {name}: {:.1?}", started.elapsed());
    *started = Instant::now();
}

/// The cluster file: one Compose service, the peer endpoint (on a port
/// other than the socket's, so an answer on 7780 proves the hand-over),
/// the simulated boot id, and `extra` top-level keys.
fn config(service: &str, extra: &str) -> String {
    format!(
        "# Written by tests/systemd.rs.\n\
         host = \"sdhost\"\n\
         compose_dir = \"/opt/stacks\"\n\
         boot_id_file = \"{BOOT_ID}\"\n\
         compose_command = \"docker compose\"\n\
         {extra}\n\
         [peer]\n\
         listen = \"127.0.0.1:7781\"\n\
         token_file = \"/etc/stackd/peer.token\"\n\
         \n\
         [services.{service}]\n\
         auto_start = true\n"
    )
}

/// What a reboot leaves, with stackd stopped: `project`'s one container
/// gone (stopping stackd must not have stopped it) and a new boot id.
/// Returns the new boot id.
fn reboot(m: &Machine, project: &str) -> String {
    let ids = containers(project);
    assert_eq!(ids.len(), 1, "stopping stackd stopped {project}");
    run(
        Command::new("docker").args(["rm", "--force"]).args(&ids),
        Duration::from_secs(60),
    )
    .expect_success();
    m.ok(&format!("cat /proc/sys/kernel/random/uuid >{BOOT_ID}"));
    m.ok(&format!("cat {BOOT_ID}"))
}

/// The container ids of `project` on the host's engine.
fn containers(project: &str) -> Vec<String> {
    run(
        Command::new("docker").args([
            "ps",
            "--quiet",
            "--filter",
            &format!("label={}={project}", common::PROJECT_LABEL),
        ]),
        Duration::from_secs(60),
    )
    .expect_success()
    .stdout
    .split_whitespace()
    .map(str::to_owned)
    .collect()
}

#[test]
fn docker_the_deb_under_systemd_as_an_admin_sees_it() {
    if !common::heavy("the systemd tier") || !common::have_docker() {
        return;
    }
    let has = |sub: &str| {
        Command::new("cargo")
            .args([sub, "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !require("cargo-deb", has("deb"), "cargo install cargo-deb --locked")
        || !require(
            "debootstrap",
            which("debootstrap").is_some(),
            "apt-get install debootstrap",
        )
        || !require(
            "the Docker client at /usr/bin/docker",
            Path::new(DOCKER_CLI).is_file(),
            "apt-get install docker.io",
        )
        || !require(
            "the Compose v2 plugin",
            Path::new(COMPOSE_PLUGIN).is_file(),
            "Debian 13's docker-compose package as the CLI plugin (.ci/run does this)",
        )
    {
        return;
    }
    let total = Instant::now();
    let mut t = Instant::now();
    let deb = build_deb();
    step("build the .deb", &mut t);
    let image = common::debian_root_image("systemd");
    step("root file system", &mut t);
    let test_image = common::ensure_image();
    step("test image", &mut t);

    // Lowercase letters and digits: a valid Compose project name.
    let prefix = format!("stsd{}", &common::random_uuid().replace('-', "")[..8]);
    let m = Machine::boot(&image, &deb, &prefix);
    m.wait_for(
        Duration::from_secs(120),
        "systemd to finish booting",
        "systemctl is-system-running",
        |o| matches!(o.stdout.trim(), "running" | "degraded"),
    );
    let failed = m.ok("systemctl --failed --no-legend --plain");
    eprintln!("booted; failed units: {failed:?}");
    step("boot", &mut t);

    // --- install ------------------------------------------------------
    m.ok("dpkg -i /tmp/stackd.deb");
    // postinst started it on the fresh install (systemd runs here).
    m.ok("systemctl is-enabled stackd");
    m.ok("systemctl stop stackd");
    let service = format!("{prefix}-web");
    m.ok(&format!("mkdir -p /opt/stacks/{service}"));
    m.write(
        &format!("/opt/stacks/{service}/compose.yaml"),
        &common::sleeper_compose(test_image),
    );
    m.ok(&format!(
        "cat /proc/sys/kernel/random/uuid >{BOOT_ID}; \
         head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \\n' >/etc/stackd/peer.token; \
         chmod 600 /etc/stackd/peer.token"
    ));
    m.write(CONFIG, &config(&service, ""));
    m.ok("stackd --check-config");
    step("install", &mut t);

    // --- systemctl start: active, with a STATUS= line -----------------
    m.ok("systemctl start stackd");
    let active = m.sh("systemctl is-active stackd");
    assert_eq!(active.stdout.trim(), "active", "{active}\n{}", m.journal());
    m.ok(&format!("stackctl start {service}"));
    // The daemon's own words ("N running", "waiting for Docker"), sent
    // with STATUS= once it has something to say.
    m.wait_for(
        Duration::from_secs(60),
        "a STATUS= line from stackd saying the service runs",
        "systemctl show -p StatusText --value stackd",
        |o| o.stdout.trim() == "1 running",
    );
    step("start, STATUS=", &mut t);

    // --- busctl on the system bus -------------------------------------
    let list = m.ok("busctl call org.stackd1 /org/stackd1 org.stackd1.Manager ListServices");
    assert!(
        list.contains(&format!("\"{service}\"")),
        "ListServices does not name {service}: {list}"
    );
    let version = m.manager_prop("Version");
    let cli = m.ok("stackd --version");
    assert!(
        version.starts_with("s \"") && cli.contains(version[3..].trim_end_matches('"')),
        "Version over the bus ({version}) is not the installed one ({cli})"
    );
    step("busctl", &mut t);

    // --- reload, and a bad file keeps the old config ------------------
    let hash0 = m.manager_prop("ConfigHash");
    m.write(CONFIG, &config(&service, "sample_interval = \"7s\""));
    m.ok("systemctl reload stackd");
    let hash1 = m
        .wait_for(
            Duration::from_secs(30),
            "ConfigHash to change after `systemctl reload stackd`",
            "busctl get-property org.stackd1 /org/stackd1 org.stackd1.Manager ConfigHash",
            |o| o.success() && o.stdout.trim() != hash0,
        )
        .stdout
        .trim()
        .to_owned();
    let cursor =
        m.ok("journalctl -u stackd -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'");
    m.write(
        CONFIG,
        &config(&service, "sample_interval = \"7s\"\nno_such_key = 1"),
    );
    // ExecReload= only sends SIGHUP: systemctl succeeds either way; the
    // refusal is the daemon's, in the journal.
    m.ok("systemctl reload stackd");
    let refusal = m.wait_for(
        Duration::from_secs(30),
        "the refused reload in the journal",
        &format!("journalctl -u stackd --no-pager --after-cursor '{cursor}'"),
        |o| o.stdout.contains("reload refused") && o.stdout.contains("no_such_key"),
    );
    eprintln!("refusal:\n{}", refusal.stdout);
    assert_eq!(m.ok("systemctl is-active stackd"), "active");
    assert_eq!(
        m.manager_prop("ConfigHash"),
        hash1,
        "a bad file changed the running config"
    );
    m.write(CONFIG, &config(&service, "sample_interval = \"7s\""));
    m.ok("systemctl reload stackd");
    step("reload", &mut t);

    // --- busctl and stackctl by users: group, AccessDenied, polkit ----
    m.ok("useradd --create-home --groups stackd alice && useradd --create-home bob");
    let stop = m.sh(&format!("runuser -u alice -- stackctl stop {service}"));
    assert!(
        stop.success(),
        "a member of group stackd could not stop: {stop}"
    );
    assert!(
        containers(&service).is_empty(),
        "alice's stop left containers"
    );
    let denied = m.sh(&format!("runuser -u bob -- stackctl start {service}"));
    assert!(
        denied.code == 1 && denied.stderr.contains("may not do this"),
        "stackctl did not refuse a user outside group stackd: {denied}"
    );
    // The error's name, as any D-Bus client sees it.
    let denied = m.sh(&format!(
        "runuser -u bob -- dbus-send --system --print-reply --dest=org.stackd1 /org/stackd1 \
         org.stackd1.Manager.StartService string:{service}"
    ));
    assert!(
        !denied.success() && denied.stderr.contains("org.stackd1.Error.AccessDenied"),
        "a user outside group stackd was not refused with AccessDenied: {denied}"
    );
    assert!(
        containers(&service).is_empty(),
        "bob's refused start started something"
    );
    m.write(
        "/etc/polkit-1/rules.d/50-stackd-test.rules",
        "polkit.addRule(function(action, subject) {\n\
         \x20   if (action.id == \"org.stackd1.manage\" && subject.user == \"bob\") {\n\
         \x20       return polkit.Result.YES;\n\
         \x20   }\n\
         });",
    );
    // polkitd reloads rules when the directory changes.
    m.wait_for(
        Duration::from_secs(60),
        "bob to be let in by the polkit rule",
        &format!("runuser -u bob -- stackctl start {service}"),
        Output::success,
    );
    assert_eq!(containers(&service).len(), 1, "bob's start started nothing");
    step("group and polkit", &mut t);

    // --- the watchdog -------------------------------------------------
    let watchdog = span(&m.prop("stackd", "WatchdogUSec"));
    let abort = span(&m.prop("stackd", "TimeoutAbortUSec"));
    let restart_sec = span(&m.prop("stackd", "RestartUSec"));
    assert!(watchdog > Duration::ZERO, "WatchdogSec= is not set");
    let restarts: u64 = m.prop("stackd", "NRestarts").parse().expect("NRestarts");
    let pid = m.prop("stackd", "MainPID");
    m.ok(&format!("kill -STOP {pid}"));
    let budget = watchdog + abort + restart_sec + Duration::from_secs(30);
    m.wait_for(
        budget,
        "systemd's watchdog to restart the stopped daemon",
        "systemctl show -p NRestarts -p MainPID -p ActiveState stackd",
        |o| {
            o.stdout.contains("ActiveState=active\n")
                && o.stdout.lines().any(|l| {
                    l.strip_prefix("NRestarts=")
                        .and_then(|n| n.parse::<u64>().ok())
                        .is_some_and(|n| n > restarts)
                })
                && !o.stdout.contains(&format!("MainPID={pid}\n"))
        },
    );
    let log = m.ok("journalctl -u stackd --no-pager -o cat");
    assert!(
        log.contains("Watchdog timeout"),
        "no watchdog timeout in:\n{log}"
    );
    step("watchdog", &mut t);

    // --- a reboot (new boot id, containers gone) and a crash ------------
    m.ok("systemctl stop stackd");
    let boot = reboot(&m, &service);
    let reboot_cursor =
        m.ok("journalctl -u stackd -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'");
    m.ok("systemctl restart stackd");
    let active_state = format!(
        "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service ActiveState",
        bus_escape(&service)
    );
    m.wait_for(
        Duration::from_secs(120),
        "the service to come back after the reboot",
        &active_state,
        |o| o.stdout.trim() == "s \"active\"",
    );
    assert_eq!(containers(&service).len(), 1);
    assert!(
        m.manager_prop("BootId").contains(&boot),
        "stackd did not read the new boot id"
    );
    // The start-up reconcile knew it was a reboot.
    let reconciled = m.ok(&format!(
        "journalctl -u stackd --no-pager -o cat --after-cursor '{reboot_cursor}'"
    ));
    assert!(
        reconciled.contains("queued reconcile (boot)"),
        "no reconcile after the reboot:\n{reconciled}"
    );
    let id = containers(&service).remove(0);
    let host_pid = run(
        Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", &id]),
        Duration::from_secs(30),
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned();
    run(
        Command::new("kill").args(["-9", &host_pid]),
        Duration::from_secs(30),
    )
    .expect_success();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let now: Vec<String> = containers(&service);
        let pid_now = now.first().map(|c| {
            try_run(
                Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", c]),
                Duration::from_secs(30),
            )
            .map(|o| o.stdout.trim().to_owned())
            .unwrap_or_default()
        });
        if pid_now.is_some_and(|p| p != host_pid && p != "0" && !p.is_empty()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed service did not come back: {}\n{}",
            m.sh(&format!("stackctl status {service}")),
            m.journal()
        );
        thread::sleep(Duration::from_millis(300));
    }
    m.wait_for(
        Duration::from_secs(60),
        "stackd to report the recovered service active",
        &active_state,
        |o| o.stdout.trim() == "s \"active\"",
    );
    step("reboot and crash", &mut t);

    // --- stackd.socket serves the peer endpoint -------------------------
    // The README's sequence while the service runs.
    m.ok("systemctl stop stackd && systemctl enable --now stackd.socket && systemctl start stackd");
    let health = "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:7780/healthz";
    m.wait_for(
        Duration::from_secs(30),
        "/healthz on the socket's port",
        health,
        |o| o.stdout.trim() == "200",
    );
    // Stopped, the daemon is started again by a connection to the socket.
    m.ok("systemctl stop stackd");
    assert_eq!(m.sh("systemctl is-active stackd").stdout.trim(), "inactive");
    let code = m.ok(&format!("{health} --max-time 60"));
    assert_eq!(code, "200", "a connection did not activate stackd");
    assert_eq!(m.ok("systemctl is-active stackd"), "active");
    step("socket activation", &mut t);

    // --- journald fields and the catalog --------------------------------
    m.ok("journalctl --update-catalog");
    let json = m.ok("journalctl -u stackd -o json --no-pager");
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let ours: Vec<&serde_json::Value> = entries.iter().filter(|e| e["_COMM"] == "stackd").collect();
    let fields: std::collections::BTreeSet<&str> = ours
        .iter()
        .filter_map(|e| e.as_object())
        .flat_map(|o| o.keys().map(String::as_str))
        .filter(|k| k.starts_with("STACKD_"))
        .collect();
    assert!(
        fields.contains("STACKD_SERVICE"),
        "stackd's journal entries carry no STACKD_SERVICE field; fields: {fields:?}"
    );
    let ids: std::collections::BTreeSet<&str> = ours
        .iter()
        .filter_map(|e| e["MESSAGE_ID"].as_str())
        .collect();
    assert!(!ids.is_empty(), "stackd logged no MESSAGE_ID");
    let catalog = std::fs::read_to_string(common::repo().join("systemd/stackd.catalog"))
        .expect("systemd/stackd.catalog");
    // The @FIELD@ placeholders of a catalog text.
    let placeholders = |text: &str| -> Vec<String> {
        text.split('@')
            .skip(1)
            .step_by(2)
            .filter(|w| {
                !w.is_empty()
                    && w.chars()
                        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            })
            .map(str::to_owned)
            .collect()
    };
    for id in &ids {
        let entry = catalog
            .split(&format!("-- {id}\n"))
            .nth(1)
            .map(|rest| rest.split("\n-- ").next().unwrap_or(rest))
            .unwrap_or_else(|| panic!("MESSAGE_ID {id} has no entry in systemd/stackd.catalog"));
        let subject = entry
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("Subject: "))
            .unwrap_or_else(|| panic!("the catalog entry of {id} has no Subject: line"));
        let head = subject.split('@').next().unwrap_or("").trim();
        let shown = m.ok(&format!(
            "journalctl -u stackd -x --no-pager -o short MESSAGE_ID={id} -n 1"
        ));
        assert!(
            shown.contains(&format!("Subject: {head}")),
            "journalctl -x does not explain MESSAGE_ID {id} with its catalog entry:\n{shown}"
        );
        // journalctl fills @FIELD@ from the entry and prints a missing
        // field's bare name instead: every placeholder must be a field of
        // the entries that carry this id.
        let last = ours
            .iter()
            .rev()
            .find(|e| e["MESSAGE_ID"] == *id)
            .and_then(|e| e.as_object())
            .expect("an entry with this id");
        let missing: Vec<String> = placeholders(entry)
            .into_iter()
            .filter(|p| !last.contains_key(p))
            .collect();
        assert!(
            missing.is_empty(),
            "the catalog entry of MESSAGE_ID {id} names fields its journal entries lack: \
             {missing:?}\njournalctl -x shows:\n{shown}\nthe entry: {last:?}"
        );
        assert!(
            placeholders(&shown).is_empty(),
            "journalctl -x leaves a placeholder of MESSAGE_ID {id} unfilled:\n{shown}"
        );
    }
    eprintln!("STACKD fields {fields:?}, MESSAGE_IDs {ids:?}");
    step("journal and catalog", &mut t);

    units(&m, &service, test_image, &prefix);
    step("kind = \"unit\"", &mut t);

    remote(&m, &format!("{prefix}-hello"));
    step("-H for a unit service", &mut t);

    user_mode(&m, &prefix);
    step("stackd --user under the user's systemd", &mut t);

    eprintln!("TOTAL {:.1?}", total.elapsed());
}

/// The unit's property as `busctl` prints it (`t 1764...`, `s "active"`).
fn unit_prop(m: &Machine, unit: &str, iface: &str, prop: &str) -> String {
    m.ok(&format!(
        "busctl get-property org.freedesktop.systemd1 /org/freedesktop/systemd1/unit/{} \
         org.freedesktop.systemd1.{iface} {prop}",
        bus_escape(unit)
    ))
}

/// A property of one of stackd's service objects over the system bus.
fn service_prop(m: &Machine, service: &str, prop: &str) -> String {
    m.ok(&format!(
        "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service {prop}",
        bus_escape(service)
    ))
}

/// The number in busctl's `t 123` / `u 123` / `d 1.5`.
fn number(busctl: &str) -> f64 {
    busctl
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a number from busctl: {busctl:?}"))
}

/// `kind = "unit"`: a transient unit (busybox httpd) and a Compose
/// service that depends on it; started in dependency order, again after a
/// reboot, recovered after a `kill -9` of the unit's process. Then the
/// units bench's figures.
fn units(m: &Machine, service: &str, image: &str, prefix: &str) {
    let httpd = format!("{prefix}-httpd");
    let app = format!("{prefix}-app");
    // A unit service that depends on the Compose service (the other
    // direction), and one backed by a unit the admin wrote.
    let late = format!("{prefix}-late");
    let hello = format!("{prefix}-hello");
    let unit = format!("stackd-{httpd}.service");
    let late_unit = format!("stackd-{late}.service");
    m.ok("mkdir -p /srv/www && echo 'hello from a unit' >/srv/www/index.html");
    m.write(
        "/etc/systemd/system/hello.service",
        "# An admin's own unit, which stackd is told to manage.\n\
         [Unit]\n\
         Description=hello, served by busybox httpd\n\
         \n\
         [Service]\n\
         ExecStart=/usr/bin/busybox httpd -f -p 127.0.0.1:8090 -h /srv/www\n",
    );
    m.ok("systemctl daemon-reload");
    m.ok(&format!("mkdir -p /opt/stacks/{app}"));
    m.write(
        &format!("/opt/stacks/{app}/compose.yaml"),
        &common::sleeper_compose(image),
    );
    // The same fixed wait before a restart as systemd's RestartSec= default
    // (100ms), so the bench compares the machinery, not the settings.
    let services = format!(
        "\n[services.{httpd}]\n\
         kind = \"unit\"\n\
         exec = [\"/usr/bin/busybox\", \"httpd\", \"-f\", \"-v\", \"-p\", \"127.0.0.1:8088\", \"-h\", \"/srv/www\"]\n\
         working_dir = \"/srv/www\"\n\
         environment = {{ STACKD_TEST = \"1\" }}\n\
         auto_start = true\n\
         health = {{ http = \"http://127.0.0.1:8088/\", interval = \"1s\", retries = 3 }}\n\
         restart = {{ max_restarts = 100, backoff = \"100ms\" }}\n\
         \n[services.{app}]\n\
         auto_start = true\n\
         depends_on = [\"{httpd}\"]\n\
         \n[services.{late}]\n\
         kind = \"unit\"\n\
         exec = [\"/usr/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:8091\", \"-h\", \"/srv/www\"]\n\
         auto_start = true\n\
         depends_on = [\"{app}\"]\n\
         \n[services.{hello}]\n\
         kind = \"unit\"\n\
         unit = \"hello.service\"\n\
         auto_start = true\n\
         health = {{ http = \"http://127.0.0.1:8090/\", interval = \"1s\", retries = 2 }}\n\
         restart = {{ max_restarts = 100, backoff = \"100ms\" }}\n"
    );
    m.write(CONFIG, &(config(service, "") + &services));
    m.ok("stackd --check-config");
    m.ok("systemctl reload stackd");
    m.wait_for(
        Duration::from_secs(30),
        "the reload that adds the unit services",
        &format!("stackctl status {httpd}"),
        // Known (0 active, 3 inactive), not "no such service" (4): a
        // reload starts nothing.
        |o| o.code == 3 && o.stdout.contains("inactive"),
    );
    // A start of the Compose service starts the unit first.
    m.ok(&format!("stackctl start {app}"));
    let active = |svc: &str| {
        format!(
            "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service ActiveState",
            bus_escape(svc)
        )
    };
    for svc in [&httpd, &app] {
        m.wait_for(
            Duration::from_secs(120),
            &format!("{svc} to be active"),
            &active(svc),
            |o| o.stdout.trim() == "s \"active\"",
        );
    }
    assert_eq!(m.ok("curl -s http://127.0.0.1:8088/"), "hello from a unit");
    assert_eq!(m.prop(&unit, "ActiveState"), "active");
    // The unit that depends on the Compose service, and the admin's unit.
    m.ok(&format!("stackctl start {late} {hello}"));
    for svc in [&late, &hello] {
        m.wait_for(
            Duration::from_secs(60),
            &format!("{svc} to be active"),
            &active(svc),
            |o| o.stdout.trim() == "s \"active\"",
        );
    }
    assert_eq!(m.ok("curl -s http://127.0.0.1:8091/"), "hello from a unit");
    assert_eq!(m.ok("curl -s http://127.0.0.1:8090/"), "hello from a unit");

    // --- a reboot: the units and the containers are gone ---------------
    let last_before_reboot: u64 = m
        .ok("stackctl tasks --no-legend -n 1")
        .split_whitespace()
        .next()
        .and_then(|id| id.parse().ok())
        .expect("a task id");
    m.ok("systemctl stop stackd");
    m.ok(&format!(
        "systemctl stop {unit} {late_unit} hello.service; systemctl reset-failed hello.service || true"
    ));
    let boot = reboot(m, &app);
    let reboot_cursor =
        m.ok("journalctl -u stackd -n 0 --show-cursor --no-pager | sed -n 's/^-- cursor: //p'");
    m.ok("systemctl restart stackd");
    for svc in [&httpd, &app, &late, &hello] {
        m.wait_for(
            Duration::from_secs(120),
            &format!("{svc} to come back after the reboot"),
            &active(svc),
            |o| o.stdout.trim() == "s \"active\"",
        );
    }
    assert!(m.manager_prop("BootId").contains(&boot));
    // In dependency order: the unit was active (and its probe had passed)
    // before the container that depends on it started.
    let unit_since = number(&unit_prop(m, &unit, "Unit", "ActiveEnterTimestamp"));
    let id = containers(&app).remove(0);
    let started = run(
        Command::new("docker").args(["inspect", "-f", "{{.State.StartedAt}}", &id]),
        Duration::from_secs(30),
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned();
    let app_since: f64 = m
        .ok(&format!("date -d '{started}' +%s%6N"))
        .parse()
        .expect("microseconds");
    assert!(
        unit_since > 0.0 && unit_since < app_since,
        "{app} started ({app_since} µs) before its dependency {unit} was active ({unit_since} µs)"
    );
    // The other direction: the unit that depends on the Compose service
    // started after the container did.
    let late_since = number(&unit_prop(m, &late_unit, "Unit", "ActiveEnterTimestamp"));
    assert!(
        late_since > app_since,
        "{late_unit} was active ({late_since} µs) before its dependency {app} started ({app_since} µs)"
    );
    eprintln!(
        "boot order: {unit} active at +0, {app} started at +{:.0} ms, {late_unit} active at +{:.0} ms",
        (app_since - unit_since) / 1000.0,
        (late_since - unit_since) / 1000.0
    );
    // The boot's starts of the units did not meet a missing connection to
    // systemd (the daemon makes it while the start-up reconcile is queued).
    for svc in [&httpd, &late, &hello] {
        let failed = m.ok(&format!(
            "stackctl tasks --no-legend --service {svc} --state failed -n 100"
        ));
        for id in failed
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse::<u64>().ok())
        {
            let log = m.ok(&format!("stackctl task {id}"));
            assert!(
                id <= last_before_reboot,
                "task {id} of {svc} failed after the reboot:\n{log}"
            );
            eprintln!("before the reboot, task {id} of {svc} failed:\n{log}");
        }
    }
    let since = m.ok(&format!(
        "journalctl -u stackd --no-pager -o cat --after-cursor '{reboot_cursor}'"
    ));
    assert!(
        !since.contains("not connected yet") && !since.contains("no connection to systemd"),
        "the boot's unit starts met no connection to systemd:\n{since}"
    );
    assert_eq!(m.ok("curl -s http://127.0.0.1:8088/"), "hello from a unit");
    // Logs from the journal, status from the unit, resources from its cgroup.
    let logs = m.ok(&format!("stackctl logs {httpd}"));
    assert!(
        logs.contains(&format!("{unit} | ")) && logs.contains("response:200"),
        "stackctl logs {httpd} does not show the unit's journal:\n{logs}"
    );
    let status = m.ok(&format!("stackctl status {httpd}"));
    assert!(status.contains("active (running)"), "{status}");
    m.wait_for(
        Duration::from_secs(30),
        "memory figures from the unit's cgroup",
        &format!(
            "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service MemoryBytes",
            bus_escape(&httpd)
        ),
        |o| o.success() && number(&o.stdout) > 0.0,
    );
    eprintln!("unit service after the reboot:\n{status}");

    dependents(m, &app, &late, &late_unit);
    existing_unit(m, &hello);

    // --- a crash: the unit's process killed -----------------------------
    let pid = m.prop(&unit, "MainPID");
    let restarts = number(&service_prop(m, &httpd, "RestartCount"));
    m.ok(&format!("kill -9 {pid}"));
    m.wait_for(
        Duration::from_secs(60),
        "stackd to bring the killed unit back",
        &format!("systemctl show -p MainPID -p ActiveState {unit}"),
        |o| {
            o.stdout.contains("ActiveState=active\n")
                && !o.stdout.contains(&format!("MainPID={pid}\n"))
                && !o.stdout.contains("MainPID=0\n")
        },
    );
    // stackd's doing, not systemd's: a transient unit has Restart=no.
    assert_eq!(m.prop(&unit, "NRestarts"), "0");
    m.wait_for(
        Duration::from_secs(30),
        "the recovery counted in RestartCount",
        &format!(
            "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service RestartCount",
            bus_escape(&httpd)
        ),
        |o| o.success() && number(&o.stdout) > restarts,
    );
    assert_eq!(m.ok("curl -s http://127.0.0.1:8088/"), "hello from a unit");

    // --- a person's stop: `systemctl stop` is intent, as `docker stop` is -
    m.ok(&format!("systemctl stop {unit}"));
    m.wait_for(
        Duration::from_secs(30),
        "stackd to take the systemctl stop for a person's",
        &format!("stackctl status {httpd}"),
        |o| o.stdout.contains("stopped outside stackd (systemctl stop)"),
    );
    thread::sleep(Duration::from_secs(3));
    assert_ne!(
        m.prop(&unit, "ActiveState"),
        "active",
        "stackd undid a person's systemctl stop"
    );
    m.ok(&format!("stackctl start {httpd}"));
    m.wait_for(
        Duration::from_secs(60),
        "stackctl start to bring the stopped unit back",
        &format!("systemctl show -p ActiveState {unit}"),
        |o| o.stdout.contains("ActiveState=active\n"),
    );

    bench(m, &unit);
}

/// The manager's `SystemState` is `running` (or `degraded`) again after
/// `systemctl restart stackd`: the start-up reconcile is done.
fn wait_started(m: &Machine) {
    m.wait_for(
        Duration::from_secs(120),
        "stackd's start-up reconcile to finish",
        "busctl get-property org.stackd1 /org/stackd1 org.stackd1.Manager SystemState",
        |o| matches!(o.stdout.trim(), "s \"running\"" | "s \"degraded\""),
    );
}

/// When systemd last logged "Stopped" for `unit` (µs since the epoch):
/// a transient unit is collected once it stops, with its timestamps.
fn stopped_at(m: &Machine, unit: &str) -> f64 {
    // MESSAGE_ID of systemd's "unit stopped" (SD_MESSAGE_UNIT_STOPPED).
    let json = m.ok(&format!(
        "journalctl -o json --no-pager -n 1 UNIT={unit} \
         MESSAGE_ID=9d1aaa27d60140bd96365438aad20286"
    ));
    let entry: serde_json::Value =
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json:?}"));
    entry["__REALTIME_TIMESTAMP"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no timestamp in {entry}"))
}

/// `depends_on` from a unit service to a Compose service, on the way
/// down: stopping the Compose service is refused while the unit that
/// needs it runs, and `--force` stops the unit first, as it does a
/// Compose dependent; a start of the unit starts the Compose service
/// again first.
fn dependents(m: &Machine, app: &str, late: &str, late_unit: &str) {
    let refused = m.sh(&format!("stackctl stop {app}"));
    assert!(
        !refused.success() && refused.stderr.contains(late),
        "stopping {app} while {late} needs it was not refused: {refused}"
    );
    assert_eq!(m.prop(late_unit, "ActiveState"), "active");
    assert_eq!(containers(app).len(), 1, "the refused stop stopped {app}");
    m.ok(&format!("stackctl stop --force {app}"));
    common::wait_until(Duration::from_secs(60), "app's container to stop", || {
        containers(app).is_empty()
    });
    assert_ne!(m.prop(late_unit, "ActiveState"), "active");
    let late_stopped = stopped_at(m, late_unit);
    let id = run(
        Command::new("docker").args([
            "ps",
            "--all",
            "--quiet",
            "--filter",
            &format!("label={}={app}", common::PROJECT_LABEL),
        ]),
        Duration::from_secs(30),
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned();
    let finished = run(
        Command::new("docker").args(["inspect", "-f", "{{.State.FinishedAt}}", &id]),
        Duration::from_secs(30),
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned();
    let app_stopped: f64 = m
        .ok(&format!("date -d '{finished}' +%s%6N"))
        .parse()
        .expect("microseconds");
    assert!(
        late_stopped < app_stopped,
        "{late_unit} stopped ({late_stopped} µs) after {app} ({app_stopped} µs)"
    );
    eprintln!(
        "stop --force {app}: {late_unit} stopped {:.0} ms before {app}",
        (app_stopped - late_stopped) / 1000.0
    );
    // Starting the unit starts what it depends on first.
    m.ok(&format!("stackctl start {late}"));
    m.wait_for(
        Duration::from_secs(60),
        &format!("{late} and {app} to run again"),
        &format!("systemctl show -p ActiveState {late_unit}"),
        |o| o.stdout.contains("ActiveState=active\n"),
    );
    assert_eq!(
        containers(app).len(),
        1,
        "starting {late} did not start {app}"
    );
    assert_eq!(m.ok("curl -s http://127.0.0.1:8091/"), "hello from a unit");
}

/// `unit = "hello.service"`: a unit the admin wrote, managed by stackd:
/// status, restart, a stop kept across a restart of stackd (and a start
/// too, without restarting the unit), a kill of its process recovered
/// from the unit's Result, and a person's `systemctl stop` left alone.
fn existing_unit(m: &Machine, hello: &str) {
    let unit = "hello.service";
    let status = m.ok(&format!("stackctl status {hello}"));
    assert!(
        status.contains("active (running)")
            && status.contains(&format!("Unit: {unit}"))
            && !status.contains("Compose:")
            && !status.contains("since n/a"),
        "stackctl status {hello} does not show the running {unit}:\n{status}"
    );
    eprintln!("an admin's unit under stackd:\n{status}");
    // Its journal and its cgroup, as for a transient unit.
    let logs = m.ok(&format!("stackctl logs {hello}"));
    assert!(
        logs.contains(&format!("{unit} | Started {unit}")),
        "stackctl logs {hello} does not show the unit's journal:\n{logs}"
    );
    m.wait_for(
        Duration::from_secs(30),
        "memory figures from the admin's unit's cgroup",
        &format!(
            "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service MemoryBytes",
            bus_escape(hello)
        ),
        |o| o.success() && number(&o.stdout) > 0.0,
    );

    // Restart: a new process.
    let pid = m.prop(unit, "MainPID");
    m.ok(&format!("stackctl restart {hello}"));
    let now = m.prop(unit, "MainPID");
    assert_eq!(m.prop(unit, "ActiveState"), "active");
    assert!(
        now != pid && now != "0",
        "stackctl restart did not restart {unit} (MainPID {pid} → {now})"
    );

    // A stop is kept across a restart of stackd.
    m.ok(&format!("stackctl stop {hello}"));
    assert_ne!(m.prop(unit, "ActiveState"), "active");
    m.ok("systemctl restart stackd");
    wait_started(m);
    thread::sleep(Duration::from_secs(2));
    assert_ne!(
        m.prop(unit, "ActiveState"),
        "active",
        "a restart of stackd started {unit}, which a person had stopped"
    );
    assert_eq!(service_prop(m, hello, "DesiredState"), "s \"stopped\"");
    let inactive = m.sh(&format!("stackctl status {hello}"));
    assert_eq!(inactive.code, 3, "status of a stopped service: {inactive}");

    // So is a start, and the running unit is left as it is.
    m.ok(&format!("stackctl start {hello}"));
    assert_eq!(m.prop(unit, "ActiveState"), "active");
    let pid = m.prop(unit, "MainPID");
    m.ok("systemctl restart stackd");
    wait_started(m);
    m.wait_for(
        Duration::from_secs(30),
        "stackd to see the admin's unit active",
        &format!(
            "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service ActiveState",
            bus_escape(hello)
        ),
        |o| o.stdout.trim() == "s \"active\"",
    );
    assert_eq!(
        m.prop(unit, "MainPID"),
        pid,
        "a restart of stackd restarted {unit}"
    );

    // Its process killed: recovered from Result=signal (the unit has no
    // Restart= of its own).
    let restarts = number(&service_prop(m, hello, "RestartCount"));
    m.ok(&format!("kill -9 {pid}"));
    m.wait_for(
        Duration::from_secs(60),
        "stackd to bring the admin's killed unit back",
        &format!("systemctl show -p MainPID -p ActiveState {unit}"),
        |o| {
            o.stdout.contains("ActiveState=active\n")
                && !o.stdout.contains(&format!("MainPID={pid}\n"))
                && !o.stdout.contains("MainPID=0\n")
        },
    );
    assert_eq!(m.prop(unit, "NRestarts"), "0");
    m.wait_for(
        Duration::from_secs(30),
        "the recovery of the admin's unit counted in RestartCount",
        &format!(
            "busctl get-property org.stackd1 /org/stackd1/service/{} org.stackd1.Service RestartCount",
            bus_escape(hello)
        ),
        |o| o.success() && number(&o.stdout) > restarts,
    );
    assert_eq!(m.ok("curl -s http://127.0.0.1:8090/"), "hello from a unit");

    // A person's `systemctl stop hello` stays stopped.
    m.ok(&format!("systemctl stop {unit}"));
    m.wait_for(
        Duration::from_secs(30),
        "stackd to take systemctl stop hello for a person's",
        &format!("stackctl status {hello}"),
        |o| o.stdout.contains("stopped outside stackd (systemctl stop)"),
    );
    thread::sleep(Duration::from_secs(3));
    assert_ne!(
        m.prop(unit, "ActiveState"),
        "active",
        "stackd undid a person's systemctl stop {unit}"
    );
    m.ok(&format!("stackctl start {hello}"));
    assert_eq!(m.prop(unit, "ActiveState"), "active");
}

/// `stackctl -H sdhost` from another host of the cluster: a stackd of
/// this test's outside the machine (on a private bus, with its own state
/// and a cluster file naming both hosts) relays status, stop and start of
/// the machine's unit service to the machine's peer endpoint
/// (stackd.socket's port 7780, at the machine's address).
fn remote(m: &Machine, hello: &str) {
    if !require(
        "dbus-daemon",
        common::have_bus(),
        "apt-get install dbus-daemon",
    ) {
        return;
    }
    let ip = run(
        Command::new("docker").args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &m.name,
        ]),
        Duration::from_secs(30),
    )
    .expect_success()
    .stdout
    .trim()
    .to_owned();
    let env = common::TestEnv::new("systemd_remote");
    let bus = common::Bus::start(env.dir());
    let token = env.dir().join("peer.token");
    std::fs::write(&token, m.ok("cat /etc/stackd/peer.token")).expect("token");
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod token");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    env.write_config(&format!(
        "[peer]\nlisten = \"127.0.0.1:{port}\"\ntoken_file = {}\n\n\
         [hosts.{}]\npeer = \"http://127.0.0.1:{port}\"\n\n\
         [hosts.sdhost]\npeer = \"http://{ip}:7780\"\n",
        common::toml_str(&token.display().to_string()),
        common::HOST,
    ));
    let _outside = common::Daemon::start(&env, &bus);
    let ctl = |args: &[&str]| {
        let mut all = vec!["-H", "sdhost"];
        all.extend_from_slice(args);
        common::stackctl(&env, &bus, &all)
    };
    let status = ctl(&["status", hello]);
    assert!(
        status.success() && status.stdout.contains("active (running)"),
        "stackctl -H sdhost status {hello}: {status}"
    );
    let stop = ctl(&["stop", hello]);
    assert!(stop.success(), "stackctl -H sdhost stop {hello}: {stop}");
    m.wait_for(
        Duration::from_secs(30),
        "the relayed stop to stop hello.service",
        "systemctl is-active hello.service",
        |o| o.stdout.trim() != "active",
    );
    let status = ctl(&["status", hello]);
    assert!(
        !status.success() && status.stdout.contains("inactive"),
        "stackctl -H sdhost status of the stopped {hello}: {status}"
    );
    let start = ctl(&["start", hello]);
    assert!(start.success(), "stackctl -H sdhost start {hello}: {start}");
    m.wait_for(
        Duration::from_secs(30),
        "the relayed start to start hello.service",
        "systemctl is-active hello.service",
        |o| o.stdout.trim() == "active",
    );
    assert_eq!(m.ok("curl -s http://127.0.0.1:8090/"), "hello from a unit");
}

/// `stackd --user` as the package means a user to run it: the user unit
/// `stackd.service` in a lingering user's systemd (`loginctl
/// enable-linger` starts user@UID.service and the user's bus). A config of
/// one unit service, and a user who may not use Docker: the transient
/// unit runs in the user's manager, is recovered after a kill, and
/// stops and starts through `stackctl --user`.
fn user_mode(m: &Machine, prefix: &str) {
    m.ok("useradd --create-home uma");
    let uid = m.ok("id -u uma");
    m.ok("loginctl enable-linger uma");
    m.wait_for(
        Duration::from_secs(60),
        "uma's systemd and session bus",
        &format!("systemctl is-active user@{uid}.service && test -S /run/user/{uid}/bus"),
        Output::success,
    );
    let as_uma = |cmd: &str| format!("runuser -u uma -- env XDG_RUNTIME_DIR=/run/user/{uid} {cmd}");
    let svc = format!("{prefix}-mine");
    let unit = format!("stackd-{svc}.service");
    let user_show = |prop: &str| {
        m.ok(&as_uma(&format!(
            "systemctl --user show -p {prop} --value {unit}"
        )))
    };
    m.ok("mkdir -p /home/uma/.config/stackd /home/uma/stacks");
    m.write(
        "/home/uma/.config/stackd/stackd.toml",
        &format!(
            "# uma's own stackd (tests/systemd.rs).\n\
             compose_dir = \"/home/uma/stacks\"\n\
             \n[services.{svc}]\n\
             kind = \"unit\"\n\
             exec = [\"/usr/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"127.0.0.1:8093\", \"-h\", \"/srv/www\"]\n\
             auto_start = true\n\
             health = {{ http = \"http://127.0.0.1:8093/\", interval = \"1s\", retries = 2 }}\n\
             restart = {{ max_restarts = 100, backoff = \"100ms\" }}\n"
        ),
    );
    m.ok("chown -R uma: /home/uma");
    let docker = m.sh(&as_uma("docker version --format '{{.Server.Version}}'"));
    eprintln!(
        "Docker for uma: {}",
        if docker.success() {
            "reachable"
        } else {
            "not reachable"
        }
    );
    m.ok(&as_uma("stackd --user --check-config"));
    m.ok(&as_uma("systemctl --user enable --now stackd.service"));
    m.wait_for(
        Duration::from_secs(60),
        "uma's stackd to be active",
        &as_uma("systemctl --user is-active stackd.service"),
        |o| o.stdout.trim() == "active",
    );
    m.wait_for(
        Duration::from_secs(60),
        "uma's unit service to start in uma's systemd",
        &as_uma(&format!("systemctl --user show -p ActiveState {unit}")),
        |o| o.stdout.contains("ActiveState=active"),
    );
    assert_eq!(m.ok("curl -s http://127.0.0.1:8093/"), "hello from a unit");
    // The user's manager, not the system's.
    assert_eq!(m.prop(&unit, "LoadState"), "not-found");
    let status = m.ok(&as_uma(&format!("stackctl --user status {svc}")));
    assert!(status.contains("active (running)"), "{status}");
    eprintln!(
        "uma's stackd: {}\n{status}",
        m.ok(&as_uma(
            "systemctl --user show -p StatusText --value stackd.service"
        ))
    );

    // Its process killed: stackd brings it back.
    let pid = user_show("MainPID");
    m.ok(&format!("kill -9 {pid}"));
    m.wait_for(
        Duration::from_secs(60),
        "uma's stackd to bring the killed unit back",
        &as_uma(&format!(
            "systemctl --user show -p MainPID -p ActiveState {unit}"
        )),
        |o| {
            o.stdout.contains("ActiveState=active\n")
                && !o.stdout.contains(&format!("MainPID={pid}\n"))
                && !o.stdout.contains("MainPID=0\n")
        },
    );

    // Stop and start through stackctl --user.
    m.ok(&as_uma(&format!("stackctl --user stop {svc}")));
    assert_ne!(user_show("ActiveState"), "active");
    assert!(!m.sh("curl -s http://127.0.0.1:8093/").success());
    m.ok(&as_uma(&format!("stackctl --user start {svc}")));
    assert_eq!(user_show("ActiveState"), "active");
    assert_eq!(m.ok("curl -s http://127.0.0.1:8093/"), "hello from a unit");
}

/// The units bench, printed: a death of the transient unit → running
/// again (active, a new main PID) through stackd, against systemd's own
/// `Restart=on-failure` (RestartSec= at its 100ms default) on the same
/// binary. Timed inside the machine, polling `systemctl show` every 5 ms.
/// Rounds alternate between the two; figures only, nothing asserted.
fn bench(m: &Machine, unit: &str) {
    let own = "stackd-bench-own.service";
    m.ok(&format!(
        "systemd-run --unit {own} -p Type=exec -p Restart=on-failure \
         -p StartLimitIntervalSec=0 \
         /usr/bin/busybox httpd -f -p 127.0.0.1:8089 -h /srv/www"
    ));
    m.write(
        "/usr/local/bin/stackd-bench-death",
        "#!/bin/bash\n\
         # Prints the µs from kill -9 of UNIT's main process to UNIT active\n\
         # with another main PID.\n\
         unit=$1\n\
         pid=$(systemctl show -p MainPID --value \"$unit\")\n\
         t0=$(date +%s%6N)\n\
         kill -9 \"$pid\"\n\
         while :; do\n\
         \x20   s=$(systemctl show -p MainPID -p ActiveState \"$unit\")\n\
         \x20   new=$(sed -n 's/^MainPID=//p' <<<\"$s\")\n\
         \x20   if grep -qx ActiveState=active <<<\"$s\" && [[ $new != 0 && $new != \"$pid\" ]]; then break; fi\n\
         \x20   sleep 0.005\n\
         done\n\
         echo $(( $(date +%s%6N) - t0 ))",
    );
    m.ok("chmod +x /usr/local/bin/stackd-bench-death");
    let rounds = 9;
    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for _ in 0..rounds {
        for (target, into) in [(unit, &mut ours), (own, &mut theirs)] {
            // Settled: running, and stackd's view caught up.
            thread::sleep(Duration::from_millis(1500));
            let us: f64 = m
                .ok(&format!("timeout 60 stackd-bench-death {target}"))
                .parse()
                .expect("µs");
            into.push(us / 1000.0);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, t) = (median(&mut ours), median(&mut theirs));
    eprintln!(
        "BENCH units: death -> running again, median of {rounds}: through stackd {o:.0} ms \
         {ours:.0?}, systemd Restart=on-failure {t:.0} ms {theirs:.0?}, ratio {:.2}x (goal <= 1.2x)",
        o / t
    );
    m.ok(&format!("systemctl stop {own}"));
}
