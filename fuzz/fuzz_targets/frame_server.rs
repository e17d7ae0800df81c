//! The libFuzzer main for the `frame_server` target (nightly):
//! `cargo +nightly fuzz run frame_server --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickcast_fuzz::frame_server(data));
