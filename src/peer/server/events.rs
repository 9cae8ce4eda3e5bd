//! `GET /v1/events`: the long poll over the store's event log, woken by
//! the broadcast, at most [`MAX_LONG_POLLS`](super::MAX_LONG_POLLS) at once.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hyper::StatusCode;

use super::request::number;
use super::{bad_request, json, Failure, Resp, State, MAX_LONG_POLLS, MAX_POLL_SECONDS};
use crate::control::ControlError;
use crate::peer::types::Events;

/// Most events in one answer.
const EVENTS_LIMIT: usize = 1000;

/// Decrements the long-poll count when the poll ends, however it ends.
struct PollSlot<'a>(&'a AtomicUsize);

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `GET /v1/events?after=SEQ&timeout=S`: the stored events after SEQ at
/// once, else the first ones to come within S seconds (default 30).
pub(super) async fn events(
    state: &State,
    query: &BTreeMap<String, String>,
) -> Result<Resp, Failure> {
    let after = number(query, "after", 0)?;
    let timeout = number(query, "timeout", 30)?;
    if timeout > MAX_POLL_SECONDS {
        return Err(bad_request(format!(
            "timeout is at most {MAX_POLL_SECONDS} seconds"
        )));
    }
    if state.long_polls.fetch_add(1, Ordering::SeqCst) >= MAX_LONG_POLLS {
        state.long_polls.fetch_sub(1, Ordering::SeqCst);
        return Err(Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_LONG_POLLS} event polls are open already; try again later"),
            "TooManyPolls",
        ));
    }
    let _slot = PollSlot(&state.long_polls);
    // Subscribed before the first read: an event stored after that read is
    // also broadcast after it, and wakes us.
    let mut rx = state.control.events().subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let store = state.control.store();
    loop {
        let found = store
            .events_after(after, EVENTS_LIMIT)
            .map_err(ControlError::from)?;
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            let next = found.last().map_or(after, |e| e.seq);
            return Ok(json(
                StatusCode::OK,
                &Events {
                    events: found,
                    next,
                },
            ));
        }
        tokio::select! {
            r = tokio::time::timeout_at(deadline, rx.recv()) => {
                if let Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) = r {
                    return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, "stackd is stopping".into(), "ShuttingDown"));
                }
            }
            _ = state.cancel.cancelled() => {
                return Err(Failure(StatusCode::SERVICE_UNAVAILABLE, "stackd is stopping".into(), "ShuttingDown"));
            }
        }
    }
}
