//! The dependency graph over configured services: start order in waves,
//! stop order, who depends on a service, what conflicts with it.
//!
//! Architecture invariant: everything here is pure: no I/O, no clock. The
//! config already rejects dependency cycles; the graph still never loops on
//! one (it breaks a cycle at its lowest `(start_order, name)` member).

use std::collections::{BTreeMap, BTreeSet};

use crate::config::ServiceConfig;

mod networks;

pub use networks::{network_dependencies, ComposeNetworks};

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

#[cfg(test)]
mod tests;
