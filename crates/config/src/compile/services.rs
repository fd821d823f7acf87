//! The service registry of file mode: ServiceEntries give services, ports and endpoints;
//! DestinationRules give subsets. Clusters are made on demand for the destinations routes use.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use isthmus_api::istio::destination_rule::{
    ClientTlsSettings, ConnectionPoolSettings, PortTrafficPolicy, Subset, TrafficPolicy,
};
use isthmus_api::istio::service_entry::{ServiceEntrySpec, ServicePort};
use isthmus_api::{Diagnostic, Object, Resource};

use super::memo::{ClusterCall, Journal, Outcome, RouteMemo};
use super::policy;
use super::secrets::{SecretError, Secrets};
use crate::diag::{Subject, subject};
use crate::hosts::{complete, covers};
use crate::instance::{Instance, ROOT_NAMESPACE};
use crate::policy::ClusterPolicy;
use crate::snapshot::{
    Cluster, DnsTarget, Endpoint, EndpointSource, UpstreamProtocol, UpstreamTls,
};
use crate::tls::{CertificateSource, PemSource};

struct Service<'a> {
    namespace: &'a str,
    entry: &'a Object<ServiceEntrySpec>,
}

struct Rule<'a> {
    namespace: &'a str,
    host: String,
    policy: Option<&'a TrafficPolicy>,
    subsets: &'a [Subset],
    /// The `isthmus.io/health-check` annotation, if set.
    health_check: Option<&'a str>,
}

pub struct Registry<'a> {
    instance: &'a Instance,
    services: HashMap<String, Service<'a>>,
    rules: Vec<Rule<'a>>,
    clusters: Vec<Cluster>,
    by_name: HashMap<String, usize>,
    /// Secrets of the gateway's namespace, for `tls.credentialName`.
    secrets: Secrets<'a>,
    /// Routes compiled by the previous build (see [`super::memo`]).
    pub(super) memo: RouteMemo,
    /// The clusters asked for since [`Registry::record`], while a VirtualService compiles.
    journal: Option<Journal>,
}

/// Why a destination has no cluster; the route answers 503 for it.
#[derive(Debug, Clone, PartialEq)]
pub enum Unresolved {
    UnknownHost,
    Port(String),
    Subset(String),
}

