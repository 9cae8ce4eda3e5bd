//! What Docker and Compose (v1 and v2) print when a call fails, read into
//! [`ErrorFacts`]: the port, network, image or bind mount the surroundings
//! lack, which the rule table waits for instead of spending the budget.

/// What the text of a failed Compose or Docker call tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ErrorFacts {
    pub port_allocated: Option<u16>,
    pub network_missing: Option<String>,
    pub image_missing: Option<String>,
    /// A pull was tried and failed with this error.
    pub pull_failed: Option<String>,
    /// A bind-mount source that does not exist.
    pub bind_missing: Option<String>,
}

impl ErrorFacts {
    /// A failure of the surroundings (registry, network, port, mount), not
    /// of the service itself: waiting and trying again is the fix.
    pub fn environmental(&self) -> bool {
        self.port_allocated.is_some()
            || self.network_missing.is_some()
            || self.image_missing.is_some()
            || self.pull_failed.is_some()
            || self.bind_missing.is_some()
    }
}

impl ErrorFacts {
    /// Reads the messages Docker 20.10+ and Compose v1/v2 print, e.g.
    /// "Bind for 0.0.0.0:8080 failed: port is already allocated",
    /// "listen tcp4 0.0.0.0:8080: bind: address already in use",
    /// "network abc not found", "No such image: x:1",
    /// "pull access denied for x, repository does not exist".
    ///
    /// A failed pull: Compose v1 prints "Pulling web (nginx:1)..." and then
    /// the error; v2 prints " web Pulling" and " web Error <why>" (samples
    /// of both in `tests/fixtures/compose-errors/`).
    pub fn parse(text: &str) -> ErrorFacts {
        let mut facts = ErrorFacts::default();
        // v1: the image being pulled; v2: the service whose image it is.
        let mut pulling: Option<String> = None;
        for line in text.lines() {
            let lower = line.to_ascii_lowercase();
            let trimmed = line.trim();
            if let Some(rest) = trimmed.strip_prefix("Pulling ") {
                // v1: "Pulling web (nginx:1)..."
                // `compose pull` (v1): "Pulling web ... error".
                pulling = rest
                    .split_once(" (")
                    .and_then(|(_, r)| r.split_once(')'))
                    .map(|(image, _)| image.to_string())
                    .or(pulling)
                    .or_else(|| {
                        let svc = rest.split_whitespace().next()?;
                        Some(format!("the image of service {svc}"))
                    });
                continue;
            }
            if let Some((svc, "Pulling")) = trimmed.split_once(' ') {
                pulling.get_or_insert_with(|| format!("the image of service {svc}"));
                continue;
            }
            if let Some(image) = &pulling {
                // v2: " web Error <why>"; v1: the next line that says why.
                let why = match trimmed.split_once(" Error ") {
                    Some((svc, why)) if !svc.contains(' ') => Some(why),
                    _ if lower.contains("error")
                        || lower.contains("denied")
                        || lower.contains("not found")
                        || lower.contains("no such host")
                        || lower.starts_with("get ")
                        || lower.contains("manifest unknown") =>
                    {
                        // v1: "ERROR: for web  Get ...": the service, then why.
                        let why = trimmed.trim_start_matches("ERROR: ");
                        Some(match why.strip_prefix("for ") {
                            Some(rest) => rest.split_once("  ").map_or(rest, |(_, w)| w),
                            None => why,
                        })
                    }
                    _ => None,
                };
                if let (Some(why), None) = (why, &facts.pull_failed) {
                    facts.pull_failed = Some(why.trim().to_string());
                    facts.image_missing.get_or_insert_with(|| image.clone());
                }
            }
            if facts.bind_missing.is_none() {
                if let Some(i) = lower.find("bind source path does not exist: ") {
                    let path = &line[i + "bind source path does not exist: ".len()..];
                    facts.bind_missing = path.split_whitespace().next().map(str::to_string);
                }
            }
            if facts.port_allocated.is_none()
                && (lower.contains("port is already allocated")
                    || lower.contains("address already in use"))
            {
                facts.port_allocated = port_in(line);
            }
            if facts.network_missing.is_none() {
                facts.network_missing = network_in(line, &lower);
            }
            if facts.image_missing.is_none() {
                facts.image_missing = image_in(line, &lower);
            }
        }
        facts
    }
}

/// The port in "Bind for 0.0.0.0:8080 failed" or "listen tcp 0.0.0.0:8080:".
fn port_in(line: &str) -> Option<u16> {
    let lower = line.to_ascii_lowercase();
    let anchor = ["bind for ", "listen tcp4 ", "listen tcp6 ", "listen tcp "]
        .iter()
        .find_map(|a| lower.find(a).map(|i| i + a.len()))?;
    let rest = &line[anchor..];
    let addr = rest.split_whitespace().next()?.trim_end_matches(':');
    let port = addr.rsplit_once(':')?.1;
    port.parse().ok()
}

fn network_in(line: &str, lower: &str) -> Option<String> {
    // "network stackd_default not found", "Network x declared as external,
    // but could not be found."
    let start = lower.find("network ")?;
    let rest = &line[start + "network ".len()..];
    let name = rest.split_whitespace().next()?;
    let tail = &lower[start..];
    (tail.contains("not found") || tail.contains("could not be found"))
        .then(|| name.trim_matches(['"', '\'', ',']).to_string())
}

