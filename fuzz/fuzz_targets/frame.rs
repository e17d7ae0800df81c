//! The libFuzzer main for the `frame` target (nightly):
//! `cargo +nightly fuzz run frame --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickcast_fuzz::frame(data));
