//! `/stats/summary`: recent request rate, 5xx share and latency percentiles per destination,
//! for the dashboard's charts.
//!
//! Nothing runs in the background and nothing touches the request path: each call reads the
//! same Prometheus text a scrape would get, adds its totals to a short ring buffer (at most one
//! sample per [`MIN_STEP`]), and answers the differences between consecutive samples. The
//! buffer only fills while someone is watching.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::prom;

/// Samples closer together than this are not taken: the last answer is computed again. The
/// dashboard asks every second; a second viewer does not double the samples.
const MIN_STEP: Duration = Duration::from_millis(900);
/// Destinations kept per sample, the busiest first: the memory of the buffer stays small
/// however many services the gateway routes to (`all` counts every destination).
const MAX_DESTINATIONS: usize = 25;
/// How far back the charts reach.
const WINDOW: Duration = Duration::from_secs(120);
/// A longer pause between samples starts the buffer afresh: an average over minutes nobody
/// watched would draw a flat line that never was.
const MAX_GAP: Duration = Duration::from_secs(10);

const REQUESTS: &str = "istio_requests_total";
const BUCKETS: &str = "istio_request_duration_milliseconds_bucket";
const CONNECTIONS: &str = "isthmus_downstream_connections_active";
/// The series that sums every destination.
pub const ALL: &str = "all";

/// The ring buffer of samples.
#[derive(Default)]
pub struct Recorder {
    samples: Mutex<VecDeque<Sample>>,
}

/// Cumulative totals at one moment.
#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    /// Milliseconds since the Unix epoch, for the charts' time axis.
    wall_ms: u64,
    destinations: BTreeMap<String, Totals>,
    histogram: bool,
    connections: Option<f64>,
}

#[derive(Debug, Clone, Default)]
struct Totals {
    requests: f64,
    errors: f64,
    /// Cumulative histogram buckets `(le, count)`, ascending.
    buckets: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    /// Whether `istio_request_duration_milliseconds` is exposed (else no percentiles).
    pub latency_histogram: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_connections: Option<f64>,
    /// `all` first, then each destination service, each with its points, oldest first.
    pub series: Vec<Series>,
}

#[derive(Debug, Serialize)]
pub struct Series {
    pub destination: String,
    pub requests_total: f64,
    pub points: Vec<Point>,
}

/// Rates over the interval that ends at `t`.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub t: u64,
    pub rps: f64,
    /// Share of responses with a 5xx code; `None` without requests.
    pub error_rate: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
    pub p99: Option<f64>,
}

impl Recorder {
    /// Adds a sample of `metrics` (Prometheus text) unless the last one is too recent, and
    /// answers the series over the window.
    pub fn summarize(&self, metrics: &str) -> Summary {
        let now = Instant::now();
        let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        let last = samples.back().map(|s| now.duration_since(s.at));
        if last.is_none_or(|age| age >= MIN_STEP) {
            if last.is_some_and(|age| age > MAX_GAP) {
                samples.clear();
            }
            samples.push_back(Sample::read(metrics, now));
        }
        while samples
            .front()
            .is_some_and(|s| now.duration_since(s.at) > WINDOW)
        {
            samples.pop_front();
        }
        summary(samples.make_contiguous())
    }
}

impl Sample {
    fn read(metrics: &str, at: Instant) -> Sample {
        let mut destinations: BTreeMap<String, Totals> = BTreeMap::new();
        let mut histogram = false;
        let mut connections = None;
        for s in prom::samples(metrics, &[REQUESTS, BUCKETS, CONNECTIONS]) {
            if s.name == CONNECTIONS {
                connections = Some(s.value);
                continue;
            }
            let dest = s.label("destination_service").unwrap_or("unknown");
            let totals = destinations.entry(dest.to_string()).or_default();
            if s.name == REQUESTS {
                totals.requests += s.value;
                if s.label("response_code").is_some_and(|c| c.starts_with('5')) {
                    totals.errors += s.value;
                }
            } else if let Some(le) = s.label("le").and_then(parse_le) {
                histogram = true;
                add_bucket(&mut totals.buckets, le, s.value);
            }
        }
        let all = destinations.values().fold(Totals::default(), |mut acc, t| {
            acc.requests += t.requests;
            acc.errors += t.errors;
            for (le, n) in &t.buckets {
                add_bucket(&mut acc.buckets, *le, *n);
            }
            acc
        });
        keep_busiest(&mut destinations);
        destinations.insert(ALL.to_string(), all);
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Sample {
            at,
            wall_ms,
            destinations,
            histogram,
            connections,
        }
    }
}

