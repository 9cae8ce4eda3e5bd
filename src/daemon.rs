//! Wires the parts together and owns the order of start-up and shutdown.
//!
//! Start-up: config → boot id → store (interrupted tasks marked) → observer →
//! D-Bus (objects served before the name is taken) → peer endpoint (when
//! `[peer]` is set) → READY=1 → start-up
//! reconcile (boot recovery when the boot id changed). Shutdown: STOPPING=1,
//! no new tasks, running Compose commands get a grace period, containers are
//! left alone.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, warn};

use crate::config::{self, Config, ConfigError, LoadOptions};
use crate::control::{Control, Peers, SystemState};
use crate::dbus::{self, DbusError};
use crate::engine::Engine;
use crate::events::{self, Event, Severity};
use crate::notify::{self, NotifyHandle};
use crate::peer::{self, PeerError};
use crate::store::{DesiredState, Origin, Store, StoreError, TaskRecord};
use crate::systemd;
use crate::tasks::TaskKind;
use crate::world::{self, World};

/// How long start-up waits for the first answer (or refusal) from Docker.
const FIRST_DOCKER_PROBE: Duration = Duration::from_secs(5);
/// How long running Compose commands may take to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(90);

#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub user_mode: bool,
    pub host: Option<String>,
    /// Docker, or the simulator (`--sim`).
    pub engine: Engine,
}

#[derive(Debug, Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot read the boot id from {path}: {source}")]
    BootId {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Dbus(#[from] DbusError),
    #[error(transparent)]
    Peer(#[from] PeerError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
}

/// What start-up would refuse about this host beyond the cluster file
/// itself, checked without changing anything (`stackd --check-config`):
/// the boot id file, the state directory and the peer token file.
pub fn check_host(config: &config::Config) -> Result<(), Box<DaemonError>> {
    systemd::read_boot_id(&config.boot_id_file).map_err(|source| DaemonError::BootId {
        path: config.boot_id_file.clone(),
        source,
    })?;
    crate::store::check_state_dir(&config.state_dir).map_err(DaemonError::from)?;
    if let Some(p) = &config.peer {
        peer::auth::Token::load(&p.token_file).map_err(DaemonError::from)?;
    }
    Ok(())
}

pub async fn run(opts: Options) -> Result<(), DaemonError> {
    let load = LoadOptions {
        user_mode: opts.user_mode,
        host_override: opts.host.clone(),
    };
    let config = config::load(&opts.config, &load)?;
    let (before, after) = systemd::raise_nofile_limit();
    if after != before {
        info!("open file limit raised from {before} to {after}");
    }
    let boot_id =
        systemd::read_boot_id(&config.boot_id_file).map_err(|source| DaemonError::BootId {
            path: config.boot_id_file.clone(),
            source,
        })?;
    let store = Arc::new(Store::open(&config.state_dir)?);
    if let Some(sim) = opts.engine.sim() {
        match crate::engine::sim::attach(sim.clone(), &config.state_dir, &boot_id) {
            Ok(p) => info!("simulated engine: failure injection on {}", p.display()),
            Err(e) => warn!("simulated engine: {e}"),
        }
    }
    let interrupted = store.interrupt_unfinished()?;
    for t in &interrupted {
        warn!(
            stackd_task = t.id,
            stackd_service = %t.service,
            "task {} ({}) was interrupted when stackd stopped; marked failed",
            t.id,
            t.kind
        );
    }
    let _ = store.prune_tasks(10_000);
    let _ = store.prune_events(100_000);
    info!(
        stackd_host = %config.host,
        "stackd {} starting for host {} with {} services from {}",
        env!("CARGO_PKG_VERSION"),
        config.host,
        config.local_services().count(),
        config.path.display()
    );
    let mut sigterm = signal(SignalKind::terminate()).map_err(DaemonError::Signals)?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?;
    let mut sighup = signal(SignalKind::hangup()).map_err(DaemonError::Signals)?;

    let core = Core::start(
        config,
        load,
        store,
        opts.engine.clone(),
        boot_id,
        Arc::new(peer::Cluster),
        opts.user_mode,
    )
    .await;
    let control = core.control().clone();
    let server = dbus::serve(control.clone(), opts.user_mode).await?;
    // The peer endpoint after D-Bus, before READY=1: a bad token file or a
    // taken port stops the start with a clear error.
    let peer_server = match control.config().peer.clone() {
        Some(cfg) => Some(peer::serve(control.clone(), &cfg).await?),
        None => None,
    };
    let liveness = peer_server
        .is_some()
        .then(|| tokio::spawn(peer::liveness::run(control.clone())));
    systemd::ready("starting");
    info!("ready; bus name org.stackd1 held");

    core.begin(&interrupted);
    let status = tokio::spawn(status_updater(control.clone()));
    let watchdog = systemd::watchdog_interval().map(|every| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                systemd::watchdog_ping();
            }
        })
    });

    loop {
        tokio::select! {
            _ = sighup.recv() => {
                info!("SIGHUP: reloading the configuration");
                let _ = control.reload(false);
            }
            _ = sigterm.recv() => break,
            _ = sigint.recv() => break,
        }
    }

    info!("stopping; containers are left as they are");
    systemd::stopping();
    if let Some(l) = liveness {
        l.abort();
    }
    if let Some(p) = peer_server {
        p.shutdown().await;
    }
    core.stop().await;
    status.abort();
    if let Some(w) = watchdog {
        w.abort();
    }
    drop(server);
    Ok(())
}

