//! Kubernetes objects into the documents the file source would read: configuration objects
//! as they are, and Services with their EndpointSlices as the ServiceEntries file mode uses
//! for them (`NAME.NAMESPACE.svc.DOMAIN`, one STATIC endpoint per ready address).

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

/// The ServiceEntry standing for `service` and its `slices`. `None` for a Service without a
/// name or with only UDP ports.
pub fn service_entry(service: &Value, slices: &[&Value], domain: &str) -> Option<Value> {
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
    let endpoints = endpoints(slices, &ports);
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
fn endpoints(slices: &[&Value], ports: &[(String, String, u64, &'static str)]) -> Vec<Value> {
    let mut out = Vec::new();
    for slice in slices {
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
            for a in addresses.iter().filter_map(Value::as_str) {
                out.push(json!({"address": a, "ports": port_map}));
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
        let se = service_entry(&svc, &[&slice], "cluster.local").unwrap();
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
        let se = service_entry(&external, &[], "cluster.local").unwrap();
        assert_eq!(se["spec"]["resolution"], "DNS");
        assert_eq!(
            se["spec"]["endpoints"],
            json!([{"address": "db.example.com"}])
        );
    }
}
