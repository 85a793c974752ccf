//! Integration tests: the real `wa-ctl` binary supervising the scriptable
//! `wa-test-worker`. One test binary, so it links once.

mod harness;

/// Real etcd members on loopback, from wa-ctl-cluster's tests (issue #10):
/// one module for every test file that needs them.
#[path = "../../../wa-ctl-cluster/tests/support/mod.rs"]
mod etcd_support;

mod census;
mod cli;
mod cluster_config;
mod cluster_failover;
mod guarantees;
mod http_api;
mod http_client;
mod http_metrics;
mod http_page;
mod http_webhooks;
mod off_loop;
mod policy;
mod real_worker;
mod systemd;
