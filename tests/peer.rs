//! The peer endpoint with three real daemons on 127.0.0.1, .2 and .3 (hosts
//! a, b, c), one cluster file and one token: stackctl -H and --all-hosts,
//! remote start and stop checked against Docker, token refusal, malformed
//! bodies, the event long poll and /metrics. And a token file that others
//! may read stops the daemon from starting.

// Test code: a failed unwrap is a failed test (clippy.toml allows it in
// #[test] functions; this takes in the helpers beside them).
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    busctl, have_bus, have_docker, host_sleeper, require, running, stackctl, toml_str, wait_until,
    which, Bus, Daemon, TestEnv, TwoHosts,
};

const TOKEN: &str = "peer-test-token-0123456789abcdef";
const HOSTS: [(&str, &str); 3] = [("a", "127.0.0.1"), ("b", "127.0.0.2"), ("c", "127.0.0.3")];

/// A free port (the same one is used on the three loopback addresses).
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind :0");
    l.local_addr().expect("local addr").port()
}

/// Writes the cluster file and the token (mode `token_mode`) in `env`'s
/// dir; one sleeper service per host. Returns (file, services by host).
fn write_cluster(env: &TestEnv, port: u16, token_mode: u32) -> (PathBuf, Vec<String>) {
    write_cluster_as(env, port, token_mode, "http", "")
}

