//! Original-destination clusters (`resolution: NONE` and `DYNAMIC_DNS`, and Istio's
//! `PassthroughCluster`): the endpoint is the host a request names, resolved when the request
//! is sent. Answers are kept for their TTL with the endpoints made from them, so keep-alive
//! connections are reused while the name keeps its addresses. The table is read without a lock;
//! a miss resolves asynchronously and replaces the table (copy on write), and it holds at most
//! [`MAX_HOSTS`] names, dropping those unused for longest (as Envoy's DNS cache bounds itself).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::time::Instant;

use crate::balance::health::now_ms;
use crate::clusters::{Endpoint, EndpointSpec};
use crate::dns::{self, LookupError};

/// Names kept at most per cluster.
pub const MAX_HOSTS: usize = 1024;

/// The destination a request names: its host (Host, SNI or CONNECT target) and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
}

/// The addresses of one name and port, as endpoints.
pub struct Resolved {
    endpoints: Vec<Arc<Endpoint>>,
    valid_until: Instant,
    last_used: AtomicU64,
    next: AtomicUsize,
}

impl Resolved {
    /// Round robin over the addresses, skipping those already tried while others remain.
    pub fn pick(&self, avoid: &[SocketAddr]) -> Option<Arc<Endpoint>> {
        let n = self.endpoints.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let fresh = (0..n)
            .filter_map(|i| self.endpoints.get((start + i) % n))
            .find(|e| !avoid.contains(&e.address));
        fresh
            .or_else(|| self.endpoints.get(start % n.max(1)))
            .cloned()
    }
}

/// Port, then host: a lookup borrows the request's host instead of copying it.
type Table = HashMap<u16, HashMap<String, Arc<Resolved>>>;

pub struct OriginalDst {
    /// The ServiceEntry's port (its `targetPort`), or `None` for the request's own port.
    port: Option<u16>,
    hosts: ArcSwap<Table>,
    /// Serialises replacements of `hosts`; never held across an await.
    writing: Mutex<()>,
}

impl OriginalDst {
    pub fn new(port: Option<u16>) -> Self {
        OriginalDst {
            port,
            hosts: ArcSwap::from_pointee(HashMap::new()),
            writing: Mutex::new(()),
        }
    }

    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The endpoints of `target` (whose host is lower case, as routing makes it): from the
    /// table while its answer is valid, else resolved now.
    pub async fn resolve(&self, target: Target<'_>) -> Result<Arc<Resolved>, LookupError> {
        let port = self.port.unwrap_or(target.port);
        let now = Instant::now();
        let current = self
            .hosts
            .load()
            .get(&port)
            .and_then(|hosts| hosts.get(target.host))
            .cloned();
        if let Some(r) = &current
            && now < r.valid_until
        {
            r.last_used.store(now_ms(), Ordering::Relaxed);
            return Ok(r.clone());
        }
        let answer = dns::lookup(target.host).await?;
        let previous = current.as_ref().map_or(&[][..], |r| &r.endpoints[..]);
        let endpoints: Vec<Arc<Endpoint>> = answer
            .addresses
            .iter()
            .map(|ip| SocketAddr::new(*ip, port))
            .filter_map(|address| {
                // Same address as before: same endpoint, so its connections stay in use.
                previous
                    .iter()
                    .find(|e| e.address == address)
                    .cloned()
                    .or_else(|| {
                        Endpoint::new(
                            &EndpointSpec {
                                address,
                                weight: 1,
                                priority: 0,
                            },
                            false,
                            false,
                        )
                    })
            })
            .collect();
        let resolved = Arc::new(Resolved {
            endpoints,
            valid_until: answer.valid_until,
            last_used: AtomicU64::new(now_ms()),
            next: AtomicUsize::new(0),
        });
        self.insert(port, target.host, resolved.clone());
        Ok(resolved)
    }

    fn insert(&self, port: u16, host: &str, resolved: Arc<Resolved>) {
        let Ok(_guard) = self.writing.lock() else {
            return;
        };
        let mut next: Table = (**self.hosts.load()).clone();
        next.entry(port)
            .or_default()
            .insert(host.to_string(), resolved);
        let kept: usize = next.values().map(HashMap::len).sum();
        if kept > MAX_HOSTS {
            let mut by_use: Vec<(u64, u16, String)> = next
                .iter()
                .flat_map(|(p, hosts)| {
                    hosts
                        .iter()
                        .map(|(h, r)| (r.last_used.load(Ordering::Relaxed), *p, h.clone()))
                })
                .collect();
            by_use.sort();
            for (_, p, h) in by_use.into_iter().take(kept - MAX_HOSTS) {
                if let Some(hosts) = next.get_mut(&p) {
                    hosts.remove(&h);
                }
            }
            next.retain(|_, hosts| !hosts.is_empty());
        }
        self.hosts.store(Arc::new(next));
    }

    /// Names currently kept (for tests and the admin server).
    pub fn len(&self) -> usize {
        self.hosts.load().values().map(HashMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn addresses_become_endpoints_and_are_reused_while_valid() {
        let table = OriginalDst::new(None);
        let a = table
            .resolve(Target {
                host: "127.0.0.1",
                port: 8080,
            })
            .await
            .unwrap();
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let first = a.pick(&[]).unwrap();
        assert_eq!(first.address, addr);
        let again = table
            .resolve(Target {
                host: "127.0.0.1",
                port: 8080,
            })
            .await
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again.pick(&[]).unwrap()));
        // A tried address is still used when it is the only one.
        assert_eq!(again.pick(&[addr]).unwrap().address, addr);
        assert_eq!(table.len(), 1);
    }

    #[tokio::test]
    async fn a_fixed_port_replaces_the_request_port() {
        let table = OriginalDst::new(Some(9443));
        let r = table
            .resolve(Target {
                host: "::1",
                port: 443,
            })
            .await
            .unwrap();
        assert_eq!(
            r.pick(&[]).unwrap().address,
            "[::1]:9443".parse::<SocketAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn the_table_is_bounded() {
        let table = OriginalDst::new(None);
        for port in 1..=(MAX_HOSTS as u16 + 10) {
            table
                .resolve(Target {
                    host: "127.0.0.1",
                    port,
                })
                .await
                .unwrap();
        }
        assert_eq!(table.len(), MAX_HOSTS);
    }
}
