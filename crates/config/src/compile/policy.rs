//! DestinationRule traffic policy for one cluster: Istio's merged `loadBalancer`,
//! `connectionPool` and `outlierDetection` with Istio's defaults, the `isthmus.io/health-check`
//! annotation, and endpoint priorities by locality.

use std::collections::BTreeMap;

use isthmus_api::duration::ProtoDuration;
use isthmus_api::istio::destination_rule::{
    ConnectionPoolSettings, LoadBalancerSettings, LocalityLoadBalancerSetting,
    OutlierDetection as OutlierSpec,
};
use serde::Deserialize;

use crate::instance::{Instance, Locality};
use crate::policy::{
    ClusterPolicy, ConnectionSettings, HashKey, HealthCheck, HealthCheckKind, Limits, LoadBalancer,
    OutlierDetection, TcpKeepalive, Warmup,
};

/// The DestinationRule annotation that configures active health checks.
pub const HEALTH_CHECK_ANNOTATION: &str = "isthmus.io/health-check";

/// Istio's consistent-hash defaults.
const DEFAULT_RING_SIZE: u64 = 1024;
const DEFAULT_MAGLEV_TABLE: u64 = 65537;
/// Envoy's default panic threshold, used when no outlier detection sets Istio's.
const ENVOY_PANIC_THRESHOLD: u32 = 50;

pub fn cluster_policy(
    lb: Option<&LoadBalancerSettings>,
    pool: Option<&ConnectionPoolSettings>,
    outlier: Option<&OutlierSpec>,
    health_check: Option<HealthCheck>,
) -> ClusterPolicy {
    let load_balancer = load_balancer(lb);
    let warmup = lb.and_then(warmup).filter(|_| {
        matches!(
            load_balancer,
            LoadBalancer::RoundRobin | LoadBalancer::LeastRequest
        )
    });
    ClusterPolicy {
        load_balancer,
        warmup,
        limits: limits(pool),
        connection: connection(pool),
        outlier: outlier.map(outlier_detection),
        panic_threshold: outlier.map_or(ENVOY_PANIC_THRESHOLD, |o| {
            clamp_percent(o.min_health_percent.unwrap_or(0))
        }),
        health_check,
    }
}

fn load_balancer(lb: Option<&LoadBalancerSettings>) -> LoadBalancer {
    let Some(lb) = lb else {
        return LoadBalancer::default();
    };
    if let Some(ch) = &lb.consistent_hash
        && let Some(key) = hash_key(ch)
    {
        if let Some(m) = &ch.maglev {
            return LoadBalancer::Maglev {
                key,
                table_size: m
                    .table_size
                    .filter(|n| *n > 0)
                    .unwrap_or(DEFAULT_MAGLEV_TABLE),
            };
        }
        let size = ch
            .ring_hash
            .as_ref()
            .and_then(|r| r.minimum_ring_size)
            .or(ch.minimum_ring_size)
            .filter(|n| *n > 0)
            .unwrap_or(DEFAULT_RING_SIZE);
        return LoadBalancer::RingHash {
            key,
            minimum_ring_size: size,
        };
    }
    match lb.simple.as_deref() {
        Some("ROUND_ROBIN") => LoadBalancer::RoundRobin,
        Some("RANDOM") => LoadBalancer::Random,
        Some("PASSTHROUGH") => LoadBalancer::Passthrough,
        _ => LoadBalancer::LeastRequest,
    }
}

/// `warmup` (or the older `warmupDurationSecs`), with Envoy's defaults: 10% to start,
/// aggression 1 (linear).
fn warmup(lb: &LoadBalancerSettings) -> Option<Warmup> {
    let (duration, min_percent, aggression) = match (&lb.warmup, &lb.warmup_duration_secs) {
        (Some(w), _) => (w.duration?, w.minimum_percent, w.aggression),
        (None, Some(d)) => (*d, None, None),
        (None, None) => return None,
    };
    let duration_ms = u64::try_from(duration.0.as_millis()).unwrap_or(u64::MAX);
    (duration_ms > 0).then(|| Warmup {
        duration_ms,
        min_percent: min_percent.unwrap_or(10.0).clamp(0.0, 100.0),
        aggression: aggression.filter(|a| *a > 0.0).unwrap_or(1.0),
    })
}

