use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

fn opts(host: &str) -> LoadOptions {
    LoadOptions {
        user_mode: false,
        host_override: Some(host.to_owned()),
    }
}

/// Parses `text` as `/cfg/stackd.toml` without compose-file checks.
fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_str(text, Path::new("/cfg/stackd.toml"), &opts("nuc"), false)
}

/// The error's lines, as printed.
fn errors(r: Result<Config, ConfigError>) -> Vec<String> {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string().lines().map(str::to_owned).collect(),
    }
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).unwrap();
    }
    fs::write(path, text).unwrap();
}

/// A temp dir with `stacks/NAME/compose.yaml` for each name.
fn stacks(names: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    for n in names {
        write(
            &tmp.path().join("stacks").join(n).join("compose.yaml"),
            "services: {}\n",
        );
    }
    let dir = tmp.path().join("stacks");
    (tmp, dir)
}

const DESIGN_SAMPLE: &str = r#"compose_dir = "/opt/stacks"
state_dir   = "/var/lib/stackd"        # default
compose_command = "auto"               # auto | "docker compose" | "docker-compose"
max_parallel = 4                       # tasks at once on this host
admin_group = "stackd"                 # members may change state over D-Bus
# boot_id_file = "/proc/sys/kernel/random/boot_id"   # tests point it elsewhere to simulate a reboot

[hosts.nuc]
peer = "https://192.168.1.10:7780"
[hosts.hp]
peer = "https://192.168.1.11:7780"

[peer]
listen = "0.0.0.0:7780"                # ignored when systemd hands over a socket
token_file = "/etc/stackd/peer.token"
# tls_cert / tls_key optional

[services.plex]
host = "nuc"                           # a host, a list of hosts, or "all"
auto_start = true
depends_on = ["db"]
conflicts = []
health = { http = "http://127.0.0.1:32400/identity", interval = "10s", timeout = "5s", retries = 3, start_period = "30s" }
restart = { on_failure = true, max_restarts = 5, window = "10m", backoff = "5s..5m" }
resources = { cpu_percent = 90, memory_percent = 90, sustain = "30s" }
handoff = "stop-first"                 # or "overlap" for stateless services (see hand-off rule)

[notify]
min_severity = "warning"
[notify.email]
smtp = "smtp://mail.lan:25"
from = "stackd@nuc"
to = ["ops@example.com"]
[notify.webhook.ops]
url = "https://hooks.example/stackd"
format = "json"                        # json | ntfy | slack | discord
[notify.desktop]                       # Alert signal on the bus; stackctl notify-agent shows it
"#;

#[test]
fn design_sample_parses() {
    let (tmp, stacks) = stacks(&["plex", "db"]);
    // The sample's plex depends on `db`, which the sample does not define.
    let text = DESIGN_SAMPLE.replace("/opt/stacks", stacks.to_str().unwrap())
        + "\n[services.db]\nhost = \"nuc\"\n";
    let path = tmp.path().join("stackd.toml");
    write(&path, &text);

    let c = load(&path, &opts("nuc")).unwrap();
    assert_eq!(c.path, path);
    assert_eq!(c.files, vec![path.clone()]);
    assert_eq!(c.host, "nuc");
    assert_eq!(c.compose_dir, stacks);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/stackd"));
    assert_eq!(c.runtime_dir, PathBuf::from("/run/stackd"));
    assert_eq!(c.compose_command, ComposeCommand::Auto);
    assert_eq!(c.max_parallel, 4);
    assert_eq!(c.sample_interval, Duration::from_secs(5));
    assert_eq!(c.admin_group.as_deref(), Some("stackd"));
    assert_eq!(
        c.boot_id_file,
        PathBuf::from("/proc/sys/kernel/random/boot_id")
    );
    assert_eq!(
        c.hosts["hp"].peer.as_deref(),
        Some("https://192.168.1.11:7780")
    );
    let peer = c.peer.as_ref().unwrap();
    assert_eq!(peer.listen, "0.0.0.0:7780");
    assert_eq!(peer.token_file, PathBuf::from("/etc/stackd/peer.token"));
    assert_eq!(peer.timeout, Duration::from_secs(2));
    assert_eq!(peer.heartbeat, Duration::from_secs(5));

    let plex = c.service("plex").unwrap();
    assert_eq!(plex.hosts, HostSelector::List(vec!["nuc".into()]));
    assert!(plex.assigned_to("nuc") && !plex.assigned_to("hp"));
    assert_eq!(plex.depends_on, vec!["db".to_owned()]);
    assert_eq!(plex.dir, stacks.join("plex"));
    assert_eq!(plex.compose_file, stacks.join("plex/compose.yaml"));
    assert_eq!(plex.start_timeout, Duration::from_secs(120));
    let health = plex.health.as_ref().unwrap();
    assert_eq!(
        health.probe,
        Some(Probe::Http {
            url: "http://127.0.0.1:32400/identity".into(),
            expect_status: vec![(200, 399)],
            body_contains: None,
            tls_ca: None,
        })
    );
    assert_eq!(health.interval, Duration::from_secs(10));
    assert_eq!(health.timeout, Duration::from_secs(5));
    assert_eq!(health.retries, 3);
    assert_eq!(health.start_period, Duration::from_secs(30));
    assert_eq!(plex.restart, RestartConfig::default());
    let res = plex.resources.as_ref().unwrap();
    assert_eq!(res.cpu_percent, Some(90.0));
    assert_eq!(res.memory_percent, Some(90.0));
    assert_eq!(res.sustain, Duration::from_secs(30));
    assert_eq!(res.clear_ratio, 0.9);
    assert_eq!(plex.handoff, Handoff::StopFirst);
    assert_eq!(
        c.local_services()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["db", "plex"]
    );

    assert_eq!(c.notify.min_severity, Severity::Warning);
    let email = c.notify.email.as_ref().unwrap();
    assert_eq!(
        (
            email.smtp_host.as_str(),
            email.smtp_port,
            email.implicit_tls
        ),
        ("mail.lan", 25, false)
    );
    assert_eq!(email.to, vec!["ops@example.com".to_owned()]);
    assert_eq!(email.filter.min_severity, Severity::Warning);
    assert_eq!(c.notify.webhooks["ops"].format, WebhookFormat::Json);
    assert!(c.notify.desktop.is_some());
    assert_eq!(c.hash.len(), 16);

    // Seen from hp nothing runs there, so no compose file is needed.
    fs::remove_dir_all(&stacks).unwrap();
    let hp = load(&path, &opts("hp")).unwrap();
    assert_eq!(hp.local_services().count(), 0);
    assert_eq!(hp.hash, c.hash);
}

