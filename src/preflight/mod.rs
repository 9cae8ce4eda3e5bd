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

use tokio_util::sync::CancellationToken;

use crate::engine::{Compose, ContainerState, Docker, Invocation};
use crate::recovery::{port_holders, PortHolder};

mod compose_config;

pub use compose_config::{read_config, PreflightError, ServiceSpec};

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
mod tests;
