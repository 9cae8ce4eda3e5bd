//! The core's rules in process: the real core (`daemon::Core`: control,
//! observer, supervisor, notifier, store) built in the test process on a
//! simulator of its own, with the other hosts a [`FakePeers`], and talked
//! to over a peer-to-peer D-Bus connection (`UnixStream::pair()`) with the
//! same client proxies `stackctl` uses. No Docker, no bus daemon, no
//! stackd process: each test takes about a second, and several cores can
//! live in one process because each holds its own engine.
//!
//! What the tests assert is what a person would see: bus properties, task
//! rows and logs, the alerts the channels receive. `tests/sim.rs` checks
//! the same kinds of rules through a real `stackd --sim` process.

mod alerts;
mod boot;
mod deps;
mod handoff;
/// The fake other hosts, shared with `control/handoff/tests.rs`.
pub(super) mod peers;
mod recovery;
mod reload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use zbus::zvariant::OwnedValue;

use crate::config::{self, LoadOptions};
use crate::daemon::Core;
use crate::dbus::agent::AlertSignal;
use crate::dbus::proxy::{ManagerProxy, PropertiesProxy, TaskProxy};
use crate::dbus::types::{ServiceRow, TaskRow};
use crate::engine::sim::Sim;
use crate::engine::Engine;
use crate::store::Store;
pub(super) use peers::FakePeers;

/// The longest any wait of these tests may take before it fails.
pub(super) const WAIT: Duration = Duration::from_secs(15);

/// One simulated service: a container that runs until told otherwise.
pub(super) const APP: &str = "services:\n  main:\n    image: stackd-sim/app:1\n";

