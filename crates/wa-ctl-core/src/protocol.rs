//! The worker protocol: newline-delimited JSON events on an inherited pipe.
//!
//! See `docs/worker-protocol.md`. A worker is untrusted input: a malformed
//! line, a line over [`MAX_LINE`] bytes or an unknown event is reported to the
//! caller as a [`LineError`] and skipped, and memory stays bounded whatever
//! the worker writes.

use serde::Deserialize;

/// Environment variable: the session id.
pub const ENV_SESSION_ID: &str = "WA_CTL_SESSION_ID";
/// Environment variable: the session directory, created with mode 0700.
pub const ENV_SESSION_DIR: &str = "WA_CTL_SESSION_DIR";
/// Environment variable: the number of the inherited pipe's write end.
pub const ENV_EVENTS_FD: &str = "WA_CTL_EVENTS_FD";
/// Environment variable, set only when `wa-ctl login --phone` asked for the
/// pair-code flow: the phone number, digits only, country code first.
pub const ENV_PAIR_PHONE: &str = "WA_CTL_PAIR_PHONE";

/// The longest line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// One event a worker reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// A QR code is waiting to be scanned. The payload is a secret.
    Qr { code: String },
    /// A pair code is waiting to be typed on the phone.
    PairCode { code: String },
    /// The connection is up.
    Connected {
        #[serde(default)]
        jid: Option<String>,
    },
    /// The connection ended; `code` decides what the supervisor does next.
    Closed {
        code: u16,
        #[serde(default)]
        reason: Option<String>,
        /// The server said when to try again (a temporary ban, a rate
        /// limit): the supervisor never retries before that many seconds
        /// (issue #9; an extension of the documented fields).
        #[serde(default)]
        retry_after_s: Option<u64>,
    },
    /// The worker is alive and its connection loop turns. A worker that
    /// sends it once must send it at least every `heartbeat_timeout`, or it
    /// is ended as hung (issue #9; an extension of the documented events).
    Alive,
    /// Pairing timed out: every QR code expired unused. The session shows
    /// `logged_out` with the reason "pairing expired" and is not restarted
    /// until `wa-ctl login` (an extension of the four documented events).
    PairingExpired,
}

/// Why a line was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("line longer than {MAX_LINE} bytes ({0} bytes dropped)")]
    TooLong(usize),
    #[error("line is not UTF-8")]
    NotUtf8,
    #[error("malformed event: {0}")]
    Malformed(String),
}

/// Parses one line (without its newline) into an event.
pub fn parse_line(line: &[u8]) -> Result<WorkerEvent, LineError> {
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    serde_json::from_str(text).map_err(|e| LineError::Malformed(e.to_string()))
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
///
/// A longer line is dropped as it streams past, so that memory holds at most
/// one maximal line whatever the input.
#[derive(Debug, Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
    /// Bytes dropped from the current over-long line, or 0.
    discarding: usize,
}

/// One item out of the splitter.
pub type Line = Result<Vec<u8>, LineError>;

impl LineSplitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds bytes in; calls `out` once per complete line.
    pub fn push(&mut self, mut bytes: &[u8], mut out: impl FnMut(Line)) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (chunk, rest, complete) = match newline {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if self.discarding > 0 {
                self.discarding += chunk.len();
            } else if self.buf.len() + chunk.len() > MAX_LINE {
                self.discarding = self.buf.len() + chunk.len();
                self.buf = Vec::new();
            } else {
                self.buf.extend_from_slice(chunk);
            }
            if complete {
                if self.discarding > 0 {
                    out(Err(LineError::TooLong(self.discarding)));
                    self.discarding = 0;
                } else {
                    let line = std::mem::take(&mut self.buf);
                    if !line.is_empty() {
                        out(Ok(line));
                    }
                }
            }
        }
    }

    /// The bytes of an unterminated last line, at end of stream.
    pub fn finish(&mut self, out: impl FnOnce(Line)) {
        if self.discarding > 0 {
            out(Err(LineError::TooLong(self.discarding)));
        } else if !self.buf.is_empty() {
            out(Ok(std::mem::take(&mut self.buf)));
        }
        self.discarding = 0;
        self.buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<Line> {
        let mut s = LineSplitter::new();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, |l| out.push(l));
        }
        s.finish(|l| out.push(l));
        out
    }

    #[test]
    fn events_parse() {
        assert_eq!(
            parse_line(br#"{"event":"qr","code":"x"}"#),
            Ok(WorkerEvent::Qr { code: "x".into() })
        );
        assert_eq!(
            parse_line(br#"{"event":"pair_code","code":"ABCD-EFGH"}"#),
            Ok(WorkerEvent::PairCode {
                code: "ABCD-EFGH".into()
            })
        );
        assert_eq!(
            parse_line(br#"{"event":"connected"}"#),
            Ok(WorkerEvent::Connected { jid: None })
        );
        assert_eq!(
            parse_line(br#"{"event":"closed","code":440,"reason":"conflict","extra":1}"#),
            Ok(WorkerEvent::Closed {
                code: 440,
                reason: Some("conflict".into()),
                retry_after_s: None,
            })
        );
        assert_eq!(
            parse_line(br#"{"event":"closed","code":402,"retry_after_s":3600}"#),
            Ok(WorkerEvent::Closed {
                code: 402,
                reason: None,
                retry_after_s: Some(3600),
            })
        );
        assert_eq!(parse_line(br#"{"event":"alive"}"#), Ok(WorkerEvent::Alive));
        for bad in [
            &b"{"[..],
            b"null",
            br#"{"event":"dance"}"#,
            br#"{"event":"closed"}"#,
            br#"{"event":"closed","code":-1}"#,
            br#"{"event":"closed","code":503,"retry_after_s":-5}"#,
            br#"{"event":"closed","code":503,"retry_after_s":"60"}"#,
            b"\xff\xfe",
        ] {
            assert!(parse_line(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn splits_across_chunks() {
        let out = split(&[b"ab", b"c\nd", b"\n\n", b"tail"]);
        assert_eq!(
            out,
            vec![Ok(b"abc".to_vec()), Ok(b"d".to_vec()), Ok(b"tail".to_vec())]
        );
    }

    #[test]
    fn long_line_is_dropped_and_the_next_survives() {
        let long = vec![b'x'; MAX_LINE + 10];
        let out = split(&[&long[..1000], &long[1000..], b"\nok\n"]);
        assert_eq!(
            out,
            vec![Err(LineError::TooLong(MAX_LINE + 10)), Ok(b"ok".to_vec())]
        );
        let exact = vec![b'y'; MAX_LINE];
        let out = split(&[&exact, b"\n"]);
        assert_eq!(out, vec![Ok(exact)]);
    }
}
