//! The route table of a snapshot, per port and host, in evaluation order: what the admin
//! server's `/routes` shows (JSON, or text with `?format=text`).

use std::fmt::Write;

use serde::Serialize;

use crate::explain::{brief, brief_forward};
use crate::snapshot::{ListenerProtocol, Snapshot, Source, VirtualHosts};
use crate::tls::{ChainRoutes, TcpRoute, TlsRoute};

#[derive(Debug, Clone, Serialize)]
pub struct RouteTable {
    pub ports: Vec<PortTable>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortTable {
    pub port: u16,
    pub protocol: ListenerProtocol,
    /// `namespace/gateway (server name)` of each Gateway server on the port.
    pub servers: Vec<String>,
    /// The virtual hosts of a plaintext HTTP port.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<HostTable>,
    /// The servers of a TLS port, chosen by SNI.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chains: Vec<ChainTable>,
    /// The `tcp` routes of a TCP port (the first takes every connection).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<L4Entry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HostTable {
    pub domain: String,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub https_redirect: bool,
    /// In evaluation order: the first match wins.
    pub routes: Vec<RouteEntry>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteEntry {
    pub index: usize,
    pub virtual_service: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The match block in words.
    #[serde(rename = "match")]
    pub when: String,
    /// The action in one line.
    pub action: String,
    pub source: Source,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChainTable {
    /// `namespace/gateway/serverIndex`.
    pub server: String,
    pub server_names: Vec<String>,
    pub tls_mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub virtual_hosts: Vec<HostTable>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<L4Entry>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<L4Entry>,
}

/// A `tls` or `tcp` route.
#[derive(Debug, Clone, Serialize)]
pub struct L4Entry {
    pub index: usize,
    pub virtual_service: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub sni_hosts: Vec<String>,
    pub action: String,
    pub source: Source,
}

impl RouteTable {
    pub fn of(snapshot: &Snapshot) -> Self {
        let ports = snapshot
            .listeners
            .values()
            .map(|l| PortTable {
                port: l.port,
                protocol: l.protocol,
                servers: l.servers.iter().map(|s| s.label.clone()).collect(),
                virtual_hosts: match l.protocol {
                    ListenerProtocol::Http => hosts(&l.virtual_hosts),
                    _ => Vec::new(),
                },
                chains: l
                    .chains
                    .iter()
                    .map(|c| {
                        let (virtual_hosts, tls, tcp_routes) = match &c.routes {
                            ChainRoutes::Http(vh) => (hosts(vh), Vec::new(), Vec::new()),
                            ChainRoutes::Tls(r) => (Vec::new(), tls(r), Vec::new()),
                            ChainRoutes::Tcp(r) => (Vec::new(), Vec::new(), tcp(r)),
                        };
                        ChainTable {
                            server: c.key.clone(),
                            server_names: c.server_names.clone(),
                            tls_mode: c.tls.mode_name(),
                            virtual_hosts,
                            tls,
                            tcp: tcp_routes,
                        }
                    })
                    .collect(),
                tcp: tcp(&l.tcp),
            })
            .collect();
        RouteTable { ports }
    }

    /// The table as indented text, one route per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for p in &self.ports {
            let _ = writeln!(
                out,
                "port {} {}  servers: {}",
                p.port,
                p.protocol.as_str(),
                p.servers.join(", ")
            );
            hosts_text(&mut out, &p.virtual_hosts, 2);
            for c in &p.chains {
                let _ = writeln!(
                    out,
                    "  server {}  sni {}  {}",
                    c.server,
                    c.server_names.join(", "),
                    c.tls_mode
                );
                hosts_text(&mut out, &c.virtual_hosts, 4);
                l4_text(&mut out, "tls", &c.tls, 4);
                l4_text(&mut out, "tcp", &c.tcp, 4);
            }
            l4_text(&mut out, "tcp", &p.tcp, 2);
        }
        if self.ports.is_empty() {
            out.push_str("no listeners\n");
        }
        out
    }
}

fn hosts(table: &VirtualHosts) -> Vec<HostTable> {
    table
        .hosts
        .iter()
        .map(|vh| HostTable {
            domain: vh.domain.clone(),
            https_redirect: vh.require_tls,
            routes: vh
                .routes
                .iter()
                .enumerate()
                .map(|(index, r)| RouteEntry {
                    index,
                    virtual_service: r.virtual_service.clone(),
                    name: r.name.clone(),
                    when: r.matcher.describe(),
                    action: brief(&r.action),
                    source: (*r.source).clone(),
                })
                .collect(),
        })
        .collect()
}

fn tls(routes: &[TlsRoute]) -> Vec<L4Entry> {
    routes
        .iter()
        .enumerate()
        .map(|(index, r)| L4Entry {
            index,
            virtual_service: r.virtual_service.clone(),
            sni_hosts: r.sni_hosts.clone(),
            action: format!("forward {}", brief_forward(&r.forward)),
            source: (*r.source).clone(),
        })
        .collect()
}

fn tcp(routes: &[TcpRoute]) -> Vec<L4Entry> {
    routes
        .iter()
        .enumerate()
        .map(|(index, r)| L4Entry {
            index,
            virtual_service: r.virtual_service.clone(),
            sni_hosts: Vec::new(),
            action: format!("forward {}", brief_forward(&r.forward)),
            source: (*r.source).clone(),
        })
        .collect()
}

fn hosts_text(out: &mut String, hosts: &[HostTable], indent: usize) {
    for h in hosts {
        let redirect = if h.https_redirect {
            "  (httpsRedirect: plaintext requests get 301 to https before any route)"
        } else {
            ""
        };
        let _ = writeln!(out, "{:indent$}host {}{redirect}", "", h.domain);
        for r in &h.routes {
            let name = if r.name.is_empty() {
                String::new()
            } else {
                format!(" {:?}", r.name)
            };
            let _ = writeln!(
                out,
                "{:pad$}#{} {}{name}  {}  -> {}  ({} {})",
                "",
                r.index,
                owner(&r.virtual_service, &r.source),
                r.when,
                r.action,
                r.source.field,
                r.source,
                pad = indent + 2
            );
        }
    }
}

fn l4_text(out: &mut String, kind: &str, routes: &[L4Entry], indent: usize) {
    for r in routes {
        let sni = if r.sni_hosts.is_empty() {
            String::new()
        } else {
            format!("  sni {}", r.sni_hosts.join(", "))
        };
        let _ = writeln!(
            out,
            "{:indent$}{kind} #{} {}{sni}  -> {}  ({} {})",
            "",
            r.index,
            owner(&r.virtual_service, &r.source),
            r.action,
            r.source.field,
            r.source
        );
    }
}

/// Who wrote a route: `namespace/name` of its VirtualService, or the kind and name of a
/// Gateway API route (`HTTPRoute ns/name`).
fn owner<'a>(virtual_service: &'a str, source: &'a Source) -> &'a str {
    if source.resource.is_empty() || source.resource.starts_with("VirtualService ") {
        virtual_service
    } else {
        &source.resource
    }
}

#[cfg(test)]
mod tests {
    use isthmus_api::load::load_str;