fn hash_key(ch: &isthmus_api::istio::destination_rule::ConsistentHashLb) -> Option<HashKey> {
    if let Some(h) = ch.http_header_name.as_deref().filter(|h| !h.is_empty()) {
        return Some(HashKey::Header(h.to_ascii_lowercase()));
    }
    if let Some(c) = &ch.http_cookie {
        return Some(HashKey::Cookie {
            name: c.name.clone().unwrap_or_default(),
            path: c.path.clone(),
            ttl_secs: c.ttl.map(|d| d.0.as_secs()),
        });
    }
    if ch.use_source_ip == Some(true) {
        return Some(HashKey::SourceIp);
    }
    ch.http_query_parameter_name
        .clone()
        .map(HashKey::QueryParameter)
}

fn limits(pool: Option<&ConnectionPoolSettings>) -> Limits {
    let mut l = Limits::default();
    let positive = |v: Option<i32>| v.and_then(|n| u32::try_from(n).ok()).filter(|n| *n > 0);
    if let Some(tcp) = pool.and_then(|p| p.tcp.as_ref()) {
        l.max_connections = positive(tcp.max_connections).unwrap_or(l.max_connections);
    }
    if let Some(http) = pool.and_then(|p| p.http.as_ref()) {
        l.max_pending_requests =
            positive(http.http1_max_pending_requests).unwrap_or(l.max_pending_requests);
        l.max_requests = positive(http.http2_max_requests).unwrap_or(l.max_requests);
        l.max_retries = positive(http.max_retries).unwrap_or(l.max_retries);
    }
    l
}

fn connection(pool: Option<&ConnectionPoolSettings>) -> ConnectionSettings {
    let mut c = ConnectionSettings::default();
    let ms = |d: &ProtoDuration| u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX);
    if let Some(tcp) = pool.and_then(|p| p.tcp.as_ref()) {
        if let Some(t) = &tcp.connect_timeout {
            c.connect_timeout_ms = ms(t);
        }
        if let Some(t) = &tcp.idle_timeout {
            c.tcp_idle_timeout_ms = ms(t);
        }
        c.max_connection_duration_ms = tcp.max_connection_duration.as_ref().map(ms);
        c.keepalive = tcp.tcp_keepalive.as_ref().map(|k| TcpKeepalive {
            time_secs: k.time.map(|d| d.0.as_secs()),
            interval_secs: k.interval.map(|d| d.0.as_secs()),
            probes: k.probes,
        });
    }
    if let Some(http) = pool.and_then(|p| p.http.as_ref()) {
        if let Some(t) = &http.idle_timeout {
            c.idle_timeout_ms = ms(t);
        }
        c.max_requests_per_connection = http
            .max_requests_per_connection
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
    }
    c
}

fn outlier_detection(o: &OutlierSpec) -> OutlierDetection {
    let d = OutlierDetection::default();
    let ms = |v: Option<ProtoDuration>, default: u64| {
        v.map_or(default, |d| {
            u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)
        })
    };
    // `consecutiveErrors` is the deprecated name of the gateway-error count.
    let gateway = o
        .consecutive_gateway_errors
        .or(o.consecutive_errors.and_then(|n| u32::try_from(n).ok()));
    OutlierDetection {
        consecutive_5xx: o.consecutive_5xx_errors.unwrap_or(d.consecutive_5xx),
        consecutive_gateway_errors: gateway.unwrap_or(0),
        consecutive_local_origin_failures: o
            .consecutive_local_origin_failures
            .unwrap_or(d.consecutive_local_origin_failures),
        split_external_local_origin_errors: o.split_external_local_origin_errors.unwrap_or(false),
        interval_ms: ms(o.interval, d.interval_ms),
        base_ejection_time_ms: ms(o.base_ejection_time, d.base_ejection_time_ms),
        max_ejection_percent: o
            .max_ejection_percent
            .map_or(d.max_ejection_percent, clamp_percent),
    }
}

fn clamp_percent(p: i32) -> u32 {
    u32::try_from(p.clamp(0, 100)).unwrap_or(0)
}

