//! The files under `dbus/` and `systemd/` that ship with stackd, checked
//! against the real things that read them:
//!
//! - `dbus/org.stackd1.xml` is exactly what the daemon serves for its three
//!   interfaces (regenerate it with `STACKD_WRITE_XML=1 cargo test --test
//!   introspection`), and every method in it is named in the bus policy;
//! - `dbus/org.stackd1.conf` is a policy `dbus-daemon` loads, and on a bus
//!   with a system-like default policy it lets everyone read and call, and
//!   lets only root own the name (the daemon then refuses the changes);
//! - `systemd/stackd.service` passes `systemd-analyze verify`.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{busctl, which, Bus, Daemon, TestEnv, COMMAND_TIMEOUT};

/// Setting this to 1 rewrites `dbus/org.stackd1.xml` from the running daemon.
const WRITE_XML: &str = "STACKD_WRITE_XML";
/// The image of the one configured service, which these tests never start
/// (`auto_start = false`): they need no Docker and no test image.
const NEVER_STARTED: &str = "stackd-test/never-started:0";
const INTERFACES: [&str; 3] = [
    "org.stackd1.Manager",
    "org.stackd1.Service",
    "org.stackd1.Task",
];

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---------------------------------------------------------------------------
// A small parser for introspection XML: enough to cut out <interface> elements
// ---------------------------------------------------------------------------

/// The pieces of an XML text in order, as (offset, piece): comments
/// (`<!-- … -->`, which zbus fills with the methods' doc comments and which
/// may hold `<` and `>`), other markup (`<…>`), and the text between them.
fn tokens(xml: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < xml.len() {
        let rest = &xml[at..];
        let len = if rest.starts_with("<!--") {
            rest.find("-->").map_or(rest.len(), |e| e + 3)
        } else if rest.starts_with('<') {
            rest.find('>').map_or(rest.len(), |e| e + 1)
        } else {
            rest.find('<').unwrap_or(rest.len())
        };
        out.push((at, &rest[..len]));
        at += len;
    }
    out
}

/// Every `<interface name="org.stackd1.…">` element of the outermost
/// `<node>` (zbus also inlines every child object's introspection, nested
/// `<node>`s, which are left out), as (name, the element's text as served).
fn stackd_interfaces(xml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut open: Option<(String, usize)> = None;
    for (at, piece) in tokens(xml) {
        if piece.starts_with("<node") {
            if !piece.ends_with("/>") {
                depth += 1;
            }
        } else if piece.starts_with("</node") {
            depth = depth.saturating_sub(1);
        } else if depth == 1 && piece.starts_with("<interface") {
            let name = attribute(piece, "name").unwrap_or_default();
            if piece.ends_with("/>") {
                if name.starts_with("org.stackd1.") {
                    out.push((name, piece.to_owned()));
                }
            } else {
                open = Some((name, at));
            }
        } else if depth == 1 && piece.starts_with("</interface") {
            if let Some((name, start)) = open.take() {
                if name.starts_with("org.stackd1.") {
                    out.push((name, xml[start..at + piece.len()].to_owned()));
                }
            }
        }
    }
    out
}

/// The value of `attr="…"` in the first tag of `element`.
fn attribute(element: &str, attr: &str) -> Option<String> {
    let tag = &element[..element.find('>')?];
    let key = format!("{attr}=\"");
    let mut from = 0;
    while let Some(found) = tag[from..].find(&key) {
        let at = from + found;
        if tag[..at].ends_with(char::is_whitespace) {
            let value = &tag[at + key.len()..];
            return Some(value[..value.find('"')?].to_owned());
        }
        from = at + key.len();
    }
    None
}

/// One tag, comment or text run a line, whitespace collapsed: the form
/// compared, and the lines a mismatch is shown in.
fn normalise(xml: &str) -> Vec<String> {
    tokens(xml)
        .into_iter()
        .map(|(_, piece)| piece.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|piece| !piece.is_empty())
        .collect()
}