fn image_in(line: &str, lower: &str) -> Option<String> {
    let clean = |s: &str| {
        s.trim_matches(['"', '\'', ',', ' '])
            .trim_end_matches(':')
            .to_string()
    };
    for prefix in ["no such image: ", "pull access denied for "] {
        if let Some(i) = lower.find(prefix) {
            let rest = &line[i + prefix.len()..];
            return rest.split([',', ' ']).next().map(clean);
        }
    }
    if let Some(i) = lower.find("unable to find image ") {
        let rest = &line[i + "unable to find image ".len()..];
        return rest.split_whitespace().next().map(clean);
    }
    if let Some(i) = lower.find("manifest for ") {
        if lower.contains("not found") {
            let rest = &line[i + "manifest for ".len()..];
            return rest.split_whitespace().next().map(clean);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recovery::tests::ev;
    use crate::recovery::PortConflict;

    #[test]
    fn error_text_table() {
        let cases: [(&str, ErrorFacts); 8] = [
            (
                "Error response from daemon: driver failed programming external connectivity on endpoint web_app_1 (abc): Bind for 0.0.0.0:8080 failed: port is already allocated",
                ErrorFacts { port_allocated: Some(8080), ..Default::default() },
            ),
            (
                "Error starting userland proxy: listen tcp4 0.0.0.0:18080: bind: address already in use",
                ErrorFacts { port_allocated: Some(18080), ..Default::default() },
            ),
            (
                "Error response from daemon: listen tcp6 [::]:443: bind: address already in use",
                ErrorFacts { port_allocated: Some(443), ..Default::default() },
            ),
            (
                "ERROR: for app  Cannot start service app: network 3f2a9c not found",
                ErrorFacts { network_missing: Some("3f2a9c".into()), ..Default::default() },
            ),
            (
                "ERROR: Network shared declared as external, but could not be found. Please create the network manually",
                ErrorFacts { network_missing: Some("shared".into()), ..Default::default() },
            ),
            (
                "Error: No such image: stackd-test/missing:1",
                ErrorFacts { image_missing: Some("stackd-test/missing:1".into()), ..Default::default() },
            ),
            (
                "ERROR: pull access denied for nope/x, repository does not exist or may require 'docker login'",
                ErrorFacts { image_missing: Some("nope/x".into()), ..Default::default() },
            ),
            ("Creating web_app_1 ... done", ErrorFacts::default()),
        ];
        for (text, want) in cases {
            assert_eq!(ErrorFacts::parse(text), want, "{text}");
        }
        let e = ev().with_error_text("Bind for 0.0.0.0:8080 failed: port is already allocated");
        assert_eq!(
            e.port_allocated,
            Some(PortConflict {
                port: 8080,
                holder: None
            })
        );
    }

    /// Real output of Compose v1 (1.29) and v2 (2.26) against Engine 20.10,
    /// kept in `tests/fixtures/compose-errors/`.
    #[test]
    fn reads_what_both_compose_flavors_say() {
        macro_rules! fixture {
            ($name:literal) => {
                include_str!(concat!("../../tests/fixtures/compose-errors/", $name))
            };
        }
        let no_host = "Get \"https://registry-1.docker.io/v2/\": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no such host";
        let pulled = |image: &str| ErrorFacts {
            image_missing: Some(image.to_string()),
            pull_failed: Some(no_host.to_string()),
            ..Default::default()
        };
        let cases: Vec<(&str, ErrorFacts)> = vec![
            (
                fixture!("v1-up-image-pull-fails.txt"),
                pulled("stackd-test/missing:nope"),
            ),
            (
                fixture!("v2-up-image-pull-fails.txt"),
                pulled("the image of service main"),
            ),
            (
                fixture!("v1-pull-fails.txt"),
                pulled("the image of service main"),
            ),
            (
                fixture!("v2-pull-fails.txt"),
                pulled("the image of service main"),
            ),
            (
                fixture!("v2-up-image-missing-pull-never.txt"),
                ErrorFacts {
                    image_missing: Some("stackd-test/missing:nope".into()),
                    ..Default::default()
                },
            ),
            (
                fixture!("v1-up-external-network-missing.txt"),
                ErrorFacts {
                    network_missing: Some("cszz-shared-net".into()),
                    ..Default::default()
                },
            ),
            (
                fixture!("v2-up-external-network-missing.txt"),
                ErrorFacts {
                    network_missing: Some("cszz-shared-net".into()),
                    ..Default::default()
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(ErrorFacts::parse(text), want, "{text}");
            assert!(want.environmental());
        }
        for text in [
            fixture!("v1-up-bind-source-missing.txt"),
            fixture!("v2-up-bind-source-missing.txt"),
        ] {
            let f = ErrorFacts::parse(text);
            assert_eq!(
                f.bind_missing.as_deref(),
                Some("/tmp/cs/nonexistent-dir"),
                "{text}"
            );
            assert!(
                f.port_allocated.is_none() && f.image_missing.is_none(),
                "{f:?}"
            );
        }
        for text in [
            fixture!("v1-up-port-in-use.txt"),
            fixture!("v2-up-port-in-use.txt"),
        ] {
            assert_eq!(
                ErrorFacts::parse(text).port_allocated,
                Some(34755),
                "{text}"
            );
        }
        for text in [
            fixture!("v1-up-port-allocated.txt"),
            fixture!("v2-up-port-allocated.txt"),
        ] {
            assert_eq!(
                ErrorFacts::parse(text).port_allocated,
                Some(34756),
                "{text}"
            );
        }
    }
}
