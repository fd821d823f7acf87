//! Gateway servers grouped by port, for the Gateways that select this instance.

use std::collections::BTreeMap;

use isthmus_api::istio::gateway::Server;
use isthmus_api::{Diagnostic, Resource};

use crate::diag::subject;
use crate::egress::{FORWARD_PROXY_ANNOTATION, ForwardProxyPorts};
use crate::hosts::{ServerHost, parse_server_host};
use crate::instance::Instance;
use crate::snapshot::{ListenerProtocol, ServerInfo, Source};

/// One Gateway server that this instance serves.
pub struct ServerRef<'a> {
    pub resource: &'a Resource,
    pub gateway_ns: &'a str,
    pub gateway_name: &'a str,
    pub server: &'a Server,
    /// `spec.servers[N]`, for diagnostics.
    pub field: String,
    /// `N` of `spec.servers[N]`.
    pub index: usize,
    /// Stable identity across reloads.
    pub key: String,
    pub label: String,
    /// The upper-case protocol the server declares.
    pub protocol: String,
    pub hosts: Vec<ServerHost>,
    /// A forward proxy (Gateway annotation `isthmus.io/forward-proxy`).
    pub outbound: bool,
}

impl ServerRef<'_> {
    pub fn https_redirect(&self) -> bool {
        self.server.tls.as_ref().and_then(|t| t.https_redirect) == Some(true)
    }

    /// What the snapshot keeps of the server.
    pub fn info(&self) -> ServerInfo {
        ServerInfo {
            label: self.label.clone(),
            key: self.key.clone(),
            gateway: format!("{}/{}", self.gateway_ns, self.gateway_name),
            index: self.index,
            protocol: self.protocol.clone(),
            hosts: self.hosts.clone(),
            https_redirect: self.https_redirect(),
            source: Source::of(self.resource, &self.field),
        }
    }
}

pub struct PortServers<'a> {
    pub protocol: ListenerProtocol,
    pub servers: Vec<ServerRef<'a>>,
}

/// The listener protocol family of a Gateway server protocol.
fn family(protocol: &str) -> Option<ListenerProtocol> {
    match protocol {
        "HTTP" | "HTTP2" | "GRPC" | "GRPC-WEB" => Some(ListenerProtocol::Http),
        "HTTPS" | "TLS" => Some(ListenerProtocol::Tls),
        "TCP" | "MONGO" => Some(ListenerProtocol::Tcp),
        _ => None,
    }
}

pub fn collect<'a>(
    resources: &[&'a Resource],
    instance: &Instance,
    diags: &mut Vec<Diagnostic>,
) -> BTreeMap<u16, PortServers<'a>> {
    let mut ports: BTreeMap<u16, PortServers<'a>> = BTreeMap::new();
    for r in resources {
        let Resource::Gateway(gw) = r else { continue };
        if !instance.selected_by(gw.spec.selector.as_ref()) {
            continue;
        }
        let s = subject(r);
        // Validation reports a value that does not parse; it marks nothing.
        let forward_proxy = gw
            .meta
            .annotations
            .get(FORWARD_PROXY_ANNOTATION)
            .and_then(|v| ForwardProxyPorts::parse(v).ok())
            .unwrap_or(ForwardProxyPorts::None);
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            let Some(port) = &server.port else { continue };
            let Some(number) = port.number.and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let protocol = port.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
            let Some(fam) = family(&protocol) else {
                continue;
            };
            let entry = ports.entry(number).or_insert_with(|| PortServers {
                protocol: fam,
                servers: Vec::new(),
            });
            if entry.protocol != fam {
                diags.push(s.error(
                    &format!("{field}.port"),
                    format!(
                        "port {number} is already used by {} with a protocol that cannot share it; this {protocol} server is skipped",
                        entry.servers.first().map_or("another server", |o| o.label.as_str())
                    ),
                ));
                continue;
            }
            let label = format!(
                "{}/{} ({})",
                gw.namespace,
                gw.name,
                port.name.clone().unwrap_or_else(|| number.to_string())
            );
            let hosts: Vec<ServerHost> = server
                .hosts
                .iter()
                .map(|h| parse_server_host(h, &gw.namespace))
                .collect();
            if fam == ListenerProtocol::Http {
                for other in &entry.servers {
                    for (h, parsed) in server.hosts.iter().zip(&hosts) {
                        if other.hosts.contains(parsed) {
                            diags.push(s.warning(
                                &format!("{field}.hosts"),
                                format!("host {h:?} on port {number} is also declared by {}; their routes are merged", other.label),
                            ));
                        }
                    }
                }
            }
            let outbound = fam == ListenerProtocol::Http
                && forward_proxy.covers(u32::from(number), port.name.as_deref());
            entry.servers.push(ServerRef {
                resource: r,
                gateway_ns: &gw.namespace,
                gateway_name: &gw.name,
                server,
                key: format!("{}/{}/{i}", gw.namespace, gw.name),
                field,
                index: i,
                label,
                protocol,
                hosts,
                outbound,
            });
        }
    }
    ports
}
