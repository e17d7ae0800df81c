//! The AFL++ main for every target: `afl TARGET`, built with
//! `cargo afl build --release` and run by `cargo afl fuzz` (see
//! `scripts/fuzz`). The targets themselves are in `src/lib.rs`.

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = tickcast_fuzz::target(&name) else {
        let names: Vec<_> = tickcast_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
        eprintln!("usage: afl TARGET (one of: {})", names.join(", "));
        std::process::exit(2);
    };
    afl::fuzz!(|data: &[u8]| target(data));
}
