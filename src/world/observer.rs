//! The observer: the task that keeps the [`World`] current from Docker
//! (connect with backoff, resync, follow the event stream in bursts).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tracing::{debug, warn};

use super::World;
use crate::engine::ContainerInfo;
use crate::events::{Event, EventSender};

/// How often the observer re-reads everything even when events flow, to
/// heal anything an event could not tell (a missed event, a clock jump).
const RESYNC_EVERY: Duration = Duration::from_secs(60);

/// How long events of a burst are collected before the projects they name
/// are read again.
const COALESCE: Duration = Duration::from_millis(50);

/// A `die` is read sooner: its evidence came before it (see
/// `State::died`), and a recovery waits for this read. The few
/// milliseconds still gather the deaths of a project stopped at once.
const COALESCE_DIE: Duration = Duration::from_millis(5);

/// The first wait before connecting again after Docker went away, and the
/// most it grows to: an engine that restarts is answered within a second
/// of coming back (a refused connect costs next to nothing).
const RECONNECT_FIRST: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(1);

/// The observer: connect to Docker (retrying with backoff), resync, then
/// follow the event stream. Runs until the task is aborted.
pub async fn observe(world: Arc<World>, events: EventSender) {
    let mut backoff = RECONNECT_FIRST;
    loop {
        let docker = match world.engine.connect().await {
            Ok(d) => d,
            Err(e) => {
                let msg = e.to_string();
                if world.set_docker(None, msg.clone()) {
                    let _ = events.send(Event::ManagerChanged);
                }
                if backoff == RECONNECT_FIRST {
                    warn!("Docker is unavailable: {msg}; retrying every {RECONNECT_MAX:?}");
                } else {
                    debug!("Docker is unavailable: {msg}; retrying in {backoff:?}");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        };
        // Subscribe before the resync so no change falls between the two.
        let mut stream = Box::pin(docker.events());
        match docker.list_containers(None).await {
            Ok(list) => {
                let mut all: BTreeMap<String, Vec<ContainerInfo>> = BTreeMap::new();
                for c in list {
                    all.entry(c.project.clone()).or_default().push(c);
                }
                // The view is complete before anyone is told Docker is back,
                // so nobody plans on a half-read world.
                for service in world.replace_all(all) {
                    let _ = events.send(Event::ServiceChanged { service });
                }
                if world.set_docker(Some(docker.clone()), String::new()) {
                    debug!("connected to Docker");
                    let _ = events.send(Event::ManagerChanged);
                }
                backoff = RECONNECT_FIRST;
            }
            Err(e) => {
                world.set_docker(None, e.to_string());
                let _ = events.send(Event::ManagerChanged);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(RECONNECT_MAX);
                continue;
            }
        }
        // Events of one project come in bursts (create, start, health...):
        // collect them for a moment and read each project once per burst.
        let mut dirty: std::collections::BTreeSet<String> = Default::default();
        let mut flush_at: Option<tokio::time::Instant> = None;
        let mut quiet_since = tokio::time::Instant::now();
        let lost = loop {
            let wake = flush_at.unwrap_or(quiet_since + RESYNC_EVERY);
            tokio::select! {
                next = stream.next() => match next {
                    None => break Some("the event stream ended".to_string()),
                    Some(Err(e)) => break Some(e.to_string()),
                    // Healthchecks run as execs every interval; they change
                    // nothing a user sees (health_status events do).
                    Some(Ok(ev)) if ev.action.starts_with("exec_") => {}
                    Some(Ok(ev)) => {
                        world.note_event(&ev);
                        let gather = if ev.action == "die" { COALESCE_DIE } else { COALESCE };
                        let at = tokio::time::Instant::now() + gather;
                        flush_at = Some(flush_at.map_or(at, |f| f.min(at)));
                        dirty.insert(ev.project);
                    }
                },
                _ = tokio::time::sleep_until(wake) => {
                    if dirty.is_empty() {
                        break None; // quiet for a while: periodic resync
                    }
                    flush_at = None;
                    for project in std::mem::take(&mut dirty) {
                        world.refresh(&project, &events).await;
                    }
                    quiet_since = tokio::time::Instant::now();
                }
            }
        };
        if let Some(why) = lost {
            debug!("lost Docker: {why}; reconnecting");
            world.forget_intent();
            world.set_docker(None, why);
            let _ = events.send(Event::ManagerChanged);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(RECONNECT_MAX);
        }
    }
}
