//! Kubernetes objects into the documents the file source would read: configuration objects
//! as they are, and Services with their EndpointSlices as the ServiceEntries file mode uses
//! for them (`NAME.NAMESPACE.svc.DOMAIN`, one STATIC endpoint per ready address, with the
//! labels of its pod and the locality of its node, as Istio's registry gives them).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// The label of an EndpointSlice that names its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

fn str_at<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// `namespace/name` of an object.
pub fn key_of(v: &Value) -> (String, String) {
    (
        str_at(v, "/metadata/namespace").unwrap_or("").to_string(),
        str_at(v, "/metadata/name").unwrap_or("").to_string(),
    )
}

/// The Service an EndpointSlice belongs to, `(namespace, name)`.
pub fn slice_service(slice: &Value) -> Option<(String, String)> {
    let labels = slice.pointer("/metadata/labels")?;
    let name = labels.get(SERVICE_NAME_LABEL)?.as_str()?;
    Some((
        str_at(slice, "/metadata/namespace")
            .unwrap_or("")
            .to_string(),
        name.to_string(),
    ))
}

/// The Istio protocol of a Service port: its `appProtocol`, else the prefix of its name
/// (Istio's port naming, `http-web`), else HTTP (the gateway speaks HTTP to it unless a TLS or
/// TCP route sends it bytes).
fn protocol(port: &Value) -> &'static str {
    let by_app = match str_at(port, "/appProtocol").unwrap_or("") {
        "http" | "kubernetes.io/ws" => Some("HTTP"),
        "http2" | "kubernetes.io/h2c" => Some("HTTP2"),
        "grpc" => Some("GRPC"),
        "https" | "tls" | "kubernetes.io/wss" => Some("TLS"),
        "tcp" => Some("TCP"),
        _ => None,
    };
    let name = str_at(port, "/name").unwrap_or("");
    let prefix = name.split('-').next().unwrap_or("");
    by_app.unwrap_or(match prefix {
        "http2" => "HTTP2",
        "grpc" if name.starts_with("grpc-web") => "GRPC-WEB",
        "grpc" => "GRPC",
        "https" | "tls" => "TLS",
        "tcp" | "mongo" => "TCP",
        _ => "HTTP",
    })
}

/// The addresses of a Service's load balancer (`ip`, else `hostname`, of each
/// `status.loadBalancer.ingress` entry), else its `spec.externalIPs`.
pub fn load_balancer_addresses(service: &Value) -> Vec<String> {
    let strings = |pointer: &str| -> Vec<String> {
        service
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|e| match e {
                        Value::String(s) => Some(s.clone()),
                        _ => str_at(e, "/ip")
                            .or_else(|| str_at(e, "/hostname"))
                            .map(str::to_string),
                    })
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default()
    };
    let balanced = strings("/status/loadBalancer/ingress");
    if balanced.is_empty() {
        strings("/spec/externalIPs")
    } else {
        balanced
    }
}

/// Node labels giving a locality, as Istio reads them.
const REGION_LABEL: &str = "topology.kubernetes.io/region";
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";
const SUBZONE_LABEL: &str = "topology.istio.io/subzone";
/// A pod label that overrides its node's locality (`region.zone.subzone`), as in Istio.
const POD_LOCALITY_LABEL: &str = "istio-locality";

/// What endpoints need beyond their slice: the pods behind addresses (DestinationRule subsets
/// select on their labels) and the nodes they run on (for locality), both as [`strip_pod`] and
/// [`strip_node`] keep them.
#[derive(Debug, Default)]
pub struct Topology {
    /// By `(namespace, name)`.
    pub pods: BTreeMap<(String, String), Value>,
    /// By name.
    pub nodes: BTreeMap<String, Value>,
}

