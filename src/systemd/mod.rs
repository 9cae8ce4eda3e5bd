//! What systemd and journald expect of a well-behaved daemon: the notify
//! protocol (READY, STATUS, RELOADING, STOPPING, WATCHDOG), the boot id, and
//! the MESSAGE_IDs documented in `systemd/stackd.catalog`.

use std::path::Path;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::warn;

/// Boot recovery finished: what came back and what did not.
pub const MESSAGE_RECOVERED: &str = "db51922c32c845bbafe3cb93a1603fcc";
/// A task failed.
pub const MESSAGE_TASK_FAILED: &str = "aad0d99b340044ada5fd61d5957160c1";
/// Docker stopped answering / answers again.
pub const MESSAGE_DOCKER_LOST: &str = "9b3153e0e5314871a91af83ce686fe84";
/// A service's health check failed `retries` times in a row.
pub const MESSAGE_UNHEALTHY: &str = "838c623d352a474bb2a9b87ebd2bd97c";
/// stackd stopped restarting a failing service (`max_restarts` in `window`).
pub const MESSAGE_GAVE_UP: &str = "7e61e01ca82544a1a645ed81386e1499";
/// A service's CPU or memory use stayed above its threshold for `sustain`.
pub const MESSAGE_SPIKE_STARTED: &str = "545039ac9d07465299144e24e72c9986";
/// A resource spike is over.
pub const MESSAGE_SPIKE_ENDED: &str = "c0e17e8db4294af785dcc95c50b8b188";
/// A peer host stopped answering on its peer endpoint.
pub const MESSAGE_PEER_LOST: &str = "62c1d366c95e4eada888bdbeaecdeca3";
/// A lost peer host answers again.
pub const MESSAGE_PEER_BACK: &str = "e4a44da66a1b498391b94360f7ef0939";
/// A configuration reload was refused; the running configuration stays.
pub const MESSAGE_RELOAD_FAILED: &str = "c273d99cff4c47a885f38ec5d2c2d975";
/// The state database cannot write (full state directory) / writes again.
pub const MESSAGE_STATE_WRITE: &str = "f373aa1e7580418f97ea16ecec9f9deb";
/// A move's target stopped answering before it confirmed the start.
pub const MESSAGE_MIGRATE_IN_DOUBT: &str = "88c4207b1e8b449ba659b3edf24fc3ad";
/// A move that was in doubt is settled (it happened, or it did not).
pub const MESSAGE_MIGRATE_SETTLED: &str = "3ba9630008e84beda23045dfe40f9e8f";
/// Two hosts both wanted a service of one host running; this one stops it.
pub const MESSAGE_HANDOFF_CONFLICT: &str = "4fd03e4ec3404d7b9be90ddacc0bffcb";
/// The state directory's or Docker's file system is low on space.
pub const MESSAGE_DISK_LOW: &str = "ffb5c6df8d6a4e6db220c1e3fcebf4ea";

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        warn!("cannot notify the service manager: {e}");
    }
}

pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

pub fn status(status: &str) {
    send(&[NotifyState::Status(status)]);
}

/// RELOADING=1 with MONOTONIC_USEC, as systemd ≥ 253 requires for
/// `Type=notify-reload`; READY=1 follows when the reload is done.
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// Half the watchdog interval the manager asked for, if it asked.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

pub fn watchdog_ping() {
    send(&[NotifyState::Watchdog]);
}

/// The kernel's boot id (or the file tests point `boot_id_file` at). At
/// most [`BOOT_ID_MAX`] bytes are read (a device such as `/dev/zero` would
/// never end), and what is read must be a UUID, as the kernel's is.
pub fn read_boot_id(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(BOOT_ID_MAX)
        .read_to_end(&mut bytes)?;
    let text = String::from_utf8_lossy(&bytes);
    let id = text.trim();
    if is_boot_id(id) {
        Ok(id.to_string())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "this is not a boot id (a UUID such as 0f8c0c0e-4a3f-4b51-9d3c-2c1f0f1a2b3c, \
             as /proc/sys/kernel/random/boot_id holds)",
        ))
    }
}

/// Raises the soft limit on open files to the hard one, as systemd
/// advises for a daemon that may need many (its unit keeps the soft limit
/// at 1024 for the programs it starts). Returns (before, after); the same
/// twice when nothing changed or the limit cannot be read.
pub fn raise_nofile_limit() -> (u64, u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return (0, 0);
    };
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return (soft, hard);
    }
    (soft, soft)
}

/// The most of a boot id file read: a UUID, a newline, and some slack.
pub const BOOT_ID_MAX: u64 = 64;

/// A UUID: 32 hex digits, with or without the four dashes.
fn is_boot_id(s: &str) -> bool {
    let hex: String = s.chars().filter(|c| *c != '-').collect();
    let dashed = s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| s.as_bytes()[i] == b'-');
    hex.len() == 32 && hex.chars().all(|c| c.is_ascii_hexdigit()) && (dashed || !s.contains('-'))
}

/// True when stderr is connected to the journal (systemd sets
/// `JOURNAL_STREAM=dev:ino` for the stream it hands us).
pub fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let value = value.to_string_lossy();
    let Some((dev, ino)) = value.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_are_uuids_read_boundedly() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("id");
        std::fs::write(&f, "0f8c0c0e-4a3f-4b51-9d3c-2c1f0f1a2b3c\n").unwrap();
        assert_eq!(
            read_boot_id(&f).unwrap(),
            "0f8c0c0e-4a3f-4b51-9d3c-2c1f0f1a2b3c"
        );
        std::fs::write(&f, "hello\n").unwrap();
        assert!(read_boot_id(&f).is_err());
        // /dev/zero never ends: only BOOT_ID_MAX bytes are read.
        let e = read_boot_id(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("not a boot id"), "{e}");
        assert_eq!(
            read_boot_id(Path::new("/proc/sys/kernel/random/boot_id"))
                .map(|s| s.len())
                .unwrap_or(36),
            36
        );
    }
}
