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
    /// `allowedRoutes.kinds` named kinds it cannot carry (`ResolvedRefs=False`).
    pub invalid_kinds: Option<String>,
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

/// Why a listener of a selected Gateway is not served, in the terms of its status conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerFault {
    /// `Accepted=False` with this reason (`UnsupportedProtocol`, `Invalid`).
    NotAccepted {
        reason: &'static str,
        message: String,
    },
    /// `ResolvedRefs=False` with this reason (`InvalidCertificateRef`, `RefNotPermitted`).
    Unresolved {
        reason: &'static str,
        message: String,
    },
    /// `Conflicted=True` with this reason (`HostnameConflict`, `ProtocolConflict`).
    Conflicted {
        reason: &'static str,
        message: String,
    },
}

impl ListenerFault {
    /// Pushes the diagnostic that explains the fault; the condition's message is its text.
    fn report(
        diags: &mut Vec<Diagnostic>,
        diag: Diagnostic,
        make: fn(&'static str, String) -> ListenerFault,
        reason: &'static str,
    ) -> ListenerFault {
        let fault = make(reason, diag.message.clone());
        diags.push(diag);
        fault
    }

    fn not_accepted(reason: &'static str, message: String) -> ListenerFault {
        ListenerFault::NotAccepted { reason, message }
    }

    fn unresolved(reason: &'static str, message: String) -> ListenerFault {
        ListenerFault::Unresolved { reason, message }
    }
}

/// A listener of a selected Gateway that is not served, and why.
pub struct RefusedListener<'a> {
    pub namespace: &'a str,
    pub gateway: &'a str,
    pub index: usize,
    /// The route kinds it would admit (status reports them all the same).
    pub kinds: Vec<RouteKind>,
    /// `allowedRoutes.kinds` named kinds it cannot carry.
    pub invalid_kinds: Option<String>,
    pub fault: ListenerFault,
}

/// The listeners of the selected Gateways: those served, and those refused with why.
pub struct Collected<'a> {
    pub served: Vec<GwListener<'a>>,
    pub refused: Vec<RefusedListener<'a>>,
}

pub fn collect<'a>(
    ctx: &Context<'_>,
    gateways: &[SelectedGateway<'a>],
    diags: &mut Vec<Diagnostic>,
) -> Collected<'a> {
    let mut out = Collected {
        served: Vec::new(),
        refused: Vec::new(),
    };
    for g in gateways {
        let mut own = Vec::new();
        for (i, l) in g.gateway.spec.listeners.iter().enumerate() {
            match listener(ctx, g, i, l, diags) {
                Ok(served) => own.push(served),
                Err(refused) => out.refused.push(*refused),
            }
        }
        out.refused.extend(drop_conflicts(&mut own, diags));
        out.served.extend(own);
    }
    out
}