/// The core as the daemon runs it, without the process around it (signals,
/// D-Bus, the peer endpoint, systemd's notify socket): the [`Control`] on
/// its engine and the tasks that feed and watch it (observer, supervisor,
/// notifications, alerts, resource monitor, housekeeping, unit services).
/// `run` builds one; the core's tests build several in one process, each
/// on its own simulator.
pub struct Core {
    control: Control,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    stop_notify: tokio::sync::oneshot::Sender<()>,
    notifier: tokio::task::JoinHandle<()>,
}

impl Core {
    /// Builds the core on `engine` and starts its tasks; returns once the
    /// observer's first try at the engine has concluded (bounded), so that
    /// a request right after meets a known engine state instead of a
    /// spurious "Docker is unavailable" with no reason.
    pub async fn start(
        config: Config,
        load: LoadOptions,
        store: Arc<Store>,
        engine: Engine,
        boot_id: String,
        peers: Arc<dyn Peers>,
        user_mode: bool,
    ) -> Core {
        let events = events::channel();
        let world = World::new(engine);
        let control = Control::new(config, load, store, world.clone(), events.clone(), boot_id);
        control.set_peers(peers);
        let mut tasks = vec![tokio::spawn(world::observe(world.clone(), events.clone()))];
        let probe_until = tokio::time::Instant::now() + FIRST_DOCKER_PROBE;
        while !world.docker_connected()
            && world.docker_error().is_empty()
            && tokio::time::Instant::now() < probe_until
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::spawn({
            let control = control.clone();
            async move { control.detect_compose().await }
        });
        // Before anything can raise an alert (the start-up reconcile does).
        let (stop_notify, notify_stopped) = tokio::sync::oneshot::channel();
        let notifier = tokio::spawn(notifier(control.clone(), notify_stopped));
        tasks.push(tokio::spawn(docker_alerts(control.clone(), world)));
        tasks.push(tokio::spawn(state_alerts(control.clone())));
        tasks.push(tokio::spawn(crate::supervise::run(
            control.clone(),
            control.board().clone(),
        )));
        tasks.push(tokio::spawn(crate::monitor::run(control.clone())));
        tasks.push(tokio::spawn(crate::housekeeping::run(control.clone())));
        // `kind = "unit"` services: systemd's manager (the user's with
        // --user), connected when the config first has one.
        tasks.push(tokio::spawn({
            let control = control.clone();
            async move {
                control
                    .follow_units(|| async move {
                        dbus::systemd1::Systemd::connect(user_mode)
                            .await
                            .map(|s| Arc::new(s) as Arc<dyn crate::units::UnitManager>)
                    })
                    .await
            }
        }));
        Core {
            control,
            tasks,
            stop_notify,
            notifier,
        }
    }

