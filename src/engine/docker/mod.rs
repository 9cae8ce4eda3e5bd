//! The Docker engine through bollard: connection, containers of Compose
//! projects, their events and logs.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bollard::container::{
    InspectContainerOptions, ListContainersOptions, LogOutput, LogsOptions, StartContainerOptions,
    StatsOptions, StopContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::models::{ContainerInspectResponse, EventMessage, EventMessageTypeEnum};
use bollard::system::EventsOptions;
use futures_util::stream::{self, BoxStream, Stream, StreamExt};

use super::{BoxError, EngineError};

/// The label Compose (v1 and v2) puts on every container of a project.
pub const PROJECT_LABEL: &str = "com.docker.compose.project";
const SERVICE_LABEL: &str = "com.docker.compose.service";
const NUMBER_LABEL: &str = "com.docker.compose.container-number";
const ONEOFF_LABEL: &str = "com.docker.compose.oneoff";
/// The hash of the service's configuration Compose (v1 and v2) put on the
/// container when it created it; a different hash means `up` recreates it.
const CONFIG_HASH_LABEL: &str = "com.docker.compose.config-hash";

/// Used when `DOCKER_HOST` is unset or empty.
pub const DEFAULT_ADDRESS: &str = "unix:///var/run/docker.sock";

/// Per-request timeout given to bollard (it bounds the wait for response
/// headers, not long streams such as events or followed logs).
const REQUEST_TIMEOUT_SECS: u64 = 120;
/// How long `connect` waits for the engine's first answer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one Docker engine through bollard, with the API version
/// already agreed: the real [`ContainerApi`](super::ContainerApi) behind
/// [`Docker`](super::Docker).
#[derive(Clone)]
pub(crate) struct Bollard {
    pub(super) inner: bollard::Docker,
    address: String,
}

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

impl Bollard {
    /// Connects to `DOCKER_HOST` (default `unix:///var/run/docker.sock`) and
    /// agrees on an API version with the engine.
    pub(crate) async fn connect() -> Result<Bollard, EngineError> {
        let address = std::env::var("DOCKER_HOST")
            .ok()
            .filter(|a| !a.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_ADDRESS.to_string());
        Bollard::connect_to(&address).await
    }

