//! Values with units, as a person types them: `500ms`, `5s`, `2m`, `1h`
//! for durations, `64KiB`, `8MiB`, `1MB` for byte sizes, and `HOST:PORT`
//! (or `:PORT`) for an address to listen on.
//!
//! Each kind is a small newtype that knows how to read itself from a
//! string ([`FromStr`], which is what `argh` uses for an option's value)
//! and from a TOML value (serde), and how to write itself back in the same
//! notation ([`fmt::Display`], used by `serve --print-config`). That way a
//! value means the same on the command line and in a configuration file.
//!
//! A plain number keeps the unit the option always had, so old command
//! lines go on working: `--tick-ms 500` is 500 milliseconds
//! ([`Millis`]), `--idle-timeout 60` is 60 seconds ([`Seconds`]),
//! `--max-payload 1048576` is that many bytes ([`ByteSize`]).
//!
//! The error messages say what would have been right, with examples,
//! because the person reading them is the one who typed the value. They do
//! not name the option: `argh` puts `Error parsing option '--tick-ms' with
//! value '-1': ` in front, and the TOML reader names the key and the line.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;
use std::time::Duration;

/// The longest duration accepted anywhere (a bit over 31 years): far more
/// than any timeout needs, and small enough to never overflow `Instant`
/// arithmetic.
const MAX_SECONDS: f64 = 1e9;

/// Splits `"500ms"` into `(500.0, "ms")`. The number may have a fraction
/// (`1.5s`) and a space may stand before the unit (`5 s`).
fn split_number(text: &str) -> Option<(f64, &str)> {
    let text = text.trim();
    let end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let number: f64 = text[..end].parse().ok()?;
    Some((number, text[end..].trim_start()))
}

/// Reads a duration; a plain number is in `plain_unit_seconds`.
fn parse_duration(text: &str, plain_unit_seconds: f64) -> Option<Duration> {
    let (number, unit) = split_number(text)?;
    let seconds_per_unit = match unit.to_ascii_lowercase().as_str() {
        "" => plain_unit_seconds,
        "ms" => 0.001,
        "s" | "sec" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return None,
    };
    let seconds = number * seconds_per_unit;
    (seconds.is_finite() && (0.0..MAX_SECONDS).contains(&seconds))
        .then(|| Duration::from_secs_f64(seconds))
}

/// Writes a duration in the largest unit that says it exactly: `2m`,
/// `5s`, `500ms` (or `0`).
fn format_duration(d: Duration, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let ms = d.as_millis();
    if ms == 0 {
        f.write_str("0")
    } else if ms.is_multiple_of(3_600_000) {
        write!(f, "{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        write!(f, "{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        write!(f, "{}s", ms / 1000)
    } else {
        write!(f, "{ms}ms")
    }
}

/// A duration whose plain numbers are milliseconds (`--tick-ms`,
/// `--write-timeout-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NumberOrText", into = "String")]
pub struct Millis(pub Duration);

impl FromStr for Millis {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text, 0.001).map(Millis).ok_or_else(|| {
            format!(
                "expected a duration like 500ms, 5s or 2m, or a number of milliseconds; \
                 got {text:?}"
            )
        })
    }
}

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_duration(self.0, f)
    }
}

/// A duration whose plain numbers are seconds (`--idle-timeout`,
/// `--line-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NumberOrText", into = "String")]
pub struct Seconds(pub Duration);

impl FromStr for Seconds {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        parse_duration(text, 1.0).map(Seconds).ok_or_else(|| {
            format!(
                "expected a duration like 30s, 2m or 500ms, or a number of seconds; got {text:?}"
            )
        })
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        format_duration(self.0, f)
    }
}

