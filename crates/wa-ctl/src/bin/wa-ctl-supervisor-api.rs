//! `wa-ctl-supervisor-api`: `wa-ctl-supervisor` with the HTTP API,
//! webhooks and metrics (issue #11), for a configuration with `[http]` or
//! `[[webhook]]`; `wa-ctl start` picks it then. Everything below holds for
//! both binaries.
//!
//! `wa-ctl-supervisor`: the supervisor process, without the command line.
//!
//! `wa-ctl start` runs it in the background, and `wa-ctl start --foreground`
//! (what the systemd unit runs) replaces itself with it (`execve`, so the pid
//! and systemd's `NOTIFY_SOCKET` stay). It gets the same arguments and the
//! same `argv[0]`, so `ps` still shows `wa-ctl --config PATH start
//! --foreground`. It links no clap, no QR code and no completion or man page
//! generator: a supervisor's resident memory is mostly its own code
//! (docs/benchmarks.md), and it runs for months.
//!
//! It is not meant to be run by hand; it accepts exactly what `wa-ctl start`
//! gives it: `[--config PATH] start --foreground [ID]`.

#[path = "../exit.rs"]
#[expect(dead_code, reason = "shared with wa-ctl, which uses all of it")]
mod exit;
#[path = "../foreground.rs"]
mod foreground;
#[path = "../logging.rs"]
mod logging;
#[path = "../supervisor_bin.rs"]
mod supervisor_bin;

fn main() -> std::process::ExitCode {
    supervisor_bin::main(Some(wa_ctl_http::Http::boxed))
}
