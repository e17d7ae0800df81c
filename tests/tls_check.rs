//! The TLS recipe of docs/TLS.md, tried: `scripts/tls-check` puts this
//! build's `tickcast serve` behind stunnel and talks to it with
//! `openssl s_client`. Ignored by default, since it needs those two tools:
//! `cargo test --test tls_check -- --ignored`.

use std::process::Command;

#[test]
#[ignore = "needs stunnel4 and openssl"]
fn tickcast_answers_over_tls_behind_stunnel() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/tls-check");
    let status = Command::new("bash")
        .arg(script)
        .env("TICKCAST_BIN", env!("CARGO_BIN_EXE_tickcast"))
        .status()
        .expect("bash runs scripts/tls-check");
    assert!(status.success(), "scripts/tls-check failed: {status}");
}
