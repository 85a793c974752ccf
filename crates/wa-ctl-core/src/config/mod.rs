//! The configuration: the effective values once defaults are applied, and
//! the one entry point that finds, reads and validates them.
//!
//! The key names are a public contract (see the README and
//! `examples/wa-ctl.toml`). Every key is optional; with no file at all the
//! embedded defaults apply. Parsing is strict: unknown keys, bad values and
//! invalid session ids are errors that name the file, the line and the key.
//!
//! The work is split by stage: `locate` finds the file and the default
//! directories, `raw` is the file format as serde reads it, `validate` turns
//! that into the types below, and `error` places failures in the file.

pub mod cluster;
mod error;
pub mod http;
pub mod limits;
mod locate;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

pub use self::error::ConfigError;
pub use self::limits::{DURATION_LIMITS, DurationLimit};
pub use self::locate::Environment;
use crate::policy::Policy;
use crate::session_id::SessionId;

/// The environment variable that names the configuration file.
pub const CONFIG_ENV: &str = "WA_CTL_CONFIG";

/// The configuration file that root uses when neither `--config` nor
/// `$WA_CTL_CONFIG` names one.
pub const SYSTEM_CONFIG_PATH: &str = "/etc/wa-ctl/wa-ctl.toml";

/// Where the configuration came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "path", rename_all = "snake_case")]
pub enum ConfigSource {
    /// Named by `--config`.
    Flag(PathBuf),
    /// Named by `$WA_CTL_CONFIG`.
    Env(PathBuf),
    /// Found at the default location for this user.
    DefaultPath(PathBuf),
    /// No file: the embedded defaults.
    Embedded,
}

impl ConfigSource {
    /// The file the configuration was read from, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Flag(p) | ConfigSource::Env(p) | ConfigSource::DefaultPath(p) => Some(p),
            ConfigSource::Embedded => None,
        }
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::Flag(p) => write!(f, "{} (from --config)", p.display()),
            ConfigSource::Env(p) => write!(f, "{} (from ${CONFIG_ENV})", p.display()),
            ConfigSource::DefaultPath(p) => write!(f, "{}", p.display()),
            ConfigSource::Embedded => f.write_str("embedded defaults (no file)"),
        }
    }
}

/// One supervised session, with its worker command and environment resolved
/// from `[worker]` and the session's own overrides.
#[derive(Debug, Clone, Serialize)]
pub struct SessionConfig {
    pub id: SessionId,
    /// The worker's argv; never passed through a shell.
    pub command: Vec<String>,
    /// Extra environment: `[worker] env` with the session's `env` merged over it.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
}

/// The `[supervisor]` table, with defaults applied.
#[derive(Debug, Clone, Serialize)]
pub struct SupervisorConfig {
    pub runtime_dir: PathBuf,
    pub state_dir: PathBuf,
    #[serde(serialize_with = "ser_duration")]
    pub stop_timeout: Duration,
}

/// The effective configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    #[serde(skip)]
    pub source: ConfigSource,
    pub supervisor: SupervisorConfig,
    pub policy: Policy,
    /// `[cluster]` (issue #10): ownership across hosts; `None` without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<cluster::ClusterConfig>,
    /// `[http]` (issue #11): the API, the page and the metrics; `None`
    /// without it (nothing listens).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http: Option<http::HttpConfig>,
    /// `[[webhook]]` (issue #11): where changes are POSTed.
    #[serde(rename = "webhook", skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<http::WebhookConfig>,
    #[serde(rename = "session")]
    pub sessions: Vec<SessionConfig>,
    /// FNV-1a of the configuration text: with the path, what the supervisor
    /// records beside its lock, so that a CLI can tell whether the running
    /// supervisor runs this configuration (issue #9).
    #[serde(skip)]
    pub digest: u64,
}

