//! The worker protocol: newline-delimited JSON events on an inherited pipe.
//!
//! See `docs/worker-protocol.md`. A worker is untrusted input: a malformed
//! line, a line over [`MAX_LINE`] bytes, an unknown event, or an event whose
//! text breaks its rules (a `jid` that is no JID, a `pair_code` that is no
//! pair code, a `qr` payload over [`MAX_QR`] bytes) is reported to the
//! caller as a [`LineError`] and skipped, and memory stays bounded whatever
//! the worker writes. A `LineError` shows worker text only escaped
//! ([`crate::text`]), and never a QR payload or pair code, which are secrets.

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
/// Environment variable, set only when the session is owned across hosts
/// (issue #10): the owner key's epoch, a number that grows with every new
/// owner. A worker that writes to shared state rejects writes stamped with
/// a lower token than one it has seen (docs/worker-protocol.md).
pub const ENV_FENCING_TOKEN: &str = "WA_CTL_FENCING_TOKEN";

/// The longest line accepted, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;

/// The longest `qr` payload accepted, in bytes. WhatsApp's is under 300
/// bytes (a reference and three base64 keys); the cap leaves room for any
/// other client's format while refusing what no phone could scan: a QR
/// code holds at most 2,953 bytes.
pub const MAX_QR: usize = 4096;

/// The longest `jid` accepted, in bytes. Real ones are under 64.
pub const MAX_JID: usize = 256;

/// The servers a `jid` may name: those whatsapp-rust knows
/// (`wacore_binary::jid::Server`).
pub const JID_SERVERS: &[&str] = &[
    "s.whatsapp.net",
    "lid",
    "g.us",
    "broadcast",
    "newsletter",
    "c.us",
    "hosted",
    "hosted.lid",
    "msgr",
    "interop",
    "bot",
    "call",
];

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
    /// Not JSON, or not an event; the text is escaped.
    #[error("malformed event: {0}")]
    Malformed(String),
    /// An event whose text breaks its rules; the text is escaped.
    #[error("invalid event: {0}")]
    Invalid(String),
}

/// Parses one line (without its newline) into an event.
pub fn parse_line(line: &[u8]) -> Result<WorkerEvent, LineError> {
    let text = std::str::from_utf8(line).map_err(|_| LineError::NotUtf8)?;
    // serde_json quotes the offending input in some errors (an unknown
    // variant, say): escape it, or a CR LF in it would forge a log line.
    let event: WorkerEvent = serde_json::from_str(text)
        .map_err(|e| LineError::Malformed(crate::text::escape(&e.to_string()).into_owned()))?;
    validate(&event).map_err(LineError::Invalid)?;
    Ok(event)
}

/// Checks the text a worker sends against the rules of its event (see
/// `docs/worker-protocol.md`, "Bad input"). The message names the rule; it
/// shows a jid escaped, and a QR payload or pair code only by its length.
pub fn validate(event: &WorkerEvent) -> Result<(), String> {
    match event {
        WorkerEvent::Qr { code } => {
            if code.is_empty() || code.len() > MAX_QR {
                return Err(format!(
                    "qr code of {} bytes: use 1 to {MAX_QR} bytes",
                    code.len()
                ));
            }
            if code.chars().any(char::is_control) {
                return Err(format!(
                    "qr code of {} bytes contains control characters",
                    code.len()
                ));
            }
            Ok(())
        }
        WorkerEvent::PairCode { code } => {
            if is_pair_code(code) {
                Ok(())
            } else {
                Err(format!(
                    "pair_code of {} bytes is not 8 characters from A-Z and 0-9 \
                     (optionally ABCD-EFGH)",
                    code.len()
                ))
            }
        }
        WorkerEvent::Connected { jid: Some(jid) } => {
            if is_jid(jid) {
                Ok(())
            } else {
                let shown: String = jid.chars().take(80).collect();
                Err(format!(
                    "jid {} is not a JID (user@server, server one of {})",
                    crate::text::Quoted(&shown),
                    JID_SERVERS.join(", ")
                ))
            }
        }
        _ => Ok(()),
    }
}

/// A pair code: 8 characters from A-Z and 0-9, or the same shown as two
/// groups of four, `ABCD-EFGH`. whatsapp-rust and Baileys draw from the
/// Crockford alphabet (no 0, I, O or U), a subset; lowercase is accepted
/// because a phone takes the code in either case.
pub fn is_pair_code(code: &str) -> bool {
    let bytes = code.as_bytes();
    let plain = |b: &[u8]| b.iter().all(u8::is_ascii_alphanumeric);
    match bytes.len() {
        8 => plain(bytes),
        9 => bytes[4] == b'-' && plain(&bytes[..4]) && plain(&bytes[5..]),
        _ => false,
    }
}

