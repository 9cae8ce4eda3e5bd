//! Tests of the cluster file: the helpers every topic uses, and the
//! whole sample files (DESIGN.md's and the shipped example).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

mod cluster;
mod files;
mod housekeeping;
mod notify;
mod services;
mod values;

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
    assert!(!plex.handoff_volumes);
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
