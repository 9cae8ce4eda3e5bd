//! How many connections the peer endpoint holds, so that a flood (no token
//! needed to open a TCP connection) cannot take the file descriptors that
//! tasks and recoveries need: at most [`MAX_CONNECTIONS`] at once, at most
//! [`MAX_PER_SOURCE`] from one address, and no accepting at all while the
//! process's open descriptors are within [`reserve`] of its limit (the
//! pending connections wait in the kernel's backlog, which costs the
//! daemon nothing). Idle and slow clients are closed by the server's
//! timeouts (`server.rs`); what is refused here is logged once per
//! [`LOG_INTERVAL`] with counts, not once per connection.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::warn;

/// Connections held at once.
pub const MAX_CONNECTIONS: usize = 256;
/// Connections held at once from one source address.
pub const MAX_PER_SOURCE: usize = 32;
/// Refusals are summed up in one log line per this interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Descriptors kept free for everything but the peer endpoint: a quarter
/// of the limit, at least 256 (Compose runs, pipes, the store, Docker),
/// but never more than half (a tiny limit still lets peers in).
pub fn reserve(limit: u64) -> u64 {
    (limit / 4).max(256).min(limit / 2)
}

/// The soft limit on open files, if it can be read.
pub fn fd_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// Descriptors this process has open now.
pub fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

#[derive(Default)]
struct State {
    total: usize,
    per_source: HashMap<IpAddr, usize>,
    /// Since the last log line: refused for their source, for the total,
    /// times accepting paused for descriptors, accept errors.
    refused_source: u64,
    refused_total: u64,
    paused_fds: u64,
    accept_errors: u64,
    busiest: Option<IpAddr>,
    last_log: Option<Instant>,
}

/// The shared count of open connections; [`Permit`]s give back their slot.
#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    freed: Notify,
}

/// One admitted connection; dropping it frees the slot.
pub struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.gate.lock();
        s.total = s.total.saturating_sub(1);
        if let Some(n) = s.per_source.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                s.per_source.remove(&self.ip);
            }
        }
        drop(s);
        self.gate.freed.notify_waiters();
    }
}

impl Gate {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.lock().total
    }

    /// Whether another connection may be accepted now: below the total
    /// and the descriptors' reserve.
    fn room(&self) -> bool {
        if self.lock().total >= MAX_CONNECTIONS {
            return false;
        }
        match (open_fds(), fd_limit()) {
            // +2: the accepted socket, and a TLS or timer descriptor.
            (Some(open), Some(limit)) => open + 2 + reserve(limit) <= limit,
            _ => true,
        }
    }

    /// Returns once a connection may be accepted (or never, while the
    /// endpoint is full; the caller selects on shutdown too).
    pub async fn wait_for_room(&self) {
        let mut noted = false;
        loop {
            let freed = self.freed.notified();
            if self.room() {
                return;
            }
            if !noted {
                noted = true;
                let mut s = self.lock();
                if s.total >= MAX_CONNECTIONS {
                    s.refused_total += 1;
                } else {
                    s.paused_fds += 1;
                }
                self.log(s);
            }
            // Descriptors may be freed elsewhere too: look again now and then.
            let _ = tokio::time::timeout(Duration::from_millis(200), freed).await;
        }
    }

    /// Admits a connection from `ip`, or None when that address holds
    /// [`MAX_PER_SOURCE`] already (the caller closes the socket).
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Permit> {
        let mut s = self.lock();
        let n = s.per_source.get(&ip).copied().unwrap_or(0);
        if n >= MAX_PER_SOURCE {
            s.refused_source += 1;
            s.busiest = Some(ip);
            self.log(s);
            return None;
        }
        s.per_source.insert(ip, n + 1);
        s.total += 1;
        Some(Permit {
            gate: self.clone(),
            ip,
        })
    }

    /// An `accept` failed (EMFILE and friends): counted, logged with the
    /// rest.
    pub fn accept_failed(&self, e: &std::io::Error) {
        let mut s = self.lock();
        s.accept_errors += 1;
        if s.last_log.is_none_or_elapsed() {
            warn!("peer endpoint: accept failed: {e}");
        }
        self.log(s);
    }

    /// One line with the counts since the last one, at most once per
    /// [`LOG_INTERVAL`].
    fn log(&self, mut s: std::sync::MutexGuard<'_, State>) {
        if !s.last_log.is_none_or_elapsed() {
            return;
        }
        let limit = fd_limit().unwrap_or(0);
        warn!(
            "peer endpoint under pressure: holding {} connections (at most {MAX_CONNECTIONS}, \
             {MAX_PER_SOURCE} per address); in the last {}s refused {} over the per-address \
             limit (last from {}), waited {} times at the total limit and {} times for file \
             descriptors ({} open of {limit}, {} kept for tasks), {} accept errors",
            s.total,
            LOG_INTERVAL.as_secs(),
            s.refused_source,
            s.busiest
                .map_or_else(|| "-".to_string(), |ip| ip.to_string()),
            s.refused_total,
            s.paused_fds,
            open_fds().unwrap_or(0),
            reserve(limit),
            s.accept_errors,
        );
        s.refused_source = 0;
        s.refused_total = 0;
        s.paused_fds = 0;
        s.accept_errors = 0;
        s.last_log = Some(Instant::now());
    }
}

trait Elapsed {
    fn is_none_or_elapsed(&self) -> bool;
}

impl Elapsed for Option<Instant> {
    fn is_none_or_elapsed(&self) -> bool {
        self.map_or(true, |t| t.elapsed() >= LOG_INTERVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_capped_and_permits_give_back() {
        let gate = Arc::new(Gate::default());
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let held: Vec<Permit> = (0..MAX_PER_SOURCE)
            .map(|_| gate.admit(a).expect("below the cap"))
            .collect();
        assert!(gate.admit(a).is_none());
        let other = gate.admit(b).expect("another address has its own share");
        assert_eq!(gate.held(), MAX_PER_SOURCE + 1);
        drop(held);
        drop(other);
        assert_eq!(gate.held(), 0);
        assert!(gate.admit(a).is_some());
    }

    #[test]
    fn the_reserve_is_a_quarter_or_256() {
        assert_eq!(reserve(1024), 256);
        assert_eq!(reserve(524_288), 131_072);
        assert_eq!(reserve(100), 50);
    }
}
