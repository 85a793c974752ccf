//! The configuration file: where it is found, how it is parsed, and the
//! effective values once defaults are applied.
//!
//! The key names are a public contract (see the README and
//! `examples/wa-ctl.toml`). Every key is optional; with no file at all the
//! embedded defaults apply. Parsing is strict: unknown keys, bad values and
//! invalid session ids are errors that name the file, the line and the key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::policy::{Action, CloseKey, Policy};
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

/// An error in finding, reading or validating the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {}{message}", key.as_ref().map(|k| format!("key `{k}`: ")).unwrap_or_default())]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: Option<String>,
        message: String,
    },
    #[error("cannot find a default {what}: set {hint}, or name it in the config file")]
    NoDefaultDir {
        what: &'static str,
        hint: &'static str,
    },
}

/// What the process environment contributes to locating files. Kept apart
/// from `std::env` so that tests can describe any user.
pub struct Environment {
    /// Whether the effective user is root.
    pub is_root: bool,
    vars: BTreeMap<String, OsString>,
}

impl Environment {
    /// The real environment of this process.
    pub fn from_process() -> Self {
        Environment {
            is_root: nix::unistd::geteuid().is_root(),
            vars: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v)))
                .collect(),
        }
    }

    /// An environment made of the given variables, for tests.
    pub fn new(is_root: bool, vars: impl IntoIterator<Item = (String, OsString)>) -> Self {
        Environment {
            is_root,
            vars: vars.into_iter().collect(),
        }
    }

    fn var(&self, name: &str) -> Option<&OsString> {
        self.vars.get(name).filter(|v| !v.is_empty())
    }

    fn xdg_dir(&self, var: &str, home_suffix: &str) -> Option<PathBuf> {
        if let Some(v) = self.var(var) {
            let p = PathBuf::from(v);
            // The XDG spec says relative values are invalid and must be ignored.
            if p.is_absolute() {
                return Some(p);
            }
        }
        self.var("HOME").map(|h| PathBuf::from(h).join(home_suffix))
    }

    /// The configuration file to use, before looking at whether it exists.
    fn config_candidate(&self, flag: Option<&Path>) -> Option<ConfigSource> {
        if let Some(p) = flag {
            return Some(ConfigSource::Flag(p.to_path_buf()));
        }
        if let Some(p) = self.var(CONFIG_ENV) {
            return Some(ConfigSource::Env(PathBuf::from(p)));
        }
        // Under systemd with ConfigurationDirectory=wa-ctl.
        if let Some(dir) = self.systemd_dir("CONFIGURATION_DIRECTORY") {
            return Some(ConfigSource::DefaultPath(dir.join("wa-ctl.toml")));
        }
        let default = if self.is_root {
            Some(PathBuf::from(SYSTEM_CONFIG_PATH))
        } else {
            self.xdg_dir("XDG_CONFIG_HOME", ".config")
                .map(|d| d.join("wa-ctl/wa-ctl.toml"))
        };
        default.map(ConfigSource::DefaultPath)
    }

    /// A directory systemd created for the service (`RuntimeDirectory=`,
    /// `StateDirectory=`, ...): the first of the colon-separated list.
    fn systemd_dir(&self, var: &str) -> Option<PathBuf> {
        let value = self.var(var)?.to_str()?;
        let first = PathBuf::from(value.split(':').next()?);
        first.is_absolute().then_some(first)
    }

    fn default_runtime_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(dir) = self.systemd_dir("RUNTIME_DIRECTORY") {
            return Ok(dir);
        }
        if self.is_root {
            return Ok(PathBuf::from("/run/wa-ctl"));
        }
        match self.var("XDG_RUNTIME_DIR") {
            Some(v) if Path::new(v).is_absolute() => Ok(PathBuf::from(v).join("wa-ctl")),
            _ => Err(ConfigError::NoDefaultDir {
                what: "runtime_dir",
                hint: "$XDG_RUNTIME_DIR",
            }),
        }
    }

    fn default_state_dir(&self) -> Result<PathBuf, ConfigError> {
        if let Some(dir) = self.systemd_dir("STATE_DIRECTORY") {
            return Ok(dir);
        }
        if self.is_root {
            return Ok(PathBuf::from("/var/lib/wa-ctl"));
        }
        self.xdg_dir("XDG_STATE_HOME", ".local/state")
            .map(|d| d.join("wa-ctl"))
            .ok_or(ConfigError::NoDefaultDir {
                what: "state_dir",
                hint: "$XDG_STATE_HOME or $HOME",
            })
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
    #[serde(rename = "session")]
    pub sessions: Vec<SessionConfig>,
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
                match std::fs::read_to_string(path) {
                    Ok(text) => Config::parse(&text, source, env),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Config::parse("", ConfigSource::Embedded, env)
                    }
                    Err(source) => Err(ConfigError::Read {
                        path: path.to_path_buf(),
                        source,
                    }),
                }
            }
            // A file named explicitly must exist: silently running on defaults
            // would hide a typo in a path.
            Some(source) => {
                let path = source.path().expect("explicit source has a path");
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
                    path: path.to_path_buf(),
                    source: e,
                })?;
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
        let raw: RawConfig = toml::from_str(text)
            .map_err(|e| invalid_from_toml(&display_path, text, e.span(), e.message()))?;
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

        let err_at = |span: std::ops::Range<usize>, key: &str, message: String| {
            let (line, column) = line_column(text, span.start);
            ConfigError::Invalid {
                path: display_path.clone(),
                line,
                column,
                key: Some(key.to_owned()),
                message,
            }
        };

        let policy = raw
            .policy
            .into_policy()
            .map_err(|(span, key, msg)| err_at(span, key, msg))?;

        let worker_command = match raw.worker.command {
            Some(c) => {
                check_command(c.get_ref()).map_err(|m| err_at(c.span(), "worker.command", m))?;
                c.into_inner()
            }
            None => vec!["wa-worker".to_owned()],
        };
        let worker_env = match raw.worker.env {
            Some(env) => {
                check_env(env.get_ref()).map_err(|m| err_at(env.span(), "worker.env", m))?;
                env.into_inner()
            }
            None => BTreeMap::new(),
        };

        let raw_sessions = raw.session.unwrap_or_else(|| vec![RawSession::default()]);
        let mut sessions: Vec<SessionConfig> = Vec::with_capacity(raw_sessions.len());
        for s in raw_sessions {
            let id = match s.id {
                Some(id) => {
                    if sessions.iter().any(|o| o.id == *id.get_ref()) {
                        return Err(err_at(
                            id.span(),
                            "session.id",
                            format!("session id `{}` is used twice", id.get_ref()),
                        ));
                    }
                    id.into_inner()
                }
                None => {
                    let default = SessionId::default_id();
                    if sessions.iter().any(|o| o.id == default) {
                        return Err(ConfigError::Invalid {
                            path: display_path.clone(),
                            line: 1,
                            column: 1,
                            key: Some("session.id".to_owned()),
                            message:
                                "more than one [[session]] has no id (the default id is `default`)"
                                    .to_owned(),
                        });
                    }
                    default
                }
            };
            let command = match s.command {
                Some(c) => {
                    check_command(c.get_ref())
                        .map_err(|m| err_at(c.span(), "session.command", m))?;
                    c.into_inner()
                }
                None => worker_command.clone(),
            };
            let mut env = worker_env.clone();
            if let Some(session_env) = s.env {
                check_env(session_env.get_ref())
                    .map_err(|m| err_at(session_env.span(), "session.env", m))?;
                env.extend(session_env.into_inner());
            }
            sessions.push(SessionConfig { id, command, env });
        }

        Ok(Config {
            source,
            supervisor: SupervisorConfig {
                runtime_dir,
                state_dir,
                stop_timeout: raw
                    .supervisor
                    .stop_timeout
                    .map_or(Duration::from_secs(10), |d| d.0),
            },
            policy,
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

fn check_command(command: &[String]) -> Result<(), String> {
    match command.first() {
        None => {
            Err("the command is empty: give at least the program, e.g. [\"wa-worker\"]".to_owned())
        }
        Some(p) if p.is_empty() => Err("the program name is empty".to_owned()),
        Some(_) if command.iter().any(|a| a.contains('\0')) => {
            Err("an argument contains a NUL byte".to_owned())
        }
        Some(_) => Ok(()),
    }
}

fn check_env(env: &BTreeMap<String, String>) -> Result<(), String> {
    for (k, v) in env {
        if k.is_empty() || k.contains('=') || k.contains('\0') {
            return Err(format!("invalid environment variable name `{k}`"));
        }
        if v.contains('\0') {
            return Err(format!("the value of `{k}` contains a NUL byte"));
        }
        if k.starts_with("WA_CTL_") {
            return Err(format!(
                "`{k}` is reserved: wa-ctl sets the WA_CTL_* variables itself"
            ));
        }
    }
    Ok(())
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// Turns a toml error into one that names the line and, when it can be
/// told from the text, the key.
fn invalid_from_toml(
    path: &str,
    text: &str,
    span: Option<std::ops::Range<usize>>,
    message: &str,
) -> ConfigError {
    let (line, column, key) = match span {
        Some(span) => {
            let (line, column) = line_column(text, span.start);
            let line_text = text.lines().nth(line - 1).unwrap_or("");
            let key = line_text
                .split_once('=')
                .map(|(k, _)| k.trim().trim_matches('"').to_owned())
                .filter(|k| !k.is_empty() && !k.starts_with('['));
            // An unknown field is reported at the key itself; name it from the span.
            let key = key.or_else(|| {
                let k = text.get(span.clone())?.trim();
                (!k.is_empty() && !k.contains('\n')).then(|| k.to_owned())
            });
            (line, column, key)
        }
        None => (1, 1, None),
    };
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        key,
        message: message.trim().to_owned(),
    }
}

// ---------------------------------------------------------------------------
// The raw file format. Everything optional, nothing unknown.

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    supervisor: RawSupervisor,
    #[serde(default)]
    worker: RawWorker,
    #[serde(default)]
    policy: RawPolicy,
    session: Option<Vec<RawSession>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    runtime_dir: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    stop_timeout: Option<HumanDuration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    command: Option<toml::Spanned<Vec<String>>>,
    env: Option<toml::Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSession {
    id: Option<toml::Spanned<SessionId>>,
    command: Option<toml::Spanned<Vec<String>>>,
    env: Option<toml::Spanned<BTreeMap<String, String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    initial_backoff: Option<toml::Spanned<HumanDuration>>,
    max_backoff: Option<toml::Spanned<HumanDuration>>,
    backoff_multiplier: Option<toml::Spanned<f64>>,
    jitter: Option<toml::Spanned<f64>>,
    reset_after: Option<HumanDuration>,
    max_restarts: Option<u32>,
    restart_window: Option<HumanDuration>,
    codes: Option<BTreeMap<CloseKey, Action>>,
}

type SpannedError = (std::ops::Range<usize>, &'static str, String);

impl RawPolicy {
    fn into_policy(self) -> Result<Policy, SpannedError> {
        let mut p = Policy::default();
        if let Some(d) = &self.initial_backoff {
            p.initial_backoff = d.get_ref().0;
        }
        if let Some(d) = &self.max_backoff {
            p.max_backoff = d.get_ref().0;
        }
        if p.initial_backoff > p.max_backoff {
            let span = self
                .initial_backoff
                .as_ref()
                .or(self.max_backoff.as_ref())
                .map(|s| s.span())
                .unwrap_or(0..0);
            return Err((
                span,
                "policy.initial_backoff",
                format!(
                    "initial_backoff ({}) is larger than max_backoff ({})",
                    humantime::format_duration(p.initial_backoff),
                    humantime::format_duration(p.max_backoff)
                ),
            ));
        }
        if let Some(m) = self.backoff_multiplier {
            let v = *m.get_ref();
            if !(v.is_finite() && (1.0..=1000.0).contains(&v)) {
                return Err((
                    m.span(),
                    "policy.backoff_multiplier",
                    format!("{v} is out of range: use a number from 1.0 to 1000.0"),
                ));
            }
            p.backoff_multiplier = v;
        }
        if let Some(j) = self.jitter {
            let v = *j.get_ref();
            if !(v.is_finite() && (0.0..1.0).contains(&v)) {
                return Err((
                    j.span(),
                    "policy.jitter",
                    format!(
                        "{v} is out of range: use a fraction from 0.0 up to (not including) 1.0"
                    ),
                ));
            }
            p.jitter = v;
        }
        if let Some(d) = self.reset_after {
            p.reset_after = d.0;
        }
        if let Some(n) = self.max_restarts {
            p.max_restarts = n;
        }
        if let Some(d) = self.restart_window {
            p.restart_window = d.0;
        }
        if let Some(codes) = self.codes {
            p.codes.extend(codes);
        }
        Ok(p)
    }
}

/// A duration written as a humantime string ("250ms", "10s", "5m").
#[derive(Debug, Clone, Copy)]
struct HumanDuration(Duration);

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

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_duration(*d).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn root_defaults() {
        let env = Environment::new(true, []);
        let c = Config::parse("", ConfigSource::Embedded, &env).unwrap();
        assert_eq!(c.supervisor.runtime_dir, Path::new("/run/wa-ctl"));
        assert_eq!(c.supervisor.state_dir, Path::new("/var/lib/wa-ctl"));
        assert_eq!(
            env.config_candidate(None),
            Some(ConfigSource::DefaultPath(SYSTEM_CONFIG_PATH.into()))
        );
    }

    #[test]
    fn systemd_directories() {
        let env = Environment::new(
            false,
            [
                (
                    "RUNTIME_DIRECTORY".to_owned(),
                    OsString::from("/run/wa-ctl"),
                ),
                (
                    "STATE_DIRECTORY".to_owned(),
                    OsString::from("/var/lib/wa-ctl:/var/lib/other"),
                ),
                (
                    "CONFIGURATION_DIRECTORY".to_owned(),
                    OsString::from("/etc/wa-ctl"),
                ),
            ],
        );
        let c = Config::parse("", ConfigSource::Embedded, &env).unwrap();
        assert_eq!(c.supervisor.runtime_dir, Path::new("/run/wa-ctl"));
        assert_eq!(c.supervisor.state_dir, Path::new("/var/lib/wa-ctl"));
        assert_eq!(
            env.config_candidate(None),
            Some(ConfigSource::DefaultPath("/etc/wa-ctl/wa-ctl.toml".into()))
        );
    }

    #[test]
    fn config_lookup_order() {
        let mut vars = vec![("HOME".to_owned(), OsString::from("/home/u"))];
        let env = Environment::new(false, vars.clone());
        assert_eq!(
            env.config_candidate(None),
            Some(ConfigSource::DefaultPath(
                "/home/u/.config/wa-ctl/wa-ctl.toml".into()
            ))
        );
        vars.push(("XDG_CONFIG_HOME".to_owned(), OsString::from("/cfg")));
        let env = Environment::new(false, vars.clone());
        assert_eq!(
            env.config_candidate(None),
            Some(ConfigSource::DefaultPath("/cfg/wa-ctl/wa-ctl.toml".into()))
        );
        vars.push((CONFIG_ENV.to_owned(), OsString::from("/e.toml")));
        let env = Environment::new(false, vars);
        assert_eq!(
            env.config_candidate(None),
            Some(ConfigSource::Env("/e.toml".into()))
        );
        assert_eq!(
            env.config_candidate(Some(Path::new("/f.toml"))),
            Some(ConfigSource::Flag("/f.toml".into()))
        );
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

    fn invalid(text: &str) -> (usize, Option<String>, String) {
        match parse(text) {
            Err(ConfigError::Invalid {
                line, key, message, ..
            }) => (line, key, message),
            other => panic!("expected an invalid-config error, got {other:?}"),
        }
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let (line, key, _) = invalid("[supervisor]\n\nstop_timout = \"1s\"\n");
        assert_eq!(line, 3);
        assert_eq!(key.as_deref(), Some("stop_timout"));
    }

    #[test]
    fn bad_duration() {
        let (line, key, msg) = invalid("[policy]\ninitial_backoff = \"soon\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("initial_backoff")));
        assert!(msg.contains("invalid duration"), "{msg}");
    }

    #[test]
    fn bad_action_and_code() {
        let (line, _, msg) = invalid("[policy.codes]\n401 = \"explode\"\n");
        assert_eq!(line, 2);
        assert!(msg.contains("explode"), "{msg}");
        let (line, key, _) = invalid("[policy.codes]\nfoo = \"stop\"\n");
        assert_eq!((line, key.as_deref()), (2, Some("foo")));
    }

    #[test]
    fn bad_session_ids() {
        for bad in ["../x", "", "a/b", "x y", "/abs", &"a".repeat(65)] {
            let (line, key, msg) = invalid(&format!("[[session]]\nid = \"{bad}\"\n"));
            assert_eq!(line, 2, "{bad}");
            assert_eq!(key.as_deref(), Some("id"), "{bad}");
            assert!(msg.contains("session id"), "{msg}");
        }
        let (line, _, msg) = invalid("[[session]]\nid = \"a\"\n[[session]]\nid = \"a\"\n");
        assert_eq!(line, 4);
        assert!(msg.contains("twice"), "{msg}");
    }

    #[test]
    fn bad_values() {
        invalid("[policy]\njitter = 1.5\n");
        invalid("[policy]\nbackoff_multiplier = 0.5\n");
        invalid("[policy]\ninitial_backoff = \"10m\"\n");
        invalid("[worker]\ncommand = []\n");
        invalid("[worker]\nenv = { WA_CTL_SESSION_ID = \"x\" }\n");
        invalid("[policy]\nmax_restarts = -1\n");
        invalid("supervisor = 3\n");
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
}
