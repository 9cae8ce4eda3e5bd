//! Start what exists: recovery at Docker's own speed.
//!
//! Most recoveries change nothing in a project: its containers exist, were
//! created from what the Compose file says, and only have to run again.
//! Compose would find exactly that after a second or more of loading the
//! project (a CPU-second per call for Compose v1). So when
//!
//! - every service Compose deploys has its containers, as many as the
//!   file asks for (`deploy.replicas`, else `scale`, else one),
//! - each carries the `com.docker.compose.config-hash` that the current
//!   file gives (recorded from the containers after stackd's last
//!   successful `up`, or asked of `config --hash '*'` once per file), and
//! - each container's image is still what its image name resolves to,
//!
//! the stopped containers are started through the Docker API, in Compose's
//! dependency order, and waited for. Anything else goes to Compose `up -d`,
//! and the task log says which way was taken and why.
//!
//! The file's identity is [`file_key`]: a SHA-256 over the Compose file,
//! the project's `.env` and every `env_file` it names. The pure parts
//! ([`read_project`], [`decide`]) are table-tested; [`start`] and [`stop`]
//! are the only ones that change containers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::engine::{ContainerInfo, ContainerState, Docker};
use crate::store::Store;
use crate::tasks::Log;

/// What the fast path reads from the Compose file itself (no Compose call):
/// the order to start services in and what a start waits for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Project {
    pub services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Service {
    /// `depends_on` names with their condition (`service_started` when
    /// the short form is used).
    pub depends_on: Vec<(String, String)>,
    pub env_files: Vec<String>,
    /// `stop_grace_period`, when given in a form read here.
    pub stop_grace: Option<Duration>,
    /// How many containers Compose runs for it: `deploy.replicas`, else
    /// `scale`, else 1. `Err` holds a value not read here (an
    /// interpolated `${N}`, say), so only Compose knows.
    pub replicas: Result<u64, String>,
}

impl Default for Service {
    fn default() -> Self {
        Service {
            depends_on: Vec::new(),
            env_files: Vec::new(),
            stop_grace: None,
            replicas: Ok(1),
        }
    }
}

/// Compose's default `stop_grace_period`.
pub(super) const DEFAULT_STOP_GRACE: Duration = Duration::from_secs(10);

/// Reads the services' `depends_on`, `env_file` and `stop_grace_period`
/// from a Compose file's text.
pub(super) fn read_project(text: &str) -> Result<Project, String> {
    let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let services = doc
        .get("services")
        .and_then(Value::as_mapping)
        .ok_or("no services mapping")?;
    let mut out = Project::default();
    for (name, svc) in services {
        let Some(name) = name.as_str() else { continue };
        let mut s = Service::default();
        match svc.get("depends_on") {
            Some(Value::Sequence(list)) => {
                for d in list.iter().filter_map(Value::as_str) {
                    s.depends_on.push((d.to_string(), "service_started".into()));
                }
            }
            Some(Value::Mapping(map)) => {
                for (d, spec) in map {
                    let Some(d) = d.as_str() else { continue };
                    let cond = spec
                        .get("condition")
                        .and_then(Value::as_str)
                        .unwrap_or("service_started");
                    s.depends_on.push((d.to_string(), cond.to_string()));
                }
            }
            _ => {}
        }
        match svc.get("env_file") {
            Some(Value::String(f)) => s.env_files.push(f.clone()),
            Some(Value::Sequence(list)) => {
                for f in list {
                    let path = match f {
                        Value::String(p) => Some(p.clone()),
                        m => m.get("path").and_then(Value::as_str).map(str::to_string),
                    };
                    s.env_files.extend(path);
                }
            }
            _ => {}
        }
        let count = svc
            .get("deploy")
            .and_then(|d| d.get("replicas"))
            .or_else(|| svc.get("scale"));
        s.replicas = match count {
            None | Some(Value::Null) => Ok(1),
            Some(Value::Number(n)) => n.as_u64().ok_or_else(|| n.to_string()),
            Some(Value::String(t)) => t.trim().parse().map_err(|_| t.clone()),
            Some(other) => Err(format!("{other:?}")),
        };
        s.stop_grace = svc
            .get("stop_grace_period")
            .and_then(|v| match v {
                Value::String(t) => Some(t.clone()),
                Value::Number(n) => Some(format!("{n}s")),
                _ => None,
            })
            .and_then(|t| parse_duration(&t));
        out.services.insert(name.to_string(), s);
    }
    Ok(out)
}

