//! What the engine reports, in the core's terms: the engine, a container
//! of a Compose project and its state, an event.

/// What `info` reports about the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// Engine version, e.g. "20.10.24".
    pub version: String,
    /// The engine's own API version, e.g. "1.41" (see [`Docker::api_version`]
    /// for the version this client speaks).
    pub api_version: String,
    pub data_root: String,
    pub containers: u64,
    pub running: u64,
    /// "1" or "2".
    pub cgroup_version: String,
    /// "cgroupfs", "systemd" or "none".
    pub cgroup_driver: String,
}

/// One container of a Compose project, as inspected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    /// Without the leading '/'.
    pub name: String,
    pub project: String,
    pub service: String,
    pub number: Option<u32>,
    pub oneoff: bool,
    /// The image as the container was created from it (name, not id).
    pub image: String,
    /// The id of the image the container runs (`sha256:...`).
    pub image_id: String,
    /// Compose's `com.docker.compose.config-hash` label, if any.
    pub config_hash: Option<String>,
    pub state: ContainerState,
    /// Docker's human status, e.g. "Up 3 minutes (healthy)".
    pub status: String,
    /// Set once the container has run and stopped.
    pub exit_code: Option<i64>,
    pub oom_killed: bool,
    pub restart_count: u64,
    /// "no", "always", "unless-stopped" or "on-failure".
    pub restart_policy: String,
    /// The memory limit Docker enforces (`mem_limit`), if any.
    pub memory_limit: Option<u64>,
    /// "starting", "healthy" or "unhealthy"; None without a healthcheck.
    pub health: Option<String>,
    pub started_at_usec: Option<u64>,
    pub finished_at_usec: Option<u64>,
    pub pid: Option<u32>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ContainerState {
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
    Unknown,
}

impl ContainerState {
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Paused => "paused",
            ContainerState::Restarting => "restarting",
            ContainerState::Removing => "removing",
            ContainerState::Exited => "exited",
            ContainerState::Dead => "dead",
            ContainerState::Unknown => "unknown",
        }
    }

    /// Parses Docker's lower-case state word; anything else is `Unknown`.
    pub fn parse(s: &str) -> ContainerState {
        match s {
            "created" => ContainerState::Created,
            "running" => ContainerState::Running,
            "paused" => ContainerState::Paused,
            "restarting" => ContainerState::Restarting,
            "removing" => ContainerState::Removing,
            "exited" => ContainerState::Exited,
            "dead" => ContainerState::Dead,
            _ => ContainerState::Unknown,
        }
    }
}

impl std::fmt::Display for ContainerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A container event of a Compose project.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineEvent {
    pub project: String,
    pub service: String,
    pub container_id: String,
    pub container_name: String,
    /// "create", "start", "die", "oom", "kill", "stop", "destroy",
    /// "health_status", "exec_start", ...
    pub action: String,
    /// What followed ": " in Docker's action, e.g. "healthy" for
    /// "health_status: healthy".
    pub detail: Option<String>,
    /// Set on "die".
    pub exit_code: Option<i64>,
    pub time_usec: u64,
}
