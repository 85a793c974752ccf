//! The reconnect policy: which action a close code calls for, and how long
//! to wait before reconnecting.
//!
//! Everything here is pure: no clocks, no randomness, no I/O. The caller
//! passes the jitter sample in, so that every decision can be unit-tested.
//! `docs/policy.md` explains each default row.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What the supervisor does after a worker ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Wait for the backoff delay, then spawn a new worker.
    Reconnect,
    /// Spawn a new worker at once.
    Restart,
    /// Keep the credentials and spawn nothing until an operator starts the session.
    Stop,
    /// Quarantine the session directory, then stop.
    Logout,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Reconnect => "reconnect",
            Action::Restart => "restart",
            Action::Stop => "stop",
            Action::Logout => "logout",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a worker ended, as the policy sees it: the close code it reported,
/// or, when it reported none, how the process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum CloseKey {
    /// The code of the worker's last `closed` event.
    Code(u16),
    /// Died by a signal, or exited non-zero, without reporting a close code.
    Crash,
    /// Exited 0 without reporting a close code.
    Exit,
    /// Ended by the supervisor without a close code because it hung: no
    /// `qr`, `pair_code` or `connected` within `start_timeout`, or no
    /// `alive` within `heartbeat_timeout` once it had sent one (issue #9).
    Hang,
}

impl CloseKey {
    /// A short human meaning, for `wa-ctl status` and the logs.
    pub fn meaning(self) -> &'static str {
        match self {
            CloseKey::Crash => "worker crashed without a close code",
            CloseKey::Exit => "worker exited without a close code",
            CloseKey::Hang => "worker hung: ended by the supervisor",
            CloseKey::Code(code) => code_meaning(code),
        }
    }
}

/// The meaning of a WhatsApp Web close code, as Baileys, whatsmeow and
/// whatsapp-rust use them.
pub fn code_meaning(code: u16) -> &'static str {
    match code {
        401 => "logged out",
        402 => "temporarily banned",
        403 => "account locked",
        405 => "client outdated / connection failure",
        406 => "logged out (unknown reason)",
        408 => "timed out / connection lost",
        411 => "multi-device mismatch",
        428 => "connection closed",
        440 => "conflict: another connection replaced this one",
        500 => "server error",
        503 => "service unavailable",
        515 => "restart required",
        600 => "credential store unreadable",
        _ => "unknown close code",
    }
}

impl fmt::Display for CloseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseKey::Code(c) => write!(f, "{c}"),
            CloseKey::Crash => f.write_str("crash"),
            CloseKey::Exit => f.write_str("exit"),
            CloseKey::Hang => f.write_str("hang"),
        }
    }
}

impl std::str::FromStr for CloseKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "crash" => Ok(CloseKey::Crash),
            "exit" => Ok(CloseKey::Exit),
            "hang" => Ok(CloseKey::Hang),
            _ => s.parse::<u16>().map(CloseKey::Code).map_err(|_| {
                format!(
                    "`{s}` is not a close code: use a number from 0 to 65535, `crash`, `exit` or `hang`"
                )
            }),
        }
    }
}

impl Serialize for CloseKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for CloseKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The JSON form of a close key in `status --json` and the control socket:
/// a code is a number (`440`), the others are strings (`"crash"`,
/// `"exit"`). A public contract. Use with `#[serde(with = "close_key_json")]`
/// on an `Option<CloseKey>`; the plain `Serialize` of [`CloseKey`] is a
/// string, because TOML table keys (`[policy.codes]`) must be strings.
pub mod close_key_json {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::CloseKey;