fn keep_busiest(destinations: &mut BTreeMap<String, Totals>) {
    if destinations.len() <= MAX_DESTINATIONS {
        return;
    }
    let mut by_requests: Vec<(f64, String)> = destinations
        .iter()
        .map(|(name, t)| (t.requests, name.clone()))
        .collect();
    by_requests.sort_by(|a, b| b.0.total_cmp(&a.0));
    for (_, name) in by_requests.into_iter().skip(MAX_DESTINATIONS) {
        destinations.remove(&name);
    }
}

fn parse_le(le: &str) -> Option<f64> {
    match le {
        "+Inf" => Some(f64::INFINITY),
        _ => le.parse().ok(),
    }
}

/// Adds `n` to the bucket `le`, keeping the buckets in ascending order.
fn add_bucket(buckets: &mut Vec<(f64, f64)>, le: f64, n: f64) {
    match buckets.iter().position(|(b, _)| *b >= le) {
        Some(i) if buckets.get(i).is_some_and(|(b, _)| *b == le) => {
            if let Some(bucket) = buckets.get_mut(i) {
                bucket.1 += n;
            }
        }
        Some(i) => buckets.insert(i, (le, n)),
        None => buckets.push((le, n)),
    }
}

fn summary(samples: &[Sample]) -> Summary {
    let latest = samples.last();
    let others = latest
        .into_iter()
        .flat_map(|s| s.destinations.keys().filter(|k| *k != ALL).cloned());
    let series = std::iter::once(ALL.to_string())
        .chain(others)
        .map(|name| Series {
            requests_total: latest
                .and_then(|s| s.destinations.get(&name))
                .map_or(0.0, |t| t.requests),
            points: samples
                .windows(2)
                .filter_map(|w| match w {
                    [a, b] => point(&name, a, b),
                    _ => None,
                })
                .collect(),
            destination: name,
        })
        .collect();
    Summary {
        latency_histogram: latest.is_some_and(|s| s.histogram),
        active_connections: latest.and_then(|s| s.connections),
        series,
    }
}

/// The rates between samples `a` and `b` for destination `name`, if both have it (totals
/// are counted since the start: one missing would make a spike of everything ever served).
fn point(name: &str, a: &Sample, b: &Sample) -> Option<Point> {
    let before = a.destinations.get(name)?;
    let after = b.destinations.get(name)?;
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    // Counters only grow; a smaller value (a destination's stats dropped) counts as none.
    let requests = (after.requests - before.requests).max(0.0);
    let errors = (after.errors - before.errors).max(0.0);
    let buckets: Vec<(f64, f64)> = after
        .buckets
        .iter()
        .map(|(le, n)| {
            let old = before
                .buckets
                .iter()
                .find(|(l, _)| l == le)
                .map_or(0.0, |(_, n)| *n);
            (*le, (n - old).max(0.0))
        })
        .collect();
    Some(Point {
        t: b.wall_ms,
        rps: round(requests / secs),
        error_rate: (requests > 0.0).then(|| round(errors / requests)),
        p50: quantile(0.5, &buckets),
        p90: quantile(0.9, &buckets),
        p99: quantile(0.99, &buckets),
    })
}

/// Prometheus' `histogram_quantile`: linear interpolation within the bucket that holds the
/// rank; a rank in the `+Inf` bucket answers the highest finite bound.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let i = buckets.iter().position(|(_, n)| *n >= rank)?;
    let (upper, count) = *buckets.get(i)?;
    let (lower, below) = match i.checked_sub(1).and_then(|j| buckets.get(j)) {
        Some(b) => *b,
        None => (0.0, 0.0),
    };
    if upper.is_infinite() {
        return Some(round(lower));
    }
    if count <= below {
        return Some(round(upper));
    }
    Some(round(
        lower + (upper - lower) * (rank - below) / (count - below),
    ))
}

