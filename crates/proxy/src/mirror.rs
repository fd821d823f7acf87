//! Mirroring: a fire-and-forget copy of the request to another cluster, with `-shadow` on the
//! host. The client never waits for it, and a semaphore bounds the copies in flight so a slow
//! mirror cannot exhaust memory: when it is full, copies are dropped (and counted).

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http_body_util::BodyExt;
use isthmus_config::actions::Mirror;
use tokio::sync::Semaphore;

use crate::body::RequestBody;
use crate::headers::shadow_host;
use crate::{Active, Gateway};

/// Copies in flight at most, across the process.
pub const MAX_IN_FLIGHT: usize = 256;
/// A mirror that has not answered in this time is abandoned.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Mirrors {
    permits: Arc<Semaphore>,
}

impl Default for Mirrors {
    fn default() -> Self {
        Mirrors {
            permits: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        }
    }
}

/// Sends copies for the mirrors whose percentage draws this request.
pub fn send(
    gw: &Arc<Gateway>,
    active: &Arc<Active>,
    mirrors: &[Mirror],
    parts: &http::request::Parts,
    body: &RequestBody,
) {
    for m in mirrors {
        if m.percent < 100.0 && fastrand::f64() * 100.0 >= m.percent {
            continue;
        }
        let Some(cluster) = m.cluster.and_then(|i| active.clusters.get(i)).cloned() else {
            continue;
        };
        // Mirrors go out over plaintext HTTP/1.1 only: a copy must never leave unencrypted
        // for a cluster the configuration says speaks TLS, so it is dropped instead.
        if cluster.tls.is_some() {
            gw.metrics.mirrors_dropped.inc();
            continue;
        }
        let Some(copy) = body.copy() else {
            gw.metrics.mirrors_dropped.inc();
            continue;
        };
        let Ok(permit) = gw.mirrors.permits.clone().try_acquire_owned() else {
            gw.metrics.mirrors_dropped.inc();
            continue;
        };
        let mut parts = parts.clone();
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("")
            .to_string();
        if let Ok(v) = HeaderValue::from_str(&shadow_host(&host)) {
            parts.headers.insert(header::HOST, v);
        }
        let gw = gw.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let endpoints = cluster.endpoints();
            let Some(target) = cluster.pick(&endpoints, &[]) else {
                return;
            };
            let send = async {
                if let Some(resp) = gw.upstream.send_once(&target, &parts, copy).await {
                    // Read the answer to the end so the connection can be reused.
                    let _ = resp.into_body().collect().await;
                }
            };
            let _ = tokio::time::timeout(MIRROR_TIMEOUT, send).await;
        });
    }
}