impl<'a> Registry<'a> {
    pub fn new(
        resources: &[&'a Resource],
        instance: &'a Instance,
        diags: &mut Vec<Diagnostic>,
    ) -> Self {
        let mut services: HashMap<String, Service<'a>> = HashMap::new();
        let mut rules = Vec::new();
        for r in resources {
            match r {
                Resource::ServiceEntry(se) if instance.sees(&se.namespace, &se.spec.export_to) => {
                    for (i, h) in se.spec.hosts.iter().enumerate() {
                        let host = complete(h, &se.namespace, &instance.domain_suffix);
                        if let Some(first) = services.get(&host) {
                            diags.push(subject(r).warning(
                                &format!("spec.hosts[{i}]"),
                                format!(
                                    "host {host} is already defined by ServiceEntry {}/{}; this definition is ignored",
                                    first.namespace, first.entry.name
                                ),
                            ));
                            continue;
                        }
                        services.insert(
                            host,
                            Service {
                                namespace: &se.namespace,
                                entry: se,
                            },
                        );
                    }
                }
                Resource::DestinationRule(dr)
                    if instance.sees(&dr.namespace, &dr.spec.export_to) =>
                {
                    let host = complete(
                        dr.spec.host.as_deref().unwrap_or(""),
                        &dr.namespace,
                        &instance.domain_suffix,
                    );
                    rules.push(Rule {
                        namespace: &dr.namespace,
                        host,
                        policy: dr.spec.traffic_policy.as_ref(),
                        subsets: &dr.spec.subsets,
                        health_check: dr
                            .meta
                            .annotations
                            .get(policy::HEALTH_CHECK_ANNOTATION)
                            .map(String::as_str),
                    });
                }
                _ => {}
            }
        }
        Registry {
            instance,
            services,
            rules,
            clusters: Vec::new(),
            by_name: HashMap::new(),
            secrets: Secrets::new(resources, &instance.namespace),
            memo: RouteMemo::default(),
            journal: None,
        }
    }

    /// Starts recording the clusters asked for.
    pub(super) fn record(&mut self) {
        self.journal = Some(Journal::default());
    }

    /// Stops recording: the clusters asked for since [`Registry::record`], in order.
    pub(super) fn recorded(&mut self) -> Vec<ClusterCall> {
        self.journal
            .take()
            .map(Journal::into_calls)
            .unwrap_or_default()
    }

    /// Asks for `calls`' clusters again, in order; whether each got what it got then.
    /// Stops at the first that did not.
    pub(super) fn replay(&mut self, calls: &[ClusterCall]) -> bool {
        calls.iter().all(|c| {
            let got = self.find_or_add(&c.host, c.port, c.subset.as_deref());
            Outcome::of(&got) == c.outcome
        })
    }

    pub fn into_clusters(self) -> Vec<Cluster> {
        self.clusters
    }

    pub fn domain_suffix(&self) -> &str {
        &self.instance.domain_suffix
    }

    /// The number of the port named `name` of service `host` (a Kubernetes Service's named
    /// port, which file mode finds among the ServiceEntry's ports).
    pub fn port_named(&self, host: &str, name: &str) -> Option<u16> {
        let svc = self.services.get(host)?;
        svc.entry
            .spec
            .ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name))
            .and_then(|p| p.number)
            .and_then(|n| u16::try_from(n).ok())
    }

    /// The cluster for a destination, made on first use. `port` is the destination's port if
    /// it names one.
    pub fn cluster(
        &mut self,
        host: &str,
        port: Option<u16>,
        subset: Option<&str>,
    ) -> Result<(String, usize), Unresolved> {
        let Some(journal) = &self.journal else {
            return self.find_or_add(host, port, subset);
        };
        // Asking again for a cluster already asked for gets the same answer, so while a
        // VirtualService compiles each is looked up once (its routes usually share a few).
        if let Some(asked) = journal.find(host, port, subset) {
            return asked.outcome.answer();
        }
        let got = self.find_or_add(host, port, subset);
        if let Some(journal) = &mut self.journal {
            journal.push(ClusterCall {
                host: host.to_string(),
                port,
                subset: subset.map(str::to_string),
                outcome: Outcome::of(&got),
            });
        }
        got
    }

    fn find_or_add(
        &mut self,
        host: &str,
        port: Option<u16>,
        subset: Option<&str>,
    ) -> Result<(String, usize), Unresolved> {
        let svc = self.services.get(host).ok_or(Unresolved::UnknownHost)?;
        let sp = pick_port(&svc.entry.spec.ports, port).map_err(Unresolved::Port)?;
        let number = sp.number.and_then(|n| u16::try_from(n).ok()).unwrap_or(0);
        let name = format!("outbound|{number}|{}|{host}", subset.unwrap_or(""));
        if let Some(i) = self.by_name.get(&name) {
            return Ok((name, *i));
        }
        let labels = match subset {
            None => BTreeMap::new(),
            Some(s) => self.subset_labels(host, svc.namespace, s).ok_or_else(|| {
                Unresolved::Subset(format!(
                    "subset {s:?} is not defined by any DestinationRule for host {host}; requests to it answer 503"
                ))
            })?,
        };
        let (policy, endpoints) = self.policy(host, svc, sp, number, subset, &labels);
        let cluster = Cluster {
            name: name.clone(),
            service: host.to_string(),
            service_namespace: svc.namespace.to_string(),
            port: number,
            subset: subset.map(str::to_string),
            endpoints,
            policy,
            protocol: self.upstream_protocol(host, svc.namespace, number, sp, subset),
            tls: self
                .client_tls(host, svc.namespace, number, subset)
                .and_then(|t| upstream_tls(t, &self.secrets)),
        };
        let i = self.clusters.len();
        self.clusters.push(cluster);
        self.by_name.insert(name.clone(), i);
        Ok((name, i))
    }

    /// Clusters for every port of every ServiceEntry host, for the registry of forward-proxy
    /// ports: `(host, port, cluster name, cluster index)`, sorted by host and port.
    pub fn all_services(&mut self) -> Vec<(String, u16, String, usize)> {
        let mut wanted: Vec<(String, u16)> = self
            .services
            .iter()
            .flat_map(|(host, svc)| {
                svc.entry
                    .spec
                    .ports
                    .iter()
                    .filter_map(|p| p.number.and_then(|n| u16::try_from(n).ok()))
                    .map(move |n| (host.clone(), n))
            })
            .collect();
        wanted.sort();
        wanted
            .into_iter()
            .filter_map(|(host, port)| {
                let (name, i) = self.cluster(&host, Some(port), None).ok()?;
                Some((host, port, name, i))
            })
            .collect()
    }

    /// Istio's `PassthroughCluster`: each request goes to the host and port it names.
    pub fn passthrough(&mut self) -> (String, usize) {
        let name = crate::egress::PASSTHROUGH_CLUSTER.to_string();
        if let Some(i) = self.by_name.get(&name) {
            return (name, *i);
        }
        let i = self.clusters.len();
        self.clusters.push(Cluster {
            name: name.clone(),
            service: name.clone(),
            service_namespace: String::new(),
            port: 0,
            subset: None,
            endpoints: EndpointSource::OriginalDestination { port: None },
            protocol: UpstreamProtocol::Http1,
            tls: None,
            policy: policy::cluster_policy(None, None, None, None),
        });
        self.by_name.insert(name.clone(), i);
        (name, i)
    }

    /// The traffic policy of a cluster, and its endpoints with priorities and weights by
    /// locality.
    fn policy(
        &self,
        host: &str,
        svc: &Service<'a>,
        sp: &ServicePort,
        port: u16,
        subset: Option<&str>,
        labels: &BTreeMap<String, String>,
    ) -> (ClusterPolicy, EndpointSource) {
        let ns = svc.namespace;
        let lb = self.merged(
            host,
            ns,
            port,
            subset,
            |p| p.load_balancer.as_ref(),
            |l| l.load_balancer.as_ref(),
        );
        let outlier = self.merged(
            host,
            ns,
            port,
            subset,
            |p| p.outlier_detection.as_ref(),
            |l| l.outlier_detection.as_ref(),
        );
        let health_check = self
            .rules_for(host, ns)
            .iter()
            .find_map(|r| r.health_check)
            .and_then(|text| policy::health_check(text).ok());
        let pool = self.connection_pool(host, ns, port, subset);
        let compiled = policy::cluster_policy(lb, pool, outlier, health_check);
        let failover = compiled.outlier.is_some() || compiled.health_check.is_some();
        let setting = lb.and_then(|l| l.locality_lb_setting.as_ref());
        let mut source = endpoints(svc.entry, sp, labels);
        match &mut source {
            EndpointSource::Static(eps) => {
                let placed: Vec<_> = eps
                    .iter()
                    .map(|e| policy::Placed {
                        locality: e.locality.as_deref(),
                        labels: &e.labels,
                        weight: e.weight,
                    })
                    .collect();
                let out = policy::place(self.instance, setting, failover, &placed);
                for (e, (priority, weight)) in eps.iter_mut().zip(out) {
                    e.priority = priority;
                    e.weight = weight;
                }
            }
            EndpointSource::Dns(targets) => {
                let placed: Vec<_> = targets
                    .iter()
                    .map(|e| policy::Placed {
                        locality: e.locality.as_deref(),
                        labels: &e.labels,
                        weight: e.weight,
                    })
                    .collect();
                let out = policy::place(self.instance, setting, failover, &placed);
                for (e, (priority, weight)) in targets.iter_mut().zip(out) {
                    e.priority = priority;
                    e.weight = weight;
                }
            }
            // One endpoint per request, chosen by the request itself.
            EndpointSource::OriginalDestination { .. } => {}
        }
        (compiled, source)
    }

    /// Subset labels from the DestinationRules that apply to `host`, searched as Istio does for a
    /// gateway: the gateway's namespace, then the service's, then the root namespace.
    fn subset_labels(
        &self,
        host: &str,
        service_ns: &str,
        subset: &str,
    ) -> Option<BTreeMap<String, String>> {
        let order = [self.instance.namespace.as_str(), service_ns, ROOT_NAMESPACE];
        order.iter().find_map(|ns| {
            self.rules
                .iter()
                .filter(|r| r.namespace == *ns && covers(&r.host, host))
                .flat_map(|r| r.subsets.iter())
                .find(|s| s.name.as_deref() == Some(subset))
                .map(|s| s.labels.clone())
        })
    }

    /// The HTTP version for a service port, as Istio's cluster builder decides it:
    /// `useClientProtocol` first, then HTTP/2 for HTTP2, GRPC and GRPC-WEB ports, then
    /// `h2UpgradePolicy: UPGRADE` (the mesh default is DO_NOT_UPGRADE).
    fn upstream_protocol(
        &self,
        host: &str,
        service_ns: &str,
        port: u16,
        sp: &ServicePort,
        subset: Option<&str>,
    ) -> UpstreamProtocol {
        let http = self
            .connection_pool(host, service_ns, port, subset)
            .and_then(|cp| cp.http.as_ref());
        if http.and_then(|h| h.use_client_protocol) == Some(true) {
            return UpstreamProtocol::Client;
        }
        let h2_port = sp.protocol.as_deref().is_some_and(|p| {
            ["HTTP2", "GRPC", "GRPC-WEB"]
                .iter()
                .any(|h2| p.eq_ignore_ascii_case(h2))
        });
        let upgrade = http.and_then(|h| h.h2_upgrade_policy.as_deref()) == Some("UPGRADE");
        if h2_port || upgrade {
            UpstreamProtocol::Http2
        } else {
            UpstreamProtocol::Http1
        }
    }

    /// The connection pool settings for a port (and subset) of `host`.
    fn connection_pool(
        &self,
        host: &str,
        service_ns: &str,
        port: u16,
        subset: Option<&str>,
    ) -> Option<&'a ConnectionPoolSettings> {
        self.merged(
            host,
            service_ns,
            port,
            subset,
            |p| p.connection_pool.as_ref(),
            |l| l.connection_pool.as_ref(),
        )
    }

    /// The client TLS settings for a port (and subset) of `host`.
    fn client_tls(
        &self,
        host: &str,
        service_ns: &str,
        port: u16,
        subset: Option<&str>,
    ) -> Option<&'a ClientTlsSettings> {
        self.merged(
            host,
            service_ns,
            port,
            subset,
            |p| p.tls.as_ref(),
            |l| l.tls.as_ref(),
        )
    }

    /// One part of the traffic policy for a port (and subset) of `host`, merged as Istio does:
    /// a matching `portLevelSettings` entry replaces the top-level value, a subset's value
    /// replaces both, and a subset's matching port-level entry replaces those.
    fn merged<T>(
        &self,
        host: &str,
        service_ns: &str,
        port: u16,
        subset: Option<&str>,
        top_level: impl Fn(&'a TrafficPolicy) -> Option<&'a T>,
        port_level: impl Fn(&'a PortTrafficPolicy) -> Option<&'a T>,
    ) -> Option<&'a T> {
        let rules = self.rules_for(host, service_ns);
        let at_port = |p: &'a TrafficPolicy| -> Option<Option<&'a T>> {
            p.port_level_settings
                .iter()
                .find(|l| l.port.as_ref().and_then(|s| s.number) == Some(u32::from(port)))
                .map(&port_level)
        };
        let top = rules.iter().find_map(|r| r.policy);
        let mut value = top.and_then(|p| at_port(p).unwrap_or(top_level(p)));
        let subset_policy = subset.and_then(|name| {
            rules
                .iter()
                .flat_map(|r| r.subsets.iter())
                .find(|s| s.name.as_deref() == Some(name))
                .and_then(|s| s.traffic_policy.as_ref())
        });
        if let Some(p) = subset_policy {
            if let Some(v) = top_level(p) {
                value = Some(v);
            }
            if let Some(at) = at_port(p) {
                value = at;
            }
        }
        value
    }

    /// The DestinationRules that apply to `host`: those of the first namespace (the gateway's,
    /// the service's, then the root namespace) that has any, for the most specific host.
    fn rules_for(&self, host: &str, service_ns: &str) -> Vec<&Rule<'a>> {
        let order = [self.instance.namespace.as_str(), service_ns, ROOT_NAMESPACE];
        for ns in order {
            let covering: Vec<&Rule<'a>> = self
                .rules
                .iter()
                .filter(|r| r.namespace == ns && covers(&r.host, host))
                .collect();
            let Some(best) = covering.iter().map(|r| specificity(&r.host)).max() else {
                continue;
            };
            return covering
                .into_iter()
                .filter(|r| specificity(&r.host) == best)
                .collect();
        }
        Vec::new()
    }

    /// Reports DestinationRules whose host matches no known service (Istio ignores them).
    pub fn check_rules(&self, resources: &[&Resource], diags: &mut Vec<Diagnostic>) {
        for r in resources {
            let Resource::DestinationRule(dr) = r else {
                continue;
            };
            let host = complete(
                dr.spec.host.as_deref().unwrap_or(""),
                &dr.namespace,
                &self.instance.domain_suffix,
            );
            if !self.services.keys().any(|h| covers(&host, h)) {
                diags.push(subject(r).note(
                    "spec.host",
                    format!(
                        "no ServiceEntry defines host {host}; the DestinationRule has no effect"
                    ),
                ));
            }
            check_tls(
                r,
                &dr.spec.traffic_policy,
                "spec.trafficPolicy",
                &self.secrets,
                diags,
            );
            for (i, s) in dr.spec.subsets.iter().enumerate() {
                let at = format!("spec.subsets[{i}].trafficPolicy");
                check_tls(r, &s.traffic_policy, &at, &self.secrets, diags);
            }
        }
    }
}

