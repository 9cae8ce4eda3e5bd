//! Notifications: every [`Alert`] on the event bus goes through one
//! [`router`] (filters, de-duplication, rate limit) into the store's durable
//! outbox, and one outbox worker delivers each item to its channel, at least
//! once, retrying with exponential back-off across daemon restarts.
//!
//! Nothing is lost to the rate limit: what it holds back is kept in the
//! outbox as held and replaced by one summary when the channel's window
//! ends, across restarts. Nothing spins when the store cannot write (a full
//! state directory): alerts the outbox cannot take are delivered from the
//! worker's memory, outcomes it cannot record are kept there too, and the
//! store is written again after a back-off (see [`worker`]).
//!
//! Channels: `journal` (always), `email` (`[notify.email]`, SMTP through
//! lettre) and `webhook.NAME` (`[notify.webhook.NAME]`: JSON, ntfy, Slack or
//! Discord over HTTP(S)). Desktop notifications are not a channel here: the
//! D-Bus adapter already turns every `Event::Alert` into the `Alert` signal,
//! which `stackctl notify-agent` shows.
//!
//! Every delivery carries a stable id derived from the host, the channel and
//! the alert ([`delivery_id`]): the same across retries and restarts, so a
//! receiver can drop the duplicates at-least-once delivery may produce. Email
//! carries it in `Message-ID`, webhooks in `X-Stackd-Delivery`.
//!
//! Architecture invariant: only this module knows lettre and the HTTP client
//! it posts webhooks with.

mod backoff;
mod email;
mod format;
mod journal;
pub mod router;
mod webhook;
mod worker;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::{self, ChannelFilter, NotifyConfig};
use crate::events::{Alert, Event, EventSender, Severity};
use crate::store::{now_usec, Store};

pub use crate::time::rfc3339;
pub use backoff::Backoff;
pub use format::{alert_from_payload, alert_json, delivery_id, hex, payload, text, title};
pub use router::{summary, Limits, Route, Routed, Router, SUPPRESSED_KIND};

/// The journal channel's name.
pub const JOURNAL: &str = "journal";
/// The email channel's name.
pub const EMAIL: &str = "email";
/// A webhook channel's name is this prefix and the `[notify.webhook.NAME]` name.
pub const WEBHOOK_PREFIX: &str = "webhook.";

/// How long one delivery may take before it counts as failed.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a channel could not deliver. Every error is retried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Something on this host is wrong: a file cannot be read, an address
    /// does not parse. Fix the config or the file.
    #[error("{0}")]
    Setup(String),
    /// The server could not be reached or the connection broke.
    #[error("{0}")]
    Transport(String),
    /// The server answered and refused.
    #[error("{0}")]
    Rejected(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// One alert on its way to one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// Stable across retries and restarts: see [`delivery_id`].
    pub id: String,
    pub alert: Alert,
}

/// A way to tell somebody. `send` delivers one alert or says why not.
pub trait Channel: Send + Sync {
    fn name(&self) -> &str;
    fn send<'a>(&'a self, delivery: &'a Delivery) -> BoxFuture<'a, Result<(), ChannelError>>;
}

/// The channels `config` names, journal first, with what each accepts.
/// The journal takes every alert, info and up, whatever `min_severity` says:
/// it is the log.
pub fn channels(config: &NotifyConfig, host: &str) -> Vec<(Route, Arc<dyn Channel>)> {
    let mut out: Vec<(Route, Arc<dyn Channel>)> = vec![(
        Route {
            channel: JOURNAL.to_string(),
            filter: ChannelFilter {
                min_severity: config::Severity::Info,
                services: Vec::new(),
                kinds: Vec::new(),
            },
        },
        Arc::new(journal::Journal),
    )];
    if let Some(e) = &config.email {
        out.push((
            Route {
                channel: EMAIL.to_string(),
                filter: e.filter.clone(),
            },
            Arc::new(email::Email::new(e.clone(), host.to_string())),
        ));
    }
    for (name, w) in &config.webhooks {
        let channel = format!("{WEBHOOK_PREFIX}{name}");
        out.push((
            Route {
                channel: channel.clone(),
                filter: w.filter.clone(),
            },
            Arc::new(webhook::Webhook::new(channel, w.clone())),
        ));
    }
    out
}

/// Tuning for [`spawn_with`]; [`spawn`] takes the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Options {
    pub limits: Limits,
    pub backoff: Backoff,
}

