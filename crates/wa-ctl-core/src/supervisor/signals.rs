//! Signals, turned into values: SIGTERM and SIGINT ask for a shutdown,
//! SIGHUP for a reload (not supported: it is logged), SIGCHLD says a child
//! exited. Nothing runs in a signal handler; tokio's handler only wakes the
//! loop, which reads these values as one more branch of its `select!`.
//!
//! [`Signals::none`] is a source that never fires, for tests that drive the
//! loop without a process's signals (after nextest's `signal.rs`).

use tokio::signal::unix::{Signal, SignalKind, signal};

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SignalEvent {
    /// SIGTERM or SIGINT.
    Shutdown,
    /// SIGHUP.
    Hangup,
    /// SIGCHLD: one or more children exited.
    Child,
}

/// The signal streams the supervisor listens to.
pub(super) struct Signals {
    streams: Option<[Signal; 4]>,
}

impl Signals {
    /// Installs the handlers. Must run inside the runtime.
    pub(super) fn install() -> std::io::Result<Signals> {
        Ok(Signals {
            streams: Some([
                signal(SignalKind::terminate())?,
                signal(SignalKind::interrupt())?,
                signal(SignalKind::hangup())?,
                signal(SignalKind::child())?,
            ]),
        })
    }

    /// A source that never fires.
    #[cfg_attr(not(test), expect(dead_code, reason = "the no-op source is for tests"))]
    pub(super) fn none() -> Signals {
        Signals { streams: None }
    }

    /// The next signal.
    pub(super) async fn recv(&mut self) -> SignalEvent {
        let Some([term, int, hup, chld]) = &mut self.streams else {
            return std::future::pending().await;
        };
        tokio::select! {
            _ = term.recv() => SignalEvent::Shutdown,
            _ = int.recv() => SignalEvent::Shutdown,
            _ = hup.recv() => SignalEvent::Hangup,
            _ = chld.recv() => SignalEvent::Child,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_no_op_source_never_fires() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut s = Signals::none();
            let fired = tokio::time::timeout(std::time::Duration::from_millis(20), s.recv()).await;
            assert!(fired.is_err());
        });
    }
}
