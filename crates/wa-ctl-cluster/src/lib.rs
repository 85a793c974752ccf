//! Session ownership across hosts (issue #10): one owner per session,
//! decided by leases on etcd. This is the foundation; the supervisor does
//! not use it yet.
//!
//! - [`Ownership`] is the backend as a trait, so that a second backend can
//!   follow; [`EtcdOwnership`] implements it on etcd's v3 API.
//! - [`key`] is the key layout and the validation that keeps every key
//!   under the prefix: session ids are one key segment, node names are only
//!   ever values.
//! - [`ownership_deadline`] is the supervisor's own deadline, pure.
//!
//! docs/cluster.md ("Key layout and the backend") has the layout, the
//! lease, and the fencing token.
//!
//! # Building: protoc
//!
//! etcd-client has no generated code in its package: its build script runs
//! `tonic-prost-build` on etcd's `.proto` files, and prost-build runs the
//! program named by `$PROTOC`, or `protoc` on `PATH`. No etcd-client
//! feature avoids that (`build-server`, `pub-response-field` and
//! `raw-channel` change what is generated, not whether), and a build script
//! of ours cannot set an environment variable for a dependency's build
//! script. So:
//!
//! - this crate build-depends on `protoc-bin-vendored`, whose per-platform
//!   crates ship protoc itself; cargo downloads and unpacks every package
//!   before it runs any build script, so the binary is on disk in time;
//! - the workspace's `.cargo/config.toml` sets `PROTOC` (through `[env]`,
//!   relative to the workspace) to `.cargo/protoc`, a small script that
//!   runs that vendored binary, and falls back to a `protoc` on `PATH`.
//!
//! A fresh clone therefore builds with `cargo build` alone, and an exported
//! `PROTOC` still wins. What it does not cover: a `cargo vendor`ed or
//! relocated registry (the script looks under `$CARGO_HOME/registry/src`),
//! and a host protoc-bin-vendored has no binary for (`build.rs` warns);
//! both fall back to a system `protoc` (Debian: `protobuf-compiler`).
//! The alternatives were worse: a checked-in protoc binary, a patched copy
//! of etcd-client with generated code to keep up to date, or a system
//! package that the README's fresh-machine command would then need.

pub mod deadline;
pub mod etcd;
pub mod key;
pub mod ownership;

pub use deadline::ownership_deadline;
pub use etcd::{EtcdOwnerWatch, EtcdOwnership, cluster_view};
pub use key::{KeyError, Prefix, owner_key, state_key};
pub use ownership::{
    Acquisition, KeepaliveAck, OwnerChange, OwnerWatch, Ownership, OwnershipError, SessionRecord,
};
