//! The sessions' deadlines (backoff ends, stop grace periods), ordered, so
//! that finding the next one costs O(log n) and not a scan of every session.

use std::collections::BTreeSet;
use std::time::Instant;

use super::event::SlotId;

/// Sleeps until `deadline`, or forever without one: the timer arm of a
/// `select!` whose next deadline may not exist.
pub(super) async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// At most one deadline per session: the session's earliest.
#[derive(Debug, Default)]
pub(super) struct Deadlines {
    queue: BTreeSet<(Instant, SlotId)>,
    /// Each session's queued deadline, to find it in `queue`.
    by_slot: Vec<Option<Instant>>,
}

impl Deadlines {
    pub(super) fn new(slots: usize) -> Deadlines {
        Deadlines {
            queue: BTreeSet::new(),
            by_slot: vec![None; slots],
        }
    }

    /// Makes `slot`'s queued deadline `deadline`.
    pub(super) fn set(&mut self, slot: SlotId, deadline: Option<Instant>) {
        let queued = &mut self.by_slot[slot];
        if *queued == deadline {
            return;
        }
        if let Some(old) = queued.take() {
            self.queue.remove(&(old, slot));
        }
        if let Some(new) = deadline {
            self.queue.insert((new, slot));
        }
        *queued = deadline;
    }

    /// The earliest deadline of all.
    pub(super) fn next(&self) -> Option<Instant> {
        self.queue.first().map(|(t, _)| *t)
    }

    /// Removes and returns up to `max` sessions whose deadline is at or
    /// before `now`, earliest first.
    pub(super) fn pop_due(&mut self, now: Instant, max: usize) -> Vec<SlotId> {
        let mut due = Vec::new();
        while due.len() < max {
            match self.queue.first() {
                Some(&(t, slot)) if t <= now => {
                    self.queue.pop_first();
                    self.by_slot[slot] = None;
                    due.push(slot);
                }
                _ => break,
            }
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn earliest_first_and_replaced() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut d = Deadlines::new(3);
        d.set(0, Some(at(30)));
        d.set(1, Some(at(10)));
        d.set(2, Some(at(20)));
        d.set(1, Some(at(40)));
        assert_eq!(d.next(), Some(at(20)));
        d.set(2, None);
        assert_eq!(d.pop_due(at(35), 10), vec![0]);
        assert_eq!(d.pop_due(at(35), 10), Vec::<usize>::new());
        assert_eq!(d.next(), Some(at(40)));
        d.set(0, Some(at(1)));
        d.set(2, Some(at(1)));
        assert_eq!(d.pop_due(at(100), 2).len(), 2, "bounded per call");
        assert_eq!(d.pop_due(at(100), 2), vec![1]);
    }
}