/// Compose's duration words as far as `stop_grace_period` uses them:
/// "10s", "1m30s", "1m", "500ms", "2h".
fn parse_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut num = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let n: f64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'h' => 3600.0,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                0.001
            }
            'm' => 60.0,
            's' => 1.0,
            _ => return None,
        };
        total += Duration::from_secs_f64(n * unit);
        any = true;
    }
    if !num.is_empty() {
        return None;
    }
    any.then_some(total)
}

/// The identity of one version of a project's files: SHA-256 over the
/// Compose file, the project folder's `.env` and each `env_file` the file
/// names (a missing one counts as missing), with the project read from it.
pub(super) fn file_key(dir: &Path, file: &Path) -> Result<(String, Project), String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let project = read_project(&text)?;
    let mut h = Sha256::new();
    h.update(b"compose\0");
    h.update(text.as_bytes());
    let mut extra: BTreeSet<PathBuf> = BTreeSet::new();
    extra.insert(dir.join(".env"));
    for s in project.services.values() {
        for f in &s.env_files {
            extra.insert(dir.join(f));
        }
    }
    for path in extra {
        h.update(b"\0file\0");
        h.update(path.as_os_str().as_encoded_bytes());
        match std::fs::read(&path) {
            Ok(bytes) => {
                h.update(b"\0present\0");
                h.update(&bytes);
            }
            Err(_) => h.update(b"\0missing\0"),
        }
    }
    let digest = h.finalize();
    let key = digest.iter().map(|b| format!("{b:02x}")).collect();
    Ok((key, project))
}

/// The config hashes of one version of a project's files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Recorded {
    pub key: String,
    /// Service → `com.docker.compose.config-hash`.
    pub hashes: BTreeMap<String, String>,
}

/// Store metadata key of a project's [`Recorded`] hashes, so that a boot
/// (a new process) finds them without asking Compose.
fn meta_key(project: &str) -> String {
    format!("fastpath.hashes.{project}")
}

/// The hashes recorded for `project` under `key`, if any.
pub(super) fn recorded(
    store: &Store,
    project: &str,
    key: &str,
) -> Option<BTreeMap<String, String>> {
    let text = store.meta(&meta_key(project)).ok().flatten()?;
    let r: Recorded = serde_json::from_str(&text).ok()?;
    (r.key == key).then_some(r.hashes)
}

/// Remembers `hashes` for `project` under `key`.
pub(super) fn record(store: &Store, project: &str, key: &str, hashes: BTreeMap<String, String>) {
    let r = Recorded {
        key: key.to_string(),
        hashes,
    };
    if let Ok(text) = serde_json::to_string(&r) {
        if let Err(e) = store.set_meta(&meta_key(project), &text) {
            store.note_write_error("recording a project's config hashes", &e);
        }
    }
}

/// The config hash of each service as its containers carry them, when
/// every (non one-off) container of a service carries the same one.
pub(super) fn hashes_of(containers: &[ContainerInfo]) -> Option<BTreeMap<String, String>> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for c in containers.iter().filter(|c| !c.oneoff) {
        let h = c.config_hash.clone()?;
        if let Some(old) = out.insert(c.service.clone(), h.clone()) {
            if old != h {
                return None;
            }
        }
    }
    (!out.is_empty()).then_some(out)
}

/// What [`decide`] found: the way to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Decision {
    /// Start through the Docker API, wave after wave.
    Start(Plan),
    /// Through Compose, for this reason.
    Compose(String),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Services in dependency order: each wave's services depend only on
    /// earlier waves'.
    pub waves: Vec<Vec<Step>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Step {
    pub service: String,
    /// Container ids, all of the service's.
    pub containers: Vec<String>,
    /// Those of them not running now.
    pub stopped: Vec<String>,
    /// Dependencies to wait for first, with Compose's condition.
    pub after: Vec<(String, String)>,
    pub stop_grace: Duration,
}

