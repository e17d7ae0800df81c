//! `dist/tickcast.service`, the systemd unit: hardened, restarting on
//! failure, stopping with the clean SIGTERM shutdown, and accepted by
//! `systemd-analyze verify`.

use std::path::Path;
use std::process::Command;

const UNIT: &str = include_str!("../dist/tickcast.service");

/// The value of `Key=` in the unit (the last one, as systemd reads it).
fn setting(key: &str) -> Option<&'static str> {
    UNIT.lines()
        .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .next_back()
}

#[test]
fn the_unit_is_hardened_and_stops_cleanly() {
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("ProtectHome", "yes"),
        ("Restart", "on-failure"),
        ("KillSignal", "SIGTERM"),
        (
            "ExecStart",
            "/usr/local/bin/tickcast serve --config /etc/tickcast/tickcast.toml",
        ),
    ] {
        assert_eq!(setting(key), Some(value), "{key}");
    }
    // Room for the default max-clients (1024), one descriptor each, and
    // more: the reason is written next to it.
    let nofile: u64 = setting("LimitNOFILE").unwrap().parse().unwrap();
    assert!(nofile > 1024 + 64, "{nofile}");
    assert!(UNIT.contains("One file descriptor per client"));
    assert!(setting("TimeoutStopSec").is_some());
}

/// Runs `systemd-analyze verify` on the unit, with `ExecStart` pointing at
/// the binary under test (systemd checks that it exists). Any warning
/// fails the test too: `verify` exits 0 on an unknown key.
#[test]
#[ignore = "needs systemd-analyze (apt-get install systemd); scripts/test runs it"]
fn systemd_analyze_verify_accepts_the_unit() {
    let dir = std::env::temp_dir().join(format!("tickcast-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = dir.join("tickcast.service");
    let bin = env!("CARGO_BIN_EXE_tickcast");
    assert!(Path::new(bin).exists());
    std::fs::write(
        &unit,
        UNIT.replace(
            "ExecStart=/usr/local/bin/tickcast",
            &format!("ExecStart={bin}"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit)
        .output()
        .expect("run systemd-analyze");
    let _ = std::fs::remove_dir_all(&dir);
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{said}");
    // Lines about other units of the host are not about ours.
    let ours: Vec<&str> = said.lines().filter(|l| l.contains("tickcast")).collect();
    assert!(ours.is_empty(), "{said}");
}
