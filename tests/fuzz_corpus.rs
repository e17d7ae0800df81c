//! The fuzz targets, in plain `cargo test`: every input kept in
//! `fuzz/corpus/TARGET/` (seeds from the protocol's examples) and in
//! `fuzz/regressions/TARGET/` (inputs that once broke something) goes
//! through the same checks the fuzzers run, so nothing a fuzzer found can
//! come back unnoticed, even where AFL is not installed.
//!
//! The targets are the fuzz crate's own code (`fuzz/src/lib.rs`), included
//! here as a module; `scripts/fuzz` runs them under AFL++.

#[path = "../fuzz/src/lib.rs"]
mod targets;

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

/// The folders of kept inputs, one sub-folder per target.
const KEPT: [&str; 2] = ["fuzz/corpus", "fuzz/regressions"];

fn kept(folder: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(folder)
}

/// Runs target `name` on every kept input; fails naming each input that
/// panics (the panic message itself is printed as it happens).
fn replay(name: &str) {
    let target = targets::target(name).expect("a known target");
    let mut inputs = Vec::new();
    for folder in KEPT {
        if let Ok(entries) = fs::read_dir(kept(folder).join(name)) {
            inputs.extend(entries.map(|e| e.expect("a readable folder").path()));
        }
    }
    inputs.retain(|path| path.file_name().is_some_and(|n| n != ".gitkeep"));
    assert!(!inputs.is_empty(), "no corpus for {name}");
    inputs.sort();
    let failed: Vec<_> = inputs
        .iter()
        .filter(|path| {
            let data = fs::read(path).expect("a readable input");
            panic::catch_unwind(|| target(&data)).is_err()
        })
        .collect();
    assert!(failed.is_empty(), "{name} fails on {failed:#?}");
}

#[test]
fn frame_corpus() {
    replay("frame");
}

#[test]
fn frame_server_corpus() {
    replay("frame_server");
}

#[test]
fn command_corpus() {
    replay("command");
}

#[test]
fn server_line_corpus() {
    replay("server_line");
}

#[test]
fn merge_corpus() {
    replay("merge");
}

#[test]
fn http_head_corpus() {
    replay("http_head");
}

#[test]
fn sse_resume_corpus() {
    replay("sse_resume");
}

/// A folder named after no target would be silently skipped.
#[test]
fn every_kept_folder_names_a_target() {
    for folder in KEPT {
        let Ok(entries) = fs::read_dir(kept(folder)) else {
            continue;
        };
        for entry in entries {
            let name = entry.expect("a readable folder").file_name();
            let name = name.to_string_lossy();
            assert!(
                name.starts_with('.') || targets::target(&name).is_some(),
                "{folder}/{name} names no target (see fuzz/src/lib.rs)"
            );
        }
    }
}