impl Topology {
    /// The labels of the pod an endpoint's `targetRef` names.
    fn pod<'a>(&'a self, endpoint: &Value, namespace: &str) -> Option<&'a Value> {
        let target = endpoint.get("targetRef")?;
        if str_at(target, "/kind") != Some("Pod") {
            return None;
        }
        let ns = str_at(target, "/namespace").unwrap_or(namespace);
        let name = str_at(target, "/name")?;
        self.pods.get(&(ns.to_string(), name.to_string()))
    }

    /// `region/zone/subzone` of an endpoint: its pod's `istio-locality` label, else its
    /// node's topology labels (the slice's `zone` when the node is not known).
    fn locality(&self, endpoint: &Value, pod: Option<&Value>) -> Option<String> {
        let pod_labels = pod.and_then(|p| p.pointer("/metadata/labels"));
        if let Some(l) = pod_labels
            .and_then(|l| l.get(POD_LOCALITY_LABEL))
            .and_then(Value::as_str)
        {
            return Some(l.replace('.', "/"));
        }
        let node = str_at(endpoint, "/nodeName")
            .or_else(|| pod.and_then(|p| str_at(p, "/spec/nodeName")))
            .and_then(|n| self.nodes.get(n));
        let label = |key: &str| {
            node.and_then(|n| n.pointer("/metadata/labels"))
                .and_then(|l| l.get(key))
                .and_then(Value::as_str)
        };
        let region = label(REGION_LABEL).unwrap_or("");
        let zone = label(ZONE_LABEL)
            .or_else(|| str_at(endpoint, "/zone"))
            .unwrap_or("");
        let subzone = label(SUBZONE_LABEL).unwrap_or("");
        let locality = [region, zone, subzone].join("/");
        let locality = locality.trim_end_matches('/');
        (!locality.is_empty()).then(|| locality.to_string())
    }
}

/// The part of a Pod the registry uses (name, namespace, labels and node): pods are many and
/// large, and the rest is not the gateway's business.
pub fn strip_pod(pod: &Value) -> Value {
    json!({
        "metadata": {
            "name": pod.pointer("/metadata/name"),
            "namespace": pod.pointer("/metadata/namespace"),
            "labels": pod.pointer("/metadata/labels"),
        },
        "spec": {"nodeName": pod.pointer("/spec/nodeName")},
    })
}

/// The part of a Node the registry uses: its name and labels (the topology ones).
pub fn strip_node(node: &Value) -> Value {
    let labels: Map<String, Value> = node
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|l| {
            l.iter()
                .filter(|(k, _)| [REGION_LABEL, ZONE_LABEL, SUBZONE_LABEL].contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    json!({"metadata": {"name": node.pointer("/metadata/name"), "labels": labels}})
}

/// The ServiceEntry standing for `service` and its `slices`. `None` for a Service without a
/// name or with only UDP ports.
pub fn service_entry(
    service: &Value,
    slices: &[&Value],
    topology: &Topology,
    domain: &str,
) -> Option<Value> {
    let (ns, name) = key_of(service);
    if name.is_empty() {
        return None;
    }
    let host = format!("{name}.{ns}.svc.{domain}");
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(ns));
    if let Some(t) = service.pointer("/metadata/creationTimestamp") {
        meta.insert("creationTimestamp".into(), t.clone());
    }
    if str_at(service, "/spec/type") == Some("ExternalName") {
        let external = str_at(service, "/spec/externalName").unwrap_or("");
        let ports = ports(service);
        return Some(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": meta,
            "spec": {
                "hosts": [host],
                "ports": ports.iter().map(|(se, _, number, proto)| json!({"number": number, "name": se, "protocol": proto})).collect::<Vec<_>>(),
                "resolution": "DNS",
                "endpoints": [{"address": external}],
            }
        }));
    }
    let ports = ports(service);
    if ports.is_empty() {
        return None;
    }
    let endpoints = endpoints(slices, &ports, topology);
    Some(json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": meta,
        "spec": {
            "hosts": [host],
            "ports": ports.iter().map(|(se, _, number, proto)| json!({"number": number, "name": se, "protocol": proto})).collect::<Vec<_>>(),
            "resolution": "STATIC",
            "endpoints": endpoints,
        }
    }))
}

/// `(ServiceEntry port name, Service port name, number, protocol)` of the TCP ports.
fn ports(service: &Value) -> Vec<(String, String, u64, &'static str)> {
    let list = service
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    list.iter()
        .filter(|p| str_at(p, "/protocol").unwrap_or("TCP") == "TCP")
        .filter_map(|p| {
            let number = p.get("port")?.as_u64()?;
            let name = str_at(p, "/name").unwrap_or("").to_string();
            let se = if name.is_empty() {
                format!("port-{number}")
            } else {
                name.clone()
            };
            Some((se, name, number, protocol(p)))
        })
        .collect()
}

