//! Gauges of the upstream side, read from the clusters' own state at scrape time: endpoints
//! per cluster, and the connections their pools hold open and idle. Nothing is counted on the
//! request path for them beyond what the pools already keep.

use std::fmt;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::clusters::ClusterState;

/// The clusters of the configuration being served, as the last reload left them.
#[derive(Default)]
pub struct UpstreamGauges {
    clusters: ArcSwap<Vec<Arc<ClusterState>>>,
}

impl fmt::Debug for UpstreamGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamGauges")
            .field("clusters", &self.clusters.load().len())
            .finish()
    }
}

impl UpstreamGauges {
    /// Called when a configuration is applied.
    pub fn set_clusters(&self, clusters: Vec<Arc<ClusterState>>) {
        self.clusters.store(Arc::new(clusters));
    }
}

type Reading = fn(&ClusterState) -> usize;

impl Collector for UpstreamGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clusters = self.clusters.load();
        let gauges: [(&str, &str, Reading); 3] = [
            (
                "isthmus_upstream_endpoints",
                "Endpoints of each upstream cluster",
                |c| c.endpoints().len(),
            ),
            (
                "isthmus_upstream_connections_open",
                "Open upstream connections of each cluster (HTTP/1.1 and HTTP/2)",
                |c| c.endpoints().iter().map(|e| e.pool.open()).sum(),
            ),
            (
                "isthmus_upstream_connections_idle",
                "Idle keep-alive HTTP/1.1 connections of each cluster",
                |c| c.endpoints().iter().map(|e| e.pool.http1.idle()).sum(),
            ),
        ];
        for (name, help, read) in gauges {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for c in clusters.iter() {
                let labels = [("cluster_name", c.name.as_str())];
                m.encode_family(&labels)?.encode_gauge(&(read(c) as u64))?;
            }
        }
        Ok(())
    }
}
