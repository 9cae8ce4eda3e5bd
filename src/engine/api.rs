//! The seam between the core and the container engine.
//!
//! [`ContainerApi`] is every Docker call the core makes; [`Docker`] is the
//! cheap, clonable handle the core holds, a thin wrapper over one
//! implementation: bollard on the engine's socket (`docker.rs`, what a real
//! daemon uses) or the in-process simulator (`sim/`, `stackd --sim`).
//! The handle keeps the call sites as they were; the trait keeps the
//! implementations interchangeable.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::docker::Bollard;
use super::{
    ContainerInfo, DiskUsage, EngineError, EngineEvent, EngineInfo, NetworkRecord,
    ProjectContainer, ProjectMounts, ProjectVolume,
};

type Call<'a, T> = BoxFuture<'a, Result<T, EngineError>>;

/// What the core asks of a container engine. Every method is one Docker API
/// request (or a small, fixed group of them); the meaning of each is the
/// one documented on [`Docker`]'s method of the same name.
pub trait ContainerApi: Send + Sync + 'static {
    fn address(&self) -> String;
    fn api_version(&self) -> String;
    fn ping(&self) -> Call<'_, ()>;
    fn info(&self) -> Call<'_, EngineInfo>;
    fn list_containers<'a>(&'a self, project: Option<&'a str>) -> Call<'a, Vec<ContainerInfo>>;
    fn publishing(&self, port: u16) -> Call<'_, Vec<String>>;
    fn inspect<'a>(&'a self, id: &'a str) -> Call<'a, Option<ContainerInfo>>;
    fn events(&self) -> BoxStream<'static, Result<EngineEvent, EngineError>>;
    fn logs(
        &self,
        container_id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> BoxStream<'static, Result<String, EngineError>>;
    fn stats_once<'a>(&'a self, id: &'a str) -> Call<'a, serde_json::Value>;
    fn image_present<'a>(&'a self, image: &'a str) -> Call<'a, bool>;
    fn image_id<'a>(&'a self, image: &'a str) -> Call<'a, Option<String>>;
    fn start<'a>(&'a self, id: &'a str) -> Call<'a, ()>;
    fn stop<'a>(&'a self, id: &'a str, timeout: Duration) -> Call<'a, ()>;
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        argv: &'a [String],
        timeout: Duration,
    ) -> Call<'a, i64>;
    fn compose_containers<'a>(
        &'a self,
        project: Option<&'a str>,
    ) -> Call<'a, Vec<ProjectContainer>>;
    fn disk_usage(&self) -> Call<'_, DiskUsage>;
    fn remove_image<'a>(&'a self, id: &'a str) -> Call<'a, ()>;
    fn remove_container<'a>(&'a self, id: &'a str) -> Call<'a, ()>;
    fn project_networks<'a>(&'a self, project: &'a str) -> Call<'a, Vec<NetworkRecord>>;
    fn remove_network<'a>(&'a self, id: &'a str) -> Call<'a, ()>;
    fn tag_image<'a>(&'a self, id: &'a str, reference: &'a str) -> Call<'a, ()>;
    fn project_mounts<'a>(&'a self, project: &'a str) -> Call<'a, ProjectMounts>;
    fn volume_archive(
        &self,
        volume: &ProjectVolume,
    ) -> BoxStream<'static, Result<Bytes, EngineError>>;
    fn fresh_volume<'a>(
        &'a self,
        project: &'a str,
        name: &'a str,
        driver: &'a str,
        labels: &'a HashMap<String, String>,
    ) -> Call<'a, bool>;
    fn fill_volume<'a>(
        &'a self,
        name: &'a str,
        image: &'a str,
        tar: BoxStream<'static, Bytes>,
    ) -> Call<'a, ()>;
    fn remove_volume<'a>(&'a self, name: &'a str) -> Call<'a, ()>;
}

