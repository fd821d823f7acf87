//! Protobuf `Duration` strings as Istio writes them: `1h`, `1m`, `1s`, `250ms`, `1.5s`, `10us`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration read from a protobuf-style string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtoDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: expected a number with a unit (h, m, s, ms, us, ns), such as 1.5s"
)]
pub struct DurationError(pub String);

impl ProtoDuration {
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let err = || DurationError(text.to_string());
        let t = text.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(err)?;
        let (num, unit) = t.split_at(split);
        if num.is_empty() {
            return Err(err());
        }
        let value: f64 = num.parse().map_err(|_| err())?;
        let secs_per_unit = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return Err(err()),
        };
        let secs = value * secs_per_unit;
        if !secs.is_finite() || secs > 315_576_000_000.0 {
            return Err(err());
        }
        Ok(ProtoDuration(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for ProtoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = self.0;
        if d.subsec_nanos() == 0 {
            write!(f, "{}s", d.as_secs())
        } else if d.as_nanos().is_multiple_of(1_000_000) {
            write!(f, "{}ms", d.as_millis())
        } else {
            write!(f, "{}us", d.as_micros())
        }
    }
}

impl<'de> Deserialize<'de> for ProtoDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        ProtoDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for ProtoDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_istio_durations() {
        let cases = [
            ("1h", Some(3_600_000)),
            ("1m", Some(60_000)),
            ("1s", Some(1000)),
            ("0.5s", Some(500)),
            ("1.5s", Some(1500)),
            ("250ms", Some(250)),
            ("0s", Some(0)),
            ("", None),
            ("s", None),
            ("10", None),
            ("10 parsecs", None),
            ("-1s", None),
            ("1e400s", None),
        ];
        for (text, want) in cases {
            let got = ProtoDuration::parse(text)
                .ok()
                .map(|d| d.0.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }
}
