//! Choosing an endpoint: priority levels by locality with Envoy's overprovisioning factor,
//! the panic threshold, and the DestinationRule's balancer within a level. The choice works
//! on a [`HostSet`] rebuilt only when endpoints or their health change; a request reads it
//! with one atomic load.

pub mod hash;
pub mod health;
pub mod health_check;
pub mod limits;
pub mod outlier;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use isthmus_config::policy::{ClusterPolicy, LoadBalancer, Warmup};

use crate::clusters::Endpoint;

/// Envoy's overprovisioning factor: a level at 72% health still takes all the traffic.
const OVERPROVISIONING: u64 = 140;
/// Entries of a weighted round-robin schedule at most.
const MAX_SCHEDULE: u64 = 4096;
/// How often weights of warming endpoints are recomputed.
const WARMUP_STEP_MS: u64 = 250;

/// Envoy's slow-start weight: `weight · max(min%, (age / duration)^(1 / aggression))`, at least 1.
fn warmed(weight: u32, age_ms: u64, w: &Warmup) -> u32 {
    let progress = (age_ms as f64 / w.duration_ms.max(1) as f64).clamp(0.0, 1.0);
    let factor = progress
        .powf(1.0 / w.aggression)
        .max(w.min_percent / 100.0)
        .min(1.0);
    ((f64::from(weight) * factor).round() as u32).max(1)
}

/// The endpoints that can take traffic, by priority level, with each level's share.
pub struct HostSet {
    /// The health epoch of the cluster it was built at.
    pub epoch: u64,
    /// The earliest end of an ejection (`now_ms`); the set is rebuilt then.
    pub expires: u64,
    levels: Vec<Level>,
    /// Cumulative percentages: level i takes a draw below `loads[i]`.
    loads: Vec<u32>,
}

struct Level {
    hosts: Vec<Arc<Endpoint>>,
    /// Cumulative weights, for weighted random draws.
    cumulative: Vec<u64>,
    /// Smooth weighted round-robin order (host indexes).
    schedule: Vec<u32>,
    ring: Vec<(u64, u32)>,
    maglev: Vec<u32>,
}

impl HostSet {
    pub fn empty() -> Self {
        HostSet {
            epoch: 0,
            expires: u64::MAX,
            levels: Vec::new(),
            loads: Vec::new(),
        }
    }

    /// The set for `endpoints` at time `now` (`health::now_ms`).
    pub fn build(
        endpoints: &[Arc<Endpoint>],
        policy: &ClusterPolicy,
        epoch: u64,
        now: u64,
    ) -> Self {
        let total = endpoints.len();
        let available = endpoints
            .iter()
            .filter(|e| e.health.is_available(now))
            .count();
        // Panic: too few available endpoints, so health is ignored (Envoy's panic threshold).
        let panic = total > 0
            && (available as u64) * 100 < u64::from(policy.panic_threshold) * total as u64;
        let mut expires = endpoints
            .iter()
            .map(|e| e.health.ejected_until.load(Ordering::Relaxed))
            .filter(|t| *t > now)
            .min()
            .unwrap_or(u64::MAX);
        let warmup = policy.warmup.as_ref();
        if let Some(w) = warmup
            && endpoints.iter().any(|e| e.warming(now, w.duration_ms))
        {
            // Weights of warming endpoints grow: rebuild a few times a second meanwhile.
            expires = expires.min(now + WARMUP_STEP_MS);
        }
        let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority()).collect();
        priorities.sort_unstable();
        priorities.dedup();
        let mut levels = Vec::new();
        let mut health = Vec::new();
        for p in priorities {
            let members: Vec<&Arc<Endpoint>> =
                endpoints.iter().filter(|e| e.priority() == p).collect();
            let usable: Vec<Arc<Endpoint>> = members
                .iter()
                .filter(|e| panic || e.health.is_available(now))
                .filter(|e| e.weight() > 0)
                .map(|e| (*e).clone())
                .collect();
            if usable.is_empty() {
                continue;
            }
            health.push((OVERPROVISIONING * usable.len() as u64 / members.len() as u64).min(100));
            let weights = usable
                .iter()
                .map(|e| match warmup {
                    Some(w) if e.warming(now, w.duration_ms) => warmed(e.weight(), e.age(now), w),
                    _ => e.weight(),
                })
                .collect();
            levels.push(Level::new(usable, weights, &policy.load_balancer));
        }
        HostSet {
            epoch,
            expires,
            loads: loads(&health),
            levels,
        }
    }

    /// An endpoint for a request: a level by its share, then the balancer. `key` is the
    /// consistent-hash key, `draw` a random number. Endpoints in `avoid` (tried already) are
    /// skipped while others remain.
    pub fn pick(
        &self,
        lb: &LoadBalancer,
        key: Option<u64>,
        counter: usize,
        avoid: &[std::net::SocketAddr],
    ) -> Option<Arc<Endpoint>> {
        let level = if self.levels.len() == 1 {
            self.levels.first()?
        } else {
            let draw = fastrand::u32(0..100);
            let i = self.loads.iter().position(|l| draw < *l).unwrap_or(0);
            self.levels.get(i).or(self.levels.first())?
        };
        let chosen = level.pick(lb, key, counter)?;
        if !avoid.contains(&chosen.address) {
            return Some(chosen);
        }
        let n = level.hosts.len();
        let start = counter % n.max(1);
        (0..n)
            .filter_map(|k| level.hosts.get((start + k) % n))
            .find(|h| !avoid.contains(&h.address))
            .cloned()
            .or(Some(chosen))
    }
}

