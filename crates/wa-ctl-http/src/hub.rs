//! The hub: the surface's copy of every session's record, and the events
//! made from the changes the loop reports.
//!
//! [`Hub::update`] runs on the loop, once per session an event touched. It
//! takes one short lock, replaces the session's record, and only when the
//! state or the QR code changed makes an [`ApiEvent`]: serialized once,
//! kept in a ring of the last [`RING`] for `Last-Event-ID`, broadcast to
//! the event streams, and queued for each webhook that wants it. Constant
//! work per event; nothing waits.
//!
//! A state that does not change makes no event: one `connected` per real
//! connection, however often the worker repeats itself.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::broadcast;
use wa_ctl_core::lifecycle::{PairingCode, State};
use wa_ctl_core::policy::CloseKey;
use wa_ctl_core::status::{SessionRecord, SessionReport, unix_ms};

pub use wa_ctl_core::config::http::ChangeKind;

use crate::webhook::Queue;

/// Events kept for resuming streams.
pub(crate) const RING: usize = 1024;

/// One change, as the event stream and the webhooks send it: a public
/// contract (docs/http-api.md).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ApiEvent {
    /// Increases by one per event, from 1 at the supervisor's start.
    pub id: u64,
    /// `state` or `qr`.
    pub event: ChangeKind,
    /// When the supervisor saw the change, RFC 3339 in UTC.
    pub at: String,
    /// The state before the change; for `qr`, which changes no state, the
    /// current state.
    pub previous_state: State,
    /// The session after the change, as `status --json` shows it.
    pub session: SessionReport,
    /// Extension: on `qr` events, the QR payload to show (what
    /// `/v1/sessions/{id}/qr` draws); absent on `state` events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qr: Option<String>,
}

/// An event made once and shared by every stream and webhook.
#[derive(Debug)]
pub(crate) struct Change {
    pub(crate) id: u64,
    pub(crate) kind: ChangeKind,
    /// The [`ApiEvent`] as JSON.
    pub(crate) json: String,
}

/// The QR payload waiting to be scanned, if any.
pub(crate) fn qr_of(record: &SessionRecord) -> Option<&str> {
    match &record.pairing {
        Some(PairingCode::Qr(code)) if record.state == State::Pairing => Some(code),
        _ => None,
    }
}

#[derive(Debug)]
struct Inner {
    /// Shared, so that a reader copies pointers, not records, under the
    /// lock.
    records: Vec<Arc<SessionRecord>>,
    /// Closes by code, per session.
    closes: Vec<BTreeMap<CloseKey, u64>>,
    next_id: u64,
    ring: VecDeque<Arc<Change>>,
}

/// The surface's state, shared by the loop (writer) and the server.
#[derive(Debug)]
pub(crate) struct Hub {
    inner: Mutex<Inner>,
    ids: HashMap<String, usize>,
    events: broadcast::Sender<Arc<Change>>,
    webhooks: Vec<Arc<Queue>>,
    /// This supervisor's start, in ms: with an event's id, a delivery id
    /// no other supervisor run repeats.
    pub(crate) run: u64,
}

