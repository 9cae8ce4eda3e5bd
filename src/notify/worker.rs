//! The outbox worker: delivers due items, marks them delivered, and
//! reschedules failures with exponential back-off. The schedule lives in the
//! store, so it holds across restarts: a new worker picks up where the last
//! one stopped. At least once: an item is marked delivered only after its
//! channel said so; a crash in between sends it again (with the same
//! delivery id).
//!
//! When the store cannot write (a full state directory), nothing here may
//! spin or repeat a delivery faster than the channel's back-off:
//!
//! - an outcome the store refused to record (delivered, or failed and due
//!   again at a time) is kept in memory ([`Worker::unrecorded`]) and rules
//!   over what the store says about the item: a delivered one is not sent
//!   again by this process, a failed one waits its back-off;
//! - an alert the router could not queue reaches the worker directly and
//!   is delivered from memory ([`Worker::memory`]), with the same delivery
//!   id it would have had in the outbox;
//! - the store is written again only after a back-off of its own
//!   ([`STORE_RETRY_FIRST`](super::backoff::STORE_RETRY_FIRST) doubling to
//!   [`STORE_RETRY_MAX`](super::backoff::STORE_RETRY_MAX)), so a full
//!   disk costs one write attempt per step, and what waited in memory is
//!   written then;
//! - failed writes are logged through [`Store::note_write_error`], at most
//!   a line a minute; a channel's failed deliveries likewise (the first of
//!   a spell at once, then a line a minute with a count, the rest at debug
//!   level).
//!
//! A restart forgets what only memory held: an item delivered but not
//! recorded is sent once more (same delivery id, so the receiver can drop
//! it); an alert never queued is lost for the channels but was written to
//! the journal when it happened.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::backoff::{Backoff, StoreWait};
use super::{alert_from_payload, delivery_id, payload, send, Channel, Delivery, Routed};
use crate::events::Alert;
use crate::store::{now_usec, OutboxItem, Store, StoreError};

/// Items taken from the outbox per pass.
const BATCH: usize = 64;
/// Delivered items kept (for their dedup keys) when the outbox is pruned.
const KEEP_DELIVERED: usize = 1000;
/// Longest sleep between passes even when nothing is due (a clock step, a
/// push from another process).
const IDLE_POLL: Duration = Duration::from_secs(60);
/// Shortest pause between passes: whatever goes wrong, never a busy loop.
const MIN_PAUSE: Duration = Duration::from_millis(50);
/// A channel's failed deliveries are logged at warn level at most this
/// often (the first of a spell at once).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(60);
/// Alerts kept in memory while the store cannot queue them; the oldest go
/// first beyond it (they were written to the journal when they happened).
const MEMORY_MAX: usize = 1000;

/// What happened to an outbox item that the store could not record.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Outcome {
    Delivered,
    Failed { at: u64, attempts: u32, why: String },
}

/// An alert the store could not queue, delivered from memory.
#[derive(Debug)]
struct Pending {
    channel: String,
    dedup_key: String,
    alert: Alert,
    attempts: u32,
    next_usec: u64,
}

/// One delivery to make in a pass.
#[derive(Debug)]
struct Job {
    source: Source,
    channel: String,
    dedup_key: String,
    alert: Option<Alert>,
    attempts: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Outbox(u64),
    /// Index into `memory` at the start of the pass.
    Memory(usize),
}

pub(super) struct Worker {
    store: Arc<Store>,
    channels: BTreeMap<String, Arc<dyn Channel>>,
    host: String,
    backoff: Backoff,
    /// Outcomes the store refused to record, by outbox id; they rule over
    /// the store's own record of the item until they are written.
    unrecorded: BTreeMap<u64, Outcome>,
    /// Alerts the router could not queue in the store, oldest first.
    memory: Vec<Pending>,
    store_wait: StoreWait,
    /// Alerts dropped from memory since the last line that said so.
    dropped: u64,
    /// Per channel: when a failed delivery was last logged at warn level,
    /// and how many failures went to the debug log since.
    quiet: BTreeMap<String, (Option<Instant>, u64)>,
    passes: u64,
}

