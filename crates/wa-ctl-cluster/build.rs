//! Checks that the vendored protoc exists for this host, so that a build
//! on a platform protoc-bin-vendored does not cover says why up front.
//! etcd-client's build script, not ours, runs protoc: through `PROTOC`,
//! which `.cargo/config.toml` points at `.cargo/protoc`.

fn main() {
    if let Err(error) = protoc_bin_vendored::protoc_bin_path() {
        println!(
            "cargo::warning=no vendored protoc for this host ({error}); etcd-client then needs protoc on PATH or PROTOC set"
        );
    }
    println!("cargo::rerun-if-changed=build.rs");
}
