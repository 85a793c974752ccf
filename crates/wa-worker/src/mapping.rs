//! How each library event maps to the worker protocol: a pure function, so
//! that every row of the table in `docs/worker-protocol.md` is a unit test.

use std::time::{Duration, SystemTime};

use whatsapp_rust::OwnedNodeRef;
use whatsapp_rust::types::events::{ConnectFailure, Event, TemporaryBan};
use whatsapp_rust::wacore::stanza::connect_failure::ConnectFailureStanza;

/// Close codes the worker reports.
pub mod code {
    /// Network loss, keepalive failure, a transport that cannot connect, or
    /// no pairing code nor connection within the start deadline.
    pub const TIMED_OUT: u16 = 408;
    /// Another connection with the same credentials replaced this one.
    pub const CONFLICT: u16 = 440;
    /// Logged out.
    pub const LOGGED_OUT: u16 = 401;
    /// Temporarily banned.
    pub const TEMP_BANNED: u16 = 402;
    /// The server rejects this client version.
    pub const CLIENT_OUTDATED: u16 = 405;
    /// Restart required: after pairing, or stream error 515.
    pub const RESTART_REQUIRED: u16 = 515;
    /// A stream error without a numeric code.
    pub const STREAM_ERROR: u16 = 500;
    /// The server is unavailable or rate-limits this session.
    pub const SERVICE_UNAVAILABLE: u16 = 503;
    /// The credential store is not a readable SQLite database.
    pub const STORE_UNREADABLE: u16 = 600;
}

/// The pair-code alphabet of whatsapp-rust (Crockford base 32 without 0, I,
/// O and U); a code is eight of these, without a separator.
const PAIR_CODE_ALPHABET: &[u8; 32] = b"123456789ABCDEFGHJKLMNPQRSTVWXYZ";

/// What a library event means for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A QR code to show (secret).
    Qr(String),
    /// A pair code to show (secret): eight characters of
    /// [`PAIR_CODE_ALPHABET`].
    PairCode(String),
    /// The library produced a pair code the protocol cannot carry. The code
    /// itself is a secret and is not kept.
    BadPairCode { length: usize },
    /// The connection is up.
    Connected,
    /// The connection ended, or will: this code decides what happens next.
    /// `retry_after_s` is the server's word on when to try again, if it gave
    /// one.
    Close {
        code: u16,
        reason: String,
        retry_after_s: Option<u64>,
    },
    /// A lost connection (408). Reported only if nothing more specific came
    /// first: a logout is followed by a disconnect, and the logout decides.
    Lost { reason: String },
    /// Every QR code expired unused.
    PairingExpired,
    /// Nothing the supervisor needs.
    Ignore,
}

impl Report {
    fn close(code: u16, reason: String) -> Report {
        Report::Close {
            code,
            reason,
            retry_after_s: None,
        }
    }
}

/// Maps one library event; `now` dates a ban's expiry in its reason.
pub fn classify(event: &Event, now: SystemTime) -> Report {
    match event {
        Event::PairingQrCode(qr) => Report::Qr(qr.code.clone()),
        Event::PairingCode(pc) if is_pair_code(&pc.code) => Report::PairCode(pc.code.clone()),
        Event::PairingCode(pc) => Report::BadPairCode {
            length: pc.code.len(),
        },
        Event::Connected(_) => Report::Connected,
        Event::StreamReplaced(_) => Report::close(
            code::CONFLICT,
            "stream replaced: another connection uses these credentials".to_owned(),
        ),
        Event::LoggedOut(logout) => {
            // The library reports 401, 403 (account locked) or 406 (unknown
            // logout); anything else it calls a logout is a 401.
            let reason_code = logout.reason.code();
            let code = match u16::try_from(reason_code) {
                Ok(c @ (401 | 403 | 406)) => c,
                _ => code::LOGGED_OUT,
            };
            Report::close(code, format!("logged out ({reason_code})"))
        }
        Event::ConnectFailure(failure) => connect_failure(failure),
        Event::TemporaryBan(ban) => temporary_ban(ban, now),
        Event::ClientOutdated(_) => Report::close(
            code::CLIENT_OUTDATED,
            "client outdated: upgrade wa-worker".to_owned(),
        ),
        Event::PairSuccess(_) => Report::close(
            code::RESTART_REQUIRED,
            "paired: restart required".to_owned(),
        ),
        Event::StreamError(err) => match err.code.parse::<u16>() {
            Ok(n) => Report::close(n, format!("stream error {n}")),
            Err(_) => Report::close(code::STREAM_ERROR, format!("stream error `{}`", err.code)),
        },
        Event::RawNode(node) => raw_stream_error(node),
        Event::Disconnected(d) => Report::Lost {
            reason: format!("disconnected: {}", d.reason),
        },
        Event::PairingQrCodesExhausted(_) => Report::PairingExpired,
        _ => Report::Ignore,
    }
}

