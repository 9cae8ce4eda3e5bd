//! Housekeeping: `prune` (images, stopped containers and networks stackd
//! left behind), `rollback` (back to the image a service ran before its
//! last update), the scheduled prune and the disk warning.
//!
//! What goes is decided by the pure planner in `plan.rs`; this module
//! gathers its inputs from Docker and the store, carries the plan out as a
//! task (kind `prune`, host-wide like a reconcile), and records the images
//! every start, restart, update and rollback leaves a service running.
//! Nothing here forces Docker: an image in use or a network with endpoints
//! stays, and volumes are never touched.

mod plan;
mod watch;

use crate::fmt::decimal_bytes;
use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::control::{Control, ControlError, Op};
use crate::engine::{ComposeFlavor, Docker};
use crate::store::{Origin, Store, TaskRecord, TaskResult};
use crate::tasks::{Failure, Log, TaskKind};

pub use plan::{short_id, Kinds, Plan};
pub use watch::run;

/// What a prune task was asked to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneOptions {
    pub kinds: Kinds,
    /// List what would go, remove nothing.
    pub dry_run: bool,
}

/// The options of prune tasks queued and not yet started, by task id
/// (a task record has no room for them).
#[derive(Default)]
pub struct Pending(Mutex<HashMap<u64, PruneOptions>>);

impl Pending {
    fn take(&self, id: u64) -> Option<PruneOptions> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
    }
}

impl Control {
    /// Queue a prune task. It is host-wide (no service), so it never runs
    /// while a reconcile does.
    pub fn prune(&self, opts: PruneOptions, origin: &Origin) -> Result<TaskRecord, ControlError> {
        // Registered before the task can start: the queue may run it at once.
        let pending = self.housekeeping();
        let mut map = pending.0.lock().unwrap_or_else(|e| e.into_inner());
        // A prune cancelled before it started never took its options out.
        let store = self.store();
        map.retain(|id, _| {
            store.task(*id).ok().flatten().is_some_and(|t| {
                matches!(
                    t.state,
                    crate::store::TaskState::Pending | crate::store::TaskState::Running
                )
            })
        });
        let task = self.queue().submit(TaskKind::Prune, "", origin)?;
        map.insert(task.id, opts);
        Ok(task)
    }

    /// Queue a rollback of `name` to the image it ran before its last
    /// update. Refused when stackd recorded no such image.
    pub async fn rollback(&self, name: &str, origin: &Origin) -> Result<TaskRecord, ControlError> {
        // The same "no such service" / "not assigned here" answers as status.
        self.service(name)?;
        let images = self.store().service_images(Some(name))?;
        if !images.iter().any(|i| i.previous.is_some()) {
            return Err(ControlError::Conflict(format!(
                "{name} has no previous image to roll back to: stackd records one when an \
                 update (or any start) changes the image the service runs"
            )));
        }
        self.request(Op::Rollback, name, origin, false).await
    }
}

/// Runs a prune task: plan, then (unless a dry run) remove containers,
/// networks and images in that order, each line into the task log.
pub(crate) async fn prune_task(
    control: &Control,
    task: &TaskRecord,
    log: &Log,
    cancel: &CancellationToken,
) -> Result<(), Failure> {
    // Every prune is queued through `Control::prune`, which registers its
    // options; without them (never expected) nothing is removed rather than
    // guessing: a dry run must never become a real one.
    let opts = control.housekeeping().take(task.id).ok_or_else(|| {
        Failure::failed("the options of this prune were lost; nothing was removed")
    })?;
    let docker = control
        .docker()
        .ok_or_else(|| Failure::failed("Docker is unavailable"))?;
    log.line(&format!(
        "prune {}{}",
        opts.kinds.describe(),
        if opts.dry_run { " (dry run)" } else { "" }
    ));
    let plan = make_plan(control, &docker, opts.kinds)
        .await
        .map_err(Failure::failed)?;
    for k in &plan.kept {
        log.line(&format!("kept image {k}"));
    }
    let verb = if opts.dry_run {
        "would remove"
    } else {
        "removed"
    };
    if opts.dry_run {
        for (what, items) in [
            ("container", &plan.containers),
            ("network", &plan.networks),
            ("image", &plan.images),
        ] {
            for i in items {
                log.line(&format!(
                    "{verb} {what} {} ({})",
                    i.name,
                    decimal_bytes(i.bytes)
                ));
            }
        }
        log.line(&format!("{verb} {}", plan.summary()));
        return Ok(());
    }
    let store = control.store();
    for id in &plan.gone {
        let _ = store.forget_image(id);
    }
    let mut done = Plan::default();
    let mut failures = Vec::new();
    for c in &plan.containers {
        if cancel.is_cancelled() {
            break;
        }
        match docker.remove_container(&c.id).await {
            Ok(()) => {
                log.line(&format!(
                    "{verb} container {} ({})",
                    c.name,
                    decimal_bytes(c.bytes)
                ));
                done.containers.push(c.clone());
            }
            Err(e) => failures.push(format!("container {}: {e}", c.name)),
        }
    }
    for n in &plan.networks {
        if cancel.is_cancelled() {
            break;
        }
        match docker.remove_network(&n.id).await {
            Ok(()) => {
                log.line(&format!("{verb} network {}", n.name));
                done.networks.push(n.clone());
            }
            Err(e) => failures.push(format!("network {}: {e}", n.name)),
        }
    }
    for i in &plan.images {
        if cancel.is_cancelled() {
            break;
        }
        match docker.remove_image(&i.id).await {
            Ok(()) => {
                log.line(&format!(
                    "{verb} image {} ({})",
                    i.name,
                    decimal_bytes(i.bytes)
                ));
                let _ = store.forget_image(&i.id);
                done.images.push(i.clone());
            }
            // Docker's refusal stands (a container created meanwhile, a
            // tag added meanwhile): kept, and said so.
            Err(e) => log.line(&format!("kept image {}: {e}", i.name)),
        }
    }
    if failures.is_empty() && !cancel.is_cancelled() {
        for p in &plan.forgotten {
            if let Err(e) = store.unmark_deployed(p) {
                warn!("cannot forget project {p}: {e}");
            }
        }
    }
    log.line(&format!(
        "{verb} {}; freed {}",
        done.summary(),
        decimal_bytes(done.bytes())
    ));
    if cancel.is_cancelled() {
        return Err(Failure {
            result: TaskResult::Canceled,
            message: "cancelled by request".into(),
        });
    }
    if failures.is_empty() {
        Ok(())
    } else {
        for f in &failures {
            log.line(&format!("failed to remove {f}"));
        }
        Err(Failure::failed(failures.join("; ")))
    }
}