impl ContainerApi for Bollard {
    fn address(&self) -> String {
        Bollard::address(self).to_string()
    }
    fn api_version(&self) -> String {
        Bollard::api_version(self)
    }
    fn ping(&self) -> Call<'_, ()> {
        Box::pin(Bollard::ping(self))
    }
    fn info(&self) -> Call<'_, EngineInfo> {
        Box::pin(Bollard::info(self))
    }
    fn list_containers<'a>(&'a self, project: Option<&'a str>) -> Call<'a, Vec<ContainerInfo>> {
        Box::pin(Bollard::list_containers(self, project))
    }
    fn publishing(&self, port: u16) -> Call<'_, Vec<String>> {
        Box::pin(Bollard::publishing(self, port))
    }
    fn inspect<'a>(&'a self, id: &'a str) -> Call<'a, Option<ContainerInfo>> {
        Box::pin(Bollard::inspect(self, id))
    }
    fn events(&self) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        Bollard::events(self).boxed()
    }
    fn logs(
        &self,
        container_id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        Bollard::logs(self, container_id, tail, follow).boxed()
    }
    fn stats_once<'a>(&'a self, id: &'a str) -> Call<'a, serde_json::Value> {
        Box::pin(Bollard::stats_once(self, id))
    }
    fn image_present<'a>(&'a self, image: &'a str) -> Call<'a, bool> {
        Box::pin(Bollard::image_present(self, image))
    }
    fn image_id<'a>(&'a self, image: &'a str) -> Call<'a, Option<String>> {
        Box::pin(Bollard::image_id(self, image))
    }
    fn start<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(Bollard::start(self, id))
    }
    fn stop<'a>(&'a self, id: &'a str, timeout: Duration) -> Call<'a, ()> {
        Box::pin(Bollard::stop(self, id, timeout))
    }
    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        argv: &'a [String],
        timeout: Duration,
    ) -> Call<'a, i64> {
        Box::pin(Bollard::exec(self, container_id, argv, timeout))
    }
    fn compose_containers<'a>(
        &'a self,
        project: Option<&'a str>,
    ) -> Call<'a, Vec<ProjectContainer>> {
        Box::pin(Bollard::compose_containers(self, project))
    }
    fn disk_usage(&self) -> Call<'_, DiskUsage> {
        Box::pin(Bollard::disk_usage(self))
    }
    fn remove_image<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(Bollard::remove_image(self, id))
    }
    fn remove_container<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(Bollard::remove_container(self, id))
    }
    fn project_networks<'a>(&'a self, project: &'a str) -> Call<'a, Vec<NetworkRecord>> {
        Box::pin(Bollard::project_networks(self, project))
    }
    fn remove_network<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(Bollard::remove_network(self, id))
    }
    fn tag_image<'a>(&'a self, id: &'a str, reference: &'a str) -> Call<'a, ()> {
        Box::pin(Bollard::tag_image(self, id, reference))
    }
    fn project_mounts<'a>(&'a self, project: &'a str) -> Call<'a, ProjectMounts> {
        Box::pin(Bollard::project_mounts(self, project))
    }
    fn volume_archive(
        &self,
        volume: &ProjectVolume,
    ) -> BoxStream<'static, Result<Bytes, EngineError>> {
        Bollard::volume_archive(self, volume)
    }
    fn fresh_volume<'a>(
        &'a self,
        project: &'a str,
        name: &'a str,
        driver: &'a str,
        labels: &'a HashMap<String, String>,
    ) -> Call<'a, bool> {
        Box::pin(Bollard::fresh_volume(self, project, name, driver, labels))
    }
    fn fill_volume<'a>(
        &'a self,
        name: &'a str,
        image: &'a str,
        tar: BoxStream<'static, Bytes>,
    ) -> Call<'a, ()> {
        Box::pin(Bollard::fill_volume(self, name, image, tar))
    }
    fn remove_volume<'a>(&'a self, name: &'a str) -> Call<'a, ()> {
        Box::pin(Bollard::remove_volume(self, name))
    }
}

/// The core's handle on the container engine: one [`ContainerApi`], shared.
#[derive(Clone)]
pub struct Docker {
    api: Arc<dyn ContainerApi>,
}

impl Docker {
    /// A handle on any implementation (the simulator's, a test's).
    pub fn over(api: Arc<dyn ContainerApi>) -> Docker {
        Docker { api }
    }

    /// Connects to Docker at `DOCKER_HOST` (default
    /// `unix:///var/run/docker.sock`), agreeing on an API version with it.
    /// The core connects through its [`super::Engine`], which may be the
    /// simulator instead.
    pub async fn connect() -> Result<Docker, EngineError> {
        Ok(Docker::over(Arc::new(Bollard::connect().await?)))
    }

    /// Connects to `address` (`unix:///path` or `tcp://host:port`) and agrees
    /// on an API version: the lower of bollard's and the engine's, so both
    /// API 1.41 engines and current ones work.
    pub async fn connect_to(address: &str) -> Result<Docker, EngineError> {
        Ok(Docker::over(Arc::new(Bollard::connect_to(address).await?)))
    }

    /// The address this connection uses, as given.
    pub fn address(&self) -> String {
        self.api.address()
    }

    /// The API version this client speaks after negotiation, e.g. "1.41".
    pub fn api_version(&self) -> String {
        self.api.api_version()
    }

    pub async fn ping(&self) -> Result<(), EngineError> {
        self.api.ping().await
    }

    pub async fn info(&self) -> Result<EngineInfo, EngineError> {
        self.api.info().await
    }