#[test]
fn example_file_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stackd.toml");
    let text = fs::read_to_string(&path).unwrap();
    let c = parse_str(&text, &path, &LoadOptions::default(), false).unwrap();
    assert_eq!(c.compose_dir, path.parent().unwrap().join("compose"));
    assert!(c.service("hello").is_some() && c.service("web").is_some());
}

#[test]
fn unknown_key_names_file_line_col() {
    let e = errors(parse(
        "max_parallel = 2\n\n[services.web]\nauto_start = true\n  bogus = 1\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:5:3: unknown field `bogus`, expected one of `host`,"),
        "{e:?}"
    );

    let e = errors(parse(
        "[services.web]\nhealth = { http = \"http://x\", intervall = \"1s\" }\n",
    ));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:31: unknown field `intervall`"),
        "{e:?}"
    );

    let e = errors(parse("colour = \"blue\"\n"));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:1:1: unknown field `colour`"),
        "{e:?}"
    );
}

#[test]
fn sample_interval_is_a_duration_from_1s_to_1h() {
    let c = parse("compose_dir = \"/s\"\nsample_interval = \"2s\"\n").unwrap();
    assert_eq!(c.sample_interval, Duration::from_secs(2));
    for bad in ["0s", "500ms", "2h"] {
        let e = errors(parse(&format!("sample_interval = \"{bad}\"\n")));
        assert_eq!(
            e,
            ["/cfg/stackd.toml:1:19: expected a sampling interval from 1s to 1h"],
            "{bad}"
        );
    }
}

#[test]
fn wrong_type_names_value() {
    let e = errors(parse("compose_dir = \"/s\"\nmax_parallel = \"four\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:16: invalid type: string \"four\", expected an integer"]
    );

    let e = errors(parse("[services.web]\nhost = 3\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:8: invalid type: integer `3`, expected a host name, a list of host names, or \"all\""]
    );

    let e = errors(parse("[services.web]\nauto_start = \"yes\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:14: invalid type: string \"yes\", expected a boolean"]
    );

    let e = errors(parse("[services]\nweb = \"x\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:7: invalid type: string \"x\", expected a [services.NAME] table"]
    );

    let e = errors(parse("[services.web]\ndepends_on = \"db\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:2:14: invalid type: string \"db\", expected a list of strings, e.g. [\"a\", \"b\"]"]
    );

    let e = errors(parse("[[services]]\nname = \"web\"\n"));
    assert_eq!(
        e,
        ["/cfg/stackd.toml:1:1: invalid type: sequence, expected tables written as [services.NAME]"]
    );

    // A table where a value belongs (the implicit table has no span of its own).
    let e = errors(parse("[services.web.host.x]\ny = 1\n"));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("/cfg/stackd.toml:1:"), "{e:?}");
}

#[test]
fn bad_values_are_located_and_all_reported() {
    let e = errors(parse(
        "compose_command = \"podman\"\nmax_parallel = 100\n\n[services.web]\n\
         start_timeout = \"10x\"\nhandoff = \"swap\"\nrestart = { backoff = \"5m..5s\" }\n",
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:1:19: unknown compose_command \"podman\": expected \"auto\", \"docker compose\" or \"docker-compose\"",
            "/cfg/stackd.toml:2:16: expected a number of tasks from 1 to 64",
            "/cfg/stackd.toml:5:17: invalid duration \"10x\": unknown unit \"x\"; expected a number followed by ms, s, m, h or d, e.g. \"500ms\", \"10s\", \"1m30s\"",
            "/cfg/stackd.toml:6:11: unknown handoff \"swap\": expected \"stop-first\" or \"overlap\"",
            "/cfg/stackd.toml:7:23: backoff minimum is above its maximum: expected \"MIN..MAX\" with MIN <= MAX",
        ]
    );
}

#[test]
fn bad_duration_in_inline_table() {
    let e = errors(parse(
        "[services.web]\nhealth = { tcp = \"127.0.0.1:80\", interval = \"ten\" }\n",
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:45: invalid duration \"ten\": missing number"),
        "{e:?}"
    );
}