/// Three decimals are plenty for a chart and keep the JSON short.
fn round(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ok: u64, errors: u64, fast: u64, slow: u64) -> String {
        format!(
            "istio_requests_total{{destination_service=\"a\",response_code=\"200\"}} {ok}\n\
             istio_requests_total{{destination_service=\"a\",response_code=\"503\"}} {errors}\n\
             istio_request_duration_milliseconds_bucket{{destination_service=\"a\",le=\"10\"}} {fast}\n\
             istio_request_duration_milliseconds_bucket{{destination_service=\"a\",le=\"100\"}} {}\n\
             istio_request_duration_milliseconds_bucket{{destination_service=\"a\",le=\"+Inf\"}} {}\n\
             isthmus_downstream_connections_active 2\n",
            fast + slow,
            fast + slow
        )
    }

    fn sample(at: Instant, text: &str) -> Sample {
        Sample::read(text, at)
    }

    #[test]
    fn rates_shares_and_percentiles_between_samples() {
        let t0 = Instant::now();
        let a = sample(t0, &text(10, 0, 10, 0));
        let b = sample(t0 + Duration::from_secs(2), &text(16, 2, 14, 4));
        let s = summary(&[a, b]);
        assert!(s.latency_histogram);
        assert_eq!(s.active_connections, Some(2.0));
        assert_eq!(s.series[0].destination, "all");
        assert_eq!(s.series[1].destination, "a");
        let p = &s.series[1].points[0];
        assert_eq!(p.rps, 4.0);
        assert_eq!(p.error_rate, Some(0.25));
        // 8 requests: 4 under 10 ms, 4 between 10 and 100 ms.
        assert_eq!(p.p50, Some(10.0));
        assert_eq!(p.p90, Some(10.0 + 90.0 * (7.2 - 4.0) / 4.0));
        assert_eq!(s.series[0].points[0].rps, 4.0);
        assert_eq!(s.series[0].requests_total, 18.0);
    }

    #[test]
    fn no_traffic_no_histogram() {
        let t0 = Instant::now();
        let plain = "istio_requests_total{destination_service=\"a\",response_code=\"200\"} 1\n";
        let s = summary(&[
            sample(t0, plain),
            sample(t0 + Duration::from_secs(1), plain),
        ]);
        assert!(!s.latency_histogram);
        let p = &s.series[1].points[0];
        assert_eq!((p.rps, p.error_rate, p.p50), (0.0, None, None));
    }

    #[test]
    fn quantile_in_the_overflow_bucket_is_the_last_bound() {
        assert_eq!(
            quantile(0.99, &[(5.0, 0.0), (f64::INFINITY, 3.0)]),
            Some(5.0)
        );
        assert_eq!(quantile(0.5, &[(5.0, 0.0)]), None);
        assert_eq!(quantile(0.5, &[]), None);
    }

    #[test]
    fn only_the_busiest_destinations_are_kept_and_new_ones_do_not_spike() {
        let t0 = Instant::now();
        let line = |d: usize, n: usize| {
            format!(
                "istio_requests_total{{destination_service=\"d{d}\",response_code=\"200\"}} {n}\n"
            )
        };
        let many: String = (0..40).map(|d| line(d, d + 1)).collect();
        let a = sample(t0, &many);
        assert_eq!(a.destinations.len(), MAX_DESTINATIONS + 1);
        assert!(a.destinations.contains_key("d39") && !a.destinations.contains_key("d0"));
        assert_eq!(a.destinations[ALL].requests, (1..=40).sum::<usize>() as f64);
        // d0 becomes busy: no point until two samples have it.
        let b = sample(
            t0 + Duration::from_secs(1),
            &format!("{many}{}", line(0, 1000)),
        );
        let s = summary(&[a, b]);
        let d0 = s.series.iter().find(|x| x.destination == "d0").unwrap();
        assert!(d0.points.is_empty(), "{d0:?}");
    }

    #[test]
    fn recorder_keeps_one_sample_per_step() {
        let r = Recorder::default();
        let first = r.summarize(&text(1, 0, 1, 0));
        assert!(first.series[0].points.is_empty());
        let again = r.summarize(&text(2, 0, 2, 0));
        assert!(
            again.series[0].points.is_empty(),
            "too soon for a second sample"
        );
    }
}
