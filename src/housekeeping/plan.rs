//! The prune planner: a pure function from what Docker shows and what the
//! store remembers to what may go, each with the reason something stays.
//!
//! The rules, in the order they are checked for an image:
//! - only images stackd saw a service it deployed run are candidates
//!   (`image_history`); base images, images of other projects and images
//!   nobody ran through stackd are never touched;
//! - the current and the previous image of every service this host
//!   manages stay (the previous one is what `rollback` goes back to);
//! - an image a container uses stays, unless that container goes in the
//!   same prune;
//! - an image that also carries a tag no service of stackd's uses stays
//!   (somebody else named it).
//!
//! Containers and networks are only ever those of projects stackd deployed
//! and no longer manages: stopped containers, and networks without
//! endpoints. Volumes are never part of a plan.

use crate::fmt::decimal_bytes;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::engine::{ImageRecord, NetworkRecord, ProjectContainer};
use crate::store::{SeenImage, ServiceImage};

/// Which kinds of thing a prune removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kinds {
    pub images: bool,
    pub containers: bool,
    pub networks: bool,
}

impl Kinds {
    pub const ALL: Kinds = Kinds {
        images: true,
        containers: true,
        networks: true,
    };

    /// From command-line flags: none given means all three.
    pub fn from_flags(images: bool, containers: bool, networks: bool) -> Kinds {
        if images || containers || networks {
            Kinds {
                images,
                containers,
                networks,
            }
        } else {
            Kinds::ALL
        }
    }

    pub fn describe(self) -> String {
        let mut words = Vec::new();
        if self.images {
            words.push("images");
        }
        if self.containers {
            words.push("containers");
        }
        if self.networks {
            words.push("networks");
        }
        words.join(", ")
    }
}

/// Everything the planner looks at.
pub(crate) struct Inputs<'a> {
    /// The services this host manages now.
    pub managed: &'a BTreeSet<String>,
    /// The projects stackd deployed (and may therefore clean up after).
    pub deployed: &'a BTreeSet<String>,
    /// Every container of every Compose project on the host.
    pub containers: &'a [ProjectContainer],
    pub images: &'a [ImageRecord],
    pub container_bytes: &'a HashMap<String, u64>,
    pub service_images: &'a [ServiceImage],
    pub seen: &'a [SeenImage],
    /// The networks of the projects stackd deployed and no longer manages.
    pub networks: &'a [NetworkRecord],
}

/// One thing that goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: String,
    /// How a person recognises it: tags, container or network name.
    pub name: String,
    pub bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub containers: Vec<Item>,
    pub networks: Vec<Item>,
    pub images: Vec<Item>,
    /// Candidate images that stay, with why: "sha256:… (app:1): previous
    /// image of web, kept for rollback".
    pub kept: Vec<String>,
    /// Images the store remembers that Docker no longer has.
    pub gone: Vec<String>,
    /// Projects stackd deployed, no longer manages, and of which nothing
    /// is left once the plan is carried out.
    pub forgotten: Vec<String>,
}

impl Plan {
    pub fn bytes(&self) -> u64 {
        self.images
            .iter()
            .chain(&self.containers)
            .chain(&self.networks)
            .map(|i| i.bytes)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty() && self.containers.is_empty() && self.networks.is_empty()
    }

    /// "2 images, 1 container, 1 network (12.3 MB)".
    pub fn summary(&self) -> String {
        let n =
            |count: usize, one: &str| format!("{count} {one}{}", if count == 1 { "" } else { "s" });
        format!(
            "{}, {}, {} ({})",
            n(self.images.len(), "image"),
            n(self.containers.len(), "container"),
            n(self.networks.len(), "network"),
            decimal_bytes(self.bytes())
        )
    }
}

/// `sha256:0123456789ab…` → `0123456789ab`, as `docker images` shows ids.
pub fn short_id(id: &str) -> &str {
    let hex = id.strip_prefix("sha256:").unwrap_or(id);
    &hex[..hex.len().min(12)]
}

