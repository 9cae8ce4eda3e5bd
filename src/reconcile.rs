//! The planner: desired state + observed state → actions.
//!
//! Architecture invariant: `plan` is a pure function. It does no I/O, reads
//! no clock and is tested on tables of cases below. Boot recovery, `apply` and
//! the start-up reconcile all go through it and hand its actions to the task
//! queue.

use std::collections::{BTreeSet, HashSet};

use crate::store::DesiredState;
use crate::world::Observed;

/// What the planner knows about one service.
#[derive(Clone, Debug)]
pub struct Facts {
    pub name: String,
    /// Named in the config and assigned to this host.
    pub configured: bool,
    /// The effective desired state (see [`effective_desired`]).
    pub desired: DesiredState,
    /// The desired state was said by a person (start/stop), not derived from
    /// `auto_start`.
    pub user_said: bool,
    pub observed: Observed,
    /// stackd itself deployed this project at some point.
    pub deployed_by_us: bool,
    /// A task is already queued or running for it.
    pub busy: bool,
    pub depends_on: Vec<String>,
    pub start_order: i64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Deploy { service: String, reason: String },
    Stop { service: String, reason: String },
}

impl Action {
    pub fn service(&self) -> &str {
        match self {
            Action::Deploy { service, .. } | Action::Stop { service, .. } => service,
        }
    }
    pub fn reason(&self) -> &str {
        match self {
            Action::Deploy { reason, .. } | Action::Stop { reason, .. } => reason,
        }
    }
}

/// The plan: stops first (all at once), then deploys in waves; a wave starts
/// once the one before it finished, so dependencies come up first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub stops: Vec<Action>,
    pub waves: Vec<Vec<Action>>,
    /// Services left alone, with the reason (for the task log).
    pub left: Vec<(String, String)>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.stops.is_empty() && self.waves.is_empty()
    }
    pub fn deploys(&self) -> impl Iterator<Item = &Action> {
        self.waves.iter().flatten()
    }
}

/// What a service should be: a person's word wins, else `auto_start`.
pub fn effective_desired(auto_start: bool, said: Option<DesiredState>) -> DesiredState {
    match said {
        Some(state) => state,
        None if auto_start => DesiredState::Running,
        None => DesiredState::Stopped,
    }
}

/// The reason of a stop for a service that the config no longer assigns
/// to this host (the stops `reload_guard` counts).
pub const NO_LONGER_ASSIGNED: &str = "no longer assigned to this host";

pub fn plan(facts: &[Facts]) -> Plan {
    let mut out = Plan::default();
    let mut deploy: Vec<&Facts> = Vec::new();
    for f in facts {
        let running = matches!(f.observed, Observed::Running | Observed::Partial);
        if f.busy {
            out.left
                .push((f.name.clone(), "a task for it is already queued".into()));
            continue;
        }
        if !f.configured {
            if f.deployed_by_us && running {
                out.stops.push(Action::Stop {
                    service: f.name.clone(),
                    reason: NO_LONGER_ASSIGNED.into(),
                });
            }
            continue;
        }
        match f.desired {
            DesiredState::Running if f.observed == Observed::Running => {}
            DesiredState::Running => deploy.push(f),
            DesiredState::Stopped if f.user_said && running => out.stops.push(Action::Stop {
                service: f.name.clone(),
                reason: "stopped by a user, but its containers run".into(),
            }),
            DesiredState::Stopped if f.user_said => {
                out.left.push((f.name.clone(), "stopped by a user".into()))
            }
            DesiredState::Stopped => out.left.push((f.name.clone(), "auto_start is off".into())),
        }
    }
    out.waves = waves(&deploy);
    out
}