/// One endpoint per address of a ready endpoint, with the slice's port for each Service port.
fn endpoints(
    slices: &[&Value],
    ports: &[(String, String, u64, &'static str)],
    topology: &Topology,
) -> Vec<Value> {
    let mut out = Vec::new();
    for slice in slices {
        let namespace = str_at(slice, "/metadata/namespace").unwrap_or("");
        if !matches!(str_at(slice, "/addressType"), Some("IPv4" | "IPv6")) {
            continue;
        }
        let slice_ports = slice
            .get("ports")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let mut port_map = Map::new();
        for (se, svc_name, _, _) in ports {
            let found = slice_ports
                .iter()
                .find(|p| str_at(p, "/name").unwrap_or("") == svc_name)
                .and_then(|p| p.get("port"))
                .and_then(Value::as_u64);
            if let Some(n) = found {
                port_map.insert(se.clone(), json!(n));
            }
        }
        let eps = slice
            .get("endpoints")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        // Kubernetes: an unknown readiness counts as ready.
        let ready =
            |e: &Value| e.pointer("/conditions/ready").and_then(Value::as_bool) != Some(false);
        for e in eps.iter().filter(|e| ready(e)) {
            let addresses = e
                .get("addresses")
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let pod = topology.pod(e, namespace);
            let mut endpoint = Map::new();
            endpoint.insert("ports".into(), Value::Object(port_map.clone()));
            let labels = pod.and_then(|p| p.pointer("/metadata/labels"));
            if let Some(labels) = labels.filter(|l| l.as_object().is_some_and(|l| !l.is_empty())) {
                endpoint.insert("labels".into(), labels.clone());
            }
            if let Some(locality) = topology.locality(e, pod) {
                endpoint.insert("locality".into(), json!(locality));
            }
            for a in addresses.iter().filter_map(Value::as_str) {
                let mut one = endpoint.clone();
                one.insert("address".into(), json!(a));
                out.push(Value::Object(one));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn services_and_slices_become_service_entries() {
        let svc = json!({
            "metadata": {"name": "web", "namespace": "shop", "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"ports": [
                {"name": "http", "port": 80, "protocol": "TCP"},
                {"name": "grpc-api", "port": 9000},
                {"port": 53, "protocol": "UDP"},
                {"port": 8443, "appProtocol": "https"},
            ]}
        });
        let slice = json!({
            "metadata": {"namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}, {"name": "grpc-api", "port": 9090}, {"name": "", "port": 8443}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false}},
                {"addresses": ["10.0.0.3"]},
            ]
        });
        let se = service_entry(&svc, &[&slice], &Topology::default(), "cluster.local").unwrap();
        assert_eq!(slice_service(&slice), Some(("shop".into(), "web".into())));
        assert_eq!(
            se["spec"],
            json!({
                "hosts": ["web.shop.svc.cluster.local"],
                "ports": [
                    {"number": 80, "name": "http", "protocol": "HTTP"},
                    {"number": 9000, "name": "grpc-api", "protocol": "GRPC"},
                    {"number": 8443, "name": "port-8443", "protocol": "TLS"},
                ],
                "resolution": "STATIC",
                "endpoints": [
                    {"address": "10.0.0.1", "ports": {"http": 8080, "grpc-api": 9090, "port-8443": 8443}},
                    {"address": "10.0.0.3", "ports": {"http": 8080, "grpc-api": 9090, "port-8443": 8443}},
                ],
            })
        );
        assert_eq!(se["metadata"]["creationTimestamp"], "2024-01-01T00:00:00Z");
        let external = json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"type": "ExternalName", "externalName": "db.example.com", "ports": [{"name": "tcp", "port": 5432}]}
        });
        let se = service_entry(&external, &[], &Topology::default(), "cluster.local").unwrap();
        assert_eq!(se["spec"]["resolution"], "DNS");
        assert_eq!(
            se["spec"]["endpoints"],
            json!([{"address": "db.example.com"}])
        );
    }

    #[test]
    fn endpoints_carry_their_pods_labels_and_their_nodes_locality() {
        let svc = json!({"metadata": {"name": "web", "namespace": "shop"},
                         "spec": {"ports": [{"name": "http", "port": 80}]}});
        let endpoint = |ip: &str, pod: &str, node: Option<&str>, zone: Option<&str>| {
            let mut e = json!({"addresses": [ip], "targetRef": {"kind": "Pod", "name": pod, "namespace": "shop"}});
            if let Some(n) = node {
                e["nodeName"] = json!(n);
            }
            if let Some(z) = zone {
                e["zone"] = json!(z);
            }
            e
        };
        let slice = json!({
            "metadata": {"namespace": "shop", "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": 8080}],
            "endpoints": [
                endpoint("10.0.0.1", "web-v1", Some("node-a"), Some("ignored-zone")),
                endpoint("10.0.0.2", "web-v2", None, None),
                endpoint("10.0.0.3", "pinned", Some("node-a"), None),
                endpoint("10.0.0.4", "unknown-pod", Some("unknown-node"), Some("z9")),
            ]
        });
        let pod = |name: &str, labels: Value, node: &str| {
            json!({"metadata": {"name": name, "namespace": "shop", "labels": labels, "uid": "x"},
                   "spec": {"nodeName": node, "containers": [{"name": "big"}]}})
        };
        let node = |name: &str, labels: Value| json!({"metadata": {"name": name, "labels": labels}, "status": {"capacity": {}}});
        let mut topology = Topology::default();
        for p in [
            pod("web-v1", json!({"app": "web", "version": "v1"}), "node-a"),
            pod("web-v2", json!({"app": "web", "version": "v2"}), "node-b"),
            pod(
                "pinned",
                json!({"istio-locality": "eu.west-1.rack2"}),
                "node-a",
            ),
        ] {
            let p = strip_pod(&p);
            assert!(p.pointer("/spec/containers").is_none());
            topology.pods.insert(key_of(&p), p);
        }
        for n in [
            node(
                "node-a",
                json!({"topology.kubernetes.io/region": "us-east", "topology.kubernetes.io/zone": "us-east-1a", "kubernetes.io/os": "linux"}),
            ),
            node(
                "node-b",
                json!({"topology.kubernetes.io/region": "us-west", "topology.kubernetes.io/zone": "us-west-2b", "topology.istio.io/subzone": "rack7"}),
            ),
        ] {
            let n = strip_node(&n);
            assert!(n.pointer("/metadata/labels/kubernetes.io~1os").is_none());
            topology.nodes.insert(key_of(&n).1, n);
        }
        let se = service_entry(&svc, &[&slice], &topology, "cluster.local").unwrap();
        assert_eq!(
            se["spec"]["endpoints"],
            json!([
                {"address": "10.0.0.1", "ports": {"http": 8080}, "labels": {"app": "web", "version": "v1"}, "locality": "us-east/us-east-1a"},
                // No nodeName on the endpoint: the pod's node.
                {"address": "10.0.0.2", "ports": {"http": 8080}, "labels": {"app": "web", "version": "v2"}, "locality": "us-west/us-west-2b/rack7"},
                // The pod's istio-locality label wins over its node.
                {"address": "10.0.0.3", "ports": {"http": 8080}, "labels": {"istio-locality": "eu.west-1.rack2"}, "locality": "eu/west-1/rack2"},
                // Neither pod nor node known: the slice's zone alone.
                {"address": "10.0.0.4", "ports": {"http": 8080}, "locality": "/z9"},
            ])
        );
    }

    #[test]
    fn a_services_addresses_are_its_load_balancers_else_its_external_ips() {
        let cases = [
            (
                json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}, {"hostname": "lb.example.com"}]}},
                    "spec": {"externalIPs": ["198.51.100.1"]}}),
                vec!["192.0.2.1", "lb.example.com"],
            ),
            (
                json!({"status": {"loadBalancer": {}}, "spec": {"externalIPs": ["198.51.100.1"]}}),
                vec!["198.51.100.1"],
            ),
            (
                json!({"spec": {"type": "ClusterIP", "clusterIP": "10.0.0.1"}}),
                vec![],
            ),
            (
                json!({"status": {"loadBalancer": {"ingress": [{"ip": ""}, {}]}}}),
                vec![],
            ),
        ];
        for (service, want) in cases {
            assert_eq!(load_balancer_addresses(&service), want, "{service}");
        }
    }
}