/// A JID as whatsapp-rust parses it: `user[.agent][:device]@server`, the
/// user made of letters, digits, `.`, `:`, `_` and `-` (legacy group ids
/// are `creator-timestamp`), the server one of [`JID_SERVERS`].
pub fn is_jid(jid: &str) -> bool {
    let Some((user, server)) = jid.split_once('@') else {
        return false;
    };
    jid.len() <= MAX_JID
        && !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'_' | b'-'))
        && user.as_bytes()[0].is_ascii_alphanumeric()
        && JID_SERVERS.contains(&server)
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
    fn real_jids_pass_and_others_do_not() {
        for good in [
            "15551234567@s.whatsapp.net",
            "15551234567:12@s.whatsapp.net",
            "15551234567.0:12@s.whatsapp.net",
            "123456789012345@lid",
            "123456789012345:3@lid",
            "120363012345678901@g.us",
            "15551234567-1600000000@g.us",
            "status@broadcast",
            "120363012345678901@newsletter",
            "15551234567@c.us",
        ] {
            assert!(is_jid(good), "{good}");
            let line = format!(r#"{{"event":"connected","jid":"{good}"}}"#);
            assert!(parse_line(line.as_bytes()).is_ok(), "{good}");
        }
        for bad in [
            "",
            "@s.whatsapp.net",
            "1555",
            "1@example.com",
            "1@s.whatsapp.net@s.whatsapp.net",
            "1 2@s.whatsapp.net",
            ":1@s.whatsapp.net",
            "j\u{1b}]0;PWNED@s.whatsapp.net",
            "1@s.whatsapp.net\r\nFAKE LINE",
            &format!("{}@s.whatsapp.net", "1".repeat(300)),
        ] {
            assert!(!is_jid(bad), "{bad:?}");
        }
        assert_eq!(
            parse_line(br#"{"event":"connected"}"#),
            Ok(WorkerEvent::Connected { jid: None }),
            "a jid is optional"
        );
    }

    /// Issue #9, item 5: the reproduction from the issue is a protocol error,
    /// and its message carries no raw control character.
    #[test]
    fn the_forged_line_of_issue_9_is_invalid() {
        let line = br#"{"event":"connected","jid":"j\u001b]0;PWNED\u0007\u001b[31mRED\u001b[0m\r\nFAKE LINE"}"#;
        let err = parse_line(line).unwrap_err();
        assert!(matches!(err, LineError::Invalid(_)), "{err:?}");
        let shown = err.to_string();
        assert!(!shown.chars().any(char::is_control), "{shown:?}");
        assert!(shown.contains(r"\r\nFAKE LINE"), "{shown}");
    }

    #[test]
    fn pair_codes() {
        for good in ["ABCD1234", "ABCD-EFGH", "abcd1234", "12345678"] {
            assert!(is_pair_code(good), "{good}");
        }
        for bad in [
            "",
            "ABC",
            "ABCD12345",
            "ABCD-EFG",
            "AB-CDEFGH",
            "\u{1b}[2J",
            "ABCD 123",
            "ABCDÉFGH",
        ] {
            assert!(!is_pair_code(bad), "{bad:?}");
        }
        let err = parse_line(br#"{"event":"pair_code","code":"\u001b[2J"}"#).unwrap_err();
        assert!(matches!(err, LineError::Invalid(_)), "{err:?}");
        assert!(
            !err.to_string().contains("[2J"),
            "a pair code is never shown: {err}"
        );
    }

    #[test]
    fn qr_payloads_are_bounded_and_never_shown() {
        let ok = format!(r#"{{"event":"qr","code":"2@{}"}}"#, "A".repeat(MAX_QR - 2));
        assert!(parse_line(ok.as_bytes()).is_ok());
        let long = format!(r#"{{"event":"qr","code":"2@{}"}}"#, "B".repeat(MAX_QR));
        let err = parse_line(long.as_bytes()).unwrap_err().to_string();
        assert!(err.contains(&format!("{} bytes", MAX_QR + 2)), "{err}");
        assert!(!err.contains("BBBB"), "{err}");
        for bad in [
            r#"{"event":"qr","code":""}"#,
            r#"{"event":"qr","code":"2@a\u001b[2J"}"#,
        ] {
            assert!(
                matches!(parse_line(bad.as_bytes()), Err(LineError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_lines_are_reported_escaped() {
        let err = parse_line(br#"{"event":"a\r\nFAKE\u001b[2J"}"#).unwrap_err();
        assert!(matches!(err, LineError::Malformed(_)), "{err:?}");
        assert!(!err.to_string().chars().any(char::is_control), "{err}");
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
