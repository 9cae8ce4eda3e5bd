//! The daemon's D-Bus API as stackctl calls it: `#[zbus::proxy]` traits
//! written from `dbus/org.stackd1.xml` (which a test holds equal to what
//! the daemon serves), so each method's name and argument types are
//! declared once and checked by the compiler at every call in `client.rs`.

use std::collections::HashMap;

use zbus::zvariant::{OwnedFd, OwnedObjectPath, OwnedValue, Value};

use super::types::{ContainerStatsRow, DependencyRow, HostRow, PlanRow, ServiceRow, TaskRow};

/// A property map (`a{sv}`): `GetAll`'s answer, and a relayed host's
/// service, manager or task.
pub(crate) type Props = HashMap<String, OwnedValue>;

/// `org.stackd1.Manager`, the calls stackctl makes (the rows are the
/// shapes of `dbus/types.rs`, which the server sends too).
#[zbus::proxy(
    interface = "org.stackd1.Manager",
    default_service = "org.stackd1",
    default_path = "/org/stackd1",
    gen_blocking = false
)]
pub(crate) trait Manager {
    fn list_services(&self) -> zbus::Result<Vec<ServiceRow>>;
    fn list_hosts(&self) -> zbus::Result<Vec<HostRow>>;
    fn get_service(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_service(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_service(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_service(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn update_service(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn pull_service(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn down_service(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn rollback(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn start_service_mode(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn stop_service_mode(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
    fn queue_and_wait(
        &self,
        name: &str,
        operation: &str,
        mode: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn migrate_mode(
        &self,
        service: &str,
        to_host: &str,
        mode: &str,
    ) -> zbus::Result<OwnedObjectPath>;
    fn migrate_with(
        &self,
        service: &str,
        to_host: &str,
        mode: &str,
        with_volumes: bool,
    ) -> zbus::Result<OwnedObjectPath>;
    fn prune(&self, options: &HashMap<&str, Value<'_>>) -> zbus::Result<OwnedObjectPath>;
    fn plan_start(&self, name: &str, mode: &str) -> zbus::Result<Vec<PlanRow>>;
    fn list_dependencies(&self, name: &str, reverse: bool) -> zbus::Result<Vec<DependencyRow>>;
    fn apply_mode(&self, mode: &str) -> zbus::Result<Vec<OwnedObjectPath>>;
    fn reload_mode(&self, mode: &str) -> zbus::Result<()>;
    fn list_tasks(&self, filter: &HashMap<&str, Value<'_>>) -> zbus::Result<Vec<TaskRow>>;
    fn get_task(&self, id: u64) -> zbus::Result<OwnedObjectPath>;
    fn cancel_task(&self, id: u64) -> zbus::Result<()>;
    fn service_logs(&self, name: &str, lines: u32, follow: bool) -> zbus::Result<OwnedFd>;
    fn check_service(&self, name: &str) -> zbus::Result<Vec<String>>;
    fn readiness(&self) -> zbus::Result<Vec<(String, String, Vec<String>)>>;
    fn required(&self, operation: &str) -> zbus::Result<Vec<(String, bool, String, String, bool)>>;
    fn list_registry(&self) -> zbus::Result<Vec<(String, String, String, String, Vec<String>)>>;
    fn host_stats(&self) -> zbus::Result<HashMap<String, OwnedValue>>;
    fn list_container_stats(&self) -> zbus::Result<Vec<ContainerStatsRow>>;
    fn diagnose(&self, name: &str) -> zbus::Result<Vec<String>>;
    fn test_notify(&self, channel: &str) -> zbus::Result<Vec<(String, bool, String)>>;
    fn list_host_services(&self, host: &str) -> zbus::Result<Vec<ServiceRow>>;
    fn get_host_service(&self, host: &str, name: &str) -> zbus::Result<Props>;
    fn get_host_manager(&self, host: &str) -> zbus::Result<Props>;
    fn list_host_tasks(
        &self,
        host: &str,
        filter: &HashMap<&str, Value<'_>>,
    ) -> zbus::Result<Vec<TaskRow>>;
    fn get_host_task(&self, host: &str, id: u64) -> zbus::Result<Props>;
    fn get_host_task_log(&self, host: &str, id: u64, skip: u32) -> zbus::Result<Vec<String>>;
    fn start_host_service(&self, host: &str, name: &str, mode: &str) -> zbus::Result<u64>;
    fn stop_host_service(&self, host: &str, name: &str, mode: &str) -> zbus::Result<u64>;
    fn restart_host_service(&self, host: &str, name: &str, mode: &str) -> zbus::Result<u64>;
    fn update_host_service(&self, host: &str, name: &str, mode: &str) -> zbus::Result<u64>;
    fn host_service_logs(
        &self,
        host: &str,
        name: &str,
        lines: u32,
        follow: bool,
    ) -> zbus::Result<OwnedFd>;
    #[allow(clippy::type_complexity)]
    fn apply_all_hosts(
        &self,
        dry_run: bool,
        force: bool,
    ) -> zbus::Result<(
        Vec<(String, String, String, String)>,
        Vec<String>,
        Vec<String>,
    )>;
    fn push_config(
        &self,
        text: &str,
        force: bool,
    ) -> zbus::Result<Vec<(String, String, String, String, String)>>;
}

/// `org.stackd1.Task`: its log; the rest are properties.
#[zbus::proxy(
    interface = "org.stackd1.Task",
    default_service = "org.stackd1",
    gen_blocking = false
)]
pub(crate) trait Task {
    fn log_since(&self, skip: u32) -> zbus::Result<Vec<String>>;
}

/// `org.freedesktop.DBus.Properties.GetAll`, answered as the other calls
/// are (zbus's own fdo proxy would turn the daemon's errors into fdo ones).
#[zbus::proxy(
    interface = "org.freedesktop.DBus.Properties",
    default_service = "org.stackd1",
    gen_blocking = false
)]
pub(crate) trait Properties {
    fn get_all(&self, interface: &str) -> zbus::Result<Props>;
}
