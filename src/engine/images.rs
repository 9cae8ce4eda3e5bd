//! Images, networks and container removal: what `prune` and `rollback`
//! need from the engine. Nothing here forces anything: Docker's own
//! refusals (an image in use or tagged elsewhere, a network with endpoints)
//! stand, and a container is removed without its volumes.

use std::collections::HashMap;

use bollard::container::RemoveContainerOptions;
use bollard::image::{RemoveImageOptions, TagImageOptions};
use bollard::network::{InspectNetworkOptions, ListNetworksOptions};

use futures_util::StreamExt;

use super::docker::{Bollard, PROJECT_LABEL};
use super::EngineError;

/// A container of a Compose project with the image it was created from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectContainer {
    pub id: String,
    /// Without the leading '/'.
    pub name: String,
    pub project: String,
    /// The image reference as the container was created (`Config.Image`).
    pub reference: String,
    /// The id of the image it runs (`sha256:...`).
    pub image_id: String,
    pub running: bool,
}

/// One local image, with Docker's sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRecord {
    pub id: String,
    pub tags: Vec<String>,
    pub size: u64,
    /// Bytes no other image shares (`docker system df -v`'s unique size).
    pub unique: u64,
}

/// What `docker system df` reports, as far as prune needs it.
#[derive(Debug, Clone, Default)]
pub struct DiskUsage {
    pub images: Vec<ImageRecord>,
    /// Writable-layer bytes of each container, by id.
    pub container_bytes: HashMap<String, u64>,
}

/// A network a Compose project created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    pub project: String,
    /// Endpoints attached now.
    pub containers: usize,
}

fn bytes(n: Option<i64>) -> u64 {
    n.and_then(|n| u64::try_from(n).ok()).unwrap_or(0)
}

