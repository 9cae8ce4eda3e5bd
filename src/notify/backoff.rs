//! Back-off schedules: the delay before a channel's next delivery attempt
//! ([`Backoff`]) and the wait before writing again to a store that refused
//! a write ([`StoreWait`]).

use std::time::{Duration, Instant};

use crate::store::now_usec;

/// The first wait before writing to a store that refused a write.
pub(super) const STORE_RETRY_FIRST: Duration = Duration::from_secs(1);
/// The longest wait before writing to a store that refused a write.
pub(super) const STORE_RETRY_MAX: Duration = Duration::from_secs(60);

/// Delay after the n-th failed attempt: `first * 2^(n-1)`, at most `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            first: Duration::from_secs(5),
            max: Duration::from_secs(600),
        }
    }
}

impl Backoff {
    /// The delay after `failures` failed attempts (1 for the first).
    pub fn delay(&self, failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        self.first
            .checked_mul(1 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }

    /// The time (µs) to try again after `failures` failed attempts.
    pub(super) fn next(&self, failures: u32) -> u64 {
        now_usec().saturating_add(usec(self.delay(failures)))
    }
}

fn usec(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Waiting to write to a store that refused a write.
#[derive(Debug, Default)]
pub(super) struct StoreWait {
    failures: u32,
    /// Not before then; None: at once.
    pub(super) until: Option<Instant>,
}

impl StoreWait {
    pub(super) fn ready(&self) -> bool {
        self.until.map_or(true, |t| Instant::now() >= t)
    }

    pub(super) fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let delay = Backoff {
            first: STORE_RETRY_FIRST,
            max: STORE_RETRY_MAX,
        }
        .delay(self.failures);
        self.until = Some(Instant::now() + delay);
    }

    pub(super) fn worked(&mut self) {
        *self = StoreWait::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let b = Backoff::default();
        let cases = [
            (0, 5),
            (1, 5),
            (2, 10),
            (3, 20),
            (4, 40),
            (7, 320),
            (8, 600),
            (30, 600),
            (u32::MAX, 600),
        ];
        for (failures, secs) in cases {
            assert_eq!(b.delay(failures), Duration::from_secs(secs), "{failures}");
        }
    }
}
