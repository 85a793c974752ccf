//! The test worker refuses to run outside wa-ctl. This test also makes
//! `cargo test --workspace` build the binary that the wa-ctl integration
//! tests drive.

#[test]
fn refuses_without_the_supervisor_environment() {
    #[expect(clippy::disallowed_methods, reason = "tests run the real binary")]
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wa-test-worker"))
        .arg("connect")
        .env_remove("WA_CTL_SESSION_DIR")
        .env_remove("WA_CTL_EVENTS_FD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("run by wa-ctl"));
}
