//! The listeners of the selected Gateways: port, protocol, hostname, TLS, and which routes
//! they admit. Listeners that conflict within a Gateway are not served, as the specification
//! says (no winner is picked).

use std::collections::BTreeMap;

use isthmus_api::gateway_api::gateway::{AllowedRoutes, Listener, ListenerTls};
use isthmus_api::{Diagnostic, Resource};

use super::attach::RouteKind;
use super::{Context, Referrer, SelectedGateway};
use crate::compile::secrets::{SecretError, Secrets};
use crate::diag::{Subject, subject};
use crate::snapshot::{ListenerProtocol, ServerInfo, Source};
use crate::tls::{
    CertificateSource, ChainTls, ClientAuth, ClientCertChecks, TlsTermination, TlsVersion,
};

/// A listener's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http,
    Https,
    Tls,
    Tcp,
}

impl Protocol {
    fn parse(text: &str) -> Option<Protocol> {
        match text {
            "HTTP" => Some(Protocol::Http),
            "HTTPS" => Some(Protocol::Https),
            "TLS" => Some(Protocol::Tls),
            "TCP" => Some(Protocol::Tcp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Https => "HTTPS",
            Protocol::Tls => "TLS",
            Protocol::Tcp => "TCP",
        }
    }

    /// The listener family of a port: HTTPS and TLS listeners share TLS ports.
    pub fn family(self) -> ListenerProtocol {
        match self {
            Protocol::Http => ListenerProtocol::Http,
            Protocol::Https | Protocol::Tls => ListenerProtocol::Tls,
            Protocol::Tcp => ListenerProtocol::Tcp,
        }
    }

    /// The route kinds a listener admits when `allowedRoutes.kinds` is empty.
    fn default_kinds(self) -> Vec<RouteKind> {
        match self {
            Protocol::Http | Protocol::Https => vec![RouteKind::Http, RouteKind::Grpc],
            Protocol::Tls => vec![RouteKind::Tls],
            Protocol::Tcp => vec![RouteKind::Tcp],
        }
    }

    /// The route kinds this protocol can carry at all.
    fn carries(self, kind: RouteKind) -> bool {
        match self {
            Protocol::Http | Protocol::Https => matches!(kind, RouteKind::Http | RouteKind::Grpc),
            Protocol::Tls => matches!(kind, RouteKind::Tls | RouteKind::Tcp),
            Protocol::Tcp => kind == RouteKind::Tcp,
        }
    }
}

/// A served listener of a Gateway.
pub struct GwListener<'a> {
    pub resource: &'a Resource,
    pub namespace: &'a str,
    pub gateway: &'a str,
    pub name: &'a str,
    /// `spec.listeners[N]`.
    pub field: String,
    pub index: usize,
    pub port: u16,
    pub protocol: Protocol,
    /// Lower case; `None` accepts every host.
    pub hostname: Option<String>,
    /// HTTPS and TLS listeners: terminate (with certificates) or pass through.
    pub tls: Option<ChainTls>,
    pub allowed: Option<&'a AllowedRoutes>,
    pub kinds: Vec<RouteKind>,
}

impl GwListener<'_> {
    /// The hostname as a virtual host domain or SNI pattern: `*` when unset.
    pub fn host(&self) -> &str {
        self.hostname.as_deref().unwrap_or("*")
    }

    /// A key unique among all chains of a port, stable across reloads.
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            isthmus_api::Kind::KubeGateway,
            self.namespace,
            self.gateway,
            self.name
        )
    }

    /// What the snapshot keeps of the listener (as a Gateway "server").
    pub fn info(&self) -> ServerInfo {
        ServerInfo {
            label: format!("{}/{} ({})", self.namespace, self.gateway, self.name),
            key: self.key(),
            gateway: format!("{}/{}", self.namespace, self.gateway),
            index: self.index,
            protocol: self.protocol.as_str().to_string(),
            hosts: vec![crate::hosts::ServerHost {
                namespace: None,
                host: self.host().to_string(),
            }],
            https_redirect: false,
            source: Source::of(self.resource, &self.field),
        }
    }

    /// How specific the hostname is: exact, then longer wildcards, then none.
    pub fn specificity(&self) -> (u8, usize) {
        host_specificity(self.host())
    }
}

/// Exact names first, then longer `*.suffix` wildcards, then `*`.
pub fn host_specificity(host: &str) -> (u8, usize) {
    if host == "*" {
        (0, 0)
    } else if host.starts_with('*') {
        (1, host.len())
    } else {
        (2, host.len())
    }
}