    use super::*;
    use crate::build::{LastGood, build};
    use crate::instance::Instance;

    #[test]
    fn routes_per_port_and_host_in_evaluation_order() {
        let yaml = "
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ['*']
  - port: {number: 443, name: tls, protocol: TLS}
    hosts: [pass.example.com]
    tls: {mode: PASSTHROUGH}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: svc, namespace: default}
spec:
  hosts: [a.svc, b.svc]
  ports: [{number: 80, name: http, protocol: HTTP}]
  resolution: STATIC
  endpoints: [{address: 10.0.0.1}]
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: vs, namespace: default}
spec:
  hosts: [a.example.com, pass.example.com]
  gateways: [gw]
  http:
  - name: api
    match: [{uri: {prefix: /api}}]
    route:
    - {destination: {host: a.svc}, weight: 75}
    - {destination: {host: b.svc}, weight: 25}
  - directResponse: {status: 404}
  tls:
  - match: [{sniHosts: [pass.example.com]}]
    route: [{destination: {host: a.svc}}]
";
        let loaded = load_str("vs.yaml", yaml).unwrap();
        let b = build(
            &loaded.resources,
            &loaded.rejected,
            &LastGood::new(),
            &Instance::default(),
        );
        let table = RouteTable::of(&b.snapshot);
        assert_eq!(
            table.to_text(),
            r#"port 80 HTTP  servers: default/gw (http)
  host a.example.com
    #0 default/vs "api"  uri prefix "/api"  -> forward outbound|80||a.svc 75%, outbound|80||b.svc 25%  (spec.http[0].match[0] vs.yaml:31)
    #1 default/vs  any request  -> direct response 404  (spec.http[1] vs.yaml:35)
  host pass.example.com
    #0 default/vs "api"  uri prefix "/api"  -> forward outbound|80||a.svc 75%, outbound|80||b.svc 25%  (spec.http[0].match[0] vs.yaml:31)
    #1 default/vs  any request  -> direct response 404  (spec.http[1] vs.yaml:35)
port 443 TLS  servers: default/gw (tls)
  server default/gw/1  sni pass.example.com  PASSTHROUGH
    tls #0 default/vs  sni pass.example.com  -> forward outbound|80||a.svc  (spec.tls[0] vs.yaml:37)
"#
        );
        let json = serde_json::to_value(&table).unwrap();
        assert_eq!(
            json["ports"][0]["virtual_hosts"][0]["routes"][0]["match"],
            r#"uri prefix "/api""#
        );
        assert_eq!(
            json["ports"][1]["chains"][0]["tls"][0]["sni_hosts"][0],
            "pass.example.com"
        );
    }
}
