//! `[services.NAME]`: names and references, kinds and their keys,
//! health/restart/resources, handoff, the registry's words.

use super::*;

#[test]
fn handoff_volumes_is_a_flag_next_to_handoff() {
    let c =
        parse("[services.db]\nhost = \"nuc\"\nhandoff = \"stop-first\"\nhandoff_volumes = true\n")
            .expect("valid");
    let db = c.service("db").unwrap();
    assert!(db.handoff_volumes);
    assert_eq!(db.handoff, Handoff::StopFirst);
    let e = errors(parse("[services.db]\nhandoff_volumes = \"yes\"\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(e[0].starts_with("/cfg/stackd.toml:2:"), "{e:?}");
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
