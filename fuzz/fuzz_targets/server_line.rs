//! The libFuzzer main for the `server_line` target (nightly):
//! `cargo +nightly fuzz run server_line --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickcast_fuzz::server_line(data));