/// Warnings for `tls` settings the gateway cannot act on as written.
fn check_tls(
    r: &Resource,
    policy: &Option<TrafficPolicy>,
    at: &str,
    secrets: &Secrets<'_>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(p) = policy else { return };
    let mut all: Vec<(String, &ClientTlsSettings)> = Vec::new();
    if let Some(t) = &p.tls {
        all.push((format!("{at}.tls"), t));
    }
    for (i, l) in p.port_level_settings.iter().enumerate() {
        if let Some(t) = &l.tls {
            all.push((format!("{at}.portLevelSettings[{i}].tls"), t));
        }
    }
    for (path, t) in all {
        let mode = t.mode.as_deref().unwrap_or("DISABLE");
        match mode {
            "ISTIO_MUTUAL" => diags.push(subject(r).warning(
                &format!("{path}.mode"),
                "ISTIO_MUTUAL needs the mesh's workload certificates, which a standalone gateway does not have; requests go out in plaintext".to_string(),
            )),
            "SIMPLE" | "MUTUAL" => {
                if let Some(name) = t.credential_name.as_deref() {
                    if let Err(e) = credential(secrets, name, mode == "MUTUAL") {
                        let field = format!("{path}.credentialName");
                        diags.push(match e {
                            SecretError::Missing(m) => subject(r).warning(
                                &field,
                                format!("{m}; requests to the destination answer 503 until it is"),
                            ),
                            SecretError::Invalid(m) => subject(r).error(
                                &field,
                                format!("{m}; requests to the destination answer 503"),
                            ),
                        });
                    }
                } else if mode == "MUTUAL"
                    && (t.client_certificate.is_none() || t.private_key.is_none())
                {
                    diags.push(subject(r).warning(
                        &format!("{path}.clientCertificate"),
                        "MUTUAL needs clientCertificate and privateKey (or credentialName); no client certificate is presented".to_string(),
                    ));
                }
            }
            _ => {}
        }
    }
}

