//! Checks before a deploy, update or restart. [`check`] runs every check
//! and returns every problem found, not just the first:
//!
//! - the Compose file parses (`config -q`);
//! - each image is present locally (missing: a warning that it will be
//!   pulled; fatal with `pull_policy: never`);
//! - bind-mount sources exist;
//! - published host ports are free, or held by this project already;
//! - env files exist;
//! - free disk space on Docker's data root and the service directory is
//!   above a threshold.
//!
//! The project is read from Compose's normalised `config` output, so
//! variables, `extends` and relative paths are already resolved; both
//! Compose v1's and v2's shapes of it are understood.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde_yaml::Value;
use tokio_util::sync::CancellationToken;

use crate::engine::{Compose, ContainerState, Docker, Invocation};
use crate::recovery::{port_holders, PortHolder};

/// The project a preflight looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Compose project name (the service name in stackd).
    pub project: String,
    pub dir: PathBuf,
    pub file: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Below this many free bytes on Docker's data root or the service
    /// directory's file system, the preflight fails.
    pub min_free_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            min_free_bytes: 1 << 30,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Check {
    ComposeFile,
    Images,
    BindMounts,
    Ports,
    EnvFiles,
    Disk,
    Docker,
}

impl Check {
    pub fn as_str(self) -> &'static str {
        match self {
            Check::ComposeFile => "compose-file",
            Check::Images => "images",
            Check::BindMounts => "bind-mounts",
            Check::Ports => "ports",
            Check::EnvFiles => "env-files",
            Check::Disk => "disk",
            Check::Docker => "docker",
        }
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub check: Check,
    pub message: String,
    /// Fatal problems stop the operation; the others are warnings.
    pub fatal: bool,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = if self.fatal { "error" } else { "warning" };
        write!(f, "{level}: {}: {}", self.check, self.message)
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightReport {
    pub problems: Vec<Problem>,
}

impl PreflightReport {
    /// No fatal problem (warnings allowed).
    pub fn passed(&self) -> bool {
        !self.problems.iter().any(|p| p.fatal)
    }

    pub fn fatal(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| p.fatal)
    }

    pub fn warnings(&self) -> impl Iterator<Item = &Problem> {
        self.problems.iter().filter(|p| !p.fatal)
    }

    fn push(&mut self, check: Check, fatal: bool, message: String) {
        self.problems.push(Problem {
            check,
            message,
            fatal,
        });
    }
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// Why the normalised config could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error("Compose's config output is not YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("Compose's config output has no services mapping")]
    NoServices,
}

/// What preflight needs from one Compose service.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub image: Option<String>,
    pub pull_never: bool,
    pub bind_sources: Vec<PathBuf>,
    /// Published host TCP ports with the container port they map to.
    pub ports: Vec<(u16, u16)>,
    pub env_files: Vec<PathBuf>,
}

/// Reads Compose v1's or v2's normalised `config` output. Relative paths
/// (which normalised output should not have) are resolved against `dir`.
pub fn read_config(yaml: &str, dir: &Path) -> Result<Vec<ServiceSpec>, PreflightError> {
    let doc: Value = serde_yaml::from_str(yaml)?;
    let services = doc
        .get("services")
        .and_then(Value::as_mapping)
        .ok_or(PreflightError::NoServices)?;
    let text = |v: &Value| -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    };
    let mut out = Vec::new();
    for (name, svc) in services {
        let mut spec = ServiceSpec {
            name: text(name).unwrap_or_default(),
            image: svc.get("image").and_then(text),
            pull_never: svc.get("pull_policy").and_then(Value::as_str) == Some("never"),
            ..Default::default()
        };
        for vol in svc
            .get("volumes")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            let source = match vol {
                // v1 short syntax: "SOURCE:TARGET[:MODE]"; a bind when
                // SOURCE is a path, a named volume otherwise.
                Value::String(s) => s
                    .split(':')
                    .next()
                    .filter(|src| src.starts_with(['/', '.', '~']) && s.contains(':'))
                    .map(str::to_string),
                Value::Mapping(_) if vol.get("type").and_then(Value::as_str) == Some("bind") => {
                    vol.get("source").and_then(text)
                }
                _ => None,
            };
            if let Some(src) = source {
                spec.bind_sources.push(dir.join(src));
            }
        }
        for port in svc
            .get("ports")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
        {
            spec.ports.extend(published_ports(port, &text));
        }
        for env in svc
            .get("env_file")
            .map(|v| match v {
                Value::Sequence(s) => s.clone(),
                other => vec![other.clone()],
            })
            .into_iter()
            .flatten()
        {
            // v2 2.24+: { path, required }.
            let (path, required) = match &env {
                Value::Mapping(_) => (
                    env.get("path").and_then(text),
                    env.get("required").and_then(Value::as_bool).unwrap_or(true),
                ),
                other => (text(other), true),
            };
            if let (Some(p), true) = (path, required) {
                spec.env_files.push(dir.join(p));
            }
        }
        out.push(spec);
    }
    Ok(out)
}

