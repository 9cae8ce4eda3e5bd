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

mod convert;
mod types;
use convert::*;
pub use types::{ContainerInfo, ContainerState, EngineEvent, EngineInfo};

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
        // The request goes out when the stream is first polled, which may
        // be after the caller's resync (or, in a test, after the `up` whose
        // events it waits for). Asking for the events since this call makes
        // the stream start here, so nothing falls in between: Docker
        // replays what came since from its buffer. Docker's clock is this
        // machine's.
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| format!("{}.{:09}", d.as_secs(), d.subsec_nanos()))
            .ok();
        let options = EventsOptions::<String> {
            since,
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

#[cfg(test)]
mod tests;