/// A number of bytes: plain, or with a unit. `KiB`, `MiB`, `GiB` are
/// powers of 1024; `KB`, `MB`, `GB` powers of 1000 (the letters' case
/// does not matter, and a lone `K`, `M`, `G` means the binary one, as most
/// tools read it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "NumberOrText", into = "String")]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size as a `usize`, for the options that index memory.
    pub fn as_usize(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl FromStr for ByteSize {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let parsed = split_number(text).and_then(|(number, unit)| {
            let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
                "" | "b" => 1.0,
                "k" | "kib" => 1024.0,
                "m" | "mib" => 1024.0 * 1024.0,
                "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
                "kb" => 1e3,
                "mb" => 1e6,
                "gb" => 1e9,
                _ => return None,
            };
            let bytes = (number * multiplier).round();
            // 2^63 bytes is far beyond any memory; it keeps the cast exact.
            (bytes.is_finite() && bytes < 9.2e18).then_some(ByteSize(bytes as u64))
        });
        parsed.ok_or_else(|| format!("expected a size like 4096, 64KiB, 8MiB or 1MB; got {text:?}"))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
        for (size, unit) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{unit}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// Where to listen: `HOST:PORT` with an IP address or a host name
/// (`localhost:7878`), or `:PORT` for `127.0.0.1:PORT`.
///
/// A host name is looked up once, here (that asks the system resolver and
/// sends nothing to the address itself). When it has several addresses
/// the first IPv4 one is taken, so `localhost` is `127.0.0.1`, as people
/// expect; a name with only IPv6 addresses gets its first one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BindAddr(pub SocketAddr);

impl FromStr for BindAddr {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let example = "like 127.0.0.1:7878, 0.0.0.0:7878, localhost:7878 or :7878";
        if let Some(port) = text.strip_prefix(':') {
            let port: u16 = port.parse().map_err(|_| {
                format!("expected a port number (0 to 65535) after ':'; got {text:?}")
            })?;
            return Ok(BindAddr(SocketAddr::from(([127, 0, 0, 1], port))));
        }
        if let Ok(addr) = text.parse() {
            return Ok(BindAddr(addr));
        }
        if !text.contains(':') {
            return Err(format!(
                "expected HOST:PORT, {example} (port 0 picks a free one); got {text:?}"
            ));
        }
        let addrs: Vec<SocketAddr> = text
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve {text:?} ({e}); use an address {example}"))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .map(|&a| BindAddr(a))
            .ok_or_else(|| format!("{text:?} has no address; use one {example}"))
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What a TOML file may hold for a value with units: `60`, `1.5` or
/// `"60s"`. Serde reads this first, then turns it into the newtype.
#[derive(Deserialize)]
#[serde(untagged)]
enum NumberOrText {
    Integer(u64),
    Float(f64),
    Text(String),
}

impl NumberOrText {
    fn parse<T: FromStr<Err = String>>(self) -> Result<T, String> {
        match self {
            NumberOrText::Integer(n) => n.to_string().parse(),
            NumberOrText::Float(x) => x.to_string().parse(),
            NumberOrText::Text(text) => text.parse(),
        }
    }
}

/// Implements the conversions serde needs for one newtype: from what the
/// file holds, and to the text `--print-config` writes.
macro_rules! serde_via_text {
    ($($ty:ty, $from:ty;)*) => {$(
        impl TryFrom<$from> for $ty {
            type Error = String;
            fn try_from(value: $from) -> Result<Self, String> {
                value.parse()
            }
        }
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_string()
            }
        }
    )*};
}