/// [`write_cluster`] with the hosts' URL scheme and more `[peer]` keys.
fn write_cluster_as(
    env: &TestEnv,
    port: u16,
    token_mode: u32,
    scheme: &str,
    peer_extra: &str,
) -> (PathBuf, Vec<String>) {
    let token = env.dir().join("peer.token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("token");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(token_mode))
        .expect("chmod token");
    let mut text = format!(
        "host = \"a\"\ncompose_dir = {}\nboot_id_file = {}\n{}\n[peer]\ntoken_file = {}\ntimeout = \"2s\"\n{peer_extra}\n",
        toml_str(&env.compose_dir().display().to_string()),
        toml_str(&env.boot_id_file().display().to_string()),
        common::compose_config_line(),
        toml_str(&token.display().to_string()),
    );
    for (h, ip) in HOSTS {
        text.push_str(&format!("[hosts.{h}]\npeer = \"{scheme}://{ip}:{port}\"\n"));
    }
    let mut services = Vec::new();
    for (h, _) in HOSTS {
        let svc = env.add_sleeper(&format!("svc{h}"));
        text.push_str(&format!(
            "\n[services.{svc}]\nhost = \"{h}\"\nauto_start = false\n"
        ));
        services.push(svc);
    }
    let path = env.dir().join("cluster.toml");
    std::fs::write(&path, text).expect("cluster file");
    (path, services)
}

/// A raw HTTP/1.1 exchange sending JSON: (status, headers, body).
fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    common::http_request(addr, method, path, token, "application/json", body)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// `stackctl --user ARGS`, without `-c`: -H and --all-hosts go through
/// the daemon, which reads its own cluster file and holds the token.
fn ctl(env: &TestEnv, bus: &Bus, args: &[&str]) -> common::Output {
    stackctl(env, bus, args)
}

/// Three daemons (a, b, c) on 127.0.0.1-3 sharing one port and token; each
/// reads its own copy of the cluster file (`<its env>/cluster.toml`), so a
/// push can change one host's file and not another's. Fields drop in order:
/// daemons first, then buses, then the envs that clean up Docker.
struct Cluster {
    daemons: Vec<Option<Daemon>>,
    buses: Vec<Bus>,
    envs: Vec<TestEnv>,
    /// Host a's copy: what stackctl on a reads.
    file: PathBuf,
    services: Vec<String>,
    port: u16,
}

impl Cluster {
    #[track_caller]
    fn start(test: &str, scheme: &str, peer_extra: &str) -> Cluster {
        let envs: Vec<TestEnv> = HOSTS
            .iter()
            .map(|(h, _)| TestEnv::new(&format!("{test}_{h}")))
            .collect();
        let port = free_port();
        let (file, services) = write_cluster_as(&envs[0], port, 0o600, scheme, peer_extra);
        for env in &envs[1..] {
            std::fs::copy(&file, env.dir().join("cluster.toml")).expect("copy cluster file");
        }
        let buses: Vec<Bus> = envs.iter().map(|e| Bus::start(e.dir())).collect();
        let mut c = Cluster {
            daemons: Vec::new(),
            buses,
            envs,
            file,
            services,
            port,
        };
        for i in 0..HOSTS.len() {
            let d = c.start_host(i);
            c.daemons.push(Some(d));
        }
        c
    }

    /// Starts host `i`'s daemon on its own copy of the cluster file.
    #[track_caller]
    fn start_host(&self, i: usize) -> Daemon {
        let file = self.envs[i].dir().join("cluster.toml");
        let file = file.display().to_string();
        Daemon::start_with(
            &self.envs[i],
            &self.buses[i],
            &[],
            &["--config", &file, "--host", HOSTS[i].0],
        )
    }

    /// `stackctl --user ARGS` run on host `i` (no `-c`: the daemon knows
    /// the cluster).
    fn ctl(&self, i: usize, args: &[&str]) -> common::Output {
        ctl(&self.envs[i], &self.buses[i], args)
    }

    fn addr(&self, i: usize) -> String {
        format!("{}:{}", HOSTS[i].1, self.port)
    }
}

#[test]
fn docker_three_hosts_over_the_peer_endpoint() {
    if !have_docker() || !have_bus() {
        return;
    }
    let c = Cluster::start("peer", "http", "");
    let services = &c.services;
    let addr_b = c.addr(1);
    let (svc_a, svc_b, svc_c) = (&services[0], &services[1], &services[2]);

    // /healthz needs no token.
    let (status, _, _) = http(&addr_b, "GET", "/healthz", None, "");
    assert_eq!(status, 200);

    // Aggregated list from host a: a over D-Bus, b and c over HTTP.
    let out = c.ctl(0, &["list", "--all-hosts"]).expect_success();
    for (svc, h) in [(svc_a, "a"), (svc_b, "b"), (svc_c, "c")] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([h, svc.as_str()])),
            "{svc} on {h} missing: {out}"
        );
    }
    assert!(out.stdout.contains("HOST"), "{out}");

    // Where the event log stands before the start.
    let (status, _, body) = http(
        &addr_b,
        "GET",
        "/v1/events?after=0&timeout=0",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let before = json(&body)["next"].as_u64().unwrap();

    // Remote start from a: b's container runs.
    c.ctl(0, &["-H", "b", "start", svc_b]).expect_success();
    wait_until(Duration::from_secs(30), "b's service runs", || {
        running(svc_b) == 1
    });
    assert_eq!(running(svc_a), 0);
    let out = c.ctl(0, &["-H", "b", "status", svc_b]).expect_success();
    assert!(out.stdout.contains("Active: active"), "{out}");
    assert!(out.stdout.contains("on b"), "{out}");

    // The events after `before` hold the start task's life-cycle.
    let (status, _, body) = http(
        &addr_b,
        "GET",
        &format!("/v1/events?after={before}&timeout=5"),
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    let ev = json(&body);
    let kinds: Vec<(&str, &str)> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["service"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(kinds.contains(&("task-new", svc_b.as_str())), "{body}");
    assert!(kinds.contains(&("task-finished", svc_b.as_str())), "{body}");
    let next = ev["next"].as_u64().unwrap();

    // Wrong and missing tokens: 401, Bearer challenge, nothing changes.
    for token in [Some("wrong-token"), None] {
        let (status, head, body) = http(
            &addr_b,
            "POST",
            &format!("/v1/services/{svc_b}/stop"),
            token,
            "",
        );
        assert_eq!(status, 401, "{head}\n{body}");
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
        assert_eq!(json(&body)["kind"], "Unauthorized");
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(running(svc_b), 1, "a refused request stopped the service");
    let (_, _, body) = http(
        &addr_b,
        "GET",
        &format!("/v1/events?after={next}&timeout=0"),
        Some(TOKEN),
        "",
    );
    assert!(
        json(&body)["events"].as_array().unwrap().is_empty(),
        "{body}"
    );

    // Malformed JSON and unknown fields: 400 with the reason.
    let op = format!("/v1/services/{svc_b}/restart");
    let (status, _, body) = http(&addr_b, "POST", &op, Some(TOKEN), "{not json");
    assert_eq!(status, 400, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("malformed JSON"),
        "{body}"
    );
    let (status, _, body) = http(&addr_b, "POST", &op, Some(TOKEN), r#"{"bogus": 1}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("bogus"), "{body}");
    // Unknown service, unknown route.
    let (status, _, body) = http(&addr_b, "GET", "/v1/services/nope", Some(TOKEN), "");
    assert_eq!(
        (status, json(&body)["kind"].as_str()),
        (404, Some("NoSuchService"))
    );
    let (status, _, _) = http(&addr_b, "GET", "/v1/nothing", Some(TOKEN), "");
    assert_eq!(status, 404);

    // A long poll waiting for the next event is woken by a remote stop.
    let poll = {
        let addr = addr_b.clone();
        std::thread::spawn(move || {
            http(
                &addr,
                "GET",
                &format!("/v1/events?after={next}&timeout=30"),
                Some(TOKEN),
                "",
            )
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    c.ctl(0, &["-H", "b", "stop", svc_b]).expect_success();
    let (status, _, body) = poll.join().unwrap();
    assert_eq!(status, 200, "{body}");
    let first = &json(&body)["events"][0];
    assert_eq!(first["kind"], "task-new", "{body}");
    assert_eq!(first["data"]["kind"], "stop", "{body}");
    wait_until(Duration::from_secs(30), "b's service stops", || {
        running(svc_b) == 0
    });

    // /metrics: build info and a line per service.
    let (status, _, body) = http(&addr_b, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(body.contains("stackd_build_info{"), "{body}");
    assert!(
        body.contains(&format!("stackd_service_active{{service=\"{svc_b}\"")),
        "{body}"
    );
    assert!(body.contains("stackd_tasks{state=\"succeeded\"}"), "{body}");
    // Figures per service, task results and the other hosts' reachability.
    for family in [
        "stackd_service_cpu_percent",
        "stackd_service_memory_bytes",
        "stackd_service_restarts",
        "stackd_service_healthy",
    ] {
        assert!(
            body.contains(&format!("{family}{{service=\"{svc_b}\"}} ")),
            "{family}: {body}"
        );
    }
    assert!(
        body.contains("stackd_task_results{result=\"done\"} "),
        "{body}"
    );
    for peer in ["a", "c"] {
        assert!(
            body.contains(&format!("stackd_peer_reachable{{peer=\"{peer}\"}} ")),
            "{peer}: {body}"
        );
    }
    let (status, _, _) = http(&addr_b, "GET", "/metrics", None, "");
    assert_eq!(status, 401);

    // JSON task over -H, with its log.
    let out = c.ctl(0, &["-H", "c", "list"]).expect_success();
    assert!(
        out.stdout.contains(svc_c.as_str()) && !out.stdout.contains(svc_b.as_str()),
        "{out}"
    );
}

#[test]
fn docker_a_token_file_others_may_read_stops_the_start() {
    if !have_docker() || !have_bus() {
        return;
    }
    let env = TestEnv::new("peer_token_mode");
    let (cluster, _) = write_cluster(&env, free_port(), 0o644);
    let bus = Bus::start(env.dir());
    let cluster_s = cluster.display().to_string();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Daemon::start_with(&env, &bus, &[], &["--config", &cluster_s, "--host", "a"])
    }));
    let message = match result {
        Ok(_) => panic!("the daemon started with a world-readable token file"),
        Err(p) => p.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    let token = env.dir().join("peer.token").display().to_string();
    assert!(message.contains("before READY=1"), "{message}");
    assert!(
        message.contains(&token),
        "the error names no file: {message}"
    );
    assert!(
        message.contains("0644") && message.contains("chmod 600"),
        "{message}"
    );
}

/// A CA and a certificate it signed for 127.0.0.1-3, as PEM files in `dir`.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// SHA-256 of the host certificate's DER bytes, lower-case hex.
    fingerprint: String,
}

fn make_pki(dir: &Path, name: &str) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    use sha2::Digest;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let sans: Vec<String> = HOSTS.iter().map(|(_, ip)| ip.to_string()).collect();
    let cert = CertificateParams::new(sans)
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let pki = Pki {
        ca: dir.join(format!("{name}-ca.pem")),
        cert: dir.join(format!("{name}-cert.pem")),
        key: dir.join(format!("{name}-key.pem")),
        fingerprint: sha2::Sha256::digest(cert.der())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    };
    std::fs::write(&pki.ca, ca.pem()).unwrap();
    std::fs::write(&pki.cert, cert.pem()).unwrap();
    std::fs::write(&pki.key, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&pki.key, std::fs::Permissions::from_mode(0o600)).unwrap();
    pki
}

/// Host a's cluster file with `original`'s `tls_ca` line replaced by
/// `trust` (a TOML line), reloaded by a's daemon: -H asks through it.
fn with_trust(c: &Cluster, original: &str, trust: &str) {
    let replaced: Vec<&str> = original
        .lines()
        .map(|l| if l.starts_with("tls_ca = ") { trust } else { l })
        .collect();
    std::fs::write(&c.file, replaced.join("\n")).unwrap();
    c.ctl(0, &["reload"]).expect_success();
}

#[test]
fn docker_tls_with_a_ca_or_a_pinned_certificate() {
    if !have_docker() || !have_bus() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "cluster");
    let other = make_pki(dir.path(), "other");
    let peer_tls = format!(
        "tls_cert = {}\ntls_key = {}\ntls_ca = {}\n",
        toml_str(&pki.cert.display().to_string()),
        toml_str(&pki.key.display().to_string()),
        toml_str(&pki.ca.display().to_string()),
    );
    let c = Cluster::start("peer_tls", "https", &peer_tls);
    let svc_b = &c.services[1];

    // With the cluster's CA: every host answers over https.
    let out = c.ctl(0, &["list", "--all-hosts"]).expect_success();
    for (svc, h) in c.services.iter().zip(["a", "b", "c"]) {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.split_whitespace().take(2).eq([h, svc.as_str()])),
            "{svc} on {h} missing: {out}"
        );
    }
    assert!(out.stdout.contains("0 unreachable"), "{out}");
    let out = c.ctl(0, &["-H", "b", "status", svc_b]);
    assert!(out.stdout.contains("on b"), "{out}");

    // Plain HTTP to a TLS endpoint gets no HTTP answer and no data.
    let mut s = TcpStream::connect(c.addr(1)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let req = format!(
        "GET /v1/services HTTP/1.1\r\nHost: b\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let ended = s.read_to_end(&mut got);
    assert!(
        ended.is_ok() || got.is_empty(),
        "the connection hung: {ended:?}"
    );
    let text = String::from_utf8_lossy(&got);
    assert!(
        !text.contains("HTTP/") && !text.contains(svc_b.as_str()),
        "plain HTTP got an answer: {text:?}"
    );

    // A pinned fingerprint instead of the CA: the host's certificate passes.
    let original = std::fs::read_to_string(&c.file).unwrap();
    let pin = format!("tls_pin_sha256 = \"{}\"", pki.fingerprint);
    with_trust(&c, &original, &pin);
    let out = c.ctl(0, &["-H", "b", "list"]).expect_success();
    assert!(out.stdout.contains(svc_b.as_str()), "{out}");

    // Another certificate's fingerprint: refused, saying why.
    let pin = format!("tls_pin_sha256 = \"{}\"", other.fingerprint);
    with_trust(&c, &original, &pin);
    let out = c.ctl(0, &["-H", "b", "list"]).expect_failure();
    assert!(
        out.stderr.contains(&pki.fingerprint) && out.stderr.contains("tls_pin_sha256"),
        "{out}"
    );
    assert!(!out.stdout.contains(svc_b.as_str()), "{out}");

    // Another CA: refused too.
    let ca = format!("tls_ca = {}", toml_str(&other.ca.display().to_string()));
    with_trust(&c, &original, &ca);
    let out = c.ctl(0, &["-H", "b", "list"]).expect_failure();
    assert!(out.stderr.contains("TLS"), "{out}");
    assert!(!out.stdout.contains(svc_b.as_str()), "{out}");
}

/// Every host's `config_hash` from `GET /v1/host`, a to c.
fn config_hashes(c: &Cluster) -> Vec<String> {
    (0..HOSTS.len())
        .map(|i| {
            let (status, _, body) = http(&c.addr(i), "GET", "/v1/host", Some(TOKEN), "");
            assert_eq!(status, 200, "{body}");
            json(&body)["config_hash"].as_str().unwrap().to_string()
        })
        .collect()
}

/// Every host's own copy of the cluster file, a to c.
fn cluster_files(c: &Cluster) -> Vec<String> {
    c.envs
        .iter()
        .map(|e| std::fs::read_to_string(e.dir().join("cluster.toml")).unwrap())
        .collect()
}

#[test]
fn docker_config_push_is_checked_everywhere_before_it_is_written() {
    if !have_docker() || !have_bus() {
        return;
    }
    let c = Cluster::start("peer_push", "http", "");
    let original = std::fs::read_to_string(&c.file).unwrap();
    let before = config_hashes(&c);
    assert!(before.iter().all(|h| *h == before[0]), "{before:?}");

    // Not a cluster file: 400 naming b's own file, line and column.
    let b_file = c.envs[1].dir().join("cluster.toml");
    let (status, _, body) = http(
        &c.addr(1),
        "PUT",
        "/v1/config",
        Some(TOKEN),
        "host = \"a\"\nbogus = 1\n",
    );
    assert_eq!(status, 400, "{body}");
    let err = json(&body);
    assert_eq!(err["kind"], "InvalidConfig", "{body}");
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .contains(&format!("{}:2:1: ", b_file.display())),
        "{body}"
    );
    // No token, no push.
    let (status, _, _) = http(&c.addr(1), "PUT", "/v1/config", None, &original);
    assert_eq!(status, 401);

    // A file only b refuses (a service of b without a compose project):
    // every host is asked first, so nobody writes it.
    let ghost = c.envs[0].project("ghost");
    let bad = c.envs[0].dir().join("bad.toml");
    std::fs::write(
        &bad,
        format!("{original}\n[services.{ghost}]\nhost = \"b\"\nauto_start = false\n"),
    )
    .unwrap();
    let out = c
        .ctl(0, &["config", "push", bad.to_str().unwrap()])
        .expect_failure();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().eq(["b", "refused:"])),
        "{out}"
    );
    assert!(
        out.stdout.contains(&format!("{}:", b_file.display())),
        "{out}"
    );
    assert!(out.stdout.contains(&ghost), "{out}");
    assert!(out.stdout.contains("Nothing was written"), "{out}");
    assert_eq!(config_hashes(&c), before);
    assert!(cluster_files(&c).iter().all(|f| *f == original));

    // A good file: written on every host, reloaded, the same hash everywhere.
    let pushed = c.envs[0].add_sleeper("pushed");
    let good = c.envs[0].dir().join("good.toml");
    let good_text = format!("{original}\n[services.{pushed}]\nhost = \"c\"\nauto_start = false\n");
    std::fs::write(&good, &good_text).unwrap();
    let out = c
        .ctl(0, &["config", "push", good.to_str().unwrap()])
        .expect_success();
    for (i, (h, _)) in HOSTS.iter().enumerate() {
        let file = c.envs[i].dir().join("cluster.toml");
        assert!(
            out.stdout.lines().any(|l| l.starts_with(h)
                && l.contains("written")
                && l.contains(&file.display().to_string())),
            "{out}"
        );
    }
    assert!(cluster_files(&c).iter().all(|f| *f == good_text));
    let after = config_hashes(&c);
    assert!(after.iter().all(|h| *h == after[0]), "{after:?}");
    assert_ne!(after, before);
    assert!(out.stdout.contains(&after[0]), "{out}");
    // Without FILE, a's daemon pushes its own cluster file (now the good
    // one): stackctl reads no file.
    let out = c.ctl(0, &["config", "push"]).expect_success();
    for (h, _) in HOSTS {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with(h) && l.contains("written") && l.contains(&after[0])),
            "{out}"
        );
    }
    assert_eq!(config_hashes(&c), after);
    let out = c.ctl(0, &["list", "--all-hosts"]).expect_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().take(2).eq(["c", pushed.as_str()])),
        "{out}"
    );
}