#[test]
fn unknown_hosts() {
    let text = "[hosts.nuc]\n[hosts.hp]\n\n[services.web]\nhost = [\"nuc\", \"pi\"]\n\n[services.db]\nauto_start = false\n";
    let e = errors(parse(text));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:5:16: unknown host `pi`: expected one of `hp`, `nuc` or \"all\"",
            "/cfg/stackd.toml:7:1: service `db` does not say which host runs it: say which host runs it (one of `hp`, `nuc`), or host = \"all\"",
        ]
    );

    // Without [hosts] the only host is this one.
    let e = errors(parse("[services.web]\nhost = \"hp\"\n"));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:8: unknown host `hp`: [hosts] is empty"),
        "{e:?}"
    );
    let c = parse("[services.web]\nhost = \"nuc\"\n[services.all]\nhost = \"all\"\n").unwrap();
    assert_eq!(c.service("all").unwrap().hosts, HostSelector::All);
    assert_eq!(c.local_services().count(), 2);
}

#[test]
fn own_host_must_be_listed() {
    let text = "[hosts.nuc]\n[hosts.hp]\n";
    let e = errors(parse_str(
        text,
        Path::new("/cfg/stackd.toml"),
        &opts("pi"),
        false,
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:1:1: this host is `pi` (given on the command line)"),
        "{e:?}"
    );

    let no_override = LoadOptions::default();
    let text = "# cluster\nhost = \"pi\"\n[hosts.nuc]\n";
    let e = errors(parse_str(
        text,
        Path::new("/cfg/stackd.toml"),
        &no_override,
        false,
    ));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:8: this host is `pi` (from the host key)"),
        "{e:?}"
    );

    // One host: services without `host` run there.
    let c = parse("[hosts.nuc]\n[services.web]\n").unwrap();
    assert_eq!(
        c.service("web").unwrap().hosts,
        HostSelector::List(vec!["nuc".into()])
    );
}

#[test]
fn missing_compose_file_is_reported_at_header() {
    let (tmp, stacks) = stacks(&["web"]);
    fs::create_dir_all(stacks.join("db")).unwrap();
    let text = format!(
        "compose_dir = {:?}\n[hosts.nuc]\n[hosts.hp]\n\n[services.web]\nhost = \"all\"\n\n  [services.db]\nhost = \"nuc\"\n\n[services.far]\nhost = \"hp\"\n",
        stacks.to_str().unwrap()
    );
    let path = tmp.path().join("stackd.toml");
    write(&path, &text);
    let e = errors(load(&path, &opts("nuc")));
    assert_eq!(
        e,
        [format!(
            "{}:8:3: service `db` runs on this host but {} has no compose file (looked for compose.yaml, compose.yml, docker-compose.yml, docker-compose.yaml)",
            path.display(),
            stacks.join("db").display()
        )]
    );
    // The first name found wins.
    write(&stacks.join("db/docker-compose.yml"), "services: {}\n");
    write(&stacks.join("db/docker-compose.yaml"), "services: {}\n");
    let c = load(&path, &opts("nuc")).unwrap();
    assert_eq!(
        c.service("db").unwrap().compose_file,
        stacks.join("db/docker-compose.yml")
    );
}

#[test]
fn cycle_across_main_file_and_dropin() {
    let (tmp, stacks) = stacks(&["a", "b", "c"]);
    let path = tmp.path().join("stackd.toml");
    write(
        &path,
        &format!(
            "compose_dir = {:?}\n\n[services.a]\ndepends_on = [\"b\"]\n[services.b]\n[services.c]\ndepends_on = [\"c\", \"zz\"]\n",
            stacks.to_str().unwrap()
        ),
    );
    let dropin = tmp.path().join("stackd.d/50-b.toml");
    write(&dropin, "[services.b]\ndepends_on = [ \"a\" ]\n");
    let e = errors(load(&path, &opts("nuc")));
    assert_eq!(
        e,
        [
            format!(
                "{}:7:15: service `c` cannot depend on itself",
                path.display()
            ),
            format!(
                "{}:7:20: depends_on names unknown service `zz`: expected one of `a`, `b`, `c`",
                path.display()
            ),
            format!("{}:2:16: dependency cycle: b -> a -> b", dropin.display()),
        ]
    );

    let mut edges = std::collections::BTreeMap::new();
    let at = |offset| raw::At { file: 0, offset };
    edges.insert("x", vec![("y", at(1))]);
    edges.insert("y", vec![("z", at(3))]);
    edges.insert("z", vec![("x", at(2)), ("y", at(4))]);
    let cycles = build::find_cycles(&edges);
    assert_eq!(
        cycles,
        [
            (at(3), "dependency cycle: y -> z -> x -> y".to_owned()),
            (at(4), "dependency cycle: z -> y -> z".to_owned()),
        ]
    );
}