impl Bollard {
    /// Every container of every Compose project (or of `project` only),
    /// running or not, with the image reference and id each was created
    /// from.
    pub(crate) async fn compose_containers(
        &self,
        project: Option<&str>,
    ) -> Result<Vec<ProjectContainer>, EngineError> {
        let summaries = self.project_summaries(project).await?;
        // The summary's `Image` shows the id once the tag moved on; the
        // reference as created is in the inspected config. A few inspects
        // at a time, as `list_containers` does.
        let inspected: Vec<_> =
            futures_util::stream::iter(summaries.into_iter().filter_map(|s| s.id))
                .map(|id| async move { (self.inspect_raw(&id).await, id) })
                .buffered(8)
                .collect()
                .await;
        let mut out = Vec::new();
        for (info, id) in inspected {
            let Some(info) = info? else {
                continue;
            };
            let config = info.config.unwrap_or_default();
            let project = config
                .labels
                .as_ref()
                .and_then(|l| l.get(PROJECT_LABEL).cloned())
                .unwrap_or_default();
            out.push(ProjectContainer {
                name: info
                    .name
                    .unwrap_or_default()
                    .trim_start_matches('/')
                    .to_string(),
                project,
                reference: config.image.unwrap_or_default(),
                image_id: info.image.unwrap_or_default(),
                running: info.state.and_then(|st| st.running).unwrap_or(false),
                id,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Images and container sizes, as `docker system df` computes them.
    pub(crate) async fn disk_usage(&self) -> Result<DiskUsage, EngineError> {
        let df = self.inner.df().await.map_err(|e| self.error("df", e))?;
        let images = df
            .images
            .unwrap_or_default()
            .into_iter()
            .map(|i| {
                let size = bytes(Some(i.size));
                let shared = bytes(Some(i.shared_size));
                ImageRecord {
                    id: i.id,
                    tags: i
                        .repo_tags
                        .into_iter()
                        .filter(|t| t != "<none>:<none>")
                        .collect(),
                    size,
                    unique: size.saturating_sub(shared),
                }
            })
            .collect();
        let container_bytes = df
            .containers
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| Some((c.id?, bytes(c.size_rw))))
            .collect();
        Ok(DiskUsage {
            images,
            container_bytes,
        })
    }

    /// Removes an image by id, never forced: Docker refuses one that a
    /// container uses or that other references still tag.
    pub(crate) async fn remove_image(&self, id: &str) -> Result<(), EngineError> {
        self.inner
            .remove_image(
                id,
                Some(RemoveImageOptions {
                    force: false,
                    noprune: false,
                }),
                None,
            )
            .await
            .map(|_| ())
            .map_err(|e| self.error("remove image", e))
    }

    /// Removes a stopped container, keeping its volumes.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), EngineError> {
        self.inner
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    v: false,
                    force: false,
                    link: false,
                }),
            )
            .await
            .map_err(|e| self.error("remove container", e))
    }

    /// The networks Compose created for `project`, with their endpoints.
    pub(crate) async fn project_networks(
        &self,
        project: &str,
    ) -> Result<Vec<NetworkRecord>, EngineError> {
        let list = self
            .inner
            .list_networks(Some(ListNetworksOptions::<String> {
                filters: HashMap::from([(
                    "label".to_string(),
                    vec![format!("{PROJECT_LABEL}={project}")],
                )]),
            }))
            .await
            .map_err(|e| self.error("list networks", e))?;
        let mut out = Vec::new();
        for n in list {
            let Some(id) = n.id else { continue };
            // The list leaves out the endpoints; inspect has them.
            let containers = match self
                .inner
                .inspect_network(&id, None::<InspectNetworkOptions<String>>)
                .await
            {
                Ok(full) => full.containers.map_or(0, |c| c.len()),
                Err(e) => match self.error("inspect network", e) {
                    EngineError::NotFound { .. } => continue,
                    other => return Err(other),
                },
            };
            out.push(NetworkRecord {
                id,
                name: n.name.unwrap_or_default(),
                project: project.to_string(),
                containers,
            });
        }
        Ok(out)
    }

    pub(crate) async fn remove_network(&self, id: &str) -> Result<(), EngineError> {
        self.inner
            .remove_network(id)
            .await
            .map_err(|e| self.error("remove network", e))
    }

    /// Tags image `id` as `reference` (`repo[:tag]`, `latest` when no tag
    /// is given), moving the tag if another image held it.
    pub(crate) async fn tag_image(&self, id: &str, reference: &str) -> Result<(), EngineError> {
        let (repo, tag) = split_reference(reference).ok_or_else(|| EngineError::Api {
            call: "tag image",
            message: format!("{reference} is pinned by digest and cannot be tagged"),
            source: None,
        })?;
        self.inner
            .tag_image(id, Some(TagImageOptions { repo, tag }))
            .await
            .map_err(|e| self.error("tag image", e))
    }
}

/// `repo[:tag]` → (repo, tag), `latest` when no tag is given; `None` for a
/// reference pinned by digest (`repo@sha256:...`), which no tag can move.
pub(crate) fn split_reference(reference: &str) -> Option<(&str, &str)> {
    if reference.contains('@') {
        return None;
    }
    let name_start = reference.rfind('/').map_or(0, |i| i + 1);
    match reference[name_start..].rfind(':') {
        Some(i) => Some((
            &reference[..name_start + i],
            &reference[name_start + i + 1..],
        )),
        None => Some((reference, "latest")),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_into_repo_and_tag() {
        assert_eq!(split_reference("app"), Some(("app", "latest")));
        assert_eq!(split_reference("app:1.2"), Some(("app", "1.2")));
        assert_eq!(
            split_reference("registry:5000/team/app"),
            Some(("registry:5000/team/app", "latest"))
        );
        assert_eq!(
            split_reference("registry:5000/team/app:v2"),
            Some(("registry:5000/team/app", "v2"))
        );
        assert_eq!(split_reference("app@sha256:abcd"), None);
    }
}