/// `Manager.ListHosts` on host `i`'s bus, through busctl: each row's JSON
/// array `[name, address, reachable, since, version, load, hash, error]`.
fn list_hosts(c: &Cluster, i: usize) -> Vec<serde_json::Value> {
    let out = busctl(
        &c.buses[i],
        &[
            "--json=short",
            "call",
            "org.stackd1",
            "/org/stackd1",
            "org.stackd1.Manager",
            "ListHosts",
        ],
    )
    .expect_success();
    let v = json(&out.stdout);
    assert_eq!(v["type"], "a(ssbtsdss)", "{v}");
    v["data"][0].as_array().unwrap().clone()
}

fn host_row<'a>(rows: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    rows.iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {rows:?}"))
}

/// Waits on host a's event log for an event of `kind` about peer `host`
/// after `after`; returns it with the seq to go on from.
fn wait_peer_event(c: &Cluster, after: u64, kind: &str, host: &str) -> (serde_json::Value, u64) {
    let mut after = after;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        let (status, _, body) = http(
            &c.addr(0),
            "GET",
            &format!("/v1/events?after={after}&timeout=5"),
            Some(TOKEN),
            "",
        );
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        for e in v["events"].as_array().unwrap() {
            if e["kind"] == kind && e["data"]["host"] == host {
                return (e.clone(), e["seq"].as_u64().unwrap());
            }
        }
        after = v["next"].as_u64().unwrap();
    }
    panic!("no {kind} event about {host} within 30 s");
}

