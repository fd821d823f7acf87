//! TLS ports and TCP ports: one filter chain per HTTPS/TLS server (TLS settings, and HTTP,
//! TCP or passthrough routes), and the TCP routes of TCP ports.

use std::sync::Arc;

use isthmus_api::istio::gateway::ServerTlsSettings;
use isthmus_api::istio::virtual_service::{RouteDestination, VirtualServiceSpec};
use isthmus_api::{Diagnostic, Object, Resource};

use super::listeners::ServerRef;
use super::routes::{MESH, gateway_ref, http_table, mesh_hosts, weighted_destination};
use super::secrets::{SecretError, Secrets};
use super::services::Registry;
use crate::diag::{Subject, subject};
use crate::egress::{PortScoped, TunnelRules};
use crate::hosts::{complete, intersect};
use crate::instance::Instance;
use crate::snapshot::{Forward, Source};
use crate::tls::{
    CertificateSource, ChainRoutes, ChainTls, ClientAuth, ClientCertChecks, FilterChain, PemSource,
    TcpRoute, TlsRoute, TlsTermination, TlsVersion, parse_certificate_hash, parse_spki_pin,
};

/// The filter chain of one HTTPS or TLS server.
pub fn chain(
    resources: &[&Resource],
    instance: &Instance,
    port: u16,
    server: &ServerRef<'_>,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Option<FilterChain> {
    let s = subject(server.resource);
    let Some(settings) = &server.server.tls else {
        diags.push(s.error(
            &format!("{}.tls", server.field),
            format!(
                "a {} server needs a tls block; server skipped",
                server.protocol
            ),
        ));
        return None;
    };
    let tls = termination(&s, &server.field, settings, resources, instance, diags)?;
    let routes = match (&tls, server.protocol.as_str()) {
        (ChainTls::Passthrough, _) => ChainRoutes::Tls(tls_routes(
            resources, instance, port, server, registry, diags,
        )),
        (ChainTls::Terminate(_), "HTTPS") => ChainRoutes::Http(http_table(
            resources,
            instance,
            port,
            &[server],
            registry,
            diags,
        )),
        (ChainTls::Terminate(_), _) => ChainRoutes::Tcp(tcp_routes(
            resources,
            instance,
            port,
            &[server],
            registry,
            diags,
        )),
    };
    Some(FilterChain {
        key: server.key.clone(),
        server_names: server.hosts.iter().map(|h| h.host.clone()).collect(),
        tls,
        routes,
    })
}

