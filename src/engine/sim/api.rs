//! The simulated engine behind [`ContainerApi`]: what each Docker call
//! answers, read from and done to the engine's state in `mod.rs`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::stream::{self, BoxStream, StreamExt};
use tokio::sync::broadcast;

use super::{not_found, unavailable, End, Msg, Sim, ADDRESS};
use crate::engine::{
    ContainerApi, ContainerInfo, ContainerState, DiskUsage, EngineError, EngineEvent, EngineInfo,
    ImageRecord, NetworkRecord, ProjectContainer, ProjectMounts, ProjectVolume,
};

type Call<'a, T> = BoxFuture<'a, Result<T, EngineError>>;

impl ContainerApi for Sim {
    fn address(&self) -> String {
        ADDRESS.to_string()
    }

    fn api_version(&self) -> String {
        "1.41".to_string()
    }

    fn ping(&self) -> Call<'_, ()> {
        Box::pin(self.gate())
    }

    fn info(&self) -> Call<'_, EngineInfo> {
        Box::pin(async move {
            self.gate().await?;
            let st = self.lock();
            Ok(EngineInfo {
                version: "20.10.24-sim".to_string(),
                api_version: "1.41".to_string(),
                data_root: std::env::temp_dir().display().to_string(),
                containers: st.containers.len() as u64,
                running: st
                    .containers
                    .values()
                    .filter(|c| c.info.state == ContainerState::Running)
                    .count() as u64,
                cgroup_version: "2".to_string(),
                cgroup_driver: "none".to_string(),
            })
        })
    }

    fn list_containers<'a>(&'a self, project: Option<&'a str>) -> Call<'a, Vec<ContainerInfo>> {
        Box::pin(async move {
            self.gate().await?;
            Ok(Sim::snapshot(&self.lock(), project))
        })
    }

    fn publishing(&self, port: u16) -> Call<'_, Vec<String>> {
        Box::pin(async move {
            self.gate().await?;
            let st = self.lock();
            let mut out: Vec<String> = st
                .containers
                .values()
                .filter(|c| {
                    c.info.state == ContainerState::Running && c.ports.iter().any(|p| p.0 == port)
                })
                .map(|c| format!("{} (Compose project {})", c.info.name, c.info.project))
                .collect();
            out.sort();
            Ok(out)
        })
    }

    fn inspect<'a>(&'a self, id: &'a str) -> Call<'a, Option<ContainerInfo>> {
        Box::pin(async move {
            self.gate().await?;
            Ok(Sim::find(&self.lock(), id).map(|c| c.info.clone()))
        })
    }

    fn events(&self) -> BoxStream<'static, Result<EngineEvent, EngineError>> {
        if self.lock().down {
            return stream::iter([Err(unavailable())]).boxed();
        }
        let rx = self.bus.subscribe();
        stream::unfold(Some(rx), |rx| async move {
            let mut rx = rx?;
            match rx.recv().await {
                Ok(Msg::Event(ev)) => Some((Ok(ev), Some(rx))),
                Ok(Msg::Down) | Err(broadcast::error::RecvError::Closed) => {
                    Some((Err(unavailable()), None))
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    let e = EngineError::Api {
                        call: "events",
                        message: format!("the simulated event stream dropped {n} events"),
                        source: None,
                    };
                    Some((Err(e), None))
                }
            }
        })
        .boxed()
    }

    fn logs(
        &self,
        container_id: &str,
        tail: Option<usize>,
        _follow: bool,
    ) -> BoxStream<'static, Result<String, EngineError>> {
        let st = self.lock();
        let items: Vec<Result<String, EngineError>> = match Sim::find(&st, container_id) {
            _ if st.down => vec![Err(unavailable())],
            None => vec![Err(not_found("logs", container_id))],
            Some(c) => {
                let skip = tail.map_or(0, |t| c.logs.len().saturating_sub(t));
                c.logs.iter().skip(skip).cloned().map(Ok).collect()
            }
        };
        stream::iter(items).boxed()
    }

    fn stats_once<'a>(&'a self, _id: &'a str) -> Call<'a, serde_json::Value> {
        Box::pin(async move {
            Err(EngineError::Api {
                call: "stats",
                message: "the simulator has no resource figures".to_string(),
                source: None,
            })
        })
    }

    fn image_present<'a>(&'a self, image: &'a str) -> Call<'a, bool> {
        Box::pin(async move {
            self.gate().await?;
            Ok(Sim::image_id_for(&self.lock(), image).is_some())
        })
    }

    fn image_id<'a>(&'a self, image: &'a str) -> Call<'a, Option<String>> {
        Box::pin(async move {
            self.gate().await?;
            Ok(Sim::image_id_for(&self.lock(), image))
        })
    }

    fn start<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            let mut st = self.lock();
            let key = Sim::key(&st, id).ok_or_else(|| not_found("start container", id))?;
            self.start_ctr(&mut st, &key)
        })
    }

    fn stop<'a>(&'a self, id: &'a str, _timeout: Duration) -> Call<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            let mut st = self.lock();
            let key = Sim::key(&st, id).ok_or_else(|| not_found("stop container", id))?;
            self.end(&mut st, &key, End::Stop);
            Ok(())
        })
    }

    fn exec<'a>(
        &'a self,
        container_id: &'a str,
        _argv: &'a [String],
        _timeout: Duration,
    ) -> Call<'a, i64> {
        Box::pin(async move {
            self.gate().await?;
            let st = self.lock();
            let c = Sim::find(&st, container_id)
                .ok_or_else(|| not_found("exec create", container_id))?;
            if c.info.state != ContainerState::Running {
                return Err(EngineError::Api {
                    call: "exec create",
                    message: format!("container {} is not running", c.info.id),
                    source: None,
                });
            }
            // A command probe fails while the container is said unhealthy.
            Ok(i64::from(c.info.health.as_deref() == Some("unhealthy")))
        })
    }

    fn compose_containers<'a>(
        &'a self,
        project: Option<&'a str>,
    ) -> Call<'a, Vec<ProjectContainer>> {
        Box::pin(async move {
            self.gate().await?;
            Ok(Sim::snapshot(&self.lock(), project)
                .into_iter()
                .map(|c| ProjectContainer {
                    running: c.state == ContainerState::Running,
                    id: c.id,
                    name: c.name,
                    project: c.project,
                    reference: c.image,
                    image_id: c.image_id,
                })
                .collect())
        })
    }

    fn disk_usage(&self) -> Call<'_, DiskUsage> {
        Box::pin(async move {
            self.gate().await?;
            let st = self.lock();
            let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (reference, id) in &st.images {
                by_id.entry(id.clone()).or_default().push(reference.clone());
            }
            Ok(DiskUsage {
                // Sizes are not simulated.
                images: by_id
                    .into_iter()
                    .map(|(id, tags)| ImageRecord {
                        id,
                        tags,
                        size: 0,
                        unique: 0,
                    })
                    .collect(),
                container_bytes: Default::default(),
            })
        })
    }

    fn remove_image<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            let mut st = self.lock();
            if st.containers.values().any(|c| c.info.image_id == id) {
                return Err(EngineError::Api {
                    call: "remove image",
                    message: format!(
                        "conflict: unable to delete {id} - image is being used by a container"
                    ),
                    source: None,
                });
            }
            let refs: Vec<String> = st
                .images
                .iter()
                .filter(|(_, v)| v.as_str() == id)
                .map(|(k, _)| k.clone())
                .collect();
            if refs.is_empty() {
                return Err(not_found("remove image", id));
            }
            for r in refs {
                st.images.remove(&r);
                st.removed.insert(r);
            }
            Ok(())
        })
    }

    fn remove_container<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            let mut st = self.lock();
            let key = Sim::key(&st, id).ok_or_else(|| not_found("remove container", id))?;
            if st.containers[&key].info.state == ContainerState::Running {
                return Err(EngineError::Api {
                    call: "remove container",
                    message: format!("cannot remove running container {id}: stop it first"),
                    source: None,
                });
            }
            self.remove(&mut st, &key);
            Ok(())
        })
    }

    fn project_networks<'a>(&'a self, project: &'a str) -> Call<'a, Vec<NetworkRecord>> {
        Box::pin(async move {
            self.gate().await?;
            let st = self.lock();
            Ok(st
                .networks
                .values()
                .filter(|n| n.project == project)
                .map(|n| NetworkRecord {
                    containers: st
                        .containers
                        .values()
                        .filter(|c| {
                            c.info.project == project && c.info.state == ContainerState::Running
                        })
                        .count(),
                    ..n.clone()
                })
                .collect())
        })
    }

    fn remove_network<'a>(&'a self, id: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            let mut st = self.lock();
            let before = st.networks.len();
            st.networks.retain(|_, n| n.id != id);
            if st.networks.len() == before {
                return Err(not_found("remove network", id));
            }
            Ok(())
        })
    }

    fn tag_image<'a>(&'a self, id: &'a str, reference: &'a str) -> Call<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            let mut st = self.lock();
            if !st.images.values().any(|v| v == id) {
                return Err(not_found("tag image", id));
            }
            st.images.insert(reference.to_string(), id.to_string());
            Ok(())
        })
    }

    fn project_mounts<'a>(&'a self, _project: &'a str) -> Call<'a, ProjectMounts> {
        Box::pin(async move {
            self.gate().await?;
            Ok(ProjectMounts::default())
        })
    }

    fn volume_archive(
        &self,
        volume: &ProjectVolume,
    ) -> BoxStream<'static, Result<Bytes, EngineError>> {
        let e = EngineError::Api {
            call: "archive a volume",
            message: format!("volume {} is not simulated", volume.name),
            source: None,
        };
        stream::iter([Err(e)]).boxed()
    }

    fn fresh_volume<'a>(
        &'a self,
        _project: &'a str,
        _name: &'a str,
        _driver: &'a str,
        _labels: &'a std::collections::HashMap<String, String>,
    ) -> Call<'a, bool> {
        Box::pin(async move {
            self.gate().await?;
            Ok(false)
        })
    }

    fn fill_volume<'a>(
        &'a self,
        _name: &'a str,
        _image: &'a str,
        tar: BoxStream<'static, Bytes>,
    ) -> Call<'a, ()> {
        Box::pin(async move {
            self.gate().await?;
            tar.for_each(|_| std::future::ready(())).await;
            Ok(())
        })
    }

    fn remove_volume<'a>(&'a self, _name: &'a str) -> Call<'a, ()> {
        Box::pin(async move { self.gate().await })
    }
}
