//! What the core shows: each service's status (desired and observed
//! state, health, figures), the manager's and the hosts', projected from
//! the config, the store, the world and the supervision board.

use std::path::PathBuf;

use super::{Control, ControlError, Shared};
use crate::config::{self, Config, ServiceConfig};
use crate::engine::ContainerInfo;
use crate::events::Event;
use crate::health::Health;
use crate::reconcile;
use crate::state::{ActiveState, SubState};
use crate::store::{Desired, DesiredState, SetBy};
use crate::tasks::TaskKind;
use crate::world::{self, Observed};

/// One figure of `HostStats`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HostValue {
    Int(u64),
    Float(f64),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SystemState {
    Starting,
    Running,
    Degraded,
    Stopping,
}

impl SystemState {
    pub fn as_str(self) -> &'static str {
        match self {
            SystemState::Starting => "starting",
            SystemState::Running => "running",
            SystemState::Degraded => "degraded",
            SystemState::Stopping => "stopping",
        }
    }
}

/// Everything `stackctl status NAME` and the D-Bus Service object show.
#[derive(Clone, Debug)]
pub struct ServiceStatus {
    pub name: String,
    pub host: String,
    pub desired: DesiredState,
    /// "user" when a person said start/stop, "migrate from HOST" or
    /// "migrate to HOST" after a move, else "config" (auto_start).
    pub desired_source: SetBy,
    /// When a person or a move last set the desired state (µs since the
    /// epoch); 0 when it comes from `auto_start`. Two hosts that both
    /// want a service of one host running compare it: the newer claim
    /// wins (`control/handoff/settle.rs`).
    pub desired_since_usec: u64,
    pub active_state: ActiveState,
    pub sub_state: SubState,
    pub health: Health,
    pub health_message: String,
    pub containers: Vec<ContainerInfo>,
    pub state_change_usec: u64,
    pub restart_count: u64,
    pub cpu_percent: f64,
    pub memory_bytes: u64,
    pub compose_file: PathBuf,
    /// Running and healthy as a dependent's start waits for it: containers
    /// up, Docker's healthchecks passing, and the probe (if one is
    /// configured) has said healthy, not merely not yet run
    /// (what a task queued with `request_and_wait` waits for).
    pub ready: bool,
    /// `kind`: "compose", "unit" or "external".
    pub kind: &'static str,
    /// `description`, `category` ("" when not set) and `required_for`.
    pub description: String,
    pub category: String,
    pub required_for: Vec<String>,
}

impl ServiceStatus {
    /// One line for a task log: "active (running), health unhealthy: why".
    pub fn summary(&self) -> String {
        let mut line = format!(
            "{} ({}), health {}",
            self.active_state, self.sub_state, self.health
        );
        if !self.health_message.is_empty() {
            line.push_str(": ");
            line.push_str(&self.health_message);
        }
        line
    }
}

#[derive(Clone, Debug)]
pub struct ManagerInfo {
    pub version: &'static str,
    pub host: String,
    pub system_state: SystemState,
    pub docker_connected: bool,
    pub docker_error: String,
    pub config_hash: String,
    pub config_path: PathBuf,
    pub boot_id: String,
}

/// Health as far as containers and Docker's healthchecks tell.
fn health_of(
    containers: &[ContainerInfo],
    observed: Observed,
    desired: DesiredState,
) -> (Health, String) {
    let live: Vec<&ContainerInfo> = containers.iter().filter(|c| !c.oneoff).collect();
    if let Some(c) = live
        .iter()
        .find(|c| c.health.as_deref() == Some("unhealthy"))
    {
        return (
            Health::Unhealthy,
            format!("{} fails its Docker healthcheck", c.name),
        );
    }
    let bad = live
        .iter()
        .find(|c| world::any_failed(std::slice::from_ref(**c)));
    match observed {
        Observed::Absent | Observed::Stopped if desired == DesiredState::Running => match bad {
            Some(c) if c.oom_killed => (
                Health::Unhealthy,
                format!("{} was killed for lack of memory", c.name),
            ),
            Some(c) => (
                Health::Unhealthy,
                format!("{} exited with code {}", c.name, c.exit_code.unwrap_or(-1)),
            ),
            None => (Health::Unknown, "not running".to_string()),
        },
        Observed::Absent | Observed::Stopped => (Health::Unknown, "stopped".to_string()),
        Observed::Partial => {
            let down: Vec<&str> = live
                .iter()
                .filter(|c| {
                    !world::is_complete(c) && c.state != crate::engine::ContainerState::Running
                })
                .map(|c| c.name.as_str())
                .collect();
            (
                Health::Degraded,
                format!("not running: {}", down.join(", ")),
            )
        }
        Observed::Running => {
            if let Some(c) = live
                .iter()
                .find(|c| c.health.as_deref() == Some("starting"))
            {
                (
                    Health::Starting,
                    format!("{} is starting (Docker healthcheck)", c.name),
                )
            } else {
                (Health::Healthy, String::new())
            }
        }
    }
}

