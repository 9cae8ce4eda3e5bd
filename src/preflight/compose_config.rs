//! The project as Compose's normalised `config` output shows it (v1's and
//! v2's shapes), reduced to what the checks need of each service.

use std::path::{Path, PathBuf};

use serde_yaml::Value;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