#[test]
fn dropins_merge_in_file_name_order() {
    let (tmp, stacks) = stacks(&["web", "db"]);
    let path = tmp.path().join("stackd.toml");
    write(
        &path,
        &format!(
            "compose_dir = {:?}\nmax_parallel = 2\n[services.web]\nstart_order = 3\nhealth = {{ tcp = \"127.0.0.1:80\", retries = 2 }}\n",
            stacks.to_str().unwrap()
        ),
    );
    let d = tmp.path().join("stackd.d");
    write(&d.join("20-later.toml"), "max_parallel = 8\n");
    write(
        &d.join("10-first.toml"),
        "max_parallel = 6\n[services.web]\nauto_start = false\nhealth.retries = 5\n\n[services.db]\n",
    );
    write(&d.join("notes.txt"), "not toml = [\n");
    write(&d.join(".hidden.toml"), "not toml = [\n");
    let c = load(&path, &opts("nuc")).unwrap();
    assert_eq!(
        c.files,
        vec![
            path.clone(),
            d.join("10-first.toml"),
            d.join("20-later.toml")
        ]
    );
    assert_eq!(c.max_parallel, 8);
    let web = c.service("web").unwrap();
    assert!(!web.auto_start);
    assert_eq!(web.start_order, 3);
    let health = web.health.as_ref().unwrap();
    assert_eq!(health.retries, 5);
    assert_eq!(
        health.probe,
        Some(Probe::Tcp {
            address: "127.0.0.1:80".into()
        })
    );
    assert!(c.service("db").unwrap().auto_start);

    // A parse error in a drop-in names the drop-in.
    write(
        &d.join("30-bad.toml"),
        "\n[services.web]\nauto_start = maybe\n",
    );
    let e = errors(load(&path, &opts("nuc")));
    assert_eq!(e.len(), 1);
    assert!(
        e[0].starts_with(&format!("{}:3:14: ", d.join("30-bad.toml").display())),
        "{e:?}"
    );
}

#[test]
fn missing_main_file_is_an_io_error() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("nope.toml");
    match load(&path, &opts("nuc")) {
        Err(ConfigError::Io { path: p, .. }) => assert_eq!(p, path),
        other => panic!("expected Io, got {other:?}"),
    }
}

#[test]
fn inline_password_is_refused() {
    let text = "[notify.email]\nsmtp = \"smtp://mail.lan\"\nfrom = \"a@b\"\nto = [\"c@d\"]\nusername = \"u\"\npassword = \"hunter2\"\n";
    let e = errors(parse(text));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e[0].starts_with("/cfg/stackd.toml:5:12: username needs password_file too"),
        "{e:?}"
    );
    assert!(
        e[1].starts_with("/cfg/stackd.toml:6:12: inline passwords are not allowed")
            && e[1].contains("password_file"),
        "{e:?}"
    );
    assert!(!e.concat().contains("hunter2"));

    let e = errors(parse("[notify.email]\nsmtp = \"smtp://u:pw@mail.lan\"\n"));
    assert!(
        e.iter()
            .any(|l| l.starts_with("/cfg/stackd.toml:2:8: invalid smtp URL")
                && l.contains("credentials in the URL are not allowed")),
        "{e:?}"
    );
}

#[test]
fn notify_channels() {
    let text = r#"
[services.web]
[notify]
min_severity = "info"
[notify.email]
smtp = "smtps://mail.example.com"
from = "stackd@example.com"
to = ["ops@example.com", "me@example.com"]
username = "stackd"
password_file = "smtp.password"
min_severity = "critical"
services = ["web"]
[notify.webhook.ntfy]
url = "https://ntfy.sh/stackd"
format = "ntfy"
secret_file = "/etc/stackd/hook.key"
kinds = ["spike"]
[notify.desktop]
"#;
    let c = parse(text).unwrap();
    let email = c.notify.email.as_ref().unwrap();
    assert_eq!((email.smtp_port, email.implicit_tls), (465, true));
    assert_eq!(email.starttls, None);
    assert_eq!(
        email.password_file.as_deref(),
        Some(Path::new("/cfg/smtp.password"))
    );
    assert_eq!(email.filter.min_severity, Severity::Critical);
    assert_eq!(email.filter.services, vec!["web".to_owned()]);
    let hook = &c.notify.webhooks["ntfy"];
    assert_eq!(hook.format, WebhookFormat::Ntfy);
    assert_eq!(hook.filter.min_severity, Severity::Info);
    assert_eq!(hook.filter.kinds, vec!["spike".to_owned()]);
    assert_eq!(
        c.notify.desktop.as_ref().unwrap().min_severity,
        Severity::Info
    );

    let e = errors(parse(
        "[notify]\nmin_severity = \"loud\"\n[notify.email]\nfrom = \"x@y\"\nservices = [\"ghost\"]\n[notify.webhook.x]\nformat = \"xml\"\n",
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:2:16: unknown severity \"loud\": expected \"info\", \"warning\" or \"critical\"",
            "/cfg/stackd.toml:4:8: [notify.email] needs smtp, to",
            "/cfg/stackd.toml:5:13: unknown service `ghost`: expected one of (no services are defined)",
            "/cfg/stackd.toml:6:1: [notify.webhook.x] needs url",
            "/cfg/stackd.toml:7:10: unknown format \"xml\": expected \"json\", \"ntfy\", \"slack\" or \"discord\"",
        ]
    );
}