/// Envoy's priority loads: each level takes its health (overprovisioned, capped at 100) of
/// what the levels before it left; if all together are below 100, they are scaled up.
fn loads(health: &[u64]) -> Vec<u32> {
    let sum: u64 = health.iter().sum();
    if sum == 0 {
        return health.iter().map(|_| 100).collect();
    }
    let mut remaining = 100u64;
    let mut cumulative = 0u64;
    health
        .iter()
        .map(|h| {
            let share = if sum < 100 {
                h * 100 / sum
            } else {
                (*h).min(remaining)
            };
            let share = share.min(remaining);
            remaining -= share;
            cumulative += share;
            u32::try_from(cumulative).unwrap_or(100)
        })
        .collect()
}

impl Level {
    fn new(hosts: Vec<Arc<Endpoint>>, weights: Vec<u32>, lb: &LoadBalancer) -> Self {
        let mut acc = 0u64;
        let cumulative = weights
            .iter()
            .map(|w| {
                acc += u64::from(*w);
                acc
            })
            .collect();
        let addresses: Vec<_> = hosts.iter().map(|h| h.address).collect();
        let (ring, maglev) = match lb {
            LoadBalancer::RingHash {
                minimum_ring_size, ..
            } => (
                hash::ring(&addresses, &weights, *minimum_ring_size),
                Vec::new(),
            ),
            LoadBalancer::Maglev { table_size, .. } => {
                (Vec::new(), hash::maglev(&addresses, &weights, *table_size))
            }
            _ => (Vec::new(), Vec::new()),
        };
        Level {
            schedule: schedule(&weights),
            hosts,
            cumulative,
            ring,
            maglev,
        }
    }

    fn pick(&self, lb: &LoadBalancer, key: Option<u64>, counter: usize) -> Option<Arc<Endpoint>> {
        let index = match (lb, key) {
            (LoadBalancer::RoundRobin, _) => {
                let n = self.schedule.len().max(1);
                self.schedule.get(counter % n).map(|i| *i as usize)
            }
            (LoadBalancer::RingHash { .. }, Some(k)) => {
                hash::ring_lookup(&self.ring, k).map(|i| i as usize)
            }
            (LoadBalancer::Maglev { .. }, Some(k)) if !self.maglev.is_empty() => {
                let i = usize::try_from(k % self.maglev.len() as u64).unwrap_or(0);
                self.maglev.get(i).map(|i| *i as usize)
            }
            (LoadBalancer::LeastRequest, _) => self.least_request(),
            // Random, passthrough, and hashing without a key (Envoy picks at random then).
            _ => self.weighted_random(),
        };
        index.and_then(|i| self.hosts.get(i)).cloned()
    }

