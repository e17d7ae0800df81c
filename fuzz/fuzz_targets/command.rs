//! The libFuzzer main for the `command` target (nightly):
//! `cargo +nightly fuzz run command --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickcast_fuzz::command(data));