#[test]
fn health_restart_resources() {
    let text = r#"
[resources]
memory = "2G"
cooldown = "1h"

[services.web]
health = { command = ["pg_isready", "-q"], container = "db", retries = 1 }
restart = { on_failure = false, max_restarts = 0, window = "1h", backoff = "1s..1m30s", manual_stop = "revert", retry_interval = "20s" }
resources = { memory = 536870912, clear_ratio = 0.5 }

[services.api]
health = { http = "https://127.0.0.1/ready", expect_status = "200,204-206", body_contains = "ok" }

[services.job]
health.file = "run/heartbeat"
health.max_age = "2m"
"#;
    let c = parse(text).unwrap();
    let web = c.service("web").unwrap();
    assert_eq!(
        web.health.as_ref().unwrap().probe,
        Some(Probe::Command {
            argv: vec!["pg_isready".into(), "-q".into()],
            container: Some("db".into()),
        })
    );
    assert_eq!(
        web.restart,
        RestartConfig {
            on_failure: false,
            max_restarts: 0,
            window: Duration::from_secs(3600),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(90),
            manual_stop: crate::config::ManualStop::Revert,
            retry_interval: Duration::from_secs(20),
        }
    );
    let res = web.resources.as_ref().unwrap();
    assert_eq!(res.memory, Some(512 << 20));
    assert_eq!(res.clear_ratio, 0.5);
    assert_eq!(res.cooldown, Duration::from_secs(3600));
    // Inherited whole from the top-level table.
    let api = c.service("api").unwrap();
    assert_eq!(api.resources.as_ref().unwrap().memory, Some(2 << 30));
    assert_eq!(c.resources.as_ref().unwrap().memory, Some(2 << 30));
    assert_eq!(
        api.health.as_ref().unwrap().probe,
        Some(Probe::Http {
            url: "https://127.0.0.1/ready".into(),
            expect_status: vec![(200, 200), (204, 206)],
            body_contains: Some("ok".into()),
            tls_ca: None,
        })
    );
    assert_eq!(
        c.service("job").unwrap().health.as_ref().unwrap().probe,
        Some(Probe::File {
            path: PathBuf::from("/opt/stacks/job/run/heartbeat"),
            max_age: Some(Duration::from_secs(120)),
        })
    );

    let e = errors(parse(
        "[services.web]\nhealth = { http = \"http://x\", tcp = \"x:1\", retries = 0, max_age = \"1s\" }\nresources = { cpu_percent = -1, memory = \"lots\" }\n",
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:2:37: a health check has at most one probe of http, tcp, command and file; found http and tcp",
            "/cfg/stackd.toml:2:54: expected a number of retries of 1 or more",
            "/cfg/stackd.toml:2:67: max_age only applies to a file probe",
            "/cfg/stackd.toml:3:29: expected a percentage above 0 and at most 100000",
            "/cfg/stackd.toml:3:42: invalid size \"lots\": missing number; expected a number of bytes, optionally followed by K, M, G or T (powers of 1024), e.g. \"512M\", \"2G\", \"512MiB\"",
        ]
    );
}

#[test]
fn service_names_and_references() {
    let e = errors(parse(
        "[services.Web]\n[services.db]\nconflicts = [\"db\"]\n[services.x]\ndepends_on = [\"db\"]\nconflicts = [\"db\"]\n",
    ));
    assert_eq!(e.len(), 3, "{e:?}");
    assert!(e[0].starts_with("/cfg/stackd.toml:1:1: invalid service name \"Web\""));
    assert_eq!(
        e[1],
        "/cfg/stackd.toml:3:14: service `db` cannot conflict with itself"
    );
    assert_eq!(
        e[2],
        "/cfg/stackd.toml:6:14: service `x` both depends on and conflicts with `db`"
    );
}

#[test]
fn relative_paths_and_user_mode() {
    let c = parse("compose_dir = \"stacks\"\nstate_dir = \"state\"\n").unwrap();
    assert_eq!(c.compose_dir, PathBuf::from("/cfg/stacks"));
    assert_eq!(c.state_dir, PathBuf::from("/cfg/state"));
    assert_eq!(c.admin_group.as_deref(), Some("stackd"));
    assert_eq!(c.peer, None);
    assert_eq!(parse("admin_group = \"\"\n").unwrap().admin_group, None);

    let user = LoadOptions {
        user_mode: true,
        host_override: Some("nuc".into()),
    };
    let c = parse_str("", Path::new("/cfg/stackd.toml"), &user, false).unwrap();
    assert!(c.compose_dir.ends_with("stacks"));
    assert!(c.state_dir.ends_with("stackd"));
    assert!(c.runtime_dir.ends_with("stackd") || c.runtime_dir.ends_with("stackd/run"));
    assert!(default_config_path(true).ends_with("stackd/stackd.toml"));
    assert_eq!(
        default_config_path(false),
        PathBuf::from("/etc/stackd/stackd.toml")
    );
}

#[test]
fn durations() {
    let ok = [
        ("0", 0),
        ("500ms", 500),
        ("10s", 10_000),
        ("5m", 300_000),
        ("1h", 3_600_000),
        ("2d", 172_800_000),
        ("1m30s", 90_000),
        ("1h1m1s1ms", 3_661_001),
        ("0s", 0),
    ];
    for (s, ms) in ok {
        assert_eq!(parse_duration(s), Ok(Duration::from_millis(ms)), "{s}");
    }
    for s in [
        "",
        "10",
        "s",
        "1x",
        "-1s",
        "1.5s",
        " 1s",
        "1s ",
        "1 s",
        "1S",
        "m5",
        "99999999999999999999s",
        "18446744073709551615d",
    ] {
        assert!(parse_duration(s).is_err(), "{s:?} should not parse");
    }
}

