//! Where things are when the file does not say: which configuration file to
//! read, and the default `runtime_dir` and `state_dir`.
//!
//! The order is `--config`, `$WA_CTL_CONFIG`, systemd's
//! `$CONFIGURATION_DIRECTORY`, then the system path for root or the XDG path
//! for anyone else. Directories come from systemd (`$RUNTIME_DIRECTORY`,
//! `$STATE_DIRECTORY`), then the fixed system paths for root, then XDG.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::error::ConfigError;
use super::{CONFIG_ENV, ConfigSource, SYSTEM_CONFIG_PATH};

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
    pub(super) fn config_candidate(&self, flag: Option<&Path>) -> Option<ConfigSource> {
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

    /// `runtime_dir` when the file names none.
    pub(super) fn default_runtime_dir(&self) -> Result<PathBuf, ConfigError> {
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

    /// `state_dir` when the file names none.
    pub(super) fn default_state_dir(&self) -> Result<PathBuf, ConfigError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_defaults() {
        let env = Environment::new(true, []);
        assert_eq!(env.default_runtime_dir().unwrap(), Path::new("/run/wa-ctl"));
        assert_eq!(
            env.default_state_dir().unwrap(),
            Path::new("/var/lib/wa-ctl")
        );
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
        assert_eq!(env.default_runtime_dir().unwrap(), Path::new("/run/wa-ctl"));
        assert_eq!(
            env.default_state_dir().unwrap(),
            Path::new("/var/lib/wa-ctl")
        );
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
}
