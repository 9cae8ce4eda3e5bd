//! What the simulator reads from a Compose file: per service the image,
//! dependencies, healthcheck, replicas, restart policy and memory limit,
//! and the config hash Compose would label its containers with.
//!
//! Not modelled: variable interpolation, `extends`, env files, profiles,
//! builds (a `build:` service gets the image name `PROJECT-SERVICE`),
//! networks and volumes.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_yaml::Value;
use sha2::{Digest, Sha256};

/// How long a simulated healthcheck takes to say "healthy" when the file
/// gives no `start_period`/`interval`.
const DEFAULT_HEALTHY_AFTER: Duration = Duration::from_millis(300);
/// The longest the simulator waits before saying "healthy", whatever the
/// file says: a simulation is about order, not about real waiting.
const MAX_HEALTHY_AFTER: Duration = Duration::from_secs(2);

/// One service of a project, as the simulator runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceModel {
    pub name: String,
    pub image: String,
    /// Service → condition ("service_started", "service_healthy",
    /// "service_completed_successfully").
    pub depends_on: BTreeMap<String, String>,
    /// When the healthcheck reports "healthy" after a start; None without one.
    pub healthy_after: Option<Duration>,
    pub replicas: u32,
    pub restart: String,
    pub memory_limit: Option<u64>,
    /// TCP ports published: (host, container) (`ports: ["8080:80"]`).
    pub ports: Vec<(u16, u16)>,
    /// Compose's `com.docker.compose.config-hash`: sha256 of the service's
    /// configuration as JSON.
    pub config_hash: String,
}

/// A Compose file read by the simulator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ProjectModel {
    /// In `depends_on` order (dependencies first), then by name.
    pub services: Vec<ServiceModel>,
}

impl ProjectModel {
    /// Reads `file` (relative paths against `dir`); the error is the line
    /// Compose would print.
    pub(crate) fn load(dir: &Path, file: &Path) -> Result<ProjectModel, String> {
        let path = if file.is_absolute() {
            file.to_path_buf()
        } else {
            dir.join(file)
        };
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("open {}: {e}", path.display()))?;
        ProjectModel::parse(&text, &path.display().to_string())
    }

    pub(crate) fn parse(text: &str, name: &str) -> Result<ProjectModel, String> {
        let doc: Value = serde_yaml::from_str(text).map_err(|e| format!("yaml: {name}: {e}"))?;
        let services = doc
            .get("services")
            .and_then(Value::as_mapping)
            .ok_or_else(|| format!("{name}: no services defined"))?;
        let mut out = Vec::new();
        for (key, svc) in services {
            let name = key
                .as_str()
                .ok_or_else(|| "services: a service name must be a string".to_string())?
                .to_string();
            out.push(service(&name, svc)?);
        }
        for s in &out {
            for dep in s.depends_on.keys() {
                if !out.iter().any(|o| &o.name == dep) {
                    return Err(format!(
                        "service {:?} depends on undefined service {dep:?}: invalid compose project",
                        s.name
                    ));
                }
            }
        }
        Ok(ProjectModel {
            services: order(out)?,
        })
    }

    pub(crate) fn service(&self, name: &str) -> Option<&ServiceModel> {
        self.services.iter().find(|s| s.name == name)
    }

    /// `names` with everything they depend on, in start order; every
    /// service when `names` is empty.
    pub(crate) fn closure(&self, names: &[String], with_deps: bool) -> Vec<&ServiceModel> {
        if names.is_empty() {
            return self.services.iter().collect();
        }
        let mut want: Vec<String> = names.to_vec();
        if with_deps {
            let mut i = 0;
            while i < want.len() {
                if let Some(s) = self.service(&want[i]) {
                    for d in s.depends_on.keys() {
                        if !want.contains(d) {
                            want.push(d.clone());
                        }
                    }
                }
                i += 1;
            }
        }
        self.services
            .iter()
            .filter(|s| want.contains(&s.name))
            .collect()
    }
}

