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

use crate::engine::{ContainerInfo, ContainerState};
use crate::store::Store;

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

mod run;

#[cfg(test)]
mod tests;