/// The annotation's YAML (or JSON): `http: {path, host, expectedStatuses}` or `tcp: {}`, and
/// `interval`, `timeout`, `healthyThreshold`, `unhealthyThreshold`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HealthCheckSpec {
    http: Option<HttpCheckSpec>,
    tcp: Option<serde_json::Value>,
    interval: Option<ProtoDuration>,
    timeout: Option<ProtoDuration>,
    healthy_threshold: Option<u32>,
    unhealthy_threshold: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct HttpCheckSpec {
    path: Option<String>,
    host: Option<String>,
    expected_statuses: Option<Vec<serde_json::Value>>,
}

/// Parses the health-check annotation.
pub fn health_check(text: &str) -> Result<HealthCheck, String> {
    let spec: HealthCheckSpec =
        serde_saphyr::from_str(text).map_err(|e| format!("not a health check: {e}"))?;
    let kind = match (spec.http, spec.tcp) {
        (Some(_), Some(_)) => return Err("set one of http and tcp, not both".into()),
        (None, Some(_)) => HealthCheckKind::Tcp,
        (Some(h), None) => http_check(h)?,
        (None, None) => return Err("set http (with a path) or tcp".into()),
    };
    let ms = |d: Option<ProtoDuration>, default: u64| {
        d.map_or(default, |d| {
            u64::try_from(d.0.as_millis()).unwrap_or(u64::MAX)
        })
    };
    let interval_ms = ms(spec.interval, 5_000);
    let timeout_ms = ms(spec.timeout, 1_000);
    if interval_ms == 0 || timeout_ms == 0 {
        return Err("interval and timeout must be above zero".into());
    }
    let threshold = |v: Option<u32>, name: &str| match v {
        Some(0) => Err(format!("{name} must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(if name == "healthyThreshold" { 1 } else { 2 }),
    };
    Ok(HealthCheck {
        kind,
        interval_ms,
        timeout_ms,
        healthy_threshold: threshold(spec.healthy_threshold, "healthyThreshold")?,
        unhealthy_threshold: threshold(spec.unhealthy_threshold, "unhealthyThreshold")?,
    })
}

fn http_check(h: HttpCheckSpec) -> Result<HealthCheckKind, String> {
    let path = h.path.unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        return Err(format!("http.path {path:?} must start with /"));
    }
    let expected_statuses = match h.expected_statuses {
        None => vec![(200, 299)],
        Some(list) => list
            .iter()
            .map(status_range)
            .collect::<Result<Vec<_>, _>>()?,
    };
    Ok(HealthCheckKind::Http {
        path,
        host: h.host,
        expected_statuses,
    })
}

/// `200` or `"200-399"`.
fn status_range(v: &serde_json::Value) -> Result<(u16, u16), String> {
    let bad = || format!("expectedStatuses: {v} is not a status or a range such as \"200-399\"");
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
    };
    let (lo, hi) = match v {
        serde_json::Value::Number(n) => {
            let c = n
                .as_u64()
                .and_then(|c| u16::try_from(c).ok())
                .ok_or_else(bad)?;
            (c, c)
        }
        serde_json::Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (code(a).ok_or_else(bad)?, code(b).ok_or_else(bad)?),
            None => {
                let c = code(s).ok_or_else(bad)?;
                (c, c)
            }
        },
        _ => return Err(bad()),
    };
    if lo > hi || !(100..=599).contains(&lo) || !(100..=599).contains(&hi) {
        return Err(bad());
    }
    Ok((lo, hi))
}

/// An endpoint as priorities and weights see it.
pub struct Placed<'a> {
    pub locality: Option<&'a str>,
    pub labels: &'a BTreeMap<String, String>,
    pub weight: u32,
}

