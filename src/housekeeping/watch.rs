//! The housekeeping loop: the scheduled prune (`[housekeeping] prune`) and
//! the disk warning (`disk_warning`), checked every `sample_interval`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::debug;

use super::{make_plan, Kinds, PruneOptions};
use crate::control::Control;
use crate::events::Severity;
use crate::fmt::decimal_bytes;
use crate::store::{now_usec, Origin};

/// Where the time of the last scheduled prune is kept, so a restart of
/// stackd neither skips nor repeats one.
const LAST_PRUNE_KEY: &str = "housekeeping.last_prune_usec";

/// Runs until the daemon aborts it.
pub async fn run(control: Control) {
    // Paths below the threshold already warned about, until they recover.
    let mut low: BTreeSet<PathBuf> = BTreeSet::new();
    let mut data_root: Option<(u64, Option<PathBuf>)> = None;
    loop {
        let cfg = control.config();
        tokio::time::sleep(cfg.sample_interval.max(Duration::from_secs(1))).await;
        if control.startup_pending() {
            continue;
        }
        if let Some(every) = cfg.housekeeping.prune {
            schedule(&control, every);
        }
        match cfg.housekeeping.disk_warning {
            Some(share) => {
                let mut paths = vec![cfg.state_dir.clone()];
                let generation = control.docker_generation();
                if data_root.as_ref().map(|(g, _)| *g) != Some(generation) {
                    data_root = match control.docker() {
                        Some(d) => Some((
                            generation,
                            d.info().await.ok().map(|i| PathBuf::from(i.data_root)),
                        )),
                        None => None,
                    };
                }
                if let Some((_, Some(root))) = &data_root {
                    paths.push(root.clone());
                }
                check_disks(&control, &paths, share, &mut low).await;
            }
            None => low.clear(),
        }
    }
}

/// Queues the scheduled prune when it is due: one interval after the last
/// one, or after the first time this loop saw the schedule.
fn schedule(control: &Control, every: Duration) {
    let store = control.store();
    let now = now_usec();
    let last = store
        .meta(LAST_PRUNE_KEY)
        .ok()
        .flatten()
        .and_then(|v| v.parse::<u64>().ok());
    let Some(last) = last else {
        let _ = store.set_meta(LAST_PRUNE_KEY, &now.to_string());
        return;
    };
    let every_usec = u64::try_from(every.as_micros()).unwrap_or(u64::MAX);
    if now.saturating_sub(last) < every_usec {
        return;
    }
    let opts = PruneOptions {
        kinds: Kinds::ALL,
        dry_run: false,
    };
    match control.prune(opts, &Origin::Schedule) {
        Ok(_) => {
            let _ = store.set_meta(LAST_PRUNE_KEY, &now.to_string());
        }
        Err(e) => debug!("scheduled prune not queued: {e}"),
    }
}

/// The free share of the file system holding `path`.
fn free_share(path: &Path) -> Option<(f64, u64)> {
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let frsize = st.fragment_size() as u64;
    let total = st.blocks() as u64 * frsize;
    let avail = st.blocks_available() as u64 * frsize;
    (total > 0).then(|| (avail as f64 / total as f64, avail))
}

async fn check_disks(
    control: &Control,
    paths: &[PathBuf],
    share: f64,
    low: &mut BTreeSet<PathBuf>,
) {
    for path in paths {
        let Some((free, avail)) = free_share(path) else {
            continue;
        };
        if free >= share {
            low.remove(path);
            continue;
        }
        if !low.insert(path.clone()) {
            continue;
        }
        let prune = match control.docker() {
            Some(d) => match make_plan(control, &d, Kinds::ALL).await {
                Ok(p) if p.is_empty() => {
                    "stackctl prune would free nothing stackd manages".to_string()
                }
                Ok(p) => format!("stackctl prune would free {}", p.summary()),
                Err(e) => format!("what stackctl prune would free is unknown: {e}"),
            },
            None => "what stackctl prune would free is unknown: Docker is unavailable".into(),
        };
        control.alert_data(
            Severity::Warning,
            "disk-low",
            "",
            &format!(
                "{} has {:.1}% free ({}), below disk_warning {:.0}%; {prune}",
                path.display(),
                free * 100.0,
                decimal_bytes(avail),
                share * 100.0
            ),
            &prune,
            serde_json::json!({ "path": path.display().to_string(), "free_share": free }),
        );
    }
}
