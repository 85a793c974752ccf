//! The control socket: how `wa-ctl start|stop|restart <id>` and `wa-ctl stop`
//! reach a running supervisor.
//!
//! A Unix stream socket in `runtime_dir`, mode 0600, and the supervisor
//! checks the peer's uid (SO_PEERCRED) as well. One request per connection:
//! a JSON line in, a JSON line out. The answer to a stop comes only once the
//! worker is gone, so the CLI returns when the work is done. `ping` and
//! `status` are answered by the event loop at once, from memory.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lifecycle::State;
use crate::policy::{CloseKey, close_key_json};
use crate::status::StatusRecord;

/// The socket's name inside `runtime_dir`.
pub const SOCKET_FILE: &str = "control.sock";

/// The longest request line the supervisor reads.
pub const MAX_REQUEST: usize = 4096;

/// A request to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Start one session (it may be stopped, failed, logged out or locked).
    Start { session: String },
    /// Stop one session; the answer comes once its worker is reaped.
    Stop { session: String },
    /// Stop, then start one session.
    Restart { session: String },
    /// Stop every session and exit; the answer comes once all are reaped.
    Shutdown,
    /// Answered `pong` at once: proves the event loop is free.
    Ping,
    /// The supervisor's live record: every session, or one.
    Status {
        #[serde(default)]
        session: Option<String>,
    },
    /// Start pairing a session (or watch it pair) and stream its progress:
    /// the answer is a series of [`SessionUpdate`] lines, ending when the
    /// session is connected, or stops without connecting.
    Login {
        session: String,
        /// The phone number for the pair-code flow (digits only).
        #[serde(default)]
        phone: Option<String>,
    },
}

/// One line of a `Login` stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionUpdate {
    /// `None` only on a last line that carries an `error`.
    pub state: Option<State>,
    /// The QR payload waiting to be scanned. Secret: the stream is
    /// owner-only, like the status file.
    pub qr: Option<String>,
    pub pair_code: Option<String>,
    pub jid: Option<String>,
    #[serde(with = "close_key_json")]
    pub last_code: Option<CloseKey>,
    pub last_reason: Option<String>,
    /// Whether this is the last line: the session is connected, or will not
    /// get further without an operator.
    pub done: bool,
    /// Set on the last line when the request itself failed.
    pub error: Option<String>,
}

/// The supervisor's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    pub message: String,
    /// The answer to `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusRecord>,
}

impl Response {
    pub fn ok(message: impl Into<String>) -> Self {
        Response {
            ok: true,
            message: message.into(),
            status: None,
        }
    }

    pub fn error(message: impl Into<String>) -> Self {
        Response {
            ok: false,
            message: message.into(),
            status: None,
        }
    }

    pub fn status(record: StatusRecord) -> Self {
        Response {
            ok: true,
            message: String::new(),
            status: Some(record),
        }
    }
}

/// Checks a phone number in international (E.164) format and returns its
/// digits, what `login` passes on: `wa-ctl login --phone` and the HTTP
/// API's `login` take the same numbers.
pub fn phone_digits(phone: &str) -> Result<String, String> {
    let digits = phone.strip_prefix('+').unwrap_or(phone);
    let digits: String = digits.chars().filter(|c| !matches!(c, ' ' | '-')).collect();
    if !(7..=15).contains(&digits.len())
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || digits.starts_with('0')
    {
        return Err(format!(
            "{} is not a phone number in international (E.164) format, e.g. +15551234567",
            crate::text::Quoted(phone)
        ));
    }
    Ok(digits)
}

/// A request that did not get an answer.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the supervisor at {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("no answer from the supervisor within {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    #[error("the supervisor closed the connection without answering")]
    NoAnswer,
    #[error("cannot talk to the supervisor")]
    Io(#[source] io::Error),
    #[error("bad answer from the supervisor: {0}")]
    BadAnswer(String),
}

/// Sends one request and waits up to `timeout` for the answer.
pub fn request(
    runtime_dir: &Path,
    req: &Request,
    timeout: Duration,
) -> Result<Response, ControlError> {
    let path = runtime_dir.join(SOCKET_FILE);
    let mut stream =
        UnixStream::connect(&path).map_err(|source| ControlError::Connect { path, source })?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(ControlError::Io)?;
    stream
        .set_write_timeout(Some(timeout))
        .map_err(ControlError::Io)?;
    let mut line = serde_json::to_vec(req).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(ControlError::Io)?;
    let mut answer = String::new();
    match BufReader::new(stream).read_line(&mut answer) {
        Ok(0) => Err(ControlError::NoAnswer),
        Ok(_) => serde_json::from_str(&answer).map_err(|e| ControlError::BadAnswer(e.to_string())),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ) =>
        {
            Err(ControlError::Timeout(timeout))
        }
        Err(e) => Err(ControlError::Io(e)),
    }
}

/// Sends a `Login` request and calls `on_update` for every line until the
/// stream ends. Waits without a deadline between lines: pairing takes as
/// long as the person with the phone takes.
pub fn login(
    runtime_dir: &Path,
    session: &str,
    phone: Option<&str>,
    mut on_update: impl FnMut(&SessionUpdate) -> io::Result<()>,
) -> Result<Option<SessionUpdate>, ControlError> {
    let path = runtime_dir.join(SOCKET_FILE);
    let mut stream =
        UnixStream::connect(&path).map_err(|source| ControlError::Connect { path, source })?;
    let req = Request::Login {
        session: session.to_owned(),
        phone: phone.map(str::to_owned),
    };
    let mut line = serde_json::to_vec(&req).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(ControlError::Io)?;
    let mut last = None;
    for line in BufReader::new(stream).lines() {
        let line = line.map_err(ControlError::Io)?;
        let update: SessionUpdate =
            serde_json::from_str(&line).map_err(|e| ControlError::BadAnswer(e.to_string()))?;
        on_update(&update).map_err(ControlError::Io)?;
        let done = update.done;
        last = Some(update);
        if done {
            break;
        }
    }
    Ok(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r: Request = serde_json::from_str(r#"{"cmd":"stop","session":"a"}"#).unwrap();
        assert_eq!(
            r,
            Request::Stop {
                session: "a".into()
            }
        );
        assert_eq!(
            serde_json::to_string(&Request::Shutdown).unwrap(),
            r#"{"cmd":"shutdown"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"ping"}"#).unwrap(),
            Request::Ping
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"status"}"#).unwrap(),
            Request::Status { session: None }
        );
        assert_eq!(
            serde_json::to_string(&Response::ok("pong")).unwrap(),
            r#"{"ok":true,"message":"pong"}"#
        );
    }
}
