//! `GET /v1/events`: the changes as Server-Sent Events.
//!
//! Each message has the event's id as its SSE `id` and the event's JSON as
//! its `data`, with no SSE `event` name, so that `EventSource.onmessage`
//! and line readers get every one. A client that reconnects with
//! `Last-Event-ID` gets the events it missed that the hub still holds
//! (the last 1024). When some are gone (too old, from another supervisor
//! run, or skipped because this client read too slowly), a message named
//! `gap` says so first, with `{"from": <last id>}`: re-read
//! `/v1/sessions`. A slow client only ever loses its own events: the
//! broadcast never waits for it.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use tokio::sync::broadcast;

use crate::hub::{Change, Hub};

/// How often an idle stream sends a comment, so that proxies keep it.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct StreamState {
    pending: std::collections::VecDeque<Event>,
    receiver: broadcast::Receiver<Arc<Change>>,
    /// The last id sent: the broadcast may repeat what the replay sent.
    last: u64,
}

fn message(change: &Change) -> Event {
    Event::default()
        .id(change.id.to_string())
        .data(&change.json)
}

fn gap(from: u64) -> Event {
    Event::default()
        .event("gap")
        .data(format!("{{\"from\":{from}}}"))
}

/// The stream for a client that last saw `last_event_id`.
pub(crate) fn stream(
    hub: &Hub,
    last_event_id: Option<u64>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>> + use<>> {
    let (replay, missed, receiver) = hub.subscribe(last_event_id);
    let mut pending = std::collections::VecDeque::with_capacity(replay.len() + 1);
    if missed {
        pending.push_back(gap(last_event_id.unwrap_or(0)));
    }
    let mut last = last_event_id.unwrap_or(0);
    if missed && last > replay.last().map_or(0, |c| c.id) {
        // An id from another run: this run's ids start again from 1.
        last = 0;
    }
    for change in &replay {
        pending.push_back(message(change));
        last = change.id;
    }
    let state = StreamState {
        pending,
        receiver,
        last,
    };
    let stream = futures_util::stream::unfold(state, |mut state| async move {
        loop {
            if let Some(event) = state.pending.pop_front() {
                return Some((Ok(event), state));
            }
            match state.receiver.recv().await {
                Ok(change) if change.id <= state.last => continue,
                Ok(change) => {
                    state.last = change.id;
                    return Some((Ok(message(&change)), state));
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some((Ok(gap(state.last)), state));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE).text("keep-alive"))
}
