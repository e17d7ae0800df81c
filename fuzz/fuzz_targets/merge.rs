//! The libFuzzer main for the `merge` target (nightly):
//! `cargo +nightly fuzz run merge --features libfuzzer`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tickcast_fuzz::merge(data));
