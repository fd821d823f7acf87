//! Outlier detection: each answer or failure of an endpoint updates its consecutive-error
//! counts, and an endpoint reaching a threshold is ejected, as Envoy's consecutive 5xx,
//! gateway-failure and local-origin-failure detectors do.

use std::sync::atomic::{AtomicU32, Ordering};

use isthmus_config::policy::OutlierDetection;

use super::health::EndpointHealth;

/// What one attempt on an endpoint came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint answered with this status.
    Answered(u16),
    /// A connect failure, reset or timeout (a locally originated error).
    LocalFailure,
}

/// Updates the counters; `true` if a threshold was reached and the endpoint should be ejected.
pub fn record(h: &EndpointHealth, od: &OutlierDetection, outcome: Outcome) -> bool {
    let bump = |c: &AtomicU32, threshold: u32| {
        threshold > 0 && c.fetch_add(1, Ordering::Relaxed) + 1 >= threshold
    };
    let reset = |c: &AtomicU32| c.store(0, Ordering::Relaxed);
    // Without the split, a local failure counts as the 503 Envoy would answer for it.
    let status = match outcome {
        Outcome::LocalFailure if od.split_external_local_origin_errors => {
            return bump(&h.consecutive_local, od.consecutive_local_origin_failures);
        }
        Outcome::LocalFailure => 503,
        Outcome::Answered(s) => {
            if od.split_external_local_origin_errors {
                // An answer means the connection worked.
                reset(&h.consecutive_local);
            }
            s
        }
    };
    if status >= 500 {
        let gateway = matches!(status, 502..=504)
            && bump(&h.consecutive_gateway, od.consecutive_gateway_errors);
        if !matches!(status, 502..=504) {
            reset(&h.consecutive_gateway);
        }
        let five = bump(&h.consecutive_5xx, od.consecutive_5xx);
        return gateway || five;
    }
    reset(&h.consecutive_5xx);
    reset(&h.consecutive_gateway);
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn od(five: u32, gateway: u32, split: bool) -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: five,
            consecutive_gateway_errors: gateway,
            consecutive_local_origin_failures: 2,
            split_external_local_origin_errors: split,
            ..OutlierDetection::default()
        }
    }

    #[test]
    fn thresholds_and_resets() {
        use Outcome::*;
        let cases: &[(&str, OutlierDetection, &[Outcome], bool)] = &[
            (
                "three 5xx of 3",
                od(3, 0, false),
                &[Answered(500), Answered(503), Answered(500)],
                true,
            ),
            (
                "a success resets",
                od(3, 0, false),
                &[Answered(500), Answered(500), Answered(200), Answered(500)],
                false,
            ),
            (
                "4xx resets too",
                od(2, 0, false),
                &[Answered(500), Answered(404), Answered(500)],
                false,
            ),
            (
                "gateway errors only",
                od(0, 2, false),
                &[Answered(502), Answered(504)],
                true,
            ),
            (
                "500 breaks a gateway run",
                od(0, 2, false),
                &[Answered(502), Answered(500), Answered(503)],
                false,
            ),
            (
                "local failures count as 5xx",
                od(2, 0, false),
                &[LocalFailure, LocalFailure],
                true,
            ),
            (
                "split: local apart",
                od(5, 0, true),
                &[LocalFailure, LocalFailure],
                true,
            ),
            (
                "split: 5xx do not count as local",
                od(5, 0, true),
                &[Answered(500), LocalFailure],
                false,
            ),
            ("disabled", od(0, 0, false), &[Answered(500); 10], false),
        ];
        for (name, od, outcomes, ejected) in cases {
            let h = EndpointHealth::new(false);
            let last = outcomes.iter().map(|o| record(&h, od, *o)).last().unwrap();
            assert_eq!(last, *ejected, "{name}");
        }
    }

    #[test]
    fn ejection_time_grows_and_decays() {
        let h = EndpointHealth::new(false);
        let base = std::time::Duration::from_secs(30);
        let interval = std::time::Duration::from_secs(10);
        let first = h.eject(1_000, base, interval);
        assert_eq!(first, 31_000);
        // Ejected again right after returning: twice the base.
        let second = h.eject(first, base, interval);
        assert_eq!(second - first, 60_000);
        // After a long healthy period the multiplier is back to one.
        let later = second + 1_000_000;
        assert_eq!(h.eject(later, base, interval) - later, 30_000);
    }
}
