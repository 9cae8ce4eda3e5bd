//! The crash-loop budget: restarts per service within the window, and the
//! backoff before the next. Pure: the caller passes the clock in.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::Budget;
use crate::config::RestartConfig;

/// Restarts per service within the window, and the next backoff. Pure: the
/// caller passes the clock in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartLimiter {
    policy: RestartConfig,
    restarts: VecDeque<Instant>,
}

impl RestartLimiter {
    pub fn new(policy: RestartConfig) -> RestartLimiter {
        RestartLimiter {
            policy,
            restarts: VecDeque::new(),
        }
    }

    /// Remember a restart (or recreate) done at `now`.
    pub fn record(&mut self, now: Instant) {
        self.forget_old(now);
        self.restarts.push_back(now);
    }

    /// The service ran fine long enough: start counting afresh.
    pub fn reset(&mut self) {
        self.restarts.clear();
    }

    pub fn restarts_in_window(&self, now: Instant) -> u32 {
        let n = self
            .restarts
            .iter()
            .filter(|t| now.saturating_duration_since(**t) < self.policy.window)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// `backoff_min * 2^n` for `n` restarts in the window, at most
    /// `backoff_max`.
    pub fn next_backoff(&self, now: Instant) -> Duration {
        let n = self.restarts_in_window(now);
        let factor = 1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX);
        self.policy
            .backoff_min
            .checked_mul(factor)
            .unwrap_or(self.policy.backoff_max)
            .min(self.policy.backoff_max)
            .max(self.policy.backoff_min.min(self.policy.backoff_max))
    }

    /// True while another restart is allowed within the window.
    pub fn allowed(&self, now: Instant) -> bool {
        self.restarts_in_window(now) < self.policy.max_restarts
    }

    pub fn budget(&self, now: Instant) -> Budget {
        Budget {
            restarts_in_window: self.restarts_in_window(now),
            backoff: self.next_backoff(now),
        }
    }

    fn forget_old(&mut self, now: Instant) {
        while let Some(t) = self.restarts.front() {
            if now.saturating_duration_since(*t) >= self.policy.window {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
    }
}
