//! The health of one endpoint as the balancer sees it: outlier-detection ejection, active
//! health-check state and requests in flight. All atomics: requests update it without locks.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

/// Milliseconds on a process-wide monotonic clock.
pub fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
pub struct EndpointHealth {
    /// Requests in flight (LEAST_REQUEST, `/clusters`).
    pub active: AtomicU32,
    pub consecutive_5xx: AtomicU32,
    pub consecutive_gateway: AtomicU32,
    pub consecutive_local: AtomicU32,
    /// Ejected until this time (`now_ms`); 0 when not ejected.
    pub ejected_until: AtomicU64,
    /// How many times it was ejected, decayed while it stays healthy (the multiplier of the
    /// base ejection time).
    pub ejections: AtomicU32,
    /// When the last ejection ended, for the decay.
    pub returned_at: AtomicU64,
    /// Active health checking says it is healthy. Starts false when checks are configured:
    /// an endpoint takes traffic once a first check passed, as in Envoy.
    pub checked_healthy: AtomicBool,
}

impl EndpointHealth {
    pub fn new(health_checked: bool) -> Self {
        EndpointHealth {
            active: AtomicU32::new(0),
            consecutive_5xx: AtomicU32::new(0),
            consecutive_gateway: AtomicU32::new(0),
            consecutive_local: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            returned_at: AtomicU64::new(0),
            checked_healthy: AtomicBool::new(!health_checked),
        }
    }

    pub fn is_ejected(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) > now
    }

    pub fn is_available(&self, now: u64) -> bool {
        !self.is_ejected(now) && self.checked_healthy.load(Ordering::Relaxed)
    }

    /// Ejects for `base · multiplier` (at most 300 s or the base, as Envoy), the multiplier
    /// having decayed by one per `interval` spent healthy since the last ejection ended.
    pub fn eject(&self, now: u64, base: Duration, interval: Duration) -> u64 {
        let returned = self.returned_at.load(Ordering::Relaxed);
        let interval_ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let decay = now.saturating_sub(returned) / interval_ms;
        let previous = u64::from(self.ejections.load(Ordering::Relaxed)).saturating_sub(decay);
        let multiplier = previous + 1;
        self.ejections.store(
            u32::try_from(multiplier).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        let base_ms = u64::try_from(base.as_millis()).unwrap_or(u64::MAX);
        let cap = base_ms.max(300_000);
        let until = now + base_ms.saturating_mul(multiplier).min(cap);
        self.ejected_until.store(until, Ordering::Relaxed);
        self.returned_at.store(until, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_gateway.store(0, Ordering::Relaxed);
        self.consecutive_local.store(0, Ordering::Relaxed);
        until
    }
}

/// Counts a request in flight on an endpoint while alive.
pub struct InFlight(Arc<super::super::clusters::Endpoint>);

impl InFlight {
    pub fn new(endpoint: Arc<super::super::clusters::Endpoint>) -> Self {
        endpoint.health.active.fetch_add(1, Ordering::Relaxed);
        InFlight(endpoint)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.health.active.fetch_sub(1, Ordering::Relaxed);
    }
}