/// The TLS mode and certificates of a server. `None` (with a diagnostic) when it cannot be
/// served.
fn termination(
    s: &Subject<'_>,
    field: &str,
    t: &ServerTlsSettings,
    resources: &[&Resource],
    instance: &Instance,
    diags: &mut Vec<Diagnostic>,
) -> Option<ChainTls> {
    let f = format!("{field}.tls");
    // Istio's TLSmode zero value is PASSTHROUGH: a tls block without a mode passes through.
    let mode = t
        .mode
        .as_deref()
        .unwrap_or("PASSTHROUGH")
        .to_ascii_uppercase();
    let client_auth = match mode.as_str() {
        "PASSTHROUGH" => return Some(ChainTls::Passthrough),
        "SIMPLE" => ClientAuth::None,
        "MUTUAL" => ClientAuth::Required,
        "OPTIONAL_MUTUAL" => ClientAuth::Optional,
        "AUTO_PASSTHROUGH" | "ISTIO_MUTUAL" => {
            diags.push(s.warning(
                &format!("{f}.mode"),
                format!("{mode} needs Istio's mesh identity and SNI conventions, which a standalone gateway does not have; server skipped"),
            ));
            return None;
        }
        other => {
            diags.push(s.error(
                &format!("{f}.mode"),
                format!("unknown TLS mode {other:?}; server skipped"),
            ));
            return None;
        }
    };
    let secrets = Secrets::new(resources, &instance.namespace);
    let mut certificates = Vec::new();
    let mut ca: Option<PemSource> = None;
    let mut names: Vec<&str> = t.credential_names.iter().map(String::as_str).collect();
    if let Some(n) = t.credential_name.as_deref() {
        names.insert(0, n);
    }
    for (i, name) in names.iter().enumerate() {
        let cf = if t.credential_name.is_some() && i == 0 {
            format!("{f}.credentialName")
        } else {
            format!("{f}.credentialNames")
        };
        match secrets.certificate(name) {
            Ok((cert, key, secret_ca)) => {
                certificates.push(CertificateSource {
                    certificate: cert,
                    private_key: key,
                });
                ca = ca.or(secret_ca);
            }
            // A Secret that is not there yet is a reference to something not loaded (as a
            // Service would be): the server waits for it, as Istio's does.
            Err(SecretError::Missing(msg)) => {
                diags.push(s.warning(&cf, format!("{msg}; the server is not served until it is")));
                return None;
            }
            Err(SecretError::Invalid(msg)) => {
                diags.push(s.error(&cf, format!("{msg}; server skipped")));
                return None;
            }
        }
    }
    for c in &t.tls_certificates {
        if let (Some(cert), Some(key)) = (&c.server_certificate, &c.private_key) {
            certificates.push(CertificateSource {
                certificate: PemSource::File(cert.into()),
                private_key: PemSource::File(key.into()),
            });
        }
    }
    if let (Some(cert), Some(key)) = (&t.server_certificate, &t.private_key) {
        certificates.push(CertificateSource {
            certificate: PemSource::File(cert.into()),
            private_key: PemSource::File(key.into()),
        });
    }
    if certificates.is_empty() {
        diags.push(s.error(
            &f,
            format!("{mode} needs a certificate: credentialName, credentialNames, tlsCertificates or serverCertificate with privateKey; server skipped"),
        ));
        return None;
    }
    if let Some(n) = t.ca_cert_credential_name.as_deref() {
        match secrets.ca(n) {
            Some(p) => ca = Some(p),
            None => diags.push(s.error(
                &format!("{f}.caCertCredentialName"),
                format!("no Secret {}/{n} with ca.crt or cacert", instance.namespace),
            )),
        }
    }
    if let Some(path) = &t.ca_certificates {
        ca = Some(PemSource::File(path.into()));
    }
    if client_auth != ClientAuth::None && ca.is_none() {
        diags.push(s.error(&f, format!("{mode} needs a CA to verify client certificates (caCertificates, ca.crt in the Secret, or a <name>-cacert Secret); server skipped")));
        return None;
    }
    let version =
        |v: Option<&String>, field: &str, default: TlsVersion, diags: &mut Vec<Diagnostic>| match v
            .map(|v| v.to_ascii_uppercase())
            .as_deref()
        {
            None | Some("TLS_AUTO") => default,
            Some("TLSV1_2") => TlsVersion::V12,
            Some("TLSV1_3") => TlsVersion::V13,
            Some(other) => {
                diags.push(s.warning(
                    &format!("{f}.{field}"),
                    format!("{other} is not offered (TLS 1.2 is the lowest version served)"),
                ));
                TlsVersion::V12
            }
        };
    let min_version = version(
        t.min_protocol_version.as_ref(),
        "minProtocolVersion",
        TlsVersion::V12,
        diags,
    );
    let max_version = version(
        t.max_protocol_version.as_ref(),
        "maxProtocolVersion",
        TlsVersion::V13,
        diags,
    );
    if min_version > max_version {
        diags.push(s.error(
            &f,
            "minProtocolVersion is above maxProtocolVersion; server skipped",
        ));
        return None;
    }
    let mut cipher_suites = Vec::new();
    for (i, name) in t.cipher_suites.iter().enumerate() {
        match cipher_suite(name) {
            Some(rustls_name) => cipher_suites.push(rustls_name.to_string()),
            None => diags.push(s.warning(
                &format!("{f}.cipherSuites[{i}]"),
                format!("cipher suite {name:?} is not offered (only AEAD suites are: ECDHE-ECDSA/RSA-AES128/256-GCM-SHA256/384 and -CHACHA20-POLY1305); ignored"),
            )),
        }
    }
    Some(ChainTls::Terminate(TlsTermination {
        client_auth,
        certificates,
        client_ca: ca,
        min_version,
        max_version,
        cipher_suites,
        client_checks: client_checks(s, &f, t, client_auth, diags),
    }))
}