impl Worker {
    pub(super) fn new(
        store: Arc<Store>,
        channels: BTreeMap<String, Arc<dyn Channel>>,
        host: String,
        backoff: Backoff,
    ) -> Worker {
        Worker {
            store,
            channels,
            host,
            backoff,
            unrecorded: BTreeMap::new(),
            memory: Vec::new(),
            store_wait: StoreWait::default(),
            dropped: 0,
            quiet: BTreeMap::new(),
            passes: 0,
        }
    }

    /// Runs until `cancel`. `unqueued` brings the alerts the router could
    /// not put into the outbox.
    pub(super) async fn run(
        mut self,
        mut unqueued: mpsc::UnboundedReceiver<Routed>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        // The router's end goes away first at shutdown; the outbox is
        // still worth delivering until `cancel`.
        let mut router_gone = false;
        // Another write that works (the daemon's probe, a task) ends the
        // store's back-off here too: what waits in memory is written at once.
        let mut health = self.store.write_health();
        let mut health_gone = false;
        loop {
            if cancel.is_cancelled() {
                return;
            }
            while let Ok(r) = unqueued.try_recv() {
                self.keep(r);
            }
            if self.store_wait.ready() {
                self.write_back();
            }
            let now = now_usec();
            let jobs = self.due(now);
            let full = jobs.len() >= BATCH;
            if !jobs.is_empty() {
                self.deliver(jobs).await;
                self.passes += 1;
                if self.passes % 100 == 0 && self.store_wait.ready() {
                    if let Err(e) = self.store.outbox_prune(KEEP_DELIVERED) {
                        self.store_failed("cannot prune the notification outbox", &e);
                    }
                }
            }
            let sleep = if full && self.store_wait.ready() {
                MIN_PAUSE
            } else {
                self.next_wake().clamp(MIN_PAUSE, IDLE_POLL)
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = wake.notified() => {}
                r = unqueued.recv(), if !router_gone => match r {
                    Some(r) => self.keep(r),
                    None => router_gone = true,
                },
                _ = tokio::time::sleep(sleep) => {}
                changed = health.changed(), if !health_gone => match changed {
                    Ok(()) if !health.borrow_and_update().is_failing() => {
                        self.store_wait.worked();
                    }
                    Ok(()) => {}
                    Err(_) => health_gone = true,
                },
            }
            // Whatever woke us, a pass never follows another sooner.
            tokio::time::sleep(MIN_PAUSE).await;
        }
    }

    /// Takes an alert the router could not queue.
    fn keep(&mut self, r: Routed) {
        if self.memory.len() >= MEMORY_MAX {
            self.memory.remove(0);
            self.dropped += 1;
            if self.dropped == 1 || self.dropped % 100 == 0 {
                warn!(
                    "{} alerts dropped from memory while the state database cannot queue \
                     them (at most {MEMORY_MAX} are kept; the journal has every one)",
                    self.dropped
                );
            }
        }
        self.memory.push(Pending {
            channel: r.channel,
            dedup_key: r.dedup_key,
            alert: r.alert,
            attempts: 0,
            next_usec: 0,
        });
    }

    /// The store refused: wait before the next write (whatever the error,
    /// so that nothing here can spin on it) and say so, boundedly.
    fn store_failed(&mut self, what: &str, e: &StoreError) {
        self.store_wait.failed();
        self.store.note_write_error(what, e);
    }

    /// Writes what waited in memory: outcomes first, then alerts into the
    /// outbox. Stops at the first refusal (and waits longer before the next
    /// try).
    fn write_back(&mut self) {
        if self.unrecorded.is_empty() && self.memory.is_empty() {
            return;
        }
        while let Some((&id, outcome)) = self.unrecorded.iter().next() {
            let written = match outcome {
                Outcome::Delivered => self.store.outbox_delivered(id),
                Outcome::Failed { at, why, .. } => self.store.outbox_retry(id, *at, why),
            };
            match written {
                Ok(()) => {
                    self.unrecorded.remove(&id);
                }
                // Pruned or never there: nothing left to record.
                Err(StoreError::NoSuchOutboxItem(_)) => {
                    self.unrecorded.remove(&id);
                }
                Err(e) => {
                    self.store_failed(
                        &format!("cannot record the delivery of outbox item {id}"),
                        &e,
                    );
                    return;
                }
            }
        }
        while let Some(p) = self.memory.first() {
            let queued = self
                .store
                .outbox_push(&p.channel, &p.dedup_key, &payload(&p.alert))
                .and_then(|id| {
                    if p.attempts > 0 {
                        self.store.outbox_retry(id, p.next_usec, "kept in memory")?;
                    }
                    Ok(())
                });
            match queued {
                Ok(()) => {
                    self.memory.remove(0);
                }
                Err(e) => {
                    self.store_failed("cannot queue an alert kept in memory", &e);
                    return;
                }
            }
        }
        self.store_wait.worked();
        if self.dropped > 0 {
            warn!(
                "the state database queues alerts again; {} were dropped from memory \
                 meanwhile (the journal has them)",
                self.dropped
            );
            self.dropped = 0;
        }
    }