#[test]
fn sizes_and_statuses() {
    assert_eq!(units::parse_bytes("1024"), Ok(1024));
    assert_eq!(units::parse_bytes("512M"), Ok(512 << 20));
    assert_eq!(units::parse_bytes("512MiB"), Ok(512 << 20));
    assert_eq!(units::parse_bytes("2g"), Ok(2 << 30));
    assert!(units::parse_bytes("2X").is_err());
    assert!(units::parse_bytes("99999999999T").is_err());
    assert_eq!(units::parse_status_ranges("200-399"), Ok(vec![(200, 399)]));
    assert!(units::parse_status_ranges("399-200").is_err());
    assert!(units::parse_status_ranges("99").is_err());
    assert!(units::parse_status_ranges("").is_err());
}

#[test]
fn line_col_counts_characters() {
    assert_eq!(units::line_col("abc", 0), (1, 1));
    assert_eq!(units::line_col("a\nbc", 3), (2, 2));
    assert_eq!(units::line_col("é = 1", 3), (1, 3));
    assert_eq!(units::line_col("é", 1), (1, 1));
    assert_eq!(units::line_col("ab", 99), (1, 3));
}

#[test]
fn odd_inputs_do_not_panic() {
    let inputs = [
        "",
        "\u{feff}",
        "[",
        "services = 1",
        "services = []",
        "[[services]]\nname = \"x\"",
        "[services.\"\"]",
        "[services.a]\nhost = []",
        "[services.a]\nhost = [\"all\", \"b\"]",
        "[services.a]\nhost = [1]",
        "[services.a]\ndepends_on = \"b\"",
        "[services.a]\nhealth = 1",
        "[services.a]\nhealth = {}\nrestart = {}\nresources = {}",
        "[services.a.health]\nhttp.x = 1",
        "[services.a]\n\"$__serde_spanned_private_start\" = 1",
        "[services.a.host]\n\"$__serde_spanned_private_start\" = 99999999",
        "max_parallel = 99999999999999999999",
        "max_parallel = 1.5",
        "[resources]\ncpu_percent = nan\nmemory = -1",
        "[peer]\nlisten = \"nowhere\"\ntls_cert = \"c\"\ntls_pin_sha256 = \"zz\"",
        "[notify.email]",
        "[notify.webhook]\nx = 1",
        "host = \"\"",
        "[hosts.all]",
    ];
    for text in inputs {
        let _ = parse(text);
        let _ = parse_str(text, Path::new("rel.toml"), &LoadOptions::default(), true);
    }
    let e = parse_sources(&[], &opts("nuc"), false).unwrap_err();
    assert_eq!(e.diagnostics().len(), 1);
}

#[test]
fn peer_listen_defaults_to_own_host_url() {
    let text = "host = \"b\"\ncompose_dir = \"/tmp\"\n[hosts.a]\npeer = \"http://127.0.0.1:7781\"\n[hosts.b]\npeer = \"http://127.0.0.2:7782\"\n[peer]\ntoken_file = \"/t\"\n";
    let cfg = parse_str(text, Path::new("/x.toml"), &LoadOptions::default(), false).unwrap();
    assert_eq!(cfg.peer.unwrap().listen, "127.0.0.2:7782");
}

#[test]
fn reload_guard_is_a_fraction_or_a_percentage() {
    assert_eq!(parse("").unwrap().reload_guard, DEFAULT_RELOAD_GUARD);
    assert_eq!(parse("reload_guard = 0.25\n").unwrap().reload_guard, 0.25);
    assert_eq!(parse("reload_guard = \"30%\"\n").unwrap().reload_guard, 0.3);
    assert_eq!(parse("reload_guard = 1\n").unwrap().reload_guard, 1.0);
    for bad in [
        "reload_guard = 2\n",
        "reload_guard = \"half\"\n",
        "reload_guard = -0.1\n",
    ] {
        let e = errors(parse(bad));
        assert!(
            e[0].starts_with("/cfg/stackd.toml:1:16: expected a fraction"),
            "{bad}: {e:?}"
        );
    }
}

#[test]
fn the_guard_trips_on_every_service_or_more_than_the_share() {
    let names = |n: usize| (0..n).map(|i| format!("s{i}")).collect::<Vec<_>>();
    assert_eq!(guard_message(4, &[], 0.5), None);
    assert_eq!(guard_message(4, &names(2), 0.5), None);
    let m = guard_message(4, &names(3), 0.5).unwrap();
    assert!(
        m.contains("3 of this host's 4") && m.contains("s0, s1, s2"),
        "{m}"
    );
    assert!(guard_message(1, &names(1), 1.0)
        .unwrap()
        .contains("every one"));
    assert!(guard_message(10, &names(1), 0.0).is_some());
}