/// `subjectAltNames` and the certificate pins. Their syntax is checked by validation (a bad
/// pin rejects the Gateway), so unreadable ones cannot reach here.
fn client_checks(
    s: &Subject<'_>,
    f: &str,
    t: &ServerTlsSettings,
    client_auth: ClientAuth,
    diags: &mut Vec<Diagnostic>,
) -> ClientCertChecks {
    if client_auth == ClientAuth::None {
        // SIMPLE requests no client certificate, so there is nothing to check.
        for (field, set) in [
            ("subjectAltNames", !t.subject_alt_names.is_empty()),
            (
                "verifyCertificateSpki",
                !t.verify_certificate_spki.is_empty(),
            ),
            (
                "verifyCertificateHash",
                !t.verify_certificate_hash.is_empty(),
            ),
        ] {
            if set {
                diags.push(s.warning(
                    &format!("{f}.{field}"),
                    "client certificates are checked in MUTUAL and OPTIONAL_MUTUAL modes only; ignored in SIMPLE",
                ));
            }
        }
        return ClientCertChecks::default();
    }
    ClientCertChecks {
        subject_alt_names: t.subject_alt_names.clone(),
        spki_sha256: t
            .verify_certificate_spki
            .iter()
            .filter_map(|p| parse_spki_pin(p).ok())
            .collect(),
        cert_sha256: t
            .verify_certificate_hash
            .iter()
            .filter_map(|p| parse_certificate_hash(p).ok())
            .collect(),
    }
}

/// Envoy (BoringSSL) cipher names users write, mapped to rustls' TLS 1.2 suites.
fn cipher_suite(name: &str) -> Option<&'static str> {
    Some(match name {
        "ECDHE-ECDSA-AES128-GCM-SHA256" => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384" => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256" => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384" => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305" => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        "ECDHE-RSA-CHACHA20-POLY1305" => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => return None,
    })
}

/// VirtualServices bound to `server`'s Gateway whose hosts intersect the server's.
fn bound<'a>(
    resources: &[&'a Resource],
    instance: &Instance,
    server: &ServerRef<'_>,
) -> Vec<(&'a Resource, &'a Object<VirtualServiceSpec>, Vec<String>)> {
    resources
        .iter()
        .filter_map(|r| match r {
            Resource::VirtualService(vs) if instance.sees(&vs.namespace, &vs.spec.export_to) => {
                Some((*r, vs))
            }
            _ => None,
        })
        .filter(|(_, vs)| {
            vs.spec.gateways.iter().any(|g| {
                gateway_ref(g, &vs.namespace)
                    == (
                        server.gateway_ns.to_string(),
                        server.gateway_name.to_string(),
                    )
            })
        })
        .filter_map(|(r, vs)| {
            let hosts: Vec<String> = vs
                .spec
                .hosts
                .iter()
                .map(|h| complete(h, &vs.namespace, &instance.domain_suffix))
                .flat_map(|h| {
                    server
                        .hosts
                        .iter()
                        .filter(|sh| sh.namespace.as_deref().is_none_or(|n| n == vs.namespace))
                        .filter_map(move |sh| intersect(&sh.host, &h))
                })
                .collect();
            (!hosts.is_empty()).then_some((r, vs, hosts))
        })
        .collect()
}

