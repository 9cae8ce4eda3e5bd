//! The D-Bus adapter: `org.stackd1` on the system bus (or the session bus
//! with `--user`), plus a private peer-to-peer socket as systemd has
//! `/run/systemd/private`, so root can use stackctl without a bus.
//!
//! Architecture invariant: only this module knows zbus. It holds a
//! [`Control`] and nothing else of the core; every method is a thin call.

pub mod agent;
mod auth;
pub mod client;
mod error;
mod logs;
mod manager;
pub mod path;
pub(crate) mod proxy;
mod remote;
mod service;
pub mod systemd1;
mod task;
pub mod types;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;
use tokio::net::UnixListener;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};
use zbus::fdo::Properties;
use zbus::names::InterfaceName;
use zbus::object_server::SignalEmitter;
use zbus::zvariant::Value;
use zbus::Connection;

use crate::control::Control;
use crate::events::Event;
use crate::store::now_usec;

pub use auth::POLKIT_ACTION;
pub use error::Error;

pub const BUS_NAME: &str = "org.stackd1";

#[derive(Debug, Error)]
pub enum DbusError {
    #[error("cannot connect to the {bus} bus: {source}")]
    Connect {
        bus: &'static str,
        source: zbus::Error,
    },
    #[error("cannot take the bus name {BUS_NAME} on the {bus} bus (is another stackd running?): {source}")]
    Name {
        bus: &'static str,
        source: zbus::Error,
    },
    #[error("cannot serve the private socket {path}: {source}")]
    Private {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Zbus(#[from] zbus::Error),
}

pub(crate) struct Inner {
    control: Control,
    policy: auth::Policy,
    /// The bus connection (id 0), then live private-socket connections.
    connections: Mutex<Vec<(u64, Connection)>>,
    next_conn: std::sync::atomic::AtomicU64,
    /// Task objects currently served, with when they finished (0 = running).
    tasks: Mutex<HashMap<u64, u64>>,
    services: Mutex<HashSet<String>>,
}

/// What the interface objects hold: the core and the policy.
#[derive(Clone)]
pub(crate) struct Shared(Arc<Inner>);

impl std::ops::Deref for Shared {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// Finished task objects stay on the bus this long (GetTask brings an older
/// one back on demand).
const TASK_OBJECT_TTL: Duration = Duration::from_secs(600);

impl Shared {
    fn connections(&self) -> Vec<(u64, Connection)> {
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn add_connection(&self, conn: Connection) {
        let id = self
            .next_conn
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.connections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((id, conn));
    }

    /// Forget a private connection whose peer went away (never the bus).
    fn forget(&self, id: u64) {
        if id != 0 {
            debug!("a private-socket client went away");
            self.connections
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(i, _)| *i != id);
        }
    }

    /// Serve a task object on every connection (idempotent).
    async fn register_task(&self, id: u64) {
        let finished = self
            .control
            .task(id)
            .ok()
            .and_then(|t| t.finished_usec)
            .unwrap_or(0);
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, finished);
        // On every connection, also one that was being set up when the task
        // was first served: serving an object twice is a no-op.
        for (_, conn) in self.connections() {
            self.serve_task(&conn, id).await;
        }
    }

    async fn serve_task(&self, conn: &Connection, id: u64) {
        let obj = task::Task {
            shared: self.clone(),
            id,
        };
        if let Err(e) = conn.object_server().at(path::task_path(id), obj).await {
            warn!("cannot serve task {id} on the bus: {e}");
        }
    }

    async fn serve_service(&self, conn: &Connection, name: &str) {
        let obj = service::Service {
            shared: self.clone(),
            name: name.to_string(),
        };
        if let Err(e) = conn.object_server().at(path::service_path(name), obj).await {
            warn!("cannot serve service {name} on the bus: {e}");
        }
    }

    /// Everything a new connection needs: manager, services, live tasks,
    /// added to the builder so they answer from the connection's first
    /// message. (An object server created after the connection is up can
    /// miss calls that arrived before it: the client would wait forever.)
    fn serve_all<'b>(
        &self,
        builder: zbus::connection::Builder<'b>,
    ) -> zbus::Result<zbus::connection::Builder<'b>> {
        let mut builder = builder.serve_at(
            path::MANAGER_PATH,
            manager::Manager {
                shared: self.clone(),
            },
        )?;
        let services: Vec<String> = self
            .services
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for name in services {
            builder = builder.serve_at(
                path::service_path(&name).into_inner(),
                service::Service {
                    shared: self.clone(),
                    name,
                },
            )?;
        }
        let tasks: Vec<u64> = self
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        for id in tasks {
            builder = builder.serve_at(
                path::task_path(id).into_inner(),
                task::Task {
                    shared: self.clone(),
                    id,
                },
            )?;
        }
        Ok(builder)
    }