/// The running router and worker. Dropping it stops both at once (what a
/// crash does: undelivered items stay in the outbox for the next start);
/// [`NotifyHandle::shutdown`] lets a delivery in flight finish first.
pub struct NotifyHandle {
    config: NotifyConfig,
    host: String,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl fmt::Debug for NotifyHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NotifyHandle")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl NotifyHandle {
    /// Stops routing and waits (at most [`SEND_TIMEOUT`]) for the worker to
    /// finish the delivery it is in.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        for t in std::mem::take(&mut self.tasks) {
            let abort = t.abort_handle();
            if tokio::time::timeout(SEND_TIMEOUT, t).await.is_err() {
                abort.abort();
            }
        }
    }

    /// `stackctl notify test [CHANNEL]`: see [`test`].
    pub async fn test(&self, channel: Option<&str>) -> Vec<(String, Result<(), String>)> {
        test(&self.config, &self.host, channel).await
    }
}

impl Drop for NotifyHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Subscribes to `events` (before it returns, so no alert sent after it is
/// missed) and runs the router and the outbox worker on the current tokio
/// runtime. Items left in the outbox by an earlier run are delivered too.
pub fn spawn(
    config: &NotifyConfig,
    host: String,
    store: Arc<Store>,
    events: EventSender,
) -> NotifyHandle {
    spawn_with(config, host, store, events, Options::default())
}

/// [`spawn`] with other limits and back-off (tests use short ones).
pub fn spawn_with(
    config: &NotifyConfig,
    host: String,
    store: Arc<Store>,
    events: EventSender,
    opts: Options,
) -> NotifyHandle {
    let rx = events.subscribe();
    let cancel = CancellationToken::new();
    let wake = Arc::new(Notify::new());
    let mut routes = Vec::new();
    let mut by_name = BTreeMap::new();
    for (route, channel) in channels(config, &host) {
        by_name.insert(route.channel.clone(), channel);
        routes.push(route);
    }
    let router = Router::new(routes, opts.limits, now_usec());
    let (unqueued_tx, unqueued_rx) = mpsc::unbounded_channel();
    let worker = worker::Worker::new(store.clone(), by_name, host.clone(), opts.backoff);
    let tasks = vec![
        tokio::spawn(route_loop(
            router,
            rx,
            Outlet {
                store,
                host: host.clone(),
                wake: wake.clone(),
                unqueued: unqueued_tx,
                unstored: Vec::new(),
            },
            cancel.clone(),
        )),
        tokio::spawn(worker.run(unqueued_rx, wake, cancel.clone())),
    ];
    NotifyHandle {
        config: config.clone(),
        host,
        cancel,
        tasks,
    }
}

/// Held alerts read for one summary; more wait for the next one.
const SUMMARY_MAX: usize = 10_000;
/// Held alerts kept in memory while the store cannot take them.
const UNSTORED_MAX: usize = 1000;

/// Where routed alerts go: the outbox, or the worker's memory when the
/// outbox cannot take them.
struct Outlet {
    store: Arc<Store>,
    host: String,
    wake: Arc<Notify>,
    /// To the worker: alerts to send that the store could not queue.
    unqueued: mpsc::UnboundedSender<Routed>,
    /// Held alerts the store could not keep yet, oldest first; written
    /// before their channel's next summary.
    unstored: Vec<Routed>,
}

impl Outlet {
    /// Queues one routed alert: into the outbox to send or to hold, or to
    /// the worker (send) or into `unstored` (hold) if the store refuses.
    fn queue(&mut self, r: Routed) {
        let written = if r.held {
            self.store
                .outbox_hold(&r.channel, &r.dedup_key, &payload(&r.alert))
        } else {
            self.store
                .outbox_push(&r.channel, &r.dedup_key, &payload(&r.alert))
        };
        match written {
            Ok(_) if r.held => {}
            Ok(_) => self.wake.notify_one(),
            Err(e) => {
                self.store.note_write_error(
                    format_args!("cannot queue the {} alert for {}", r.alert.kind, r.channel),
                    &e,
                );
                if r.held {
                    if self.unstored.len() >= UNSTORED_MAX {
                        self.unstored.remove(0);
                    }
                    self.unstored.push(r);
                } else {
                    let _ = self.unqueued.send(r);
                }
            }
        }
    }

    /// Writes the held alerts kept in memory, oldest first, until the
    /// store refuses one.
    fn store_unstored(&mut self) {
        while let Some(r) = self.unstored.first() {
            match self
                .store
                .outbox_hold(&r.channel, &r.dedup_key, &payload(&r.alert))
            {
                Ok(_) => {
                    self.unstored.remove(0);
                }
                Err(e) => {
                    self.store
                        .note_write_error("cannot keep an alert held back by the rate limit", &e);
                    return;
                }
            }
        }
    }

    /// Replaces `channel`'s held alerts by one summary in the outbox.
    /// True when that is done (or there was nothing to summarise).
    fn summarise(&self, channel: &str, now: u64) -> bool {
        if self.unstored.iter().any(|r| r.channel == channel) {
            return false;
        }
        let items = match self.store.outbox_held(Some(channel), SUMMARY_MAX) {
            Ok(items) => items,
            Err(e) => {
                self.store
                    .note_write_error("cannot read the alerts held back by the rate limit", &e);
                return false;
            }
        };
        let (Some(first), Some(last)) = (items.first(), items.last()) else {
            return true;
        };
        let alerts: Vec<Alert> = items
            .iter()
            .filter_map(|i| alert_from_payload(&i.payload))
            .collect();
        let ids: Vec<u64> = items.iter().map(|i| i.id).collect();
        let alert = summary(&self.host, channel, &alerts, now);
        let key = format!("summary:{}-{}", first.id, last.id);
        match self
            .store
            .outbox_summarise(channel, &key, &payload(&alert), &ids)
        {
            Ok(_) => {
                self.wake.notify_one();
                true
            }
            Err(e) => {
                self.store.note_write_error(
                    format_args!("cannot queue the summary of held alerts for {channel}"),
                    &e,
                );
                false
            }
        }
    }
}

/// Alerts from the bus → router → outbox; summaries of what the rate limit
/// held back when a channel's window ends.
async fn route_loop(
    mut router: Router,
    mut rx: tokio::sync::broadcast::Receiver<Event>,
    mut out: Outlet,
    cancel: CancellationToken,
) {
    // What an earlier run held back is still to be summarised.
    match out.store.outbox_held(None, usize::MAX) {
        Ok(items) => {
            let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
            for i in &items {
                *counts.entry(i.channel.as_str()).or_default() += 1;
            }
            for (channel, n) in counts {
                router.restore_held(channel, n);
            }
        }
        Err(e) => out
            .store
            .note_write_error("cannot read the alerts held back by the rate limit", &e),
    }
    let mut tick = tokio::time::interval(router.limits().refill_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let ticked = tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => true,
            ev = rx.recv() => match ev {
                Ok(Event::Alert(alert)) => {
                    for r in router.route(&alert, now_usec()) {
                        out.queue(r);
                    }
                    false
                }
                Ok(_) => continue,
                Err(RecvError::Lagged(n)) => {
                    warn!("the notification router missed {n} events (the bus overflowed); \
                           some alerts were not sent");
                    continue;
                }
                Err(RecvError::Closed) => return,
            },
        };
        // Held alerts the store refused wait for the tick (a write a
        // window, not one per alert).
        if ticked && !out.unstored.is_empty() {
            out.store_unstored();
        }
        // A store that cannot write is tried at the tick only.
        if !ticked && out.store.write_failing() {
            continue;
        }
        let now = now_usec();
        for channel in router.summaries_due(now) {
            if out.summarise(&channel, now) {
                router.summarised(&channel);
            }
        }
    }
}

