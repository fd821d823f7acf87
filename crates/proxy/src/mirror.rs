//! Mirroring: a fire-and-forget copy of the request to another cluster, with `-shadow` on the
//! host. The client never waits for it, and a semaphore bounds the copies in flight so a slow
//! mirror cannot exhaust memory: when it is full, copies are dropped (and counted).

use std::sync::Arc;
use std::time::Duration;

use http::Version;
use http::header::{self, HeaderValue};
use http_body_util::BodyExt;
use isthmus_config::actions::Mirror;
use isthmus_config::snapshot::UpstreamProtocol;
use tokio::sync::Semaphore;

use crate::body::RequestBody;
use crate::headers::shadow_host;
use crate::trace_context::TraceFields;
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
    trace: &TraceFields,
    body: &RequestBody,
) {
    for m in mirrors {
        if m.percent < 100.0 && fastrand::f64() * 100.0 >= m.percent {
            continue;
        }
        let Some(cluster) = m.cluster.and_then(|i| active.clusters.get(i)).cloned() else {
            continue;
        };
        let Some(copy) = body.copy() else {
            gw.metrics.mirrors_dropped.inc();
            continue;
        };
        let Ok(permit) = gw.mirrors.permits.clone().try_acquire_owned() else {
            gw.metrics.mirrors_dropped.inc();
            continue;
        };
        let mut parts = parts.clone();
        trace.insert_into(&mut parts.headers);
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
            let Some(target) = cluster.choose(None, &[]) else {
                return;
            };
            let version = match cluster.settings().protocol {
                UpstreamProtocol::Http1 => Version::HTTP_11,
                UpstreamProtocol::Http2 => Version::HTTP_2,
                UpstreamProtocol::Client if parts.version == Version::HTTP_2 => Version::HTTP_2,
                UpstreamProtocol::Client => Version::HTTP_11,
            };
            let send = async {
                let sent = gw
                    .upstream
                    .send_once(&cluster, &target, &parts, copy, version);
                if let Some(resp) = sent.await {
                    // Read the answer to the end so the connection can be reused.
                    let _ = resp.into_body().collect().await;
                }
            };
            let _ = tokio::time::timeout(MIRROR_TIMEOUT, send).await;
        });
    }
}
