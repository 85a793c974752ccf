//! `wa-ctl`: the command-line front of the wa-ctl supervisor.
//!
//! Thin by design: set up logging, parse the command line, run one command
//! from [`commands`], and map the result to an exit code from [`exit`].

mod cli;
mod commands;
mod exit;
mod foreground;
mod logging;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    logging::init(cli.command.runs_supervisor());
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            eprintln!("wa-ctl: {}", exit::describe(&err));
            ExitCode::from(exit::code_for(&err))
        }
    }
}