pub fn collect<'a>(
    ctx: &Context<'_>,
    gateways: &[SelectedGateway<'a>],
    diags: &mut Vec<Diagnostic>,
) -> Vec<GwListener<'a>> {
    let mut out = Vec::new();
    for g in gateways {
        let mut own: Vec<GwListener<'a>> = g
            .gateway
            .spec
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| listener(ctx, g, i, l, diags))
            .collect();
        drop_conflicts(&mut own, diags);
        out.extend(own);
    }
    out
}

fn listener<'a>(
    ctx: &Context<'_>,
    g: &SelectedGateway<'a>,
    index: usize,
    l: &'a Listener,
    diags: &mut Vec<Diagnostic>,
) -> Option<GwListener<'a>> {
    let s = subject(g.resource);
    let field = format!("spec.listeners[{index}]");
    // Validation rejects a Gateway without a valid port or name.
    let port = l
        .port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p > 0)?;
    let name = l.name.as_deref()?;
    let text = l.protocol.as_deref().unwrap_or("");
    let Some(protocol) = Protocol::parse(text) else {
        diags.push(s.warning(
            &format!("{field}.protocol"),
            format!("protocol {text:?} is not supported (HTTP, HTTPS, TLS and TCP are); listener not served"),
        ));
        return None;
    };
    let tls = match protocol {
        Protocol::Https | Protocol::Tls => Some(listener_tls(
            ctx,
            g,
            &s,
            &field,
            protocol,
            l.tls.as_ref(),
            diags,
        )?),
        Protocol::Http | Protocol::Tcp => {
            if l.tls.is_some() {
                diags.push(s.warning(
                    &format!("{field}.tls"),
                    format!("a {} listener does not use tls; ignored", protocol.as_str()),
                ));
            }
            None
        }
    };
    Some(GwListener {
        resource: g.resource,
        namespace: &g.gateway.namespace,
        gateway: &g.gateway.name,
        name,
        field: field.clone(),
        index,
        port,
        protocol,
        hostname: l.hostname.as_ref().map(|h| h.to_ascii_lowercase()),
        tls,
        allowed: l.allowed_routes.as_ref(),
        kinds: kinds(&s, &field, protocol, l.allowed_routes.as_ref(), diags),
    })
}

/// The route kinds a listener admits; kinds it cannot carry are reported and left out.
fn kinds(
    s: &Subject<'_>,
    field: &str,
    protocol: Protocol,
    allowed: Option<&AllowedRoutes>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<RouteKind> {
    let listed = allowed.map(|a| a.kinds.as_slice()).unwrap_or(&[]);
    if listed.is_empty() {
        return protocol.default_kinds();
    }
    let mut out = Vec::new();
    for (i, k) in listed.iter().enumerate() {
        let group = k
            .group
            .as_deref()
            .unwrap_or(isthmus_api::gateway_api::GROUP);
        let kind = k.kind.as_deref().unwrap_or("");
        match RouteKind::parse(group, kind).filter(|k| protocol.carries(*k)) {
            Some(rk) => out.push(rk),
            None => diags.push(s.warning(
                &format!("{field}.allowedRoutes.kinds[{i}]"),
                format!(
                    "route kind {group}/{kind} cannot attach to a {} listener (InvalidRouteKinds); left out",
                    protocol.as_str()
                ),
            )),
        }
    }
    out
}

/// The TLS of an HTTPS or TLS listener; `None` (with a diagnostic) when it cannot be served.
fn listener_tls(
    ctx: &Context<'_>,
    g: &SelectedGateway<'_>,
    s: &Subject<'_>,
    field: &str,
    protocol: Protocol,
    tls: Option<&ListenerTls>,
    diags: &mut Vec<Diagnostic>,
) -> Option<ChainTls> {
    let f = format!("{field}.tls");
    let mode = tls.and_then(|t| t.mode.as_deref()).unwrap_or("Terminate");
    match (mode, protocol) {
        ("Passthrough", Protocol::Tls) => return Some(ChainTls::Passthrough),
        ("Passthrough", _) => {
            diags.push(s.error(
                &format!("{f}.mode"),
                "an HTTPS listener terminates TLS; Passthrough needs protocol TLS; listener not served",
            ));
            return None;
        }
        ("Terminate", _) => {}
        (other, _) => {
            diags.push(s.error(
                &format!("{f}.mode"),
                format!(
                    "unknown TLS mode {other:?} (Terminate or Passthrough); listener not served"
                ),
            ));
            return None;
        }
    }
    let refs = tls.map(|t| t.certificate_refs.as_slice()).unwrap_or(&[]);
    if refs.is_empty() {
        diags.push(s.error(
            &f,
            "terminating TLS needs tls.certificateRefs; listener not served",
        ));
        return None;
    }
    let mut certificates = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let rf = format!("{f}.certificateRefs[{i}]");
        certificates.push(certificate(ctx, g, s, &rf, r, diags)?);
    }
    Some(ChainTls::Terminate(TlsTermination {
        client_auth: ClientAuth::None,
        certificates,
        client_ca: None,
        min_version: TlsVersion::V12,
        max_version: TlsVersion::V13,
        cipher_suites: Vec::new(),
        client_checks: ClientCertChecks::default(),
    }))
}

