//! A cluster's circuit breakers (Envoy's, for the default priority): counters shared by all
//! workers, checked against the DestinationRule's limits. They live in the cluster's state, so
//! they survive reloads.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use isthmus_config::policy::Limits;

#[derive(Debug, Default)]
pub struct Counters {
    pub connections: AtomicU32,
    pub pending: AtomicU32,
    pub requests: AtomicU32,
    pub retries: AtomicU32,
}

/// One unit of a counter, given back when dropped.
pub struct Slot {
    counters: Arc<Counters>,
    which: Which,
}

#[derive(Clone, Copy)]
pub enum Which {
    Connections,
    Pending,
    Requests,
    Retries,
}

impl Counters {
    fn counter(&self, which: Which) -> &AtomicU32 {
        match which {
            Which::Connections => &self.connections,
            Which::Pending => &self.pending,
            Which::Requests => &self.requests,
            Which::Retries => &self.retries,
        }
    }
}

/// Takes a unit of `which` if fewer than `max` are taken.
pub fn acquire(counters: &Arc<Counters>, which: Which, max: u32) -> Option<Slot> {
    let c = counters.counter(which);
    let mut current = c.load(Ordering::Relaxed);
    loop {
        if current >= max {
            return None;
        }
        match c.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => {
                return Some(Slot {
                    counters: counters.clone(),
                    which,
                });
            }
            Err(now) => current = now,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.counters
            .counter(self.which)
            .fetch_sub(1, Ordering::AcqRel);
    }
}

/// The limit for `which` in `limits`.
pub fn limit(limits: &Limits, which: Which) -> u32 {
    match which {
        Which::Connections => limits.max_connections,
        Which::Pending => limits.max_pending_requests,
        Which::Requests => limits.max_requests,
        Which::Retries => limits.max_retries,
    }
}
