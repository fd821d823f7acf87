//! Gateway servers grouped by port, for the Gateways that select this instance.

use std::collections::BTreeMap;

use isthmus_api::{Diagnostic, Resource};

use crate::diag::subject;
use crate::hosts::{ServerHost, parse_server_host};
use crate::instance::Instance;
use crate::snapshot::ListenerProtocol;

/// One Gateway server that this instance serves.
pub struct ServerRef<'a> {
    pub gateway_ns: &'a str,
    pub gateway_name: &'a str,
    pub label: String,
    pub hosts: Vec<ServerHost>,
}

pub struct PortServers<'a> {
    pub protocol: ListenerProtocol,
    pub servers: Vec<ServerRef<'a>>,
}

/// Protocols served as plaintext HTTP (HTTP/1.1 and h2c on one port).
const PLAINTEXT_HTTP: &[&str] = &["HTTP", "HTTP2", "GRPC", "GRPC-WEB"];

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
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let field = format!("spec.servers[{i}]");
            let Some(port) = &server.port else { continue };
            let Some(number) = port.number.and_then(|n| u16::try_from(n).ok()) else {
                continue;
            };
            let protocol = port.protocol.as_deref().unwrap_or("").to_ascii_uppercase();
            if !PLAINTEXT_HTTP.contains(&protocol.as_str()) {
                diags.push(s.warning(
                    &format!("{field}.port.protocol"),
                    format!("{protocol} servers are not served by this version of Isthmus; server skipped"),
                ));
                continue;
            }
            let label = format!(
                "{}/{} ({})",
                gw.namespace,
                gw.name,
                server
                    .port
                    .as_ref()
                    .and_then(|p| p.name.clone())
                    .unwrap_or_else(|| number.to_string())
            );
            let entry = ports.entry(number).or_insert_with(|| PortServers {
                protocol: ListenerProtocol::Http,
                servers: Vec::new(),
            });
            for other in &entry.servers {
                for h in &server.hosts {
                    let parsed = parse_server_host(h, &gw.namespace);
                    if other.hosts.contains(&parsed) {
                        diags.push(s.warning(
                            &format!("{field}.hosts"),
                            format!("host {h:?} on port {number} is also declared by {}; their routes are merged", other.label),
                        ));
                    }
                }
            }
            entry.servers.push(ServerRef {
                gateway_ns: &gw.namespace,
                gateway_name: &gw.name,
                label,
                hosts: server
                    .hosts
                    .iter()
                    .map(|h| parse_server_host(h, &gw.namespace))
                    .collect(),
            });
        }
    }
    ports
}