/// Host TCP ports of one `ports` entry: a v2/v1 long-syntax mapping
/// (`published` may be a number, a string, or a "a-b" range), or a v1
/// short string "[IP:]HOST[-HOST]:CONTAINER[-CONTAINER][/PROTO]".
fn published_ports(port: &Value, text: &dyn Fn(&Value) -> Option<String>) -> Vec<(u16, u16)> {
    let range = |s: &str| -> Option<(u16, u16)> {
        match s.split_once('-') {
            Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
            None => {
                let p = s.trim().parse().ok()?;
                Some((p, p))
            }
        }
    };
    let (host, container, proto) = match port {
        Value::Mapping(_) => {
            let proto = port
                .get("protocol")
                .and_then(Value::as_str)
                .unwrap_or("tcp")
                .to_string();
            let Some(published) = port.get("published").and_then(text) else {
                return Vec::new();
            };
            let Some(target) = port.get("target").and_then(text) else {
                return Vec::new();
            };
            (published, target, proto)
        }
        Value::String(s) => {
            let (spec, proto) = s.split_once('/').unwrap_or((s, "tcp"));
            // The container part is last; the host part before it (an IP,
            // possibly IPv6 in brackets, may come first).
            let Some((rest, container)) = spec.rsplit_once(':') else {
                return Vec::new(); // only a container port: nothing published by name
            };
            let host = rest.rsplit_once(':').map_or(rest, |(_, h)| h);
            (host.to_string(), container.to_string(), proto.to_string())
        }
        _ => return Vec::new(),
    };
    if proto != "tcp" || host.is_empty() {
        return Vec::new();
    }
    let (Some((h0, h1)), Some((c0, _))) = (range(&host), range(&container)) else {
        return Vec::new();
    };
    (h0..=h1.max(h0))
        .enumerate()
        .map(|(i, h)| (h, c0.saturating_add(u16::try_from(i).unwrap_or(u16::MAX))))
        .collect()
}

/// What `compose config` said about one version of each project's files,
/// so that a recovery of an unchanged project runs no `config` at all.
/// The key is the files' content hash (`control::fastpath::file_key`:
/// the Compose file, `.env` and the env files it names); a file that
/// changed has another key and is read again.
#[derive(Debug, Default)]
pub struct ConfigCache {
    entries: Mutex<std::collections::HashMap<String, (String, Vec<ServiceSpec>)>>,
}

impl ConfigCache {
    fn get(&self, project: &str, key: &str) -> Option<Vec<ServiceSpec>> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(project)
            .filter(|(k, _)| k == key)
            .map(|(_, specs)| specs.clone())
    }

    fn put(&self, project: &str, key: &str, specs: Vec<ServiceSpec>) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(project.to_string(), (key.to_string(), specs));
    }
}

/// Runs every check on `target` and returns all problems found.
pub async fn check(
    compose: &Compose,
    docker: Option<&Docker>,
    target: &Target,
    opts: &Options,
) -> PreflightReport {
    check_cached(compose, docker, target, opts, None).await
}

/// [`check`], reading the resolved project from `cache` when its files
/// still have the content hash `key` (and filling it otherwise).
pub async fn check_cached(
    compose: &Compose,
    docker: Option<&Docker>,
    target: &Target,
    opts: &Options,
    cache: Option<(&ConfigCache, &str)>,
) -> PreflightReport {
    let mut report = PreflightReport::default();
    if let Some(specs) = cache.and_then(|(c, key)| c.get(&target.project, key)) {
        run_checks(&mut report, compose, docker, target, opts, &specs).await;
        return report;
    }
    if let Err(e) = compose
        .config_check(&target.project, &target.dir, &target.file)
        .await
    {
        report.push(
            Check::ComposeFile,
            true,
            format!("{} does not parse: {e}", target.file.display()),
        );
        check_disk(&mut report, docker, target, opts).await;
        return report;
    }
    let specs = match compose
        .config_yaml(&target.project, &target.dir, &target.file)
        .await
        .map_err(|e| e.to_string())
        .and_then(|y| read_config(&y, &target.dir).map_err(|e| e.to_string()))
    {
        Ok(specs) => specs,
        Err(e) => {
            report.push(
                Check::ComposeFile,
                true,
                format!("cannot read the resolved project: {e}"),
            );
            check_disk(&mut report, docker, target, opts).await;
            return report;
        }
    };
    if let Some((c, key)) = cache {
        c.put(&target.project, key, specs.clone());
    }
    run_checks(&mut report, compose, docker, target, opts, &specs).await;
    report
}

