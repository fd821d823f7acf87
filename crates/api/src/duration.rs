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

/// A Gateway API `Duration` (GEP-2257): one to four `<number><unit>` parts, numbers of at most
/// five digits, units `h`, `m`, `s` and `ms`, such as `1h30m`, `500ms` or `0s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GatewayDuration(pub Duration);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {0:?}: expected one to four parts of at most five digits with a unit (h, m, s, ms), such as 1h30m or 500ms"
)]
pub struct GatewayDurationError(pub String);

impl GatewayDuration {
    pub fn parse(text: &str) -> Result<Self, GatewayDurationError> {
        let err = || GatewayDurationError(text.to_string());
        let mut rest = text;
        let mut total = Duration::ZERO;
        let mut parts = 0;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(err)?;
            if digits == 0 || digits > 5 {
                return Err(err());
            }
            let (num, tail) = rest.split_at(digits);
            let n: u64 = num.parse().map_err(|_| err())?;
            let (unit, after) = if let Some(after) = tail.strip_prefix("ms") {
                (Duration::from_millis(n), after)
            } else if let Some(after) = tail.strip_prefix('h') {
                (Duration::from_secs(n * 3600), after)
            } else if let Some(after) = tail.strip_prefix('m') {
                (Duration::from_secs(n * 60), after)
            } else if let Some(after) = tail.strip_prefix('s') {
                (Duration::from_secs(n), after)
            } else {
                return Err(err());
            };
            total += unit;
            parts += 1;
            rest = after;
        }
        if parts == 0 || parts > 4 {
            return Err(err());
        }
        Ok(GatewayDuration(total))
    }
}

impl fmt::Display for GatewayDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&ProtoDuration(self.0), f)
    }
}

impl<'de> Deserialize<'de> for GatewayDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        GatewayDuration::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for GatewayDuration {
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

    #[test]
    fn parses_gateway_api_durations() {
        let cases = [
            ("1h", Some(3_600_000)),
            ("1h30m", Some(5_400_000)),
            ("500ms", Some(500)),
            ("1s500ms", Some(1500)),
            ("0s", Some(0)),
            ("10m5s", Some(605_000)),
            ("", None),
            ("1", None),
            ("1.5s", None),
            ("123456s", None),
            ("1h1h1h1h1h", None),
            ("1d", None),
            ("s", None),
            ("-1s", None),
        ];
        for (text, want) in cases {
            let got = GatewayDuration::parse(text)
                .ok()
                .map(|d| d.0.as_millis() as u64);
            assert_eq!(got, want, "{text:?}");
        }
    }
}