    fn weighted_random(&self) -> Option<usize> {
        let total = *self.cumulative.last()?;
        if total == 0 {
            return None;
        }
        let draw = fastrand::u64(0..total);
        Some(self.cumulative.partition_point(|c| *c <= draw))
    }

    /// Power of two choices: of two endpoints drawn by weight, the one with fewer requests
    /// in flight (Envoy's LEAST_REQUEST with `choice_count` 2).
    fn least_request(&self) -> Option<usize> {
        let a = self.weighted_random()?;
        if self.hosts.len() < 2 {
            return Some(a);
        }
        let b = self.weighted_random()?;
        let active = |i: usize| {
            self.hosts
                .get(i)
                .map_or(u32::MAX, |h| h.health.active.load(Ordering::Relaxed))
        };
        Some(if active(b) < active(a) { b } else { a })
    }
}

/// Smooth weighted round robin (nginx's): each host appears in proportion to its weight,
/// spread out. Weights are scaled down if the schedule would be long.
fn schedule(weights: &[u32]) -> Vec<u32> {
    let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return Vec::new();
    }
    let g = weights.iter().fold(0u64, |g, w| gcd(g, u64::from(*w)));
    let mut scaled: Vec<u64> = weights.iter().map(|w| u64::from(*w) / g.max(1)).collect();
    if scaled.iter().sum::<u64>() > MAX_SCHEDULE {
        scaled = weights
            .iter()
            .map(|w| (u64::from(*w) * MAX_SCHEDULE / total).max(u64::from(*w > 0)))
            .collect();
    }
    let total = i64::try_from(scaled.iter().sum::<u64>()).unwrap_or(i64::MAX);
    let mut current = vec![0i64; scaled.len()];
    let mut out = Vec::new();
    for _ in 0..total {
        for (c, w) in current.iter_mut().zip(&scaled) {
            *c += i64::try_from(*w).unwrap_or(0);
        }
        let best = current
            .iter()
            .enumerate()
            .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
            .map_or(0, |(i, _)| i);
        if let Some(c) = current.get_mut(best) {
            *c -= total;
        }
        out.push(u32::try_from(best).unwrap_or(0));
    }
    out
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_cascade_with_overprovisioning() {
        // Healthy local level takes everything.
        assert_eq!(loads(&[100, 100]), vec![100, 100]);
        // 3 of 5 healthy: 84% stays local, 16% spills to the next level.
        assert_eq!(loads(&[84, 100]), vec![84, 100]);
        // Both partly down: scaled up to 100 in total.
        assert_eq!(loads(&[28, 28]), vec![50, 100]);
    }

    #[test]
    fn warmup_weights_grow_from_the_minimum() {
        let linear = Warmup {
            duration_ms: 10_000,
            min_percent: 10.0,
            aggression: 1.0,
        };
        assert_eq!(warmed(100, 0, &linear), 10);
        assert_eq!(warmed(100, 5_000, &linear), 50);
        assert_eq!(warmed(100, 20_000, &linear), 100);
        let eager = Warmup {
            aggression: 2.0,
            ..linear.clone()
        };
        // Square root: faster at first.
        assert_eq!(warmed(100, 2_500, &eager), 50);
        assert_eq!(warmed(1, 0, &linear), 1);
    }

    #[test]
    fn schedules_are_spread_and_weighted() {
        assert_eq!(schedule(&[1, 1, 1]), vec![0, 1, 2]);
        let s = schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|i| **i == 0).count(), 5);
        // nginx's smooth order: the heavy host is not sent 5 in a row.
        assert_eq!(s, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(schedule(&[100, 200]).len(), 3);
        assert!(schedule(&[10_000, 1]).len() as u64 <= MAX_SCHEDULE + 1);
    }
}