/// A unified-style diff of two line lists (longest common subsequence;
/// the inputs are a few hundred lines at most).
fn diff(expected: &[String], actual: &[String]) -> String {
    let (n, m) = (expected.len(), actual.len());
    let mut lcs = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if expected[i] == actual[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && expected[i] == actual[j] {
            out.push_str(&format!("  {}\n", expected[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", expected[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", actual[j]));
            j += 1;
        }
    }
    out
}

// ---------------------------------------------------------------------------
// dbus/org.stackd1.xml against the running daemon
// ---------------------------------------------------------------------------

/// `busctl introspect --xml-interface` of `path`: the XML as served.
#[track_caller]
fn introspect(bus: &Bus, path: &str) -> String {
    busctl(bus, &["introspect", "--xml-interface", "org.stackd1", path])
        .expect_success()
        .stdout
}

/// The one org.stackd1.* interface served at `path`, which must be `want`.
#[track_caller]
fn served_interface(bus: &Bus, path: &str, want: &str) -> String {
    let found = stackd_interfaces(&introspect(bus, path));
    let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, [want], "interfaces served at {path}");
    found
        .into_iter()
        .next()
        .map(|(_, xml)| xml)
        .unwrap_or_default()
}

/// Starts a daemon with one service, has it queue a task, and returns the
/// introspection document for the three interfaces as the daemon serves
/// them: the DOCTYPE the daemon sends, then one `<node>` holding them.
fn served_document() -> Option<String> {
    if !common::have_bus() {
        return None;
    }
    let env = TestEnv::new("introspection");
    // The daemon needs no Docker for this: the service is known from the
    // config, and Apply queues a reconcile task whatever Docker says; its
    // image is never asked for.
    let service = env.add_project("web", &common::sleeper_compose(NEVER_STARTED));
    env.write_config(&format!("[services.{service}]\nauto_start = false\n"));
    let bus = Bus::start(env.dir());
    let _daemon = Daemon::start(&env, &bus);

    let applied = busctl(
        &bus,
        &[
            "--json=short",
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "Apply",
        ],
    )
    .expect_success();
    let reply: serde_json::Value = serde_json::from_str(&applied.stdout)
        .unwrap_or_else(|e| panic!("Apply printed no JSON ({e}): {applied}"));
    let task = reply["data"][0][0]
        .as_str()
        .unwrap_or_else(|| panic!("Apply returned no task path: {applied}"))
        .to_owned();
    assert!(task.starts_with("/org/stackd1/task/"), "{task}");
    let service_path = format!(
        "/org/stackd1/service/{}",
        stackd::dbus::path::escape(&service)
    );

    let manager_xml = introspect(&bus, "/org/stackd1");
    let doctype = manager_xml
        .find("<node")
        .map(|at| manager_xml[..at].trim_start().to_owned())
        .unwrap_or_default();
    let mut doc = doctype;
    doc.push_str("<node>\n");
    for (path, iface) in [
        ("/org/stackd1", INTERFACES[0]),
        (service_path.as_str(), INTERFACES[1]),
        (task.as_str(), INTERFACES[2]),
    ] {
        doc.push_str("  ");
        doc.push_str(served_interface(&bus, path, iface).trim());
        doc.push('\n');
    }
    doc.push_str("</node>\n");
    Some(doc)
}

#[test]
fn introspection_xml_is_what_the_daemon_serves() {
    let Some(served) = served_document() else {
        return;
    };
    let file = repo_file("dbus/org.stackd1.xml");
    if std::env::var(WRITE_XML).as_deref() == Ok("1") {
        fs::write(&file, &served).unwrap_or_else(|e| panic!("write {}: {e}", file.display()));
        eprintln!("{WRITE_XML}=1: wrote {}", file.display());
        return;
    }
    let stored = fs::read_to_string(&file).unwrap_or_default();
    let stored_ifaces: Vec<(String, String)> = stackd_interfaces(&stored);
    let names: Vec<&str> = stored_ifaces.iter().map(|(n, _)| n.as_str()).collect();
    let expected: Vec<String> = stored_ifaces
        .iter()
        .flat_map(|(_, xml)| normalise(xml))
        .collect();
    let actual: Vec<String> = stackd_interfaces(&served)
        .iter()
        .flat_map(|(_, xml)| normalise(xml))
        .collect();
    assert!(
        names == INTERFACES && expected == actual,
        "{} is not what the daemon serves (it holds {names:?}; \
         - lines are only in the file, + lines only on the bus):\n{}\n\
         If the D-Bus API changed on purpose, regenerate the file:\n    \
         {WRITE_XML}=1 cargo test --test introspection introspection_xml\n\
         and review the change with `git diff dbus/org.stackd1.xml`.",
        file.display(),
        diff(&expected, &actual)
    );
}