impl Config {
    /// Finds, reads and validates the configuration, as the CLI does.
    pub fn load(flag: Option<&Path>, env: &Environment) -> Result<Config, ConfigError> {
        // Absolute from the start: relative paths inside the file are
        // resolved from its directory, whatever the process's cwd later is.
        let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
        let candidate = env.config_candidate(flag).map(|c| match c {
            ConfigSource::Flag(p) => ConfigSource::Flag(absolute(p)),
            ConfigSource::Env(p) => ConfigSource::Env(absolute(p)),
            ConfigSource::DefaultPath(p) => ConfigSource::DefaultPath(absolute(p)),
            ConfigSource::Embedded => ConfigSource::Embedded,
        });
        match candidate {
            Some(source @ ConfigSource::DefaultPath(_)) => {
                let path = source.path().expect("default path source has a path");
                match read_capped(path) {
                    Ok(text) => Config::parse(&text, source, env),
                    Err(ConfigError::Read { source: e, .. })
                        if e.kind() == std::io::ErrorKind::NotFound =>
                    {
                        Config::parse("", ConfigSource::Embedded, env)
                    }
                    Err(e) => Err(e),
                }
            }
            // A file named explicitly must exist: silently running on defaults
            // would hide a typo in a path.
            Some(source) => {
                let path = source.path().expect("explicit source has a path");
                let text = read_capped(path)?;
                Config::parse(&text, source, env)
            }
            None => Config::parse("", ConfigSource::Embedded, env),
        }
    }

    /// Parses and validates configuration text.
    pub fn parse(
        text: &str,
        source: ConfigSource,
        env: &Environment,
    ) -> Result<Config, ConfigError> {
        let display_path = match source.path() {
            Some(p) => p.display().to_string(),
            None => "<embedded defaults>".to_owned(),
        };
        let raw: raw::RawConfig =
            toml::from_str(text).map_err(|e| error::invalid_from_toml(&display_path, text, &e))?;
        let base_dir = source.path().and_then(Path::parent).map(Path::to_path_buf);
        let resolve_dir = |p: PathBuf| match &base_dir {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        };

        let runtime_dir = match raw.supervisor.runtime_dir {
            Some(p) => resolve_dir(p),
            None => env.default_runtime_dir()?,
        };
        let state_dir = match raw.supervisor.state_dir {
            Some(p) => resolve_dir(p),
            None => env.default_state_dir()?,
        };
        let place = |(span, key, message): error::SpannedError| {
            error::invalid_at(&display_path, text, span, key, message)
        };
        let explicit_stop = raw.supervisor.stop_timeout.is_some();
        let mut stop_timeout =
            validate::stop_timeout(raw.supervisor.stop_timeout.as_ref()).map_err(place)?;
        let policy = validate::policy(raw.policy).map_err(place)?;
        let sessions = validate::sessions(raw.worker, raw.session).map_err(place)?;
        // With `[cluster]`, an unset stop_timeout is what fits the lease.
        let cluster = validate::cluster(raw.cluster, explicit_stop.then_some(stop_timeout))
            .map_err(place)?
            .map(|(cluster, fitted)| {
                stop_timeout = fitted;
                cluster
            });
        let resolve_file = |p: PathBuf| match &base_dir {
            Some(base) if p.is_relative() => base.join(p),
            _ => p,
        };
        let http = validate::http(raw.http, &state_dir, base_dir.as_deref(), resolve_file)
            .map_err(place)?;
        let webhooks = validate::webhooks(raw.webhook, resolve_file).map_err(place)?;

        Ok(Config {
            digest: crate::fsutil::fnv1a(text.as_bytes()),
            source,
            supervisor: SupervisorConfig {
                runtime_dir,
                state_dir,
                stop_timeout,
            },
            policy,
            cluster,
            http,
            webhooks,
            sessions,
        })
    }

    /// The session with this id, if configured.
    pub fn session(&self, id: &str) -> Option<&SessionConfig> {
        self.sessions.iter().find(|s| s.id.as_str() == id)
    }

