//! The libFuzzer main for the `sse_resume` target (nightly):
//! `cargo +nightly fuzz run sse_resume --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickcast_fuzz::sse_resume(data));