#[test]
fn docker_a_peer_that_stops_answering_is_lost_then_back() {
    if !have_docker() || !have_bus() {
        return;
    }
    const BEAT: Duration = Duration::from_millis(500);
    let mut c = Cluster::start("peer_live", "http", "heartbeat = \"500ms\"\n");

    // Host a sees every host reachable, with one version and config hash.
    wait_until(Duration::from_secs(10), "a hears from b and c", || {
        list_hosts(&c, 0).iter().all(|r| r[2] == true)
    });
    let rows = list_hosts(&c, 0);
    assert_eq!(rows.len(), 3, "{rows:?}");
    let hash = &host_row(&rows, "a")[6];
    assert!(
        rows.iter().all(|r| r[6] == *hash && r[4] == rows[0][4]),
        "{rows:?}"
    );
    assert_eq!(host_row(&rows, "b")[1], format!("http://{}", c.addr(1)));
    let (_, _, body) = http(
        &c.addr(0),
        "GET",
        "/v1/events?after=0&timeout=0",
        Some(TOKEN),
        "",
    );
    let start = json(&body)["next"].as_u64().unwrap();

    // SIGKILL b: a raises peer-lost within three heartbeats.
    c.daemons[1].as_mut().unwrap().kill();
    let killed = std::time::Instant::now();
    let (event, next) = wait_peer_event(&c, start, "peer-lost", "b");
    let took = killed.elapsed();
    eprintln!("peer-lost after {took:?} (heartbeat {BEAT:?})");
    assert!(
        took <= BEAT * 3 + Duration::from_secs(1),
        "lost after {took:?}"
    );
    assert_eq!(event["severity"], "warning", "{event}");
    assert!(
        event["summary"].as_str().unwrap().contains("peer b"),
        "{event}"
    );
    let rows = list_hosts(&c, 0);
    let b = host_row(&rows, "b");
    assert_eq!(b[2], false, "{b}");
    assert!(!b[7].as_str().unwrap().is_empty(), "no error: {b}");
    assert_eq!(host_row(&rows, "c")[2], true, "{rows:?}");
    let out = c.ctl(0, &["hosts"]).expect_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("b ") && l.contains("unreachable")),
        "{out}"
    );

    // b comes back: peer-back, reachable again.
    c.daemons[1] = Some(c.start_host(1));
    wait_peer_event(&c, next, "peer-back", "b");
    assert_eq!(host_row(&list_hosts(&c, 0), "b")[2], true);
    let out = c.ctl(0, &["hosts"]).expect_success();
    assert!(!out.stdout.contains("unreachable"), "{out}");
}