    /// Add and remove service objects after a reload.
    async fn sync_services(&self) {
        let want: HashSet<String> = self.control.service_names().into_iter().collect();
        let (add, remove) = {
            let mut have = self.services.lock().unwrap_or_else(|e| e.into_inner());
            let add: Vec<String> = want.difference(&have).cloned().collect();
            let remove: Vec<String> = have.difference(&want).cloned().collect();
            *have = want;
            (add, remove)
        };
        for (_, conn) in self.connections() {
            for name in &add {
                self.serve_service(&conn, name).await;
            }
            for name in &remove {
                let _ = conn
                    .object_server()
                    .remove::<service::Service, _>(path::service_path(name))
                    .await;
            }
        }
    }

    async fn properties_changed(
        &self,
        path: &zbus::zvariant::OwnedObjectPath,
        iface: &'static str,
        props: HashMap<&'static str, Value<'static>>,
    ) {
        let changed: HashMap<&str, Value<'_>> = props.into_iter().collect();
        for (cid, conn) in self.connections() {
            let Ok(emitter) = SignalEmitter::new(&conn, path.clone()) else {
                continue;
            };
            let name = InterfaceName::from_static_str_unchecked(iface);
            let values: HashMap<&str, Value<'_>> = changed
                .iter()
                .map(|(k, v)| (*k, v.try_clone().unwrap_or_else(|_| Value::from(""))))
                .collect();
            if let Err(e) =
                Properties::properties_changed(&emitter, name, values, Cow::Borrowed(&[])).await
            {
                debug!("cannot signal a connection: {e}");
                self.forget(cid);
            }
        }
    }

    async fn manager_signal(&self, ev: &Event) {
        for (cid, conn) in self.connections() {
            let Ok(emitter) = SignalEmitter::new(&conn, path::MANAGER_PATH) else {
                continue;
            };
            let sent = match ev {
                Event::TaskNew { id, kind, service } => {
                    manager::Manager::task_new(&emitter, *id, path::task_path(*id), kind, service)
                        .await
                }
                Event::TaskRemoved {
                    id,
                    service,
                    result,
                } => {
                    manager::Manager::task_removed(
                        &emitter,
                        *id,
                        path::task_path(*id),
                        service,
                        result,
                    )
                    .await
                }
                Event::Alert(a) => {
                    manager::Manager::alert(
                        &emitter,
                        a.severity.as_str(),
                        &a.kind,
                        &a.host,
                        &a.service,
                        &a.summary,
                        &a.body,
                        a.usec,
                    )
                    .await
                }
                _ => Ok(()),
            };
            if let Err(e) = sent {
                debug!("cannot signal a connection: {e}");
                self.forget(cid);
            }
        }
    }

    async fn manager_changed(&self) {
        let m = self.control.manager();
        let props = HashMap::from([
            (
                "SystemState",
                Value::from(self.control.system_state().as_str().to_string()),
            ),
            ("DockerConnected", Value::from(m.docker_connected)),
            ("DockerError", Value::from(m.docker_error)),
            ("ConfigHash", Value::from(m.config_hash)),
            ("Host", Value::from(m.host)),
        ]);
        let path =
            zbus::zvariant::OwnedObjectPath::try_from(path::MANAGER_PATH).expect("valid path");
        self.properties_changed(&path, "org.stackd1.Manager", props)
            .await;
    }

    /// Drop finished task objects that nobody looked at for a while.
    async fn sweep_tasks(&self) {
        let cutoff = now_usec()
            .saturating_sub(u64::try_from(TASK_OBJECT_TTL.as_micros()).unwrap_or(u64::MAX));
        let old: Vec<u64> = {
            let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
            let old: Vec<u64> = tasks
                .iter()
                .filter(|(_, f)| **f != 0 && **f < cutoff)
                .map(|(id, _)| *id)
                .collect();
            for id in &old {
                tasks.remove(id);
            }
            old
        };
        for (_, conn) in self.connections() {
            for id in &old {
                let _ = conn
                    .object_server()
                    .remove::<task::Task, _>(path::task_path(*id))
                    .await;
            }
        }
    }
}