#[test]
fn invalid_utf8_is_located() {
    let e = utf8_text(
        Path::new("/cfg/stackd.toml"),
        b"host = \"a\"\nx = \"\xc3\xa9\xff\"\n".to_vec(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("/cfg/stackd.toml:2:7: byte 0xff is not UTF-8"),
        "{e}"
    );
}

#[test]
fn housekeeping_is_off_unless_asked_for() {
    let hk = parse("").unwrap().housekeeping;
    assert_eq!(hk, HousekeepingConfig::default());
    assert_eq!(hk.prune, None);
    assert_eq!(hk.disk_warning, None);
    let hk = parse("[housekeeping]\nprune = \"off\"\ndisk_warning = \"off\"\n")
        .unwrap()
        .housekeeping;
    assert_eq!(hk, HousekeepingConfig::default());
}

#[test]
fn housekeeping_prune_takes_daily_weekly_or_a_duration() {
    let day = Duration::from_secs(24 * 3600);
    for (text, want) in [
        ("daily", day),
        ("weekly", 7 * day),
        ("36h", Duration::from_secs(36 * 3600)),
        ("2s", Duration::from_secs(2)),
    ] {
        let cfg = parse(&format!("[housekeeping]\nprune = \"{text}\"\n")).unwrap();
        assert_eq!(cfg.housekeeping.prune, Some(want), "{text}");
    }
}

#[test]
fn housekeeping_disk_warning_is_a_percentage_or_a_fraction() {
    let share = |t: &str| {
        parse(&format!("[housekeeping]\ndisk_warning = {t}\n"))
            .unwrap()
            .housekeeping
            .disk_warning
    };
    assert_eq!(share("\"10%\""), Some(0.1));
    assert_eq!(share("0.25"), Some(0.25));
}

#[test]
fn housekeeping_errors_name_file_line_and_column() {
    let e = errors(parse("[housekeeping]\nprune = \"monthly\"\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:9: invalid prune schedule \"monthly\": expected \"off\", \"daily\", \"weekly\""),
        "{e:?}"
    );
    let e = errors(parse("[housekeeping]\nprune = \"500ms\"\n"));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:9: a prune interval must be at least 1s"),
        "{e:?}"
    );
    for bad in ["\"100%\"", "0", "1.5", "\"ten\"", "-0.1"] {
        let e = errors(parse(&format!("[housekeeping]\ndisk_warning = {bad}\n")));
        assert!(
            e[0].starts_with("/cfg/stackd.toml:2:16: expected \"off\", a percentage"),
            "{bad}: {e:?}"
        );
    }
    let e = errors(parse("[housekeeping]\nprune_at = \"3:00\"\n"));
    assert!(
        e[0].starts_with("/cfg/stackd.toml:2:1: unknown field `prune_at`"),
        "{e:?}"
    );
    // Both errors of one file at once.
    let e = errors(parse(
        "[housekeeping]\nprune = \"sometimes\"\ndisk_warning = \"2\"\n",
    ));
    assert_eq!(e.len(), 2, "{e:?}");
}

#[test]
fn kinds_parse_with_their_keys() {
    let text = r#"
[services.web]
description = "  The shop front  "
category = "media"
required_for = ["checkout", "backup", "checkout"]

[services.nginx]
kind = "unit"
unit = "nginx.service"

[services.agent]
kind = "unit"
exec = ["/usr/local/bin/agent", "--port", "9100"]
working_dir = "agent"
environment = { RUST_LOG = "info", PORT = "9100" }
user = "nobody"

[services.agent2]
kind = "unit"
exec = ["agent"]
environment = ["A=1", "B=x=y", "A=2"]

[services.api]
kind = "external"
host = "nuc"
health = { http = "https://api.example/healthz", interval = "30s" }
"#;
    let c = parse(text).unwrap();
    let web = c.service("web").unwrap();
    assert_eq!(web.kind, ServiceKind::Compose);
    assert!(web.is_compose());
    assert_eq!(web.description.as_deref(), Some("The shop front"));
    assert_eq!(web.category.as_deref(), Some("media"));
    assert_eq!(web.required_for, ["checkout", "backup"]);
    assert_eq!(
        c.service("nginx").unwrap().kind,
        ServiceKind::Unit(UnitSpec::Existing("nginx.service".into()))
    );
    assert_eq!(
        c.service("agent").unwrap().kind,
        ServiceKind::Unit(UnitSpec::Transient(ExecSpec {
            argv: vec![
                "/usr/local/bin/agent".into(),
                "--port".into(),
                "9100".into()
            ],
            working_dir: Some(PathBuf::from("/cfg/agent")),
            environment: vec![
                ("RUST_LOG".into(), "info".into()),
                ("PORT".into(), "9100".into())
            ],
            user: Some("nobody".into()),
        }))
    );
    let ServiceKind::Unit(UnitSpec::Transient(e)) = &c.service("agent2").unwrap().kind else {
        panic!("agent2 is a transient unit");
    };
    assert_eq!(
        e.environment,
        [
            ("B".to_owned(), "x=y".to_owned()),
            ("A".to_owned(), "2".to_owned())
        ]
    );
    let api = c.service("api").unwrap();
    assert!(api.is_external());
    assert_eq!(api.kind.as_str(), "external");
    assert_eq!(api.resources, None);
    assert!(api.description.is_none() && api.required_for.is_empty());
}