/// Topological waves over the services to deploy. A dependency that is not
/// being deployed (already running, or not ours) does not hold anything back.
fn waves(deploy: &[&Facts]) -> Vec<Vec<Action>> {
    let pending_names: HashSet<&str> = deploy.iter().map(|f| f.name.as_str()).collect();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    let mut remaining: Vec<&Facts> = deploy.to_vec();
    let mut waves = Vec::new();
    while !remaining.is_empty() {
        let (mut ready, blocked): (Vec<&Facts>, Vec<&Facts>) = remaining.iter().partition(|f| {
            f.depends_on
                .iter()
                .all(|d| !pending_names.contains(d.as_str()) || placed.contains(d.as_str()))
        });
        if ready.is_empty() {
            // A cycle: the config forbids them, but never loop forever.
            ready = blocked.clone();
        }
        ready.sort_by(|a, b| (a.start_order, &a.name).cmp(&(b.start_order, &b.name)));
        for f in &ready {
            placed.insert(f.name.as_str());
        }
        waves.push(
            ready
                .iter()
                .map(|f| Action::Deploy {
                    service: f.name.clone(),
                    reason: format!("desired running, observed {}", f.observed.as_str()),
                })
                .collect(),
        );
        remaining.retain(|f| !placed.contains(f.name.as_str()));
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;
    use DesiredState::{Running as WantRun, Stopped as WantStop};
    use Observed::*;

    fn f(name: &str, desired: DesiredState, user: bool, observed: Observed) -> Facts {
        Facts {
            name: name.into(),
            configured: true,
            desired,
            user_said: user,
            observed,
            deployed_by_us: true,
            busy: false,
            depends_on: vec![],
            start_order: 0,
        }
    }

    fn names(actions: &[Action]) -> Vec<&str> {
        actions.iter().map(|a| a.service()).collect()
    }

    #[test]
    fn table_of_single_services() {
        // (desired, said by a user, observed, configured, deployed by us, busy) → expected
        #[derive(Debug, PartialEq)]
        enum Want {
            Deploy,
            Stop,
            Nothing,
        }
        let cases = [
            (WantRun, false, Absent, true, false, false, Want::Deploy),
            (WantRun, false, Stopped, true, true, false, Want::Deploy),
            (WantRun, true, Partial, true, true, false, Want::Deploy),
            (WantRun, false, Running, true, true, false, Want::Nothing),
            (WantRun, false, Absent, true, true, true, Want::Nothing),
            (WantStop, true, Running, true, true, false, Want::Stop),
            (WantStop, true, Partial, true, true, false, Want::Stop),
            (WantStop, true, Stopped, true, true, false, Want::Nothing),
            // auto_start = false and somebody runs it by hand: not ours to stop.
            (WantStop, false, Running, true, false, false, Want::Nothing),
            // removed from the config: stop only what we deployed.
            (WantRun, false, Running, false, true, false, Want::Stop),
            (WantRun, false, Running, false, false, false, Want::Nothing),
            (WantRun, false, Stopped, false, true, false, Want::Nothing),
            (WantStop, true, Running, false, true, true, Want::Nothing),
        ];
        for (i, (desired, user, observed, configured, ours, busy, want)) in
            cases.into_iter().enumerate()
        {
            let mut fact = f("a", desired, user, observed);
            fact.configured = configured;
            fact.deployed_by_us = ours;
            fact.busy = busy;
            let p = plan(&[fact]);
            let got = match (p.stops.len(), p.deploys().count()) {
                (0, 0) => Want::Nothing,
                (1, 0) => Want::Stop,
                (0, 1) => Want::Deploy,
                other => panic!("case {i}: unexpected plan {other:?}"),
            };
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn effective_desired_prefers_what_a_person_said() {
        assert_eq!(effective_desired(true, None), WantRun);
        assert_eq!(effective_desired(false, None), WantStop);
        assert_eq!(effective_desired(true, Some(WantStop)), WantStop);
        assert_eq!(effective_desired(false, Some(WantRun)), WantRun);
    }

    #[test]
    fn dependencies_come_up_in_earlier_waves() {
        let mut web = f("web", WantRun, false, Absent);
        web.depends_on = vec!["db".into(), "cache".into()];
        let mut cache = f("cache", WantRun, false, Absent);
        cache.depends_on = vec!["db".into()];
        let db = f("db", WantRun, false, Absent);
        let solo = f("solo", WantRun, false, Stopped);
        let p = plan(&[web, cache, db, solo]);
        let waves: Vec<Vec<&str>> = p.waves.iter().map(|w| names(w)).collect();
        assert_eq!(waves, vec![vec!["db", "solo"], vec!["cache"], vec!["web"]]);
    }

    #[test]
    fn a_running_dependency_holds_nothing_back() {
        let mut web = f("web", WantRun, false, Absent);
        web.depends_on = vec!["db".into()];
        let db = f("db", WantRun, false, Running);
        let p = plan(&[web, db]);
        assert_eq!(p.waves.len(), 1);
        assert_eq!(names(&p.waves[0]), vec!["web"]);
    }

    #[test]
    fn start_order_breaks_ties_then_name() {
        let mut b = f("b", WantRun, false, Absent);
        b.start_order = -1;
        let a = f("a", WantRun, false, Absent);
        let c = f("c", WantRun, false, Absent);
        let p = plan(&[c, a, b]);
        assert_eq!(names(&p.waves[0]), vec!["b", "a", "c"]);
    }

    #[test]
    fn a_cycle_still_terminates() {
        let mut a = f("a", WantRun, false, Absent);
        a.depends_on = vec!["b".into()];
        let mut b = f("b", WantRun, false, Absent);
        b.depends_on = vec!["a".into()];
        let p = plan(&[a, b]);
        assert_eq!(p.deploys().count(), 2);
    }

    #[test]
    fn left_alone_services_say_why() {
        let p = plan(&[
            f("x", WantStop, true, Stopped),
            f("y", WantStop, false, Absent),
        ]);
        assert!(p.is_empty());
        assert_eq!(
            p.left,
            vec![
                ("x".to_string(), "stopped by a user".to_string()),
                ("y".to_string(), "auto_start is off".to_string())
            ]
        );
    }
}