impl Control {
    /// The host's figures from the last sample, with Docker's counts.
    pub fn host_stats(&self) -> Vec<(&'static str, HostValue)> {
        let mut out = Vec::new();
        if let Some(h) = self.shared.figures.host() {
            if let Some(cpu) = h.cpu_percent {
                out.push(("CpuPercent", HostValue::Float(cpu)));
            }
            out.push(("Cpus", HostValue::Int(u64::from(h.cpus))));
            out.push(("Load1", HostValue::Float(h.load[0])));
            out.push(("Load5", HostValue::Float(h.load[1])));
            out.push(("Load15", HostValue::Float(h.load[2])));
            out.push(("MemoryTotal", HostValue::Int(h.memory_total)));
            out.push(("MemoryAvailable", HostValue::Int(h.memory_available)));
            out.push(("SwapTotal", HostValue::Int(h.swap_total)));
            out.push(("SwapFree", HostValue::Int(h.swap_free)));
            out.push(("UptimeSec", HostValue::Int(h.uptime.as_secs())));
            if let Some(d) = h.disks.first() {
                out.push(("StateDirTotal", HostValue::Int(d.total)));
                out.push(("StateDirAvailable", HostValue::Int(d.available)));
            }
        }
        let projects = self.shared.world.project_names();
        let containers: Vec<ContainerInfo> = projects
            .iter()
            .flat_map(|p| self.shared.world.containers(p))
            .collect();
        let running = containers
            .iter()
            .filter(|c| c.state == crate::engine::ContainerState::Running)
            .count();
        out.push(("ComposeContainers", HostValue::Int(containers.len() as u64)));
        out.push(("ComposeContainersRunning", HostValue::Int(running as u64)));
        out
    }

    pub fn manager(&self) -> ManagerInfo {
        let cfg = self.config();
        ManagerInfo {
            version: env!("CARGO_PKG_VERSION"),
            host: cfg.host.clone(),
            system_state: self.system_state(),
            docker_connected: self.shared.world.docker_connected(),
            docker_error: self.shared.world.docker_error(),
            config_hash: cfg.hash.clone(),
            config_path: cfg.path.clone(),
            boot_id: self.shared.boot_id.clone(),
        }
    }

    /// What the peer heartbeat knows of the other hosts.
    pub fn host_board(&self) -> &crate::hosts::HostBoard {
        &self.shared.hosts
    }

    /// Every host of `[hosts]` (this one too; only this one when the table
    /// is empty), as this host sees it now.
    pub fn list_hosts(&self) -> Vec<crate::hosts::HostStatus> {
        let cfg = self.config();
        let own = || crate::hosts::HostStatus {
            name: cfg.host.clone(),
            address: cfg
                .hosts
                .get(&cfg.host)
                .and_then(|h| h.peer.clone())
                .unwrap_or_default(),
            reachable: true,
            since_usec: self.shared.started_usec,
            version: env!("CARGO_PKG_VERSION").to_string(),
            load: crate::hosts::load_average_1m(),
            config_hash: cfg.hash.clone(),
            error: String::new(),
        };
        if cfg.hosts.is_empty() {
            return vec![own()];
        }
        cfg.hosts
            .iter()
            .map(|(name, h)| {
                if *name == cfg.host {
                    return own();
                }
                self.shared
                    .hosts
                    .get(name)
                    .unwrap_or_else(|| crate::hosts::HostStatus {
                        name: name.clone(),
                        address: h.peer.clone().unwrap_or_default(),
                        error: if h.peer.is_some() {
                            "not heard from yet".into()
                        } else {
                            "no peer URL in [hosts]".into()
                        },
                        ..Default::default()
                    })
            })
            .collect()
    }

