#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
//! The admin server (default `127.0.0.1:15000`): readiness, Prometheus metrics, the compiled
//! configuration and its route table. It only reads.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use isthmus_api::Diagnostic;
use isthmus_config::route_table::RouteTable;
use isthmus_proxy::Gateway;
use serde::Serialize;
use tokio::net::TcpListener;

/// What the control plane last did, published for the admin server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub generation: u64,
    /// True once a configuration is applied and every listener it needs is bound.
    pub ready: bool,
    /// Gateway port -> bound address.
    pub listeners: BTreeMap<u16, SocketAddr>,
    pub diagnostics: Vec<Diagnostic>,
}

pub struct Admin {
    pub gateway: Arc<Gateway>,
    pub status: Arc<ArcSwap<Status>>,
}

/// Binds the admin address; serving starts with [`serve`].
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(route(&admin, &req)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn route(admin: &Admin, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "only GET\n");
    }
    match req.uri().path() {
        "/healthz/ready" | "/ready" => {
            if admin.status.load().ready {
                text(StatusCode::OK, "LIVE\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "NOT READY\n")
            }
        }
        "/stats/prometheus" | "/metrics" => metrics(admin),
        "/config_dump" => config_dump(admin),
        "/routes" => routes(admin, req.uri().query()),
        "/listeners" => json(&admin.status.load().listeners),
        "/" => text(
            StatusCode::OK,
            "isthmus admin: /healthz/ready /stats/prometheus /config_dump /routes[?format=text] /listeners\n",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    respond(
        status,
        "text/plain; charset=utf-8",
        Bytes::from_static(body.as_bytes()),
    )
}

fn respond(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

fn json<T: Serialize>(value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => respond(StatusCode::OK, "application/json", Bytes::from(body)),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode\n"),
    }
}

fn metrics(admin: &Admin) -> Response<Full<Bytes>> {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, admin.gateway.metrics.registry())
        .is_err()
    {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
    }
    respond(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        Bytes::from(out),
    )
}

/// The route table of the current snapshot per port and host, in evaluation order: JSON, or
/// text with `?format=text`.
fn routes(admin: &Admin, query: Option<&str>) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Routes {
        generation: u64,
        #[serde(flatten)]
        table: RouteTable,
    }
    let active = admin.gateway.active.load();
    let table = RouteTable::of(&active.snapshot);
    let text = query.is_some_and(|q| q.split('&').any(|kv| kv == "format=text"));
    if text {
        let body = format!("generation {}\n{}", active.generation, table.to_text());
        respond(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            Bytes::from(body),
        )
    } else {
        json(&Routes {
            generation: active.generation,
            table,
        })
    }
}

fn config_dump(admin: &Admin) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Dump<'a> {
        generation: u64,
        ready: bool,
        listeners: &'a BTreeMap<u16, SocketAddr>,
        snapshot: &'a isthmus_config::Snapshot,
        diagnostics: Vec<String>,
    }
    let status = admin.status.load();
    let active = admin.gateway.active.load();
    json(&Dump {
        generation: status.generation,
        ready: status.ready,
        listeners: &status.listeners,
        snapshot: &active.snapshot,
        diagnostics: status.diagnostics.iter().map(ToString::to_string).collect(),
    })
}