    /// The deliveries due at `now`: outbox items (as memory corrects them),
    /// then alerts in memory.
    fn due(&mut self, now: u64) -> Vec<Job> {
        let mut jobs = Vec::new();
        match self.store.outbox_due(now, BATCH + self.unrecorded.len()) {
            Ok(items) => {
                for item in items {
                    let attempts = match self.unrecorded.get(&item.id) {
                        Some(Outcome::Delivered) => continue,
                        Some(Outcome::Failed { at, .. }) if *at > now => continue,
                        Some(Outcome::Failed { attempts, .. }) => *attempts,
                        None => item.attempts,
                    };
                    if jobs.len() < BATCH {
                        jobs.push(job(item, attempts));
                    }
                }
            }
            Err(e) => {
                self.store_failed("cannot read the notification outbox", &e);
            }
        }
        for (i, p) in self.memory.iter().enumerate() {
            if p.next_usec <= now {
                jobs.push(Job {
                    source: Source::Memory(i),
                    channel: p.channel.clone(),
                    dedup_key: p.dedup_key.clone(),
                    alert: Some(p.alert.clone()),
                    attempts: p.attempts,
                });
            }
        }
        jobs
    }

    /// How long until something is due: the outbox's next item (as memory
    /// corrects it), an alert in memory, or the next write to the store.
    fn next_wake(&mut self) -> Duration {
        let mut next = u64::MAX;
        if let Ok(items) = self
            .store
            .outbox_due(u64::MAX, BATCH + self.unrecorded.len() + 1)
        {
            for item in items {
                let at = match self.unrecorded.get(&item.id) {
                    Some(Outcome::Delivered) => continue,
                    Some(Outcome::Failed { at, .. }) => *at,
                    None => item.next_attempt_usec,
                };
                next = next.min(at);
            }
        }
        for p in &self.memory {
            next = next.min(p.next_usec);
        }
        let now = now_usec();
        let mut sleep = if next == u64::MAX {
            IDLE_POLL
        } else {
            Duration::from_micros(next.saturating_sub(now))
        };
        if !self.unrecorded.is_empty() || !self.memory.is_empty() {
            if let Some(until) = self.store_wait.until {
                sleep = sleep.min(until.saturating_duration_since(Instant::now()));
            }
        }
        sleep
    }