    /// `<state_dir>/sessions/<id>`: the worker's `WA_CTL_SESSION_DIR`.
    pub fn session_dir(&self, id: &SessionId) -> PathBuf {
        self.supervisor.state_dir.join("sessions").join(id.as_str())
    }

    /// `<state_dir>/quarantine`: where logged-out credentials are moved.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.supervisor.state_dir.join("quarantine")
    }

    /// `<state_dir>/wa-ctl.log`: the supervisor's log when it runs in the background.
    pub fn log_path(&self) -> PathBuf {
        self.supervisor.state_dir.join("wa-ctl.log")
    }

    /// The effective configuration rendered as TOML, for `wa-ctl check`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// The largest configuration file read, in bytes. 10,000 sessions with a
/// command and an environment each take about half of it; a larger file is
/// a wrong path (`/dev/zero`, a log, a disk image), and reading it whole
/// would take the memory it has (issue #9, item 2).
pub const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Reads the configuration file at `path`, refusing one over
/// [`MAX_CONFIG_BYTES`] without reading further.
fn read_capped(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read as _;
    let read_error = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    String::from_utf8(bytes)
        .map_err(|e| read_error(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
}

/// Writes a duration the way the file takes it ("10s", "1m 30s").
pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use std::ffi::OsString;

    use super::*;
    use crate::policy::Action;

    fn env_user() -> Environment {
        Environment::new(
            false,
            [
                ("HOME".to_owned(), OsString::from("/home/u")),
                (
                    "XDG_RUNTIME_DIR".to_owned(),
                    OsString::from("/run/user/1000"),
                ),
            ],
        )
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            ConfigSource::Flag("/etc/x/wa.toml".into()),
            &env_user(),
        )
    }

    #[test]
    fn embedded_defaults() {
        let c = Config::parse("", ConfigSource::Embedded, &env_user()).unwrap();
        assert_eq!(c.supervisor.runtime_dir, Path::new("/run/user/1000/wa-ctl"));
        assert_eq!(
            c.supervisor.state_dir,
            Path::new("/home/u/.local/state/wa-ctl")
        );
        assert_eq!(c.supervisor.stop_timeout, Duration::from_secs(10));
        assert_eq!(c.sessions.len(), 1);
        assert_eq!(c.sessions[0].id.as_str(), "default");
        assert_eq!(c.sessions[0].command, vec!["wa-worker"]);
    }

    #[test]
    fn full_file() {
        let c = parse(
            r#"
[supervisor]
runtime_dir = "run"
state_dir = "/var/tmp/st"
stop_timeout = "250ms"
[worker]
command = ["w", "--x"]
env = { A = "1", B = "2" }
[policy]
initial_backoff = "100ms"
max_backoff = "1s"
backoff_multiplier = 3.0
jitter = 0.0
max_restarts = 3
[policy.codes]
408 = "stop"
crash = "restart"
[[session]]
id = "a"
[[session]]
id = "b-2"
command = ["other"]
env = { B = "3" }
"#,
        )
        .unwrap();
        assert_eq!(c.supervisor.runtime_dir, Path::new("/etc/x/run"));
        assert_eq!(c.supervisor.stop_timeout, Duration::from_millis(250));
        assert_eq!(c.sessions[0].command, vec!["w", "--x"]);
        assert_eq!(c.sessions[1].command, vec!["other"]);
        assert_eq!(c.sessions[1].env["A"], "1");
        assert_eq!(c.sessions[1].env["B"], "3");
        assert_eq!(c.policy.max_restarts, 3);
        assert_eq!(c.policy.action_for_code(408), Action::Stop);
        assert_eq!(
            c.policy.action_for_code(401),
            Action::Logout,
            "defaults survive a partial [policy.codes]"
        );
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let e = parse("[policy]\njitter = 1.5\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/x/wa.toml:2:10: key `policy.jitter`: "),
            "{e}"
        );
        let e = parse("[supervisor]\nstop_timout = \"1s\"\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("/etc/x/wa.toml:2:1: key `stop_timout`: "),
            "{e}"
        );
    }

    #[test]
    fn config_files_are_read_up_to_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let at_cap = dir.path().join("at-cap.toml");
        std::fs::write(&at_cap, vec![b'#'; MAX_CONFIG_BYTES as usize]).unwrap();
        assert!(read_capped(&at_cap).is_ok());
        let over = dir.path().join("over.toml");
        std::fs::write(&over, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        let e = read_capped(&over).unwrap_err();
        assert!(matches!(e, ConfigError::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains("1 MiB"), "{e}");
        let e = read_capped(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().starts_with("config file /dev/zero "), "{e}");
        let binary = dir.path().join("binary.toml");
        std::fs::write(&binary, b"\xff\xfe").unwrap();
        assert!(matches!(
            read_capped(&binary),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn missing_runtime_dir_for_user_without_xdg() {
        let env = Environment::new(false, [("HOME".to_owned(), OsString::from("/h"))]);
        assert!(matches!(
            Config::parse("", ConfigSource::Embedded, &env),
            Err(ConfigError::NoDefaultDir {
                what: "runtime_dir",
                ..
            })
        ));
        let c = Config::parse(
            "[supervisor]\nruntime_dir = \"/r\"\n",
            ConfigSource::Embedded,
            &env,
        )
        .unwrap();
        assert_eq!(c.supervisor.runtime_dir, Path::new("/r"));
    }

    #[test]
    fn cluster_table() {
        assert_eq!(parse("").unwrap().cluster, None, "optional");
        let c = parse(
            "[supervisor]\nstop_timeout = \"5s\"\n[cluster]\nendpoints = [\"http://10.0.0.1:2379\"]\nnode = \"host-a\"\nprefix = \"/erp/\"\n",
        )
        .unwrap();
        let cl = c.cluster.clone().unwrap();
        assert_eq!(cl.endpoints, ["http://10.0.0.1:2379"]);
        assert_eq!(cl.prefix, "/erp");
        assert_eq!(cl.node, "host-a");
        assert_eq!(cl.lease_ttl, Duration::from_secs(10));
        assert_eq!(cl.takeover_grace, Duration::from_secs(2));
        assert!(c.to_toml().contains("[cluster]"), "check shows it");
        // The default node is the host name.
        let c = parse("[supervisor]\nstop_timeout = \"1s\"\n[cluster]\n").unwrap();
        assert!(!c.cluster.unwrap().node.is_empty());
    }

    #[test]
    fn cluster_errors_name_the_line_and_key() {
        let cases = [
            // The issue's values with the default stop_timeout (10s).
            (
                "[cluster]\nlease_ttl = \"10s\"\n",
                2,
                "cluster.lease_ttl",
                "too short for [supervisor] stop_timeout",
            ),
            (
                "[cluster]\nbackend = \"zookeeper\"\n",
                2,
                "cluster.backend",
                "unknown backend",
            ),
            (
                "[cluster]\nendpoints = []\n",
                2,
                "cluster.endpoints",
                "at least one",
            ),
            (
                "[cluster]\nendpoints = [\"127.0.0.1:2379\"]\n",
                2,
                "cluster.endpoints",
                "not an http",
            ),
            (
                "[cluster]\nprefix = \"/a/../b\"\n",
                2,
                "cluster.prefix",
                "`..`",
            ),
            (
                "[cluster]\nnode = \"a b\"\n",
                2,
                "cluster.node",
                "no spaces",
            ),
            (
                "[cluster]\nlease_ttl = \"1s\"\n",
                2,
                "cluster.lease_ttl",
                "minimum of 2s",
            ),
            (
                "[cluster]\ntakeover_grace = \"1h\"\n",
                2,
                "cluster.takeover_grace",
                "maximum of 5m",
            ),
            (
                "[cluster]\nlease_ttl = \"2500ms\"\n",
                2,
                "cluster.lease_ttl",
                "whole seconds",
            ),
            ("[cluster]\nttl = \"1s\"\n", 2, "ttl", "unknown field"),
        ];
        for (text, line, key, words) in cases {
            let text = format!("[supervisor]\nstop_timeout = \"1s\"\n{text}");
            let text = if key == "cluster.lease_ttl" && words.starts_with("too short") {
                text.replace("stop_timeout = \"1s\"", "stop_timeout = \"10s\"")
            } else {
                text
            };
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("wa.toml:{}:", line + 2)), "{text}: {e}");
            assert!(e.contains(key), "{text}: {e}");
            assert!(e.contains(words), "{text}: {e}");
        }
    }

    #[test]
    fn http_and_webhook_tables() {
        let c = parse("").unwrap();
        assert_eq!((c.http.clone(), c.webhooks.len()), (None, 0), "optional");
        assert!(!c.to_toml().contains("http"), "nothing shown when off");
        let c = parse(
            "[supervisor]\nstate_dir = \"/s\"\n[http]\n[[webhook]]\nurl = \"https://erp.example.com/hook\"\nsecret_file = \"hook.secret\"\nevents = [\"state\", \"qr\", \"state\"]\n",
        )
        .unwrap();
        let h = c.http.clone().unwrap();
        assert_eq!(h.listen.to_string(), "127.0.0.1:8722");
        assert!(!h.allow_remote);
        assert_eq!(h.token_file, Path::new("/s/http.token"));
        let w = &c.webhooks[0];
        assert_eq!(
            w.secret_file,
            Path::new("/etc/x/hook.secret"),
            "relative to the file"
        );
        assert_eq!(w.events, [http::ChangeKind::State, http::ChangeKind::Qr]);
        let shown = c.to_toml();
        assert!(
            shown.contains("[http]") && shown.contains("[[webhook]]"),
            "{shown}"
        );
        let c =
            parse("[[webhook]]\nurl = \"http://127.0.0.1:1/\"\nsecret_file = \"/s\"\n").unwrap();
        assert_eq!(
            c.webhooks[0].events,
            [http::ChangeKind::State],
            "the default"
        );
        let c = parse("[http]\nlisten = \"0.0.0.0:80\"\nallow_remote = true\n").unwrap();
        assert!(!c.http.unwrap().listen.is_local());
        let c = parse("[http]\nlisten = \"unix:/run/wa-ctl/http.sock\"\n").unwrap();
        assert!(c.http.unwrap().listen.is_local());
    }

    #[test]
    fn http_errors_name_the_line_and_key() {
        let cases = [
            (
                "[http]\nlisten = \"0.0.0.0:8722\"\n",
                2,
                "http.listen",
                "allow_remote = true",
            ),
            (
                "[http]\nlisten = \"10.0.0.5:8722\"\nallow_remote = false\n",
                2,
                "http.listen",
                "other hosts",
            ),
            (
                "[http]\nlisten = \"localhost:8722\"\n",
                2,
                "http.listen",
                "not an address",
            ),
            ("[http]\nport = 1\n", 2, "port", "unknown field"),
            (
                "[[webhook]]\nsecret_file = \"/s\"\n",
                1,
                "webhook.url",
                "needs a url",
            ),
            (
                "[[webhook]]\nurl = \"ftp://x\"\nsecret_file = \"/s\"\n",
                2,
                "webhook.url",
                "http:// or https://",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\n",
                1,
                "webhook.secret_file",
                "needs a secret_file",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nsecret_file = \"/s\"\nevents = [\"nope\"]\n",
                4,
                "webhook.events",
                "unknown event",
            ),
            (
                "[[webhook]]\nurl = \"http://x\"\nsecret_file = \"/s\"\nevents = []\n",
                4,
                "webhook.events",
                "at least one",
            ),
        ];
        for (text, line, key, words) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(&format!("wa.toml:{line}:")), "{text}: {e}");
            assert!(e.contains(key), "{text}: {e}");
            assert!(e.contains(words), "{text}: {e}");
        }
    }
}
