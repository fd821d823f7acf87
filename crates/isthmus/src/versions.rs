//! Resource versions for `/config_dump`: a content hash of each loaded resource, and the
//! configuration generation that first served that content. Files carry no Kubernetes
//! `resourceVersion`, so the hash plays its part: it changes exactly when the resource does
//! (comments, formatting and the resource's position in its file do not count).

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use isthmus_admin::ResourceVersion;
use isthmus_api::{Object, Resource, ResourceKey};

#[derive(Default)]
pub struct Versions {
    /// (resource, file) -> (version, generation it first appeared in).
    seen: HashMap<(ResourceKey, String), (String, u64)>,
    /// The version of every resource of the last update, by the resource's address: hashing
    /// a large spec is costly, and most resources of a reload are the very same ones (the
    /// entry holds the resource, so the address is not reused while it lives).
    hashed: HashMap<usize, (Arc<Resource>, String)>,
}

impl Versions {
    /// The versions of `resources` as loaded for `generation`.
    pub fn update(&mut self, resources: &[Arc<Resource>], generation: u64) -> Vec<ResourceVersion> {
        let mut seen = HashMap::with_capacity(resources.len());
        let mut previous = std::mem::take(&mut self.hashed);
        let out = resources
            .iter()
            .map(|r| {
                let key = r.key();
                let origin = r.origin();
                let id = Arc::as_ptr(r) as usize;
                let version = match previous.remove(&id) {
                    Some((_, v)) => v,
                    None => version(r),
                };
                self.hashed.insert(id, (r.clone(), version.clone()));
                let id = (key.clone(), origin.file.to_string());
                let since = match self.seen.get(&id) {
                    Some((v, g)) if *v == version => *g,
                    _ => generation,
                };
                seen.insert(id, (version.clone(), since));
                ResourceVersion {
                    kind: key.kind.to_string(),
                    namespace: key.namespace,
                    name: key.name,
                    file: origin.file.to_string(),
                    line: origin.line(),
                    version,
                    generation: since,
                }
            })
            .collect();
        self.seen = seen;
        out
    }
}

/// 16 hex digits of FNV-1a over the resource's API version, metadata and spec.
fn version(r: &Resource) -> String {
    let hash = match r {
        Resource::Gateway(o) => content(o),
        Resource::VirtualService(o) => content(o),
        Resource::DestinationRule(o) => content(o),
        Resource::ServiceEntry(o) => content(o),
        Resource::Secret(o) => content(o),
        Resource::Namespace(o) => content(o),
        Resource::GatewayClass(o) => content(o),
        Resource::KubeGateway(o) => content(o),
        Resource::HttpRoute(o) => content(o),
        Resource::GrpcRoute(o) => content(o),
        Resource::TlsRoute(o) => content(o),
        Resource::TcpRoute(o) => content(o),
        Resource::ReferenceGrant(o) => content(o),
        Resource::Ingress(o) => content(o),
        Resource::IngressClass(o) => content(o),
    };
    format!("{hash:016x}")
}

/// FNV-1a of the object's API version, metadata and body. The body is the loader's hash of
/// what it read, when it read it: rendering a large spec to hash it again cost about 100 ms
/// per 100,000 routes. Objects built in code hash their spec's debug rendering, as it is
/// written (not rendered into a string of its own first).
fn content<S: Debug>(o: &Object<S>) -> u64 {
    use std::fmt::Write;
    let mut h = Fnv1a(FNV_OFFSET);
    // Writing into a hasher cannot fail.
    let _ = write!(h, "{}\n{:?}\n", o.api_version, o.meta);
    let _ = match o.origin.body_hash() {
        Some(body) => write!(h, "{body:016x}"),
        None => write!(h, "{:?}", o.spec),
    };
    h.0
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// An FNV-1a hash that text can be written into.
struct Fnv1a(u64);

impl std::fmt::Write for Fnv1a {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0 = s.bytes().fold(self.0, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_api::load::load_str;

    fn load(text: &str) -> Vec<Arc<Resource>> {
        load_str("gw.yaml", text).unwrap().resources
    }

    const GW: &str = "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  servers: [{port: {number: 80, name: http, protocol: HTTP}, hosts: ['*']}]\n";

    #[test]
    fn versions_change_with_content_only() {
        let mut v = Versions::default();
        let first = v.update(&load(GW), 1);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].generation, 1);
        assert_eq!((first[0].file.as_str(), first[0].line), ("gw.yaml", 1));
        // A comment above it moves it but changes nothing that matters.
        let moved = v.update(&load(&format!("# hello\n{GW}")), 2);
        assert_eq!(moved[0].version, first[0].version);
        assert_eq!((moved[0].generation, moved[0].line), (1, 2));
        let changed = v.update(&load(&GW.replace("80", "81")), 3);
        assert_ne!(changed[0].version, first[0].version);
        assert_eq!(changed[0].generation, 3);
    }

    #[test]
    fn key_order_and_status_do_not_change_a_version_but_metadata_does() {
        let base = "apiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: default}\ntype: kubernetes.io/tls\ndata: {tls.crt: QQ==, tls.key: Qg==}\n";
        let version = |text: &str| {
            Versions::default().update(&load(text), 1)[0]
                .version
                .clone()
        };
        let first = version(GW);
        let reordered = GW.replace(
            "{number: 80, name: http, protocol: HTTP}",
            "{protocol: HTTP, name: http, number: 80}",
        );
        assert_eq!(version(&reordered), first);
        assert_eq!(version(&format!("{GW}status: {{conditions: []}}\n")), first);
        let labelled = GW.replace("namespace: default}", "namespace: default, labels: {a: b}}");
        assert_ne!(version(&labelled), first);
        // A Secret's body is its data, outside `spec`.
        let secret = version(base);
        assert_eq!(
            version(&base.replace(
                "{tls.crt: QQ==, tls.key: Qg==}",
                "{tls.key: Qg==, tls.crt: QQ==}"
            )),
            secret
        );
        assert_ne!(version(&base.replace("QQ==", "Qw==")), secret);
    }

    #[test]
    fn fnv_reference_values() {
        use std::fmt::Write;
        let fnv = |parts: &[&str]| {
            let mut h = Fnv1a(FNV_OFFSET);
            parts.iter().for_each(|p| h.write_str(p).unwrap());
            h.0
        };
        assert_eq!(fnv(&[]), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv(&["a"]), 0xaf63_dc4c_8601_ec8c);
        // Stable across splits: the hash is of the text, however it is written.
        assert_eq!(fnv(&["foo", "bar"]), fnv(&["foobar"]));
    }
}
