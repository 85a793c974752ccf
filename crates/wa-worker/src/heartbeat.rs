//! When `wa-worker` says `alive`: the heartbeat of docs/worker-protocol.md.
//!
//! whatsapp-rust has no keepalive hook: its keepalive loop is private and
//! emits no event. What it does expose is the time the connection last
//! received data (`Client::stats().last_data_received_ms`). On a healthy
//! idle connection that time never gets older than one keepalive round: the
//! loop pings when nothing arrived for a randomised 15 to 30 s, and gives
//! the socket up as dead when nothing arrives within 20 s of a send. So a
//! receive younger than [`FRESHNESS`] proves that the library's read loop
//! and its keepalive are making progress, and the worker's own timer firing
//! proves that its runtime is. `alive` is sent when all three hold.
//!
//! It starts with `connected`, never before: until then the start deadline
//! governs, and during pairing the library's QR rotation ends the wait.

use std::time::Duration;

use whatsapp_rust::wacore::protocol::keepalive::{DEAD_SOCKET_TIME, KEEP_ALIVE_INTERVAL_MAX};

/// How often the worker considers sending `alive`: a third of the
/// supervisor's default `heartbeat_timeout` (60 s), so that one late or
/// skipped beat never looks like a hang.
pub const INTERVAL: Duration = Duration::from_secs(20);

/// The oldest last receive that still proves progress: the longest keepalive
/// interval plus the time the library waits for an answer before it
/// declares the socket dead.
pub const FRESHNESS: Duration = KEEP_ALIVE_INTERVAL_MAX.saturating_add(DEAD_SOCKET_TIME);

/// Whether a beat at `now_ms` (wall clock, in the library's milliseconds)
/// sends `alive`.
///
/// `connected`: the worker has reported `connected`. `socket_up`: the
/// library still holds a socket. `last_received_ms`: when it last received
/// data, 0 if never.
pub fn due(connected: bool, socket_up: bool, last_received_ms: u64, now_ms: u64) -> bool {
    connected
        && socket_up
        && last_received_ms != 0
        // A clock stepped back makes the receive look recent: one beat too
        // many is harmless, a missed one could end a healthy worker.
        && now_ms.saturating_sub(last_received_ms) <= FRESHNESS.as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_767_225_600_000;

    #[test]
    fn alive_needs_connected_a_socket_and_a_fresh_receive() {
        assert!(due(true, true, NOW - 1_000, NOW));
        assert!(!due(false, true, NOW - 1_000, NOW), "not before connected");
        assert!(
            !due(true, false, NOW - 1_000, NOW),
            "not once the socket is gone"
        );
        assert!(!due(true, true, 0, NOW), "not before anything was received");
    }

    #[test]
    fn freshness_is_one_keepalive_round() {
        assert_eq!(FRESHNESS, Duration::from_secs(50));
        assert!(due(true, true, NOW - 50_000, NOW));
        assert!(!due(true, true, NOW - 50_001, NOW), "a stalled read loop");
        assert!(due(true, true, NOW + 5_000, NOW), "a clock stepped back");
    }

    /// A healthy idle connection receives a pong at most every 30 s (plus
    /// its round trip): with a beat every 20 s, no beat is ever skipped, so
    /// the supervisor sees `alive` at least every 20 s, well inside 60 s.
    #[test]
    fn an_idle_healthy_connection_never_skips_a_beat() {
        let pong_every = KEEP_ALIVE_INTERVAL_MAX.as_millis() as u64 + 2_000;
        let mut last_pong = NOW;
        let mut beat = NOW;
        for _ in 0..1000 {
            beat += INTERVAL.as_millis() as u64;
            while last_pong + pong_every <= beat {
                last_pong += pong_every;
            }
            assert!(due(true, true, last_pong, beat));
        }
    }
}