/// Whether `containers` (a project's, as inspected) can be started as they
/// are: see the module doc. `hashes` is what the current file gives;
/// `image_ids` the local id of each image name the containers use (None:
/// not present).
pub(super) fn decide(
    project: &Project,
    hashes: &BTreeMap<String, String>,
    containers: &[ContainerInfo],
    image_ids: &HashMap<String, Option<String>>,
) -> Decision {
    let ours: Vec<&ContainerInfo> = containers.iter().filter(|c| !c.oneoff).collect();
    if ours.is_empty() {
        return Decision::Compose("no container of the project exists".into());
    }
    if hashes.is_empty() {
        return Decision::Compose("the Compose file deploys no service".into());
    }
    if let Some(c) = ours.iter().find(|c| !hashes.contains_key(&c.service)) {
        return Decision::Compose(format!(
            "container {} belongs to service {}, which the Compose file does not deploy",
            c.name, c.service
        ));
    }
    let mut steps: BTreeMap<&str, Step> = BTreeMap::new();
    for (service, hash) in hashes {
        let mine: Vec<&&ContainerInfo> = ours.iter().filter(|c| &c.service == service).collect();
        if mine.is_empty() {
            return Decision::Compose(format!("service {service} has no container"));
        }
        let mut step = Step {
            service: service.clone(),
            containers: Vec::new(),
            stopped: Vec::new(),
            after: Vec::new(),
            stop_grace: DEFAULT_STOP_GRACE,
        };
        for c in mine {
            if c.config_hash.as_deref() != Some(hash.as_str()) {
                return Decision::Compose(format!(
                    "the Compose file changed for service {service} (container {} has another config hash)",
                    c.name
                ));
            }
            match image_ids.get(&c.image) {
                Some(Some(id)) if *id == c.image_id => {}
                Some(Some(_)) => {
                    return Decision::Compose(format!(
                        "image {} is not the one container {} was created from",
                        c.image, c.name
                    ))
                }
                _ => {
                    return Decision::Compose(format!(
                        "image {} of container {} is not present",
                        c.image, c.name
                    ))
                }
            }
            match c.state {
                ContainerState::Running | ContainerState::Restarting => {}
                ContainerState::Exited | ContainerState::Created => step.stopped.push(c.id.clone()),
                other => {
                    return Decision::Compose(format!("container {} is {other}", c.name));
                }
            }
            step.containers.push(c.id.clone());
        }
        if let Some(s) = project.services.get(service) {
            match &s.replicas {
                Ok(n) if u64::try_from(step.containers.len()).ok() == Some(*n) => {}
                Ok(n) => {
                    let have = step.containers.len();
                    return Decision::Compose(format!(
                        "service {service} has {have} container{}; the Compose file asks for {n}",
                        if have == 1 { "" } else { "s" }
                    ));
                }
                Err(text) => {
                    return Decision::Compose(format!(
                        "service {service}'s replica count {text} is for Compose to read"
                    ))
                }
            }
            step.after = s
                .depends_on
                .iter()
                .filter(|(d, _)| hashes.contains_key(d))
                .cloned()
                .collect();
            step.stop_grace = s.stop_grace.unwrap_or(DEFAULT_STOP_GRACE);
        }
        steps.insert(service.as_str(), step);
    }
    // Waves: a service goes once everything it depends on has gone.
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut plan = Plan::default();
    while !steps.is_empty() {
        let ready: Vec<&str> = steps
            .iter()
            .filter(|(_, s)| s.after.iter().all(|(d, _)| placed.contains(d)))
            .map(|(n, _)| *n)
            .collect();
        if ready.is_empty() {
            return Decision::Compose("the services' depends_on form a cycle".into());
        }
        let wave: Vec<Step> = ready.iter().filter_map(|n| steps.remove(n)).collect();
        placed.extend(wave.iter().map(|s| s.service.clone()));
        plan.waves.push(wave);
    }
    Decision::Start(plan)
}