/// Whether `code` is what the protocol's `pair_code` carries: exactly eight
/// characters of the library's alphabet, upper case, no separator.
pub fn is_pair_code(code: &str) -> bool {
    code.len() == 8 && code.bytes().all(|b| PAIR_CODE_ALPHABET.contains(&b))
}

/// A ban lasts `expire` from the moment the server said so: that is the
/// earliest retry, and the reason names the moment in UTC so that a person
/// reading `wa-ctl status` later still knows when it ends.
fn temporary_ban(ban: &TemporaryBan, now: SystemTime) -> Report {
    // A negative duration from the server means the ban is already over.
    let seconds = u64::try_from(ban.expire.num_seconds()).unwrap_or(0);
    let until = now
        .checked_add(Duration::from_secs(seconds))
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_else(|| "a time too far to show".to_owned());
    Report::Close {
        code: code::TEMP_BANNED,
        reason: format!(
            "temporary ban ({}), expires in {seconds}s, at {until}",
            ban.code
        ),
        retry_after_s: Some(seconds),
    }
}

/// A `<failure>` keeps its reason number. Its `expire` attribute, when the
/// server sends one, is the only retry hint the stanza has (a duration in
/// seconds, as on a ban), so it becomes `retry_after_s` whatever the reason:
/// a 402 whose ban code the library could not read lands here too.
fn connect_failure(failure: &ConnectFailure) -> Report {
    let n = failure.reason.code();
    let expire = failure.raw.as_ref().and_then(|raw| {
        let node = raw.as_node_ref();
        ConnectFailureStanza::parse(&node).expire
    });
    let mut reason = match &failure.message {
        Some(m) => format!("connect failure {n}: {m}"),
        None => format!("connect failure {n}"),
    };
    if let Some(seconds) = expire {
        reason.push_str(&format!(", retry in {seconds}s"));
    }
    Report::Close {
        code: u16::try_from(n).unwrap_or(code::STREAM_ERROR),
        reason,
        retry_after_s: expire,
    }
}

/// whatsapp-rust handles `<stream:error code="503">` (the server going down),
/// `code="429"` (rate limited) and `code="515"` (restart required) by itself
/// and emits no event for them, only the disconnect that follows, which
/// alone would read as a network loss (408). The raw stanza is the one place
/// the worker sees them. 503 and 429 both mean "come back later", so both
/// are reported as 503; the stanza carries no retry hint, so `retry_after_s`
/// is left to the supervisor's backoff.
fn raw_stream_error(node: &OwnedNodeRef) -> Report {
    if node.tag() != "stream:error" {
        return Report::Ignore;
    }
    stream_error_close(node.attrs().optional_string("code").as_deref())
}