/// Turn core events into signals and PropertiesChanged.
async fn forward(shared: Shared) {
    let mut rx = shared.control.events().subscribe();
    let mut sweep = tokio::time::interval(Duration::from_secs(60));
    loop {
        let ev = tokio::select! {
            ev = rx.recv() => ev,
            _ = sweep.tick() => { shared.sweep_tasks().await; continue; }
        };
        let ev = match ev {
            Ok(ev) => ev,
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                warn!("D-Bus fell {n} events behind; re-announcing every service");
                for name in shared.control.service_names() {
                    if let Ok(s) = shared.control.service(&name) {
                        shared
                            .properties_changed(
                                &path::service_path(&name),
                                "org.stackd1.Service",
                                service::properties(&s),
                            )
                            .await;
                    }
                }
                continue;
            }
            Err(_) => return,
        };
        match &ev {
            Event::TaskNew { id, .. } => {
                shared.register_task(*id).await;
                shared.manager_signal(&ev).await;
            }
            Event::TaskStarted { id } => {
                if let Ok(t) = shared.control.task(*id) {
                    shared
                        .properties_changed(
                            &path::task_path(*id),
                            "org.stackd1.Task",
                            task::properties(&t),
                        )
                        .await;
                }
            }
            Event::TaskRemoved { id, .. } => {
                if let Ok(t) = shared.control.task(*id) {
                    if let Some(f) = shared
                        .tasks
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .get_mut(id)
                    {
                        *f = t.finished_usec.unwrap_or_else(now_usec);
                    }
                    shared
                        .properties_changed(
                            &path::task_path(*id),
                            "org.stackd1.Task",
                            task::properties(&t),
                        )
                        .await;
                }
                shared.manager_signal(&ev).await;
            }
            Event::ServiceChanged { service } => {
                if let Ok(s) = shared.control.service(service) {
                    shared
                        .properties_changed(
                            &path::service_path(service),
                            "org.stackd1.Service",
                            service::properties(&s),
                        )
                        .await;
                }
            }
            Event::ServicesReloaded => shared.sync_services().await,
            Event::ManagerChanged => shared.manager_changed().await,
            // `[notify.desktop]`, when present, chooses which alerts the
            // signal carries; without it every alert is signalled.
            Event::Alert(a) => {
                let wanted = shared
                    .control
                    .config()
                    .notify
                    .desktop
                    .as_ref()
                    .map_or(true, |f| crate::notify::router::accepts(f, a));
                if wanted {
                    shared.manager_signal(&ev).await;
                }
            }
        }
    }
}

/// Accept peer-to-peer connections on the private socket.
async fn serve_private(shared: Shared, listener: UnixListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!("private socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let guid = zbus::Guid::generate();
            let built = zbus::connection::Builder::unix_stream(stream)
                .server(guid)
                .map(|b| b.p2p())
                .and_then(|b| shared.serve_all(b));
            let conn = match built {
                Ok(b) => b.build().await,
                Err(e) => Err(e),
            };
            match conn {
                Ok(conn) => shared.add_connection(conn),
                Err(e) => debug!("private socket: handshake failed: {e}"),
            }
        });
    }
}

/// The running adapter; dropping it releases the bus name and the socket.
pub struct Server {
    _bus: Connection,
    tasks: Vec<JoinHandle<()>>,
    private_path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if !self.private_path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.private_path);
        }
    }
}

/// Serve every object, then take the bus name (so nobody sees the name
/// before the objects answer), then open the private socket.
pub async fn serve(control: Control, user_mode: bool) -> Result<Server, DbusError> {
    let cfg = control.config();
    let shared = Shared::new(control, user_mode);
    let bus = if user_mode { "session" } else { "system" };
    let builder = if user_mode {
        zbus::connection::Builder::session()
    } else {
        zbus::connection::Builder::system()
    }
    .map_err(|source| DbusError::Connect { bus, source })?;
    let conn = shared
        .serve_all(builder)?
        .build()
        .await
        .map_err(|source| DbusError::Connect { bus, source })?;
    shared.add_connection(conn.clone());
    conn.request_name(BUS_NAME)
        .await
        .map_err(|source| DbusError::Name { bus, source })?;
    info!("serving {BUS_NAME} on the {bus} bus");

    let private_path = cfg.runtime_dir.join("private");
    let listener = bind_private(&private_path).map_err(|source| DbusError::Private {
        path: private_path.clone(),
        source,
    })?;
    let tasks = vec![
        tokio::spawn(forward(shared.clone())),
        tokio::spawn(serve_private(shared.clone(), listener)),
    ];
    Ok(Server {
        _bus: conn,
        tasks,
        private_path,
    })
}

impl Shared {
    fn new(control: Control, user_mode: bool) -> Shared {
        let admin_group = control.config().admin_group.clone();
        Shared(Arc::new(Inner {
            policy: auth::Policy {
                user_mode,
                admin_group,
            },
            services: Mutex::new(control.service_names().into_iter().collect()),
            control,
            connections: Mutex::new(Vec::new()),
            next_conn: std::sync::atomic::AtomicU64::new(0),
            tasks: Mutex::new(HashMap::new()),
        }))
    }
}

/// Serves every object on one peer-to-peer connection over `stream` (no
/// bus, no name), as the private socket does for each of its clients, with
/// signals and `PropertiesChanged` forwarded: how the core's in-process
/// tests talk to a core over D-Bus.
pub async fn serve_stream(
    control: Control,
    user_mode: bool,
    stream: tokio::net::UnixStream,
) -> Result<Server, DbusError> {
    let shared = Shared::new(control, user_mode);
    let connect = |source| DbusError::Connect { bus: "p2p", source };
    let conn = shared
        .serve_all(
            zbus::connection::Builder::unix_stream(stream)
                .server(zbus::Guid::generate())
                .map_err(connect)?
                .p2p(),
        )
        .map_err(connect)?
        .build()
        .await
        .map_err(connect)?;
    shared.add_connection(conn.clone());
    Ok(Server {
        _bus: conn,
        tasks: vec![tokio::spawn(forward(shared))],
        private_path: PathBuf::new(),
    })
}

fn bind_private(path: &std::path::Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}