/// The checks that read the resolved project rather than run Compose.
async fn run_checks(
    report: &mut PreflightReport,
    compose: &Compose,
    docker: Option<&Docker>,
    target: &Target,
    opts: &Options,
    specs: &[ServiceSpec],
) {
    check_images(report, docker, specs).await;
    check_paths(report, specs);
    check_ports(report, compose, docker, target, specs).await;
    check_disk(report, docker, target, opts).await;
}

async fn check_images(
    report: &mut PreflightReport,
    docker: Option<&Docker>,
    specs: &[ServiceSpec],
) {
    let Some(docker) = docker else {
        report.push(
            Check::Docker,
            true,
            "Docker is not connected: images could not be checked".into(),
        );
        return;
    };
    let mut seen = BTreeSet::new();
    for spec in specs {
        let Some(image) = &spec.image else { continue };
        if !seen.insert((image.clone(), spec.pull_never)) {
            continue;
        }
        match docker.image_present(image).await {
            Ok(true) => {}
            Ok(false) if spec.pull_never => report.push(
                Check::Images,
                true,
                format!(
                    "image {image} (service {}) is not present locally and pull_policy is never; build or load it first",
                    spec.name
                ),
            ),
            Ok(false) => report.push(
                Check::Images,
                false,
                format!("image {image} is not present locally and will be pulled"),
            ),
            Err(e) => report.push(
                Check::Images,
                true,
                format!("cannot check image {image}: {e}"),
            ),
        }
    }
}

fn check_paths(report: &mut PreflightReport, specs: &[ServiceSpec]) {
    for spec in specs {
        for src in &spec.bind_sources {
            if !src.exists() {
                report.push(
                    Check::BindMounts,
                    true,
                    format!(
                        "bind-mount source {} (service {}) does not exist; create it or fix the path (Docker would create an empty directory)",
                        src.display(),
                        spec.name
                    ),
                );
            }
        }
        for env in &spec.env_files {
            if !env.is_file() {
                report.push(
                    Check::EnvFiles,
                    true,
                    format!(
                        "env file {} (service {}) does not exist",
                        env.display(),
                        spec.name
                    ),
                );
            }
        }
    }
}

async fn check_ports(
    report: &mut PreflightReport,
    compose: &Compose,
    docker: Option<&Docker>,
    target: &Target,
    specs: &[ServiceSpec],
) {
    // Whether this project runs already: then a port may be held by its own
    // docker-proxy, which `compose port` tells.
    let project_running = match docker {
        Some(d) => d
            .list_containers(Some(&target.project))
            .await
            .map(|cs| cs.iter().any(|c| c.state == ContainerState::Running))
            .unwrap_or(false),
        None => false,
    };
    for spec in specs {
        for &(host, container) in &spec.ports {
            let mut holders = match port_holders(host) {
                Ok(h) => h,
                Err(e) => {
                    report.push(
                        Check::Ports,
                        false,
                        format!("cannot check whether port {host} is free: {e}"),
                    );
                    continue;
                }
            };
            if holders.is_empty() {
                continue;
            }
            if project_running
                && published_by_project(compose, target, &spec.name, container, host).await
            {
                continue;
            }
            name_containers(&mut holders, docker, host).await;
            let who: Vec<String> = holders.iter().map(ToString::to_string).collect();
            report.push(
                Check::Ports,
                true,
                format!(
                    "host port {host} (service {}) is already in use by {}",
                    spec.name,
                    who.join("; ")
                ),
            );
        }
    }
}

/// A docker-proxy holding `port` stands for a container: name it, from
/// the published ports of the running containers.
async fn name_containers(holders: &mut [PortHolder], docker: Option<&Docker>, port: u16) {
    let Some(docker) = docker else { return };
    if !holders.iter().any(|h| h.command == "docker-proxy") {
        return;
    }
    let names = match docker.publishing(port).await {
        Ok(n) if !n.is_empty() => n.join(", "),
        _ => return,
    };
    for h in holders.iter_mut().filter(|h| h.command == "docker-proxy") {
        h.container = Some(names.clone());
    }
}

