//! Envoy's response flags: why a request or connection ended the way it did, as a small set
//! that metrics can key on and logs print in Envoy's order (`UF,URX`, `DI,FI`).

use std::fmt;

/// A set of Envoy response flags. Printed as Envoy prints `%RESPONSE_FLAGS%`: the short names
/// joined by commas in Envoy's own order, or `-` when empty.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ResponseFlags(u32);

/// Envoy's flags in the order `ResponseFlagUtils::toShortString` prints them.
const NAMES: [&str; 30] = [
    "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE", "DC",
    "URX", "SI", "IH", "DPE", "UMSDR", "RFCF", "NFCF", "DT", "UPE", "NC", "OM", "DF", "DO", "DR",
    "UDO",
];

const fn bit(index: u32) -> ResponseFlags {
    ResponseFlags(1 << index)
}

impl ResponseFlags {
    pub const NONE: ResponseFlags = ResponseFlags(0);
    /// No healthy upstream: the cluster has no endpoint.
    pub const UH: ResponseFlags = bit(1);
    /// Upstream request timeout.
    pub const UT: ResponseFlags = bit(2);
    /// Upstream remote reset (an HTTP/2 upstream reset or refused the stream).
    pub const UR: ResponseFlags = bit(4);
    /// Upstream connection failure.
    pub const UF: ResponseFlags = bit(5);
    /// Upstream connection termination (before or during the response).
    pub const UC: ResponseFlags = bit(6);
    /// Upstream overflow (circuit breaker).
    pub const UO: ResponseFlags = bit(7);
    /// No route found.
    pub const NR: ResponseFlags = bit(8);
    /// Delay injected by a fault.
    pub const DI: ResponseFlags = bit(9);
    /// Abort injected by a fault.
    pub const FI: ResponseFlags = bit(10);
    /// The downstream connection ended before the response did.
    pub const DC: ResponseFlags = bit(14);
    /// Upstream retry limit exceeded.
    pub const URX: ResponseFlags = bit(15);
    /// Downstream protocol error (a broken request body).
    pub const DPE: ResponseFlags = bit(18);
    /// Upstream protocol error.
    pub const UPE: ResponseFlags = bit(23);
    /// No cluster found for the route's destination.
    pub const NC: ResponseFlags = bit(24);
    /// DNS resolution failed (dynamic forward proxy).
    pub const DF: ResponseFlags = bit(26);

    pub const fn union(self, other: ResponseFlags) -> ResponseFlags {
        ResponseFlags(self.0 | other.0)
    }

    pub const fn contains(self, other: ResponseFlags) -> bool {
        self.0 & other.0 == other.0
    }

    /// The set as a bit mask (for hashing).
    pub const fn bits(self) -> u32 {
        self.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The flags' short names, in Envoy's order.
    pub fn names(self) -> impl Iterator<Item = &'static str> {
        NAMES
            .iter()
            .enumerate()
            .filter(move |(i, _)| self.0 & (1 << i) != 0)
            .map(|(_, n)| *n)
    }
}

impl std::ops::BitOr for ResponseFlags {
    type Output = ResponseFlags;

    fn bitor(self, rhs: ResponseFlags) -> ResponseFlags {
        self.union(rhs)
    }
}

impl std::ops::BitOrAssign for ResponseFlags {
    fn bitor_assign(&mut self, rhs: ResponseFlags) {
        *self = self.union(rhs);
    }
}

impl fmt::Display for ResponseFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("-");
        }
        for (i, name) in self.names().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_in_envoys_order() {
        let cases = [
            (ResponseFlags::NONE, "-"),
            (ResponseFlags::NR, "NR"),
            (ResponseFlags::URX | ResponseFlags::UF, "UF,URX"),
            (ResponseFlags::FI | ResponseFlags::DI, "DI,FI"),
            (ResponseFlags::UT | ResponseFlags::URX, "UT,URX"),
            (ResponseFlags::NC, "NC"),
            (ResponseFlags::UPE, "UPE"),
            (ResponseFlags::UO, "UO"),
        ];
        for (flags, want) in cases {
            assert_eq!(flags.to_string(), want);
        }
        assert!((ResponseFlags::UF | ResponseFlags::URX).contains(ResponseFlags::URX));
        assert!(!ResponseFlags::UF.contains(ResponseFlags::URX));
    }
}