fn matches_gateway(gateways: &[String], vs_ns: &str, server: &ServerRef<'_>) -> bool {
    gateways.is_empty()
        || gateways.iter().any(|g| {
            gateway_ref(g, vs_ns)
                == (
                    server.gateway_ns.to_string(),
                    server.gateway_name.to_string(),
                )
        })
}

fn l4_forward(
    s: &Subject<'_>,
    field: &str,
    dests: &[RouteDestination],
    ns: &str,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Forward {
    let count = dests.len();
    let dests = dests
        .iter()
        .enumerate()
        .map(|(j, d)| {
            weighted_destination(
                s,
                field,
                j,
                count,
                d.destination.as_ref(),
                d.weight,
                ns,
                registry,
                diags,
            )
        })
        .collect();
    Forward::new(dests)
}

/// The `tls[]` rules for a passthrough server, in VirtualService creation order.
fn tls_routes(
    resources: &[&Resource],
    instance: &Instance,
    port: u16,
    server: &ServerRef<'_>,
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<TlsRoute> {
    let mut out = Vec::new();
    for (r, vs, hosts) in bound(resources, instance, server) {
        let s = subject(r);
        for (i, rule) in vs.spec.tls.iter().enumerate() {
            let mut sni = Vec::new();
            for m in &rule.matches {
                if !matches_gateway(&m.gateways, &vs.namespace, server)
                    || m.port.is_some_and(|p| p != u32::from(port))
                {
                    continue;
                }
                for name in &m.sni_hosts {
                    let name = name.to_ascii_lowercase();
                    sni.extend(hosts.iter().filter_map(|h| intersect(h, &name)));
                }
            }
            if sni.is_empty() {
                continue;
            }
            sni.sort();
            sni.dedup();
            let forward = l4_forward(
                &s,
                &format!("spec.tls[{i}]"),
                &rule.route,
                &vs.namespace,
                registry,
                diags,
            );
            out.push(TlsRoute {
                virtual_service: format!("{}/{}", vs.namespace, vs.name),
                source: Arc::new(Source::of(r, &format!("spec.tls[{i}]"))),
                sni_hosts: sni,
                forward,
            });
        }
    }
    out
}

/// The `tcp[]` rules for TCP servers (or terminated TLS servers), in creation order.
pub fn tcp_routes(
    resources: &[&Resource],
    instance: &Instance,
    port: u16,
    servers: &[&ServerRef<'_>],
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<TcpRoute> {
    let mut out = Vec::new();
    let mut seen: std::collections::BTreeSet<(String, String)> = Default::default();
    for server in servers {
        for (r, vs, _) in bound(resources, instance, server) {
            if !seen.insert((vs.namespace.clone(), vs.name.clone())) {
                continue;
            }
            let s = subject(r);
            for (i, rule) in vs.spec.tcp.iter().enumerate() {
                let applies = rule.matches.is_empty()
                    || rule.matches.iter().any(|m| {
                        matches_gateway(&m.gateways, &vs.namespace, server)
                            && m.port.is_none_or(|p| p == u32::from(port))
                    });
                if !applies {
                    continue;
                }
                let forward = l4_forward(
                    &s,
                    &format!("spec.tcp[{i}]"),
                    &rule.route,
                    &vs.namespace,
                    registry,
                    diags,
                );
                out.push(TcpRoute {
                    virtual_service: format!("{}/{}", vs.namespace, vs.name),
                    source: Arc::new(Source::of(r, &format!("spec.tcp[{i}]"))),
                    forward,
                });
            }
        }
    }
    out
}

/// The `tls` and `tcp` rules of mesh VirtualServices for the CONNECT tunnels of a
/// forward-proxy port (`servers`), one entry per host they give the forward-proxy servers. A
/// match applies when its `gateways` are empty (the VirtualService's, which include the mesh)
/// or name `mesh`; `tls` matches need `sniHosts`, kept where the host covers them.
pub fn mesh_tunnels(
    resources: &[&Resource],
    instance: &Instance,
    servers: &[&ServerRef<'_>],
    registry: &mut Registry<'_>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<TunnelRules> {
    let for_mesh = |gateways: &[String]| gateways.is_empty() || gateways.iter().any(|g| g == MESH);
    let mut out = Vec::new();
    for r in resources {
        let Resource::VirtualService(vs) = r else {
            continue;
        };
        if (vs.spec.tls.is_empty() && vs.spec.tcp.is_empty())
            || !instance.sees(&vs.namespace, &vs.spec.export_to)
        {
            continue;
        }
        let hosts = mesh_hosts(vs, servers, instance);
        if hosts.is_empty() {
            continue;
        }
        let s = subject(r);
        let name = format!("{}/{}", vs.namespace, vs.name);
        // (rule index, matches as (port, sniHosts)), for the rules with a mesh match.
        let mut tls = Vec::new();
        for (i, rule) in vs.spec.tls.iter().enumerate() {
            let matches: Vec<(Option<u16>, Vec<String>)> = rule
                .matches
                .iter()
                .filter(|m| for_mesh(&m.gateways))
                .filter_map(|m| {
                    let port = match m.port {
                        Some(p) => Some(u16::try_from(p).ok()?),
                        None => None,
                    };
                    let sni = m.sni_hosts.iter().map(|h| h.to_ascii_lowercase());
                    Some((port, sni.collect()))
                })
                .collect();
            if matches.iter().all(|(_, sni)| sni.is_empty()) {
                continue;
            }
            let field = format!("spec.tls[{i}]");
            let forward = l4_forward(&s, &field, &rule.route, &vs.namespace, registry, diags);
            let source = Arc::new(Source::of(r, &field));
            tls.push((matches, forward, source));
        }
        let mut tcp = Vec::new();
        for (i, rule) in vs.spec.tcp.iter().enumerate() {
            let mut ports: Vec<Option<u16>> = if rule.matches.is_empty() {
                vec![None]
            } else {
                rule.matches
                    .iter()
                    .filter(|m| for_mesh(&m.gateways))
                    .filter_map(|m| match m.port {
                        Some(p) => u16::try_from(p).ok().map(Some),
                        None => Some(None),
                    })
                    .collect()
            };
            if ports.contains(&None) {
                ports = vec![None];
            }
            ports.dedup();
            if ports.is_empty() {
                continue;
            }
            let field = format!("spec.tcp[{i}]");
            let forward = l4_forward(&s, &field, &rule.route, &vs.namespace, registry, diags);
            let route = TcpRoute {
                virtual_service: name.clone(),
                source: Arc::new(Source::of(r, &field)),
                forward,
            };
            tcp.extend(ports.into_iter().map(|port| PortScoped {
                port,
                route: route.clone(),
            }));
        }
        for host in hosts {
            let mut rules = TunnelRules {
                host: host.clone(),
                tls: Vec::new(),
                tcp: tcp.clone(),
            };
            for (matches, forward, source) in &tls {
                let mut ports: Vec<Option<u16>> = matches.iter().map(|(p, _)| *p).collect();
                ports.sort();
                ports.dedup();
                for port in ports {
                    let mut sni: Vec<String> = matches
                        .iter()
                        .filter(|(p, _)| p.is_none() || *p == port)
                        .flat_map(|(_, names)| names.iter())
                        .filter_map(|n| intersect(&host, n))
                        .collect();
                    sni.sort();
                    sni.dedup();
                    if sni.is_empty() {
                        continue;
                    }
                    rules.tls.push(PortScoped {
                        port,
                        route: TlsRoute {
                            virtual_service: name.clone(),
                            source: source.clone(),
                            sni_hosts: sni,
                            forward: forward.clone(),
                        },
                    });
                }
            }
            out.push(rules);
        }
    }
    out
}
