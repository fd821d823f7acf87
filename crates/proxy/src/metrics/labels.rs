//! The label values of Istio's standard metrics that do not change per request: who the
//! gateway is (`source_*`) and what a cluster is (`destination_*`). They are worked out when
//! the gateway starts and when a configuration is applied, never per request.

use std::collections::BTreeMap;

use isthmus_config::snapshot::{Cluster, EndpointSource};

/// Istio's value for anything not known.
pub const UNKNOWN: &str = "unknown";

/// How this instance names itself in metrics: its workload name, namespace and labels.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    pub workload: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
}

/// `source_*` labels of an Istio gateway (reporter `source`): its own workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceLabels {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

impl SourceLabels {
    /// As Istio derives them from the pod's labels: `app` and `version` (or their
    /// `app.kubernetes.io/` forms), and the canonical service and revision with the injector's
    /// fallbacks (the workload name, `latest`).
    pub fn new(id: &Identity) -> Self {
        let label = |keys: &[&str]| keys.iter().find_map(|k| id.labels.get(*k).cloned());
        SourceLabels {
            workload: id.workload.clone(),
            namespace: id.namespace.clone(),
            app: label(&["app", "app.kubernetes.io/name"]).unwrap_or_else(|| id.workload.clone()),
            version: label(&["version", "app.kubernetes.io/version"])
                .unwrap_or_else(|| UNKNOWN.into()),
            canonical_service: label(CANONICAL_SERVICE).unwrap_or_else(|| id.workload.clone()),
            canonical_revision: label(CANONICAL_REVISION).unwrap_or_else(|| "latest".into()),
        }
    }
}

const CANONICAL_SERVICE: &[&str] = &[
    "service.istio.io/canonical-name",
    "app.kubernetes.io/name",
    "app",
];
const CANONICAL_REVISION: &[&str] = &[
    "service.istio.io/canonical-revision",
    "app.kubernetes.io/version",
    "version",
];

/// `destination_*` labels of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestinationLabels {
    pub service: String,
    pub service_name: String,
    pub service_namespace: String,
    pub app: String,
    pub version: String,
    pub canonical_service: String,
    pub canonical_revision: String,
}

impl DestinationLabels {
    /// The labels of a cluster. Services come from ServiceEntries, whose name in Istio's
    /// cluster metadata is the host itself (`destination_service_name`), in the
    /// ServiceEntry's namespace. Workload labels (`app`, `version`, canonical service and
    /// revision) are those every endpoint of the cluster shares, which for a subset includes
    /// the subset's own labels; a label the endpoints disagree on is `unknown`.
    pub fn of_cluster(c: &Cluster) -> Self {
        let endpoints: Vec<&BTreeMap<String, String>> = match &c.endpoints {
            EndpointSource::Static(eps) => eps.iter().map(|e| &e.labels).collect(),
            EndpointSource::Dns(targets) => targets.iter().map(|t| &t.labels).collect(),
            EndpointSource::OriginalDestination { .. } => Vec::new(),
        };
        let shared = |keys: &[&str]| keys.iter().find_map(|k| common_label(&endpoints, k));
        DestinationLabels {
            service: c.service.clone(),
            service_name: c.service.clone(),
            service_namespace: c.service_namespace.clone(),
            app: shared(&["app"]).unwrap_or_else(|| UNKNOWN.into()),
            version: shared(&["version"]).unwrap_or_else(|| UNKNOWN.into()),
            canonical_service: shared(CANONICAL_SERVICE).unwrap_or_else(|| UNKNOWN.into()),
            canonical_revision: shared(CANONICAL_REVISION).unwrap_or_else(|| "latest".into()),
        }
    }

    /// Requests that reach no cluster (no route, or a fault before one): Istio's gateways do
    /// not fall back to the Host header, so everything is `unknown`.
    pub fn unknown() -> Self {
        DestinationLabels {
            service: UNKNOWN.into(),
            service_name: UNKNOWN.into(),
            service_namespace: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
            canonical_service: UNKNOWN.into(),
            canonical_revision: "latest".into(),
        }
    }
}

/// The value of `key` if every endpoint has it and they all agree.
fn common_label(endpoints: &[&BTreeMap<String, String>], key: &str) -> Option<String> {
    let (first, rest) = endpoints.split_first()?;
    let value = first.get(key)?;
    rest.iter()
        .all(|e| e.get(key) == Some(value))
        .then(|| value.clone())
}