    /// Delivers a pass: channels in parallel, each channel's items in order.
    /// After a channel fails once, its other items in the pass are not
    /// tried; they wait as long as the failed one.
    async fn deliver(&mut self, jobs: Vec<Job>) {
        let mut groups: BTreeMap<String, Vec<Job>> = BTreeMap::new();
        for j in jobs {
            groups.entry(j.channel.clone()).or_default().push(j);
        }
        let host = self.host.clone();
        let backoff = self.backoff;
        let runs = groups.into_iter().map(|(name, jobs)| {
            let channel = self.channels.get(&name).cloned();
            let host = host.clone();
            async move {
                let mut results = Vec::new();
                let mut failed: Option<(u64, String)> = None;
                let mut first_failure = None;
                for j in jobs {
                    if let Some((at, why)) = &failed {
                        let why = format!("not tried: an earlier item failed: {why}");
                        results.push((j.source, j.attempts, Err((*at, why))));
                        continue;
                    }
                    let result = match (&channel, j.alert) {
                        (None, _) => Err(format!(
                            "no channel {name} in the configuration (it was removed?); \
                             the item waits until it is configured again"
                        )),
                        (Some(_), None) => {
                            // Cannot ever be sent: say so once and drop it.
                            warn!("an outbox item for {name} is not an alert; dropped");
                            Ok(())
                        }
                        (Some(ch), Some(alert)) => {
                            let d = Delivery {
                                id: delivery_id(&host, &name, &j.dedup_key),
                                alert,
                            };
                            send(ch.as_ref(), &d).await.map_err(|e| e.to_string())
                        }
                    };
                    match result {
                        Ok(()) => {
                            debug!(
                                "delivered a notification to {name} after {} failures",
                                j.attempts
                            );
                            results.push((j.source, j.attempts, Ok(())));
                        }
                        Err(why) => {
                            let delay = backoff.delay(j.attempts + 1);
                            let at = backoff.next(j.attempts + 1);
                            first_failure = Some((j.attempts + 1, why.clone(), delay));
                            results.push((j.source, j.attempts, Err((at, why.clone()))));
                            failed = Some((at, why));
                        }
                    }
                }
                (name, results, first_failure)
            }
        });
        let mut results = Vec::new();
        for (name, r, failure) in join_all(runs).await {
            match failure {
                Some((attempt, why, delay)) => self.say_failure(&name, attempt, &why, delay),
                None if r.iter().any(|(_, _, x)| x.is_ok()) => {
                    self.quiet.remove(&name);
                }
                None => {}
            }
            results.extend(r);
        }
        let mut done_in_memory = Vec::new();
        for (source, attempts, result) in results {
            match source {
                Source::Memory(i) => match result {
                    Ok(()) => done_in_memory.push(i),
                    Err((at, _)) => {
                        if let Some(p) = self.memory.get_mut(i) {
                            p.attempts = attempts + 1;
                            p.next_usec = at;
                        }
                    }
                },
                Source::Outbox(id) => {
                    let outcome = match result {
                        Ok(()) => Outcome::Delivered,
                        Err((at, why)) => Outcome::Failed {
                            at,
                            attempts: attempts + 1,
                            why,
                        },
                    };
                    self.record(id, outcome);
                }
            }
        }
        done_in_memory.sort_unstable();
        for i in done_in_memory.into_iter().rev() {
            self.memory.remove(i);
        }
    }

    /// Logs a failed delivery: at once for the first of a spell on the
    /// channel, then at most once per [`FAILURE_LOG_EVERY`] with a count of
    /// the failures in between (which go to the debug log).
    fn say_failure(&mut self, name: &str, attempt: u32, why: &str, delay: Duration) {
        let now = Instant::now();
        let q = self.quiet.entry(name.to_string()).or_insert((None, 0));
        if q.0
            .is_some_and(|t| now.duration_since(t) < FAILURE_LOG_EVERY)
        {
            q.1 += 1;
            debug!(
                "cannot deliver a notification to {name} (attempt {attempt}): {why}; \
                 trying again in {delay:?}"
            );
            return;
        }
        let unsaid = std::mem::take(&mut q.1);
        q.0 = Some(now);
        if unsaid == 0 {
            warn!(
                "cannot deliver a notification to {name} (attempt {attempt}): {why}; \
                 trying again in {delay:?}"
            );
        } else {
            warn!(
                "cannot deliver a notification to {name} (attempt {attempt}): {why}; \
                 trying again in {delay:?} ({unsaid} more failed deliveries to {name} \
                 since the last line like this)"
            );
        }
    }

    /// Records an outcome in the store, or in memory while the store
    /// refuses writes (without trying it again before its back-off ends).
    fn record(&mut self, id: u64, outcome: Outcome) {
        if self.store_wait.ready() && self.unrecorded.is_empty() {
            let written = match &outcome {
                Outcome::Delivered => self.store.outbox_delivered(id),
                Outcome::Failed { at, why, .. } => self.store.outbox_retry(id, *at, why),
            };
            match written {
                Ok(()) | Err(StoreError::NoSuchOutboxItem(_)) => {
                    self.unrecorded.remove(&id);
                    return;
                }
                Err(e) => {
                    self.store_failed(
                        &format!("cannot record the delivery of outbox item {id}"),
                        &e,
                    );
                }
            }
        }
        self.unrecorded.insert(id, outcome);
    }
}

fn job(item: OutboxItem, attempts: u32) -> Job {
    Job {
        source: Source::Outbox(item.id),
        alert: alert_from_payload(&item.payload),
        channel: item.channel,
        dedup_key: item.dedup_key,
        attempts,
    }
}