impl Hub {
    pub(crate) fn new(records: Vec<SessionRecord>, webhooks: Vec<Arc<Queue>>) -> Hub {
        let ids = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.id.clone(), i))
            .collect();
        let (events, _) = broadcast::channel(RING);
        Hub {
            inner: Mutex::new(Inner {
                closes: vec![BTreeMap::new(); records.len()],
                records: records.into_iter().map(Arc::new).collect(),
                next_id: 1,
                ring: VecDeque::with_capacity(RING),
            }),
            ids,
            events,
            webhooks,
            run: unix_ms(SystemTime::now()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave a record half-written: each is
        // replaced whole.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Session `idx` after an event: see the module docs.
    pub(crate) fn update(&self, idx: usize, record: SessionRecord, closed: Option<CloseKey>) {
        let mut inner = self.lock();
        let Some(previous) = inner.records.get(idx).cloned() else {
            return;
        };
        if let Some(code) = closed {
            *inner.closes[idx].entry(code).or_insert(0) += 1;
        }
        let state_changed = previous.state != record.state;
        let new_qr = qr_of(&record)
            .filter(|qr| qr_of(&previous) != Some(*qr))
            .is_some();
        let record = Arc::new(record);
        inner.records[idx] = Arc::clone(&record);
        if !state_changed && !new_qr {
            return;
        }
        let now = SystemTime::now();
        let report = SessionReport::from_record((*record).clone(), unix_ms(now));
        let at = humantime::format_rfc3339_millis(now).to_string();
        let kinds = [(state_changed, ChangeKind::State), (new_qr, ChangeKind::Qr)];
        for kind in kinds.into_iter().filter(|k| k.0).map(|k| k.1) {
            let id = inner.next_id;
            inner.next_id += 1;
            let event = ApiEvent {
                id,
                event: kind,
                at: at.clone(),
                previous_state: match kind {
                    ChangeKind::State => previous.state,
                    ChangeKind::Qr => record.state,
                },
                session: report.clone(),
                qr: match kind {
                    ChangeKind::Qr => qr_of(&record).map(str::to_owned),
                    ChangeKind::State => None,
                },
            };
            let json = serde_json::to_string(&event).expect("an event serializes");
            let change = Arc::new(Change { id, kind, json });
            if inner.ring.len() == RING {
                inner.ring.pop_front();
            }
            inner.ring.push_back(Arc::clone(&change));
            // No receiver is no error: nobody is streaming.
            let _ = self.events.send(Arc::clone(&change));
            for queue in &self.webhooks {
                queue.push(&change);
            }
        }
    }

    /// Every record, in configuration order.
    pub(crate) fn records(&self) -> Vec<Arc<SessionRecord>> {
        self.lock().records.clone()
    }

    /// One session's record, by id.
    pub(crate) fn record(&self, id: &str) -> Option<Arc<SessionRecord>> {
        let idx = *self.ids.get(id)?;
        Some(Arc::clone(&self.lock().records[idx]))
    }

    /// Every session's closes by code, in configuration order.
    pub(crate) fn closes(&self) -> Vec<BTreeMap<CloseKey, u64>> {
        self.lock().closes.clone()
    }

    /// The events after `last` still held, and a receiver for the later
    /// ones, taken together so that none falls between. `gap` is true when
    /// some events after `last` are no longer held (or `last` is from
    /// another supervisor run, ahead of this one's ids).
    pub(crate) fn subscribe(
        &self,
        last: Option<u64>,
    ) -> (Vec<Arc<Change>>, bool, broadcast::Receiver<Arc<Change>>) {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        let Some(last) = last else {
            return (Vec::new(), false, receiver);
        };
        let newest = inner.next_id - 1;
        let oldest_held = inner.ring.front().map_or(inner.next_id, |c| c.id);
        let gap = last > newest || last + 1 < oldest_held;
        let from = if last > newest { 0 } else { last };
        let replay = inner.ring.iter().filter(|c| c.id > from).cloned().collect();
        (replay, gap, receiver)
    }

    /// The events made so far.
    pub(crate) fn events_made(&self) -> u64 {
        self.lock().next_id - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str, state: State) -> SessionRecord {
        SessionRecord::new(id, state)
    }

    fn json(change: &Change) -> serde_json::Value {
        serde_json::from_str(&change.json).unwrap()
    }

    #[test]
    fn only_real_changes_make_events() {
        let hub = Hub::new(vec![record("a", State::Stopped)], vec![]);
        let (_, _, mut rx) = hub.subscribe(None);
        hub.update(0, record("a", State::Starting), None);
        hub.update(0, record("a", State::Starting), None);
        let mut connected = record("a", State::Connected);
        connected.jid = Some("1@s.whatsapp.net".into());
        hub.update(0, connected.clone(), None);
        hub.update(0, connected, None);
        let first = rx.try_recv().unwrap();
        let second = rx.try_recv().unwrap();
        assert!(rx.try_recv().is_err(), "a repeated state makes nothing");
        assert_eq!((first.id, second.id), (1, 2));
        let v = json(&second);
        assert_eq!(v["event"], "state");
        assert_eq!(v["previous_state"], "starting");
        assert_eq!(v["session"]["state"], "connected");
        assert_eq!(v["session"]["id"], "a");
        assert!(v["at"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_new_qr_code_is_an_event_and_the_same_one_is_not() {
        let hub = Hub::new(vec![record("a", State::Starting)], vec![]);
        let mut pairing = record("a", State::Pairing);
        pairing.pairing = Some(PairingCode::Qr("one".into()));
        hub.update(0, pairing.clone(), None);
        hub.update(0, pairing.clone(), None);
        pairing.pairing = Some(PairingCode::Qr("two".into()));
        hub.update(0, pairing, None);
        let (replay, gap, _) = hub.subscribe(Some(0));
        assert!(!gap);
        let kinds: Vec<ChangeKind> = replay.iter().map(|c| c.kind).collect();
        assert_eq!(
            kinds,
            [ChangeKind::State, ChangeKind::Qr, ChangeKind::Qr],
            "state, then each new code once"
        );
    }

    #[test]
    fn resuming_replays_what_is_held_and_says_when_some_is_not() {
        let hub = Hub::new(vec![record("a", State::Stopped)], vec![]);
        for i in 0..(RING + 10) {
            let state = if i % 2 == 0 {
                State::Starting
            } else {
                State::Backoff
            };
            hub.update(0, record("a", state), Some(CloseKey::Code(408)));
        }
        let newest = hub.events_made();
        let (replay, gap, _) = hub.subscribe(Some(newest - 3));
        assert!(!gap);
        assert_eq!(
            replay.iter().map(|c| c.id).collect::<Vec<_>>(),
            [newest - 2, newest - 1, newest]
        );
        let (replay, gap, _) = hub.subscribe(Some(1));
        assert!(gap, "events 2..=10 are gone");
        assert_eq!(replay.len(), RING);
        let (_, gap, _) = hub.subscribe(Some(newest + 100));
        assert!(gap, "an id from another run");
        assert_eq!(hub.closes()[0][&CloseKey::Code(408)], (RING + 10) as u64);
    }
}