    /// The OpenAPI schema of this form (issue #11): a close code, one of
    /// the words, or null.
    pub fn schema() -> utoipa::openapi::schema::Schema {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Integer)
                    .minimum(Some(0))
                    .maximum(Some(65535))
                    .description(Some("a close code")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["crash", "exit", "hang"]))
                    .description(Some("no close code: how the worker ended")),
            )
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .into()
    }

    pub fn serialize<S: Serializer>(key: &Option<CloseKey>, s: S) -> Result<S::Ok, S::Error> {
        match key {
            None => s.serialize_none(),
            Some(CloseKey::Code(code)) => s.serialize_some(code),
            Some(other) => s.serialize_some(&other.to_string()),
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Wire {
        Code(u16),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CloseKey>, D::Error> {
        match Option::<Wire>::deserialize(d)? {
            None => Ok(None),
            Some(Wire::Code(code)) => Ok(Some(CloseKey::Code(code))),
            Some(Wire::Text(text)) => text.parse().map(Some).map_err(serde::de::Error::custom),
        }
    }
}

/// The source of backoff jitter: xorshift64*, seeded once per supervisor.
/// Jitter needs spread between sessions and supervisors, not secrecy.
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    /// A generator seeded from `seed` (never zero, which xorshift cannot leave).
    pub fn seeded(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    /// A uniform sample from [-1, 1], as [`Policy::backoff_delay`] takes it.
    pub fn sample(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let x = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D);
        (x >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// The `[policy]` table with defaults applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Policy {
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub initial_backoff: Duration,
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub max_backoff: Duration,
    pub backoff_multiplier: f64,
    /// +/- fraction applied to each delay.
    pub jitter: f64,
    /// A worker connected this long resets the backoff.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub reset_after: Duration,
    /// More restarts than this inside `restart_window`: the session is failed.
    pub max_restarts: u32,
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub restart_window: Duration,
    /// A worker that has reported neither `qr`, `pair_code` nor `connected`
    /// this long after its spawn is ended as `hang`. Zero turns it off.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub start_timeout: Duration,
    /// A worker that sent `alive` once and then nothing for this long is
    /// ended as `hang`. Zero turns it off.
    #[serde(serialize_with = "crate::config::ser_duration")]
    pub heartbeat_timeout: Duration,
    /// Close code to action. Codes not listed here reconnect.
    pub codes: BTreeMap<CloseKey, Action>,
}

/// The default code table, one row per code. `docs/policy.md` gives the why
/// of each row; keep the two in step.
pub const DEFAULT_CODES: &[(CloseKey, Action)] = &[
    // The five codes of the field note this project grew from.
    (CloseKey::Code(401), Action::Logout),
    (CloseKey::Code(405), Action::Reconnect),
    (CloseKey::Code(408), Action::Reconnect),
    (CloseKey::Code(440), Action::Stop),
    (CloseKey::Code(500), Action::Reconnect),
    // Codes used by Baileys, whatsmeow and whatsapp-rust.
    (CloseKey::Code(402), Action::Stop),
    (CloseKey::Code(403), Action::Stop),
    (CloseKey::Code(406), Action::Logout),
    (CloseKey::Code(411), Action::Stop),
    (CloseKey::Code(428), Action::Reconnect),
    (CloseKey::Code(503), Action::Reconnect),
    (CloseKey::Code(515), Action::Restart),
    // wa-ctl's own code: a worker's credential store cannot be read.
    // Retrying cannot repair it, and the file is evidence: stop.
    (CloseKey::Code(600), Action::Stop),
    (CloseKey::Crash, Action::Reconnect),
    (CloseKey::Hang, Action::Reconnect),
    (CloseKey::Exit, Action::Stop),
];

/// What every code not in the table does.
pub const DEFAULT_ACTION: Action = Action::Reconnect;

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5 * 60),
            backoff_multiplier: 2.0,
            jitter: 0.2,
            reset_after: Duration::from_secs(2 * 60),
            max_restarts: 10,
            restart_window: Duration::from_secs(10 * 60),
            start_timeout: Duration::from_secs(90),
            heartbeat_timeout: Duration::from_secs(60),
            codes: DEFAULT_CODES.iter().copied().collect(),
        }
    }
}

impl Policy {
    /// The action for how a worker ended.
    pub fn action_for(&self, key: CloseKey) -> Action {
        self.codes.get(&key).copied().unwrap_or(DEFAULT_ACTION)
    }

    /// The action for a reported close code.
    pub fn action_for_code(&self, code: u16) -> Action {
        self.action_for(CloseKey::Code(code))
    }

