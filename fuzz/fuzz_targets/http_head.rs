//! The libFuzzer main for the `http_head` target (nightly):
//! `cargo +nightly fuzz run http_head --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickcast_fuzz::http_head(data));