    pub fn system_state(&self) -> SystemState {
        let state = *self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if state != SystemState::Running {
            return state;
        }
        let degraded = (self.shared.uses_docker() && !self.shared.world.docker_connected())
            || self
                .list_services()
                .iter()
                .any(|s| s.active_state == ActiveState::Failed || s.health == Health::Unhealthy);
        if degraded {
            SystemState::Degraded
        } else {
            SystemState::Running
        }
    }

    pub fn set_system_state(&self, state: SystemState) {
        *self.shared.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
        let _ = self.shared.events.send(Event::ManagerChanged);
    }

    /// Names of the services this host manages, sorted.
    pub fn service_names(&self) -> Vec<String> {
        self.local_services().into_iter().map(|s| s.name).collect()
    }

    /// The services this host manages: those the cluster file assigns to
    /// it, and those moved here or away from here (see [`Shared::manages`]).
    pub fn local_services(&self) -> Vec<ServiceConfig> {
        let cfg = self.config();
        let said = self.shared.store.all_desired().unwrap_or_default();
        Shared::local_services(&cfg, &said)
            .into_iter()
            .cloned()
            .collect()
    }

    /// The service's config when this host manages it.
    pub fn local_service(&self, name: &str) -> Option<ServiceConfig> {
        let cfg = self.config();
        self.shared.local_service(&cfg, name).ok().cloned()
    }

    pub fn list_services(&self) -> Vec<ServiceStatus> {
        let cfg = self.config();
        // One read of the store for all of them, not one per service.
        let said = self.shared.store.all_desired().unwrap_or_default();
        Shared::local_services(&cfg, &said)
            .into_iter()
            .map(|s| self.shared.status(&cfg, s, said.get(&s.name)))
            .collect()
    }

    pub fn service(&self, name: &str) -> Result<ServiceStatus, ControlError> {
        let cfg = self.config();
        let svc = self.shared.local_service(&cfg, name)?;
        let said = self.shared.store.desired(name)?;
        Ok(self.shared.status(&cfg, svc, said.as_ref()))
    }

    /// The `STATUS=` line for systemd: "12 running, 1 unhealthy".
    pub fn status_line(&self) -> String {
        if self.shared.uses_docker() && !self.shared.world.docker_connected() {
            return "waiting for Docker".to_string();
        }
        let services = self.list_services();
        let running = services
            .iter()
            .filter(|s| s.active_state == ActiveState::Active)
            .count();
        let failed = services
            .iter()
            .filter(|s| s.active_state == ActiveState::Failed || s.health == Health::Unhealthy)
            .count();
        let busy = self.queue().running_count();
        let mut line = format!("{running} running");
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        if busy > 0 {
            line.push_str(&format!(", {busy} tasks"));
        }
        line
    }
}

impl Shared {
    /// Whether this host manages `svc`: the cluster file assigns it here
    /// (`host =` is the initial placement), or a move brought it here or
    /// took it away from here (the stored desired state names a peer). A
    /// host a service moved away from keeps showing it, stopped, with
    /// "migrate to HOST".
    pub(super) fn manages(cfg: &Config, svc: &ServiceConfig, said: Option<&Desired>) -> bool {
        svc.assigned_to(&cfg.host) || said.is_some_and(|d| d.peer.is_some())
    }

