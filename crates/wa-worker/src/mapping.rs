//! How each library event maps to the worker protocol: a pure function, so
//! that every row of the table in `docs/worker-protocol.md` is a unit test.

use whatsapp_rust::types::events::Event;

/// Close codes the worker reports.
pub mod code {
    /// Network loss, keepalive failure, or a transport that cannot connect.
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
}

/// What a library event means for the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A QR code to show (secret).
    Qr(String),
    /// A pair code to show.
    PairCode(String),
    /// The connection is up.
    Connected,
    /// The connection ended, or will: this code decides what happens next.
    Close { code: u16, reason: String },
    /// A lost connection (408). Reported only if nothing more specific came
    /// first: a logout is followed by a disconnect, and the logout decides.
    Lost { reason: String },
    /// Every QR code expired unused.
    PairingExpired,
    /// Nothing the supervisor needs.
    Ignore,
}

/// Maps one library event.
pub fn classify(event: &Event) -> Report {
    match event {
        Event::PairingQrCode(qr) => Report::Qr(qr.code.clone()),
        Event::PairingCode(pc) => Report::PairCode(pc.code.clone()),
        Event::Connected(_) => Report::Connected,
        Event::StreamReplaced(_) => Report::Close {
            code: code::CONFLICT,
            reason: "stream replaced: another connection uses these credentials".to_owned(),
        },
        Event::LoggedOut(logout) => {
            // The library reports 401, 403 (account locked) or 406 (unknown
            // logout); anything else it calls a logout is a 401.
            let reason_code = logout.reason.code();
            let code = match u16::try_from(reason_code) {
                Ok(c @ (401 | 403 | 406)) => c,
                _ => code::LOGGED_OUT,
            };
            Report::Close {
                code,
                reason: format!("logged out ({reason_code})"),
            }
        }
        Event::ConnectFailure(failure) => {
            let n = failure.reason.code();
            Report::Close {
                code: u16::try_from(n).unwrap_or(code::STREAM_ERROR),
                reason: match &failure.message {
                    Some(m) => format!("connect failure {n}: {m}"),
                    None => format!("connect failure {n}"),
                },
            }
        }
        Event::TemporaryBan(ban) => Report::Close {
            code: code::TEMP_BANNED,
            reason: format!(
                "temporary ban ({}), expires in {}s",
                ban.code,
                ban.expire.num_seconds()
            ),
        },
        Event::ClientOutdated(_) => Report::Close {
            code: code::CLIENT_OUTDATED,
            reason: "client outdated: upgrade wa-worker".to_owned(),
        },
        Event::PairSuccess(_) => Report::Close {
            code: code::RESTART_REQUIRED,
            reason: "paired: restart required".to_owned(),
        },
        Event::StreamError(err) => match err.code.parse::<u16>() {
            Ok(n) => Report::Close {
                code: n,
                reason: format!("stream error {n}"),
            },
            Err(_) => Report::Close {
                code: code::STREAM_ERROR,
                reason: format!("stream error `{}`", err.code),
            },
        },
        Event::Disconnected(d) => Report::Lost {
            reason: format!("disconnected: {}", d.reason),
        },
        Event::PairingQrCodesExhausted(_) => Report::PairingExpired,
        _ => Report::Ignore,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use whatsapp_rust::Jid;
    use whatsapp_rust::types::events::*;
    use whatsapp_rust::wacore::net::DisconnectReason;

    use super::*;

    fn close(event: Event) -> u16 {
        match classify(&event) {
            Report::Close { code, .. } => code,
            other => panic!("expected a close, got {other:?}"),
        }
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
            close(failure(ConnectFailureReason::ServiceUnavailable)),
            503
        );
        assert_eq!(
            close(failure(ConnectFailureReason::InternalServerError)),
            500
        );
        assert_eq!(close(failure(ConnectFailureReason::BadUserAgent)), 409);
        assert_eq!(close(failure(ConnectFailureReason::Unknown(499))), 499);
    }

    #[test]
    fn temporary_ban_is_402_with_expiry() {
        let ban = TemporaryBan::builder()
            .code(TempBanReason::BlockedByUsers)
            .expire(whatsapp_rust::chrono::Duration::seconds(3600))
            .build();
        match classify(&Event::TemporaryBan(ban)) {
            Report::Close { code, reason } => {
                assert_eq!(code, 402);
                assert!(reason.contains("3600s"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
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

    #[test]
    fn disconnected_is_a_408_loss() {
        for reason in [
            DisconnectReason::StreamEnded,
            DisconnectReason::ReadError("reset".into()),
        ] {
            let event = Event::Disconnected(Disconnected::builder().reason(reason).build());
            assert!(matches!(classify(&event), Report::Lost { .. }));
        }
    }

    #[test]
    fn qr_exhaustion_is_pairing_expired() {
        let event = Event::PairingQrCodesExhausted(
            PairingQrCodesExhausted::builder()
                .disconnected(true)
                .build(),
        );
        assert_eq!(classify(&event), Report::PairingExpired);
    }

    #[test]
    fn pairing_codes_and_connected() {
        let qr = PairingQrCode::builder()
            .code("2@abc".to_owned())
            .timeout(Duration::from_secs(60))
            .build();
        assert_eq!(
            classify(&Event::PairingQrCode(qr)),
            Report::Qr("2@abc".into())
        );
        let pc = PairingCode::builder()
            .code("ABCD1234".to_owned())
            .timeout(Duration::from_secs(60))
            .build();
        assert_eq!(
            classify(&Event::PairingCode(pc)),
            Report::PairCode("ABCD1234".into())
        );
        assert_eq!(
            classify(&Event::Connected(Connected::builder().build())),
            Report::Connected
        );
    }
}
