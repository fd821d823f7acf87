//! Backend references to clusters. A Service `NAME` in `NAMESPACE` is the service registry's
//! host `NAME.NAMESPACE.svc.DOMAIN` (in file mode a ServiceEntry defines it); Istio's
//! `networking.istio.io/Hostname` kind names a registry host directly. A backend in another
//! namespace needs a ReferenceGrant there.

use isthmus_api::Diagnostic;
use isthmus_api::Resource;

use super::attach::route_kind;
use super::{Context, Referrer};
use crate::compile::services::{Registry, Unresolved};
use crate::diag::subject;
use crate::gateway_status::RefsReason;

/// The parts of a backend reference that choose its cluster.
pub struct Target<'a> {
    pub group: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub name: Option<&'a str>,
    pub namespace: Option<&'a str>,
    pub port: Option<u32>,
}

/// A backend's cluster name and index; `None` when the backend is invalid or unknown (then
/// `consequence` says what its share of traffic gets, in the diagnostic).
pub fn resolve(
    ctx: &Context<'_>,
    registry: &mut Registry<'_>,
    route: &Resource,
    field: &str,
    t: &Target<'_>,
    consequence: &str,
    diags: &mut Vec<Diagnostic>,
) -> (String, Option<usize>) {
    let group = t.group.unwrap_or("");
    let kind = t.kind.unwrap_or("Service");
    let name = t.name.unwrap_or("");
    let ns = t.namespace.unwrap_or(route.namespace());
    let port = t.port.and_then(|p| u16::try_from(p).ok());
    let s = subject(route);
    let host = match (group, kind) {
        ("", "Service") => {
            let from = Referrer {
                kind: route_kind(route).map_or("", |k| k.name()),
                namespace: route.namespace(),
            };
            if !ctx.permitted(from, "Service", ns, name) {
                let msg = format!(
                    "no ReferenceGrant in namespace {ns} lets {}s of {} use Service {ns}/{name} (RefNotPermitted); {consequence}",
                    from.kind, from.namespace
                );
                ctx.unresolved(route, RefsReason::RefNotPermitted, &msg);
                diags.push(s.warning(field, msg));
                return (format!("{ns}/{name}"), None);
            }
            format!("{name}.{ns}.svc.{}", registry.domain_suffix())
        }
        ("networking.istio.io", "Hostname") => name.to_ascii_lowercase(),
        _ => {
            let msg = format!(
                "backend kind {group}/{kind} is not supported (Service, or networking.istio.io/Hostname) (InvalidKind); {consequence}"
            );
            ctx.unresolved(route, RefsReason::InvalidKind, &msg);
            diags.push(s.warning(field, msg));
            return (format!("{group}/{kind}/{ns}/{name}"), None);
        }
    };
    let p = port.map(|p| p.to_string()).unwrap_or_default();
    let unresolved = format!("outbound|{p}||{host}");
    let Some(port) = port else {
        let msg = format!("a backend needs a port; {consequence}");
        ctx.unresolved(route, RefsReason::BackendNotFound, &msg);
        diags.push(s.warning(&format!("{field}.port"), msg));
        return (unresolved, None);
    };
    match registry.cluster(&host, Some(port), None) {
        Ok((cluster_name, i)) => (cluster_name, Some(i)),
        Err(why) => {
            let msg = match why {
                Unresolved::UnknownHost => format!(
                    "no ServiceEntry defines host {host} (a Service is its registry host NAME.NAMESPACE.svc.{}) (BackendNotFound); {consequence}",
                    registry.domain_suffix()
                ),
                Unresolved::Port(m) | Unresolved::Subset(m) => {
                    format!(
                        "{} (BackendNotFound); {consequence}",
                        m.trim_end_matches("; requests to it answer 503")
                    )
                }
            };
            ctx.unresolved(route, RefsReason::BackendNotFound, &msg);
            diags.push(s.warning(field, msg));
            (unresolved, None)
        }
    }
}