fn listener<'a>(
    ctx: &Context<'_>,
    g: &SelectedGateway<'a>,
    index: usize,
    l: &'a Listener,
    diags: &mut Vec<Diagnostic>,
) -> Result<GwListener<'a>, Box<RefusedListener<'a>>> {
    let s = subject(g.resource);
    let field = format!("spec.listeners[{index}]");
    let refuse = |kinds: Vec<RouteKind>, invalid_kinds: Option<String>, fault| {
        Box::new(RefusedListener {
            namespace: &g.gateway.namespace,
            gateway: &g.gateway.name,
            index,
            kinds,
            invalid_kinds,
            fault,
        })
    };
    // Validation rejects a Gateway without a valid port or name, so this is only a guard.
    let (Some(port), Some(name)) = (
        l.port
            .and_then(|p| u16::try_from(p).ok())
            .filter(|p| *p > 0),
        l.name.as_deref(),
    ) else {
        let fault =
            ListenerFault::not_accepted("Invalid", "the listener needs a name and a port".into());
        return Err(refuse(Vec::new(), None, fault));
    };
    let text = l.protocol.as_deref().unwrap_or("");
    let Some(protocol) = Protocol::parse(text) else {
        let diag = s.warning(
            &format!("{field}.protocol"),
            format!("protocol {text:?} is not supported (HTTP, HTTPS, TLS and TCP are); listener not served"),
        );
        let fault = ListenerFault::report(
            diags,
            diag,
            ListenerFault::not_accepted,
            "UnsupportedProtocol",
        );
        return Err(refuse(Vec::new(), None, fault));
    };
    let (kinds, invalid_kinds) = kinds(&s, &field, protocol, l.allowed_routes.as_ref(), diags);
    let tls = match protocol {
        Protocol::Https | Protocol::Tls => {
            match listener_tls(ctx, g, &s, &field, protocol, l.tls.as_ref(), diags) {
                Ok(tls) => Some(tls),
                Err(fault) => return Err(refuse(kinds, invalid_kinds, fault)),
            }
        }
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
    Ok(GwListener {
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
        kinds,
        invalid_kinds,
    })
}

/// The route kinds a listener admits; kinds it cannot carry are reported and left out, and
/// named in the second value (for `ResolvedRefs=False`, reason `InvalidRouteKinds`).
fn kinds(
    s: &Subject<'_>,
    field: &str,
    protocol: Protocol,
    allowed: Option<&AllowedRoutes>,
    diags: &mut Vec<Diagnostic>,
) -> (Vec<RouteKind>, Option<String>) {
    let listed = allowed.map(|a| a.kinds.as_slice()).unwrap_or(&[]);
    if listed.is_empty() {
        return (protocol.default_kinds(), None);
    }
    let mut out = Vec::new();
    let mut invalid = Vec::new();
    for (i, k) in listed.iter().enumerate() {
        let group = k
            .group
            .as_deref()
            .unwrap_or(isthmus_api::gateway_api::GROUP);
        let kind = k.kind.as_deref().unwrap_or("");
        match RouteKind::parse(group, kind).filter(|k| protocol.carries(*k)) {
            Some(rk) => out.push(rk),
            None => {
                invalid.push(format!("{group}/{kind}"));
                diags.push(s.warning(
                    &format!("{field}.allowedRoutes.kinds[{i}]"),
                    format!(
                        "route kind {group}/{kind} cannot attach to a {} listener (InvalidRouteKinds); left out",
                        protocol.as_str()
                    ),
                ));
            }
        }
    }
    let invalid = (!invalid.is_empty()).then(|| {
        format!(
            "route kinds {} cannot attach to a {} listener",
            invalid.join(", "),
            protocol.as_str()
        )
    });
    (out, invalid)
}

/// The TLS of an HTTPS or TLS listener, or why it cannot be served (with a diagnostic).
fn listener_tls(
    ctx: &Context<'_>,
    g: &SelectedGateway<'_>,
    s: &Subject<'_>,
    field: &str,
    protocol: Protocol,
    tls: Option<&ListenerTls>,
    diags: &mut Vec<Diagnostic>,
) -> Result<ChainTls, ListenerFault> {
    let f = format!("{field}.tls");
    let mode = tls.and_then(|t| t.mode.as_deref()).unwrap_or("Terminate");
    // The CRD's validation refuses both of these, so only files can carry them.
    let invalid = |diags: &mut Vec<Diagnostic>, message: String| {
        let diag = s.error(&format!("{f}.mode"), message);
        ListenerFault::report(diags, diag, ListenerFault::not_accepted, "Invalid")
    };
    match (mode, protocol) {
        ("Passthrough", Protocol::Tls) => return Ok(ChainTls::Passthrough),
        ("Passthrough", _) => {
            return Err(invalid(
                diags,
                "an HTTPS listener terminates TLS; Passthrough needs protocol TLS; listener not served".into(),
            ));
        }
        ("Terminate", _) => {}
        (other, _) => {
            return Err(invalid(
                diags,
                format!(
                    "unknown TLS mode {other:?} (Terminate or Passthrough); listener not served"
                ),
            ));
        }
    }
    let refs = tls.map(|t| t.certificate_refs.as_slice()).unwrap_or(&[]);
    if refs.is_empty() {
        let diag = s.error(
            &f,
            "terminating TLS needs tls.certificateRefs; listener not served",
        );
        return Err(ListenerFault::report(
            diags,
            diag,
            ListenerFault::unresolved,
            "InvalidCertificateRef",
        ));
    }
    let mut certificates = Vec::new();
    for (i, r) in refs.iter().enumerate() {
        let rf = format!("{f}.certificateRefs[{i}]");
        certificates.push(certificate(ctx, g, s, &rf, r, diags)?);
    }
    Ok(ChainTls::Terminate(TlsTermination {
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
) -> Result<CertificateSource, ListenerFault> {
    let unresolved = |diags: &mut Vec<Diagnostic>, diag: Diagnostic, reason: &'static str| {
        ListenerFault::report(diags, diag, ListenerFault::unresolved, reason)
    };
    let group = r.group.as_deref().unwrap_or("");
    let kind = r.kind.as_deref().unwrap_or("Secret");
    if !group.is_empty() || kind != "Secret" {
        let diag = s.error(
            field,
            format!("certificateRefs must name a core Secret, not {group}/{kind} (InvalidCertificateRef); listener not served"),
        );
        return Err(unresolved(diags, diag, "InvalidCertificateRef"));
    }
    let name = r.name.as_deref().unwrap_or("");
    let ns = r.namespace.as_deref().unwrap_or(&g.gateway.namespace);
    let from = Referrer {
        kind: "Gateway",
        namespace: &g.gateway.namespace,
    };
    if !ctx.permitted(from, "Secret", ns, name) {
        let diag = s.error(
            field,
            format!("no ReferenceGrant in namespace {ns} lets Gateways of {} use Secret {ns}/{name} (RefNotPermitted); listener not served", g.gateway.namespace),
        );
        return Err(unresolved(diags, diag, "RefNotPermitted"));
    }
    match Secrets::new(ctx.resources, ns).certificate_ref(name) {
        Ok((certificate, private_key, _)) => Ok(CertificateSource {
            certificate,
            private_key,
        }),
        // A Secret that does not exist is an invalid reference too, as the specification
        // says; the diagnostic is a warning because the Secret may simply not have arrived.
        Err(SecretError::Missing(m)) => {
            let diag = s.warning(
                field,
                format!("{m}; the listener is not served until it is"),
            );
            Err(unresolved(diags, diag, "InvalidCertificateRef"))
        }
        Err(SecretError::Invalid(m)) => {
            let diag = s.error(
                field,
                format!("{m} (InvalidCertificateRef); listener not served"),
            );
            Err(unresolved(diags, diag, "InvalidCertificateRef"))
        }
    }
}

/// Listeners of one Gateway that share a port must agree on the protocol family and differ in
/// hostname (TCP listeners cannot share a port at all); all that conflict are dropped, and
/// returned as refused (`Conflicted`).
fn drop_conflicts<'a>(
    listeners: &mut Vec<GwListener<'a>>,
    diags: &mut Vec<Diagnostic>,
) -> Vec<RefusedListener<'a>> {
    let mut by_port: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, l) in listeners.iter().enumerate() {
        by_port.entry(l.port).or_default().push(i);
    }
    let mut conflicts: Vec<Option<ListenerFault>> = vec![None; listeners.len()];
    for idx in by_port.values() {
        let on_port: Vec<&GwListener<'_>> = idx.iter().filter_map(|i| listeners.get(*i)).collect();
        for (a, la) in idx.iter().zip(&on_port) {
            let why = on_port.iter().find_map(|lb| {
                if std::ptr::eq(*la, *lb) {
                    return None;
                }
                conflict(la, lb)
            });
            if let (Some((reason, why)), Some(slot)) = (why, conflicts.get_mut(*a)) {
                let diag = subject(la.resource)
                    .error(&la.field, format!("{why} ({reason}); listener not served"));
                *slot = Some(ListenerFault::Conflicted {
                    reason,
                    message: diag.message.clone(),
                });
                diags.push(diag);
            }
        }
    }
    let mut refused = Vec::new();
    let mut kept = Vec::new();
    for (l, fault) in listeners.drain(..).zip(conflicts) {
        match fault {
            None => kept.push(l),
            Some(fault) => refused.push(RefusedListener {
                namespace: l.namespace,
                gateway: l.gateway,
                index: l.index,
                kinds: l.kinds,
                invalid_kinds: l.invalid_kinds,
                fault,
            }),
        }
    }
    *listeners = kept;
    refused
}

/// Why two listeners of a Gateway on one port conflict, if they do: the reason of the
/// `Conflicted` condition and the explanation.
fn conflict(a: &GwListener<'_>, b: &GwListener<'_>) -> Option<(&'static str, String)> {
    if a.protocol.family() != b.protocol.family() {
        return Some((
            "ProtocolConflict",
            format!(
                "port {} is also used by listener {:?} with protocol {}",
                a.port,
                b.name,
                b.protocol.as_str()
            ),
        ));
    }
    if a.protocol == Protocol::Tcp {
        return Some((
            "ProtocolConflict",
            format!("TCP port {} is also used by listener {:?}", a.port, b.name),
        ));
    }
    (a.host() == b.host()).then(|| {
        (
            "HostnameConflict",
            format!(
                "listener {:?} has the same port {} and hostname {}",
                b.name,
                a.port,
                a.host()
            ),
        )
    })
}