    pub(super) fn local_services<'c>(
        cfg: &'c Config,
        said: &std::collections::BTreeMap<String, Desired>,
    ) -> Vec<&'c ServiceConfig> {
        cfg.services
            .values()
            .filter(|s| Shared::manages(cfg, s, said.get(&s.name)))
            .collect()
    }

    pub(super) fn local_service<'c>(
        &self,
        cfg: &'c Config,
        name: &str,
    ) -> Result<&'c ServiceConfig, ControlError> {
        let said = self.store.desired(name)?;
        match cfg.service(name) {
            Some(s) if Shared::manages(cfg, s, said.as_ref()) => Ok(s),
            Some(s) => Err(ControlError::NoSuchService(format!(
                "service {name} is not assigned to this host ({}); it runs on {}",
                cfg.host,
                match &s.hosts {
                    config::HostSelector::All => "all hosts".to_string(),
                    config::HostSelector::List(l) => l.join(", "),
                }
            ))),
            None => Err(ControlError::NoSuchService(format!(
                "no such service: {name} (`stackctl list` shows the configured ones)"
            ))),
        }
    }

    /// The effective desired state, and who set it.
    pub(super) fn desired(svc: &ServiceConfig, said: Option<&Desired>) -> (DesiredState, SetBy) {
        match said.filter(|d| d.is_decision()) {
            Some(d) => (d.state, d.set_by()),
            None => (
                reconcile::effective_desired(svc.auto_start, None),
                SetBy::Config,
            ),
        }
    }

    pub(super) fn status(
        &self,
        cfg: &Config,
        svc: &ServiceConfig,
        said: Option<&Desired>,
    ) -> ServiceStatus {
        if svc.is_external() {
            return self.external_status(cfg, svc, said);
        }
        let containers = self.containers_of(&svc.name);
        let observed = world::classify(&containers);
        let (desired, desired_source) = Shared::desired(svc, said);
        let running_kind = self.queue().running_kind(&svc.name);
        let failed = world::any_failed(&containers);
        let (active_state, sub_state) = match (running_kind, observed) {
            (Some(k), _) if k.starts() => (ActiveState::Activating, SubState::Task(k)),
            (Some(k), _) if k != TaskKind::Pull => (ActiveState::Deactivating, SubState::Task(k)),
            (_, Observed::Running) => {
                let long = containers
                    .iter()
                    .any(|c| !c.oneoff && !world::is_complete(c));
                (
                    ActiveState::Active,
                    if long {
                        SubState::Running
                    } else {
                        SubState::Exited
                    },
                )
            }
            (_, Observed::Partial) => (ActiveState::Active, SubState::Partial),
            (_, Observed::Stopped) if desired == DesiredState::Running && failed => {
                (ActiveState::Failed, SubState::Failed)
            }
            (_, Observed::Stopped) => (ActiveState::Inactive, SubState::Exited),
            (_, Observed::Absent) => (ActiveState::Inactive, SubState::Dead),
        };
        let (mut health, mut health_message) = health_of(&containers, observed, desired);
        let mut recoveries = 0;
        let mut gave_up = false;
        let mut probed_healthy = false;
        let mut waiting = false;
        let has_probe = svc.health.as_ref().is_some_and(|h| h.probe.is_some());
        if has_probe && health == Health::Healthy {
            // Containers up is not yet healthy when a probe decides: until
            // the supervisor's view says otherwise, it has not spoken.
            health = Health::Starting;
            health_message = "waiting for the first probe".to_string();
        }
        if let Some(v) = self.board.verdict(&svc.name) {
            probed_healthy = v.health == Health::Healthy;
            recoveries = v.recoveries;
            gave_up = v.gave_up;
            waiting = v.waiting && observed != Observed::Running;
            // The supervisor's view (probes, debounced) wins once it has one.
            if v.health != Health::Unknown || gave_up {
                health = v.health;
                health_message = v.message;
            }
        }
        let (active_state, sub_state) = if gave_up && running_kind.is_none() {
            (ActiveState::Failed, SubState::GaveUp)
        } else if waiting && running_kind.is_none() {
            // As systemd's "activating (auto-restart)": it will try again.
            (ActiveState::Activating, SubState::Waiting)
        } else {
            (active_state, sub_state)
        };
        // Not "active": a task that waits for it shows it as activating.
        let ready = active_state != ActiveState::Failed
            && observed == Observed::Running
            && health == Health::Healthy
            && (!has_probe || probed_healthy);
        ServiceStatus {
            name: svc.name.clone(),
            host: cfg.host.clone(),
            desired,
            desired_source,
            desired_since_usec: said.filter(|d| d.is_decision()).map_or(0, |d| d.since_usec),
            active_state,
            sub_state,
            health,
            health_message,
            // A unit service's last change is systemd's (Docker has none);
            // it has no Compose file either.
            state_change_usec: match self.units.state(&svc.name) {
                Some(u) if !svc.is_compose() => u.active_enter_usec.max(u.inactive_enter_usec),
                _ => self.world.changed_usec(&svc.name),
            },
            restart_count: containers.iter().map(|c| c.restart_count).sum::<u64>() + recoveries,
            cpu_percent: self.figures.service(&svc.name).cpu_percent,
            memory_bytes: self.figures.service(&svc.name).memory_bytes,
            compose_file: if svc.is_compose() {
                svc.compose_file.clone()
            } else {
                PathBuf::new()
            },
            containers,
            ready,
            kind: svc.kind.as_str(),
            description: svc.description.clone().unwrap_or_default(),
            category: svc.category.clone().unwrap_or_default(),
            required_for: svc.required_for.clone(),
        }
    }
}