/// `compose port SERVICE CONTAINER_PORT` answers with this host port.
async fn published_by_project(
    compose: &Compose,
    target: &Target,
    service: &str,
    container: u16,
    host: u16,
) -> bool {
    let lines = Mutex::new(Vec::<String>::new());
    let sink = |l: &str| {
        lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(l.to_string())
    };
    let inv = Invocation {
        project: target.project.clone(),
        dir: target.dir.clone(),
        file: target.file.clone(),
        args: vec!["port".into(), service.into(), container.to_string()],
    };
    let ran = compose
        .run(
            &inv,
            &sink,
            &CancellationToken::new(),
            Duration::from_secs(30),
        )
        .await;
    let suffix = format!(":{host}");
    ran.is_ok()
        && lines
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.trim().ends_with(&suffix))
}

async fn check_disk(
    report: &mut PreflightReport,
    docker: Option<&Docker>,
    target: &Target,
    opts: &Options,
) {
    let mut places: Vec<(String, PathBuf)> =
        vec![("the service directory".into(), target.dir.clone())];
    if let Some(docker) = docker {
        match docker.info().await {
            Ok(info) if !info.data_root.is_empty() => {
                places.push(("Docker's data root".into(), PathBuf::from(info.data_root)))
            }
            Ok(_) => {}
            Err(e) => report.push(
                Check::Disk,
                false,
                format!("cannot ask Docker for its data root: {e}"),
            ),
        }
    }
    for (what, path) in places {
        match free_bytes(&path) {
            Ok(free) if free < opts.min_free_bytes => report.push(
                Check::Disk,
                true,
                format!(
                    "only {} free on {what} ({}), at least {} needed",
                    crate::fmt::gib(free),
                    path.display(),
                    crate::fmt::gib(opts.min_free_bytes)
                ),
            ),
            Ok(_) => {}
            Err(e) => report.push(
                Check::Disk,
                false,
                format!("cannot read free space of {what} ({}): {e}", path.display()),
            ),
        }
    }
}