/// Priority (0 is the most preferred) and effective weight of each endpoint, as Istio
/// programs Envoy: with `failover` on (outlier detection or health checks configured),
/// priorities by locality distance (same subzone, same zone, same region, the `failover`
/// target region, the rest) or by `failoverPriority` labels; with `distribute`, weights by
/// locality. Priorities are compacted so that levels are contiguous.
pub fn place(
    instance: &Instance,
    setting: Option<&LocalityLoadBalancerSetting>,
    failover: bool,
    endpoints: &[Placed<'_>],
) -> Vec<(u32, u32)> {
    let enabled = setting.and_then(|s| s.enabled).unwrap_or(true);
    let here = &instance.locality;
    let default = || endpoints.iter().map(|e| (0, e.weight)).collect::<Vec<_>>();
    if !enabled || here.is_empty() {
        return default();
    }
    if let Some(rule) = setting.and_then(|s| {
        s.distribute
            .iter()
            .find(|d| d.from.as_deref().is_some_and(|f| here.matches(f)))
    }) {
        return distribute(&rule.to, endpoints);
    }
    if !failover {
        return default();
    }
    let setting = setting.cloned().unwrap_or_default();
    let raw: Vec<u32> = endpoints
        .iter()
        .map(|e| {
            let loc = Locality::parse(e.locality.unwrap_or(""));
            if setting.failover_priority.is_empty() {
                by_distance(here, &loc, &setting)
            } else {
                by_labels(instance, &loc, e.labels, &setting.failover_priority)
            }
        })
        .collect();
    let mut levels: Vec<u32> = raw.clone();
    levels.sort_unstable();
    levels.dedup();
    raw.iter()
        .zip(endpoints)
        .map(|(p, e)| {
            let compact = levels.iter().position(|l| l == p).unwrap_or(0);
            (u32::try_from(compact).unwrap_or(0), e.weight)
        })
        .collect()
}

fn by_distance(here: &Locality, there: &Locality, setting: &LocalityLoadBalancerSetting) -> u32 {
    if there.region == here.region {
        if there.zone == here.zone {
            return if there.subzone == here.subzone { 0 } else { 1 };
        }
        return 2;
    }
    let target = setting
        .failover
        .iter()
        .find(|f| f.from.as_deref() == Some(here.region.as_str()))
        .and_then(|f| f.to.as_deref());
    match target {
        Some(to) if to == there.region => 3,
        _ => 4,
    }
}

/// The number of leading `failoverPriority` labels that differ from the instance's: 0 when
/// all match. Topology labels compare localities; others the instance's `--labels`.
fn by_labels(
    instance: &Instance,
    there: &Locality,
    labels: &BTreeMap<String, String>,
    keys: &[String],
) -> u32 {
    let here = &instance.locality;
    let matched = keys
        .iter()
        .take_while(|k| {
            let (mine, theirs) = match k.as_str() {
                "topology.kubernetes.io/region" => (Some(&here.region), Some(&there.region)),
                "topology.kubernetes.io/zone" => (Some(&here.zone), Some(&there.zone)),
                "topology.istio.io/subzone" => (Some(&here.subzone), Some(&there.subzone)),
                key => (instance.labels.get(key), labels.get(key)),
            };
            mine.is_some() && mine == theirs
        })
        .count();
    u32::try_from(keys.len() - matched).unwrap_or(u32::MAX)
}

/// Weights under `distribute`: each target locality gets its percentage, shared among its
/// endpoints by their weights; endpoints in no target locality get none.
fn distribute(to: &BTreeMap<String, u32>, endpoints: &[Placed<'_>]) -> Vec<(u32, u32)> {
    let group = |e: &Placed<'_>| {
        let loc = Locality::parse(e.locality.unwrap_or(""));
        to.iter()
            .find(|(pattern, _)| loc.matches(pattern))
            .map(|(p, w)| (p.clone(), *w))
    };
    let mut sums: BTreeMap<String, u64> = BTreeMap::new();
    for e in endpoints {
        if let Some((g, _)) = group(e) {
            *sums.entry(g).or_default() += u64::from(e.weight);
        }
    }
    endpoints
        .iter()
        .map(|e| {
            let w = group(e).map_or(0, |(g, percent)| {
                let sum = sums.get(&g).copied().unwrap_or(1).max(1);
                // Scaled by 1000 so that small shares keep their proportion.
                u64::from(percent) * 1000 * u64::from(e.weight) / sum
            });
            (0, u32::try_from(w).unwrap_or(u32::MAX))
        })
        .collect()
}
