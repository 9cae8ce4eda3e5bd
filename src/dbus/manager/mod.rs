//! `org.stackd1.Manager` at `/org/stackd1`. Every method is one line over the
//! core; conversions live in `types.rs`.

// The Alert signal carries seven fields, as DESIGN.md names them.
#![allow(clippy::too_many_arguments)]

use std::collections::HashMap;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedFd, OwnedObjectPath, OwnedValue};
use zbus::{interface, Connection};

use super::error::Result;
use super::path::{service_path, task_path};
use super::remote::{self, ApplyRow, Properties, PushRow};
use super::types::{ContainerStatsRow, DependencyRow, HostRow, PlanRow, ServiceRow, TaskRow};
use super::Shared;
use crate::control::Op;

mod calls;
pub(super) use calls::origin;
use calls::parse_filter;

pub(super) struct Manager {
    pub(super) shared: Shared,
}

#[interface(name = "org.stackd1.Manager")]
impl Manager {
    async fn list_services(&self) -> Vec<ServiceRow> {
        self.shared
            .control
            .list_services()
            .iter()
            .map(ServiceRow::from_status)
            .collect()
    }

    /// Every host of the cluster file as this host sees it: name, peer URL,
    /// reachable, since (µs), version, 1-minute load, config hash, error.
    async fn list_hosts(&self) -> Vec<HostRow> {
        self.shared.control.list_hosts()
    }

    async fn get_service(&self, name: &str) -> Result<OwnedObjectPath> {
        self.shared.control.service(name)?;
        Ok(service_path(name))
    }

