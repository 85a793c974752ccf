//! `wa-ctl completions SHELL` and `wa-ctl man`: the command line describing
//! itself. Neither reads the configuration.

use crate::cli::Cli;
use crate::exit;

use super::out;

/// Prints the completion script for `shell`.
pub(super) fn completions(shell: clap_complete::Shell) -> anyhow::Result<u8> {
    let mut command = <Cli as clap::CommandFactory>::command();
    let mut buf = Vec::new();
    clap_complete::generate(shell, &mut command, "wa-ctl", &mut buf);
    out(&String::from_utf8_lossy(&buf))?;
    Ok(exit::SUCCESS)
}

/// Prints the man page (roff).
pub(super) fn man() -> anyhow::Result<u8> {
    let mut buf = Vec::new();
    clap_mangen::Man::new(<Cli as clap::CommandFactory>::command()).render(&mut buf)?;
    out(&String::from_utf8_lossy(&buf))?;
    Ok(exit::SUCCESS)
}
