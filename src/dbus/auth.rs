//! Who may change state, and who may read logs. Listing and status are
//! open to everyone; changing needs uid 0, the daemon's own uid (the point
//! of `--user` mode), membership of `admin_group`, or the polkit action
//! `org.stackd1.manage`.
//!
//! Logs (container output, task logs, diagnoses) carry what services print,
//! passwords included, so reading them needs what `journalctl` needs for a
//! system service's output: uid 0 or the daemon's own uid, group `adm` or
//! `systemd-journal` (the caller's process groups, as the bus sees them),
//! `admin_group`, or the polkit action `org.stackd1.read-logs`.

use std::collections::HashMap;

use nix::unistd::{Gid, Group, Uid, User};
use tracing::debug;
use zbus::message::Header;
use zbus::zvariant::Value;
use zbus::Connection;

use super::error::Error;

pub const POLKIT_ACTION: &str = "org.stackd1.manage";
/// The polkit action that lets a caller read logs.
pub(super) const POLKIT_READ_LOGS: &str = "org.stackd1.read-logs";
/// Groups whose members may read logs, as they may read the journal.
pub(super) const LOG_GROUPS: [&str; 2] = ["adm", "systemd-journal"];

#[derive(Clone, Debug)]
pub(super) struct Policy {
    pub user_mode: bool,
    pub admin_group: Option<String>,
}

/// The caller's uid: from the bus driver for bus clients, from the socket's
/// peer credentials on the private peer-to-peer socket.
async fn caller_uid(conn: &Connection, header: &Header<'_>) -> Result<u32, Error> {
    // A peer-to-peer connection has no bus (and so no unique name): ask the
    // socket. Asking a bus driver there would wait for an answer forever.
    match (conn.unique_name(), header.sender()) {
        (Some(_), Some(sender)) => {
            let dbus = zbus::fdo::DBusProxy::new(conn).await?;
            Ok(dbus
                .get_connection_unix_user(sender.clone().into())
                .await
                .map_err(|e| Error::AccessDenied(format!("cannot identify the caller: {e}")))?)
        }
        _ => conn
            .peer_creds()
            .await
            .ok()
            .and_then(|c| c.unix_user_id())
            .ok_or_else(|| Error::AccessDenied("cannot identify the caller".into())),
    }
}

/// The caller's process groups (primary and supplementary), as the bus
/// driver reports them; None on a peer-to-peer connection or when the bus
/// cannot tell.
async fn caller_groups(conn: &Connection, header: &Header<'_>) -> Option<Vec<u32>> {
    let (Some(_), Some(sender)) = (conn.unique_name(), header.sender()) else {
        return None;
    };
    let dbus = zbus::fdo::DBusProxy::new(conn).await.ok()?;
    dbus.get_connection_credentials(sender.clone().into())
        .await
        .ok()?
        .into_unix_group_ids()
}

/// Whether the caller is in `group`: by its process groups when the bus
/// reports them (what a file permission would see), else by the user
/// database.
fn caller_in_group(uid: u32, gids: Option<&[u32]>, group: &str) -> bool {
    match gids {
        Some(gids) => Group::from_name(group)
            .ok()
            .flatten()
            .is_some_and(|g| gids.contains(&g.gid.as_raw())),
        None => in_group(uid, group),
    }
}

fn in_group(uid: u32, group: &str) -> bool {
    let Ok(Some(group)) = Group::from_name(group) else {
        return false;
    };
    let Ok(Some(user)) = User::from_uid(Uid::from_raw(uid)) else {
        return false;
    };
    if user.gid == group.gid || group.mem.iter().any(|m| m == &user.name) {
        return true;
    }
    let Ok(name) = std::ffi::CString::new(user.name) else {
        return false;
    };
    nix::unistd::getgrouplist(&name, user.gid)
        .map(|gids: Vec<Gid>| gids.contains(&group.gid))
        .unwrap_or(false)
}

async fn polkit_allows(conn: &Connection, header: &Header<'_>, action: &str) -> bool {
    let (Some(_), Some(sender)) = (conn.unique_name(), header.sender()) else {
        return false;
    };
    let mut subject_details: HashMap<&str, Value<'_>> = HashMap::new();
    subject_details.insert("name", Value::from(sender.as_str()));
    let details: HashMap<&str, &str> = HashMap::new();
    // Flag 1: AllowUserInteraction (an agent may ask for a password).
    let reply = conn
        .call_method(
            Some("org.freedesktop.PolicyKit1"),
            "/org/freedesktop/PolicyKit1/Authority",
            Some("org.freedesktop.PolicyKit1.Authority"),
            "CheckAuthorization",
            &(
                ("system-bus-name", subject_details),
                action,
                details,
                1u32,
                "",
            ),
        )
        .await;
    match reply {
        Ok(msg) => msg
            .body()
            .deserialize::<(bool, bool, HashMap<String, String>)>()
            .map(|(authorized, _challenge, _)| authorized)
            .unwrap_or(false),
        Err(e) => {
            debug!("polkit did not answer: {e}");
            false
        }
    }
}

impl Policy {
    /// Ok when the caller may change state; else a named AccessDenied that
    /// says what would be needed.
    pub(super) async fn check(&self, conn: &Connection, header: &Header<'_>) -> Result<(), Error> {
        let uid = caller_uid(conn, header).await?;
        if uid == 0 || uid == Uid::effective().as_raw() {
            return Ok(());
        }
        if !self.user_mode {
            if let Some(group) = &self.admin_group {
                // The caller's process groups when the bus reports them,
                // as for logs: what a file permission would see, so the
                // same member passes both checks.
                let gids = caller_groups(conn, header).await;
                if caller_in_group(uid, gids.as_deref(), group) {
                    return Ok(());
                }
            }
            if polkit_allows(conn, header, POLKIT_ACTION).await {
                return Ok(());
            }
        }
        let how = if self.user_mode {
            "this stackd runs in --user mode; only its own user may change state".to_string()
        } else {
            let group = self
                .admin_group
                .as_deref()
                .map(|g| format!(", membership of group {g}"))
                .unwrap_or_default();
            format!("changing state needs root{group}, or polkit authorization {POLKIT_ACTION}")
        };
        Err(Error::AccessDenied(format!(
            "uid {uid} may not do this: {how}"
        )))
    }

    /// Ok when the caller may read logs (see the module comment); else a
    /// named AccessDenied that says what would be needed.
    pub(super) async fn check_logs(
        &self,
        conn: &Connection,
        header: &Header<'_>,
    ) -> Result<(), Error> {
        let uid = caller_uid(conn, header).await?;
        if uid == 0 || uid == Uid::effective().as_raw() {
            return Ok(());
        }
        let gids = caller_groups(conn, header).await;
        let mut groups: Vec<&str> = LOG_GROUPS.to_vec();
        if !self.user_mode {
            if let Some(g) = &self.admin_group {
                groups.push(g);
            }
        }
        if groups
            .iter()
            .any(|g| caller_in_group(uid, gids.as_deref(), g))
        {
            return Ok(());
        }
        if !self.user_mode && polkit_allows(conn, header, POLKIT_READ_LOGS).await {
            return Ok(());
        }
        let polkit = if self.user_mode {
            String::new()
        } else {
            format!(", or polkit authorization {POLKIT_READ_LOGS}")
        };
        Err(Error::AccessDenied(format!(
            "uid {uid} may not read logs: logs may hold secrets, so reading them needs root, \
             this daemon's user, group {}{polkit} (as journalctl does)",
            groups.join(" or ")
        )))
    }
}
