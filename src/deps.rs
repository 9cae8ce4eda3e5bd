//! The dependency graph over configured services: start order in waves,
//! stop order, who depends on a service, what conflicts with it.
//!
//! Architecture invariant: everything here is pure: no I/O, no clock. The
//! config already rejects dependency cycles; the graph still never loops on
//! one (it breaks a cycle at its lowest `(start_order, name)` member).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ServiceConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DepsError {
    #[error("no such service in the dependency graph: {0:?}")]
    NoSuchService(String),
}

/// Running services stand in the way of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocked {
    /// Stopping it would leave these running dependents without it.
    NeededBy(Vec<String>),
    /// Starting it (or a dependency) conflicts with these running services.
    Conflicts(Vec<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepAction {
    Start,
    Stop,
}

impl StepAction {
    pub fn as_str(self) -> &'static str {
        match self {
            StepAction::Start => "start",
            StepAction::Stop => "stop",
        }
    }
}

/// One task an operation takes, in the order they are queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub service: String,
    pub action: StepAction,
    /// "requested", "needed by web", "needs db", "conflicts with web".
    pub reason: String,
}

impl Step {
    fn new(service: &str, action: StepAction, reason: &str) -> Step {
        Step {
            service: service.to_string(),
            action,
            reason: reason.to_string(),
        }
    }
}

/// One service as the graph sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub depends_on: Vec<String>,
    pub conflicts: Vec<String>,
    pub start_order: i64,
}

impl From<&ServiceConfig> for Node {
    fn from(s: &ServiceConfig) -> Node {
        Node {
            name: s.name.clone(),
            depends_on: s.depends_on.clone(),
            conflicts: s.conflicts.clone(),
            start_order: s.start_order,
        }
    }
}

/// The graph. Dependencies on services that are not in it (another host's,
/// say) hold nothing back; conflicts are symmetric.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Graph {
    nodes: BTreeMap<String, Node>,
}

impl Graph {
    pub fn new(nodes: impl IntoIterator<Item = Node>) -> Graph {
        Graph {
            nodes: nodes.into_iter().map(|n| (n.name.clone(), n)).collect(),
        }
    }

