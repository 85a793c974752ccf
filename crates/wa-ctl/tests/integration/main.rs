//! Integration tests: the real `wa-ctl` binary supervising the scriptable
//! `wa-test-worker`. One test binary, so it links once.

mod harness;

mod census;
mod cli;
mod cluster_config;
mod descriptors;
mod guarantees;
mod hangs;
mod holds;
mod hostile_input;
mod off_loop;
mod policy;
mod real_worker;
mod systemd;
