#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
//! The data plane of Isthmus: listeners, HTTP serving, routing against the active snapshot,
//! upstream connection pools and load balancing.
//!
//! Configuration reaches the data plane only as an [`Active`] snapshot swapped in with one
//! atomic store; no request takes a lock to read it.

pub mod balance;
pub mod body;
pub mod clusters;
pub mod cors;
pub mod dns;
pub mod drain;
pub mod egress;
pub mod forward;
pub mod handler;
pub mod headers;
pub mod listeners;
pub mod local_reply;
pub mod metrics;
pub mod mirror;
pub mod pool;
pub mod serve;
pub mod tcp;
pub mod tls;

use std::sync::Arc;

use arc_swap::ArcSwap;
use isthmus_config::Snapshot;

pub use clusters::{ClusterRegistry, ClusterState};
pub use metrics::Metrics;

/// A compiled snapshot with the run-time state of its clusters, index for index.
pub struct Active {
    pub generation: u64,
    pub snapshot: Arc<Snapshot>,
    pub clusters: Vec<Arc<ClusterState>>,
    /// rustls configurations of the snapshot's terminating filter chains, by chain key.
    pub tls: std::collections::HashMap<String, Arc<rustls::ServerConfig>>,
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub active: ArcSwap<Active>,
    /// Metric labels of requests that reach no cluster.
    pub unknown_destination: metrics::DestinationLabels,
    pub metrics: Metrics,
    pub upstream: forward::Upstream,
    pub mirrors: mirror::Mirrors,
    pub identity: Identity,
}

/// How this instance names itself in metrics.
#[derive(Debug, Clone)]
pub struct Identity {
    pub workload: Arc<String>,
    pub namespace: Arc<String>,
}

impl Gateway {
    pub fn new(identity: Identity) -> Arc<Self> {
        Arc::new(Gateway {
            active: ArcSwap::from_pointee(Active {
                generation: 0,
                snapshot: Arc::new(Snapshot::default()),
                clusters: Vec::new(),
                tls: Default::default(),
            }),
            unknown_destination: metrics::DestinationLabels::unknown(),
            metrics: Metrics::new(),
            upstream: forward::Upstream,
            mirrors: mirror::Mirrors::default(),
            identity,
        })
    }
}