    /// Every container (running or not) that belongs to a Compose project,
    /// or to `project` only. Containers that vanish while being listed are
    /// left out.
    pub async fn list_containers(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<ContainerInfo>, EngineError> {
        self.api.list_containers(project).await
    }

    /// Running containers (any, not only Compose's) that publish TCP host
    /// `port`: "name" or "name (Compose project P)", sorted.
    pub async fn publishing(&self, port: u16) -> Result<Vec<String>, EngineError> {
        self.api.publishing(port).await
    }

    /// One container by id or name; None when it does not exist (any more).
    pub async fn inspect(&self, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        self.api.inspect(id).await
    }

    /// Container events of Compose projects, as they happen. The stream ends
    /// with an error item when the connection drops; the caller reconnects
    /// and resyncs.
    pub fn events(&self) -> impl Stream<Item = Result<EngineEvent, EngineError>> + Send + 'static {
        self.api.events()
    }

    /// A container's output (stdout and stderr, without timestamps), one
    /// item per line. `tail` limits to the last lines; `follow` keeps the
    /// stream open while the container runs.
    pub fn logs(
        &self,
        container_id: &str,
        tail: Option<usize>,
        follow: bool,
    ) -> impl Stream<Item = Result<String, EngineError>> + Send + 'static {
        self.api.logs(container_id, tail, follow)
    }

    /// One stats reading of a container through the engine API (one-shot,
    /// not streamed), as Docker's JSON. stackd itself reads cgroups
    /// (`resources::ContainerSampler`); this is for comparing the two.
    pub async fn stats_once(&self, id: &str) -> Result<serde_json::Value, EngineError> {
        self.api.stats_once(id).await
    }

    /// Whether `image` (name:tag, name@digest or id) exists locally.
    pub async fn image_present(&self, image: &str) -> Result<bool, EngineError> {
        self.api.image_present(image).await
    }

    /// The id (`sha256:...`) of the local image `image` (name:tag,
    /// name@digest or id); None when it is not present.
    pub async fn image_id(&self, image: &str) -> Result<Option<String>, EngineError> {
        self.api.image_id(image).await
    }

    /// Starts an existing container (`docker start`). Starting one that
    /// runs already is not an error.
    pub async fn start(&self, id: &str) -> Result<(), EngineError> {
        self.api.start(id).await
    }

    /// Stops a container (`docker stop -t timeout`): SIGTERM (or its
    /// `stop_signal`), SIGKILL after `timeout`. Stopping a stopped one is
    /// not an error.
    pub async fn stop(&self, id: &str, timeout: Duration) -> Result<(), EngineError> {
        self.api.stop(id, timeout).await
    }

    /// Runs `argv` inside a running container (`docker exec`) and returns
    /// its exit code. When `timeout` passes first the call fails; the
    /// command may go on running in the container.
    pub async fn exec(
        &self,
        container_id: &str,
        argv: &[String],
        timeout: Duration,
    ) -> Result<i64, EngineError> {
        self.api.exec(container_id, argv, timeout).await
    }

    /// Every container of every Compose project (or of `project` only),
    /// running or not, with the image reference and id each was created
    /// from.
    pub async fn compose_containers(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<ProjectContainer>, EngineError> {
        self.api.compose_containers(project).await
    }

    /// Images and container sizes, as `docker system df` computes them.
    pub async fn disk_usage(&self) -> Result<DiskUsage, EngineError> {
        self.api.disk_usage().await
    }

    /// Removes an image by id, never forced.
    pub async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        self.api.remove_image(id).await
    }

    /// Removes a stopped container, never its volumes.
    pub async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.api.remove_container(id).await
    }

    /// The networks Compose created for `project`.
    pub async fn project_networks(&self, project: &str) -> Result<Vec<NetworkRecord>, EngineError> {
        self.api.project_networks(project).await
    }

    pub async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        self.api.remove_network(id).await
    }

    /// Tags image `id` as `reference` (`docker tag`).
    pub async fn tag_image(&self, id: &str, reference: &str) -> Result<(), EngineError> {
        self.api.tag_image(id, reference).await
    }

    /// The mounts of every container (running or not) of `project`.
    pub async fn project_mounts(&self, project: &str) -> Result<ProjectMounts, EngineError> {
        self.api.project_mounts(project).await
    }

    /// The content of `volume` as a tar stream (entries relative to the
    /// volume's root), read through its (stopped) container.
    pub fn volume_archive(
        &self,
        volume: &ProjectVolume,
    ) -> BoxStream<'static, Result<Bytes, EngineError>> {
        self.api.volume_archive(volume)
    }

    /// Makes an empty volume `name` with `labels` on this host for
    /// `project`, replacing a stale one; true when one was replaced.
    pub async fn fresh_volume(
        &self,
        project: &str,
        name: &str,
        driver: &str,
        labels: &HashMap<String, String>,
    ) -> Result<bool, EngineError> {
        self.api.fresh_volume(project, name, driver, labels).await
    }

    /// Extracts `tar` into volume `name` through a carrier container of
    /// `image`, removed after.
    pub async fn fill_volume(
        &self,
        name: &str,
        image: &str,
        tar: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<(), EngineError> {
        self.api.fill_volume(name, image, tar.boxed()).await
    }

    /// Removes volume `name`.
    pub async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.api.remove_volume(name).await
    }
}