pub(crate) fn plan(kinds: Kinds, inp: &Inputs<'_>) -> Plan {
    let mut out = Plan::default();
    let orphans: BTreeSet<&str> = inp
        .deployed
        .iter()
        .filter(|p| !inp.managed.contains(*p))
        .map(String::as_str)
        .collect();

    // Stopped containers of projects stackd deployed and no longer manages.
    let mut removed_containers = BTreeSet::new();
    if kinds.containers {
        for c in inp.containers {
            if orphans.contains(c.project.as_str()) && !c.running {
                removed_containers.insert(c.id.as_str());
                out.containers.push(Item {
                    id: c.id.clone(),
                    name: format!("{} (project {})", c.name, c.project),
                    bytes: inp.container_bytes.get(&c.id).copied().unwrap_or(0),
                });
            }
        }
    }
    let remaining: Vec<&ProjectContainer> = inp
        .containers
        .iter()
        .filter(|c| !removed_containers.contains(c.id.as_str()))
        .collect();

    if kinds.networks {
        for n in inp.networks {
            if orphans.contains(n.project.as_str()) && n.containers == 0 {
                out.networks.push(Item {
                    id: n.id.clone(),
                    name: format!("{} (project {})", n.name, n.project),
                    bytes: 0,
                });
            }
        }
    }

    if kinds.images {
        plan_images(inp, &remaining, &mut out);
    }

    // A project with no container left is forgotten once the plan runs.
    for p in &orphans {
        let left = remaining.iter().any(|c| c.project == *p);
        let networks_left = inp
            .networks
            .iter()
            .any(|n| n.project == *p && !out.networks.iter().any(|i| i.id == n.id));
        if !left && !networks_left {
            out.forgotten.push((*p).to_string());
        }
    }
    out
}

fn plan_images(inp: &Inputs<'_>, remaining: &[&ProjectContainer], out: &mut Plan) {
    // Why each image a managed service runs or ran last stays.
    let mut keep: BTreeMap<&str, String> = BTreeMap::new();
    for s in inp
        .service_images
        .iter()
        .filter(|s| inp.managed.contains(&s.service))
    {
        keep.entry(s.current.as_str())
            .or_insert_with(|| format!("current image of {}", s.service));
        if let Some(p) = &s.previous {
            keep.entry(p.as_str())
                .or_insert_with(|| format!("previous image of {}, kept for rollback", s.service));
        }
    }
    let references: BTreeSet<&str> = inp
        .seen
        .iter()
        .map(|s| s.reference.as_str())
        .chain(inp.service_images.iter().map(|s| s.reference.as_str()))
        .collect();
    let by_id: HashMap<&str, &ImageRecord> =
        inp.images.iter().map(|i| (i.id.as_str(), i)).collect();
    let candidates: BTreeSet<&str> = inp.seen.iter().map(|s| s.image_id.as_str()).collect();
    for id in candidates {
        let Some(image) = by_id.get(id) else {
            out.gone.push(id.to_string());
            continue;
        };
        let label = if image.tags.is_empty() {
            short_id(id).to_string()
        } else {
            format!("{} ({})", short_id(id), image.tags.join(", "))
        };
        let why = if let Some(why) = keep.get(id) {
            Some(why.clone())
        } else if let Some(c) = remaining.iter().find(|c| c.image_id == id) {
            Some(format!("used by container {}", c.name))
        } else {
            image
                .tags
                .iter()
                .find(|t| !references.contains(t.as_str()) && !references.contains(untagged(t)))
                .map(|t| format!("also tagged {t}, which no service of stackd's uses"))
        };
        match why {
            Some(why) => out.kept.push(format!("{label}: {why}")),
            None => out.images.push(Item {
                id: id.to_string(),
                name: label,
                bytes: image.unique,
            }),
        }
    }
}

