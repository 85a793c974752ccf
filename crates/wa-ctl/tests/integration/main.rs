//! Integration tests: the real `wa-ctl` binary supervising the scriptable
//! `wa-test-worker`. One test binary, so it links once.

mod harness;

mod census;
mod cli;
mod cluster_config;
mod guarantees;
mod off_loop;
mod policy;
mod real_worker;
mod systemd;