/// Sends a test alert through `channel` (every configured channel when
/// `None`) directly, bypassing router and outbox, and says for each what
/// happened. An unknown channel name is reported as an error for it.
pub async fn test(
    config: &NotifyConfig,
    host: &str,
    channel: Option<&str>,
) -> Vec<(String, Result<(), String>)> {
    let all = channels(config, host);
    let picked: Vec<_> = all
        .iter()
        .filter(|(r, _)| channel.map_or(true, |c| r.channel == c))
        .collect();
    if picked.is_empty() {
        let known: Vec<&str> = all.iter().map(|(r, _)| r.channel.as_str()).collect();
        return vec![(
            channel.unwrap_or_default().to_string(),
            Err(format!(
                "no such notification channel; configured: {}",
                known.join(", ")
            )),
        )];
    }
    let usec = now_usec();
    let alert = Alert {
        severity: Severity::Info,
        kind: "test".to_string(),
        host: host.to_string(),
        service: String::new(),
        summary: "test notification".to_string(),
        body: format!(
            "stackd on {host} sent this at {} to check that notifications reach you.",
            rfc3339(usec)
        ),
        usec,
        fields: Vec::new(),
    };
    let mut out = Vec::new();
    for (route, ch) in picked {
        let d = Delivery {
            id: delivery_id(host, &route.channel, &format!("test:{usec}")),
            alert: alert.clone(),
        };
        let result = send(ch.as_ref(), &d).await.map_err(|e| e.to_string());
        out.push((route.channel.clone(), result));
    }
    out
}

/// `channel.send` with [`SEND_TIMEOUT`].
async fn send(channel: &dyn Channel, d: &Delivery) -> Result<(), ChannelError> {
    tokio::time::timeout(SEND_TIMEOUT, channel.send(d))
        .await
        .map_err(|_| ChannelError::Timeout(SEND_TIMEOUT))?
}

/// Reads a secret file at send time: its text without the trailing line
/// end (files written by `echo` have one).
fn read_secret(path: &std::path::Path, what: &str) -> Result<String, ChannelError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ChannelError::Setup(format!(
            "cannot read the {what} from {}: {e}",
            path.display()
        ))
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}