/// The close for a `<stream:error>` with this `code`, for the codes the
/// library keeps to itself; every other stream error reaches the worker as
/// an event of its own.
fn stream_error_close(code: Option<&str>) -> Report {
    match code {
        Some("503") => Report::close(
            code::SERVICE_UNAVAILABLE,
            "stream error 503: service unavailable".to_owned(),
        ),
        Some("429") => Report::close(
            code::SERVICE_UNAVAILABLE,
            "stream error 429: rate limited".to_owned(),
        ),
        Some("515") => Report::close(
            code::RESTART_REQUIRED,
            "stream error 515: restart required".to_owned(),
        ),
        _ => Report::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use whatsapp_rust::types::events::*;
    use whatsapp_rust::wacore::net::DisconnectReason;
    use whatsapp_rust::wacore::pair_code::PairCodeUtils;
    use whatsapp_rust::wacore_binary::marshal::marshal;
    use whatsapp_rust::{Jid, NodeBuilder, OwnedNodeRef};

    use super::*;
    use std::sync::Arc;

    /// 2026-01-01T00:00:00Z, so that expiry times are exact.
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_225_600)
    }

    fn report(event: Event) -> Report {
        classify(&event, now())
    }

    /// The code, reason and retry hint of a close.
    fn close_of(event: Event) -> (u16, String, Option<u64>) {
        match report(event) {
            Report::Close {
                code,
                reason,
                retry_after_s,
            } => (code, reason, retry_after_s),
            other => panic!("expected a close, got {other:?}"),
        }
    }

    fn close(event: Event) -> u16 {
        close_of(event).0
    }

    /// A decoded stanza, as the library forwards it in `Event::RawNode`.
    fn raw_node(node: whatsapp_rust::wacore_binary::Node) -> Event {
        // The wire form starts with a format byte that the decoder expects
        // stripped, as the library's own read loop does.
        let bytes = marshal(&node).unwrap();
        Event::RawNode(Arc::new(OwnedNodeRef::new(bytes[1..].to_vec()).unwrap()))
    }

    #[test]
    fn stream_replaced_is_440() {
        assert_eq!(
            close(Event::StreamReplaced(StreamReplaced::builder().build())),
            440
        );
    }

    #[test]
    fn logged_out_is_401_or_its_reason() {
        let logout =
            |reason| Event::LoggedOut(LoggedOut::builder().on_connect(true).reason(reason).build());
        assert_eq!(close(logout(ConnectFailureReason::LoggedOut)), 401);
        assert_eq!(close(logout(ConnectFailureReason::AccountLocked)), 403);
        assert_eq!(close(logout(ConnectFailureReason::UnknownLogout)), 406);
        assert_eq!(close(logout(ConnectFailureReason::Generic)), 401);
    }

    #[test]
    fn connect_failure_is_its_reason_number() {
        let failure =
            |reason| Event::ConnectFailure(ConnectFailure::builder().reason(reason).build());
        assert_eq!(
            close_of(failure(ConnectFailureReason::ServiceUnavailable)),
            (503, "connect failure 503".to_owned(), None)
        );
        assert_eq!(
            close(failure(ConnectFailureReason::InternalServerError)),
            500
        );
        assert_eq!(close(failure(ConnectFailureReason::BadUserAgent)), 409);
        assert_eq!(close(failure(ConnectFailureReason::Unknown(499))), 499);
    }

    /// issue #9, item 9: a `<failure>` that says how long to stay away is
    /// never retried sooner, whatever its reason.
    #[test]
    fn connect_failure_with_expire_carries_retry_after() {
        let stanza = |reason: &str| {
            NodeBuilder::new("failure")
                .attr("reason", reason)
                .attr("expire", "120")
                .build()
        };
        let event = |reason, raw| {
            Event::ConnectFailure(ConnectFailure::builder().reason(reason).raw(raw).build())
        };
        assert_eq!(
            close_of(event(
                ConnectFailureReason::ServiceUnavailable,
                stanza("503")
            )),
            (
                503,
                "connect failure 503, retry in 120s".to_owned(),
                Some(120)
            )
        );
        // A ban the library could not type (no `code`) is still a 402 that
        // waits out its `expire`.
        assert_eq!(
            close_of(event(ConnectFailureReason::TempBanned, stanza("402"))),
            (
                402,
                "connect failure 402, retry in 120s".to_owned(),
                Some(120)
            )
        );
        // Without `expire` there is no hint: the backoff decides.
        let bare = NodeBuilder::new("failure").attr("reason", "503").build();
        assert_eq!(
            close_of(event(ConnectFailureReason::ServiceUnavailable, bare)).2,
            None
        );
    }

    /// issue #9, item 9: a temporary ban is 402, retried no sooner than its
    /// expiry, which the reason names.
    #[test]
    fn temporary_ban_is_402_with_retry_after_its_expiry() {
        let ban = |seconds| {
            Event::TemporaryBan(
                TemporaryBan::builder()
                    .code(TempBanReason::BlockedByUsers)
                    .expire(whatsapp_rust::chrono::Duration::seconds(seconds))
                    .build(),
            )
        };
        assert_eq!(
            close_of(ban(3600)),
            (
                402,
                "temporary ban (102: too many people blocked you), expires in 3600s, \
                 at 2026-01-01T01:00:00Z"
                    .to_owned(),
                Some(3600)
            )
        );
        // A ban that is already over waits for nothing.
        let (code, reason, retry_after_s) = close_of(ban(-5));
        assert_eq!((code, retry_after_s), (402, Some(0)), "{reason}");
    }

    #[test]
    fn client_outdated_is_405() {
        assert_eq!(
            close(Event::ClientOutdated(ClientOutdated::builder().build())),
            405
        );
    }

    #[test]
    fn stream_error_515_and_pair_success_are_515() {
        assert_eq!(
            close(Event::StreamError(
                StreamError::builder().code("515".to_owned()).build()
            )),
            515
        );
        let jid: Jid = "15550001111@s.whatsapp.net".parse().unwrap();
        let paired = PairSuccess::builder()
            .id(jid.clone())
            .lid(jid)
            .business_name(String::new())
            .platform("android".to_owned())
            .build();
        assert_eq!(close(Event::PairSuccess(paired)), 515);
        assert_eq!(
            close(Event::StreamError(
                StreamError::builder()
                    .code("xml-not-well-formed".to_owned())
                    .build()
            )),
            500
        );
    }

    /// issue #9, item 9: the stream errors the library keeps to itself are
    /// read from the raw stanza; 503 and 429 are "come back later" (503),
    /// 515 is a restart.
    #[test]
    fn raw_stream_errors_503_429_515() {
        let stream_error =
            |code: &str| raw_node(NodeBuilder::new("stream:error").attr("code", code).build());
        assert_eq!(
            close_of(stream_error("503")),
            (
                503,
                "stream error 503: service unavailable".to_owned(),
                None
            )
        );
        assert_eq!(
            close_of(stream_error("429")),
            (503, "stream error 429: rate limited".to_owned(), None)
        );
        assert_eq!(close(stream_error("515")), 515);
        // The library reports every other stream error itself.
        assert_eq!(report(stream_error("401")), Report::Ignore);
        assert_eq!(
            report(raw_node(NodeBuilder::new("stream:error").build())),
            Report::Ignore
        );
        // Other stanzas are no close, whatever their attributes.
        assert_eq!(
            report(raw_node(
                NodeBuilder::new("failure").attr("code", "503").build()
            )),
            Report::Ignore
        );
    }

    #[test]
    fn disconnected_is_a_408_loss() {
        for reason in [
            DisconnectReason::StreamEnded,
            DisconnectReason::ReadError("reset".into()),
        ] {
            let event = Event::Disconnected(Disconnected::builder().reason(reason).build());
            assert!(matches!(report(event), Report::Lost { .. }));
        }
    }

    #[test]
    fn qr_exhaustion_is_pairing_expired() {
        let event = Event::PairingQrCodesExhausted(
            PairingQrCodesExhausted::builder()
                .disconnected(true)
                .build(),
        );
        assert_eq!(report(event), Report::PairingExpired);
    }

    fn pair_code(code: &str) -> Event {
        Event::PairingCode(
            PairingCode::builder()
                .code(code.to_owned())
                .timeout(Duration::from_secs(60))
                .build(),
        )
    }

    #[test]
    fn pairing_codes_and_connected() {
        let qr = PairingQrCode::builder()
            .code("2@abc".to_owned())
            .timeout(Duration::from_secs(60))
            .build();
        assert_eq!(report(Event::PairingQrCode(qr)), Report::Qr("2@abc".into()));
        assert_eq!(
            report(pair_code("ABCD1234")),
            Report::PairCode("ABCD1234".into())
        );
        assert_eq!(
            report(Event::Connected(Connected::builder().build())),
            Report::Connected
        );
    }

    /// issue #9, item 5: only eight characters of the library's alphabet
    /// reach the supervisor as a pair code.
    #[test]
    fn pair_codes_are_validated() {
        for _ in 0..1000 {
            let code = PairCodeUtils::generate_code();
            assert!(is_pair_code(&code), "{code}");
            assert!(PairCodeUtils::validate_code(&code));
        }
        for bad in [
            "ABCD-1234",
            "ABCD123",
            "ABCD12345",
            "abcd1234",
            "ABCD0123",
            "ABCDI123",
            "ABCD\u{1b}[2J",
            "",
        ] {
            assert!(!is_pair_code(bad), "{bad:?}");
        }
        assert_eq!(
            report(pair_code("\u{1b}[2JABCD")),
            Report::BadPairCode { length: 8 }
        );
    }
}