#[test]
fn compose_file_check_is_for_compose_services_only() {
    let (_tmp, dir) = stacks(&["web"]);
    let text = format!(
        "compose_dir = {dir:?}\n[services.web]\n[services.agent]\nkind = \"unit\"\nexec = [\"/bin/true\"]\n\
         [services.api]\nkind = \"external\"\nhealth.tcp = \"10.0.0.1:443\"\n[services.db]\n"
    );
    let e = errors(parse_str(
        &text,
        Path::new("/cfg/stackd.toml"),
        &opts("nuc"),
        true,
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("/cfg/stackd.toml:9:1: service `db` runs on this host but"),
        "{e:?}"
    );
}

#[test]
fn unit_keys_are_checked() {
    let e = errors(parse(
        r#"[services.a]
kind = "unit"
[services.b]
kind = "unit"
unit = "b.service"
exec = ["/bin/b"]
[services.c]
kind = "unit"
unit = "nginx"
user = "www-data"
[services.d]
kind = "unit"
exec = []
environment = ["NOEQUALS", "1X=2"]
user = ""
[services.e]
unit = "e.service"
environment = { X = "1" }
[services.f]
kind = "container"
"#,
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:1:1: service `a` is kind = \"unit\" but says neither which unit (unit = \"nginx.service\") nor what to run (exec = [\"/usr/bin/prog\", \"--flag\"])",
            "/cfg/stackd.toml:6:8: unit and exec exclude each other: unit = names an existing unit, exec = runs a program as a unit stackd creates",
            "/cfg/stackd.toml:9:8: invalid unit name \"nginx\": expected a systemd unit name such as \"nginx.service\"",
            "/cfg/stackd.toml:10:8: user only applies to exec = [...]; an existing unit (unit = \"nginx\") keeps its own settings",
            "/cfg/stackd.toml:13:8: expected a command as a list of strings, program first, e.g. [\"/usr/local/bin/agent\", \"--port\", \"9100\"]",
            "/cfg/stackd.toml:14:16: expected \"NAME=VALUE\", found \"NOEQUALS\" (no '=')",
            "/cfg/stackd.toml:14:28: invalid environment variable name \"1X\": expected letters, digits and '_', not starting with a digit",
            "/cfg/stackd.toml:15:8: expected a user name or a numeric uid",
            "/cfg/stackd.toml:17:8: unit only applies to kind = \"unit\" (service `e` is kind = \"compose\")",
            "/cfg/stackd.toml:18:15: environment only applies to kind = \"unit\" (service `e` is kind = \"compose\")",
            "/cfg/stackd.toml:20:8: unknown kind \"container\": expected \"compose\", \"unit\" or \"external\"",
        ]
    );
}

#[test]
fn external_services_have_a_probe_and_no_lifecycle() {
    let e = errors(parse(
        r#"[services.api]
kind = "external"
auto_start = false
depends_on = ["db"]
start_timeout = "1m"
restart = { on_failure = false }
health = { interval = "5s" }
[services.cdn]
kind = "external"
health = { command = ["curl", "-f", "https://cdn"], container = "x" }
handoff = "overlap"
exec = ["/bin/x"]
[services.db]
conflicts = ["cdn"]
"#,
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:1:1: restart does not apply to kind = \"external\": stackd only probes service `api`, it never starts, stops or restarts it",
            "/cfg/stackd.toml:1:1: service `api` is kind = \"external\" and needs a health probe: its health is all stackd knows of it, e.g. health = { http = \"https://api.example/healthz\" } (or tcp, command, file)",
            "/cfg/stackd.toml:3:14: auto_start does not apply to kind = \"external\": stackd only probes service `api`, it never starts, stops or restarts it",
            "/cfg/stackd.toml:4:15: depends_on does not apply to kind = \"external\": stackd only probes service `api`, it never starts, stops or restarts it",
            "/cfg/stackd.toml:5:17: start_timeout does not apply to kind = \"external\": stackd only probes service `api`, it never starts, stops or restarts it",
            "/cfg/stackd.toml:10:65: container only applies to kind = \"compose\": a kind = \"external\" service has no containers; drop it to run the command on the host",
            "/cfg/stackd.toml:11:11: handoff does not apply to kind = \"external\": stackd only probes service `cdn`, it never starts, stops or restarts it",
            "/cfg/stackd.toml:12:8: exec only applies to kind = \"unit\" (service `cdn` is kind = \"external\")",
            "/cfg/stackd.toml:14:14: conflicts names `cdn`, which is kind = \"external\": stackd never stops it, so it cannot give way",
        ]
    );
    // A service may depend on an external one.
    let c = parse(
        "[services.api]\nkind = \"external\"\nhealth.tcp = \"10.0.0.1:443\"\n[services.web]\ndepends_on = [\"api\"]\n",
    )
    .unwrap();
    assert_eq!(c.service("web").unwrap().depends_on, ["api"]);
}

#[test]
fn registry_words_are_checked() {
    let e = errors(parse(
        "[services.a]\ndescription = \"\"\ncategory = \"two\\nlines\"\nrequired_for = [\"ok\", \"not ok\", \"\"]\n",
    ));
    assert_eq!(
        e,
        [
            "/cfg/stackd.toml:2:15: expected description as one line of text",
            "/cfg/stackd.toml:3:12: expected category as one line of text",
            "/cfg/stackd.toml:4:23: invalid operation name \"not ok\": expected letters, digits, '.', '-', '_' or ':', e.g. \"backup\"",
            "/cfg/stackd.toml:4:33: invalid operation name \"\": expected letters, digits, '.', '-', '_' or ':', e.g. \"backup\"",
        ]
    );
    let e = errors(parse("[services.a]\nenvironment = 3\nkind = 1\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("/cfg/stackd.toml:2:15:"), "{e:?}");
}
