//! Orphans: processes a worker detached from its process group (`setsid`,
//! a double fork). The supervisor is a child subreaper, so they become its
//! children when their parent dies. Before a session gets a new worker, the
//! orphans that carry its session directory are ended; at shutdown, all of
//! them are.
//!
//! Finding them means listing this process's children, which the kernel
//! does in time linear in their number (about 8 ms with 10,000 workers). A
//! sweep serves every session that waits at that moment, and the next one
//! may start only after a pause proportional to what the last one cost (200
//! times its listing time, at most a second) when that listing was
//! expensive: sweeping stays a small, bounded share of the supervisor's time
//! however many sessions restart, and adds nothing to a restart's latency
//! while it is cheap.
//! The listing is a read of this process's own `/proc` entry and waits on
//! nobody; while it is cheap (under [`INLINE_LISTING`]) it runs on the loop,
//! which spares a restart two thread switches, and once it is not, it runs
//! on the blocking pool.
//!
//! Identity: a candidate is a child that is neither a known worker nor
//! reaped since the listing, so its pid is still ours when the loop opens a
//! pidfd for it; from then on it is signalled only through that pidfd.

use std::collections::HashSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use tokio::sync::mpsc;
use tracing::{debug, warn};

use crate::process;

use super::event::{Event, SlotId};
use super::spawn::LEFTOVER_KILL_TIMEOUT;

/// The pause after a sweep, as a multiple of its listing time.
const PAUSE_FACTOR: u32 = 200;

/// The longest pause between two sweeps.
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// A listing that took less than this last time runs on the loop.
const INLINE_LISTING: Duration = Duration::from_micros(100);

#[derive(Debug)]
struct Sweep {
    id: u64,
    slots: Vec<SlotId>,
    /// Ending every orphan, at shutdown.
    everything: bool,
    /// Pids reaped while this sweep runs: never candidates.
    reaped: HashSet<u32>,
    cost: Duration,
}

/// The orphan sweeps of one supervisor.
#[derive(Debug)]
pub(super) struct Sweeper {
    waiting: Vec<SlotId>,
    everything_waiting: bool,
    current: Option<Sweep>,
    /// When the pause after the last sweep ends.
    next_allowed: Instant,
    counter: u64,
    /// What the last listing of children cost.
    last_cost: Duration,
}

impl Default for Sweeper {
    fn default() -> Self {
        Sweeper {
            waiting: Vec::new(),
            everything_waiting: false,
            current: None,
            next_allowed: Instant::now(),
            counter: 0,
            last_cost: Duration::ZERO,
        }
    }
}

impl Sweeper {
    /// `slot`'s worker was reaped: its orphans must be ended before it goes on.
    pub(super) fn request(&mut self, slot: SlotId) {
        self.waiting.push(slot);
    }

    /// Every orphan must be ended (the supervisor is shutting down).
    pub(super) fn request_everything(&mut self) {
        self.everything_waiting = true;
    }

    /// Whether a sweep runs or waits.
    pub(super) fn busy(&self) -> bool {
        self.current.is_some() || !self.waiting.is_empty() || self.everything_waiting
    }

    /// When the next sweep may start, if one waits and none runs.
    pub(super) fn due(&self) -> Option<Instant> {
        if self.current.is_some() || (self.waiting.is_empty() && !self.everything_waiting) {
            return None;
        }
        Some(self.next_allowed)
    }

    /// A child was reaped: if a sweep runs, it must not take that pid for
    /// one of its candidates (the number may already name someone else).
    pub(super) fn reaped(&mut self, pid: u32) {
        if let Some(sweep) = &mut self.current {
            sweep.reaped.insert(pid);
        }
    }