/// The bus policy lists the methods a non-root caller may send one by one
/// (as systemd's does), so a method added to the API without a line in
/// `org.stackd1.conf` would be refused by the system bus for everyone but
/// root. Keep the two in step.
#[test]
fn every_method_is_named_in_the_bus_policy() {
    let xml = fs::read_to_string(repo_file("dbus/org.stackd1.xml")).expect("dbus/org.stackd1.xml");
    let policy =
        fs::read_to_string(repo_file("dbus/org.stackd1.conf")).expect("dbus/org.stackd1.conf");
    // Each (interface, member) pair the policy allows, from its <allow> tags.
    let allowed: Vec<(String, String)> = tokens(&policy)
        .into_iter()
        .filter(|(_, piece)| piece.starts_with("<allow"))
        .filter_map(|(_, tag)| {
            Some((
                attribute(tag, "send_interface")?,
                attribute(tag, "send_member")?,
            ))
        })
        .collect();
    let mut missing = Vec::new();
    for (iface, element) in stackd_interfaces(&xml) {
        for (_, tag) in tokens(&element) {
            if !tag.starts_with("<method") {
                continue;
            }
            let method = attribute(tag, "name").unwrap_or_default();
            if !allowed.contains(&(iface.clone(), method.clone())) {
                missing.push(format!("{iface}.{method}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "dbus/org.stackd1.conf does not let non-root callers send {missing:?}; \
         add an <allow send_destination=\"org.stackd1\" send_interface=… send_member=…/> \
         for each (the daemon authorizes changes itself)"
    );
}

// ---------------------------------------------------------------------------
// dbus/org.stackd1.conf on a real dbus-daemon
// ---------------------------------------------------------------------------

#[test]
fn dbus_daemon_accepts_the_bus_policy() {
    if !common::require(
        "dbus-daemon",
        which("dbus-daemon").is_some(),
        "apt-get install dbus-daemon",
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let policy = repo_file("dbus/org.stackd1.conf");
    if let Err(log) = common::Bus::start_system_like(dir.path(), &policy) {
        panic!(
            "dbus-daemon refused a config that includes {}:\n{log}",
            policy.display()
        );
    }
    // The check has teeth: an <include> of a broken file stops the bus.
    let broken = dir.path().join("broken.conf");
    fs::write(&broken, "<busconfig><policy user=\"root\"></busconfig>").expect("broken.conf");
    let other = dir.path().join("other");
    fs::create_dir(&other).expect("dir");
    assert!(
        common::Bus::start_system_like(&other, &broken).is_err(),
        "dbus-daemon started with a broken included file; this test proves nothing"
    );
}

/// On a bus with the system bus's default policy plus ours: anyone may read
/// (uid 65534 lists services), anyone may *send* a change and the daemon
/// answers `org.stackd1.Error.AccessDenied` (not the bus's AccessDenied), and
/// nobody but root may own the name.
#[test]
fn the_bus_policy_lets_everyone_ask_and_the_daemon_decide() {
    if !common::have_bus() || !common::have_setpriv() {
        return;
    }
    if !nix::unistd::Uid::effective().is_root() {
        common::skip_line("SKIP: needs root (the policy lets only root own org.stackd1)");
        return;
    }
    let env = TestEnv::new("policy");
    let service = env.add_project("web", &common::sleeper_compose(NEVER_STARTED));
    env.write_config(&format!("[services.{service}]\nauto_start = false\n"));
    let bus_dir = env.dir().join("system-bus");
    fs::create_dir(&bus_dir).expect("bus dir");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&bus_dir, fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let bus = common::Bus::start_system_like(&bus_dir, &repo_file("dbus/org.stackd1.conf"))
        .unwrap_or_else(|log| panic!("dbus-daemon would not start:\n{log}"));
    // common::Bus always starts the harness's permissive bus, so this test
    // runs busctl (as root, or as `uid` through setpriv) against its own.
    let busctl_at = |uid: Option<u32>, args: &[&str]| {
        let mut cmd = match uid {
            None => Command::new("busctl"),
            Some(uid) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={uid}"))
                    .arg(format!("--regid={uid}"))
                    .arg("--clear-groups")
                    .arg("busctl");
                c
            }
        };
        cmd.arg(format!("--address={}", bus.address())).args(args);
        common::run(&mut cmd, COMMAND_TIMEOUT)
    };
    // The harness's daemon, on this bus instead of its permissive one:
    // READY=1 comes after the name is taken, so it owns org.stackd1 here.
    let daemon = Daemon::start(&env, &bus);
    let owner = busctl_at(None, &["status", "org.stackd1"]);
    assert!(owner.success(), "stackd does not own its name: {owner}");

    let nobody = Some(65534);
    let read = busctl_at(
        nobody,
        &[
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "ListServices",
        ],
    );
    assert!(read.success(), "uid 65534 may read: {read}");
    let prop = busctl_at(
        nobody,
        &[
            "get-property",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "Version",
        ],
    );
    assert!(prop.success(), "uid 65534 may read properties: {prop}");
    let intro = busctl_at(nobody, &["introspect", "org.stackd1", "/org/stackd1"]);
    assert!(intro.success(), "uid 65534 may introspect: {intro}");

    let change = busctl_at(
        nobody,
        &[
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "StopService",
            "s",
            &service,
        ],
    );
    assert!(!change.success(), "uid 65534 stopped a service: {change}");
    assert!(
        change.stderr.contains("may not do this") || change.stderr.contains("stackd1"),
        "the refusal must come from stackd (org.stackd1.Error.AccessDenied), \
         not from the bus policy: {change}"
    );
    assert!(
        !change
            .stderr
            .to_ascii_lowercase()
            .contains("rejected send message"),
        "the bus policy refused the call before stackd could decide: {change}"
    );

    // Setting a property is not allowed by the policy (there are none to set).
    let set = busctl_at(
        nobody,
        &[
            "set-property",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "Host",
            "s",
            "x",
        ],
    );
    assert!(!set.success(), "uid 65534 set a property: {set}");

    // Owning the name is root's alone: a second stackd as uid 65534 fails
    // on the policy, whatever else it finds.
    let own = busctl_as_raw(bus.address(), 65534);
    assert!(
        own.to_ascii_lowercase().contains("access denied")
            || own.contains("AccessDenied")
            || own.contains("not allowed to own"),
        "uid 65534 could ask to own org.stackd1: {own}"
    );
    drop(daemon);
}

/// Tries to own org.stackd1 as `uid` (through `dbus-send` to the bus
/// driver's RequestName) and returns what came back.
fn busctl_as_raw(address: &str, uid: u32) -> String {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("busctl")
        .arg(format!("--address={address}"))
        .args([
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus",
            "RequestName",
            "su",
            "org.stackd1",
            "4",
        ]);
    let out = common::run(&mut cmd, COMMAND_TIMEOUT);
    format!("{out}")
}

// ---------------------------------------------------------------------------
// systemd/stackd.service
// ---------------------------------------------------------------------------

#[test]
fn systemd_analyze_verifies_the_unit() {
    analyze_verify("stackd.service");
}

#[test]
fn systemd_analyze_verifies_the_socket() {
    analyze_verify("stackd.socket");
}

/// `systemd-analyze verify` on `systemd/<unit>`, next to a copy of
/// stackd.service whose ExecStart= is the binary just built.
fn analyze_verify(unit: &str) {
    if !common::require(
        "systemd-analyze",
        which("systemd-analyze").is_some(),
        "apt-get install systemd",
    ) {
        return;
    }
    let service = fs::read_to_string(repo_file("systemd/stackd.service")).expect("stackd.service");
    // verify checks that ExecStart= exists: point it at the binary just built.
    let binary = env!("CARGO_BIN_EXE_stackd");
    let mut replaced = 0;
    let text: String = service
        .lines()
        .map(|line| {
            if line.starts_with("ExecStart=") {
                replaced += 1;
                format!("ExecStart={binary}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    assert_eq!(replaced, 1, "stackd.service must have one ExecStart= line");
    let dir = tempfile::tempdir().expect("temp dir");
    fs::write(dir.path().join("stackd.service"), text).expect("unit copy");
    let copy = dir.path().join(unit);
    if unit != "stackd.service" {
        let text = fs::read_to_string(repo_file(&format!("systemd/{unit}"))).expect("unit");
        fs::write(&copy, text).expect("unit copy");
    }
    // --man=no: Documentation=man:stackd(8) is installed with the package,
    // not on a build machine.
    let out = common::run(
        Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy)
            .env("SYSTEMD_LOG_LEVEL", "notice"),
        COMMAND_TIMEOUT,
    );
    // Units the service only orders itself after or wants (docker.service on
    // a machine without Docker's unit) may be missing; anything else is a
    // problem with the unit.
    let problems: Vec<&str> = out
        .stderr
        .lines()
        .chain(out.stdout.lines())
        .filter(|l| !l.trim().is_empty())
        .filter(|l| !is_missing_unit(l))
        .collect();
    assert!(
        problems.is_empty() && (out.success() || only_missing_units(&out.stderr)),
        "systemd-analyze verify complains about systemd/{unit}:\n{}\n{out}",
        problems.join("\n")
    );
}

fn is_missing_unit(line: &str) -> bool {
    let l = line.to_ascii_lowercase();
    (l.contains("docker.service") || l.contains("docker.socket") || l.contains("network-online"))
        && (l.contains("not found") || l.contains("failed to load") || l.contains("no such file"))
}

fn only_missing_units(stderr: &str) -> bool {
    stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .all(is_missing_unit)
}

#[test]
fn normalise_and_diff_work() {
    let a = normalise("<node>\n  <interface name=\"org.stackd1.X\">\n    <method name=\"A\"/>\n  </interface>\n</node>");
    assert_eq!(
        a,
        [
            "<node>",
            "<interface name=\"org.stackd1.X\">",
            "<method name=\"A\"/>",
            "</interface>",
            "</node>"
        ]
    );
    let ifaces = stackd_interfaces(
        "<node><interface name=\"org.freedesktop.DBus.Peer\"><method name=\"Ping\"/></interface>\
         <interface name=\"org.stackd1.X\"><!-- a <b> --><method name=\"A\"/></interface><node name=\"t\"/>\
         <node name=\"c\"><interface name=\"org.stackd1.Y\"></interface></node></node>",
    );
    assert_eq!(ifaces.len(), 1);
    assert_eq!(ifaces[0].0, "org.stackd1.X");
    let d = diff(&["a".into(), "b".into()], &["a".into(), "c".into()]);
    assert_eq!(d, "  a\n- b\n+ c\n");
}

// ---------------------------------------------------------------------------
// systemd/stackd.catalog
// ---------------------------------------------------------------------------

/// Every `pub const MESSAGE_…` in src/systemd/mod.rs has a catalog entry,
/// and journalctl compiles the catalog and lists exactly those ids.
#[test]
fn the_journal_catalog_explains_every_message_id() {
    let source = fs::read_to_string(repo_file("src/systemd/mod.rs")).expect("src/systemd/mod.rs");
    let ids: Vec<String> = source
        .lines()
        .filter(|l| l.trim_start().starts_with("pub const MESSAGE_"))
        .filter_map(|l| l.split('"').nth(1).map(str::to_owned))
        .collect();
    assert!(!ids.is_empty(), "no MESSAGE_ constants found");
    let catalog = fs::read_to_string(repo_file("systemd/stackd.catalog")).expect("stackd.catalog");
    let entries: Vec<String> = catalog
        .lines()
        .filter_map(|l| l.strip_prefix("-- "))
        .map(|id| id.trim().to_owned())
        .collect();
    let missing: Vec<&String> = ids.iter().filter(|id| !entries.contains(id)).collect();
    assert!(
        missing.is_empty(),
        "systemd/stackd.catalog has no entry for {missing:?} (MESSAGE_IDs from src/systemd/mod.rs)"
    );

    if !common::require(
        "journalctl",
        which("journalctl").is_some(),
        "apt-get install systemd",
    ) {
        return;
    }
    // Compile the catalog into a scratch root, as `journalctl --update-catalog`
    // does at package installation, then list what it holds.
    let root = tempfile::tempdir().expect("temp dir");
    let dir = root.path().join("usr/lib/systemd/catalog");
    fs::create_dir_all(&dir).expect("catalog dir");
    fs::create_dir_all(root.path().join("var/lib/systemd/catalog")).expect("database dir");
    fs::copy(
        repo_file("systemd/stackd.catalog"),
        dir.join("stackd.catalog"),
    )
    .expect("copy");
    let journalctl = |args: &[&str]| {
        common::run(
            Command::new("journalctl")
                .arg(format!("--root={}", root.path().display()))
                .args(args),
            COMMAND_TIMEOUT,
        )
    };
    let update = journalctl(&["--update-catalog"]).expect_success();
    assert!(
        update.stderr.trim().is_empty(),
        "journalctl complains about systemd/stackd.catalog:\n{update}"
    );
    let listed = journalctl(&["--list-catalog"]).expect_success();
    let mut got: Vec<&str> = listed
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    got.sort_unstable();
    let mut want: Vec<&str> = entries.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(
        got, want,
        "journalctl read other entries than the file has:\n{listed}"
    );
    for line in listed.stdout.lines() {
        assert!(
            line.contains(" stackd: "),
            "every entry needs Defined-By: stackd and a Subject: {line}"
        );
    }
}