/// Every label that is fixed for a destination, in the order Istio lists them, ready to be
/// written by a scrape.
pub fn fixed_labels(
    source: &SourceLabels,
    dest: &DestinationLabels,
) -> Vec<(&'static str, String)> {
    vec![
        ("reporter", "source".into()),
        ("source_workload", source.workload.clone()),
        ("source_workload_namespace", source.namespace.clone()),
        ("source_principal", UNKNOWN.into()),
        ("source_app", source.app.clone()),
        ("source_version", source.version.clone()),
        ("source_cluster", UNKNOWN.into()),
        ("source_canonical_service", source.canonical_service.clone()),
        (
            "source_canonical_revision",
            source.canonical_revision.clone(),
        ),
        ("destination_workload", UNKNOWN.into()),
        ("destination_workload_namespace", UNKNOWN.into()),
        ("destination_principal", UNKNOWN.into()),
        ("destination_app", dest.app.clone()),
        ("destination_version", dest.version.clone()),
        ("destination_service", dest.service.clone()),
        ("destination_service_name", dest.service_name.clone()),
        (
            "destination_service_namespace",
            dest.service_namespace.clone(),
        ),
        ("destination_cluster", UNKNOWN.into()),
        (
            "destination_canonical_service",
            dest.canonical_service.clone(),
        ),
        (
            "destination_canonical_revision",
            dest.canonical_revision.clone(),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use isthmus_config::snapshot::{Endpoint, UpstreamProtocol};

    fn cluster(labels: &[&[(&str, &str)]]) -> Cluster {
        let endpoints = labels
            .iter()
            .enumerate()
            .map(|(i, l)| Endpoint {
                address: format!("10.0.0.{i}:80").parse().unwrap(),
                labels: l
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                locality: None,
                weight: 1,
                priority: 0,
            })
            .collect();
        Cluster {
            name: "outbound|80|v1|reviews.example.com".into(),
            service: "reviews.example.com".into(),
            service_namespace: "shop".into(),
            port: 80,
            subset: Some("v1".into()),
            endpoints: EndpointSource::Static(endpoints),
            protocol: UpstreamProtocol::Http1,
            tls: None,
            policy: Default::default(),
        }
    }

    #[test]
    fn destination_labels_come_from_the_labels_endpoints_share() {
        let c = cluster(&[
            &[("app", "reviews"), ("version", "v1")],
            &[("app", "reviews"), ("version", "v1"), ("zone", "a")],
        ]);
        let d = DestinationLabels::of_cluster(&c);
        assert_eq!(d.service, "reviews.example.com");
        assert_eq!(d.service_name, "reviews.example.com");
        assert_eq!(d.service_namespace, "shop");
        assert_eq!(d.app, "reviews");
        assert_eq!(d.version, "v1");
        assert_eq!(d.canonical_service, "reviews");
        assert_eq!(d.canonical_revision, "v1");

        let mixed =
            DestinationLabels::of_cluster(&cluster(&[&[("version", "v1")], &[("version", "v2")]]));
        assert_eq!(mixed.version, "unknown");
        assert_eq!(mixed.app, "unknown");
        assert_eq!(mixed.canonical_revision, "latest");
        let none = DestinationLabels::of_cluster(&cluster(&[]));
        assert_eq!(none.version, "unknown");
    }

    #[test]
    fn source_labels_follow_istios_fallbacks() {
        let id = Identity {
            workload: "istio-ingressgateway".into(),
            namespace: "istio-system".into(),
            labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
        };
        let s = SourceLabels::new(&id);
        assert_eq!(s.app, "istio-ingressgateway");
        assert_eq!(s.version, "unknown");
        assert_eq!(s.canonical_service, "istio-ingressgateway");
        assert_eq!(s.canonical_revision, "latest");
        let mut id = id;
        id.labels.insert("app".into(), "edge".into());
        id.labels.insert("version".into(), "v3".into());
        let s = SourceLabels::new(&id);
        assert_eq!((s.app.as_str(), s.version.as_str()), ("edge", "v3"));
        assert_eq!(s.canonical_service, "edge");
        assert_eq!(s.canonical_revision, "v3");
    }
}
