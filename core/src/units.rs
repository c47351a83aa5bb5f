//! Parsing of the human units users write in flags and config files: durations such as `100ms`,
//! `10s`, `5m`, `1h30m` and sizes such as `512MiB`. They live in the core because they are pure
//! and because the CLI, the config file and the policy's serde support must all agree on them.

use std::time::Duration;

/// Why a duration or size could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnitError {
    /// Nothing was given.
    #[error("empty value; expected {expected}")]
    Empty {
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// A number was expected at this position.
    #[error("`{input}`: expected a number before `{rest}`; expected {expected}")]
    MissingNumber {
        /// The whole input.
        input: String,
        /// The part that could not be read.
        rest: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The unit is not one we know.
    #[error("`{input}`: unknown unit `{unit}`; expected {expected}")]
    UnknownUnit {
        /// The whole input.
        input: String,
        /// The unit that was not recognised.
        unit: String,
        /// What a valid value looks like.
        expected: &'static str,
    },
    /// The value does not fit.
    #[error("`{input}` is too large")]
    Overflow {
        /// The whole input.
        input: String,
    },
}

const DURATION_HELP: &str = "a duration such as 100ms, 10s, 5m or 1h30m";
const SIZE_HELP: &str = "a size such as 4096, 64KiB, 512MiB or 2GB";

/// Splits `input` into (number, unit) pairs, e.g. `1h30m` into (1, "h"), (30, "m").
fn pairs<'a>(input: &'a str, expected: &'static str) -> Result<Vec<(f64, &'a str)>, UnitError> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(UnitError::Empty { expected });
    }
    let mut out = Vec::new();
    let mut rest = trimmed;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
            .unwrap_or(rest.len());
        let number: f64 =
            rest[..num_len]
                .replace('_', "")
                .parse()
                .map_err(|_| UnitError::MissingNumber {
                    input: input.to_string(),
                    rest: rest.to_string(),
                    expected,
                })?;
        rest = rest[num_len..].trim_start();
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(rest.len());
        out.push((number, &rest[..unit_len]));
        rest = rest[unit_len..].trim_start();
    }
    Ok(out)
}

/// Reads a duration: one or more `<number><unit>` parts with units `ns`, `us`, `ms`, `s`, `m`,
/// `h`, `d` (a bare `0` is allowed). Fractions are accepted (`1.5s`).
pub fn parse_duration(input: &str) -> Result<Duration, UnitError> {
    let mut total = 0f64;
    for (number, unit) in pairs(input, DURATION_HELP)? {
        let seconds_per_unit = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" => 86400.0,
            "" if number == 0.0 => 0.0,
            _ => {
                return Err(UnitError::UnknownUnit {
                    input: input.to_string(),
                    unit: if unit.is_empty() { "(none)" } else { unit }.to_string(),
                    expected: DURATION_HELP,
                })
            }
        };
        total += number * seconds_per_unit;
    }
    Duration::try_from_secs_f64(total).map_err(|_| UnitError::Overflow {
        input: input.to_string(),
    })
}

/// Reads a size in bytes: a number with an optional unit `B`, `K`/`KB` (1000), `KiB` (1024),
/// `M`/`MB`, `MiB`, `G`/`GB`, `GiB`, `T`/`TB`, `TiB`.
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    let parts = pairs(input, SIZE_HELP)?;
    let [(number, unit)] = parts.as_slice() else {
        return Err(UnitError::UnknownUnit {
            input: input.to_string(),
            unit: parts.get(1).map_or("", |p| p.1).to_string(),
            expected: SIZE_HELP,
        });
    };
    let multiplier: f64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024.0f64.powi(4),
        _ => {
            return Err(UnitError::UnknownUnit {
                input: input.to_string(),
                unit: unit.to_string(),
                expected: SIZE_HELP,
            })
        }
    };
    let bytes = number * multiplier;
    if bytes >= u64::MAX as f64 {
        return Err(UnitError::Overflow {
            input: input.to_string(),
        });
    }
    Ok(bytes.round() as u64)
}

/// Formats a duration the way [`parse_duration`] reads it back (used in docs and errors).
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.subsec_nanos() % 1_000_000 != 0 {
        format!("{}ns", d.as_nanos())
    } else if ms % 1000 != 0 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1s.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert!(matches!(
            parse_duration("10"),
            Err(UnitError::UnknownUnit { .. })
        ));
        assert!(matches!(
            parse_duration("ten"),
            Err(UnitError::MissingNumber { .. })
        ));
        assert!(matches!(parse_duration(""), Err(UnitError::Empty { .. })));
        assert!(matches!(
            parse_duration("5parsecs"),
            Err(UnitError::UnknownUnit { .. })
        ));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("100MB"), Ok(100_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert!(parse_size("12 apples").is_err());
        assert!(parse_size("-1").is_err());
    }

    /// Every unit a duration may be written in, with its value: one of each, so a unit
    /// that stops being read (or is read as another) is noticed.
    #[test]
    fn every_duration_unit() {
        let ns = |n: u64| Ok(Duration::from_nanos(n));
        for (text, want) in [
            ("7ns", ns(7)),
            ("7us", ns(7_000)),
            ("7µs", ns(7_000)),
            ("7ms", ns(7_000_000)),
            ("7s", ns(7_000_000_000)),
            ("7sec", ns(7_000_000_000)),
            ("7secs", ns(7_000_000_000)),
            ("7m", ns(420_000_000_000)),
            ("7min", ns(420_000_000_000)),
            ("7mins", ns(420_000_000_000)),
            ("7h", ns(25_200_000_000_000)),
            ("7hr", ns(25_200_000_000_000)),
            ("7hrs", ns(25_200_000_000_000)),
            ("7d", ns(604_800_000_000_000)),
        ] {
            assert_eq!(parse_duration(text), want, "{text}");
        }
    }

    /// Every unit a size may be written in, in either case: decimal and binary multiples
    /// differ, so each one is checked against its own value.
    #[test]
    fn every_size_unit() {
        for (units, factor) in [
            (&["", "b"][..], 1u64),
            (&["k", "kb"], 1_000),
            (&["kib"], 1 << 10),
            (&["m", "mb"], 1_000_000),
            (&["mib"], 1 << 20),
            (&["g", "gb"], 1_000_000_000),
            (&["gib"], 1 << 30),
            (&["t", "tb"], 1_000_000_000_000),
            (&["tib"], 1 << 40),
        ] {
            for unit in units {
                for text in [format!("3{unit}"), format!("3{}", unit.to_uppercase())] {
                    assert_eq!(parse_size(&text), Ok(3 * factor), "{text}");
                }
            }
        }
    }

    /// The shortest exact spelling: whole seconds in `s`, whole milliseconds in `ms`, else
    /// nanoseconds.
    #[test]
    fn formats_in_the_largest_exact_unit() {
        assert_eq!(format_duration(Duration::from_secs(90)), "90s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_millis(2001)), "2001ms");
        assert_eq!(
            format_duration(Duration::from_nanos(1_000_500)),
            "1000500ns"
        );
        assert_eq!(
            format_duration(Duration::from_nanos(2_000_000_001)),
            "2000000001ns"
        );
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_millis(100),
            Duration::from_secs(7),
            Duration::from_nanos(5),
        ] {
            assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }
    }
}

/// Serde support for durations written in human units (`"100ms"`), used by the policies.
#[cfg(feature = "serde")]
pub mod serde_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes the duration as `parse_duration` reads it.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Reads `"100ms"`, `"10s"`, ... and reports the unit error as the config error.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_duration(&s).map_err(serde::de::Error::custom)
    }
}
