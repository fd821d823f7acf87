//! Ports of different sources (Istio Gateways, Gateway API Gateways, Ingresses) in one
//! snapshot. A port keeps the protocol family of the source that declared it first; a source
//! that shares it with the same family adds its virtual hosts (HTTP) or filter chains (TLS).

use std::collections::BTreeMap;

use isthmus_api::{Diagnostic, Severity};

use crate::snapshot::{Listener, ListenerProtocol, ServerInfo, VirtualHosts};

/// Adds the listeners of `more` to `into`.
pub fn merge(
    into: &mut BTreeMap<u16, Listener>,
    more: BTreeMap<u16, Listener>,
    diags: &mut Vec<Diagnostic>,
) {
    for (port, l) in more {
        let Some(existing) = into.get_mut(&port) else {
            into.insert(port, l);
            continue;
        };
        let first = existing
            .servers
            .first()
            .map_or_else(|| "another Gateway".to_string(), |s| s.label.clone());
        let shared = existing.protocol == l.protocol && l.protocol != ListenerProtocol::Tcp;
        if !shared {
            for s in &l.servers {
                diags.push(about(
                    s,
                    Severity::Error,
                    format!(
                        "port {port} is already served by {first} ({}); this {} listener is not served",
                        existing.protocol.as_str(),
                        l.protocol.as_str()
                    ),
                ));
            }
            continue;
        }
        match l.protocol {
            ListenerProtocol::Http => merge_hosts(existing, l, diags),
            _ => {
                existing.chains.extend(l.chains);
                existing.servers.extend(l.servers);
            }
        }
    }
}

/// Virtual hosts of both; routes of a domain both serve are appended to the first's.
fn merge_hosts(existing: &mut Listener, l: Listener, diags: &mut Vec<Diagnostic>) {
    let mut hosts = std::mem::take(&mut existing.virtual_hosts).hosts;
    for vh in l.virtual_hosts.hosts {
        match hosts.iter_mut().find(|h| h.domain == vh.domain) {
            Some(h) => {
                if let Some(s) = l.servers.first() {
                    diags.push(about(
                        s,
                        Severity::Warning,
                        format!(
                            "host {} on port {} is also served by {}; these routes come after its routes",
                            vh.domain,
                            l.port,
                            existing
                                .servers
                                .first()
                                .map_or("another Gateway", |s| s.label.as_str())
                        ),
                    ));
                }
                std::sync::Arc::make_mut(&mut h.routes).extend(vh.routes.iter().cloned());
            }
            None => hosts.push(vh),
        }
    }
    existing.virtual_hosts = VirtualHosts::new(hosts);
    existing.servers.extend(l.servers);
}

fn about(s: &ServerInfo, severity: Severity, message: String) -> Diagnostic {
    Diagnostic {
        severity,
        file: s.source.file.to_string(),
        line: s.source.line,
        resource: s.source.resource.to_string(),
        field: s.source.field.clone(),
        message,
    }
}