    /// Connects to `address` (`unix:///path` or `tcp://host:port`) and agrees
    /// on an API version: the lower of bollard's and the engine's, so both
    /// API 1.41 engines and current ones work.
    pub(crate) async fn connect_to(address: &str) -> Result<Bollard, EngineError> {
        let address = address.trim();
        let unavailable = |reason: String, source: Option<BollardError>| EngineError::Unavailable {
            address: address.to_string(),
            reason,
            source: source.map(|e| Box::new(e) as BoxError),
        };
        let client = if let Some(path) = address.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(EngineError::BadAddress(address.to_string()));
            }
            bollard::Docker::connect_with_unix(
                path,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| unavailable(describe_transport_error(&e), Some(e)))?
        } else if address.starts_with("tcp://") || address.starts_with("http://") {
            bollard::Docker::connect_with_http(
                address,
                REQUEST_TIMEOUT_SECS,
                bollard::API_DEFAULT_VERSION,
            )
            .map_err(|e| unavailable(e.to_string(), Some(e)))?
        } else {
            return Err(EngineError::BadAddress(address.to_string()));
        };
        let inner = match tokio::time::timeout(CONNECT_TIMEOUT, client.negotiate_version()).await {
            Ok(Ok(inner)) => inner,
            Ok(Err(e)) => return Err(unavailable(describe_transport_error(&e), Some(e))),
            Err(_) => {
                return Err(unavailable(
                    format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                    None,
                ))
            }
        };
        tracing::debug!(address, api = %inner.client_version(), "connected to Docker");
        Ok(Bollard {
            inner,
            address: address.to_string(),
        })
    }

    /// The address this connection uses, as given.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// The API version this client speaks after negotiation, e.g. "1.41".
    pub(crate) fn api_version(&self) -> String {
        self.inner.client_version().to_string()
    }

    pub(crate) async fn ping(&self) -> Result<(), EngineError> {
        self.inner
            .ping()
            .await
            .map(|_| ())
            .map_err(|e| self.error("ping", e))
    }

    pub(crate) async fn info(&self) -> Result<EngineInfo, EngineError> {
        let info = self.inner.info().await.map_err(|e| self.error("info", e))?;
        let version = self
            .inner
            .version()
            .await
            .map_err(|e| self.error("version", e))?;
        Ok(EngineInfo {
            version: version.version.or(info.server_version).unwrap_or_default(),
            api_version: version.api_version.unwrap_or_default(),
            data_root: info.docker_root_dir.unwrap_or_default(),
            containers: non_negative(info.containers),
            running: non_negative(info.containers_running),
            cgroup_version: info
                .cgroup_version
                .map(|v| v.to_string())
                // Engines before 20.10 do not report it; they only knew v1.
                .unwrap_or_else(|| "1".to_string()),
            cgroup_driver: info
                .cgroup_driver
                .map(|d| d.to_string())
                .unwrap_or_default(),
        })
    }

    /// The list entries of every container (running or not) of every
    /// Compose project, or of `project` only.
    pub(crate) async fn project_summaries(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<bollard::models::ContainerSummary>, EngineError> {
        let label = match project {
            Some(p) => format!("{PROJECT_LABEL}={p}"),
            None => PROJECT_LABEL.to_string(),
        };
        self.inner
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                filters: HashMap::from([("label".to_string(), vec![label])]),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error("list containers", e))
    }

    /// Every container (running or not) that belongs to a Compose project,
    /// or to `project` only. Containers that vanish while being listed are
    /// left out.
    pub(crate) async fn list_containers(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<ContainerInfo>, EngineError> {
        let summaries = self.project_summaries(project).await?;
        // Inspect a few at a time: a resync of a busy host is one list call
        // and many inspects, each a round trip to the engine.
        let inspected: Vec<_> = futures_util::stream::iter(summaries.into_iter().filter_map(|s| {
            let id = s.id?;
            Some((id, s.status.unwrap_or_default()))
        }))
        .map(|(id, status)| async move { (self.inspect_raw(&id).await, status) })
        .buffered(8)
        .collect()
        .await;
        let mut out = Vec::with_capacity(inspected.len());
        for (info, status) in inspected {
            if let Some(info) = info? {
                out.push(container_info(info, status));
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Running containers (any, not only Compose's) that publish TCP host
    /// `port`: "name" or "name (Compose project P)", sorted.
    pub(crate) async fn publishing(&self, port: u16) -> Result<Vec<String>, EngineError> {
        let summaries = self
            .inner
            .list_containers(Some(ListContainersOptions::<String> {
                all: false,
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error("list containers", e))?;
        let mut out: Vec<String> = summaries
            .into_iter()
            .filter(|s| {
                s.ports.iter().flatten().any(|p| {
                    p.public_port == Some(port)
                        && p.typ != Some(bollard::models::PortTypeEnum::UDP)
                        && p.typ != Some(bollard::models::PortTypeEnum::SCTP)
                })
            })
            .filter_map(|s| {
                let name = s.names?.first()?.trim_start_matches('/').to_string();
                let project = s.labels.and_then(|mut l| l.remove(PROJECT_LABEL));
                Some(match project {
                    Some(p) => format!("{name} (Compose project {p})"),
                    None => name,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// One container by id or name; None when it does not exist (any more).
    pub(crate) async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let Some(info) = self.inspect_raw(id).await? else {
            return Ok(None);
        };
        // Only the list call carries Docker's human status ("Up 2 minutes").
        let full_id = info.id.clone().unwrap_or_else(|| id.to_string());
        let status = self
            .inner
            .list_containers(Some(ListContainersOptions::<String> {
                all: true,
                filters: HashMap::from([("id".to_string(), vec![full_id])]),
                ..Default::default()
            }))
            .await
            .map_err(|e| self.error("list containers", e))?
            .into_iter()
            .find_map(|s| s.status)
            .unwrap_or_default();
        Ok(Some(container_info(info, status)))
    }

    pub(super) async fn inspect_raw(
        &self,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, EngineError> {
        match self
            .inner
            .inspect_container(id, None::<InspectContainerOptions>)
            .await
        {
            Ok(info) => Ok(Some(info)),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.error("inspect container", e)),
        }
    }

    /// Container events of Compose projects, as they happen. The stream ends
    /// with an error item when the connection drops; the caller reconnects
    /// and resyncs.
    pub(crate) fn events(
        &self,
    ) -> impl Stream<Item = Result<EngineEvent, EngineError>> + Send + 'static {
        let options = EventsOptions::<String> {
            since: None,
            until: None,
            filters: HashMap::from([
                ("type".to_string(), vec!["container".to_string()]),
                ("label".to_string(), vec![PROJECT_LABEL.to_string()]),
            ]),
        };
        let this = self.clone();
        self.inner.events(Some(options)).filter_map(move |item| {
            let out = match item {
                Ok(msg) => engine_event(msg).map(Ok),
                Err(e) => Some(Err(this.error("events", e))),
            };
            std::future::ready(out)
        })
    }

    /// A container's output (stdout and stderr, without timestamps), one
    /// item per line. `tail` limits to the last lines; `follow` keeps the
    /// stream open while the container runs.
    pub(crate) fn logs(
        &self,
        container_id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> impl Stream<Item = Result<String, EngineError>> + Send + 'static {
        let options = LogsOptions::<String> {
            follow,
            stdout: true,
            stderr: true,
            since: 0,
            until: 0,
            timestamps: false,
            tail: tail.map_or_else(|| "all".to_string(), |n| n.to_string()),
        };
        let this = self.clone();
        let raw: BoxStream<'static, Result<LogOutput, BollardError>> =
            self.inner.logs(container_id, Some(options)).boxed();
        let state = LineState {
            raw,
            bufs: [Vec::new(), Vec::new(), Vec::new()],
            ready: VecDeque::new(),
            done: false,
        };
        stream::unfold((state, this), |(mut st, this)| async move {
            loop {
                if let Some(item) = st.ready.pop_front() {
                    return Some((item.map_err(|e| this.error("logs", e)), (st, this)));
                }
                if st.done {
                    return None;
                }
                match st.raw.next().await {
                    Some(Ok(chunk)) => st.push(chunk),
                    Some(Err(e)) => {
                        st.flush();
                        st.ready.push_back(Err(e));
                        st.done = true;
                    }
                    None => {
                        st.flush();
                        st.done = true;
                    }
                }
            }
        })
    }

    /// One stats reading of a container through the engine API (one-shot,
    /// not streamed), as Docker's JSON. stackd itself reads cgroups
    /// (`resources::ContainerSampler`); this is for comparing the two.
    pub(crate) async fn stats_once(&self, id: &str) -> Result<serde_json::Value, EngineError> {
        let options = StatsOptions {
            stream: false,
            one_shot: true,
        };
        let mut stream = self.inner.stats(id, Some(options)).boxed();
        match stream.next().await {
            Some(Ok(stats)) => serde_json::to_value(stats).map_err(|e| EngineError::Api {
                call: "stats",
                message: e.to_string(),
                source: Some(Box::new(e)),
            }),
            Some(Err(e)) => Err(self.error("stats", e)),
            None => Err(EngineError::Api {
                call: "stats",
                message: "the engine closed the stats stream without a reading".to_string(),
                source: None,
            }),
        }
    }

    /// Whether `image` (name:tag, name@digest or id) exists locally.
    pub(crate) async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        match self.inner.inspect_image(image).await {
            Ok(_) => Ok(true),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(false),
            Err(e) => Err(self.error("inspect image", e)),
        }
    }

    /// The id (`sha256:...`) of the local image `image` (name:tag,
    /// name@digest or id); None when it is not present.
    pub(crate) async fn image_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        match self.inner.inspect_image(image).await {
            Ok(i) => Ok(i.id),
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(None),
            Err(e) => Err(self.error("inspect image", e)),
        }
    }

    /// Starts an existing container (`docker start`). Starting one that
    /// runs already is not an error.
    pub(crate) async fn start(&self, id: &str) -> Result<(), EngineError> {
        match self
            .inner
            .start_container(id, None::<StartContainerOptions<String>>)
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.error("start container", e)),
        }
    }

    /// Stops a container (`docker stop -t timeout`): SIGTERM (or its
    /// `stop_signal`), SIGKILL after `timeout`. Stopping a stopped one is
    /// not an error.
    pub(crate) async fn stop(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        let t = i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX);
        match self
            .inner
            .stop_container(id, Some(StopContainerOptions { t }))
            .await
        {
            Ok(()) => Ok(()),
            Err(BollardError::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(self.error("stop container", e)),
        }
    }

    /// Runs `argv` inside a running container (`docker exec`) and returns
    /// its exit code. Output is read and dropped. When `timeout` passes
    /// first the call fails; Docker has no way to kill an exec, so the
    /// command may go on running in the container.
    pub(crate) async fn exec(
        &self,
        container_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<i64, EngineError> {
        let run = async {
            let created = self
                .inner
                .create_exec(
                    container_id,
                    CreateExecOptions::<String> {
                        cmd: Some(argv.to_vec()),
                        attach_stdout: Some(true),
                        attach_stderr: Some(true),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| self.error("exec create", e))?;
            let started = self
                .inner
                .start_exec(
                    &created.id,
                    Some(StartExecOptions {
                        detach: false,
                        ..Default::default()
                    }),
                )
                .await
                .map_err(|e| self.error("exec start", e))?;
            if let StartExecResults::Attached { mut output, .. } = started {
                while let Some(item) = output.next().await {
                    item.map_err(|e| self.error("exec output", e))?;
                }
            }
            // The output ends when the process does; the exit code may
            // take a moment to be recorded.
            for _ in 0..50 {
                let inspected = self
                    .inner
                    .inspect_exec(&created.id)
                    .await
                    .map_err(|e| self.error("exec inspect", e))?;
                if inspected.running != Some(true) {
                    if let Some(code) = inspected.exit_code {
                        return Ok(code);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(EngineError::Api {
                call: "exec inspect",
                message: "the command ended but Docker reported no exit code".to_string(),
                source: None,
            })
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(EngineError::Api {
                call: "exec",
                message: format!(
                    "{:?} in container {container_id} did not finish within {timeout:?}",
                    argv.join(" ")
                ),
                source: None,
            }),
        }
    }

    /// Sorts a bollard error into "engine unreachable" and "request failed".
    pub(super) fn error(&self, call: &'static str, e: BollardError) -> EngineError {
        match e {
            BollardError::DockerResponseServerError {
                status_code: 404,
                message,
            } => EngineError::NotFound {
                call,
                what: message,
            },
            BollardError::DockerResponseServerError { message, .. } => EngineError::Api {
                call,
                message,
                source: None,
            },
            e if is_transport_error(&e) => EngineError::Unavailable {
                address: self.address.clone(),
                reason: describe_transport_error(&e),
                source: Some(Box::new(e)),
            },
            e => EngineError::Api {
                call,
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
        }
    }
}

fn is_transport_error(e: &BollardError) -> bool {
    matches!(
        e,
        BollardError::HyperResponseError { .. }
            | BollardError::HyperLegacyError { .. }
            | BollardError::IOError { .. }
            | BollardError::RequestTimeoutError
            | BollardError::SocketNotFoundError(_)
    )
}

/// A short reason: the innermost cause ("Connection refused (os error
/// 111)") rather than hyper's layers of wrapping.
fn describe_transport_error(e: &BollardError) -> String {
    if let BollardError::SocketNotFoundError(path) = e {
        return format!("no socket at {path}");
    }
    if let BollardError::RequestTimeoutError = e {
        return "no answer in time".to_string();
    }
    let mut innermost: &dyn std::error::Error = e;
    while let Some(s) = innermost.source() {
        innermost = s;
    }
    innermost.to_string()
}

/// Splits log frames into lines, one buffer per stream so that partial
/// lines of stdout and stderr do not mix.
struct LineState {
    raw: BoxStream<'static, Result<LogOutput, BollardError>>,
    /// stdout, stderr, console (TTY) – stdin frames never carry output.
    bufs: [Vec<u8>; 3],
    ready: VecDeque<Result<String, BollardError>>,
    done: bool,
}

impl LineState {
    fn push(&mut self, chunk: LogOutput) {
        let (i, bytes) = match chunk {
            LogOutput::StdOut { message } => (0, message),
            LogOutput::StdErr { message } => (1, message),
            LogOutput::Console { message } => (2, message),
            LogOutput::StdIn { .. } => return,
        };
        let buf = &mut self.bufs[i];
        buf.extend_from_slice(&bytes);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            self.ready.push_back(Ok(line_text(&line)));
        }
    }

    fn flush(&mut self) {
        for buf in &mut self.bufs {
            if !buf.is_empty() {
                let line = std::mem::take(buf);
                self.ready.push_back(Ok(line_text(&line)));
            }
        }
    }
}

fn line_text(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    text.trim_end_matches(['\n', '\r']).to_string()
}

fn non_negative(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

fn container_info(info: ContainerInspectResponse, status: String) -> ContainerInfo {
    let labels = info
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default();
    let label = |k: &str| labels.get(k).cloned().unwrap_or_default();
    let state = info.state.unwrap_or_default();
    let container_state = state.status.map_or(ContainerState::Unknown, |s| {
        ContainerState::parse(s.as_ref())
    });
    let finished_at_usec = state
        .finished_at
        .as_deref()
        .and_then(crate::time::parse_rfc3339_usec);
    // Docker reports exit code 0 for containers that never ran; only a
    // container that has stopped has a meaningful one.
    let exit_code = match container_state {
        ContainerState::Exited | ContainerState::Dead => state.exit_code,
        _ if finished_at_usec.is_some() => state.exit_code,
        _ => None,
    };
    ContainerInfo {
        id: info.id.unwrap_or_default(),
        name: info
            .name
            .unwrap_or_default()
            .trim_start_matches('/')
            .to_string(),
        project: label(PROJECT_LABEL),
        service: label(SERVICE_LABEL),
        number: labels.get(NUMBER_LABEL).and_then(|n| n.parse().ok()),
        oneoff: labels.get(ONEOFF_LABEL).is_some_and(|v| v == "True"),
        image: info
            .config
            .as_ref()
            .and_then(|c| c.image.clone())
            .or(info.image.clone())
            .unwrap_or_default(),
        image_id: info.image.unwrap_or_default(),
        config_hash: labels.get(CONFIG_HASH_LABEL).cloned(),
        state: container_state,
        status,
        exit_code,
        oom_killed: state.oom_killed.unwrap_or(false),
        restart_count: non_negative(info.restart_count),
        memory_limit: info
            .host_config
            .as_ref()
            .and_then(|h| h.memory)
            .and_then(|m| u64::try_from(m).ok())
            .filter(|m| *m > 0),
        restart_policy: info
            .host_config
            .and_then(|h| h.restart_policy)
            .and_then(|p| p.name)
            .map(|n| n.to_string())
            .filter(|n| !n.is_empty())
            // Compose v1 leaves the name empty, which Docker treats as "no".
            .unwrap_or_else(|| "no".to_string()),
        health: state
            .health
            .and_then(|h| h.status)
            .map(|s| s.to_string())
            .filter(|s| matches!(s.as_str(), "starting" | "healthy" | "unhealthy")),
        started_at_usec: state
            .started_at
            .as_deref()
            .and_then(crate::time::parse_rfc3339_usec),
        finished_at_usec,
        pid: state
            .pid
            .and_then(|p| u32::try_from(p).ok())
            .filter(|p| *p != 0),
        error: state.error.filter(|e| !e.is_empty()),
    }
}

/// Turns a Docker event into ours; None for events that are not about a
/// Compose project's container.
fn engine_event(msg: EventMessage) -> Option<EngineEvent> {
    if msg
        .typ
        .is_some_and(|t| t != EventMessageTypeEnum::CONTAINER)
    {
        return None;
    }
    let actor = msg.actor?;
    let attrs = actor.attributes.unwrap_or_default();
    let project = attrs.get(PROJECT_LABEL)?.clone();
    let raw_action = msg.action.unwrap_or_default();
    let (action, detail) = match raw_action.split_once(": ") {
        Some((a, d)) => (a.trim().to_string(), Some(d.trim().to_string())),
        None => (raw_action.trim().to_string(), None),
    };
    let time_usec = match (msg.time_nano, msg.time) {
        (Some(ns), _) if ns > 0 => (ns / 1_000) as u64,
        (_, Some(s)) if s > 0 => (s as u64) * 1_000_000,
        _ => 0,
    };
    Some(EngineEvent {
        project,
        service: attrs.get(SERVICE_LABEL).cloned().unwrap_or_default(),
        container_id: actor.id.unwrap_or_default(),
        container_name: attrs.get("name").cloned().unwrap_or_default(),
        action,
        detail,
        exit_code: attrs.get("exitCode").and_then(|c| c.parse().ok()),
        time_usec,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use bollard::models::EventActor;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::engine::testing::{self, Project};
    use crate::engine::Docker;

    #[test]
    fn converts_events() {
        let attrs = HashMap::from([
            (PROJECT_LABEL.to_string(), "web".to_string()),
            (SERVICE_LABEL.to_string(), "app".to_string()),
            ("name".to_string(), "web-app-1".to_string()),
            ("exitCode".to_string(), "137".to_string()),
        ]);
        let msg = |action: &str, attrs: HashMap<String, String>| EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_string()),
            actor: Some(EventActor {
                id: Some("abc".to_string()),
                attributes: Some(attrs),
            }),
            scope: None,
            time: Some(1_700_000_000),
            time_nano: Some(1_700_000_000_123_456_789),
        };
        let die = engine_event(msg("die", attrs.clone())).unwrap();
        assert_eq!(die.action, "die");
        assert_eq!(die.exit_code, Some(137));
        assert_eq!(die.container_name, "web-app-1");
        assert_eq!(die.time_usec, 1_700_000_000_123_456);
        let health = engine_event(msg("health_status: healthy", attrs)).unwrap();
        assert_eq!(health.action, "health_status");
        assert_eq!(health.detail.as_deref(), Some("healthy"));
        assert!(engine_event(msg("start", HashMap::new())).is_none());
    }

    #[tokio::test]
    async fn docker_connects_negotiates_and_reports_info() {
        let Some(docker) = testing::docker().await else {
            return;
        };
        docker.ping().await.unwrap();
        let info = docker.info().await.unwrap();
        assert!(!info.version.is_empty(), "{info:?}");
        assert!(info.api_version.starts_with("1."), "{info:?}");
        assert!(info.data_root.starts_with('/'), "{info:?}");
        assert!(
            matches!(info.cgroup_version.as_str(), "1" | "2"),
            "{info:?}"
        );
        assert!(!info.cgroup_driver.is_empty(), "{info:?}");
        assert!(info.running <= info.containers);
        // The agreed version is never newer than the engine's.
        let agreed: Vec<u32> = docker
            .api_version()
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        let engine: Vec<u32> = info
            .api_version
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect();
        assert!(agreed <= engine, "{agreed:?} > {engine:?}");
    }

    #[tokio::test]
    async fn unreachable_engine_fails_fast_and_names_the_address() {
        let started = Instant::now();
        let err = Docker::connect_to("unix:///nonexistent/docker.sock")
            .await
            .err()
            .expect("connect must fail");
        assert!(err.is_unavailable(), "{err}");
        assert!(
            err.to_string().contains("unix:///nonexistent/docker.sock"),
            "{err}"
        );

        // A socket file nobody listens on: connection refused.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.sock");
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let address = format!("unix://{}", path.display());
        let err = Bollard::connect_to(&address)
            .await
            .err()
            .expect("must fail");
        assert!(err.is_unavailable(), "{err}");
        assert!(err.to_string().contains(&address), "{err}");
        assert!(err.to_string().to_lowercase().contains("refused"), "{err}");

        let err = Docker::connect_to("tcp://127.0.0.1:1").await.err().unwrap();
        assert!(err.is_unavailable(), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));

        let err = Docker::connect_to("ssh://host").await.err().unwrap();
        assert!(matches!(err, EngineError::BadAddress(_)), "{err}");
    }

    #[tokio::test]
    async fn docker_images_and_gone_containers() {
        let Some(docker) = testing::docker().await else {
            return;
        };
        testing::test_image();
        assert!(docker.image_present(testing::test_image()).await.unwrap());
        assert!(!docker
            .image_present("stackd-test/not-there:0")
            .await
            .unwrap());
        assert_eq!(
            docker.inspect("stackdeng-no-such-container").await.unwrap(),
            None
        );
    }

    async fn up(compose: &crate::engine::Compose, project: &Project) {
        compose
            .run(
                &project.invocation(&["up", "-d"]),
                &|_| {},
                &CancellationToken::new(),
                Duration::from_secs(120),
            )
            .await
            .unwrap();
    }

    /// Project `name`, one service of the test image running `command` (a
    /// YAML list), up: the project (removed when dropped) and the id of its
    /// container.
    async fn running(
        docker: &Docker,
        compose: &crate::engine::Compose,
        name: &str,
        command: &str,
    ) -> (Project, String) {
        let image = testing::test_image();
        let project = Project::new(
            compose,
            name,
            &format!(
                "  main:\n    image: {image}\n    pull_policy: never\n    command: {command}\n    stop_signal: SIGKILL\n"
            ),
        );
        up(compose, &project).await;
        let id = docker.list_containers(Some(&project.name)).await.unwrap()[0]
            .id
            .clone();
        (project, id)
    }

    #[tokio::test]
    async fn docker_events_report_death_with_exit_code() {
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        let image = testing::test_image();
        let project = Project::new(
            &compose,
            "events",
            &format!(
                "  job:\n    image: {image}\n    pull_policy: never\n    command: [\"sh\", \"-c\", \"sleep 1; exit 3\"]\n"
            ),
        );
        let mut events = Box::pin(docker.events());
        up(&compose, &project).await;
        let died = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(ev) = events.next().await {
                let ev = ev.unwrap();
                if ev.project == project.name && ev.action == "die" {
                    return ev;
                }
            }
            panic!("event stream ended");
        })
        .await
        .expect("no die event within 60s");
        assert_eq!(died.service, "job");
        assert_eq!(died.exit_code, Some(3));
        assert!(died.time_usec > 1_600_000_000_000_000);

        let info = docker.inspect(&died.container_id).await.unwrap().unwrap();
        assert_eq!(info.state, ContainerState::Exited);
        assert_eq!(info.exit_code, Some(3));
        assert!(info.finished_at_usec >= info.started_at_usec);
        assert_eq!(info.pid, None);
        assert!(info.status.starts_with("Exited (3)"), "{}", info.status);
    }

    #[tokio::test]
    async fn docker_logs_return_what_the_container_printed() {
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        let (_project, id) = running(
            &docker,
            &compose,
            "logs",
            r#"["sh", "-c", "echo line one; echo line two >&2; echo line three; sleep 600"]"#,
        )
        .await;
        let mut lines = Vec::new();
        for _ in 0..50 {
            lines = docker
                .logs(&id, None, false)
                .map(|l| l.unwrap())
                .collect::<Vec<_>>()
                .await;
            if lines.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(lines.len(), 3, "{lines:?}");
        for want in ["line one", "line two", "line three"] {
            assert!(
                lines.iter().any(|l| l == want),
                "{want} missing in {lines:?}"
            );
        }
        let tail: Vec<String> = docker
            .logs(&id, Some(1), false)
            .map(|l| l.unwrap())
            .collect()
            .await;
        assert_eq!(tail.len(), 1, "{tail:?}");

        // follow keeps the stream open while the container runs.
        let mut follow = Box::pin(docker.logs(&id, Some(0), true));
        let pending = tokio::time::timeout(Duration::from_millis(300), follow.next()).await;
        assert!(pending.is_err(), "a followed log stream ended early");

        let gone: Vec<_> = docker.logs("stackdeng-nope", None, false).collect().await;
        assert!(
            matches!(gone.as_slice(), [Err(EngineError::NotFound { .. })]),
            "{gone:?}"
        );
    }

    #[tokio::test]
    async fn docker_exec_returns_the_exit_code() {
        let (Some(docker), Some(compose)) = (testing::docker().await, testing::compose().await)
        else {
            return;
        };
        let (_project, id) = running(&docker, &compose, "exec", r#"["sleep", "600"]"#).await;
        let argv = |s: &[&str]| s.iter().map(|a| a.to_string()).collect::<Vec<_>>();
        let t = Duration::from_secs(20);
        assert_eq!(docker.exec(&id, &argv(&["true"]), t).await.unwrap(), 0);
        assert_eq!(
            docker
                .exec(&id, &argv(&["sh", "-c", "echo out; exit 7"]), t)
                .await
                .unwrap(),
            7
        );
        let slow = docker
            .exec(&id, &argv(&["sleep", "5"]), Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(slow.to_string().contains("did not finish"), "{slow}");
        let gone = docker
            .exec("stackdeng-nope", &argv(&["true"]), t)
            .await
            .unwrap_err();
        assert!(matches!(gone, EngineError::NotFound { .. }), "{gone}");
    }
}
