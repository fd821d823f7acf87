//! Name resolution: `resolution: DNS` ServiceEntries (every address of every name, refreshed
//! when the answer's TTL runs out) and the per-request lookups of original-destination
//! clusters. Names given with `--resolve` or in the `--hosts-file` are answered locally before
//! the system resolver is asked; so are `/etc/hosts` entries (hickory reads them). The
//! resolver asks the system's name servers (`/etc/resolv.conf`), or only those given with
//! `--dns-server`, which is also how the tests answer NXDOMAIN without any query leaving the
//! machine.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use isthmus_config::snapshot::DnsTarget;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::clusters::{ClusterState, EndpointSpec};

/// Refresh bounds: answers with a zero TTL are not re-asked in a busy loop, and long TTLs still
/// notice changes within minutes.
const MIN_REFRESH: Duration = Duration::from_secs(1);
const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Retry interval after a failed lookup (Istio waits 60 s; a gateway should recover sooner).
const RETRY: Duration = Duration::from_secs(5);
/// How long a local answer (`--resolve`, `--hosts-file`) is used before it is read again, so an
/// edited hosts file takes effect within about a second.
const LOCAL_TTL: Duration = Duration::from_secs(1);

/// Why a name has no address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no DNS resolver could be built from the system configuration")]
    NoResolver,
    #[error("DNS lookup of {name} failed: {reason}")]
    Failed { name: String, reason: String },
}

/// The addresses of a name and until when they may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub addresses: Vec<IpAddr>,
    pub valid_until: Instant,
}

/// A hosts file's entries, with the modification time and length they were read at.
type HostsRead = (Option<(SystemTime, u64)>, Arc<Vec<(String, IpAddr)>>);

/// Names answered before the system resolver: `--resolve NAME:ADDR` (NAME may be `*.suffix`)
/// and a hosts file in `/etc/hosts` format, read again when it changes.
#[derive(Default)]
struct LocalNames {
    fixed: Vec<(String, IpAddr)>,
    file: Option<PathBuf>,
    /// The file's modification time and length when it was last read, and its entries.
    read: Mutex<Option<HostsRead>>,
}

static LOCAL: OnceLock<LocalNames> = OnceLock::new();

/// The name servers given with `--dns-server` (empty: the system's).
static SERVERS: OnceLock<Vec<SocketAddr>> = OnceLock::new();

/// Sets the names answered locally and the name servers to ask (none: the system's); called
/// once, before any lookup. Later calls are ignored.
pub fn configure(
    resolve: Vec<(String, IpAddr)>,
    hosts_file: Option<PathBuf>,
    servers: Vec<SocketAddr>,
) {
    let fixed = resolve
        .into_iter()
        .map(|(n, ip)| (normalize(&n), ip))
        .collect();
    let _ = LOCAL.set(LocalNames {
        fixed,
        file: hosts_file,
        read: Mutex::new(None),
    });
    let _ = SERVERS.set(servers);
}

/// Parses `--dns-server ADDRESS[:PORT]` (port 53 by default; `[v6]:port` for IPv6 with a
/// port).
pub fn parse_dns_server(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let ip = text.trim_start_matches('[').trim_end_matches(']');
    ip.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{text:?} is not ADDRESS or ADDRESS:PORT"))
}

/// Hickory's configuration of name servers at `servers`, each asked over UDP, then over TCP
/// when an answer is truncated.
fn servers_config(servers: &[SocketAddr]) -> ResolverConfig {
    let name_servers = servers
        .iter()
        .map(|addr| {
            let (mut udp, mut tcp) = (ConnectionConfig::udp(), ConnectionConfig::tcp());
            udp.port = addr.port();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    // No search domains: names are asked as written, as Envoy's resolver does.
    ResolverConfig::from_parts(None, Vec::new(), name_servers)
}

/// Parses `--resolve NAME:ADDR` (the first `:` separates them, so ADDR may be IPv6).
pub fn parse_resolve(text: &str) -> Result<(String, IpAddr), String> {
    let (name, addr) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not NAME:ADDRESS"))?;
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IP address"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has no name"));
    }
    Ok((name.to_string(), ip))
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// `/etc/hosts` format: `ADDRESS NAME [ALIAS...]`, `#` starts a comment; lines that do not
/// parse are skipped.
fn parse_hosts(text: &str) -> Vec<(String, IpAddr)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("");
        let mut words = line.split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.parse::<IpAddr>().ok()) else {
            continue;
        };
        out.extend(words.map(|name| (normalize(name), ip)));
    }
    out
}

