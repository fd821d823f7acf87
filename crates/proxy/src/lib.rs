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

pub mod access_log;
pub mod activity;
pub mod balance;
pub mod body;
pub mod clusters;
pub mod cors;
pub mod dns;
pub mod drain;
pub mod edge;
pub mod egress;
pub mod forward;
#[doc(hidden)]
pub mod fuzzing;
mod h1;
pub mod handler;
pub mod headers;
pub mod listeners;
pub mod local_reply;
pub mod metrics;
pub mod mirror;
pub mod parking;
pub mod pool;
pub mod proxy_protocol;
pub mod response_flags;
pub mod serve;
pub mod tcp;
pub mod telemetry;
pub mod tls;
pub mod trace_context;
pub mod woken;

use std::sync::Arc;

use arc_swap::ArcSwap;
use isthmus_config::Snapshot;

pub use clusters::{ClusterRegistry, ClusterState};
pub use metrics::{Identity, Metrics};

/// A compiled snapshot with the run-time state of its clusters, index for index.
pub struct Active {
    pub generation: u64,
    pub snapshot: Arc<Snapshot>,
    pub clusters: Vec<Arc<ClusterState>>,
    /// rustls configurations of the snapshot's terminating filter chains, by chain key.
    pub tls: std::collections::HashMap<String, Arc<rustls::ServerConfig>>,
}

/// A replaced configuration is freed on a thread of its own. Freeing the route tables of a
/// large configuration takes a while (about 100 ms for 100,000 routes), and whoever lets go
/// of it last, the reload or a request that was still running on it, would otherwise stall
/// every connection of its worker for that long.
impl Drop for Active {
    fn drop(&mut self) {
        if Arc::strong_count(&self.snapshot) > 1 {
            return; // Someone else frees it.
        }
        // Moved out, not cloned: the thread must hold the last reference.
        let snapshot = std::mem::take(&mut self.snapshot);
        let spawned = std::thread::Builder::new()
            .name("isthmus-drop".into())
            .spawn(move || drop(snapshot));
        if let Err(e) = spawned {
            tracing::debug!("cannot start a thread to free the previous configuration: {e}");
        }
    }
}

/// Everything a request needs, shared by all connections.
pub struct Gateway {
    pub active: ArcSwap<Active>,
    pub metrics: Metrics,
    pub upstream: forward::Upstream,
    pub mirrors: mirror::Mirrors,
    pub edge: edge::EdgeSettings,
    /// The access log, when it is on.
    pub access_log: Option<access_log::AccessLog>,
    /// Percentage of new traces that are sampled.
    pub trace_sampling: f64,
}

/// Access log and tracing settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Telemetry {
    pub access_log: access_log::Target,
    pub access_log_format: access_log::Format,
    /// Percentage (0–100) of requests without a sampling decision whose new trace is sampled.
    pub trace_sampling: f64,
}

impl Default for Telemetry {
    /// Istio's defaults: no access log, 1% of new traces sampled.
    fn default() -> Self {
        Telemetry {
            access_log: access_log::Target::Off,
            access_log_format: access_log::Format::Text,
            trace_sampling: 1.0,
        }
    }
}

impl Gateway {
    pub fn new(
        identity: &Identity,
        telemetry: &Telemetry,
    ) -> Result<Arc<Self>, access_log::AccessLogError> {
        Self::with_edge(identity, telemetry, edge::EdgeSettings::default())
    }

    pub fn with_edge(
        identity: &Identity,
        telemetry: &Telemetry,
        edge: edge::EdgeSettings,
    ) -> Result<Arc<Self>, access_log::AccessLogError> {
        let metrics = Metrics::new(identity);
        let access_log = access_log::AccessLog::start(
            &telemetry.access_log,
            telemetry.access_log_format,
            metrics.access_log_dropped.clone(),
        )?;
        Ok(Arc::new(Gateway {
            active: ArcSwap::from_pointee(Active {
                generation: 0,
                snapshot: Arc::new(Snapshot::default()),
                clusters: Vec::new(),
                tls: Default::default(),
            }),
            metrics,
            upstream: forward::Upstream,
            mirrors: mirror::Mirrors::default(),
            access_log,
            trace_sampling: telemetry.trace_sampling.clamp(0.0, 100.0),
            edge,
        }))
    }
}
