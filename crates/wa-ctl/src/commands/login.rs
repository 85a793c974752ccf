//! `wa-ctl login [ID] [--phone N]`: pairs a session, starting the supervisor
//! if needed, and shows the QR code or pair code as the supervisor streams
//! them.

use anyhow::{Context as _, bail};
use wa_ctl_core::config::Config;
use wa_ctl_core::control;
use wa_ctl_core::lifecycle::State;
use wa_ctl_core::lock::Probe;

use super::start::start_background;
use super::{check_session, check_workers, out, probe, refuse_foreign};
use crate::exit::{self, UsageError};

pub(super) fn login(
    config: &Config,
    id: Option<String>,
    phone: Option<String>,
) -> anyhow::Result<u8> {
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
    let mut shown_qr: Option<String> = None;
    let mut shown_code: Option<String> = None;
    let mut shown_state: Option<State> = None;
    let last = control::login(
        &config.supervisor.runtime_dir,
        &id,
        phone.as_deref(),
        |update| {
            let mut text = String::new();
            if let Some(qr) = update
                .qr
                .as_ref()
                .filter(|qr| shown_qr.as_ref() != Some(*qr))
            {
                let art = render_qr(qr).map_err(std::io::Error::other)?;
                text.push_str(&format!(
                "\n{art}\nScan with WhatsApp on your phone: Settings > Linked devices > Link a device.\n(session {id}; a new code replaces this one every few seconds)\n"
            ));
                shown_qr = Some(qr.clone());
            }
            if let Some(code) = update
                .pair_code
                .as_ref()
                .filter(|c| shown_code.as_ref() != Some(*c))
            {
                text.push_str(&format!(
                "\nPair code for session {id}: {code}\nOn your phone: Settings > Linked devices > Link a device > Link with phone number instead.\n"
            ));
                shown_code = Some(code.clone());
            }
            // Progress: every state change but the last one (the outcome is
            // printed below) goes to stderr, with the why of a close.
            if let Some(state) = update
                .state
                .filter(|s| !update.done && Some(*s) != shown_state && *s != State::Pairing)
            {
                let why = match (&update.last_code, &update.last_reason) {
                    (Some(code), Some(reason)) => format!(" (last close {code}: {reason})"),
                    (Some(code), None) => format!(" (last close {code})"),
                    _ => String::new(),
                };
                eprintln!("wa-ctl: session {id}: {state}{why}");
            }
            shown_state = update.state;
            out(&text).map_err(std::io::Error::other)
        },
    )?;
    let Some(last) = last else {
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
                last.jid.map(|j| format!(" as {j}")).unwrap_or_default()
            ))?;
            Ok(exit::SUCCESS)
        }
        state => {
            let why = last
                .last_reason
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
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    let digits: String = digits.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(7..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(UsageError(format!(
            "`{phone}` is not a phone number in international (E.164) format, e.g. +15551234567"
        ))
        .into());
    }
    Ok(digits)
}

/// Renders a QR payload for a terminal, two modules per character cell.
fn render_qr(payload: &str) -> anyhow::Result<String> {
    let code = qrcode::QrCode::new(payload.as_bytes()).context("encoding the QR code")?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .quiet_zone(true)
        .build())
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
    }
}