/// stackd started by `systemd-socket-activate` (as systemd starts it from
/// stackd.socket): it serves the socket it was passed in LISTEN_FDS, and
/// never binds `peer.listen` (an address this machine does not have).
#[test]
fn docker_a_socket_passed_by_systemd_is_served() {
    let activate = which("systemd-socket-activate");
    if !have_docker()
        || !have_bus()
        || !require(
            "systemd-socket-activate",
            activate.is_some(),
            "apt-get install systemd",
        )
    {
        return;
    }
    let env = TestEnv::new("peer_socket");
    let token = env.dir().join("peer.token");
    std::fs::write(&token, TOKEN).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.write_config(&format!(
        "[peer]\nlisten = \"192.0.2.1:7780\"\ntoken_file = {}\n",
        toml_str(&token.display().to_string())
    ));
    let bus = Bus::start(env.dir());
    let addr = format!("127.0.0.1:{}", free_port());
    // Without --accept it execs stackd in its own process (so LISTEN_PID
    // is stackd's) at the first connection: knock once it listens.
    let knock = {
        let addr = addr.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while TcpStream::connect(&addr).is_err() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let config = env.config_path().display().to_string();
    let mut args = vec!["--listen", addr.as_str()];
    for var in [
        "DBUS_SESSION_BUS_ADDRESS",
        "XDG_RUNTIME_DIR",
        "XDG_STATE_HOME",
        "XDG_CONFIG_HOME",
        "NOTIFY_SOCKET",
        "RUST_LOG",
        "PATH",
        "HOME",
    ] {
        args.extend(["--setenv", var]);
    }
    args.extend([env!("CARGO_BIN_EXE_stackd"), "--user", "--config", &config]);
    let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
    let daemon = Daemon::start_program(&activate.unwrap(), &args, &env, &bus, &[]);
    knock.join().unwrap();

    let (status, _, body) = http(&addr, "GET", "/v1/host", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["host"], common::HOST, "{body}");
    let (status, _, _) = http(&addr, "GET", "/v1/host", None, "");
    assert_eq!(status, 401);
    assert!(
        daemon
            .stderr()
            .contains("using the socket passed by systemd"),
        "{}",
        daemon.stderr()
    );
}

// ---------------------------------------------------------------------------
// Moving a service, and the hand-off rule
// ---------------------------------------------------------------------------
//
// See `TwoHosts` in tests/common for how two hosts share one Docker engine.

/// The events of host `i` of `pair` of `kind` for `service`.
fn events(pair: &TwoHosts, i: usize, kind: &str, service: &str) -> Vec<serde_json::Value> {
    let (status, _, body) = http(
        &pair.addr(i),
        "GET",
        "/v1/events?after=0&timeout=0",
        Some(TOKEN),
        "",
    );
    assert_eq!(status, 200, "{body}");
    json(&body)["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind && e["service"] == service)
        .cloned()
        .collect()
}

/// The state of `project`'s container for Compose service `svc`: (state,
/// exit code), or None when there is none.
fn container_of(project: &str, svc: &str) -> Option<(String, i64)> {
    common::containers(project)
        .into_iter()
        .find(|c| c.service == svc)
        .map(|c| (c.state, c.exit_code))
}

fn runs(project: &str, svc: &str) -> bool {
    container_of(project, svc).is_some_and(|(s, _)| s == "running")
}

#[test]
fn docker_a_move_hands_the_service_over_and_the_hand_off_rule_guards_starts() {
    if !have_docker() || !have_bus() {
        return;
    }
    let name = "mvstop";
    let project_env = TestEnv::new("move_names");
    let name = project_env.project(name);
    let mut pair = TwoHosts::start(
        TOKEN,
        "move_stop_first",
        &[(
            &name,
            "stop-first",
            host_sleeper("a", None, None),
            host_sleeper("b", None, None),
        )],
    );
    pair.ctl(0, &["start", &name]).expect_success();
    assert!(runs(&name, "main_a"));

    // The move: one task on a, whose log tells every step.
    common::moves::move_a_to_b(|i, args| pair.ctl(i, args), &name);
    assert!(runs(&name, "main_b"), "b's container does not run");
    assert_eq!(
        container_of(&name, "main_a"),
        Some(("exited".to_string(), 0)),
        "a's container did not stop"
    );
    let all = pair.ctl(0, &["list", "--all-hosts"]).expect_success();
    assert!(
        all.stdout.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[0] == "b" && f[1] == name && f[2] == "running" && f[3] == "active"
        }),
        "{all}"
    );
    for i in [0, 1] {
        let ev = events(&pair, i, "migrated", &name);
        assert_eq!(ev.len(), 1, "host {i}: {ev:?}");
    }
    assert_eq!(events(&pair, 0, "migrated", &name)[0]["data"]["to"], "b");
    assert_eq!(events(&pair, 1, "migrated", &name)[0]["data"]["from"], "a");

    // b runs it: a start on a is refused, naming b, as a Conflict.
    let out = pair.ctl(0, &["start", &name]).expect_failure();
    assert!(out.stderr.contains("runs on b"), "{out}");
    assert_eq!(
        common::busctl_error_name(None, &pair.buses[0], &common::start_service_call(&name))
            .as_deref(),
        Some("org.stackd1.Error.Conflict")
    );
    assert!(!runs(&name, "main_a"), "the refused start started a");

    // b is gone: the start is refused naming b, unless forced.
    pair.daemons[1].kill();
    let out = pair.ctl(0, &["start", &name]).expect_failure();
    assert!(out.stderr.contains("cannot ask b"), "{out}");
    assert!(out.stderr.contains("--force"), "{out}");
    assert!(!runs(&name, "main_a"));
    pair.ctl(0, &["start", "--force", &name]).expect_success();
    assert!(runs(&name, "main_a"));
    let a = pair.ctl(0, &["status", &name]).expect_success();
    assert!(a.stdout.contains("Desired: running (set by user)"), "{a}");

    // A move to an unreachable host is refused and stops nothing.
    let out = pair.ctl(0, &["migrate", &name, "b"]).expect_failure();
    assert!(out.stderr.contains("b does not answer"), "{out}");
    assert!(out.stderr.contains("nothing was changed"), "{out}");
    assert!(runs(&name, "main_a"), "the refused move stopped a");
    let a = pair.ctl(0, &["status", &name]).expect_success();
    assert!(a.stdout.contains("Desired: running (set by user)"), "{a}");
    // A move to itself or to a host not in [hosts] is refused too.
    let out = pair.ctl(0, &["migrate", &name, "a"]).expect_failure();
    assert!(out.stderr.contains("is on a already"), "{out}");
    let out = pair.ctl(0, &["migrate", &name, "zz"]).expect_failure();
    assert!(out.stderr.contains("no host zz"), "{out}");
}

