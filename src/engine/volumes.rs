//! Named volumes that move with a service (`migrate --with-volumes`):
//! what a project mounts, its volumes' content as a tar stream read from
//! one of its own stopped containers (Docker's archive API, so no helper
//! image), and, on the host it moves to, the same volume created again and
//! filled through a stopped container that mounts it.
//!
//! Only volumes Compose made for the project (`com.docker.compose.volume`
//! label) are carried. Bind mounts and anonymous volumes are reported so
//! the caller can say they stay behind.

use std::collections::HashMap;

use bollard::container::{
    Config, CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    RemoveContainerOptions, UploadToContainerOptions,
};
use bollard::errors::Error as BollardError;
use bollard::models::{HostConfig, Mount, MountPointTypeEnum, MountTypeEnum};
use bollard::volume::{CreateVolumeOptions, RemoveVolumeOptions};
use bytes::Bytes;
use futures_util::stream::{BoxStream, Stream, StreamExt};

use super::docker::{Bollard, PROJECT_LABEL};
use super::EngineError;

/// The label Compose puts on the volumes it creates: the volume's key in
/// the Compose file.
pub const VOLUME_LABEL: &str = "com.docker.compose.volume";

/// Where the carrier container on the receiving host mounts the volume.
const CARRIER_PATH: &str = "/stackd-volume";

/// A named volume of a project, as the host it leaves knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectVolume {
    /// Docker's name (`<project>_<key>` unless the file names it).
    pub name: String,
    pub driver: String,
    pub labels: HashMap<String, String>,
    /// Its `driver_opts`: not carried (the receiving host makes the volume
    /// with the driver alone), named in the task log.
    pub options: HashMap<String, String>,
    /// A container of the project that mounts it, and where.
    pub container: String,
    pub destination: String,
    /// That container's image reference (`Config.Image`): what the
    /// receiving host creates its carrier container from.
    pub image: String,
}

/// What a project's containers mount.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectMounts {
    /// Volumes Compose created for the project: carried.
    pub volumes: Vec<ProjectVolume>,
    /// Everything else, described ("bind /srv/x on /x (container c)"):
    /// not carried.
    pub left: Vec<String>,
}

impl Bollard {
    /// The mounts of every container (running or not) of `project`.
    pub(crate) async fn project_mounts(&self, project: &str) -> Result<ProjectMounts, EngineError> {
        let mut out = ProjectMounts::default();
        let mut summaries = self.project_summaries(Some(project)).await?;
        summaries.sort_by(|a, b| a.names.cmp(&b.names));
        for s in summaries {
            let Some(id) = s.id else { continue };
            let Some(info) = self.inspect_raw(&id).await? else {
                continue;
            };
            let cname = info
                .name
                .as_deref()
                .unwrap_or(&id)
                .trim_start_matches('/')
                .to_string();
            let image = info
                .config
                .as_ref()
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            for m in info.mounts.unwrap_or_default() {
                let dest = m.destination.clone().unwrap_or_default();
                match (m.typ, m.name) {
                    (Some(MountPointTypeEnum::VOLUME), Some(vname)) => {
                        if out.volumes.iter().any(|v| v.name == vname) {
                            continue;
                        }
                        let vol = self
                            .inner
                            .inspect_volume(&vname)
                            .await
                            .map_err(|e| self.error("inspect volume", e))?;
                        if vol.labels.contains_key(VOLUME_LABEL) {
                            out.volumes.push(ProjectVolume {
                                name: vname,
                                driver: vol.driver,
                                labels: vol.labels,
                                options: vol.options,
                                container: id.clone(),
                                destination: dest,
                                image: image.clone(),
                            });
                        } else {
                            out.left.push(format!(
                                "anonymous volume {vname} on {dest} (container {cname})"
                            ));
                        }
                    }
                    (typ, _) => {
                        let kind = typ.map_or("mount".to_string(), |t| t.to_string());
                        let source = m.source.unwrap_or_default();
                        out.left
                            .push(format!("{kind} {source} on {dest} (container {cname})"));
                    }
                }
            }
        }
        Ok(out)
    }

