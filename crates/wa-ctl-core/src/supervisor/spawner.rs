//! The spawner thread: workers are started on a thread of their own, so
//! that the event loop never waits for one.
//!
//! A spawn is a `clone(CLONE_VFORK)`: the caller is suspended until the
//! child has called `execve`. That is about a millisecond, unless the
//! machine is saturated, when the child first waits for a CPU (measured:
//! seconds, with 10,000 sessions flapping on two cores). On this thread the
//! wait costs the loop nothing.
//!
//! The thread lives as long as the supervisor: `PR_SET_PDEATHSIG` fires when
//! the *thread* that spawned a worker ends, so it is joined only after the
//! loop has reaped every worker.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::mpsc;

use crate::process::{SpawnedWorker, Spawner, WorkerSpec};

use super::event::{Event, Generation, SlotId};

/// One worker to start.
#[derive(Debug)]
pub(super) struct SpawnRequest {
    pub(super) slot: SlotId,
    pub(super) generation: Generation,
    pub(super) program: PathBuf,
    pub(super) args: Arc<[String]>,
    pub(super) session_id: String,
    pub(super) session_dir: PathBuf,
    pub(super) env: Arc<BTreeMap<String, String>>,
    pub(super) pair_phone: Option<String>,
    /// The owner key's epoch (issue #10): `WA_CTL_FENCING_TOKEN`.
    pub(super) fencing_token: Option<i64>,
    pub(super) cwd: PathBuf,
}

/// The result of a spawn, as the loop receives it.
#[derive(Debug)]
pub(super) struct SpawnResult {
    pub(super) slot: SlotId,
    pub(super) generation: Generation,
    pub(super) program: PathBuf,
    pub(super) worker: Result<SpawnedWorker, String>,
}

/// The spawner thread, and the way to it.
pub(super) struct SpawnerThread {
    requests: Option<std::sync::mpsc::Sender<SpawnRequest>>,
    thread: Option<JoinHandle<()>>,
}

impl SpawnerThread {
    /// Starts the thread; results come back on `tx` as `Event::Spawned`.
    pub(super) fn start(
        mut spawner: Spawner,
        tx: mpsc::Sender<Event>,
    ) -> std::io::Result<SpawnerThread> {
        let (requests, incoming) = std::sync::mpsc::channel::<SpawnRequest>();
        let thread = std::thread::Builder::new()
            .name("spawner".to_owned())
            .stack_size(256 * 1024)
            .spawn(move || {
                while let Ok(request) = incoming.recv() {
                    let spec = WorkerSpec {
                        program: &request.program,
                        args: &request.args,
                        session_id: &request.session_id,
                        session_dir: &request.session_dir,
                        env: &request.env,
                        pair_phone: request.pair_phone.as_deref(),
                        fencing_token: request.fencing_token,
                        cwd: &request.cwd,
                    };
                    let worker = spawner.spawn(&spec).map_err(|e| crate::error_chain(&e));
                    let result = SpawnResult {
                        slot: request.slot,
                        generation: request.generation,
                        program: request.program,
                        worker,
                    };
                    if tx.blocking_send(Event::Spawned(result)).is_err() {
                        return;
                    }
                }
            })?;
        Ok(SpawnerThread {
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Asks for a worker. False if the thread is gone (it never ends
    /// before the supervisor unless it panicked).
    pub(super) fn spawn(&self, request: SpawnRequest) -> bool {
        self.requests
            .as_ref()
            .is_some_and(|r| r.send(request).is_ok())
    }
}

impl Drop for SpawnerThread {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.requests = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
