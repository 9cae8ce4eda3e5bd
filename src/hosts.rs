//! What this host knows of the other hosts of the cluster: the peer
//! liveness board. The heartbeat (in `peer/`) records each answer or
//! failure here; `Manager.ListHosts` and the hand-off rule read it.
//!
//! Rule: a peer is *lost* after [`LOST_AFTER`] heartbeats in a row failed
//! (so at most that many intervals after its last answer), and *back* at
//! its first answer after that. Both are announced once. The transitions are
//! pure: the clock is passed in.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Failed heartbeats in a row that make a peer lost.
pub const LOST_AFTER: u32 = 3;

/// One host as this host last saw it; `Manager.ListHosts` sends it as it
/// is (the field order is the bus row's).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HostStatus {
    pub name: String,
    /// Its peer URL.
    pub address: String,
    pub reachable: bool,
    /// When the current state began (µs since the epoch; 0: never asked).
    pub since_usec: u64,
    pub version: String,
    /// 1-minute load average.
    pub load: f64,
    pub config_hash: String,
    /// The last failure, while unreachable.
    pub error: String,
}

/// What a peer's last heartbeat said.
pub enum Heartbeat {
    Answer {
        version: String,
        load: f64,
        config_hash: String,
    },
    Failed(String),
}

/// A change worth an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Lost,
    Back,
}

#[derive(Default)]
struct Entry {
    status: HostStatus,
    failures: u32,
    lost: bool,
    /// When the failures in a row began.
    failing_since: u64,
}

impl Entry {
    fn record(&mut self, beat: Heartbeat, now_usec: u64) -> Option<Transition> {
        match beat {
            Heartbeat::Answer {
                version,
                load,
                config_hash,
            } => {
                let was_lost = self.lost;
                if !self.status.reachable {
                    self.status.since_usec = now_usec;
                }
                self.status.reachable = true;
                self.status.version = version;
                self.status.load = load;
                self.status.config_hash = config_hash;
                self.status.error.clear();
                self.failures = 0;
                self.lost = false;
                was_lost.then_some(Transition::Back)
            }
            Heartbeat::Failed(error) => {
                if self.failures == 0 {
                    self.failing_since = now_usec;
                }
                self.failures += 1;
                self.status.error = error;
                if self.failures < LOST_AFTER || self.lost {
                    return None;
                }
                self.lost = true;
                self.status.reachable = false;
                self.status.since_usec = self.failing_since;
                Some(Transition::Lost)
            }
        }
    }
}

/// The board: one entry per peer, by name.
#[derive(Default)]
pub struct HostBoard {
    entries: Mutex<BTreeMap<String, Entry>>,
}

impl HostBoard {
    /// Records a heartbeat of `name` (at `address`) and returns the
    /// transition it caused, if any.
    pub fn record(
        &self,
        name: &str,
        address: &str,
        beat: Heartbeat,
        now_usec: u64,
    ) -> Option<Transition> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let entry = map.entry(name.to_string()).or_default();
        entry.status.name = name.to_string();
        entry.status.address = address.to_string();
        entry.record(beat, now_usec)
    }

    /// The last status of `name`, if it was ever asked.
    pub fn get(&self, name: &str) -> Option<HostStatus> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(name).map(|e| e.status.clone())
    }

    /// Forgets the peers not in `names` (after a reload removed them).
    pub fn retain(&self, names: &[&str]) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|k, _| names.contains(&k.as_str()));
    }
}

/// The 1-minute load average from /proc/loadavg (0 when unreadable).
pub fn load_average_1m() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Heartbeat {
        Heartbeat::Answer {
            version: "1".into(),
            load: 0.5,
            config_hash: "h".into(),
        }
    }

    fn fail() -> Heartbeat {
        Heartbeat::Failed("connection refused".into())
    }

    #[test]
    fn lost_after_three_failures_in_a_row_and_back_once() {
        let b = HostBoard::default();
        assert_eq!(b.record("b", "u", ok(), 10), None);
        assert_eq!(b.get("b").unwrap().since_usec, 10);
        assert_eq!(b.record("b", "u", fail(), 20), None);
        assert_eq!(b.record("b", "u", fail(), 30), None);
        assert!(b.get("b").unwrap().reachable, "lost too early");
        assert_eq!(b.record("b", "u", fail(), 40), Some(Transition::Lost));
        let s = b.get("b").unwrap();
        assert!(!s.reachable);
        assert_eq!(s.since_usec, 20, "since the first failure");
        assert_eq!(s.error, "connection refused");
        assert_eq!(b.record("b", "u", fail(), 50), None, "announced once");
        assert_eq!(b.record("b", "u", ok(), 60), Some(Transition::Back));
        let s = b.get("b").unwrap();
        assert!(s.reachable && s.error.is_empty());
        assert_eq!(s.since_usec, 60);
        assert_eq!(b.record("b", "u", ok(), 70), None);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = HostBoard::default();
        for t in 0..10 {
            let beat = if t % 3 == 2 { ok() } else { fail() };
            assert_eq!(b.record("b", "u", beat, t), None);
        }
    }

    #[test]
    fn a_peer_never_reached_is_lost_but_not_back_at_first() {
        let b = HostBoard::default();
        assert_eq!(b.record("c", "u", ok(), 1), None);
        let b = HostBoard::default();
        b.record("c", "u", fail(), 1);
        b.record("c", "u", fail(), 2);
        assert_eq!(b.record("c", "u", fail(), 3), Some(Transition::Lost));
        b.retain(&[]);
        assert_eq!(b.get("c"), None);
    }
}