    /// The content of `volume` as a tar stream (entries relative to the
    /// volume's root), read through its container, which should be
    /// stopped so that nothing writes while it is read.
    pub(crate) fn volume_archive(
        &self,
        volume: &ProjectVolume,
    ) -> BoxStream<'static, Result<Bytes, EngineError>> {
        let path = format!("{}/.", volume.destination.trim_end_matches('/'));
        let this = self.clone();
        self.inner
            .download_from_container(
                &volume.container,
                Some(DownloadFromContainerOptions { path }),
            )
            .map(move |r| r.map_err(|e| this.error("archive a volume", e)))
            .boxed()
    }

    /// Makes an empty volume `name` with `labels` on this host for
    /// `project`. One already there is stale (the service runs elsewhere):
    /// it is removed with the stopped containers of `project` that mount
    /// it; a running container, or another project's, keeps it, and the
    /// answer says which.
    pub(crate) async fn fresh_volume(
        &self,
        project: &str,
        name: &str,
        driver: &str,
        labels: &HashMap<String, String>,
    ) -> Result<bool, EngineError> {
        let replaced = match self.inner.inspect_volume(name).await {
            Ok(_) => {
                let users = self
                    .inner
                    .list_containers(Some(ListContainersOptions::<String> {
                        all: true,
                        filters: HashMap::from([("volume".to_string(), vec![name.to_string()])]),
                        ..Default::default()
                    }))
                    .await
                    .map_err(|e| self.error("list containers", e))?;
                for u in &users {
                    let cname = u
                        .names
                        .as_ref()
                        .and_then(|n| n.first())
                        .map_or("?", |n| n.trim_start_matches('/'));
                    let owner = u.labels.as_ref().and_then(|l| l.get(PROJECT_LABEL));
                    if u.state.as_deref() == Some("running")
                        || owner.map(String::as_str) != Some(project)
                    {
                        return Err(EngineError::Api {
                            call: "create volume",
                            message: format!(
                                "volume {name} exists here and container {cname} ({}) uses it; it is not replaced",
                                u.state.as_deref().unwrap_or("?")
                            ),
                            source: None,
                        });
                    }
                }
                for u in users {
                    let Some(id) = u.id else { continue };
                    self.inner
                        .remove_container(
                            &id,
                            Some(RemoveContainerOptions {
                                force: false,
                                v: false,
                                link: false,
                            }),
                        )
                        .await
                        .map_err(|e| self.error("remove container", e))?;
                }
                self.inner
                    .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
                    .await
                    .map_err(|e| self.error("remove volume", e))?;
                true
            }
            Err(BollardError::DockerResponseServerError {
                status_code: 404, ..
            }) => false,
            Err(e) => return Err(self.error("inspect volume", e)),
        };
        self.inner
            .create_volume(CreateVolumeOptions {
                name: name.to_string(),
                driver: if driver.is_empty() {
                    "local".to_string()
                } else {
                    driver.to_string()
                },
                driver_opts: HashMap::new(),
                labels: labels.clone(),
            })
            .await
            .map_err(|e| self.error("create volume", e))?;
        Ok(replaced)
    }

    /// Extracts `tar` (entries relative to the volume's root) into volume
    /// `name` through a stopped container of `image` that mounts it,
    /// created for this and removed after (the volume stays).
    pub(crate) async fn fill_volume(
        &self,
        name: &str,
        image: &str,
        tar: impl Stream<Item = Bytes> + Send + 'static,
    ) -> Result<(), EngineError> {
        let carrier = format!("stackd-carry-{name}");
        // A carrier left by an earlier attempt that was cut short.
        let _ = self
            .inner
            .remove_container(
                &carrier,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    link: false,
                }),
            )
            .await;
        let created = self
            .inner
            .create_container(
                Some(CreateContainerOptions {
                    name: carrier.clone(),
                    platform: None,
                }),
                Config {
                    image: Some(image.to_string()),
                    // Never started: any command will do.
                    cmd: Some(vec!["true".to_string()]),
                    labels: Some(HashMap::from([(
                        "org.stackd.carrier".to_string(),
                        name.to_string(),
                    )])),
                    host_config: Some(HostConfig {
                        mounts: Some(vec![Mount {
                            target: Some(CARRIER_PATH.to_string()),
                            source: Some(name.to_string()),
                            typ: Some(MountTypeEnum::VOLUME),
                            ..Default::default()
                        }]),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| self.error("create container", e))?;
        let uploaded = self
            .inner
            .upload_to_container_streaming(
                &created.id,
                Some(UploadToContainerOptions {
                    path: CARRIER_PATH.to_string(),
                    no_overwrite_dir_non_dir: String::new(),
                }),
                tar,
            )
            .await
            .map_err(|e| self.error("extract into a volume", e));
        let removed = self
            .inner
            .remove_container(
                &created.id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: false,
                    link: false,
                }),
            )
            .await
            .map_err(|e| self.error("remove container", e));
        uploaded.and(removed)
    }

    /// Removes volume `name` (after a transfer that did not verify).
    pub(crate) async fn remove_volume(&self, name: &str) -> Result<(), EngineError> {
        self.inner
            .remove_volume(name, Some(RemoveVolumeOptions { force: false }))
            .await
            .map_err(|e| self.error("remove volume", e))
    }
}