/// The CA and client certificate a `credentialName` Secret holds: `ca.crt` (or `cacert`, or
/// a `<name>-cacert` Secret) and, for MUTUAL, `tls.crt`/`tls.key` (or `cert`/`key`).
fn credential(
    secrets: &Secrets<'_>,
    name: &str,
    mutual: bool,
) -> Result<(Option<PemSource>, Option<CertificateSource>), SecretError> {
    if mutual {
        let (certificate, private_key, ca) = secrets.certificate(name)?;
        return Ok((
            ca,
            Some(CertificateSource {
                certificate,
                private_key,
            }),
        ));
    }
    secrets.exists(name)?;
    let ca = secrets
        .inline(name, &["ca.crt", "cacert"])
        .or_else(|| secrets.ca(&format!("{name}-cacert")));
    Ok((ca, None))
}

/// The TLS a cluster originates for `tls`: SIMPLE and MUTUAL, from files or from a
/// `credentialName` Secret (which then replaces the file fields, as in Istio). DISABLE, unset
/// and ISTIO_MUTUAL (which needs the mesh's certificates) open plaintext.
fn upstream_tls(tls: &ClientTlsSettings, secrets: &Secrets<'_>) -> Option<UpstreamTls> {
    let mode = tls.mode.as_deref().unwrap_or("DISABLE");
    let mutual = match mode {
        "SIMPLE" => false,
        "MUTUAL" => true,
        _ => return None,
    };
    let mut unavailable = None;
    let (ca, client_certificate) = match tls.credential_name.as_deref() {
        Some(name) => credential(secrets, name, mutual).unwrap_or_else(|e| {
            unavailable = Some(match e {
                SecretError::Missing(m) | SecretError::Invalid(m) => m,
            });
            (None, None)
        }),
        None => (
            tls.ca_certificates
                .as_ref()
                .map(|p| PemSource::File(p.into())),
            match (mutual, &tls.client_certificate, &tls.private_key) {
                (true, Some(cert), Some(key)) => Some(CertificateSource {
                    certificate: PemSource::File(cert.into()),
                    private_key: PemSource::File(key.into()),
                }),
                _ => None,
            },
        ),
    };
    Some(UpstreamTls {
        ca,
        client_certificate,
        sni: tls.sni.clone().filter(|s| !s.is_empty()),
        subject_alt_names: tls.subject_alt_names.clone(),
        insecure_skip_verify: tls.insecure_skip_verify.unwrap_or(false),
        unavailable,
    })
}

