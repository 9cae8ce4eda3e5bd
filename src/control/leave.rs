//! This host's half of `stackctl apply --all-hosts` (and `config push
//! --apply`): what an apply here would do, without doing it, and an apply
//! limited to stopping the services that left this host's placement.
//!
//! The other half runs in stackctl (`cli/cluster_apply.rs`), which asks
//! every host over the peer endpoint (`POST /v1/apply`): first what leaves
//! each host, then preflight on the hosts those services go to, then these
//! stops, and only once they are done the starts where the services go.
//! That order is what keeps a service whose `host =` changed from running
//! on two hosts while each host's own apply would have started it without
//! waiting for the other's stop.

use super::{Control, ControlError, Shared};
use crate::engine::ContainerState;
use crate::reconcile::{self, Action};
use crate::store::{Origin, TaskRecord};
use crate::tasks::TaskKind;

/// One step of an apply's plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanStep {
    /// "stop" or "start".
    pub action: &'static str,
    pub service: String,
    pub reason: String,
}

fn step(a: &Action) -> PlanStep {
    PlanStep {
        action: match a {
            Action::Deploy { .. } => "start",
            Action::Stop { .. } => "stop",
        },
        service: a.service().to_string(),
        reason: a.reason().to_string(),
    }
}

/// Keeps only the stops of services no longer assigned to this host
/// that have a container running (`running`): the planner counts a
/// project whose containers all exited 0 as a finished job, "running",
/// so a service stopped here before would otherwise leave again at every
/// apply.
pub(super) fn leaving_only(plan: &mut reconcile::Plan, running: impl Fn(&str) -> bool) {
    plan.stops
        .retain(|a| a.reason() == reconcile::NO_LONGER_ASSIGNED && running(a.service()));
    plan.waves.clear();
    plan.left.clear();
}

impl Control {
    /// What an apply would do now, in order (stops, then starts wave by
    /// wave); with `leaving`, only the stops of services that left this
    /// host's placement.
    pub fn apply_plan(&self, leaving: bool) -> Vec<PlanStep> {
        let mut plan = reconcile::plan(&self.shared.facts());
        if leaving {
            leaving_only(&mut plan, |n| self.shared.runs_here(n));
        } else {
            // Stopping what no longer runs is nothing to show: neither a
            // service that left this host nor one whose containers all
            // exited 0 (which the planner counts as a finished job, so a
            // stopped service that exits 0 on SIGTERM would be listed as
            // a stop at every dry run).
            plan.stops.retain(|a| self.shared.runs_here(a.service()));
        }
        plan.stops.iter().chain(plan.deploys()).map(step).collect()
    }

    /// Stops the services that left this host's placement (a reconcile
    /// task of origin [`Origin::Leaving`]); None when none did. Refused
    /// as `apply` is when the stops exceed `reload_guard`, unless `force`.
    pub fn apply_leaving(&self, force: bool) -> Result<Option<TaskRecord>, ControlError> {
        let mut plan = reconcile::plan(&self.shared.facts());
        leaving_only(&mut plan, |n| self.shared.runs_here(n));
        if plan.is_empty() {
            return Ok(None);
        }
        if !force {
            if let Some(why) = self.shared.removal_guard(&plan) {
                return Err(ControlError::Conflict(format!(
                    "apply refused: {why}; check the cluster file, or add --force to stop them"
                )));
            }
        }
        Ok(Some(self.queue().submit(
            TaskKind::Reconcile,
            "",
            &Origin::Leaving,
        )?))
    }
}

impl Shared {
    /// The reconcile task's plan, limited when it is a leaving-only one.
    pub(super) fn limit_plan(&self, task: &TaskRecord, plan: &mut reconcile::Plan) {
        if task.origin == Origin::Leaving {
            leaving_only(plan, |n| self.runs_here(n));
        }
    }

    /// A container of `name` runs on this host's engine.
    fn runs_here(&self, name: &str) -> bool {
        self.world
            .containers(name)
            .iter()
            .any(|c| c.state == ContainerState::Running)
    }
}
