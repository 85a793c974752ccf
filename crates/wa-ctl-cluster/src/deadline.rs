//! The supervisor's own ownership deadline, computed from the send time of
//! the last acknowledged keepalive. Pure, so that the loop integration can
//! unit-test its timeline without an etcd.
//!
//! The send time, not the time the answer arrived, is the base: the
//! server's TTL clock restarted somewhere between the two, so the send
//! time is the earliest it can have restarted, and a deadline based on it
//! can only be early, never late.

use std::time::{Duration, Instant};

/// When this supervisor must consider its ownership lost: `sent_at + ttl -
/// margin`, with `sent_at` the send time of the last keepalive that etcd
/// acknowledged and `ttl` the TTL it acknowledged.
///
/// Returns `None` when the margin is not smaller than the TTL (the
/// configuration cannot work, and says so before it gets here), or when
/// the addition overflows `Instant`. The caller treats `None` as "already
/// past": no ownership without a deadline.
pub fn ownership_deadline(sent_at: Instant, ttl: Duration, margin: Duration) -> Option<Instant> {
    let usable = ttl.checked_sub(margin).filter(|usable| !usable.is_zero())?;
    sent_at.checked_add(usable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_is_send_time_plus_ttl_minus_margin() {
        let sent_at = Instant::now();
        assert_eq!(
            ownership_deadline(sent_at, Duration::from_secs(10), Duration::from_secs(3)),
            Some(sent_at + Duration::from_secs(7))
        );
        assert_eq!(
            ownership_deadline(sent_at, Duration::from_millis(2500), Duration::ZERO),
            Some(sent_at + Duration::from_millis(2500))
        );
    }

    #[test]
    fn a_margin_that_eats_the_ttl_gives_no_deadline() {
        let sent_at = Instant::now();
        let ttl = Duration::from_secs(5);
        assert_eq!(ownership_deadline(sent_at, ttl, ttl), None);
        assert_eq!(
            ownership_deadline(sent_at, ttl, ttl + Duration::from_nanos(1)),
            None
        );
        assert_eq!(
            ownership_deadline(sent_at, Duration::ZERO, Duration::ZERO),
            None
        );
    }

    #[test]
    fn overflow_gives_no_deadline() {
        let sent_at = Instant::now();
        assert_eq!(
            ownership_deadline(sent_at, Duration::MAX, Duration::ZERO),
            None
        );
    }
}
