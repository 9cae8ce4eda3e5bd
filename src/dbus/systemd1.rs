//! The client of systemd's manager (`org.freedesktop.systemd1`) behind
//! services of `kind = "unit"`: `units::UnitManager` over D-Bus. The
//! system manager on the system bus, or the user's (`stackd --user`) on
//! the session bus.
//!
//! Every call that queues a job (`StartTransientUnit`, `StartUnit`,
//! `StopUnit`, `RestartUnit`) waits for that job's `JobRemoved` (the
//! signal stream is opened before the call, so none is missed) and fails
//! unless its result is `done`. A unit is followed through the
//! `PropertiesChanged` of its object: each one is answered by reading the
//! unit's properties again.

use std::collections::HashMap;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::StreamExt;
use zbus::fdo::PropertiesProxy;
use zbus::names::InterfaceName;
use zbus::zvariant::{ObjectPath, OwnedObjectPath, OwnedValue, Value};
use zbus::Connection;

use crate::state::ActiveState;
use crate::units::{OnChange, UnitError, UnitManager, UnitSpec, UnitState};

const DESTINATION: &str = "org.freedesktop.systemd1";
const UNIT_PREFIX: &str = "/org/freedesktop/systemd1/unit/";
const UNIT_IFACE: &str = "org.freedesktop.systemd1.Unit";
const SERVICE_IFACE: &str = "org.freedesktop.systemd1.Service";

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1",
    gen_blocking = false
)]
pub(crate) trait Manager {
    /// `a(sv)` properties, `a(sa(sv))` auxiliary units.
    #[allow(clippy::type_complexity)]
    fn start_transient_unit(
        &self,
        name: &str,
        mode: &str,
        properties: &[(&str, Value<'_>)],
        aux: &[(&str, &[(&str, Value<'_>)])],
    ) -> zbus::Result<OwnedObjectPath>;

    fn start_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn stop_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;

    fn reset_failed_unit(&self, name: &str) -> zbus::Result<()>;

    /// Without it systemd sends no `JobRemoved` to this connection.
    fn subscribe(&self) -> zbus::Result<()>;

    #[zbus(signal)]
    fn job_removed(
        &self,
        id: u32,
        job: ObjectPath<'_>,
        unit: &str,
        result: &str,
    ) -> zbus::Result<()>;
}

/// A connection to a systemd manager.
#[derive(Clone)]
pub struct Systemd {
    conn: Connection,
    manager: ManagerProxy<'static>,
    user: bool,
}

fn err(e: zbus::Error) -> UnitError {
    UnitError::Systemd(e.to_string())
}

/// The unit's object path: its name escaped as systemd's
/// `bus_label_escape` does (every byte outside `[A-Za-z0-9]`, and a
/// leading digit, as `_xx`).
pub fn unit_path(unit: &str) -> String {
    let mut out = String::from(UNIT_PREFIX);
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (b.is_ascii_digit() && i > 0) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

impl Systemd {
    /// Connects to the system manager, or the user's when `user`, and
    /// subscribes to its signals.
    pub async fn connect(user: bool) -> Result<Systemd, UnitError> {
        let conn = if user {
            Connection::session().await
        } else {
            Connection::system().await
        }
        .map_err(err)?;
        let manager = ManagerProxy::new(&conn).await.map_err(err)?;
        manager.subscribe().await.map_err(err)?;
        Ok(Systemd {
            conn,
            manager,
            user,
        })
    }

    /// Runs `call` (which queues a job) and waits for that job to end.
    async fn job<F>(&self, unit: &str, call: F) -> Result<(), UnitError>
    where
        F: std::future::Future<Output = zbus::Result<OwnedObjectPath>>,
    {
        let mut removed = self.manager.receive_job_removed().await.map_err(err)?;
        let job = call.await.map_err(err)?;
        while let Some(signal) = removed.next().await {
            let Ok(args) = signal.args() else { continue };
            if args.job().as_str() != job.as_str() {
                continue;
            }
            if *args.result() == "done" {
                return Ok(());
            }
            return Err(UnitError::Job {
                unit: unit.to_string(),
                job: job.to_string(),
                result: args.result().to_string(),
            });
        }
        Err(UnitError::Systemd(
            "the connection to systemd closed while a job ran".into(),
        ))
    }

    async fn props(&self, unit: &str) -> Result<PropertiesProxy<'static>, UnitError> {
        PropertiesProxy::builder(&self.conn)
            .destination(DESTINATION)
            .map_err(err)?
            .path(unit_path(unit))
            .map_err(err)?
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(err)
    }

    async fn read(&self, unit: &str) -> Result<UnitState, UnitError> {
        let props = self.props(unit).await?;
        let unit_iface = InterfaceName::from_static_str_unchecked(UNIT_IFACE);
        let u = props.get_all(unit_iface).await.map_err(|e| err(e.into()))?;
        // A unit of another type (a .socket, a .target) has no Service
        // interface: its Unit properties are all there is.
        let s = props
            .get_all(InterfaceName::from_static_str_unchecked(SERVICE_IFACE))
            .await
            .unwrap_or_default();
        Ok(state_of(&u, &s))
    }

    async fn start_transient(&self, spec: &UnitSpec) -> Result<(), UnitError> {
        let UnitSpec::Transient {
            unit,
            description,
            exec,
            working_dir,
            environment,
            user,
        } = spec
        else {
            return Err(UnitError::Systemd("not a transient unit".into()));
        };
        // A failed unit of that name holds the name until it is reset.
        let _ = self.manager.reset_failed_unit(unit).await;
        let now = self.read(unit).await?;
        if matches!(
            now.active_state,
            ActiveState::Active | ActiveState::Activating | ActiveState::Reloading
        ) {
            return Ok(());
        }
        if now.load_state == "loaded" {
            // Stopped and not yet collected: start it as it is, unless
            // systemd collects it first (then it is created below).
            match self
                .job(unit, self.manager.start_unit(unit, "replace"))
                .await
            {
                Err(UnitError::Systemd(e)) if e.contains("NoSuchUnit") => {}
                other => return other,
            }
        }
        let Some(path) = exec.first() else {
            return Err(UnitError::Systemd(format!("{unit}: exec is empty")));
        };
        let mut props: Vec<(&str, Value<'_>)> = vec![
            ("Description", Value::from(description.as_str())),
            // "exec": the start fails when the binary cannot be run.
            ("Type", Value::from("exec")),
            (
                "ExecStart",
                Value::from(vec![(path.clone(), exec.clone(), false)]),
            ),
        ];
        if let Some(dir) = working_dir {
            props.push((
                "WorkingDirectory",
                Value::from(dir.to_string_lossy().into_owned()),
            ));
        }
        if !environment.is_empty() {
            let env: Vec<String> = environment
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            props.push(("Environment", Value::from(env)));
        }
        if let Some(user) = user {
            props.push(("User", Value::from(user.as_str())));
        }
        let aux: &[(&str, &[(&str, Value<'_>)])] = &[];
        self.job(
            unit,
            self.manager.start_transient_unit(unit, "fail", &props, aux),
        )
        .await
    }
}

/// The properties stackd reads, from `GetAll` of the Unit and Service
/// interfaces.
fn state_of(u: &HashMap<String, OwnedValue>, s: &HashMap<String, OwnedValue>) -> UnitState {
    fn text(m: &HashMap<String, OwnedValue>, k: &str) -> String {
        m.get(k)
            .and_then(|v| String::try_from(v.clone()).ok())
            .unwrap_or_default()
    }
    fn int<T: TryFrom<OwnedValue> + Default>(m: &HashMap<String, OwnedValue>, k: &str) -> T {
        m.get(k)
            .and_then(|v| T::try_from(v.clone()).ok())
            .unwrap_or_default()
    }
    UnitState {
        load_state: text(u, "LoadState"),
        active_state: text(u, "ActiveState").into(),
        sub_state: text(u, "SubState").into(),
        result: text(s, "Result"),
        exec_main_code: int(s, "ExecMainCode"),
        exec_main_status: int(s, "ExecMainStatus"),
        main_pid: int(s, "MainPID"),
        control_group: text(s, "ControlGroup"),
        n_restarts: int(s, "NRestarts"),
        active_enter_usec: int(u, "ActiveEnterTimestamp"),
        inactive_enter_usec: int(u, "InactiveEnterTimestamp"),
    }
}

impl UnitManager for Systemd {
    fn start<'a>(&'a self, spec: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>> {
        Box::pin(async move {
            match spec {
                UnitSpec::Transient { .. } => self.start_transient(spec).await,
                UnitSpec::Existing { unit } => {
                    let _ = self.manager.reset_failed_unit(unit).await;
                    self.job(unit, self.manager.start_unit(unit, "replace"))
                        .await
                }
            }
        })
    }

    fn stop<'a>(&'a self, spec: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>> {
        Box::pin(async move {
            let unit = spec.unit();
            let now = self.read(unit).await?;
            if matches!(
                now.active_state,
                ActiveState::Inactive | ActiveState::Failed
            ) {
                // Nothing runs: a transient unit that is gone, or one
                // that ended (a failure is reset: a stop is a person's
                // word, the evidence is no longer needed).
                if now.active_state == ActiveState::Failed {
                    let _ = self.manager.reset_failed_unit(unit).await;
                }
                return Ok(());
            }
            self.job(unit, self.manager.stop_unit(unit, "replace"))
                .await
        })
    }

    fn restart<'a>(&'a self, spec: &'a UnitSpec) -> BoxFuture<'a, Result<(), UnitError>> {
        Box::pin(async move {
            match spec {
                UnitSpec::Existing { unit } => {
                    let _ = self.manager.reset_failed_unit(unit).await;
                    self.job(unit, self.manager.restart_unit(unit, "replace"))
                        .await
                }
                UnitSpec::Transient { .. } => {
                    self.stop(spec).await?;
                    self.start_transient(spec).await
                }
            }
        })
    }

    fn state<'a>(&'a self, unit: &'a str) -> BoxFuture<'a, Result<UnitState, UnitError>> {
        Box::pin(self.read(unit))
    }

    fn follow(&self, unit: String, on_change: OnChange) -> BoxFuture<'static, ()> {
        let me = self.clone();
        Box::pin(async move {
            loop {
                let stream = match me.props(&unit).await {
                    Ok(p) => p.receive_properties_changed().await.ok(),
                    Err(_) => None,
                };
                if let Some(mut stream) = stream {
                    // Read after the match rule is in place: no change is
                    // missed between the two.
                    if let Ok(state) = me.read(&unit).await {
                        on_change(state);
                    }
                    while stream.next().await.is_some() {
                        if let Ok(state) = me.read(&unit).await {
                            on_change(state);
                        }
                    }
                }
                tracing::debug!(unit, "lost the unit's signals; following again");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    fn user(&self) -> bool {
        self.user
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_paths_are_escaped_as_systemd_does() {
        assert_eq!(
            unit_path("stackd-web.service"),
            "/org/freedesktop/systemd1/unit/stackd_2dweb_2eservice"
        );
        assert_eq!(
            unit_path("nginx.service"),
            "/org/freedesktop/systemd1/unit/nginx_2eservice"
        );
        assert_eq!(
            unit_path("9p.mount"),
            "/org/freedesktop/systemd1/unit/_39p_2emount"
        );
    }
}