    pub fn control(&self) -> &Control {
        &self.control
    }

    /// Queues the start-up reconcile (boot recovery when the boot id
    /// changed); the system is "running" once it is done. `interrupted`:
    /// the tasks the last run left unfinished. A start cut short may have
    /// left a project half up (some containers running, the rest not yet
    /// created), which the planner cannot tell from a complete one: it is
    /// done again after the reconcile.
    pub fn begin(&self, interrupted: &[TaskRecord]) {
        let redo: std::collections::BTreeSet<String> = interrupted
            .iter()
            .filter(|t| TaskKind::parse(&t.kind).is_some_and(TaskKind::starts))
            .map(|t| t.service.clone())
            .collect();
        match self.control.startup() {
            Ok(task) => {
                let c = self.control.clone();
                tokio::spawn(async move {
                    let _ = c.queue().wait(task.id).await;
                    redo_interrupted_starts(&c, &redo);
                    c.set_system_state(SystemState::Running);
                });
            }
            Err(e) => {
                warn!("cannot queue the start-up reconcile: {e}");
                self.control.set_system_state(SystemState::Running);
            }
        }
    }

    /// Stops taking tasks, lets running Compose commands finish (up to
    /// [`SHUTDOWN_GRACE`]), lets the notifications in flight go out, then
    /// ends the core's tasks. Containers are left as they are.
    pub async fn stop(self) {
        let control = self.control;
        control.set_system_state(SystemState::Stopping);
        let left = control.queue().shutdown(SHUTDOWN_GRACE).await;
        if left > 0 {
            warn!("{left} tasks were still running after {SHUTDOWN_GRACE:?}; they will be marked interrupted at the next start");
        }
        // Alerts of the last tasks are in the outbox now; let a delivery in
        // flight finish. Undelivered ones wait there for the next start.
        let _ = self.stop_notify.send(());
        let _ = self.notifier.await;
        for t in self.tasks {
            t.abort();
        }
    }
}

/// Deploy again what an interrupted start left behind, while its desired
/// state is still running.
fn redo_interrupted_starts(control: &Control, names: &std::collections::BTreeSet<String>) {
    for name in names {
        if !control
            .service(name)
            .is_ok_and(|s| s.desired == DesiredState::Running)
        {
            continue;
        }
        if let Err(e) = control
            .queue()
            .submit(TaskKind::Deploy, name, &Origin::Interrupted)
        {
            warn!(stackd_service = %name, "cannot redo the interrupted start: {e}");
        }
    }
}

/// Run the notification router and outbox worker; start them again with the
/// new channels when a reload changed `[notify]`.
async fn notifier(control: Control, mut stop: tokio::sync::oneshot::Receiver<()>) {
    let start = |control: &Control| -> NotifyHandle {
        let cfg = control.config();
        notify::spawn(
            &cfg.notify,
            cfg.host.clone(),
            control.store().clone(),
            control.events().clone(),
        )
    };
    let mut current = control.config().notify.clone();
    let mut handle = start(&control);
    let mut rx = control.events().subscribe();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            ev = rx.recv() => match ev {
                Ok(Event::ServicesReloaded) if control.config().notify != current => {
                    handle.shutdown().await;
                    current = control.config().notify.clone();
                    handle = start(&control);
                    info!("notification channels reconfigured");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                _ => {}
            },
        }
    }
    handle.shutdown().await;
}

