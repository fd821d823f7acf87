//! Checks of `networking.k8s.io/v1` Ingress and IngressClass alone, as the Kubernetes API
//! server validates them.

use isthmus_api::Diagnostic;
use isthmus_api::k8s::{IngressBackend, IngressClassSpec, IngressSpec};

use crate::diag::Subject;
use crate::hosts::check_dns_name;

pub fn ingress_class(s: &Subject<'_>, spec: &IngressClassSpec, out: &mut Vec<Diagnostic>) {
    if spec.controller.as_deref().is_none_or(str::is_empty) {
        out.push(s.error("spec.controller", "controller is required"));
    }
}

pub fn ingress(s: &Subject<'_>, spec: &IngressSpec, out: &mut Vec<Diagnostic>) {
    if spec.rules.is_empty() && spec.default_backend.is_none() {
        out.push(s.error("spec", "an Ingress needs rules or a defaultBackend"));
    }
    if let Some(b) = &spec.default_backend {
        backend(s, "spec.defaultBackend", b, out);
    }
    for (i, rule) in spec.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        if let Some(h) = &rule.host {
            host(s, &format!("{f}.host"), h, out);
        }
        let Some(http) = &rule.http else { continue };
        if http.paths.is_empty() {
            out.push(s.error(&format!("{f}.http.paths"), "at least one path is required"));
        }
        for (j, p) in http.paths.iter().enumerate() {
            let pf = format!("{f}.http.paths[{j}]");
            let kind = p.path_type.as_deref();
            match kind {
                None => out.push(s.error(&format!("{pf}.pathType"), "pathType is required")),
                Some("Exact" | "Prefix" | "ImplementationSpecific") => {}
                Some(other) => out.push(s.error(
                    &format!("{pf}.pathType"),
                    format!("unknown pathType {other:?} (Exact, Prefix or ImplementationSpecific)"),
                )),
            }
            let path = p.path.as_deref().unwrap_or("");
            if matches!(kind, Some("Exact" | "Prefix")) && !path.starts_with('/') {
                out.push(s.error(
                    &format!("{pf}.path"),
                    format!("path {path:?} must start with /"),
                ));
            }
            match &p.backend {
                Some(b) => backend(s, &format!("{pf}.backend"), b, out),
                None => out.push(s.error(&format!("{pf}.backend"), "backend is required")),
            }
        }
    }
    for (i, t) in spec.tls.iter().enumerate() {
        for (j, h) in t.hosts.iter().enumerate() {
            host(s, &format!("spec.tls[{i}].hosts[{j}]"), h, out);
        }
    }
}

/// A rule host: a DNS name, optionally with a `*.` first label; no IP address.
fn host(s: &Subject<'_>, f: &str, h: &str, out: &mut Vec<Diagnostic>) {
    if h.parse::<std::net::IpAddr>().is_ok() {
        out.push(s.error(
            f,
            format!("host {h:?} is an IP address; a DNS name is required"),
        ));
    } else if let Err(e) = check_dns_name(h).and_then(|()| {
        if h == "*" {
            Err("host \"*\" is not allowed; leave the host out to match every host".into())
        } else {
            Ok(())
        }
    }) {
        out.push(s.error(f, e));
    }
}

fn backend(s: &Subject<'_>, f: &str, b: &IngressBackend, out: &mut Vec<Diagnostic>) {
    match (&b.service, &b.resource) {
        (Some(_), Some(_)) => out.push(s.error(f, "service and resource are mutually exclusive")),
        (None, None) => out.push(s.error(f, "one of service and resource is required")),
        (Some(svc), None) => {
            if svc.name.as_deref().is_none_or(str::is_empty) {
                out.push(s.error(&format!("{f}.service.name"), "name is required"));
            }
            match &svc.port {
                Some(p) if p.name.is_some() == p.number.is_some() => out.push(s.error(
                    &format!("{f}.service.port"),
                    "set exactly one of name and number",
                )),
                Some(p) if p.number.is_some_and(|n| !(1..=65535).contains(&n)) => {
                    out.push(s.error(
                        &format!("{f}.service.port.number"),
                        "port number is not in 1..65535",
                    ))
                }
                Some(_) => {}
                None => out.push(s.error(&format!("{f}.service.port"), "port is required")),
            }
        }
        (None, Some(_)) => {}
    }
}