    async fn start_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Start, name, "fail").await
    }

    /// Start, restart or update a service (operation "start", "restart",
    /// "update"; mode "fail", or "replace" as StartServiceMode) and let the
    /// task wait until the service runs and is healthy within its
    /// start_timeout; its result is "timeout" when it is not.
    async fn queue_and_wait(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        operation: &str,
        mode: &str,
    ) -> Result<OwnedObjectPath> {
        self.queue_and_wait_as(conn, &header, name, operation, mode)
            .await
    }

    /// Move a service to another host of the cluster file: one migrate
    /// task here (DESIGN.md's `Migrate(s service, s to_host) → o`).
    async fn migrate(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        service: &str,
        to_host: &str,
    ) -> Result<OwnedObjectPath> {
        self.migrate_as(conn, &header, service, to_host, "fail", false)
            .await
    }

    /// Migrate with a job mode: "fail", or "replace" to go ahead when a
    /// third host cannot be asked; an unreachable target always refuses.
    async fn migrate_mode(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        service: &str,
        to_host: &str,
        mode: &str,
    ) -> Result<OwnedObjectPath> {
        self.migrate_as(conn, &header, service, to_host, mode, false)
            .await
    }

    /// MigrateMode that also carries the service's named volumes when
    /// `with_volumes` (`stackctl migrate --with-volumes`): after the stop
    /// here, each is streamed to the target and checked there before the
    /// target starts the service. The service's `handoff_volumes` carries
    /// them whatever this says.
    async fn migrate_with(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        service: &str,
        to_host: &str,
        mode: &str,
        with_volumes: bool,
    ) -> Result<OwnedObjectPath> {
        self.migrate_as(conn, &header, service, to_host, mode, with_volumes)
            .await
    }

    async fn stop_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Stop, name, "fail").await
    }

    /// StartService with a job mode, as systemd's StartUnit: "fail"
    /// refuses when a running service conflicts, "replace" stops the
    /// conflicting services (and what runs on them) first.
    async fn start_service_mode(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        mode: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Start, name, mode).await
    }

    /// StopService with a job mode: "fail" refuses while running services
    /// depend on it, "replace" stops them first, dependents first.
    async fn stop_service_mode(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        mode: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Stop, name, mode).await
    }

    /// What StartServiceMode would queue, in order, without queuing it:
    /// (service, "start" or "stop", reason). Fails as the start would.
    async fn plan_start(&self, name: &str, mode: &str) -> Result<Vec<PlanRow>> {
        calls::plan_start(&self.shared.control, name, mode)
    }

    /// The dependency tree of a service in pre-order with each node's
    /// depth and state; with `reverse`, what depends on it.
    async fn list_dependencies(&self, name: &str, reverse: bool) -> Result<Vec<DependencyRow>> {
        calls::dependencies(&self.shared.control, name, reverse)
    }

    async fn restart_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Restart, name, "fail").await
    }

    /// Pull, then recreate; a failed pull leaves the deployment untouched.
    async fn update_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Update, name, "fail").await
    }

    async fn pull_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Pull, name, "fail").await
    }

    /// Stop and remove the containers (volumes are kept).
    async fn down_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        self.op(conn, &header, Op::Down, name, "fail").await
    }

    /// Queue a prune task (`housekeeping/`). Options: `images`,
    /// `containers`, `networks` (b; none set means all three), `dry_run`
    /// (b: list what would go and its bytes in the task log).
    async fn prune(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        options: HashMap<String, OwnedValue>,
    ) -> Result<OwnedObjectPath> {
        self.prune_as(conn, &header, options).await
    }

    /// Redeploy a service with the image it ran before its last update.
    async fn rollback(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<OwnedObjectPath> {
        self.rollback_as(conn, &header, name).await
    }

    /// Bring the host to its desired state; returns the reconcile task.
    /// Refused (Conflict) when it would stop more of this host's services
    /// for being no longer assigned than `reload_guard` allows.
    async fn apply(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<Vec<OwnedObjectPath>> {
        self.apply_as(conn, &header, "fail").await
    }

    /// Apply with a mode: "fail" as Apply, "replace" stops services no
    /// longer assigned to this host however many they are.
    async fn apply_mode(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        mode: &str,
    ) -> Result<Vec<OwnedObjectPath>> {
        self.apply_as(conn, &header, mode).await
    }

    /// Re-read the cluster file. Refused (InvalidArgument) when it is not
    /// valid or would remove more of this host's services than
    /// `reload_guard` allows; the running configuration stays.
    async fn reload(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<()> {
        self.reload_as(conn, &header, "fail").await
    }

    /// Reload with a mode: "fail" as Reload, "replace" takes a valid file
    /// whatever it removes.
    async fn reload_mode(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        mode: &str,
    ) -> Result<()> {
        self.reload_as(conn, &header, mode).await
    }

    async fn list_tasks(&self, filter: HashMap<String, OwnedValue>) -> Result<Vec<TaskRow>> {
        calls::list_tasks(&self.shared.control, filter)
    }

    async fn get_task(&self, id: u64) -> Result<OwnedObjectPath> {
        self.shared.control.task(id)?;
        self.shared.register_task(id).await;
        Ok(task_path(id))
    }

    async fn cancel_task(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        id: u64,
    ) -> Result<()> {
        self.shared.policy.check(conn, &header).await?;
        Ok(self.shared.control.cancel(id)?)
    }

    /// The service's container logs, written into the returned pipe; with
    /// `follow` the pipe stays open until the reader closes it. Needs what
    /// reading the journal needs (`Policy::check_logs`).
    async fn service_logs(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
        lines: u32,
        follow: bool,
    ) -> Result<OwnedFd> {
        self.shared.policy.check_logs(conn, &header).await?;
        calls::logs(&self.shared.control, name, lines, follow)
    }

    /// Preflight only: every problem a deploy would meet. Fails with
    /// org.stackd1.Error.PreflightFailed listing them when one is fatal.
    async fn check_service(&self, name: &str) -> Result<Vec<String>> {
        Ok(self.shared.control.preflight(name).await?)
    }

    /// Per service of this host: running, could start or blocked, with
    /// what blocks it (preflight's problems, a blocked dependency, an
    /// external service's probe): (name, verdict, problems).
    async fn readiness(&self) -> Vec<(String, String, Vec<String>)> {
        calls::readiness(&self.shared.control).await
    }

    /// The services whose required_for names `operation`, then their
    /// dependencies: (name, named by required_for itself, ActiveState,
    /// Health, running).
    async fn required(&self, operation: &str) -> Vec<(String, bool, String, String, bool)> {
        calls::required(&self.shared.control, operation)
    }

    /// What the cluster file says of each service of this host: (name,
    /// kind, description, category, required_for).
    async fn list_registry(&self) -> Vec<(String, String, String, String, Vec<String>)> {
        calls::registry(&self.shared.control)
    }

    /// Host figures from procfs (CPU, load, memory, swap, uptime, disk of
    /// the state dir) and the count of Compose containers.
    async fn host_stats(&self) -> HashMap<String, OwnedValue> {
        calls::host_stats(&self.shared.control)
    }

    /// Every running container of this host's services with its figures
    /// from the last sample (no Docker call): what `stackctl top` shows.
    async fn list_container_stats(&self) -> Vec<ContainerStatsRow> {
        self.shared
            .control
            .figures()
            .containers()
            .iter()
            .map(ContainerStatsRow::from_figures)
            .collect()
    }

    /// The evidence stackd sees for a service and what it would do about
    /// it, without doing it.
    /// Needs what reading logs needs: the evidence quotes them.
    async fn diagnose(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        name: &str,
    ) -> Result<Vec<String>> {
        self.shared.policy.check_logs(conn, &header).await?;
        Ok(self.shared.control.diagnose(name)?)
    }

    /// Send a test message through a notification channel ("" for all),
    /// bypassing the outbox: (channel, delivered, error) for each.
    async fn test_notify(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        channel: &str,
    ) -> Result<Vec<(String, bool, String)>> {
        self.shared.policy.check(conn, &header).await?;
        Ok(calls::notify_test(&self.shared.control, channel).await)
    }

    // Calls about another host of the cluster, relayed to its peer endpoint
    // with this daemon's token (see `remote.rs`). Reading needs what
    // reading here needs, logs what logs here need, changes what changes
    // here need.

    /// ListServices as `host` answers it.
    async fn list_host_services(&self, host: &str) -> Result<Vec<ServiceRow>> {
        remote::list_services(&self.shared.control, host).await
    }

    /// A service of `host`: its Service properties (GetAll's shape).
    async fn get_host_service(&self, host: &str, name: &str) -> Result<Properties> {
        remote::service(&self.shared.control, host, name).await
    }

    /// `host`'s Manager properties (GetAll's shape).
    async fn get_host_manager(&self, host: &str) -> Result<Properties> {
        remote::manager(&self.shared.control, host).await
    }

    /// ListTasks as `host` answers it.
    async fn list_host_tasks(
        &self,
        host: &str,
        filter: HashMap<String, OwnedValue>,
    ) -> Result<Vec<TaskRow>> {
        remote::tasks(&self.shared.control, host, parse_filter(filter)?).await
    }

    /// A task of `host` by its id there: its Task properties.
    async fn get_host_task(&self, host: &str, id: u64) -> Result<Properties> {
        remote::task(&self.shared.control, host, id).await
    }

    /// A task's log lines on `host` after the first `skip`; needs what
    /// reading logs needs.
    async fn get_host_task_log(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        host: &str,
        id: u64,
        skip: u32,
    ) -> Result<Vec<String>> {
        self.shared.policy.check_logs(conn, &header).await?;
        remote::task_log(&self.shared.control, host, id, skip).await
    }

    /// StartServiceMode on `host`: the task id there.
    async fn start_host_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        host: &str,
        name: &str,
        mode: &str,
    ) -> Result<u64> {
        self.host_op(conn, &header, host, name, "start", mode).await
    }

    /// StopServiceMode on `host`: the task id there.
    async fn stop_host_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        host: &str,
        name: &str,
        mode: &str,
    ) -> Result<u64> {
        self.host_op(conn, &header, host, name, "stop", mode).await
    }

    /// RestartService on `host`: the task id there.
    async fn restart_host_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        host: &str,
        name: &str,
        mode: &str,
    ) -> Result<u64> {
        self.host_op(conn, &header, host, name, "restart", mode)
            .await
    }

    /// UpdateService on `host`: the task id there.
    async fn update_host_service(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        host: &str,
        name: &str,
        mode: &str,
    ) -> Result<u64> {
        self.host_op(conn, &header, host, name, "update", mode)
            .await
    }

    /// ServiceLogs of `host`, streamed from its peer endpoint into the
    /// returned pipe; needs what reading logs here needs.
    async fn host_service_logs(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        host: &str,
        name: &str,
        lines: u32,
        follow: bool,
    ) -> Result<OwnedFd> {
        self.shared.policy.check_logs(conn, &header).await?;
        remote::logs(&self.shared.control, host, name, lines, follow).await
    }

    /// `stackctl apply --all-hosts` (and `config push --apply`), run by
    /// this daemon with its cluster file and peer token: services whose
    /// placement changed are stopped where they leave (after a preflight
    /// where they go), then started where they go, dependencies first;
    /// then every host applies the rest. Returns the plan (host, action,
    /// service, reason), the steps done and the steps that failed; with
    /// `dry_run` only the plan. Fails, with nothing changed, when a host
    /// cannot answer for its plan or a preflight fails.
    async fn apply_all_hosts(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        dry_run: bool,
        force: bool,
    ) -> Result<(Vec<ApplyRow>, Vec<String>, Vec<String>)> {
        self.shared.policy.check(conn, &header).await?;
        remote::apply_all_hosts(&self.shared.control, dry_run, force).await
    }

    /// A cluster file (this host's own when `text` is empty) to every host
    /// of its [hosts]: all check it, then all write it, or none does.
    /// (host, outcome, config path, config hash, error) per host.
    async fn push_config(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        text: &str,
        force: bool,
    ) -> Result<Vec<PushRow>> {
        self.shared.policy.check(conn, &header).await?;
        let user_mode = self.shared.policy.user_mode;
        remote::push_config(&self.shared.control, user_mode, text, force).await
    }

    #[zbus(property)]
    async fn version(&self) -> String {
        self.shared.control.manager().version.to_string()
    }

    #[zbus(property)]
    async fn host(&self) -> String {
        self.shared.control.manager().host
    }

    #[zbus(property)]
    async fn system_state(&self) -> String {
        self.shared.control.system_state().as_str().to_string()
    }

    #[zbus(property)]
    async fn docker_connected(&self) -> bool {
        self.shared.control.manager().docker_connected
    }

    /// Why Docker is not connected ("" when it is).
    #[zbus(property)]
    async fn docker_error(&self) -> String {
        self.shared.control.manager().docker_error
    }

    #[zbus(property)]
    async fn config_hash(&self) -> String {
        self.shared.control.manager().config_hash
    }

    #[zbus(property)]
    async fn config_path(&self) -> String {
        self.shared
            .control
            .manager()
            .config_path
            .display()
            .to_string()
    }

    #[zbus(property)]
    async fn boot_id(&self) -> String {
        self.shared.control.manager().boot_id
    }

    #[zbus(signal)]
    pub async fn task_new(
        emitter: &SignalEmitter<'_>,
        id: u64,
        task: OwnedObjectPath,
        kind: &str,
        service: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn task_removed(
        emitter: &SignalEmitter<'_>,
        id: u64,
        task: OwnedObjectPath,
        service: &str,
        result: &str,
    ) -> zbus::Result<()>;

    #[zbus(signal)]
    pub async fn alert(
        emitter: &SignalEmitter<'_>,
        severity: &str,
        kind: &str,
        host: &str,
        service: &str,
        summary: &str,
        body: &str,
        usec: u64,
    ) -> zbus::Result<()>;
}