/// `app:latest` → `app`: a Compose file may name an image without a tag.
fn untagged(tag: &str) -> &str {
    tag.strip_suffix(":latest").unwrap_or(tag)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, project: &str, image: &str, running: bool) -> ProjectContainer {
        ProjectContainer {
            id: id.into(),
            name: format!("{project}-{id}"),
            project: project.into(),
            reference: "app".into(),
            image_id: image.into(),
            running,
        }
    }

    fn image(id: &str, tags: &[&str], unique: u64) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            size: unique,
            unique,
        }
    }

    fn seen(id: &str, service: &str, reference: &str) -> SeenImage {
        SeenImage {
            image_id: id.into(),
            service: service.into(),
            reference: reference.into(),
        }
    }

    fn names(items: &[Item]) -> Vec<&str> {
        items.iter().map(|i| i.id.as_str()).collect()
    }

    struct World {
        managed: BTreeSet<String>,
        deployed: BTreeSet<String>,
        containers: Vec<ProjectContainer>,
        images: Vec<ImageRecord>,
        bytes: HashMap<String, u64>,
        service_images: Vec<ServiceImage>,
        seen: Vec<SeenImage>,
        networks: Vec<NetworkRecord>,
    }

    impl World {
        /// web ran a, then b, now c; old (deployed, no longer managed)
        /// left a stopped container on image o and a network; other (not
        /// stackd's) runs image x and has a dangling image y.
        fn new() -> World {
            World {
                managed: ["web".to_string()].into(),
                deployed: ["web".to_string(), "old".to_string()].into(),
                containers: vec![
                    container("w1", "web", "c", true),
                    container("o1", "old", "o", false),
                    container("x1", "other", "x", true),
                ],
                images: vec![
                    image("a", &[], 10),
                    image("b", &[], 20),
                    image("c", &["app:latest"], 30),
                    image("o", &["oldapp:1"], 40),
                    image("x", &["other:1"], 50),
                    image("y", &[], 60),
                    image("base", &["busybox:1"], 70),
                ],
                bytes: [("o1".to_string(), 5)].into(),
                service_images: vec![
                    ServiceImage {
                        service: "web".into(),
                        reference: "app".into(),
                        current: "c".into(),
                        previous: Some("b".into()),
                    },
                    ServiceImage {
                        service: "old".into(),
                        reference: "oldapp:1".into(),
                        current: "o".into(),
                        previous: None,
                    },
                ],
                seen: vec![
                    seen("a", "web", "app"),
                    seen("b", "web", "app"),
                    seen("c", "web", "app"),
                    seen("o", "old", "oldapp:1"),
                ],
                networks: vec![NetworkRecord {
                    id: "n1".into(),
                    name: "old_default".into(),
                    project: "old".into(),
                    containers: 0,
                }],
            }
        }

        fn plan(&self, kinds: Kinds) -> Plan {
            plan(
                kinds,
                &Inputs {
                    managed: &self.managed,
                    deployed: &self.deployed,
                    containers: &self.containers,
                    images: &self.images,
                    container_bytes: &self.bytes,
                    service_images: &self.service_images,
                    seen: &self.seen,
                    networks: &self.networks,
                },
            )
        }
    }

    #[test]
    fn the_oldest_image_goes_the_previous_and_current_stay() {
        let w = World::new();
        let p = w.plan(Kinds::ALL);
        // a: oldest of web; o: its container goes in the same prune.
        assert_eq!(names(&p.images), ["a", "o"]);
        assert_eq!(names(&p.containers), ["o1"]);
        assert_eq!(names(&p.networks), ["n1"]);
        assert_eq!(p.bytes(), 10 + 40 + 5);
        assert_eq!(p.forgotten, ["old"]);
        assert!(p
            .kept
            .iter()
            .any(|k| k.starts_with("b: previous image of web")));
        assert!(p
            .kept
            .iter()
            .any(|k| k.starts_with("c (app:latest): current image of web")));
        // Never another project's image, used or not, nor a base image.
        for id in ["x", "y", "base"] {
            assert!(!names(&p.images).contains(&id));
        }
    }

    #[test]
    fn an_image_stays_while_a_container_that_stays_uses_it() {
        let w = World::new();
        let p = w.plan(Kinds {
            images: true,
            containers: false,
            networks: false,
        });
        assert_eq!(names(&p.images), ["a"]);
        assert!(p.containers.is_empty() && p.networks.is_empty());
        assert!(p
            .kept
            .iter()
            .any(|k| k.contains("used by container old-o1")));
        assert!(p.forgotten.is_empty());
    }

    #[test]
    fn running_containers_and_networks_in_use_stay() {
        let mut w = World::new();
        w.containers[1].running = true;
        w.networks[0].containers = 1;
        let p = w.plan(Kinds::ALL);
        assert!(p.containers.is_empty() && p.networks.is_empty());
        assert!(p.forgotten.is_empty());
    }

    #[test]
    fn a_managed_service_keeps_its_stopped_containers() {
        let mut w = World::new();
        w.containers[0].running = false;
        let p = w.plan(Kinds::ALL);
        assert_eq!(names(&p.containers), ["o1"]);
    }

    #[test]
    fn an_image_someone_else_tagged_stays_and_a_vanished_one_is_forgotten() {
        let mut w = World::new();
        w.images[0].tags = vec!["mine:1".into()];
        w.images.retain(|i| i.id != "o");
        let p = w.plan(Kinds::ALL);
        assert!(p.images.is_empty(), "{p:?}");
        assert!(p.kept.iter().any(|k| k.contains("also tagged mine:1")));
        assert_eq!(p.gone, ["o"]);
    }

    #[test]
    fn flags_default_to_all_and_sizes_read_as_the_cli_prints_them() {
        assert_eq!(Kinds::from_flags(false, false, false), Kinds::ALL);
        assert!(!Kinds::from_flags(true, false, false).networks);
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
    }
}
