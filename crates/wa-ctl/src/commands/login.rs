//! `wa-ctl login [ID] [--phone N]`: pairs a session, starting the supervisor
//! if needed, and shows the QR code or pair code as the supervisor streams
//! them.
//!
//! Everything shown here came from a worker: the supervisor validates the
//! pair code and jid, and this command escapes every worker string it
//! prints as well (`wa_ctl_core::text`), so that nothing reaches the
//! terminal raw (issue #9).

use anyhow::bail;
use wa_ctl_core::config::Config;
use wa_ctl_core::control;
use wa_ctl_core::lifecycle::State;
use wa_ctl_core::lock::Probe;
use wa_ctl_core::text::escape;

use super::start::start_background;
use super::{check_session, check_workers, out, probe, refuse_foreign};
use crate::exit::{self, UsageError};

pub(super) fn login(
    config: &Config,
    id: Option<String>,
    phone: Option<String>,
    browser: bool,
) -> anyhow::Result<u8> {
    if browser && config.http.is_none() {
        return Err(UsageError(
            "--browser needs the HTTP API: add an [http] table to the configuration \
             (see docs/http-api.md)"
                .to_owned(),
        )
        .into());
    }
    let id = match id {
        Some(id) => {
            check_session(config, &id)?;
            id
        }
        None if config.sessions.len() == 1 => config.sessions[0].id.to_string(),
        None => {
            let known: Vec<&str> = config.sessions.iter().map(|s| s.id.as_str()).collect();
            return Err(
                UsageError(format!("which session? name one of: {}", known.join(", "))).into(),
            );
        }
    };
    let phone = phone.as_deref().map(phone_digits).transpose()?;
    refuse_foreign(config, "log in through", false)?;
    if probe(config)? == Probe::NotRunning {
        check_workers(config, None)?;
        start_background(config, None)?;
    }
    if browser {
        // The supervisor made the token file when it started.
        match super::status::page_url(config) {
            Some(url) => out(&format!(
                "Open this address to pair session {id} (the token after # stays in the browser):\n\n  {url}\n\nWaiting for the session to connect (Ctrl-C to stop waiting)...\n"
            ))?,
            None => bail!(
                "cannot build the page's address: [http] listens on a unix socket, or this user \
                 cannot read the token file {}",
                config
                    .http
                    .as_ref()
                    .map_or_else(String::new, |h| h.token_file.display().to_string())
            ),
        }
    }
    let mut shown_qr: Option<String> = None;
    let mut shown_code: Option<String> = None;
    let mut shown_state: Option<State> = None;
    // The length of a QR payload that cannot be drawn: the stream is ended
    // for it, and the error says so below rather than as a socket error.
    let mut undrawable_qr: Option<usize> = None;
    let streamed = control::login(
        &config.supervisor.runtime_dir,
        &id,
        phone.as_deref(),
        |update| {
            let mut text = String::new();
            if let Some(qr) = update
                .qr
                .as_ref()
                .filter(|qr| !browser && shown_qr.as_ref() != Some(*qr))
            {
                let Some(art) = render_qr(qr) else {
                    undrawable_qr = Some(qr.len());
                    return Err(std::io::Error::other("the QR code cannot be drawn"));
                };
                text.push_str(&format!(
                "\n{art}\nScan with WhatsApp on your phone: Settings > Linked devices > Link a device.\n(session {id}; a new code replaces this one every few seconds)\n"
            ));
                shown_qr = Some(qr.clone());
            }
            if let Some(code) = update
                .pair_code
                .as_ref()
                .filter(|c| !browser && shown_code.as_ref() != Some(*c))
            {
                let code = escape(code);
                text.push_str(&format!(
                "\nPair code for session {id}: {code}\nOn your phone: Settings > Linked devices > Link a device > Link with phone number instead.\n"
            ));
                shown_code = update.pair_code.clone();
            }
            // Progress: every state change but the last one (the outcome is
            // printed below) goes to stderr, with the why of a close.
            if let Some(state) = update
                .state
                .filter(|s| !update.done && Some(*s) != shown_state && *s != State::Pairing)
            {
                let why = match (&update.last_code, &update.last_reason) {
                    (Some(code), Some(reason)) => {
                        format!(" (last close {code}: {})", escape(reason))
                    }
                    (Some(code), None) => format!(" (last close {code})"),
                    _ => String::new(),
                };
                eprintln!("wa-ctl: session {id}: {state}{why}");
            }
            shown_state = update.state;
            out(&text).map_err(std::io::Error::other)
        },
    );
    if let Some(bytes) = undrawable_qr {
        bail!(
            "the worker sent a QR code of {bytes} bytes, too long to draw (a QR code holds at most {MAX_QR_DRAWN}): \
             check the worker; `wa-ctl logs` shows what it reported"
        );
    }
    let Some(last) = streamed? else {
        bail!("the supervisor closed the login stream")
    };
    if let Some(error) = last.error {
        bail!("{error}");
    }
    let Some(state) = last.state else {
        bail!("the supervisor ended the login stream without a state")
    };
    match state {
        State::Connected => {
            out(&format!(
                "session {id}: connected{}\n",
                last.jid
                    .map(|j| format!(" as {}", escape(&j)))
                    .unwrap_or_default()
            ))?;
            Ok(exit::SUCCESS)
        }
        state => {
            let why = last
                .last_reason
                .map(|r| escape(&r).into_owned())
                .or(last.last_code.map(|c| c.to_string()))
                .unwrap_or_default();
            let hint = match state {
                State::LoggedOut => "; run `wa-ctl login` again to pair",
                State::Locked => "; another supervisor runs this session",
                _ => "; see `wa-ctl status` and `wa-ctl logs`",
            };
            bail!(
                "session {id}: {state}{}{hint}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({why})")
                }
            )
        }
    }
}

/// Checks an E.164 number and returns its digits.
fn phone_digits(phone: &str) -> anyhow::Result<String> {
    wa_ctl_core::control::phone_digits(phone).map_err(|m| UsageError(m).into())
}

/// The most bytes a QR code holds (version 40, error correction level L).
const MAX_QR_DRAWN: usize = 2953;

/// Renders a QR payload for a terminal, two modules per character cell, or
/// `None` when it is too long for any QR code.
///
/// Level M (15% of the code may be damaged) holds 2,331 bytes; a longer
/// payload falls back to level L (7%), which a phone reading a screen
/// still scans.
fn render_qr(payload: &str) -> Option<String> {
    use qrcode::{EcLevel, QrCode};
    let code = QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M)
        .or_else(|_| QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::L))
        .ok()?;
    Some(
        code.render::<qrcode::render::unicode::Dense1x2>()
            .dark_color(qrcode::render::unicode::Dense1x2::Light)
            .light_color(qrcode::render::unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones() {
        assert_eq!(phone_digits("+15551234567").unwrap(), "15551234567");
        assert_eq!(phone_digits("44 20 7946-0958").unwrap(), "442079460958");
        for bad in ["", "+", "abc", "+0123456789", "+1234", "+1234567890123456"] {
            assert!(phone_digits(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qr_renders() {
        let art = render_qr("2@abc,def,ghi").unwrap();
        assert!(art.lines().count() > 10);
        assert!(art.contains('█') || art.contains('▀') || art.contains('▄'));
        assert!(render_qr(&"a".repeat(2500)).is_some(), "level L holds it");
        assert!(render_qr(&"\u{1}".repeat(MAX_QR_DRAWN)).is_some());
        assert!(render_qr(&"\u{1}".repeat(MAX_QR_DRAWN + 1)).is_none());
    }
}