/// Microseconds since the epoch of an RFC 3339 UTC time as Docker writes
/// it ("2026-11-25T20:10:11.123456789Z"), read by stackd's own parser.
fn unix_usec(t: &str) -> u64 {
    stackd::time::parse_rfc3339_usec(t.trim()).unwrap_or_else(|| panic!("bad time {t}"))
}

#[test]
fn docker_failed_moves_leave_the_source_running_and_overlap_starts_the_target_first() {
    if !have_docker() || !have_bus() {
        return;
    }
    let names = TestEnv::new("move_names2");
    let (pf, ov, bad) = (
        names.project("mvpf"),
        names.project("mvov"),
        names.project("mvbad"),
    );
    // On b, `bad` fails its healthcheck.
    let unhealthy_on_b = host_sleeper("b", None, None) + "    healthcheck:\n      test: [\"CMD\", \"false\"]\n      interval: 1s\n      timeout: 1s\n      retries: 2\n";
    let pair = TwoHosts::start(
        TOKEN,
        "move_overlap",
        &[
            (
                &pf,
                "stop-first",
                host_sleeper("a", None, Some("./data:/data")),
                host_sleeper("b", None, Some("./data:/data")),
            ),
            (
                &ov,
                "overlap",
                host_sleeper("a", None, None),
                host_sleeper("b", Some(3), None),
            ),
            (
                &bad,
                "stop-first",
                host_sleeper("a", None, None),
                unhealthy_on_b,
            ),
        ],
    );
    // The bind-mount source exists on a only.
    std::fs::create_dir(pair.envs[0].compose_dir().join(&pf).join("data")).expect("data dir");
    pair.ctl(0, &["start", &pf, &ov, &bad]).expect_success();

    // Stop-first, and b's start is never healthy: b stops its attempt, a
    // starts it again, and the task says so.
    let text = common::moves::failed_move_a_to_b(|i, args| pair.ctl(i, args), &bad);
    assert!(text.contains("unhealthy"), "{text}");
    assert!(runs(&bad, "main_a"), "a did not start it again");
    assert!(!runs(&bad, "main_b"), "b left its attempt running");
    assert!(events(&pair, 0, "migrated", &bad).is_empty());

    // b's preflight fails: the task fails saying why, a keeps running it.
    let out = pair.ctl(0, &["migrate", &pf, "b"]).expect_failure();
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(text.contains("bind-mount source"), "{out}");
    assert!(text.contains(&format!("{pf} stays on a")), "{out}");
    assert!(runs(&pf, "main_a"), "a stopped it");
    assert!(container_of(&pf, "main_b").is_none(), "b started it");
    let a = pair.ctl(0, &["status", &pf]).expect_success();
    assert!(a.stdout.contains("Desired: running (set by user)"), "{a}");
    assert!(events(&pair, 0, "migrated", &pf).is_empty());

    // Overlap: b starts and turns healthy before a stops.
    let out = pair.ctl(0, &["migrate", &ov, "b"]).expect_success();
    let at = |needle: &str| {
        out.stdout
            .lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in the log: {out}"))
    };
    assert!(at("b: starting") < at("runs and is healthy"), "{out}");
    assert!(at("runs and is healthy") < at("a: stopping"), "{out}");
    assert!(runs(&ov, "main_b"));
    assert_eq!(container_of(&ov, "main_a"), Some(("exited".to_string(), 0)));
    // b's receive task ended (healthy) before Docker stopped a's container.
    let receive: u64 = out
        .stdout
        .lines()
        .find(|l| l.contains("runs and is healthy (task "))
        .and_then(|l| {
            l.split("(task ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no receive task id in the log: {out}"));
    let addr_b = pair.addr(1);
    let (_, _, body) = http(
        &addr_b,
        "GET",
        &format!("/v1/tasks/{receive}"),
        Some(TOKEN),
        "",
    );
    let task = json(&body);
    assert_eq!(task["kind"], "receive", "{body}");
    assert_eq!(task["origin"], "migrate from a", "{body}");
    assert!(
        task["log"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l.as_str().unwrap().contains("healthy")),
        "{body}"
    );
    let healthy_usec = task["finished_usec"].as_u64().unwrap();
    let a_id = common::containers(&ov)
        .into_iter()
        .find(|c| c.service == "main_a")
        .expect("a's container")
        .id;
    let stopped = common::docker(&["inspect", "--format", "{{.State.FinishedAt}}", &a_id])
        .expect_success()
        .stdout;
    assert!(
        healthy_usec < unix_usec(&stopped),
        "b healthy at {healthy_usec} usec, a stopped at {stopped}"
    );
    let b = pair.ctl(1, &["status", &ov]).expect_success();
    assert!(
        b.stdout
            .contains("Desired: running (set by migrate from a)"),
        "{b}"
    );
    assert_eq!(events(&pair, 1, "migrated", &ov).len(), 1);
}