/// Bytes available to unprivileged users on the file system of `path`.
pub fn free_bytes(path: &Path) -> Result<u64, nix::Error> {
    let st = nix::sys::statvfs::statvfs(path)?;
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::testing;

    #[test]
    fn reads_v1_normalised_config() {
        let yaml = r#"services:
  app:
    environment:
      A: '1'
    image: stackd-test/busybox:1
    ports:
    - published: 18080
      target: 80
    - 127.0.0.1:18081:81/tcp
    - 18090:90/udp
    - published: 18082
      target: 90
    pull_policy: never
    volumes:
    - /tmp/pf/data:/data:rw
    - named:/n:rw
    - source: /tmp/pf/other
      target: /d2
      type: bind
version: '3.9'
volumes:
  named: {}
"#;
        let specs = read_config(yaml, Path::new("/srv/app")).unwrap();
        assert_eq!(
            specs,
            vec![ServiceSpec {
                name: "app".into(),
                image: Some("stackd-test/busybox:1".into()),
                pull_never: true,
                bind_sources: vec!["/tmp/pf/data".into(), "/tmp/pf/other".into()],
                ports: vec![(18080, 80), (18081, 81), (18082, 90)],
                env_files: vec![],
            }]
        );
    }

    #[test]
    fn reads_v2_normalised_config() {
        let yaml = r#"name: demo
services:
  web:
    env_file:
      - path: /srv/demo/web.env
        required: true
      - path: /srv/demo/optional.env
        required: false
    image: nginx:1
    networks:
      default: null
    ports:
      - mode: ingress
        target: 80
        published: "8080"
        protocol: tcp
      - mode: ingress
        host_ip: 127.0.0.1
        target: 9000
        published: 9000-9001
        protocol: tcp
    volumes:
      - type: bind
        source: /srv/demo/html
        target: /usr/share/nginx/html
        bind:
          create_host_path: true
      - type: volume
        source: data
        target: /data
  job:
    build:
      context: /srv/demo
    env_file: rel.env
"#;
        let specs = read_config(yaml, Path::new("/srv/demo")).unwrap();
        assert_eq!(specs.len(), 2);
        assert_eq!(specs[0].name, "web");
        assert_eq!(specs[0].bind_sources, vec![PathBuf::from("/srv/demo/html")]);
        assert_eq!(specs[0].ports, vec![(8080, 80), (9000, 9000), (9001, 9001)]);
        assert_eq!(specs[0].env_files, vec![PathBuf::from("/srv/demo/web.env")]);
        assert!(!specs[0].pull_never);
        assert_eq!(specs[1].image, None);
        assert_eq!(specs[1].env_files, vec![PathBuf::from("/srv/demo/rel.env")]);
        assert!(matches!(
            read_config("version: '3'\n", Path::new("/")),
            Err(PreflightError::NoServices)
        ));
    }

    #[test]
    fn short_port_strings() {
        let text = |v: &Value| v.as_str().map(str::to_string);
        let cases: [(&str, &[(u16, u16)]); 6] = [
            ("8080:80", &[(8080, 80)]),
            ("0.0.0.0:8080:80/tcp", &[(8080, 80)]),
            ("[::1]:8080:80", &[(8080, 80)]),
            ("5000-5001:6000-6001", &[(5000, 6000), (5001, 6001)]),
            ("53:53/udp", &[]),
            ("80", &[]),
        ];
        for (s, want) in cases {
            assert_eq!(
                published_ports(&Value::String(s.into()), &text),
                want,
                "{s}"
            );
        }
    }

    fn fixture(dir: &Path, port: u16, bind: &str) -> Target {
        let image = testing::test_image();
        std::fs::write(dir.join("app.env"), "A=1\n").unwrap();
        std::fs::write(
            dir.join("compose.yaml"),
            format!(
                "services:\n  app:\n    image: {image}\n    pull_policy: never\n    env_file: app.env\n    ports: [\"{port}:80\"]\n    volumes: [\"{bind}:/data\"]\n    command: [\"sleep\", \"600\"]\n"
            ),
        )
        .unwrap();
        Target {
            project: format!("stackdpf{port}"),
            dir: dir.to_path_buf(),
            file: dir.join("compose.yaml"),
        }
    }

    fn free_port() -> u16 {
        std::net::TcpListener::bind("0.0.0.0:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    }

    const NO_DISK_LIMIT: Options = Options { min_free_bytes: 0 };

    #[tokio::test]
    async fn docker_a_clean_project_passes() {
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        testing::test_image();
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        let target = fixture(dir.path(), free_port(), "./data");
        let report = check(&compose, Some(&docker), &target, &NO_DISK_LIMIT).await;
        assert!(report.problems.is_empty(), "{report}");
        assert!(report.passed());
    }

    #[tokio::test]
    async fn docker_missing_bind_source_and_held_port_in_one_report() {
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        testing::test_image();
        let dir = tempfile::tempdir().unwrap();
        let held = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let target = fixture(dir.path(), port, "./nope");
        let report = check(
            &compose,
            Some(&docker),
            &target,
            &Options {
                min_free_bytes: u64::MAX,
            },
        )
        .await;
        assert!(!report.passed());
        let checks: Vec<Check> = report.fatal().map(|p| p.check).collect();
        assert!(checks.contains(&Check::BindMounts), "{report}");
        assert!(checks.contains(&Check::Ports), "{report}");
        assert!(checks.contains(&Check::Disk), "{report}");
        let ports = report.fatal().find(|p| p.check == Check::Ports).unwrap();
        assert!(
            ports
                .message
                .contains(&format!("process {}", std::process::id())),
            "{}",
            ports.message
        );
        let bind = report
            .fatal()
            .find(|p| p.check == Check::BindMounts)
            .unwrap();
        assert!(bind.message.contains("nope"), "{}", bind.message);
    }

    #[tokio::test]
    async fn docker_broken_file_and_missing_image() {
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("compose.yaml"), "services:\n  app: [\n").unwrap();
        let target = Target {
            project: "stackdpfbroken".into(),
            dir: dir.path().to_path_buf(),
            file: dir.path().join("compose.yaml"),
        };
        let report = check(&compose, Some(&docker), &target, &NO_DISK_LIMIT).await;
        assert_eq!(report.fatal().count(), 1, "{report}");
        assert_eq!(report.problems[0].check, Check::ComposeFile);

        std::fs::write(
            dir.path().join("compose.yaml"),
            "services:\n  a:\n    image: stackd-test/absent:1\n    pull_policy: never\n  b:\n    image: stackd-test/absent:2\n",
        )
        .unwrap();
        let report = check(&compose, Some(&docker), &target, &NO_DISK_LIMIT).await;
        let images: Vec<(bool, &str)> = report
            .problems
            .iter()
            .filter(|p| p.check == Check::Images)
            .map(|p| (p.fatal, p.message.as_str()))
            .collect();
        assert_eq!(images.len(), 2, "{report}");
        assert!(images[0].0 && images[0].1.contains("pull_policy is never"));
        assert!(!images[1].0 && images[1].1.contains("will be pulled"));
    }
}
