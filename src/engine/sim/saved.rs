//! The simulated engine outlives the daemon, as Docker does: its state is
//! kept in `sim-state.json` next to the daemon's, written (atomically) a
//! moment after each change, and read when `stackd --sim` starts again.
//! A different boot id means the host rebooted: every container is found
//! exited (code 255, as Docker shows a container it did not stop), and the
//! engine starts those whose restart policy says so, as dockerd does.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Ctr, Sim, State};
use crate::engine::{ContainerInfo, ContainerState, NetworkRecord};

/// How long after a change the state is written.
const WRITE_AFTER: Duration = Duration::from_millis(100);

#[derive(Serialize, Deserialize)]
struct SavedCtr {
    id: String,
    name: String,
    project: String,
    service: String,
    number: Option<u32>,
    image: String,
    image_id: String,
    config_hash: Option<String>,
    state: String,
    exit_code: Option<i64>,
    oom_killed: bool,
    restart_count: u64,
    restart_policy: String,
    memory_limit: Option<u64>,
    health: Option<String>,
    started_at_usec: Option<u64>,
    finished_at_usec: Option<u64>,
    healthy_after_ms: Option<u64>,
    ports: Vec<(u16, u16)>,
    manual_stop: bool,
}

#[derive(Serialize, Deserialize)]
struct SavedNetwork {
    id: String,
    name: String,
    project: String,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    boot_id: String,
    containers: Vec<SavedCtr>,
    images: BTreeMap<String, String>,
    removed: BTreeSet<String>,
    registry: BTreeMap<String, String>,
    networks: Vec<SavedNetwork>,
    next: u64,
}

fn save(st: &State, boot_id: &str) -> Saved {
    Saved {
        boot_id: boot_id.to_string(),
        containers: st
            .containers
            .values()
            .map(|c| SavedCtr {
                id: c.info.id.clone(),
                name: c.info.name.clone(),
                project: c.info.project.clone(),
                service: c.info.service.clone(),
                number: c.info.number,
                image: c.info.image.clone(),
                image_id: c.info.image_id.clone(),
                config_hash: c.info.config_hash.clone(),
                state: c.info.state.as_str().to_string(),
                exit_code: c.info.exit_code,
                oom_killed: c.info.oom_killed,
                restart_count: c.info.restart_count,
                restart_policy: c.info.restart_policy.clone(),
                memory_limit: c.info.memory_limit,
                health: c.info.health.clone(),
                started_at_usec: c.info.started_at_usec,
                finished_at_usec: c.info.finished_at_usec,
                healthy_after_ms: c
                    .healthy_after
                    .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                ports: c.ports.clone(),
                manual_stop: c.manual_stop,
            })
            .collect(),
        images: st.images.clone(),
        removed: st.removed.clone(),
        registry: st.registry.clone(),
        networks: st
            .networks
            .values()
            .map(|n| SavedNetwork {
                id: n.id.clone(),
                name: n.name.clone(),
                project: n.project.clone(),
            })
            .collect(),
        next: st.next,
    }
}

impl Sim {
    /// Loads the engine kept at `path` (if any), then keeps it there. What
    /// ran goes on running (its ports bound again); after a reboot, what
    /// has restart policy always or unless-stopped is started.
    pub fn persist(self: &Arc<Self>, path: &Path, boot_id: &str) -> std::io::Result<()> {
        let mut to_start = Vec::new();
        let mut resume = Vec::new();
        match std::fs::read(path) {
            Ok(bytes) => {
                let saved: Saved = serde_json::from_slice(&bytes)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                let rebooted = saved.boot_id != boot_id;
                let mut st = self.lock();
                for c in saved.containers {
                    let mut state = ContainerState::parse(&c.state);
                    let mut exit_code = c.exit_code;
                    let mut health = c.health;
                    let running = state == ContainerState::Running;
                    if rebooted {
                        if running {
                            state = ContainerState::Exited;
                            health = None;
                            exit_code = Some(255);
                        }
                        if c.restart_policy == "always"
                            || (c.restart_policy == "unless-stopped" && !c.manual_stop)
                        {
                            to_start.push(c.id.clone());
                        }
                    } else if running {
                        resume.push(c.id.clone());
                    }
                    let info = ContainerInfo {
                        id: c.id.clone(),
                        name: c.name,
                        project: c.project,
                        service: c.service,
                        number: c.number,
                        oneoff: false,
                        image: c.image,
                        image_id: c.image_id,
                        config_hash: c.config_hash,
                        state,
                        status: if state == ContainerState::Running {
                            "Up".to_string()
                        } else {
                            format!("Exited ({}) Less than a second ago", exit_code.unwrap_or(0))
                        },
                        exit_code,
                        oom_killed: c.oom_killed,
                        restart_count: c.restart_count,
                        restart_policy: c.restart_policy,
                        memory_limit: c.memory_limit,
                        health,
                        started_at_usec: c.started_at_usec,
                        finished_at_usec: c.finished_at_usec,
                        pid: None,
                        error: None,
                    };
                    st.containers.insert(
                        c.id,
                        Ctr {
                            info,
                            healthy_after: c.healthy_after_ms.map(Duration::from_millis),
                            ports: c.ports,
                            listeners: Vec::new(),
                            epoch: 0,
                            manual_stop: c.manual_stop,
                            logs: Vec::new(),
                        },
                    );
                }
                st.images = saved.images;
                st.removed = saved.removed;
                st.registry = saved.registry;
                st.next = saved.next;
                st.networks = saved
                    .networks
                    .into_iter()
                    .map(|n| {
                        (
                            n.project.clone(),
                            NetworkRecord {
                                id: n.id,
                                name: n.name,
                                project: n.project,
                                containers: 0,
                            },
                        )
                    })
                    .collect();
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        {
            let mut st = self.lock();
            for id in resume {
                let Some(c) = st.containers.get_mut(&id) else {
                    continue;
                };
                c.listeners = super::ports::publish(&c.info.name, &c.ports).unwrap_or_default();
                if c.info.health.as_deref() == Some("starting") {
                    let (epoch, after) = (c.epoch, c.healthy_after.unwrap_or_default());
                    self.schedule_healthy(&id, epoch, after);
                }
            }
            for id in to_start {
                let _ = self.start_ctr(&mut st, &id);
            }
        }
        self.spawn_writer(path.to_path_buf(), boot_id.to_string());
        Ok(())
    }

    fn spawn_writer(self: &Arc<Self>, path: PathBuf, boot_id: String) {
        let me = Arc::downgrade(self);
        let mut changes = self.bus.subscribe();
        self.dirty.store(true, Ordering::Relaxed);
        tokio::spawn(async move {
            loop {
                // Any event (or a lag) is a change; a control command that
                // changes nothing Docker would report marks `dirty` itself.
                let _ = tokio::time::timeout(Duration::from_secs(1), changes.recv()).await;
                tokio::time::sleep(WRITE_AFTER).await;
                while let Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) =
                    changes.try_recv()
                {}
                let Some(sim) = me.upgrade() else { return };
                if !sim.dirty.swap(false, Ordering::Relaxed) {
                    continue;
                }
                let text = match serde_json::to_vec(&save(&sim.lock(), &boot_id)) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!("simulated engine: cannot save its state: {e}");
                        continue;
                    }
                };
                let tmp = path.with_extension("json.tmp");
                if let Err(e) =
                    std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &path))
                {
                    tracing::warn!("simulated engine: cannot write {}: {e}", path.display());
                }
            }
        });
    }
}