/// The addresses `entries` give `name`: its exact entries, else those of the longest
/// `*.suffix` that covers it.
fn local_match(entries: &[(String, IpAddr)], name: &str) -> Vec<IpAddr> {
    let exact: Vec<IpAddr> = entries
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, ip)| *ip)
        .collect();
    if !exact.is_empty() {
        return exact;
    }
    let best = entries
        .iter()
        .filter_map(|(n, _)| n.strip_prefix('*'))
        .filter(|suffix| name.len() > suffix.len() && name.ends_with(suffix))
        .max_by_key(|suffix| suffix.len());
    match best {
        Some(suffix) => entries
            .iter()
            .filter(|(n, _)| n.strip_prefix('*') == Some(suffix))
            .map(|(_, ip)| *ip)
            .collect(),
        None => Vec::new(),
    }
}

impl LocalNames {
    async fn lookup(&self, name: &str) -> Vec<IpAddr> {
        let found = local_match(&self.fixed, name);
        if !found.is_empty() {
            return found;
        }
        match self.file_entries().await {
            Some(entries) => local_match(&entries, name),
            None => Vec::new(),
        }
    }

    /// The hosts file's entries, read again if its modification time or length changed. The
    /// file is read on the blocking pool (tokio::fs), never on a worker.
    async fn file_entries(&self) -> Option<Arc<Vec<(String, IpAddr)>>> {
        let path = self.file.as_ref()?;
        let stamp = tokio::fs::metadata(path)
            .await
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())));
        if let Ok(read) = self.read.lock()
            && let Some((at, entries)) = read.as_ref()
            && *at == stamp
        {
            return Some(entries.clone());
        }
        let entries = match tokio::fs::read_to_string(path).await {
            Ok(text) => Arc::new(parse_hosts(&text)),
            Err(e) => {
                tracing::warn!(path = %path.display(), "cannot read the hosts file: {e}");
                Arc::new(Vec::new())
            }
        };
        if let Ok(mut read) = self.read.lock() {
            *read = Some((stamp, entries.clone()));
        }
        Some(entries)
    }
}

fn resolver() -> Option<&'static TokioResolver> {
    static RESOLVER: OnceLock<Option<TokioResolver>> = OnceLock::new();
    RESOLVER
        .get_or_init(|| {
            let servers = SERVERS.get().map_or(&[][..], Vec::as_slice);
            let mut builder = if servers.is_empty() {
                TokioResolver::builder_tokio().unwrap_or_else(|e| {
                    tracing::warn!(
                        "cannot read the system DNS configuration ({e}); using defaults"
                    );
                    TokioResolver::builder_with_config(
                        ResolverConfig::default(),
                        TokioRuntimeProvider::default(),
                    )
                })
            } else {
                TokioResolver::builder_with_config(
                    servers_config(servers),
                    TokioRuntimeProvider::default(),
                )
            };
            builder.options_mut().use_hosts_file = ResolveHosts::Always;
            builder
                .build()
                .map_err(|e| tracing::error!("cannot build a DNS resolver: {e}"))
                .ok()
        })
        .as_ref()
}