    /// Starts a sweep if one waits and its pause is over. A cheap listing
    /// is made at once and returned (the caller hands it to [`Self::listed`]);
    /// an expensive one runs on the blocking pool and comes back as
    /// `Event::OrphansListed`.
    pub(super) fn start_if_due(
        &mut self,
        now: Instant,
        tx: &mpsc::Sender<Event>,
    ) -> Option<(u64, std::io::Result<Vec<u32>>, Duration)> {
        if self.due().is_none_or(|t| t > now) {
            return None;
        }
        self.counter += 1;
        let id = self.counter;
        self.current = Some(Sweep {
            id,
            slots: std::mem::take(&mut self.waiting),
            everything: std::mem::take(&mut self.everything_waiting),
            reaped: HashSet::new(),
            cost: Duration::ZERO,
        });
        if self.last_cost < INLINE_LISTING {
            let started = Instant::now();
            let children = process::children();
            return Some((id, children, started.elapsed()));
        }
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let started = Instant::now();
            let children = process::children();
            let cost = started.elapsed();
            let _ = tx.blocking_send(Event::OrphansListed {
                sweep: id,
                children,
                cost,
            });
        });
        None
    }

    /// The children are listed. Returns the sessions served if there is
    /// nothing more to do; otherwise identifies the candidates off the loop.
    pub(super) fn listed(
        &mut self,
        sweep_id: u64,
        children: std::io::Result<Vec<u32>>,
        cost: Duration,
        is_worker: impl Fn(u32) -> bool,
        tx: &mpsc::Sender<Event>,
    ) -> Option<Vec<SlotId>> {
        let sweep = self.current.as_mut().filter(|s| s.id == sweep_id)?;
        sweep.cost = cost;
        self.last_cost = cost;
        let children = match children {
            Ok(c) => c,
            Err(e) => {
                // Without the list there is nothing to find; the worker's
                // group was emptied already.
                warn!("cannot list this process's children to find orphans: {e}");
                return Some(self.finish());
            }
        };
        let mut candidates = Vec::new();
        for pid in children {
            if is_worker(pid) || sweep.reaped.contains(&pid) {
                continue;
            }
            // Still our unreaped child: the pid is pinned, the pidfd is safe.
            match process::pidfd_open(pid) {
                Ok(fd) => candidates.push((pid, fd)),
                Err(e) => debug!(pid, "orphan gone before its pidfd: {e}"),
            }
        }
        if candidates.is_empty() {
            return Some(self.finish());
        }
        let tx = tx.clone();
        tokio::task::spawn_blocking(move || {
            let found = candidates
                .into_iter()
                .map(|(pid, fd)| (pid, fd, crate::leftovers::session_dir_of(pid)))
                .collect();
            let _ = tx.blocking_send(Event::OrphansIdentified {
                sweep: sweep_id,
                found,
            });
        });
        None
    }

    /// The candidates are identified: SIGKILL those of the swept sessions
    /// (all of them at shutdown), and wait for them off the loop. Returns
    /// the sessions served if nothing was signalled.
    pub(super) fn identified(
        &mut self,
        sweep_id: u64,
        found: Vec<(u32, OwnedFd, Option<PathBuf>)>,
        dir_of: impl Fn(SlotId) -> PathBuf,
        tx: &mpsc::Sender<Event>,
    ) -> Option<Vec<SlotId>> {
        let sweep = self.current.as_ref().filter(|s| s.id == sweep_id)?;
        let dirs: HashSet<PathBuf> = sweep.slots.iter().map(|&s| dir_of(s)).collect();
        let mut signalled = Vec::new();
        for (pid, fd, dir) in found {
            let ours = sweep.everything || dir.as_ref().is_some_and(|d| dirs.contains(d));
            if !ours {
                continue;
            }
            warn!(pid, session_dir = ?dir, "ending a process a worker left outside its process group");
            match process::pidfd_send_signal(&fd, Signal::SIGKILL) {
                Ok(true) => signalled.push((pid, fd)),
                Ok(false) => {}
                Err(e) => warn!(pid, "cannot signal an orphan: {e}"),
            }
        }
        if signalled.is_empty() {
            return Some(self.finish());
        }
        let tx = tx.clone();
        tokio::spawn(async move {
            let pids: Vec<u32> = signalled.iter().map(|(p, _)| *p).collect();
            // All were signalled at once: waiting for each in turn takes as
            // long as the slowest.
            let all = async move {
                for (pid, fd) in signalled {
                    // SAFETY: the AsyncFd owns the pidfd, so it stays open
                    // and names the same process while it is registered.
                    match unsafe { tokio::io::unix::AsyncFd::register(fd) } {
                        Ok(fd) => {
                            let _ = fd.readable().await;
                        }
                        Err(e) => debug!(pid, "cannot wait for an orphan: {e}"),
                    }
                }
            };
            if tokio::time::timeout(LEFTOVER_KILL_TIMEOUT, all)
                .await
                .is_err()
            {
                warn!(?pids, "orphans did not exit within 5s of SIGKILL");
            }
            let _ = tx
                .send(Event::OrphansEnded {
                    sweep: sweep_id,
                    pids,
                })
                .await;
        });
        None
    }

    /// The signalled orphans exited (the SIGCHLD path reaps them). Returns
    /// the sessions served.
    pub(super) fn ended(&mut self, sweep_id: u64) -> Option<Vec<SlotId>> {
        self.current.as_ref().filter(|s| s.id == sweep_id)?;
        Some(self.finish())
    }

    fn finish(&mut self) -> Vec<SlotId> {
        let sweep = self.current.take().expect("a sweep runs");
        // A cheap listing (a few hundred children) is made at once for each
        // exit: pausing would add its length to every restart's latency for
        // no measurable saving. An expensive one is paced.
        let pause = if sweep.cost < INLINE_LISTING {
            Duration::ZERO
        } else {
            (sweep.cost * PAUSE_FACTOR).min(MAX_PAUSE)
        };
        self.next_allowed = Instant::now() + pause;
        sweep.slots
    }
}