/// Docker lost and Docker back as alerts, like every other event. A
/// daemon that starts without Docker says so once; "back" follows only a
/// "lost" that was announced.
async fn docker_alerts(control: Control, world: Arc<World>) {
    let mut rx = control.events().subscribe();
    let mut lost = false;
    loop {
        if world.docker_connected() && lost {
            lost = false;
            control.alert(
                Severity::Info,
                "docker-back",
                "",
                "Docker is back",
                "the event stream is followed again and every project was read anew",
            );
        } else if !world.docker_connected()
            && !lost
            && !world.docker_error().is_empty()
            && control.uses_docker()
        {
            lost = true;
            control.alert(
                Severity::Critical,
                "docker-lost",
                "",
                "lost Docker",
                &format!(
                    "{}; nothing can be started or recovered until it answers again",
                    world.docker_error()
                ),
            );
        }
        // Every event is a chance to look; a lagged receiver looks too.
        if let Err(tokio::sync::broadcast::error::RecvError::Closed) = rx.recv().await {
            return;
        }
    }
}

/// How long the store must stay writable after a failed spell before
/// "state-write-back" is announced (a nearly full disk flaps).
const STATE_BACK_AFTER: Duration = Duration::from_secs(10);
/// How often a store that cannot write is tried by [`state_alerts`] itself.
const STATE_PROBE_EVERY: Duration = Duration::from_secs(15);

/// The state database cannot write (a full state directory, a read-only
/// file system) and can again, as alerts: each once per spell, the first
/// at once, the second once writes have worked for [`STATE_BACK_AFTER`].
/// The store only announces changes, so this wakes twice per spell, not
/// once per failed write; while writes fail it also tries one small write
/// every [`STATE_PROBE_EVERY`], in case nothing else writes.
async fn state_alerts(control: Control) {
    let store = control.store().clone();
    let mut rx = store.write_health();
    let dir = control.config().state_dir.display().to_string();
    // The spell announced: its start and the failure count before it.
    let mut announced: Option<(u64, u64)> = None;
    loop {
        let health = rx.borrow_and_update().clone();
        match (&health.failing, announced) {
            (Some(f), None) => {
                announced = Some((f.since_usec, health.failures_total.saturating_sub(1)));
                let summary = if f.disk_full {
                    format!("the state directory {dir} is full")
                } else {
                    format!("cannot write the state database in {dir}")
                };
                control.alert(
                    Severity::Critical,
                    "state-write-failed",
                    "",
                    &summary,
                    &format!(
                        "{}. Until it can write, stackd keeps what it must record in \
                         memory: alerts are still sent (from memory) and retried with their \
                         usual back-off; task logs, events and desired-state changes made \
                         meanwhile may be lost, and a restart forgets what only memory held. \
                         Free some space in {dir}; stackd resumes by itself.",
                        f.error
                    ),
                );
            }
            (None, Some((since, base))) => {
                tokio::time::sleep(STATE_BACK_AFTER).await;
                if !rx.borrow().is_failing() {
                    let now = crate::store::now_usec();
                    let failed = store.write_health().borrow().failures_total - base;
                    announced = None;
                    control.alert(
                        Severity::Info,
                        "state-write-back",
                        "",
                        &format!("the state database in {dir} can write again"),
                        &format!(
                            "Writes failed for {}s ({failed} failed writes); what waited in \
                             memory is being written now.",
                            now.saturating_sub(since) / 1_000_000
                        ),
                    );
                }
                // Still (or again) failing: the same spell goes on.
                continue;
            }
            _ => {}
        }
        if announced.is_some() {
            // Nothing else may write for a while (an idle host): try a
            // small write now and then, so that "back" is not left unsaid.
            match tokio::time::timeout(STATE_PROBE_EVERY, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return,
                Err(_) => {
                    let now = crate::store::now_usec().to_string();
                    let _ = store.set_meta("last_write_probe_usec", &now);
                }
            }
        } else if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Keep systemd's STATUS= line current, at most once a second.
async fn status_updater(control: Control) {
    let mut rx = control.events().subscribe();
    let mut last = String::new();
    loop {
        match rx.recv().await {
            Ok(
                Event::ServiceChanged { .. } | Event::ManagerChanged | Event::TaskRemoved { .. },
            ) => {}
            Ok(_) => continue,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(_) => return,
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        while rx.try_recv().is_ok() {}
        let line = control.status_line();
        if line != last {
            systemd::status(&line);
            last = line;
        }
    }
}