    /// The delay before reconnect number `attempt` (0 for the first).
    ///
    /// `jitter_sample` is a uniform sample from [-1, 1]; the delay is scaled
    /// by `1 + jitter * jitter_sample`. The result never exceeds
    /// `max_backoff`, with jitter or without.
    pub fn backoff_delay(&self, attempt: u32, jitter_sample: f64) -> Duration {
        let growth = self
            .backoff_multiplier
            .powi(attempt.min(i32::MAX as u32) as i32);
        // Zero times an infinite growth is NaN, not the zero it means.
        let base = if self.initial_backoff.is_zero() {
            0.0
        } else {
            self.initial_backoff.as_secs_f64() * growth
        };
        let max = self.max_backoff.as_secs_f64();
        let base = if base.is_finite() { base.min(max) } else { max };
        let sample = if jitter_sample.is_finite() {
            jitter_sample.clamp(-1.0, 1.0)
        } else {
            0.0
        };
        let jittered = (base * (1.0 + self.jitter * sample)).clamp(0.0, max);
        // A huge max_backoff is a huge float; it may round above what a
        // Duration holds, or above max_backoff itself (issue #9: an f64 has
        // 53 bits, and 9772849475177663s rounds up).
        Duration::try_from_secs_f64(jittered)
            .unwrap_or(self.max_backoff)
            .min(self.max_backoff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_table() {
        let p = Policy::default();
        let expect = [
            (401, Action::Logout),
            (405, Action::Reconnect),
            (408, Action::Reconnect),
            (440, Action::Stop),
            (500, Action::Reconnect),
            (402, Action::Stop),
            (403, Action::Stop),
            (406, Action::Logout),
            (411, Action::Stop),
            (428, Action::Reconnect),
            (503, Action::Reconnect),
            (515, Action::Restart),
            (999, Action::Reconnect),
            (0, Action::Reconnect),
        ];
        for (code, action) in expect {
            assert_eq!(p.action_for_code(code), action, "code {code}");
        }
        assert_eq!(p.action_for(CloseKey::Crash), Action::Reconnect);
        assert_eq!(p.action_for(CloseKey::Exit), Action::Stop);
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = Policy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(10),
            jitter: 0.0,
            ..Policy::default()
        };
        let delays: Vec<u64> = (0..6).map(|n| p.backoff_delay(n, 0.7).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(p.backoff_delay(u32::MAX, 0.0), Duration::from_secs(10));
    }

    /// Issue #9, item 2: found by the property test of extreme durations.
    #[test]
    fn backoff_survives_float_rounding_and_infinite_growth() {
        let p = Policy {
            initial_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(9_772_849_475_177_663),
            backoff_multiplier: 1000.0,
            jitter: 0.0,
            ..Policy::default()
        };
        assert_eq!(p.backoff_delay(103, 0.0), p.max_backoff);
        let zero = Policy {
            initial_backoff: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.backoff_delay(103, 0.0), Duration::ZERO);
    }

    #[test]
    fn jitter_bounds() {
        let p = Policy {
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(100),
            jitter: 0.2,
            ..Policy::default()
        };
        assert_eq!(p.backoff_delay(0, -1.0), Duration::from_secs(8));
        assert_eq!(p.backoff_delay(0, 1.0), Duration::from_secs(12));
        // At the cap, positive jitter may not push past max_backoff.
        assert_eq!(p.backoff_delay(10, 1.0), Duration::from_secs(100));
        assert_eq!(p.backoff_delay(10, -1.0), Duration::from_secs(80));
    }

    #[test]
    fn jitter_stays_in_range_and_spreads() {
        let mut j = Jitter::seeded(42);
        let samples: Vec<f64> = (0..10_000).map(|_| j.sample()).collect();
        assert!(samples.iter().all(|s| (-1.0..=1.0).contains(s)));
        assert!(samples.iter().any(|&s| s < -0.9) && samples.iter().any(|&s| s > 0.9));
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        assert!(mean.abs() < 0.05, "mean {mean}");
    }

    #[test]
    fn close_key_json_form() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        struct W {
            #[serde(with = "close_key_json")]
            k: Option<CloseKey>,
        }
        for (key, json) in [
            (Some(CloseKey::Code(440)), r#"{"k":440}"#),
            (Some(CloseKey::Crash), r#"{"k":"crash"}"#),
            (Some(CloseKey::Exit), r#"{"k":"exit"}"#),
            (None, r#"{"k":null}"#),
        ] {
            assert_eq!(serde_json::to_string(&W { k: key }).unwrap(), json);
            assert_eq!(serde_json::from_str::<W>(json).unwrap(), W { k: key });
        }
    }

    #[test]
    fn close_key_round_trip() {
        for s in ["401", "crash", "exit", "0", "65535"] {
            assert_eq!(s.parse::<CloseKey>().unwrap().to_string(), s);
        }
        for s in ["-1", "65536", "abc", ""] {
            assert!(s.parse::<CloseKey>().is_err(), "{s}");
        }
    }
}