/// Waits until `$cond` (an expression that may `.await`) holds; fails the
/// test naming `$what` after [`WAIT`].
macro_rules! wait_for {
    ($what:expr, $cond:expr) => {{
        let until = tokio::time::Instant::now() + $crate::control::tests::WAIT;
        loop {
            if $cond {
                break;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "timed out waiting: {}",
                $what
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }};
}
pub(super) use wait_for;

/// A host's directory: its cluster file, Compose projects and state.
pub(super) struct Dir {
    pub(super) dir: PathBuf,
}

impl Dir {
    pub(super) fn new(root: &Path, host: &str) -> Dir {
        let dir = root.join(host);
        std::fs::create_dir_all(dir.join("compose")).expect("compose dir");
        Dir { dir }
    }

    pub(super) fn project(&self, name: &str, compose_yaml: &str) {
        let dir = self.dir.join("compose").join(name);
        std::fs::create_dir_all(&dir).expect("project dir");
        std::fs::write(dir.join("compose.yaml"), compose_yaml).expect("compose file");
    }

    /// Writes the cluster file: this host's directories, then `extra`
    /// (services, `[peer]`, `[hosts]`, `[notify]`).
    pub(super) fn config(&self, extra: &str) -> PathBuf {
        let q = |p: PathBuf| toml_str(&p.display().to_string());
        let text = format!(
            "compose_dir = {}\nstate_dir = {}\nboot_id_file = {}\n\n{extra}",
            q(self.dir.join("compose")),
            q(self.dir.join("state")),
            q(self.dir.join("boot_id")),
        );
        let path = self.dir.join("stackd.toml");
        std::fs::write(&path, text).expect("stackd.toml");
        path
    }

    fn sim_state(&self) -> PathBuf {
        self.dir.join("state").join("sim-state.json")
    }
}

pub(super) fn toml_str(s: &str) -> String {
    format!("{s:?}")
}

/// A running core and the connection a test talks to it on.
pub(super) struct Host {
    sim: Arc<Sim>,
    core: Option<Core>,
    _server: crate::dbus::Server,
    conn: zbus::Connection,
    /// Every `Alert` signal received on the connection, in order.
    alerts: Arc<std::sync::Mutex<Vec<AlertSignal>>>,
}

impl Host {
    /// Starts the core of `host` as `stackd` does on `dir`'s cluster file,
    /// with boot id `boot`: its store, its (persisted) simulator, the
    /// start-up reconcile; then connects to it over D-Bus.
    pub(super) async fn start(dir: &Dir, host: &str, boot: &str, peers: Arc<FakePeers>) -> Host {
        Host::start_with(dir, host, boot, peers, &[]).await
    }

    /// [`Host::start`] with the simulator told `sim` (failure-injection
    /// lines) before the start-up reconcile begins.
    pub(super) async fn start_with(
        dir: &Dir,
        host: &str,
        boot: &str,
        peers: Arc<FakePeers>,
        sim: &[&str],
    ) -> Host {
        let load = LoadOptions {
            user_mode: false,
            host_override: Some(host.to_string()),
        };
        let config = config::load(&dir.dir.join("stackd.toml"), &load)
            .unwrap_or_else(|e| panic!("the test's cluster file: {e}"));
        std::fs::create_dir_all(&config.state_dir).expect("state dir");
        let store = Arc::new(Store::open(&config.state_dir).expect("store"));
        let sim_engine = Sim::new();
        sim_engine
            .persist(&dir.sim_state(), boot)
            .expect("sim state");
        let interrupted = store.interrupt_unfinished().expect("interrupted tasks");
        let core = Core::start(
            config,
            load,
            store,
            Engine::Sim(sim_engine.clone()),
            boot.to_string(),
            peers.clone(),
            false,
        )
        .await;
        let (ours, theirs) = tokio::net::UnixStream::pair().expect("socket pair");
        let (server, conn) = tokio::join!(
            crate::dbus::serve_stream(core.control().clone(), false, theirs),
            async {
                zbus::connection::Builder::unix_stream(ours)
                    .p2p()
                    .build()
                    .await
            }
        );
        let conn = conn.expect("a D-Bus connection to the core");
        // Listening before the start-up reconcile, which may alert.
        let alerts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let manager = ManagerProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .expect("manager proxy");
        let mut signals = manager
            .inner()
            .receive_signal("Alert")
            .await
            .expect("Alert signals");
        tokio::spawn({
            let alerts = alerts.clone();
            async move {
                while let Some(msg) = signals.next().await {
                    let alert: AlertSignal = msg.body().deserialize().expect("an Alert signal");
                    alerts.lock().unwrap_or_else(|e| e.into_inner()).push(alert);
                }
            }
        });
        for line in sim {
            if let Err(e) = sim_engine.command(line) {
                panic!("sim {line:?}: {e}");
            }
        }
        core.begin(&interrupted);
        Host {
            sim: sim_engine,
            core: Some(core),
            _server: server.expect("served over D-Bus"),
            conn,
            alerts,
        }
    }

    /// The alerts signalled so far, as (kind, service, summary).
    pub(super) fn alerts(&self) -> Vec<AlertSignal> {
        self.alerts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Stops the core as SIGTERM does (containers are left alone).
    pub(super) async fn stop(mut self) {
        if let Some(core) = self.core.take() {
            core.stop().await;
        }
    }

    pub(super) async fn manager(&self) -> ManagerProxy<'_> {
        ManagerProxy::builder(&self.conn)
            .build()
            .await
            .expect("manager proxy")
    }

    /// `stackctl list`'s row of `name`.
    pub(super) async fn row(&self, name: &str) -> ServiceRow {
        let rows = self
            .manager()
            .await
            .list_services()
            .await
            .expect("ListServices");
        rows.into_iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row for {name}"))
    }

    pub(super) async fn active_state(&self, name: &str) -> String {
        self.row(name).await.active_state.to_string()
    }

    /// One property of `org.stackd1.Service` of `name`.
    pub(super) async fn property(&self, name: &str, property: &str) -> OwnedValue {
        let path = crate::dbus::path::service_path(name);
        let props = PropertiesProxy::builder(&self.conn)
            .path(path)
            .expect("service path")
            .build()
            .await
            .expect("properties proxy")
            .get_all("org.stackd1.Service")
            .await
            .expect("GetAll");
        props
            .get(property)
            .unwrap_or_else(|| panic!("no property {property}"))
            .try_clone()
            .expect("a value")
    }

    pub(super) async fn text_property(&self, name: &str, property: &str) -> String {
        String::try_from(self.property(name, property).await).expect("a string")
    }

    pub(super) async fn restart_count(&self, name: &str) -> u64 {
        u64::try_from(self.property(name, "RestartCount").await).expect("a u64")
    }

    /// The service's tasks, newest first, as `ListTasks` gives them.
    pub(super) async fn tasks(&self, name: &str) -> Vec<TaskRow> {
        let mut filter = std::collections::HashMap::new();
        filter.insert("service", zbus::zvariant::Value::from(name));
        self.manager()
            .await
            .list_tasks(&filter)
            .await
            .expect("ListTasks")
    }

    /// Every task, newest first.
    pub(super) async fn all_tasks(&self) -> Vec<TaskRow> {
        let filter = std::collections::HashMap::new();
        self.manager()
            .await
            .list_tasks(&filter)
            .await
            .expect("ListTasks")
    }

    /// Waits until the start-up reconcile is done, and a little past it:
    /// what Docker does within a few milliseconds of the end of a stackd
    /// task on a project counts as that task's doing (the world's acting
    /// tail, 20 ms), so a person's stop has to come later to be one.
    pub(super) async fn settled(&self) {
        wait_for!(
            "the start-up reconcile done",
            self.all_tasks()
                .await
                .iter()
                .all(|t| !matches!(t.state.as_str(), "pending" | "running"))
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    /// Waits until the newest task of `kind` for `name` has ended.
    pub(super) async fn ended(&self, name: &str, kind: &str) -> TaskRow {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            let tasks = self.tasks(name).await;
            if let Some(t) = tasks.iter().find(|t| t.kind == kind) {
                if !matches!(t.state.as_str(), "pending" | "running") {
                    return t.clone();
                }
            }
            assert!(
                tokio::time::Instant::now() < until,
                "timed out waiting for {name}'s {kind} task to end: {tasks:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The service's tasks of one origin, newest first.
    pub(super) async fn tasks_from(&self, name: &str, origin: &str) -> Vec<TaskRow> {
        let mut tasks = self.tasks(name).await;
        tasks.retain(|t| t.origin.to_string() == origin);
        tasks
    }

    /// A task's log, one string.
    pub(super) async fn log(&self, task: &TaskRow) -> String {
        TaskProxy::builder(&self.conn)
            .path(task.path.clone())
            .expect("task path")
            .build()
            .await
            .expect("task proxy")
            .log_since(0)
            .await
            .expect("LogSince")
            .join("\n")
    }

    /// The simulator's `ps PROJECT`: (name, state, exit, health, restarts)
    /// per container.
    pub(super) fn ps(&self, project: &str) -> Vec<Vec<String>> {
        let out = self.sim.command(&format!("ps {project}")).expect("sim ps");
        out.lines()
            .map(|l| l.split(' ').map(str::to_string).collect())
            .collect()
    }

    pub(super) fn running(&self, project: &str) -> usize {
        self.ps(project)
            .iter()
            .filter(|r| r[1] == "running")
            .count()
    }

    /// Sends one failure-injection command to the simulator.
    #[track_caller]
    pub(super) fn sim(&self, line: &str) {
        if let Err(e) = self.sim.command(line) {
            panic!("sim {line:?}: {e}");
        }
    }

    /// Waits until the simulator has saved its state with something
    /// running (a reboot reads it back).
    pub(super) async fn saved(&self, dir: &Dir) {
        wait_for!(
            "the simulated engine's state saved",
            std::fs::read_to_string(dir.sim_state()).is_ok_and(|t| t.contains("\"running\""))
        );
    }
}
