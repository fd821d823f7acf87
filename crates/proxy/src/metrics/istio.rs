//! Istio's standard metrics (`istio_requests_total`, the request duration and size histograms,
//! the TCP connection and byte counters), kept per destination and written at scrape time.
//!
//! Each cluster holds its [`DestinationStats`] (made when the configuration is applied), whose
//! series are found per request by a small key without a lock (see [`SeriesTable`]). The label
//! strings are only assembled when Prometheus scrapes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

use super::histogram::Histogram;
use super::labels::{DestinationLabels, SourceLabels, fixed_labels};
use super::series::{Series, SeriesTable, SlotKey, mix};
use crate::response_flags::ResponseFlags;

/// `request_protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Grpc,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Grpc => "grpc",
            Protocol::Tcp => "tcp",
        }
    }
}

/// What distinguishes the series of one destination's requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestKey {
    pub protocol: Protocol,
    pub code: u16,
    /// `grpc_response_status` of gRPC requests (empty for others, and for gRPC responses
    /// without a status).
    pub grpc_status: Option<u32>,
    pub flags: ResponseFlags,
}

impl SlotKey for RequestKey {
    fn slot_hash(&self) -> u64 {
        let grpc = self
            .grpc_status
            .map_or(0xffff, |s| u64::from(s.min(0xfffe)));
        let flags = u64::from(self.flags.bits());
        mix(u64::from(self.code) | grpc << 16 | (self.protocol as u64) << 32 | flags << 34)
    }
}

impl SlotKey for ResponseFlags {
    fn slot_hash(&self) -> u64 {
        mix(u64::from(self.bits()))
    }
}

/// One series of HTTP/gRPC requests.
#[derive(Debug, Default)]
pub struct RequestSeries {
    pub requests: AtomicU64,
    /// Milliseconds.
    pub duration: Histogram,
    pub request_bytes: Histogram,
    pub response_bytes: Histogram,
}

/// One series of TCP connections.
#[derive(Debug, Default)]
pub struct TcpSeries {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    /// Bytes sent to the client.
    pub sent: AtomicU64,
    /// Bytes received from the client.
    pub received: AtomicU64,
}

/// The metrics of one destination (a cluster, or `unknown`).
#[derive(Debug)]
pub struct DestinationStats {
    labels: Vec<(&'static str, String)>,
    pub requests: SeriesTable<RequestKey, RequestSeries>,
    pub tcp: SeriesTable<ResponseFlags, TcpSeries>,
}

impl DestinationStats {
    /// Counts one request with its duration (µs) and sizes.
    pub fn record_request(&self, key: RequestKey, micros: u64, received: u64, sent: u64) {
        self.requests.with(key, |s| {
            s.requests.fetch_add(1, Ordering::Relaxed);
            s.duration.observe_milli(micros);
            s.request_bytes.observe(received);
            s.response_bytes.observe(sent);
        });
    }

    /// The TCP series of connections that end with `flags`.
    pub fn tcp(&self, flags: ResponseFlags) -> Arc<Series<ResponseFlags, TcpSeries>> {
        self.tcp.get(flags)
    }
}

/// Every destination's metrics: registered once as a collector.
#[derive(Debug)]
pub struct IstioMetrics {
    source: SourceLabels,
    destinations: Mutex<HashMap<DestinationLabels, Arc<DestinationStats>>>,
    unknown: Arc<DestinationStats>,
}

impl IstioMetrics {
    pub fn new(source: SourceLabels) -> Self {
        let unknown_labels = DestinationLabels::unknown();
        let unknown = Arc::new(DestinationStats {
            labels: fixed_labels(&source, &unknown_labels),
            requests: SeriesTable::default(),
            tcp: SeriesTable::default(),
        });
        let destinations = Mutex::new(HashMap::from([(unknown_labels, unknown.clone())]));
        IstioMetrics {
            source,
            destinations,
            unknown,
        }
    }

    /// The stats of a destination, shared by every cluster with these labels and kept across
    /// reloads, so counters never go back (as Envoy keeps its stats).
    pub fn destination(&self, labels: &DestinationLabels) -> Arc<DestinationStats> {
        let mut all = self
            .destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        all.entry(labels.clone())
            .or_insert_with(|| {
                Arc::new(DestinationStats {
                    labels: fixed_labels(&self.source, labels),
                    requests: SeriesTable::default(),
                    tcp: SeriesTable::default(),
                })
            })
            .clone()
    }

    /// Requests that reach no cluster.
    pub fn unknown(&self) -> &Arc<DestinationStats> {
        &self.unknown
    }