/// Why starting through the API did not work; the caller goes to Compose.
#[derive(Debug, thiserror::Error)]
pub(super) enum StartError {
    #[error("{0}")]
    Engine(#[from] crate::engine::EngineError),
    #[error("{0}")]
    Failed(String),
    #[error("cancelled")]
    Cancelled,
}

/// How often a start looks at a container it waits for.
const POLL: Duration = Duration::from_millis(50);

/// Stops every running container of `plan`, dependents first (as Compose's
/// `restart` and `stop` do), each within its service's stop grace period.
pub(super) async fn stop(docker: &Docker, plan: &Plan, log: &Log) -> Result<(), StartError> {
    for wave in plan.waves.iter().rev() {
        let stops = wave.iter().flat_map(|step| {
            step.containers.iter().map(move |id| async move {
                docker.stop(id, step.stop_grace).await?;
                Ok::<_, StartError>(())
            })
        });
        for r in futures_util::future::join_all(stops).await {
            r?;
        }
        for step in wave {
            log.line(&format!(
                "stopped {} ({} containers)",
                step.service,
                step.containers.len()
            ));
        }
    }
    Ok(())
}

/// Starts the containers of `plan` (all of them when `everything`, else
/// only those that were stopped) wave by wave, each after its
/// dependencies' conditions hold, and waits until each runs.
pub(super) async fn start(
    docker: &Docker,
    plan: &Plan,
    everything: bool,
    log: &Log,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Result<(), StartError> {
    let by_service: HashMap<&str, &Step> = plan
        .waves
        .iter()
        .flatten()
        .map(|s| (s.service.as_str(), s))
        .collect();
    for wave in &plan.waves {
        let starts = wave.iter().map(|step| {
            let by_service = &by_service;
            async move {
                for (dep, condition) in &step.after {
                    if let Some(d) = by_service.get(dep.as_str()) {
                        wait_condition(docker, d, condition, cancel, deadline).await?;
                    }
                }
                let ids = if everything {
                    &step.containers
                } else {
                    &step.stopped
                };
                for id in ids {
                    docker.start(id).await?;
                }
                for id in ids {
                    wait_running(docker, id).await?;
                }
                if !ids.is_empty() {
                    log.line(&format!(
                        "started {} ({} containers)",
                        step.service,
                        ids.len()
                    ));
                }
                Ok::<_, StartError>(())
            }
        });
        for r in futures_util::future::join_all(starts).await {
            r?;
        }
    }
    Ok(())
}

/// A started container runs (Docker's start returns once its process has
/// started); one that exited at once is a failed start.
async fn wait_running(docker: &Docker, id: &str) -> Result<(), StartError> {
    match docker.inspect(id).await? {
        Some(c)
            if matches!(
                c.state,
                ContainerState::Running | ContainerState::Restarting
            ) =>
        {
            Ok(())
        }
        // A one-shot container may have run to completion already.
        Some(c) if c.exit_code == Some(0) => Ok(()),
        Some(c) => Err(StartError::Failed(format!(
            "container {} is {} right after its start{}",
            c.name,
            c.state,
            c.exit_code
                .map(|e| format!(" (exit code {e})"))
                .unwrap_or_default()
        ))),
        None => Err(StartError::Failed(format!(
            "container {id} vanished during its start"
        ))),
    }
}

/// Waits until `dep`'s containers meet Compose's `depends_on` condition.
async fn wait_condition(
    docker: &Docker,
    dep: &Step,
    condition: &str,
    cancel: &CancellationToken,
    deadline: tokio::time::Instant,
) -> Result<(), StartError> {
    if condition == "service_started" {
        return Ok(());
    }
    loop {
        let mut met = true;
        for id in &dep.containers {
            let c = docker.inspect(id).await?.ok_or_else(|| {
                StartError::Failed(format!("container {id} of {} vanished", dep.service))
            })?;
            let ok = match condition {
                "service_healthy" => match c.health.as_deref() {
                    Some("healthy") => true,
                    Some(_) => false,
                    None => {
                        return Err(StartError::Failed(format!(
                            "{} has no healthcheck to wait for",
                            dep.service
                        )))
                    }
                },
                "service_completed_successfully" => match c.exit_code {
                    Some(0) if c.state != ContainerState::Running => true,
                    Some(code) if c.state != ContainerState::Running => {
                        return Err(StartError::Failed(format!(
                            "{} did not complete successfully (exit code {code})",
                            dep.service
                        )))
                    }
                    _ => false,
                },
                other => {
                    return Err(StartError::Failed(format!(
                        "unknown depends_on condition {other:?}"
                    )))
                }
            };
            met &= ok;
        }
        if met {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(StartError::Failed(format!(
                "{} did not become {condition} in time",
                dep.service
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = cancel.cancelled() => return Err(StartError::Cancelled),
        }
    }
}

/// Why a task goes through Compose after all.
pub(super) enum Miss {
    /// Said in the task log as "through Compose: <reason>".
    Compose(String),
    Cancelled,
}

impl From<String> for Miss {
    fn from(why: String) -> Self {
        Miss::Compose(why)
    }
}

impl super::Shared {
    /// The fast path's plan for `service`, or why there is none. Without
    /// `ask`, a file whose hashes were never recorded is a miss (no
    /// Compose call); with it, `config --hash '*'` is asked once per file.
    pub(super) async fn fast_plan(
        &self,
        service: &str,
        dir: &Path,
        file: &Path,
        ask: bool,
    ) -> Result<(Docker, Plan), Miss> {
        let docker = self
            .world
            .docker()
            .ok_or_else(|| "Docker is not connected".to_string())?;
        let (key, project) =
            file_key(dir, file).map_err(|e| format!("cannot read the Compose file: {e}"))?;
        let containers = docker
            .list_containers(Some(service))
            .await
            .map_err(|e| e.to_string())?;
        if containers.iter().all(|c| c.oneoff) {
            return Err("no container of the project exists".to_string().into());
        }
        let hashes = match recorded(&self.store, service, &key) {
            Some(h) => h,
            None if ask => {
                let compose = self
                    .compose()
                    .await
                    .map_err(|f| format!("no Compose: {}", f.message))?;
                let h = compose
                    .config_hashes(service, dir, file)
                    .await
                    .map_err(|e| format!("config --hash: {e}"))?;
                record(&self.store, service, &key, h.clone());
                h
            }
            None => {
                return Err("the Compose file's config hashes are not known yet"
                    .to_string()
                    .into())
            }
        };
        let mut image_ids = HashMap::new();
        for c in &containers {
            if !image_ids.contains_key(&c.image) {
                let id = docker.image_id(&c.image).await.map_err(|e| e.to_string())?;
                image_ids.insert(c.image.clone(), id);
            }
        }
        match decide(&project, &hashes, &containers, &image_ids) {
            Decision::Start(plan) => Ok((docker, plan)),
            Decision::Compose(why) => Err(why.into()),
        }
    }

    /// Starts `service`'s existing containers through the Docker API
    /// (`restart`: stops the running ones first), or says why Compose
    /// must do it.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn fast_start(
        &self,
        service: &str,
        dir: &Path,
        file: &Path,
        restart: bool,
        log: &Log,
        cancel: &CancellationToken,
        deadline: tokio::time::Instant,
    ) -> Result<(), Miss> {
        let (docker, plan) = self.fast_plan(service, dir, file, true).await?;
        log.line(
            "the containers exist and match the Compose file: starting them through the Docker API",
        );
        let run = async {
            if restart {
                stop(&docker, &plan, log).await?;
            }
            start(&docker, &plan, restart, log, cancel, deadline).await
        };
        match run.await {
            Ok(()) => Ok(()),
            Err(StartError::Cancelled) => Err(Miss::Cancelled),
            Err(e) => Err(format!("the start through the Docker API failed: {e}").into()),
        }
    }

    /// After Compose deployed `service` from the files with content hash
    /// `key`, its containers carry the config hashes that those files give:
    /// remember them, so the next recovery or boot asks Compose nothing.
    pub(super) async fn record_deployed(&self, service: &str, dir: &Path, file: &Path, key: &str) {
        // The files changed during the deploy: which version won is unknown.
        if file_key(dir, file).ok().map(|(k, _)| k).as_deref() != Some(key) {
            return;
        }
        let Some(docker) = self.world.docker() else {
            return;
        };
        if let Ok(containers) = docker.list_containers(Some(service)).await {
            if let Some(h) = hashes_of(&containers) {
                record(&self.store, service, key, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(service: &str, state: ContainerState, hash: &str) -> ContainerInfo {
        ContainerInfo {
            id: format!("id-{service}"),
            name: format!("p-{service}-1"),
            project: "p".into(),
            service: service.into(),
            number: Some(1),
            oneoff: false,
            image: "img:1".into(),
            image_id: "sha256:aaa".into(),
            config_hash: Some(hash.into()),
            state,
            status: String::new(),
            exit_code: None,
            oom_killed: false,
            restart_count: 0,
            restart_policy: "no".into(),
            memory_limit: None,
            health: None,
            started_at_usec: None,
            finished_at_usec: None,
            pid: None,
            error: None,
        }
    }

    fn hashes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn images(id: Option<&str>) -> HashMap<String, Option<String>> {
        HashMap::from([("img:1".to_string(), id.map(str::to_string))])
    }

    const FILE: &str = "services:\n  db:\n    image: img:1\n    stop_grace_period: 1m30s\n  web:\n    image: img:1\n    depends_on:\n      db:\n        condition: service_healthy\n    env_file: [a.env]\n  side:\n    image: img:1\n    depends_on: [web]\n";

    #[test]
    fn reads_depends_on_env_files_and_grace() {
        let p = read_project(FILE).unwrap();
        assert_eq!(
            p.services["web"].depends_on,
            vec![("db".to_string(), "service_healthy".to_string())]
        );
        assert_eq!(
            p.services["side"].depends_on,
            vec![("web".to_string(), "service_started".to_string())]
        );
        assert_eq!(p.services["web"].env_files, vec!["a.env".to_string()]);
        assert_eq!(p.services["db"].stop_grace, Some(Duration::from_secs(90)));
        assert!(read_project("nope: [").is_err());
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_duration("10"), None);
    }

    #[test]
    fn starts_in_dependency_waves_when_everything_matches() {
        let p = read_project(FILE).unwrap();
        let h = hashes(&[("db", "h1"), ("web", "h2"), ("side", "h3")]);
        let cs = vec![
            c("db", ContainerState::Exited, "h1"),
            c("web", ContainerState::Exited, "h2"),
            c("side", ContainerState::Running, "h3"),
        ];
        let Decision::Start(plan) = decide(&p, &h, &cs, &images(Some("sha256:aaa"))) else {
            panic!("expected a start");
        };
        let names: Vec<Vec<&str>> = plan
            .waves
            .iter()
            .map(|w| w.iter().map(|s| s.service.as_str()).collect())
            .collect();
        assert_eq!(names, vec![vec!["db"], vec!["web"], vec!["side"]]);
        assert_eq!(plan.waves[0][0].stop_grace, Duration::from_secs(90));
        assert_eq!(plan.waves[2][0].stopped, Vec::<String>::new());
        assert_eq!(plan.waves[0][0].stopped, vec!["id-db".to_string()]);
    }

    #[test]
    fn anything_else_goes_to_compose_with_its_reason() {
        let p = read_project(FILE).unwrap();
        let h = hashes(&[("db", "h1"), ("web", "h2")]);
        let ok = images(Some("sha256:aaa"));
        type Images = HashMap<String, Option<String>>;
        let cases: Vec<(Vec<ContainerInfo>, Images, &str)> = vec![
            (vec![], ok.clone(), "no container"),
            (
                vec![c("db", ContainerState::Exited, "h1")],
                ok.clone(),
                "service web has no container",
            ),
            (
                vec![
                    c("db", ContainerState::Exited, "h1"),
                    c("web", ContainerState::Exited, "OLD"),
                ],
                ok.clone(),
                "Compose file changed for service web",
            ),
            (
                vec![
                    c("db", ContainerState::Exited, "h1"),
                    c("web", ContainerState::Exited, "h2"),
                ],
                images(Some("sha256:bbb")),
                "is not the one",
            ),
            (
                vec![
                    c("db", ContainerState::Exited, "h1"),
                    c("web", ContainerState::Exited, "h2"),
                ],
                images(None),
                "not present",
            ),
            (
                vec![
                    c("db", ContainerState::Exited, "h1"),
                    c("web", ContainerState::Paused, "h2"),
                ],
                ok.clone(),
                "is paused",
            ),
            (
                vec![
                    c("db", ContainerState::Exited, "h1"),
                    c("web", ContainerState::Exited, "h2"),
                    c("gone", ContainerState::Exited, "h9"),
                ],
                ok.clone(),
                "does not deploy",
            ),
        ];
        for (cs, imgs, want) in cases {
            match decide(&p, &h, &cs, &imgs) {
                Decision::Compose(why) => assert!(why.contains(want), "{why:?} lacks {want:?}"),
                Decision::Start(_) => panic!("expected Compose ({want})"),
            }
        }
        let cycle =
            read_project("services:\n  a:\n    depends_on: [b]\n  b:\n    depends_on: [a]\n")
                .unwrap();
        let cs = vec![
            c("a", ContainerState::Exited, "1"),
            c("b", ContainerState::Exited, "2"),
        ];
        assert!(matches!(
            decide(&cycle, &hashes(&[("a", "1"), ("b", "2")]), &cs, &ok),
            Decision::Compose(w) if w.contains("cycle")
        ));
    }

    #[test]
    fn replicas_must_all_exist_to_start_through_the_api() {
        let file = "services:\n  web:\n    image: img:1\n    deploy:\n      replicas: 3\n  \
                    old:\n    image: img:1\n    scale: 2\n  var:\n    image: img:1\n    scale: ${N}\n";
        let p = read_project(file).unwrap();
        assert_eq!(p.services["web"].replicas, Ok(3));
        assert_eq!(p.services["old"].replicas, Ok(2));
        assert!(p.services["var"].replicas.is_err());
        assert_eq!(read_project(FILE).unwrap().services["db"].replicas, Ok(1));

        let replica = |n: u32, state| {
            let mut r = c("web", state, "h1");
            r.id = format!("id-web-{n}");
            r.name = format!("p-web-{n}");
            r.number = Some(n);
            r
        };
        let h = hashes(&[("web", "h1")]);
        let ok = images(Some("sha256:aaa"));
        let p =
            read_project("services:\n  web:\n    image: img:1\n    deploy:\n      replicas: 3\n")
                .unwrap();
        let three = vec![
            replica(1, ContainerState::Exited),
            replica(2, ContainerState::Running),
            replica(3, ContainerState::Exited),
        ];
        let Decision::Start(plan) = decide(&p, &h, &three, &ok) else {
            panic!("all three exist: a start");
        };
        assert_eq!(plan.waves[0][0].containers.len(), 3);
        assert_eq!(
            plan.waves[0][0].stopped,
            vec!["id-web-1".to_string(), "id-web-3".to_string()]
        );
        for (cs, want) in [
            (
                three[..2].to_vec(),
                "has 2 containers; the Compose file asks for 3",
            ),
            (
                [three.clone(), vec![replica(4, ContainerState::Exited)]].concat(),
                "has 4 containers; the Compose file asks for 3",
            ),
        ] {
            match decide(&p, &h, &cs, &ok) {
                Decision::Compose(why) => assert!(why.contains(want), "{why:?} lacks {want:?}"),
                Decision::Start(_) => panic!("expected Compose ({want})"),
            }
        }
        let var = read_project("services:\n  web:\n    image: img:1\n    scale: ${N}\n").unwrap();
        assert!(matches!(
            decide(&var, &h, &three[..1], &ok),
            Decision::Compose(w) if w.contains("for Compose to read")
        ));
    }

    #[test]
    fn hashes_from_labels_need_one_per_service() {
        let cs = vec![c("db", ContainerState::Running, "h1")];
        assert_eq!(hashes_of(&cs), Some(hashes(&[("db", "h1")])));
        let mut two = cs.clone();
        two.push(c("db", ContainerState::Running, "h2"));
        assert_eq!(hashes_of(&two), None);
        let mut unlabelled = c("db", ContainerState::Running, "x");
        unlabelled.config_hash = None;
        assert_eq!(hashes_of(&[unlabelled]), None);
    }

    #[test]
    fn the_key_follows_the_file_and_its_env_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("compose.yaml");
        std::fs::write(&file, FILE).unwrap();
        let (k1, _) = file_key(dir.path(), &file).unwrap();
        std::fs::write(dir.path().join("a.env"), "A=1\n").unwrap();
        let (k2, _) = file_key(dir.path(), &file).unwrap();
        assert_ne!(k1, k2);
        std::fs::write(dir.path().join(".env"), "FOO=1\n").unwrap();
        let (k3, _) = file_key(dir.path(), &file).unwrap();
        assert_ne!(k2, k3);
        assert_eq!(file_key(dir.path(), &file).unwrap().0, k3);
    }
}
