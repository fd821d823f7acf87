//! The quickstart: demo backends plus the gateway on the bundled example, so a newcomer can
//! curl something within a minute. The same backend serves the end-to-end tests.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

use crate::cli::{DemoArgs, RunArgs};

/// The demo backends of the quickstart, as its ServiceEntry lists them.
pub const DEMO_BACKENDS: &[(&str, &str)] = &[
    ("httpbin-v1", "127.0.0.1:9081"),
    ("httpbin-v2", "127.0.0.1:9082"),
];

/// Starts an httpbin-like backend named `name` on `listener`.
///
/// - `/status/CODE` answers CODE;
/// - `/delay/SECONDS` waits (at most 10 s) then echoes;
/// - anything else echoes the request as JSON: backend, method, path, query, headers, body size.
///
/// Every response carries `x-backend: NAME`.
pub fn spawn_backend(name: &str, listener: TcpListener) -> tokio::task::JoinHandle<()> {
    let name: &'static str = Box::leak(name.to_string().into_boxed_str());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req| async move {
                    Ok::<_, Infallible>(backend_response(name, req).await)
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    })
}

async fn backend_response(name: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_string();
    let mut status = StatusCode::OK;
    if let Some(code) = path.strip_prefix("/status/") {
        status = code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .unwrap_or(StatusCode::BAD_REQUEST);
    }
    if let Some(secs) = path
        .strip_prefix("/delay/")
        .and_then(|s| s.parse::<f64>().ok())
    {
        tokio::time::sleep(Duration::from_secs_f64(secs.clamp(0.0, 10.0))).await;
    }
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let method = req.method().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body_len = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().len())
        .unwrap_or(0);
    let body = serde_json::json!({
        "backend": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": headers,
        "body_bytes": body_len,
    });
    let mut resp = Response::new(Full::new(Bytes::from(format!("{body:#}\n"))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = http::HeaderValue::from_str(name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    for (name, addr) in DEMO_BACKENDS {
        let addr: SocketAddr = addr.parse()?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot start demo backend {name} on {addr}: {e}"))?;
        spawn_backend(name, listener);
    }
    let url = format!("http://{}", args.listen);
    println!(
        "\nIsthmus quickstart: gateway on {url}, admin on http://{admin}, config in {cfg}\n\
         Try:\n\
         \x20 curl -H 'Host: httpbin.example.com' {url}/status/200 -i\n\
         \x20 curl -H 'Host: httpbin.example.com' {url}/get                       # 90% v1, 10% v2 (see x-backend)\n\
         \x20 curl -H 'Host: httpbin.example.com' -H 'end-user: jason' {url}/get  # always v2\n\
         \x20 curl -H 'Host: unknown.example.com' {url}/ -i                       # 404: no route\n\
         \x20 curl http://{admin}/config_dump   # the compiled routes\n\
         \x20 curl http://{admin}/stats/prometheus\n\
         Edit {cfg}/*.yaml and the change is live within a second. Ctrl-C to stop.\n",
        admin = args.admin,
        cfg = args.config.display(),
    );
    crate::run::run(RunArgs {
        config: vec![args.config],
        kubernetes: false,
        kubeconfig: None,
        publish_status_address: Vec::new(),
        publish_service: None,
        labels: crate::cli::parse_labels("istio=ingressgateway").map_err(anyhow::Error::msg)?,
        namespace: "istio-system".into(),
        locality: String::new(),
        num_trusted_proxies: 0,
        proxy_protocol: false,
        max_connections_per_listener: 100_000,
        headers_with_underscores: isthmus_proxy::edge::Underscores::Allow,
        path_normalization: isthmus_config::path::PathNormalization::Base,
        http2_max_concurrent_streams: 100,
        http2_initial_stream_window_size: isthmus_proxy::edge::DEFAULT_H2_STREAM_WINDOW,
        http2_initial_connection_window_size: isthmus_proxy::edge::DEFAULT_H2_CONNECTION_WINDOW,
        request_headers_timeout: isthmus_proxy::edge::DEFAULT_REQUEST_HEADERS_TIMEOUT,
        idle_timeout: isthmus_proxy::edge::DEFAULT_IDLE_TIMEOUT,
        park_idle_after: isthmus_proxy::edge::DEFAULT_PARK_AFTER,
        max_request_buffer_bytes: isthmus_proxy::edge::DEFAULT_MAX_REQUEST_BUFFER,
        max_request_body_bytes: None,
        bind: vec![(80, args.listen)],
        admin: args.admin,
        drain_timeout: Duration::from_secs(5),
        workers: None,
        // Istio's demo profile: access log on stdout, every request traced.
        telemetry: crate::cli::TelemetryArgs {
            access_log: isthmus_proxy::access_log::Target::Stdout,
            access_log_format: isthmus_proxy::access_log::Format::Text,
            trace_sampling: 100.0,
        },
        outbound_traffic_policy: Default::default(),
        resolve: Vec::new(),
        hosts_file: None,
        dns_servers: Vec::new(),
        classes: crate::cli::ClassArgs {
            gateway_class: isthmus_config::instance::DEFAULT_CLASS.into(),
            gateway: None,
            ingress_class: isthmus_config::instance::DEFAULT_CLASS.into(),
        },
    })
    .await
}