    fn all(&self) -> Vec<Arc<DestinationStats>> {
        let all = self
            .destinations
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut v: Vec<_> = all.values().cloned().collect();
        // A stable order keeps scrapes diffable.
        v.sort_by(|a, b| a.labels.cmp(&b.labels));
        v
    }
}

type HistogramOf = fn(&RequestSeries) -> &Histogram;

impl Collector for IstioMetrics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let dests = self.all();
        let requests: Vec<_> = dests.iter().map(|d| (d, d.requests.series())).collect();
        {
            let mut m = encoder.encode_descriptor(
                "istio_requests",
                "Requests handled by the gateway",
                None,
                MetricType::Counter,
            )?;
            for (d, series) in &requests {
                for s in series {
                    let v = s.value.requests.load(Ordering::Relaxed);
                    let labels = request_labels(&s.key);
                    let set = (d.labels.as_slice(), labels.as_slice());
                    let mut e = m.encode_family(&set)?;
                    e.encode_counter::<NoLabelSet, _, f64>(&v, None)?;
                }
            }
        }
        let histograms: [(&str, &str, HistogramOf); 3] = [
            (
                "istio_request_duration_milliseconds",
                "Request duration, from the request's headers to the response's last byte",
                |s| &s.duration,
            ),
            (
                "istio_request_bytes",
                "Request size: headers and body",
                |s| &s.request_bytes,
            ),
            (
                "istio_response_bytes",
                "Response size: headers and body",
                |s| &s.response_bytes,
            ),
        ];
        for (name, help, pick) in histograms {
            let mut m = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (d, series) in &requests {
                for s in series {
                    let (sum, count, buckets) = pick(&s.value).snapshot();
                    let labels = request_labels(&s.key);
                    let set = (d.labels.as_slice(), labels.as_slice());
                    let mut e = m.encode_family(&set)?;
                    e.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                }
            }
        }
        encode_tcp(&mut encoder, &dests)
    }
}

type TcpCounterOf = fn(&TcpSeries) -> &AtomicU64;

fn encode_tcp(
    encoder: &mut DescriptorEncoder,
    dests: &[Arc<DestinationStats>],
) -> Result<(), std::fmt::Error> {
    let tcp: Vec<_> = dests.iter().map(|d| (d, d.tcp.series())).collect();
    let counters: [(&str, &str, TcpCounterOf); 4] = [
        (
            "istio_tcp_connections_opened",
            "TCP connections opened",
            |s| &s.opened,
        ),
        (
            "istio_tcp_connections_closed",
            "TCP connections closed",
            |s| &s.closed,
        ),
        ("istio_tcp_sent_bytes", "Bytes sent to TCP clients", |s| {
            &s.sent
        }),
        (
            "istio_tcp_received_bytes",
            "Bytes received from TCP clients",
            |s| &s.received,
        ),
    ];
    for (name, help, pick) in counters {
        let mut m = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (d, series) in &tcp {
            for s in series {
                let v = pick(&s.value).load(Ordering::Relaxed);
                let flags = s.key.to_string();
                let labels = [
                    ("request_protocol", Protocol::Tcp.as_str()),
                    ("response_flags", flags.as_str()),
                    ("connection_security_policy", "unknown"),
                ];
                let set = (d.labels.as_slice(), labels.as_slice());
                let mut e = m.encode_family(&set)?;
                e.encode_counter::<NoLabelSet, _, f64>(&v, None)?;
            }
        }
    }
    Ok(())
}

/// The per-series labels of a request series.
fn request_labels(key: &RequestKey) -> [(&'static str, String); 5] {
    [
        ("request_protocol", key.protocol.as_str().to_string()),
        ("response_code", key.code.to_string()),
        (
            "grpc_response_status",
            key.grpc_status.map(|s| s.to_string()).unwrap_or_default(),
        ),
        ("response_flags", key.flags.to_string()),
        // A gateway reports as the client side, which does not know the policy.
        ("connection_security_policy", "unknown".to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::labels::Identity;

    fn encode(m: IstioMetrics) -> String {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(m));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    #[test]
    fn requests_and_histograms_are_written_with_istios_labels() {
        let m = IstioMetrics::new(SourceLabels::new(&Identity {
            workload: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            ..Default::default()
        }));
        let key = RequestKey {
            protocol: Protocol::Grpc,
            code: 200,
            grpc_status: Some(5),
            flags: ResponseFlags::NONE,
        };
        m.unknown().record_request(key, 1500, 10, 20);
        m.unknown().record_request(key, 700, 10, 20);
        let t = m.unknown().tcp(ResponseFlags::UF);
        t.value.opened.fetch_add(1, Ordering::Relaxed);
        let out = encode(m);
        let line = out
            .lines()
            .find(|l| l.starts_with("istio_requests_total{"))
            .unwrap();
        for want in [
            "reporter=\"source\"",
            "source_workload=\"istio-ingressgateway\"",
            "destination_service=\"unknown\"",
            "destination_canonical_revision=\"latest\"",
            "request_protocol=\"grpc\"",
            "response_code=\"200\"",
            "grpc_response_status=\"5\"",
            "response_flags=\"-\"",
            "connection_security_policy=\"unknown\"",
        ] {
            assert!(line.contains(want), "{want} in {line}");
        }
        assert!(line.ends_with(" 2"), "{line}");
        assert!(
            out.contains("istio_request_duration_milliseconds_sum{"),
            "{out}"
        );
        assert!(out.contains("le=\"3600000.0\""), "{out}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("istio_tcp_connections_opened_total{")
                    && l.contains("response_flags=\"UF\"")
                    && l.ends_with(" 1")),
            "{out}"
        );
    }
}
