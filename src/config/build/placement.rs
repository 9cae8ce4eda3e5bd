//! Where services run and how they relate: `hosts` selectors, and
//! `depends_on` / `conflicts` naming existing services without cycles.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::raw::{self, At, HostSpec, Loc, RawFile};
use crate::config::HostSelector;

use super::service::is_external;
use super::*;

impl Ctx<'_> {
    pub(super) fn host_selector(
        &mut self,
        name: &str,
        header: At,
        s: &raw::RawService,
        sc: &Scope<'_>,
    ) -> HostSelector {
        let Some(spec) = &s.host else {
            return match sc.hosts.len() {
                0 => HostSelector::List(vec![sc.host.to_owned()]),
                1 => HostSelector::List(sc.hosts.keys().cloned().collect()),
                _ => {
                    self.err(
                        header,
                        format!(
                            "service `{name}` does not say which host runs it: \
                             say which host runs it (one of {}), or host = \"all\"",
                            list(sc.hosts.keys())
                        ),
                    );
                    HostSelector::List(Vec::new())
                }
            };
        };
        let entries: Vec<Loc<String>> = match &spec.value {
            HostSpec::One(h) => vec![Loc {
                value: h.clone(),
                at: spec.at,
            }],
            HostSpec::List(l) => l.clone(),
        };
        if entries.is_empty() {
            self.err(
                spec.at,
                "expected at least one host name, or \"all\"; to run the service nowhere, \
                 set auto_start = false",
            );
        }
        if entries.iter().any(|h| h.value == "all") {
            if entries.len() > 1 {
                self.err(spec.at, "\"all\" cannot be combined with other host names");
            }
            return HostSelector::All;
        }
        let mut out: Vec<String> = Vec::new();
        for h in entries {
            let known = if sc.hosts.is_empty() {
                h.value == sc.host
            } else {
                sc.hosts.contains_key(&h.value)
            };
            if !known {
                let expected = if sc.hosts.is_empty() {
                    format!(
                        "[hosts] is empty, so the only host is this one, `{}`; \
                         add [hosts.{}] tables or use \"all\"",
                        sc.host, h.value
                    )
                } else {
                    format!("expected one of {} or \"all\"", list(sc.hosts.keys()))
                };
                self.err(h.at, format!("unknown host `{}`: {expected}", h.value));
            }
            if !out.contains(&h.value) {
                out.push(h.value);
            }
        }
        HostSelector::List(out)
    }

    /// `depends_on` / `conflicts` name existing services; no dependency cycles.
    pub(super) fn check_references(&mut self, raw: &RawFile) {
        let services = &raw.services.0;
        let mut edges: BTreeMap<&str, Vec<(&str, At)>> = BTreeMap::new();
        for (name, (_, s)) in services {
            let deps = s.depends_on.as_deref().unwrap_or_default();
            let conflicts = s.conflicts.as_deref().unwrap_or_default();
            for (key, list) in [("depends_on", deps), ("conflicts", conflicts)] {
                for d in list {
                    if d.value == *name {
                        let what = if key == "depends_on" {
                            "depend on"
                        } else {
                            "conflict with"
                        };
                        self.err(d.at, format!("service `{name}` cannot {what} itself"));
                    } else if !services.contains_key(&d.value) {
                        self.err(
                            d.at,
                            format!(
                                "{key} names unknown service `{}`: expected one of {}",
                                d.value,
                                list_or_none(services.keys())
                            ),
                        );
                    } else if key == "conflicts" && is_external(&services[&d.value].1) {
                        self.err(
                            d.at,
                            format!(
                                "conflicts names `{}`, which is kind = \"external\": stackd \
                                 never stops it, so it cannot give way",
                                d.value
                            ),
                        );
                    } else if key == "depends_on" {
                        edges.entry(name).or_default().push((&d.value, d.at));
                    } else if deps.iter().any(|x| x.value == d.value) {
                        self.err(
                            d.at,
                            format!(
                                "service `{name}` both depends on and conflicts with `{}`",
                                d.value
                            ),
                        );
                    }
                }
            }
        }
        for (at, message) in find_cycles(&edges) {
            self.err(at, message);
        }
    }
}

/// Every dependency cycle, once each, reported at the edge written last
/// (the one that closed the cycle), as `a -> b -> a` starting from there.
pub(in crate::config) fn find_cycles(edges: &BTreeMap<&str, Vec<(&str, At)>>) -> Vec<(At, String)> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    let mut mark: BTreeMap<&str, Mark> = edges.keys().map(|k| (*k, Mark::New)).collect();
    let mut seen: BTreeSet<Vec<&str>> = BTreeSet::new();
    let mut out = Vec::new();
    for &root in edges.keys() {
        if mark.get(root) != Some(&Mark::New) {
            continue;
        }
        // Iterative DFS: (node, index of the next edge to follow); `via[i]`
        // is the edge taken from stack[i] to stack[i + 1].
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        let mut via: Vec<At> = Vec::new();
        mark.insert(root, Mark::Open);
        while let Some(top) = stack.len().checked_sub(1) {
            let (node, next) = stack[top];
            let out_edges = edges.get(node).map_or(&[][..], Vec::as_slice);
            let Some(&(to, at)) = out_edges.get(next) else {
                mark.insert(node, Mark::Done);
                stack.pop();
                via.pop();
                continue;
            };
            stack[top].1 += 1;
            match mark.get(to).copied().unwrap_or(Mark::Done) {
                Mark::New => {
                    mark.insert(to, Mark::Open);
                    stack.push((to, 0));
                    via.push(at);
                }
                Mark::Open => {
                    let Some(start) = stack.iter().position(|(n, _)| *n == to) else {
                        continue;
                    };
                    let nodes: Vec<&str> = stack[start..].iter().map(|(n, _)| *n).collect();
                    let mut ats: Vec<At> = via[start..].to_vec();
                    ats.push(at);
                    let mut key = nodes.clone();
                    key.sort_unstable();
                    if !seen.insert(key) {
                        continue;
                    }
                    let blame = (0..ats.len()).max_by_key(|&i| ats[i]).unwrap_or(0);
                    let mut path: Vec<&str> = (0..=nodes.len())
                        .map(|i| nodes[(blame + i) % nodes.len()])
                        .collect();
                    path.dedup();
                    out.push((
                        ats[blame],
                        format!("dependency cycle: {}", path.join(" -> ")),
                    ));
                }
                Mark::Done => {}
            }
        }
    }
    out
}