serde_via_text! {
    Millis, NumberOrText;
    Seconds, NumberOrText;
    ByteSize, NumberOrText;
    BindAddr, String;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn durations_take_units_and_plain_numbers_keep_the_old_unit() {
        let millis = |s: &str| s.parse::<Millis>().map(|m| m.0);
        let seconds = |s: &str| s.parse::<Seconds>().map(|m| m.0);
        assert_eq!(millis("500"), Ok(ms(500)));
        assert_eq!(millis("500ms"), Ok(ms(500)));
        assert_eq!(millis("5s"), Ok(ms(5000)));
        assert_eq!(millis("2m"), Ok(ms(120_000)));
        assert_eq!(millis("1h"), Ok(ms(3_600_000)));
        assert_eq!(millis("0"), Ok(ms(0)));
        assert_eq!(seconds("60"), Ok(ms(60_000)));
        assert_eq!(seconds("0.5"), Ok(ms(500)));
        assert_eq!(seconds("1.5s"), Ok(ms(1500)));
        assert_eq!(seconds("250ms"), Ok(ms(250)));
        assert_eq!(seconds("5 S"), Ok(ms(5000)));
    }

    #[test]
    fn bad_durations_say_what_is_expected() {
        for bad in ["-1", "", "ms", "5x", "1e3", "5s5", "99999999999h"] {
            let err = bad.parse::<Millis>().unwrap_err();
            assert!(
                err.starts_with("expected a duration like 500ms, 5s or 2m")
                    && err.ends_with(&format!("got {bad:?}")),
                "{bad:?}: {err}"
            );
            assert!(bad.parse::<Seconds>().is_err(), "{bad:?}");
        }
        assert!(
            "x".parse::<Seconds>()
                .unwrap_err()
                .contains("a number of seconds")
        );
    }

    #[test]
    fn durations_are_written_in_the_largest_exact_unit() {
        for (d, text) in [
            (ms(0), "0"),
            (ms(250), "250ms"),
            (ms(1500), "1500ms"),
            (ms(5000), "5s"),
            (ms(120_000), "2m"),
            (ms(7_200_000), "2h"),
        ] {
            assert_eq!(Millis(d).to_string(), text);
            // What is written reads back as the same duration.
            assert_eq!(text.parse::<Seconds>().unwrap().0, d);
        }
    }

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        let size = |s: &str| s.parse::<ByteSize>().map(|b| b.0);
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("4096B"), Ok(4096));
        assert_eq!(size("64KiB"), Ok(64 * 1024));
        assert_eq!(size("8MiB"), Ok(8 << 20));
        assert_eq!(size("8mib"), Ok(8 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("1MB"), Ok(1_000_000));
        assert_eq!(size("2kb"), Ok(2000));
        assert_eq!(size("1.5KiB"), Ok(1536));
        for bad in ["-1", "lots", "8XB", "", "1e30"] {
            let err = size(bad).unwrap_err();
            assert!(err.contains("like 4096, 64KiB, 8MiB"), "{bad:?}: {err}");
        }
        assert_eq!(ByteSize(8 << 20).to_string(), "8MiB");
        assert_eq!(ByteSize(4096).to_string(), "4KiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
    }

    #[test]
    fn bind_addresses_take_names_and_a_bare_port() {
        let bind = |s: &str| s.parse::<BindAddr>().map(|b| b.0.to_string());
        assert_eq!(bind("127.0.0.1:7878").as_deref(), Ok("127.0.0.1:7878"));
        assert_eq!(bind("[::1]:7878").as_deref(), Ok("[::1]:7878"));
        assert_eq!(bind(":7879").as_deref(), Ok("127.0.0.1:7879"));
        assert_eq!(bind("localhost:7879").as_deref(), Ok("127.0.0.1:7879"));
        let err = bind("nonsense").unwrap_err();
        assert!(err.contains("like 127.0.0.1:7878"), "{err}");
        assert!(bind(":http").unwrap_err().contains("port number"));
        assert!(bind(":70000").is_err());
    }

    #[test]
    fn toml_values_may_be_numbers_or_text() {
        #[derive(Deserialize)]
        struct File {
            a: Seconds,
            b: Seconds,
            c: ByteSize,
            d: Millis,
        }
        let file: File = toml::from_str("a = 60\nb = \"2m\"\nc = \"8MiB\"\nd = 1.5").unwrap();
        assert_eq!(file.a.0, ms(60_000));
        assert_eq!(file.b.0, ms(120_000));
        assert_eq!(file.c.0, 8 << 20);
        assert_eq!(file.d.0, Duration::from_micros(1500));
    }
}