/// Gathers the planner's inputs and plans.
pub(crate) async fn make_plan(
    control: &Control,
    docker: &Docker,
    kinds: Kinds,
) -> Result<Plan, String> {
    let store = control.store();
    let managed: BTreeSet<String> = control.service_names().into_iter().collect();
    let deployed = store.deployed().map_err(|e| e.to_string())?;
    let containers = docker
        .compose_containers(None)
        .await
        .map_err(|e| e.to_string())?;
    let usage = docker.disk_usage().await.map_err(|e| e.to_string())?;
    let service_images = store.service_images(None).map_err(|e| e.to_string())?;
    let seen = store.seen_images().map_err(|e| e.to_string())?;
    let mut networks = Vec::new();
    for p in deployed.iter().filter(|p| !managed.contains(*p)) {
        networks.extend(
            docker
                .project_networks(p)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(plan::plan(
        kinds,
        &plan::Inputs {
            managed: &managed,
            deployed: &deployed,
            containers: &containers,
            images: &usage.images,
            container_bytes: &usage.container_bytes,
            service_images: &service_images,
            seen: &seen,
            networks: &networks,
        },
    ))
}

/// Records the image each container of `service` runs (reference and id),
/// so the one before a change becomes the service's previous image.
/// Called before and after every Compose step that may change it; a
/// failure is logged, never fatal: bookkeeping must not fail a deploy.
pub(crate) async fn record_images(docker: Option<&Docker>, store: &Store, service: &str) {
    let Some(docker) = docker else { return };
    let containers = match docker.compose_containers(Some(service)).await {
        Ok(c) => c,
        Err(e) => {
            warn!(
                stackd_service = service,
                "cannot read the images it runs: {e}"
            );
            return;
        }
    };
    let mut done = BTreeSet::new();
    for c in containers {
        if c.reference.is_empty() || c.image_id.is_empty() || !done.insert(c.reference.clone()) {
            continue;
        }
        if let Err(e) = store.record_image(service, &c.reference, &c.image_id) {
            store.note_write_error(format_args!("cannot record the image of {service}"), &e);
        }
    }
}

/// A rollback's first step: every image reference of `service` that has a
/// previous image is tagged back to it, so the `up -d` that follows
/// recreates the containers on it (Compose v1 and v2 both recreate a
/// container whose image id differs from the one its reference names).
pub(crate) async fn retag_previous(
    docker: Option<&Docker>,
    store: &Store,
    service: &str,
    log: &Log,
) -> Result<(), Failure> {
    let docker = docker.ok_or_else(|| Failure::failed("Docker is unavailable"))?;
    let images = store
        .service_images(Some(service))
        .map_err(|e| Failure::failed(e.to_string()))?;
    let mut any = false;
    for i in images {
        let Some(prev) = i.previous else { continue };
        match docker.image_id(&prev).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(Failure::failed(format!(
                    "the previous image of {} ({}) is no longer on this host",
                    i.reference,
                    short_id(&prev)
                )))
            }
            Err(e) => return Err(Failure::failed(e.to_string())),
        }
        docker
            .tag_image(&prev, &i.reference)
            .await
            .map_err(|e| Failure::failed(e.to_string()))?;
        log.line(&format!(
            "tagged {} as {} again (was {})",
            short_id(&prev),
            i.reference,
            short_id(&i.current)
        ));
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(Failure::failed(format!(
            "{service} has no previous image to roll back to"
        )))
    }
}

/// The Compose step of a rollback: `up -d`, and under Compose v2 with
/// `--pull never`, so that `pull_policy: always` cannot fetch the image
/// the rollback moves away from (Compose v1's `up` pulls only missing
/// images).
pub(crate) fn rollback_step(flavor: ComposeFlavor) -> &'static [&'static str] {
    match flavor {
        ComposeFlavor::V2 => &["up", "-d", "--remove-orphans", "--pull", "never"],
        ComposeFlavor::V1 => &["up", "-d", "--remove-orphans"],
    }
}