fn service(name: &str, svc: &Value) -> Result<ServiceModel, String> {
    let image = match svc.get("image").and_then(Value::as_str) {
        Some(i) => i.to_string(),
        None if svc.get("build").is_some() => format!("{name}:latest"),
        None => {
            return Err(format!(
                "service {name:?} has neither an image nor a build context specified: invalid compose project"
            ))
        }
    };
    let depends_on = match svc.get("depends_on") {
        None => BTreeMap::new(),
        Some(Value::Sequence(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .map(|d| (d.to_string(), "service_started".to_string()))
            .collect(),
        Some(Value::Mapping(map)) => map
            .iter()
            .filter_map(|(k, v)| {
                let cond = v
                    .get("condition")
                    .and_then(Value::as_str)
                    .unwrap_or("service_started");
                Some((k.as_str()?.to_string(), cond.to_string()))
            })
            .collect(),
        Some(_) => {
            return Err(format!(
                "services.{name}.depends_on must be a list or a mapping"
            ))
        }
    };
    let healthy_after = match svc.get("healthcheck") {
        Some(hc) if hc.get("disable").and_then(Value::as_bool) != Some(true) => {
            let of = |key: &str| {
                hc.get(key)
                    .and_then(Value::as_str)
                    .and_then(|t| crate::config::parse_duration(t).ok())
            };
            let after = of("start_interval")
                .or_else(|| of("interval"))
                .map_or(DEFAULT_HEALTHY_AFTER, |d| d.min(MAX_HEALTHY_AFTER));
            Some(after.min(MAX_HEALTHY_AFTER))
        }
        _ => None,
    };
    let replicas = svc
        .get("deploy")
        .and_then(|d| d.get("replicas"))
        .or_else(|| svc.get("scale"))
        .and_then(Value::as_u64)
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let restart = svc
        .get("restart")
        .and_then(Value::as_str)
        .unwrap_or("no")
        .to_string();
    let memory_limit = svc.get("mem_limit").and_then(|v| match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => bytes(s),
        _ => None,
    });
    let ports = svc
        .get("ports")
        .and_then(Value::as_sequence)
        .map(|list| {
            list.iter()
                .filter_map(|p| match p {
                    Value::String(s) => host_port(s),
                    Value::Mapping(_) => {
                        let port = |key: &str| {
                            p.get(key)
                                .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
                                .and_then(|n| u16::try_from(n).ok())
                        };
                        Some((port("published")?, port("target")?))
                    }
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let json = serde_json::to_vec(svc).map_err(|e| format!("services.{name}: {e}"))?;
    let config_hash = hex(&Sha256::digest(&json));
    Ok(ServiceModel {
        name: name.to_string(),
        image,
        depends_on,
        healthy_after,
        replicas,
        restart,
        memory_limit,
        ports,
        config_hash,
    })
}

/// "512m", "1g", "1024": Docker's units, powers of 1024.
fn bytes(s: &str) -> Option<u64> {
    let t = s.trim().to_ascii_lowercase();
    let t = t.trim_end_matches('b');
    let (num, mult) = match t.chars().last()? {
        'k' => (&t[..t.len() - 1], 1u64 << 10),
        'm' => (&t[..t.len() - 1], 1 << 20),
        'g' => (&t[..t.len() - 1], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

/// "8080:80", "127.0.0.1:8080:80", "8080:80/tcp" → (8080, 80); "80" (no
/// host port) and UDP → None.
fn host_port(spec: &str) -> Option<(u16, u16)> {
    if spec.ends_with("/udp") || spec.ends_with("/sctp") {
        return None;
    }
    let spec = spec.trim_end_matches("/tcp");
    let parts: Vec<&str> = spec.rsplitn(3, ':').collect();
    if parts.len() < 2 {
        return None;
    }
    Some((parts[1].parse().ok()?, parts[0].parse().ok()?))
}

/// Dependencies first; a cycle is Compose's error.
fn order(mut left: Vec<ServiceModel>) -> Result<Vec<ServiceModel>, String> {
    left.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<ServiceModel> = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let ready = left
            .iter()
            .position(|s| {
                s.depends_on
                    .keys()
                    .all(|d| out.iter().any(|o| &o.name == d))
            })
            .ok_or_else(|| {
                format!(
                    "dependency cycle detected: {}",
                    left.iter()
                        .map(|s| s.name.as_str())
                        .collect::<Vec<_>>()
                        .join(" -> ")
                )
            })?;
        out.push(left.remove(ready));
    }
    Ok(out)
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_services_in_dependency_order() {
        let p = ProjectModel::parse(
            "services:\n  web:\n    image: nginx\n    depends_on:\n      db:\n        condition: service_healthy\n    ports: [\"8080:80\"]\n    deploy:\n      replicas: 2\n  db:\n    image: postgres\n    healthcheck:\n      test: [\"CMD\", \"true\"]\n      interval: 1s\n",
            "compose.yaml",
        )
        .unwrap();
        let names: Vec<_> = p.services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["db", "web"]);
        let web = p.service("web").unwrap();
        assert_eq!(web.replicas, 2);
        assert_eq!(web.ports, [(8080, 80)]);
        assert_eq!(web.depends_on["db"], "service_healthy");
        assert_eq!(
            p.service("db").unwrap().healthy_after,
            Some(Duration::from_secs(1))
        );
        assert_eq!(web.config_hash.len(), 64);
        assert_ne!(web.config_hash, p.service("db").unwrap().config_hash);
    }

    #[test]
    fn a_cycle_and_a_missing_dependency_are_errors() {
        let cyc = "services:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [a]\n";
        assert!(ProjectModel::parse(cyc, "f").unwrap_err().contains("cycle"));
        let missing = "services:\n  a:\n    image: x\n    depends_on: [nope]\n";
        assert!(ProjectModel::parse(missing, "f")
            .unwrap_err()
            .contains("undefined"));
    }

    #[test]
    fn host_ports() {
        assert_eq!(host_port("8080:80"), Some((8080, 80)));
        assert_eq!(host_port("127.0.0.1:8081:80/tcp"), Some((8081, 80)));
        assert_eq!(host_port("80"), None);
        assert_eq!(host_port("53:53/udp"), None);
    }
}