    /// A graph over the given services (e.g. `config.local_services()`).
    pub fn from_services<'a>(services: impl IntoIterator<Item = &'a ServiceConfig>) -> Graph {
        Graph::new(services.into_iter().map(Node::from))
    }

    pub fn contains(&self, service: &str) -> bool {
        self.nodes.contains_key(service)
    }

    /// Every service in start waves: a wave holds services whose
    /// dependencies all sit in earlier waves; inside a wave, sorted by
    /// `(start_order, name)`.
    pub fn start_waves(&self) -> Vec<Vec<String>> {
        let all: BTreeSet<&str> = self.nodes.keys().map(String::as_str).collect();
        self.waves_of(&all)
    }

    /// Stop waves: the start waves reversed, each wave in reverse order, so
    /// dependents stop before what they depend on.
    pub fn stop_waves(&self) -> Vec<Vec<String>> {
        let mut waves = self.start_waves();
        waves.reverse();
        for w in &mut waves {
            w.reverse();
        }
        waves
    }

    /// Start waves for `service` and everything it needs, transitively.
    pub fn start_waves_with_dependencies(
        &self,
        service: &str,
    ) -> Result<Vec<Vec<String>>, DepsError> {
        let needed = self.closure(service, |n| {
            n.depends_on.iter().map(String::as_str).collect::<Vec<_>>()
        })?;
        Ok(self.waves_of(&needed))
    }

    /// Services in `running` that depend on `service`, directly or through
    /// others: stopping `service` would pull the ground from under them.
    /// Sorted by name; empty for an unknown service.
    pub fn dependents_running(&self, service: &str, running: &BTreeSet<String>) -> Vec<String> {
        let Ok(dependents) = self.closure(service, |n| self.direct_dependents(&n.name)) else {
            return Vec::new();
        };
        dependents
            .into_iter()
            .filter(|d| *d != service && running.contains(*d))
            .map(str::to_string)
            .collect()
    }

    /// Services in `running` that conflict with `service` (named in either
    /// one's `conflicts`). Sorted by name; `service` itself never counts.
    pub fn conflicting_running(&self, service: &str, running: &BTreeSet<String>) -> Vec<String> {
        let mut out: BTreeSet<&str> = BTreeSet::new();
        if let Some(n) = self.nodes.get(service) {
            out.extend(n.conflicts.iter().map(String::as_str));
        }
        for n in self.nodes.values() {
            if n.conflicts.iter().any(|c| c == service) {
                out.insert(&n.name);
            }
        }
        out.into_iter()
            .filter(|c| *c != service && running.contains(*c))
            .map(str::to_string)
            .collect()
    }

    /// What stopping `service` takes: its running dependents first (only
    /// with `force`; else they block it), in reverse dependency order, then
    /// the service itself.
    pub fn plan_stop(
        &self,
        service: &str,
        running: &BTreeSet<String>,
        force: bool,
    ) -> Result<Vec<Step>, Blocked> {
        let dependents = self.dependents_running(service, running);
        if !dependents.is_empty() && !force {
            return Err(Blocked::NeededBy(dependents));
        }
        let mut steps = self.stops_of(&dependents, &format!("needs {service}"));
        steps.push(Step::new(service, StepAction::Stop, "requested"));
        Ok(steps)
    }

    /// What starting `service` takes: running services that conflict with
    /// it or with a dependency it pulls in are stopped (only with `force`;
    /// else they block it), with whatever runs on top of them; then its
    /// dependencies that are not running start, in dependency order; then
    /// the service itself.
    pub fn plan_start(
        &self,
        service: &str,
        running: &BTreeSet<String>,
        force: bool,
    ) -> Result<Vec<Step>, Blocked> {
        let waves = self
            .start_waves_with_dependencies(service)
            .unwrap_or_else(|_| vec![vec![service.to_string()]]);
        let starting: Vec<String> = waves.into_iter().flatten().collect();
        let mut conflicts: BTreeSet<String> = BTreeSet::new();
        for s in &starting {
            conflicts.extend(self.conflicting_running(s, running));
        }
        if !conflicts.is_empty() && !force {
            return Err(Blocked::Conflicts(conflicts.into_iter().collect()));
        }
        let mut steps = Vec::new();
        let mut stopping: BTreeSet<String> = BTreeSet::new();
        for c in &conflicts {
            for d in self.dependents_running(c, running) {
                if stopping.insert(d.clone()) {
                    steps.extend(self.stops_of(&[d], &format!("needs {c}")));
                }
            }
            if stopping.insert(c.clone()) {
                steps.push(Step::new(
                    c,
                    StepAction::Stop,
                    &format!("conflicts with {service}"),
                ));
            }
        }
        // Dependents of a conflict stop before it: stops_of orders each
        // group; keep every dependent ahead of the conflicts themselves.
        steps.sort_by_key(|s| conflicts.contains(&s.service));
        for s in &starting {
            if s == service {
                steps.push(Step::new(s, StepAction::Start, "requested"));
            } else if !running.contains(s) {
                steps.push(Step::new(
                    s,
                    StepAction::Start,
                    &format!("needed by {service}"),
                ));
            }
        }
        Ok(steps)
    }

    /// Stop steps for `names`, dependents before what they depend on.
    fn stops_of(&self, names: &[String], reason: &str) -> Vec<Step> {
        let members: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut waves = self.waves_of(&members);
        waves.reverse();
        waves
            .into_iter()
            .flat_map(|w| w.into_iter().rev())
            .map(|n| Step::new(&n, StepAction::Stop, reason))
            .collect()
    }

    /// The tree under `service` in pre-order, with each node's depth (0 for
    /// `service`): what it depends on, or with `reverse` what depends on it.
    /// Names outside the graph appear as leaves; a cycle is cut where it
    /// closes.
    pub fn tree(&self, service: &str, reverse: bool) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        let mut path = Vec::new();
        self.walk(service, reverse, 0, &mut path, &mut out);
        out
    }

    fn walk(
        &self,
        name: &str,
        reverse: bool,
        depth: usize,
        path: &mut Vec<String>,
        out: &mut Vec<(usize, String)>,
    ) {
        out.push((depth, name.to_string()));
        if path.iter().any(|p| p == name) {
            return;
        }
        path.push(name.to_string());
        let mut next: Vec<String> = if reverse {
            self.direct_dependents(name)
                .into_iter()
                .map(str::to_string)
                .collect()
        } else {
            self.nodes
                .get(name)
                .map(|n| n.depends_on.clone())
                .unwrap_or_default()
        };
        next.sort_by(|a, b| self.order_key(a).cmp(&self.order_key(b)));
        next.dedup();
        for n in next {
            self.walk(&n, reverse, depth + 1, path, out);
        }
        path.pop();
    }

    fn direct_dependents(&self, service: &str) -> Vec<&str> {
        self.nodes
            .values()
            .filter(|n| n.depends_on.iter().any(|d| d == service))
            .map(|n| n.name.as_str())
            .collect()
    }

    /// `service` and everything reachable through `next`, within the graph.
    fn closure<'a, F>(&'a self, service: &str, next: F) -> Result<BTreeSet<&'a str>, DepsError>
    where
        F: Fn(&'a Node) -> Vec<&'a str>,
    {
        let (start, _) = self
            .nodes
            .get_key_value(service)
            .ok_or_else(|| DepsError::NoSuchService(service.to_string()))?;
        let mut seen: BTreeSet<&str> = BTreeSet::from([start.as_str()]);
        let mut todo = vec![start.as_str()];
        while let Some(name) = todo.pop() {
            let Some(node) = self.nodes.get(name) else {
                continue;
            };
            for m in next(node) {
                if self.nodes.contains_key(m) && seen.insert(m) {
                    todo.push(m);
                }
            }
        }
        Ok(seen)
    }

    fn order_key<'a>(&'a self, name: &'a str) -> (i64, &'a str) {
        (self.nodes.get(name).map_or(0, |n| n.start_order), name)
    }

    /// Waves over `members`; a dependency outside `members` holds nothing back.
    fn waves_of(&self, members: &BTreeSet<&str>) -> Vec<Vec<String>> {
        let mut placed: BTreeSet<&str> = BTreeSet::new();
        let mut remaining: Vec<&str> = members.iter().copied().collect();
        let mut waves = Vec::new();
        while !remaining.is_empty() {
            let mut ready: Vec<&str> = remaining
                .iter()
                .copied()
                .filter(|name| {
                    self.nodes.get(*name).map_or(true, |n| {
                        n.depends_on
                            .iter()
                            .all(|d| !members.contains(d.as_str()) || placed.contains(d.as_str()))
                    })
                })
                .collect();
            if ready.is_empty() {
                // A cycle: break it at its first member instead of looping.
                let first = remaining
                    .iter()
                    .copied()
                    .min_by(|a, b| self.order_key(a).cmp(&self.order_key(b)))
                    .expect("remaining is not empty");
                ready.push(first);
            }
            ready.sort_by(|a, b| self.order_key(a).cmp(&self.order_key(b)));
            placed.extend(ready.iter().copied());
            remaining.retain(|n| !placed.contains(n));
            waves.push(ready.into_iter().map(str::to_string).collect());
        }
        waves
    }
}

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

    fn node(name: &str, deps: &[&str], conflicts: &[&str], order: i64) -> Node {
        Node {
            name: name.into(),
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
            conflicts: conflicts.iter().map(|s| s.to_string()).collect(),
            start_order: order,
        }
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    type Waves = Vec<Vec<&'static str>>;

    #[test]
    fn start_waves_table() {
        let cases: Vec<(&str, Vec<Node>, Waves)> = vec![
            ("empty", vec![], vec![]),
            (
                "independent services: one wave, by start_order then name",
                vec![
                    node("b", &[], &[], 0),
                    node("a", &[], &[], 5),
                    node("c", &[], &[], -1),
                ],
                vec![vec!["c", "b", "a"]],
            ),
            (
                "chain",
                vec![
                    node("web", &["app"], &[], 0),
                    node("app", &["db"], &[], 0),
                    node("db", &[], &[], 0),
                ],
                vec![vec!["db"], vec!["app"], vec!["web"]],
            ),
            (
                "diamond",
                vec![
                    node("top", &["l", "r"], &[], 0),
                    node("l", &["base"], &[], 2),
                    node("r", &["base"], &[], 1),
                    node("base", &[], &[], 0),
                ],
                vec![vec!["base"], vec!["r", "l"], vec!["top"]],
            ),
            (
                "dependency on a service outside the graph holds nothing back",
                vec![node("app", &["elsewhere"], &[], 0)],
                vec![vec!["app"]],
            ),
            (
                "a cycle is broken, never looped on",
                vec![
                    node("a", &["b"], &[], 0),
                    node("b", &["a"], &[], 0),
                    node("c", &["a"], &[], 0),
                ],
                vec![vec!["a"], vec!["b", "c"]],
            ),
            (
                "self-dependency",
                vec![node("a", &["a"], &[], 0)],
                vec![vec!["a"]],
            ),
        ];
        for (what, nodes, want) in cases {
            let g = Graph::new(nodes);
            assert_eq!(g.start_waves(), want, "{what}");
        }
    }

    #[test]
    fn stop_waves_are_start_waves_reversed() {
        let g = Graph::new([
            node("web", &["db"], &[], 0),
            node("worker", &["db"], &[], 1),
            node("db", &[], &[], 0),
        ]);
        assert_eq!(g.start_waves(), vec![vec!["db"], vec!["web", "worker"]]);
        assert_eq!(g.stop_waves(), vec![vec!["worker", "web"], vec!["db"]]);
    }

    #[test]
    fn start_with_dependencies_takes_only_what_is_needed() {
        let g = Graph::new([
            node("web", &["app"], &[], 0),
            node("app", &["db", "cache"], &[], 0),
            node("db", &[], &[], 0),
            node("cache", &[], &[], 0),
            node("other", &[], &[], 0),
        ]);
        assert_eq!(
            g.start_waves_with_dependencies("app").unwrap(),
            vec![vec!["cache", "db"], vec!["app"]]
        );
        assert_eq!(
            g.start_waves_with_dependencies("nope"),
            Err(DepsError::NoSuchService("nope".into()))
        );
    }

    #[test]
    fn dependents_running_table() {
        let g = Graph::new([
            node("web", &["app"], &[], 0),
            node("app", &["db"], &[], 0),
            node("report", &["db"], &[], 0),
            node("db", &[], &[], 0),
            node("loop1", &["loop2"], &[], 0),
            node("loop2", &["loop1"], &[], 0),
        ]);
        let cases: Vec<(&str, &[&str], &[&str])> = vec![
            (
                "db",
                &["web", "app", "report", "db"],
                &["app", "report", "web"],
            ),
            ("db", &["web"], &["web"]),
            ("db", &[], &[]),
            ("app", &["web", "report"], &["web"]),
            ("web", &["app", "db"], &[]),
            ("unknown", &["web"], &[]),
            ("loop1", &["loop1", "loop2"], &["loop2"]),
        ];
        for (service, running, want) in cases {
            assert_eq!(
                g.dependents_running(service, &set(running)),
                want,
                "{service} with {running:?} running"
            );
        }
    }

    #[test]
    fn conflicting_running_table() {
        let g = Graph::new([
            node("plex", &[], &["jellyfin"], 0),
            node("jellyfin", &[], &[], 0),
            node("emby", &[], &["plex"], 0),
            node("solo", &[], &["solo"], 0),
        ]);
        let cases: Vec<(&str, &[&str], &[&str])> = vec![
            ("plex", &["jellyfin", "emby"], &["emby", "jellyfin"]),
            ("plex", &[], &[]),
            // symmetric: jellyfin names nothing, plex names jellyfin.
            ("jellyfin", &["plex"], &["plex"]),
            ("jellyfin", &["emby"], &[]),
            ("emby", &["plex"], &["plex"]),
            ("solo", &["solo"], &[]),
            ("unknown", &["plex"], &[]),
        ];
        for (service, running, want) in cases {
            assert_eq!(
                g.conflicting_running(service, &set(running)),
                want,
                "{service} with {running:?} running"
            );
        }
    }
    fn steps(steps: &[Step]) -> Vec<String> {
        steps
            .iter()
            .map(|s| format!("{} {} ({})", s.action.as_str(), s.service, s.reason))
            .collect()
    }

    #[test]
    fn plan_stop_table() {
        let g = Graph::new([
            node("web", &["app"], &[], 0),
            node("app", &["db"], &[], 0),
            node("report", &["db"], &[], 0),
            node("db", &[], &[], 0),
        ]);
        let running = set(&["web", "app", "report", "db"]);
        assert_eq!(
            g.plan_stop("db", &running, false),
            Err(Blocked::NeededBy(vec![
                "app".into(),
                "report".into(),
                "web".into()
            ]))
        );
        assert_eq!(
            steps(&g.plan_stop("db", &running, true).unwrap()),
            vec![
                "stop web (needs db)",
                "stop report (needs db)",
                "stop app (needs db)",
                "stop db (requested)"
            ]
        );
        assert_eq!(
            steps(&g.plan_stop("web", &running, false).unwrap()),
            vec!["stop web (requested)"]
        );
    }

    #[test]
    fn plan_start_table() {
        let g = Graph::new([
            node("web", &["db"], &[], 0),
            node("db", &[], &[], 0),
            node("plex", &[], &["web"], 0),
            node("addon", &["plex"], &[], 0),
            node("legacy-db", &[], &["db"], 0),
        ]);
        type Case = (
            &'static str,
            &'static [&'static str],
            bool,
            Result<Vec<&'static str>, Blocked>,
        );
        let cases: Vec<Case> = vec![
            (
                "web",
                &[],
                false,
                Ok(vec!["start db (needed by web)", "start web (requested)"]),
            ),
            ("web", &["db"], false, Ok(vec!["start web (requested)"])),
            (
                "web",
                &["plex", "legacy-db"],
                false,
                Err(Blocked::Conflicts(vec!["legacy-db".into(), "plex".into()])),
            ),
            (
                "web",
                &["plex", "addon", "db"],
                true,
                Ok(vec![
                    "stop addon (needs plex)",
                    "stop plex (conflicts with web)",
                    "start web (requested)",
                ]),
            ),
            (
                "plex",
                &["web", "db"],
                true,
                Ok(vec![
                    "stop web (conflicts with plex)",
                    "start plex (requested)",
                ]),
            ),
        ];
        for (service, running, force, want) in cases {
            let got = g
                .plan_start(service, &set(running), force)
                .map(|s| steps(&s));
            let want = want.map(|w| w.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "start {service} with {running:?}, force {force}");
        }
    }

    #[test]
    fn tree_both_ways() {
        let g = Graph::new([
            node("web", &["app", "cache"], &[], 0),
            node("app", &["db", "elsewhere"], &[], 0),
            node("cache", &[], &[], 0),
            node("db", &[], &[], 0),
            node("loop1", &["loop2"], &[], 0),
            node("loop2", &["loop1"], &[], 0),
        ]);
        let show = |t: Vec<(usize, String)>| {
            t.into_iter()
                .map(|(d, n)| format!("{d}{n}"))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            show(g.tree("web", false)),
            vec!["0web", "1app", "2db", "2elsewhere", "1cache"]
        );
        assert_eq!(show(g.tree("db", true)), vec!["0db", "1app", "2web"]);
        assert_eq!(
            show(g.tree("loop1", false)),
            vec!["0loop1", "1loop2", "2loop1"]
        );
    }

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
