//! Order read from Compose files: the networks each file creates or uses
//! from outside, and which service therefore needs which.

use std::collections::BTreeMap;

/// The networks one Compose file creates and the external ones it uses,
/// by the name Docker knows them by.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ComposeNetworks {
    pub creates: Vec<String>,
    pub external: Vec<String>,
}

impl ComposeNetworks {
    /// Reads the top-level `networks:` of a Compose file of `project`: a
    /// network it creates is `name:` or `{project}_{key}`; an external one
    /// is `name:`, `external: { name: }` (the older form) or its key.
    /// Anything that does not parse gives no networks.
    pub fn parse(project: &str, yaml: &str) -> ComposeNetworks {
        let mut out = ComposeNetworks::default();
        let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(yaml) else {
            return out;
        };
        let Some(networks) = doc.get("networks").and_then(|n| n.as_mapping()) else {
            return out;
        };
        for (key, def) in networks {
            let Some(key) = key.as_str() else { continue };
            let name = def.get("name").and_then(|n| n.as_str());
            let external = def.get("external");
            let is_external =
                external.is_some_and(|e| e.as_bool() == Some(true) || e.get("name").is_some());
            if is_external {
                let old = external
                    .and_then(|e| e.get("name"))
                    .and_then(|n| n.as_str());
                out.external.push(name.or(old).unwrap_or(key).to_string());
            } else {
                out.creates
                    .push(name.map_or_else(|| format!("{project}_{key}"), str::to_string));
            }
        }
        out
    }
}

/// Order inferred from networks: each service that uses an external
/// network another service's Compose file creates depends on that service
/// (it could not start before). Returns service → the services it needs.
pub fn network_dependencies(files: &[(String, ComposeNetworks)]) -> BTreeMap<String, Vec<String>> {
    let mut creators: BTreeMap<&str, &str> = BTreeMap::new();
    for (service, nets) in files {
        for n in &nets.creates {
            creators.entry(n.as_str()).or_insert(service.as_str());
        }
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (service, nets) in files {
        for n in &nets.external {
            if let Some(creator) = creators.get(n.as_str()) {
                if *creator != service.as_str() {
                    let needs = out.entry(service.clone()).or_default();
                    if !needs.iter().any(|c| c == creator) {
                        needs.push(creator.to_string());
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_a_compose_file_creates_and_uses() {
        let maker = "networks:\n  shared:\n    name: lan-shared\n  back: {}\n";
        let user = "services:\n  web:\n    networks: [lan]\nnetworks:\n  lan:\n    external: true\n    name: lan-shared\n  old:\n    external:\n      name: legacy\n  plain:\n    external: true\n";
        let m = ComposeNetworks::parse("maker", maker);
        assert_eq!(m.creates, vec!["lan-shared", "maker_back"]);
        assert!(m.external.is_empty());
        let u = ComposeNetworks::parse("user", user);
        assert_eq!(u.external, vec!["lan-shared", "legacy", "plain"]);
        assert!(u.creates.is_empty());
        assert_eq!(
            ComposeNetworks::parse("x", "not: [yaml"),
            ComposeNetworks::default()
        );
        let deps = network_dependencies(&[("user".to_string(), u), ("maker".to_string(), m)]);
        assert_eq!(deps.get("user"), Some(&vec!["maker".to_string()]));
        assert_eq!(deps.get("maker"), None);
    }
}
