//! `[http]` and `[[webhook]]` (issue #11): the surface for applications.
//! Optional: without `[http]` nothing listens, and without `[[webhook]]`
//! nothing is sent.
//!
//! This module reads and checks the tables. The server, the webhooks and
//! the metrics live in `crates/wa-ctl-http`.
//!
//! `listen` is loopback or a unix socket unless `allow_remote = true` says
//! otherwise: the API starts and stops sessions and shows their QR codes, so
//! an address others can reach must be a decision, not a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Serialize, Serializer};

/// The default `listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8722";

/// HTTP connections served at once; the next waits in the kernel's
/// backlog. Counted in the supervisor's descriptor budget when `[http]` is
/// on.
pub const MAX_CONNECTIONS: usize = 256;

/// The token file's name in `state_dir` when `token_file` is not set.
pub const DEFAULT_TOKEN_FILE: &str = "http.token";

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    /// `unix:PATH`.
    Unix(PathBuf),
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(addr) => write!(f, "{addr}"),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl Serialize for Listen {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl Listen {
    /// Parses `listen`: `HOST:PORT` with an IP address, or `unix:PATH`
    /// (absolute, or relative to `base`).
    pub fn parse(text: &str, base: Option<&std::path::Path>) -> Result<Listen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("`unix:` needs a path, e.g. \"unix:/run/wa-ctl/http.sock\"".into());
            }
            let path = PathBuf::from(path);
            return Ok(Listen::Unix(match base {
                Some(base) if path.is_relative() => base.join(path),
                _ => path,
            }));
        }
        text.parse::<SocketAddr>().map(Listen::Tcp).map_err(|_| {
            format!(
                "{} is not an address: write an IP address and a port, e.g. \"127.0.0.1:8722\" \
                 or \"[::1]:8722\", or \"unix:/run/wa-ctl/http.sock\" (host names are not \
                 resolved)",
                crate::text::Quoted(text)
            )
        })
    }

    /// Whether only this host can connect: a loopback address or a socket.
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(addr) => addr.ip().is_loopback(),
            Listen::Unix(_) => true,
        }
    }
}

/// The effective `[http]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpConfig {
    pub listen: Listen,
    pub allow_remote: bool,
    /// The bearer token's file: read at start, created (0600, random) when
    /// missing, refused when others can read it.
    pub token_file: PathBuf,
}

impl HttpConfig {
    /// The page's address with the token in its fragment, which a browser
    /// never sends to the server. `None` for a unix socket.
    pub fn page_url(&self, token: &str) -> Option<String> {
        match &self.listen {
            Listen::Tcp(addr) => {
                let host = if addr.ip().is_unspecified() {
                    // Listening everywhere: loopback reaches it from here.
                    match addr {
                        SocketAddr::V4(_) => format!("127.0.0.1:{}", addr.port()),
                        SocketAddr::V6(_) => format!("[::1]:{}", addr.port()),
                    }
                } else {
                    addr.to_string()
                };
                Some(format!("http://{host}/#token={token}"))
            }
            Listen::Unix(_) => None,
        }
    }
}

/// Which changes a webhook is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The session's state changed.
    State,
    /// A new QR code waits to be scanned.
    Qr,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::State => "state",
            ChangeKind::Qr => "qr",
        }
    }

    pub fn parse(text: &str) -> Option<ChangeKind> {
        match text {
            "state" => Some(ChangeKind::State),
            "qr" => Some(ChangeKind::Qr),
            _ => None,
        }
    }
}

/// One effective `[[webhook]]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WebhookConfig {
    pub url: String,
    /// The HMAC-SHA256 key's file, read at start.
    pub secret_file: PathBuf,
    pub events: Vec<ChangeKind>,
}

/// Checks a webhook's URL: `http` or `https`, with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| {
            format!(
                "{} is not an http:// or https:// URL",
                crate::text::Quoted(url)
            )
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("{} names no host", crate::text::Quoted(url)));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("a URL cannot contain spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            Listen::parse("127.0.0.1:8722", None).unwrap(),
            Listen::Tcp("127.0.0.1:8722".parse().unwrap())
        );
        assert!(Listen::parse("[::1]:1", None).unwrap().is_local());
        assert!(!Listen::parse("0.0.0.0:1", None).unwrap().is_local());
        assert!(!Listen::parse("10.1.2.3:1", None).unwrap().is_local());
        assert_eq!(
            Listen::parse("unix:http.sock", Some(std::path::Path::new("/etc/wa-ctl"))).unwrap(),
            Listen::Unix("/etc/wa-ctl/http.sock".into())
        );
        assert!(Listen::parse("unix:", None).is_err());
        assert!(Listen::parse("localhost:8722", None).is_err());
        assert!(Listen::parse("127.0.0.1", None).is_err());
    }

    #[test]
    fn page_url_has_the_token_in_the_fragment() {
        let c = HttpConfig {
            listen: Listen::parse("0.0.0.0:9", None).unwrap(),
            allow_remote: true,
            token_file: "/t".into(),
        };
        assert_eq!(c.page_url("abc").unwrap(), "http://127.0.0.1:9/#token=abc");
    }

    #[test]
    fn urls() {
        assert!(check_url("http://127.0.0.1:8000/api").is_ok());
        assert!(check_url("https://erp.example.com").is_ok());
        assert!(check_url("ftp://x").is_err());
        assert!(check_url("http:///x").is_err());
        assert!(check_url("http://a b").is_err());
    }
}
