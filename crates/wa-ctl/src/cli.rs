//! The command line, as clap derive types. Help texts here are the user's
//! first documentation: each says what the command does and what it exits with.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Supervise WhatsApp Web connection workers: one supervisor per
/// configuration, exactly one worker process per session, and restarts
/// decided from the worker's close code.
#[derive(Debug, Parser)]
#[command(
    name = "wa-ctl",
    version,
    after_help = "\
Configuration: --config PATH, else $WA_CTL_CONFIG, else /etc/wa-ctl/wa-ctl.toml (root) or
$XDG_CONFIG_HOME/wa-ctl/wa-ctl.toml, else the embedded defaults. `wa-ctl check` prints the
effective configuration.

Exit codes: 0 success, 1 runtime failure, 2 usage or configuration error,
3 `status`: not running, 4 `status`: unknown (the supervisor does not answer).

Examples:
  wa-ctl start                 start the supervisor and every session
  wa-ctl status                what runs, and why the last worker ended
  wa-ctl start sales           start one session again, e.g. after a 440 conflict
  wa-ctl stop                  stop every worker and the supervisor"
)]
pub struct Cli {
    /// The configuration file (TOML)
    #[arg(long, short = 'c', global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the supervisor in the background, or one session of a running one
    ///
    /// Returns once the supervisor holds its lock and has spawned its workers.
    /// If it is already running, prints `already running (pid N)` and exits 0.
    /// With ID and a running supervisor, starts that session (for example
    /// after an operator has resolved a 440 conflict, or a logout).
    Start {
        /// The session to start; all sessions if omitted
        id: Option<String>,
        /// Stay attached: log to stderr and run until SIGTERM or SIGINT (for systemd and containers)
        #[arg(long)]
        foreground: bool,
    },
    /// Stop the supervisor and every worker, or one session
    ///
    /// Returns only when every process is gone. Exits 0 when nothing was
    /// running. With ID, stops that session and the supervisor keeps running.
    Stop {
        /// The session to stop; everything if omitted
        id: Option<String>,
        /// Also end strays: processes of this user that run a configured
        /// worker command outside the supervisor (what `pkill -f` was for).
        /// SIGTERM, then SIGKILL after stop_timeout; only exact matches.
        #[arg(long, conflicts_with = "id")]
        all: bool,
        /// Stop a supervisor that runs another configuration on this
        /// runtime_dir; and one that does not answer (frozen, e.g. by
        /// SIGSTOP): once it is shown to hold the lock, SIGKILL it and end
        /// its workers and what they left
        #[arg(long)]
        force: bool,
    },
    /// Stop and start again: the supervisor, or one session
    Restart {
        /// The session to restart; the whole supervisor if omitted
        id: Option<String>,
        /// Restart a supervisor that runs another configuration on this
        /// runtime_dir (it is replaced by one running this configuration)
        #[arg(long)]
        force: bool,
    },
    /// Show each session: state, worker pid, uptime, restarts, last close code and what was done
    ///
    /// Also counts the processes from the process table: supervisors, workers,
    /// and strays (a worker command running outside the supervisor, which
    /// causes 440 loops), with a loud warning when strays exist.
    /// With `[http]` on, also prints the pairing page's address, token
    /// included, when this user can read the token file.
    /// Exits 0 when the supervisor is running, 3 when it is not, 4 when it
    /// holds its lock but does not answer (the state is unknown).
    Status {
        /// Only this session
        id: Option<String>,
        /// One JSON object: {"running","pid","sessions":[...]}
        #[arg(long)]
        json: bool,
        /// Every session under the `[cluster]` prefix, with its owner node,
        /// epoch and last published state, read from etcd (exits 0 even
        /// when this node runs nothing); with --json:
        /// {"node","prefix","sessions":[{"id","owner","epoch","state"}]}
        #[arg(long)]
        cluster: bool,
    },
    /// Pair a session with a phone: show its QR code (or pair code) until it connects
    ///
    /// Starts (or restarts) the session's worker through the running
    /// supervisor, starting the supervisor if needed, and renders each new QR
    /// code as it arrives. Scan it in WhatsApp: Settings > Linked devices >
    /// Link a device. Ends when the session is connected (exit 0), when
    /// pairing expires or the session stops (exit 1), or on Ctrl-C.
    Login {
        /// The session to pair; may be omitted when only one is configured
        id: Option<String>,
        /// Link with a pair code instead of a QR code: the phone number in
        /// international format, e.g. +15551234567
        #[arg(long, value_name = "E.164")]
        phone: Option<String>,
        /// Pair in a browser instead: print the address of the pairing
        /// page (with the API token in its fragment, which the browser
        /// never sends) and follow the session until it connects. Needs
        /// `[http]` in the configuration; through an SSH tunnel it works
        /// from a laptop (ssh -L 8722:127.0.0.1:8722 HOST).
        #[arg(long, conflicts_with = "phone")]
        browser: bool,
    },
    /// Print the supervisor's log (<state_dir>/wa-ctl.log)
    Logs {
        /// Keep printing lines as they are written
        #[arg(short, long)]
        follow: bool,
        /// How many of the last lines to print
        #[arg(short = 'n', long, default_value_t = 50, value_name = "N")]
        lines: usize,
    },
    /// Validate the configuration and print the effective configuration and policy
    Check,
    /// Print a shell completion script
    ///
    /// bash: wa-ctl completions bash > /etc/bash_completion.d/wa-ctl
    /// zsh:  wa-ctl completions zsh > ~/.zfunc/_wa-ctl
    /// fish: wa-ctl completions fish > ~/.config/fish/completions/wa-ctl.fish
    Completions {
        /// The shell
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff); docs/wa-ctl.1 is this output
    #[command(hide = true)]
    Man,
}

impl Command {
    /// Whether this invocation runs a supervisor in this process.
    pub fn runs_supervisor(&self) -> bool {
        matches!(
            self,
            Command::Start {
                foreground: true,
                ..
            }
        )
    }
}
