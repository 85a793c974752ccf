//! The file format as written: every key optional, nothing unknown.
//!
//! These types only deserialize. Defaults and cross-key checks belong to
//! `validate`, which turns them into the effective values. Values that a
//! check may reject keep their span, so that the error names the line.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer};

use crate::policy::{Action, CloseKey};
use crate::session_id::SessionId;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) supervisor: RawSupervisor,
    #[serde(default)]
    pub(super) worker: RawWorker,
    #[serde(default)]
    pub(super) policy: RawPolicy,
    pub(super) session: Option<Vec<RawSession>>,
    pub(super) cluster: Option<toml::Spanned<RawCluster>>,
    pub(super) http: Option<toml::Spanned<RawHttp>>,
    pub(super) webhook: Option<Vec<toml::Spanned<RawWebhook>>>,
}

/// `[http]` (issue #11).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawHttp {
    pub(super) listen: Option<toml::Spanned<String>>,
    pub(super) allow_remote: Option<bool>,
    pub(super) token_file: Option<PathBuf>,
}

/// One `[[webhook]]` (issue #11).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhook {
    pub(super) url: Option<toml::Spanned<String>>,
    pub(super) secret_file: Option<PathBuf>,
    pub(super) events: Option<toml::Spanned<Vec<String>>>,
}

/// `[cluster]` (issue #10).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCluster {
    pub(super) backend: Option<toml::Spanned<String>>,
    pub(super) endpoints: Option<toml::Spanned<Vec<String>>>,
    pub(super) prefix: Option<toml::Spanned<String>>,
    pub(super) node: Option<toml::Spanned<String>>,
    pub(super) lease_ttl: Option<toml::Spanned<HumanDuration>>,
    pub(super) takeover_grace: Option<toml::Spanned<HumanDuration>>,
}

/// `[supervisor]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSupervisor {
    pub(super) runtime_dir: Option<PathBuf>,
    pub(super) state_dir: Option<PathBuf>,
    pub(super) stop_timeout: Option<toml::Spanned<HumanDuration>>,
}

/// `[worker]`: the command and environment every session starts from.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorker {
    pub(super) command: Option<toml::Spanned<Vec<String>>>,
    pub(super) env: Option<toml::Spanned<BTreeMap<String, String>>>,
}

/// One `[[session]]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSession {
    pub(super) id: Option<toml::Spanned<SessionId>>,
    pub(super) command: Option<toml::Spanned<Vec<String>>>,
    pub(super) env: Option<toml::Spanned<BTreeMap<String, String>>>,
}

/// `[policy]` and `[policy.codes]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    pub(super) initial_backoff: Option<toml::Spanned<HumanDuration>>,
    pub(super) max_backoff: Option<toml::Spanned<HumanDuration>>,
    pub(super) backoff_multiplier: Option<toml::Spanned<f64>>,
    pub(super) jitter: Option<toml::Spanned<f64>>,
    pub(super) reset_after: Option<toml::Spanned<HumanDuration>>,
    pub(super) max_restarts: Option<u32>,
    pub(super) restart_window: Option<toml::Spanned<HumanDuration>>,
    pub(super) start_timeout: Option<toml::Spanned<HumanDuration>>,
    pub(super) heartbeat_timeout: Option<toml::Spanned<HumanDuration>>,
    pub(super) codes: Option<BTreeMap<CloseKey, Action>>,
}

/// A duration written as a humantime string ("250ms", "10s", "5m").
#[derive(Debug, Clone, Copy)]
pub(super) struct HumanDuration(pub(super) Duration);

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s)
            .map(HumanDuration)
            .map_err(|e| {
                de::Error::custom(format!(
                    "invalid duration \"{s}\": {e} (write e.g. \"250ms\", \"10s\", \"5m\")"
                ))
            })
    }
}
