//! Consistent hashing: Envoy's ring hash and Maglev over the weighted endpoints of one
//! priority level. Both keep a key on its endpoint while the endpoint stays, and move only
//! about 1/N of the keys when an endpoint joins or leaves.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;

/// Envoy's largest ring.
const MAX_RING: u64 = 8 * 1024 * 1024;

/// A 64-bit hash, the same in every process of one build (SipHash with fixed keys), so that
/// replicas of the gateway send a key to the same endpoint.
pub fn hash_bytes(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

fn hash_point(address: SocketAddr, i: u64, salt: u8) -> u64 {
    let mut h = DefaultHasher::new();
    address.hash(&mut h);
    i.hash(&mut h);
    salt.hash(&mut h);
    h.finish()
}

/// A sorted ring of (point, host index).
///
/// Each host of the heaviest weight gets `minimum` points, lighter ones proportionally fewer
/// (all scaled down if the ring would pass Envoy's 8M). Unlike Envoy, which shares
/// `minimum` points among all hosts, a host's points do not depend on how many hosts there
/// are, so a host joining or leaving moves only the keys it takes or had: about 1/N.
pub fn ring(addresses: &[SocketAddr], weights: &[u32], minimum: u64) -> Vec<(u64, u32)> {
    let heaviest = u64::from(weights.iter().copied().max().unwrap_or(1).max(1));
    let minimum = minimum.clamp(1, MAX_RING);
    let wanted: u64 = weights
        .iter()
        .map(|w| (minimum * u64::from(*w)).div_ceil(heaviest))
        .sum();
    // Scaled so that the whole ring stays within MAX_RING.
    let per_host = if wanted > MAX_RING {
        minimum * MAX_RING / wanted
    } else {
        minimum
    }
    .max(1);
    let mut points = Vec::new();
    for (i, (addr, w)) in addresses.iter().zip(weights).enumerate() {
        let n = (per_host * u64::from(*w)).div_ceil(heaviest).max(1);
        let Ok(index) = u32::try_from(i) else { break };
        points.extend((0..n).map(|k| (hash_point(*addr, k, 0), index)));
    }
    points.sort_unstable();
    points
}

/// The host index for `key` on `ring`: the first point at or after the key, wrapping.
pub fn ring_lookup(ring: &[(u64, u32)], key: u64) -> Option<u32> {
    let i = ring.partition_point(|(p, _)| *p < key);
    ring.get(i).or_else(|| ring.first()).map(|(_, h)| *h)
}

/// A Maglev lookup table of `size` entries (a prime, 65537 by default), each a host index,
/// filled in proportion to the weights.
pub fn maglev(addresses: &[SocketAddr], weights: &[u32], size: u64) -> Vec<u32> {
    let m = usize::try_from(size.max(1)).unwrap_or(65537);
    let n = addresses.len();
    if n == 0 {
        return Vec::new();
    }
    let perms: Vec<(u64, u64)> = addresses
        .iter()
        .map(|a| {
            let offset = hash_point(*a, 0, 1) % size.max(1);
            let skip = hash_point(*a, 0, 2) % size.saturating_sub(1).max(1) + 1;
            (offset, skip)
        })
        .collect();
    let max_w = u64::from(weights.iter().copied().max().unwrap_or(1).max(1));
    let mut next = vec![0u64; n];
    let mut table: Vec<Option<u32>> = vec![None; m];
    let mut filled = 0usize;
    let mut round: u64 = 0;
    while filled < m {
        round += 1;
        for i in 0..n {
            // A host takes a slot in a round in proportion to its weight.
            let w = u64::from(weights.get(i).copied().unwrap_or(0));
            let (Some(&(offset, skip)), Some(tries)) = (perms.get(i), next.get_mut(i)) else {
                continue;
            };
            if w == 0 || round * w / max_w == (round - 1) * w / max_w {
                continue;
            }
            loop {
                let slot = usize::try_from((offset + *tries * skip) % size.max(1)).unwrap_or(0);
                *tries += 1;
                if let Some(entry) = table.get_mut(slot)
                    && entry.is_none()
                {
                    *entry = u32::try_from(i).ok();
                    filled += 1;
                    break;
                }
                if *tries > size.saturating_mul(2) {
                    break;
                }
            }
            if filled >= m {
                break;
            }
        }
        if weights.iter().all(|w| *w == 0) {
            break;
        }
    }
    table.into_iter().map(|e| e.unwrap_or(0)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(n: u16) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([127, 0, 0, 1], 9000 + i)))
            .collect()
    }

    fn moved(before: &dyn Fn(u64) -> SocketAddr, after: &dyn Fn(u64) -> SocketAddr) -> f64 {
        let keys = 20_000u64;
        let moved = (0..keys)
            .filter(|k| before(hash_bytes(&k.to_le_bytes())) != after(hash_bytes(&k.to_le_bytes())))
            .count();
        moved as f64 / keys as f64
    }

    #[test]
    fn ring_moves_about_one_nth_of_keys_when_a_host_joins() {
        let four = addrs(4);
        let five = addrs(5);
        let r4 = ring(&four, &[1; 4], 1024);
        let r5 = ring(&five, &[1; 5], 1024);
        let f = moved(&|k| four[ring_lookup(&r4, k).unwrap() as usize], &|k| {
            five[ring_lookup(&r5, k).unwrap() as usize]
        });
        // Ideal 1/5 = 0.20; ring variance with 1024 points allows some slack.
        assert!((0.12..0.30).contains(&f), "{f}");
    }

    #[test]
    fn maglev_moves_about_one_nth_of_keys_and_spreads_evenly() {
        let four = addrs(4);
        let five = addrs(5);
        let t4 = maglev(&four, &[1; 4], 65537);
        let t5 = maglev(&five, &[1; 5], 65537);
        let f = moved(&|k| four[t4[(k % 65537) as usize] as usize], &|k| {
            five[t5[(k % 65537) as usize] as usize]
        });
        assert!((0.15..0.30).contains(&f), "{f}");
        let mut counts = [0usize; 5];
        for h in &t5 {
            counts[*h as usize] += 1;
        }
        for c in counts {
            assert!((12_000..14_300).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn weights_shape_the_share() {
        let two = addrs(2);
        let t = maglev(&two, &[3, 1], 65537);
        let first = t.iter().filter(|h| **h == 0).count() as f64 / t.len() as f64;
        assert!((0.70..0.80).contains(&first), "{first}");
        let r = ring(&two, &[3, 1], 4096);
        let first = r.iter().filter(|(_, h)| *h == 0).count() as f64 / r.len() as f64;
        assert!((0.70..0.80).contains(&first), "{first}");
    }
}