/// The certificate a `certificateRefs` entry names: a Secret of the Gateway's namespace, or of
/// another one that a ReferenceGrant opens to Gateways of this namespace.
fn certificate(
    ctx: &Context<'_>,
    g: &SelectedGateway<'_>,
    s: &Subject<'_>,
    field: &str,
    r: &isthmus_api::gateway_api::gateway::SecretObjectReference,
    diags: &mut Vec<Diagnostic>,
) -> Option<CertificateSource> {
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        diags.push(s.error(
            field,
            format!("certificateRefs must name a core Secret, not {group}/{kind} (InvalidCertificateRef); listener not served"),
        ));
        return None;
    }
    let name = r.name.as_deref().unwrap_or("");
    let ns = r.namespace.as_deref().unwrap_or(&g.gateway.namespace);
    let from = Referrer {
        kind: "Gateway",
        namespace: &g.gateway.namespace,
    };
    if !ctx.permitted(from, "Secret", ns, name) {
        diags.push(s.error(
            field,
            format!("no ReferenceGrant in namespace {ns} lets Gateways of {} use Secret {ns}/{name} (RefNotPermitted); listener not served", g.gateway.namespace),
        ));
        return None;
    }
    match Secrets::new(ctx.resources, ns).certificate_ref(name) {
        Ok((certificate, private_key, _)) => Some(CertificateSource {
            certificate,
            private_key,
        }),
        Err(SecretError::Missing(m)) => {
            diags.push(s.warning(
                field,
                format!("{m}; the listener is not served until it is"),
            ));
            None
        }
        Err(SecretError::Invalid(m)) => {
            diags.push(s.error(
                field,
                format!("{m} (InvalidCertificateRef); listener not served"),
            ));
            None
        }
    }
}

/// Listeners of one Gateway that share a port must agree on the protocol family and differ in
/// hostname (TCP listeners cannot share a port at all); all that conflict are dropped.
fn drop_conflicts(listeners: &mut Vec<GwListener<'_>>, diags: &mut Vec<Diagnostic>) {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        by_port.entry(l.port).or_default().push(i);
    }
    let mut conflicted = vec![false; listeners.len()];
    for idx in by_port.values() {
        let on_port: Vec<&GwListener<'_>> = idx.iter().filter_map(|i| listeners.get(*i)).collect();
        for (a, la) in idx.iter().zip(&on_port) {
            let why = on_port.iter().find_map(|lb| {
                if std::ptr::eq(*la, *lb) {
                    return None;
                }
                conflict(la, lb)
            });
            if let Some(why) = why {
                if let Some(c) = conflicted.get_mut(*a) {
                    *c = true;
                }
                diags.push(subject(la.resource).error(
                    &la.field,
                    format!("{why}; listener not served (Conflicted)"),
                ));
            }
        }
    }
    let mut flags = conflicted.into_iter();
    listeners.retain(|_| !flags.next().unwrap_or(false));
}

/// Why two listeners of a Gateway on one port conflict, if they do.
fn conflict(a: &GwListener<'_>, b: &GwListener<'_>) -> Option<String> {
    if a.protocol.family() != b.protocol.family() {
        return Some(format!(
            "port {} is also used by listener {:?} with protocol {} (ProtocolConflict)",
            a.port,
            b.name,
            b.protocol.as_str()
        ));
    }
    if a.protocol == Protocol::Tcp {
        return Some(format!(
            "TCP port {} is also used by listener {:?} (ProtocolConflict)",
            a.port, b.name
        ));
    }
    (a.host() == b.host()).then(|| {
        format!(
            "listener {:?} has the same port {} and hostname {} (HostnameConflict)",
            b.name,
            a.port,
            a.host()
        )
    })
}
