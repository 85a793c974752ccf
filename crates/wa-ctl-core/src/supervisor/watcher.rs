//! The per-worker task: reads the worker's events pipe and forwards each
//! event line to the loop, in order. When the loop has reaped the worker it
//! says so, and the watcher reads what is left in the pipe, forwards it, and
//! reports `Drained` last, so that the worker's final `closed` event is seen
//! before the policy decides.
//!
//! The watcher holds no state of the session's. Its memory is bounded: one
//! line of at most 64 KiB in the splitter, and a read buffer shared by every
//! watcher of the thread (reads are synchronous once the pipe is readable,
//! so no buffer is held across an await).

use std::cell::RefCell;
use std::os::fd::{AsFd, OwnedFd};

use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use crate::protocol::{LineSplitter, WorkerEvent, parse_line};

use super::event::{Event, Generation, SlotId};

/// How much a watcher reads from the events pipe after its worker exited.
/// What the worker wrote fits in the pipe buffer (64 KiB by default); a
/// process that escaped the worker's group could hold the write end and keep
/// writing forever, hence a bound.
const DRAIN_LIMIT: usize = 1024 * 1024;

/// The size of the read buffer shared by the watchers of one thread.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    static READ_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_CHUNK]);
}

/// Starts watching a worker, given the non-blocking read end of its events
/// pipe. `reaped` fires once the loop has reaped it.
pub(super) fn spawn(
    events: OwnedFd,
    slot: SlotId,
    generation: Generation,
    tx: mpsc::Sender<Event>,
    reaped: oneshot::Receiver<()>,
) {
    tokio::spawn(watch(events, slot, generation, tx, reaped));
}

/// What one synchronous read from the pipe gave.
enum Read {
    Lines(Vec<WorkerEvent>),
    /// End of file, with the events of a last unterminated line.
    Eof(Vec<WorkerEvent>),
    /// Nothing there after all (a spurious wake-up).
    WouldBlock,
}

/// How `read_once` reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum How {
    /// Through tokio, once it reported the pipe readable.
    Ready,
    /// With `read(2)` itself, whatever tokio believes: after the worker was
    /// reaped, when tokio may not have seen the pipe readable yet (a worker
    /// that wrote `closed` and exited within a millisecond of its spawn).
    /// Tokio's `try_read` answers `WouldBlock` from its cached readiness
    /// without asking the kernel, and the last `closed` would be lost.
    Direct,
}

fn read_once(pipe: &pipe::Receiver, splitter: &mut LineSplitter, slot: SlotId, how: How) -> Read {
    READ_BUFFER.with(|buf| {
        let mut buf = buf.borrow_mut();
        let mut batch = Vec::new();
        let mut forward = |line: crate::protocol::Line| match line.and_then(|l| parse_line(&l)) {
            Ok(event) => batch.push(event),
            Err(e) => warn!(slot, "ignoring a line from the worker: {e}"),
        };
        let read = match how {
            How::Ready => pipe.try_read(&mut buf),
            How::Direct => nix::unistd::read(pipe.as_fd(), &mut buf).map_err(std::io::Error::from),
        };
        match read {
            Ok(0) => {
                splitter.finish(&mut forward);
                Read::Eof(batch)
            }
            Ok(n) => {
                splitter.push(&buf[..n], &mut forward);
                Read::Lines(batch)
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Read::WouldBlock,
            Err(e) => {
                debug!(slot, "events pipe: {e}");
                splitter.finish(&mut forward);
                Read::Eof(batch)
            }
        }
    })
}

async fn watch(
    events: OwnedFd,
    slot: SlotId,
    generation: Generation,
    tx: mpsc::Sender<Event>,
    mut reaped: oneshot::Receiver<()>,
) {
    // The spawner made the read end of a fresh pipe non-blocking: nothing to
    // check (and two system calls fewer per spawn).
    let pipe = match pipe::Receiver::from_owned_fd_unchecked(events) {
        Ok(p) => Some(p),
        Err(e) => {
            error!(slot, "cannot watch the events pipe: {e}");
            None
        }
    };
    let mut splitter = LineSplitter::new();
    let mut open = pipe.is_some();
    loop {
        let batch = tokio::select! {
            ready = async { pipe.as_ref().expect("guarded by open").readable().await }, if open => {
                if ready.is_err() {
                    open = false;
                    continue;
                }
                match read_once(pipe.as_ref().expect("guarded by open"), &mut splitter, slot, How::Ready) {
                    Read::Lines(batch) => batch,
                    Read::Eof(batch) => {
                        open = false;
                        if !forward(&tx, slot, generation, batch).await
                            || tx.send(Event::PipeClosed { slot, generation }).await.is_err()
                        {
                            return;
                        }
                        continue;
                    }
                    Read::WouldBlock => continue,
                }
            }
            // Fires when the loop reaped the worker, or when the loop is gone.
            _ = &mut reaped => break,
        };
        if !forward(&tx, slot, generation, batch).await {
            return;
        }
    }
    // The worker is reaped: everything it wrote is in the pipe. Read it all,
    // so that its last `closed` event decides, not the exit status.
    if let Some(p) = &pipe {
        let mut budget = DRAIN_LIMIT;
        while open && budget > 0 {
            let batch = match read_once(p, &mut splitter, slot, How::Direct) {
                Read::Lines(batch) => {
                    budget = budget.saturating_sub(READ_CHUNK);
                    batch
                }
                Read::Eof(batch) => {
                    open = false;
                    batch
                }
                Read::WouldBlock => break,
            };
            if !forward(&tx, slot, generation, batch).await {
                return;
            }
        }
        let mut last = Vec::new();
        splitter.finish(|line| {
            if let Ok(event) = line.and_then(|l| parse_line(&l)) {
                last.push(event);
            }
        });
        if !forward(&tx, slot, generation, last).await {
            return;
        }
    }
    let _ = tx.send(Event::Drained { slot, generation }).await;
}

/// Sends a worker's events to the loop, in order. False once the loop is gone.
async fn forward(
    tx: &mpsc::Sender<Event>,
    slot: SlotId,
    generation: Generation,
    batch: Vec<WorkerEvent>,
) -> bool {
    for event in batch {
        let sent = tx
            .send(Event::Worker {
                slot,
                generation,
                event,
            })
            .await;
        if sent.is_err() {
            return false;
        }
    }
    true
}
