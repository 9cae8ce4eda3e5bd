//! The outbox worker: delivers due items, marks them delivered, and
//! reschedules failures with exponential back-off. The schedule lives in the
//! store, so it holds across restarts: a new worker picks up where the last
//! one stopped. At least once: an item is marked delivered only after its
//! channel said so; a crash in between sends it again (with the same
//! delivery id).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{alert_from_payload, delivery_id, send, Channel, Delivery};
use crate::store::{now_usec, OutboxItem, Store};

/// Items taken from the outbox per pass.
const BATCH: usize = 64;
/// Delivered items kept (for their dedup keys) when the outbox is pruned.
const KEEP_DELIVERED: usize = 1000;
/// Longest sleep between passes even when nothing is due (a clock step, a
/// push from another process).
const IDLE_POLL: Duration = Duration::from_secs(60);

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
}

pub(super) async fn run(
    store: Arc<Store>,
    channels: BTreeMap<String, Arc<dyn Channel>>,
    host: String,
    backoff: Backoff,
    wake: Arc<Notify>,
    cancel: CancellationToken,
) {
    let mut passes: u64 = 0;
    loop {
        if cancel.is_cancelled() {
            return;
        }
        let now = now_usec();
        let due = match store.outbox_due(now, BATCH) {
            Ok(d) => d,
            Err(e) => {
                warn!("cannot read the notification outbox: {e}");
                Vec::new()
            }
        };
        let full = due.len() == BATCH;
        if !due.is_empty() {
            deliver(&store, &channels, &host, backoff, due).await;
            passes += 1;
            if passes % 100 == 0 {
                let _ = store.outbox_prune(KEEP_DELIVERED);
            }
        }
        if full {
            continue;
        }
        let sleep = match store.outbox_due(u64::MAX, 1) {
            Ok(next) => next.first().map_or(IDLE_POLL, |i| {
                Duration::from_micros(i.next_attempt_usec.saturating_sub(now_usec()))
            }),
            Err(_) => IDLE_POLL,
        }
        .min(IDLE_POLL);
        if sleep.is_zero() {
            continue;
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

/// Delivers a batch: channels in parallel, each channel's items in order.
/// After a channel fails once, its other items in the batch are not tried;
/// they wait as long as the failed one.
async fn deliver(
    store: &Store,
    channels: &BTreeMap<String, Arc<dyn Channel>>,
    host: &str,
    backoff: Backoff,
    due: Vec<OutboxItem>,
) {
    let mut groups: BTreeMap<String, Vec<OutboxItem>> = BTreeMap::new();
    for item in due {
        groups.entry(item.channel.clone()).or_default().push(item);
    }
    let runs = groups.into_iter().map(|(name, items)| {
        let channel = channels.get(&name).cloned();
        async move {
            let mut failed: Option<(u64, String)> = None;
            for item in items {
                if let Some((at, why)) = &failed {
                    let why = format!("not tried: an earlier item failed: {why}");
                    retry(store, &item, *at, &why);
                    continue;
                }
                let result = match (&channel, alert_from_payload(&item.payload)) {
                    (None, _) => Err(format!(
                        "no channel {name} in the configuration (it was removed?); \
                         the item waits until it is configured again"
                    )),
                    (Some(_), None) => {
                        // Cannot ever be sent: say so once and drop it.
                        warn!(
                            "outbox item {} for {name} is not an alert; dropped",
                            item.id
                        );
                        Ok(())
                    }
                    (Some(ch), Some(alert)) => {
                        let d = Delivery {
                            id: delivery_id(host, &name, &item.dedup_key),
                            alert,
                        };
                        send(ch.as_ref(), &d).await.map_err(|e| e.to_string())
                    }
                };
                match result {
                    Ok(()) => {
                        debug!(
                            "delivered outbox item {} to {name} after {} failures",
                            item.id, item.attempts
                        );
                        if let Err(e) = store.outbox_delivered(item.id) {
                            warn!("cannot mark outbox item {} delivered: {e}", item.id);
                        }
                    }
                    Err(why) => {
                        let delay = backoff.delay(item.attempts + 1);
                        let at = now_usec()
                            .saturating_add(u64::try_from(delay.as_micros()).unwrap_or(u64::MAX));
                        warn!(
                            "cannot deliver a notification to {name} (attempt {}): {why}; \
                             trying again in {delay:?}",
                            item.attempts + 1
                        );
                        retry(store, &item, at, &why);
                        failed = Some((at, why));
                    }
                }
            }
        }
    });
    join_all(runs).await;
}

fn retry(store: &Store, item: &OutboxItem, at: u64, why: &str) {
    if let Err(e) = store.outbox_retry(item.id, at, why) {
        warn!("cannot reschedule outbox item {}: {e}", item.id);
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