/// An exact host beats any wildcard; a longer wildcard beats a shorter one.
fn specificity(host: &str) -> (bool, usize) {
    (!host.starts_with('*'), host.len())
}

fn pick_port(ports: &[ServicePort], wanted: Option<u16>) -> Result<&ServicePort, String> {
    match wanted {
        Some(n) => ports
            .iter()
            .find(|p| p.number == Some(u32::from(n)))
            .ok_or_else(|| format!("the service has no port {n}; requests to it answer 503")),
        None => match ports {
            [only] => Ok(only),
            [] => Err("the service declares no port; requests to it answer 503".into()),
            _ => Err(format!(
                "the service has {} ports, so the destination must name one (port.number); requests to it answer 503",
                ports.len()
            )),
        },
    }
}

fn endpoints(
    se: &Object<ServiceEntrySpec>,
    port: &ServicePort,
    subset: &BTreeMap<String, String>,
) -> EndpointSource {
    let number = port.number.unwrap_or(0);
    let default_port = port.target_port.unwrap_or(number);
    let port_of = |e: &isthmus_api::istio::service_entry::WorkloadEntry| -> u16 {
        let p = port
            .name
            .as_ref()
            .and_then(|n| e.ports.get(n))
            .copied()
            .unwrap_or(default_port);
        u16::try_from(p).unwrap_or(0)
    };
    let selected = se
        .spec
        .endpoints
        .iter()
        .filter(|e| subset.iter().all(|(k, v)| e.labels.get(k) == Some(v)));
    let resolution = se.spec.resolution.as_deref().unwrap_or("NONE");
    match resolution {
        // Envoy's ORIGINAL_DST (NONE) and dynamic forward proxy (DYNAMIC_DNS) clusters: the
        // address comes from each request; endpoints are not used (validation rejects them).
        "NONE" | "DYNAMIC_DNS" => EndpointSource::OriginalDestination {
            port: u16::try_from(default_port).ok(),
        },
        "DNS" | "DNS_ROUND_ROBIN" => {
            let first_only = resolution == "DNS_ROUND_ROBIN";
            let mut targets: Vec<DnsTarget> = selected
                .filter_map(|e| {
                    Some(DnsTarget {
                        hostname: e.address.clone()?,
                        port: port_of(e),
                        first_only,
                        labels: e.labels.clone(),
                        locality: e.locality.clone(),
                        weight: e.weight.unwrap_or(1),
                        priority: 0,
                    })
                })
                .collect();
            if se.spec.endpoints.is_empty() {
                targets = se
                    .spec
                    .hosts
                    .iter()
                    .filter(|h| !h.contains('*'))
                    .map(|h| DnsTarget {
                        hostname: h.clone(),
                        port: u16::try_from(default_port).unwrap_or(0),
                        first_only,
                        labels: BTreeMap::new(),
                        locality: None,
                        weight: 1,
                        priority: 0,
                    })
                    .collect();
            }
            EndpointSource::Dns(targets)
        }
        _ => EndpointSource::Static(
            selected
                .filter_map(|e| {
                    let ip: IpAddr = e.address.as_deref()?.parse().ok()?;
                    Some(Endpoint {
                        address: SocketAddr::new(ip, port_of(e)),
                        labels: e.labels.clone(),
                        locality: e.locality.clone(),
                        weight: e.weight.unwrap_or(1),
                        priority: 0,
                    })
                })
                .collect(),
        ),
    }
}

/// Reports ServiceEntry endpoints this version does not serve.
pub fn check_service_entries(resources: &[&Resource], diags: &mut Vec<Diagnostic>) {
    for r in resources {
        let Resource::ServiceEntry(se) = r else {
            continue;
        };
        let s: Subject<'_> = subject(r);
        for (i, e) in se.spec.endpoints.iter().enumerate() {
            if e.address
                .as_deref()
                .is_some_and(|a| a.starts_with("unix://"))
            {
                diags.push(s.warning(
                    &format!("spec.endpoints[{i}].address"),
                    "unix socket endpoints are not served by this version of Isthmus; endpoint ignored",
                ));
            }
        }
    }
}