/// The addresses of `name`: an IP address is its own answer; then the local names; then the
/// system resolver (which caches answers for their TTL).
pub async fn lookup(name: &str) -> Result<Answer, LookupError> {
    let now = Instant::now();
    if let Ok(ip) = name.trim_start_matches('[').trim_end_matches(']').parse() {
        return Ok(Answer {
            addresses: vec![ip],
            valid_until: now + MAX_REFRESH,
        });
    }
    let name = normalize(name);
    if let Some(local) = LOCAL.get() {
        let addresses = local.lookup(&name).await;
        if !addresses.is_empty() {
            return Ok(Answer {
                addresses,
                valid_until: now + LOCAL_TTL,
            });
        }
    }
    let resolver = resolver().ok_or(LookupError::NoResolver)?;
    let answer = resolver
        .lookup_ip(name.as_str())
        .await
        .map_err(|e| LookupError::Failed {
            name: name.clone(),
            reason: e.to_string(),
        })?;
    Ok(Answer {
        addresses: answer.iter().collect(),
        valid_until: Instant::from_std(answer.valid_until()),
    })
}

pub fn spawn(state: Arc<ClusterState>, targets: Vec<DnsTarget>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let (found, refresh) = resolve_all(&targets).await;
            if let Some(found) = found {
                state.set_endpoints(found);
            }
            tokio::time::sleep_until(refresh).await;
        }
    })
}

/// Resolves every target; `None` if any lookup failed (the last good endpoints then stay).
async fn resolve_all(targets: &[DnsTarget]) -> (Option<Vec<EndpointSpec>>, Instant) {
    let now = Instant::now();
    let mut refresh = now + MAX_REFRESH;
    let mut out = Vec::new();
    for t in targets {
        match lookup(&t.hostname).await {
            Ok(answer) => {
                refresh = refresh.min(answer.valid_until.max(now + MIN_REFRESH));
                let take = if t.first_only { 1 } else { usize::MAX };
                out.extend(
                    answer
                        .addresses
                        .iter()
                        .take(take)
                        .map(|ip| spec(t, SocketAddr::new(*ip, t.port))),
                );
            }
            Err(e) => {
                tracing::warn!(host = %t.hostname, "{e}");
                return (None, now + RETRY);
            }
        }
    }
    (Some(out), refresh)
}

fn spec(t: &DnsTarget, address: SocketAddr) -> EndpointSpec {
    EndpointSpec {
        address,
        weight: t.weight,
        priority: t.priority,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_flags() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            parse_resolve("api.example.com:127.0.0.1"),
            Ok(("api.example.com".into(), ip("127.0.0.1")))
        );
        assert_eq!(
            parse_resolve("*.example.org:[::1]"),
            Ok(("*.example.org".into(), ip("::1")))
        );
        assert_eq!(
            parse_resolve("v6.example.org:::1"),
            Ok(("v6.example.org".into(), ip("::1")))
        );
        assert!(parse_resolve("api.example.com").is_err());
        assert!(parse_resolve("api.example.com:nope").is_err());
        assert!(parse_resolve(":127.0.0.1").is_err());
    }

    #[test]
    fn dns_server_flags() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(parse_dns_server("10.0.0.2"), Ok(addr("10.0.0.2:53")));
        assert_eq!(
            parse_dns_server("127.0.0.1:5353"),
            Ok(addr("127.0.0.1:5353"))
        );
        assert_eq!(parse_dns_server("::1"), Ok(addr("[::1]:53")));
        assert_eq!(parse_dns_server("[::1]:5353"), Ok(addr("[::1]:5353")));
        assert!(parse_dns_server("dns.example").is_err());
        assert!(parse_dns_server("127.0.0.1:x").is_err());
    }

    #[test]
    fn local_names_exact_then_longest_wildcard() {
        let entries = parse_hosts(
            "# test names\n127.0.0.1 a.example.com A2.Example.com.\n127.0.0.2 *.example.com\n127.0.0.3 *.b.example.com # deeper\n::1 a.example.com\nnot-an-ip x.example.com\n",
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases = [
            ("a.example.com", vec![ip("127.0.0.1"), ip("::1")]),
            ("a2.example.com", vec![ip("127.0.0.1")]),
            ("c.example.com", vec![ip("127.0.0.2")]),
            ("x.b.example.com", vec![ip("127.0.0.3")]),
            ("example.com", vec![]),
            ("x.example.com", vec![ip("127.0.0.2")]),
        ];
        for (name, want) in cases {
            assert_eq!(local_match(&entries, name), want, "{name}");
        }
    }
}
