#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
//! The admin server (default `127.0.0.1:15000`): readiness, Prometheus metrics and their
//! summary, the compiled configuration, its route table and clusters, the dashboard page, and
//! two actions: changing the log filter and draining.

pub mod clusters;
mod dashboard;
pub mod logging;
pub mod prom;
mod reply;
pub mod summary;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use isthmus_api::Diagnostic;
use isthmus_config::route_table::RouteTable;
use isthmus_proxy::Gateway;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

pub use logging::{FilterError, LogControl};
use reply::Reply;

/// The largest request body the admin server reads (a log filter).
const MAX_BODY: usize = 16 * 1024;

/// What the control plane last did, published for the admin server.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    pub generation: u64,
    /// True once a configuration is applied and every listener it needs is bound.
    pub ready: bool,
    /// Gateway port -> bound address.
    pub listeners: BTreeMap<u16, SocketAddr>,
    pub diagnostics: Vec<Diagnostic>,
    /// Every loaded resource with where it came from and its version.
    pub resources: Vec<ResourceVersion>,
}

/// A loaded resource as `/config_dump` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResourceVersion {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub file: String,
    pub line: usize,
    /// A hash of the resource's content (metadata and spec), changed by any edit that matters.
    pub version: String,
    /// The configuration generation that first served this version.
    pub generation: u64,
}

pub struct Admin {
    pub gateway: Arc<Gateway>,
    pub status: Arc<ArcSwap<Status>>,
    logging: Option<Arc<dyn LogControl>>,
    drain: Option<mpsc::Sender<()>>,
    /// Set by `POST /drain`: readiness fails from that moment on.
    draining: AtomicBool,
    summary: summary::Recorder,
}

impl Admin {
    pub fn new(gateway: Arc<Gateway>, status: Arc<ArcSwap<Status>>) -> Self {
        Admin {
            gateway,
            status,
            logging: None,
            drain: None,
            draining: AtomicBool::new(false),
            summary: summary::Recorder::default(),
        }
    }

    /// Lets `/logging` show and change the log filter.
    pub fn with_logging(mut self, control: Option<Arc<dyn LogControl>>) -> Self {
        self.logging = control;
        self
    }

    /// Lets `POST /drain` ask the process to drain and exit, through `requests`.
    pub fn with_drain(mut self, requests: mpsc::Sender<()>) -> Self {
        self.drain = Some(requests);
        self
    }
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
                async move { Ok::<_, Infallible>(handle(&admin, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Reply {
    match *req.method() {
        Method::GET | Method::HEAD => get(admin, req.uri().path(), req.uri().query()),
        Method::POST => post(admin, req).await,
        _ => reply::text(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST\n"),
    }
}

fn get(admin: &Admin, path: &str, query: Option<&str>) -> Reply {
    match path {
        "/healthz/ready" | "/ready" => ready(admin),
        "/stats/prometheus" | "/metrics" => metrics(admin),
        "/stats/summary" => stats_summary(admin),
        "/config_dump" => config_dump(admin),
        "/routes" => routes(admin, query),
        "/clusters" => clusters(admin, query),
        "/listeners" => reply::json(&admin.status.load().listeners),
        "/logging" => logging::show(admin.logging.as_deref()),
        "/drain" => reply::text(StatusCode::METHOD_NOT_ALLOWED, "POST /drain to drain\n"),
        "/help" => reply::text(StatusCode::OK, HELP),
        _ => dashboard::asset(path)
            .unwrap_or_else(|| reply::text(StatusCode::NOT_FOUND, "not found; see /help\n")),
    }
}

const HELP: &str = "isthmus admin
  GET  /                  dashboard (also /dashboard)
  GET  /healthz/ready     readiness
  GET  /stats/prometheus  Prometheus metrics
  GET  /stats/summary     recent request rate, 5xx share and latency per destination (JSON)
  GET  /config_dump       compiled configuration, resource versions and diagnostics (JSON)
  GET  /routes            route table (JSON; ?format=text)
  GET  /clusters          upstream clusters and endpoint health (JSON; ?format=text)
  GET  /listeners         Gateway port -> bound address (JSON)
  GET  /logging           log filter
  POST /logging?level=F   replace the log filter (debug, info,isthmus_proxy=debug, ...)
  POST /drain             stop accepting, finish in-flight requests, exit
";

async fn post(admin: &Admin, req: Request<Incoming>) -> Reply {
    // A web page from elsewhere can make the browser POST here; a page's requests carry its
    // Origin, so only this server's own origin (or none, as curl sends) may change state.
    if !same_origin(&req) {
        return reply::text(StatusCode::FORBIDDEN, "cross-origin request refused\n");
    }
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    match path.as_str() {
        "/logging" => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => return reply::text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
            };
            logging::change(admin.logging.as_deref(), query.as_deref(), &body)
        }
        "/drain" => drain(admin),
        _ => reply::text(StatusCode::NOT_FOUND, "not found; see /help\n"),
    }
}

fn same_origin<B>(req: &Request<B>) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    match (origin.to_str().ok(), host) {
        (Some(origin), Some(host)) => origin.strip_prefix("http://") == Some(host),
        _ => false,
    }
}

fn ready(admin: &Admin) -> Reply {
    if admin.draining.load(Ordering::Relaxed) {
        reply::text(StatusCode::SERVICE_UNAVAILABLE, "DRAINING\n")
    } else if admin.status.load().ready {
        reply::text(StatusCode::OK, "LIVE\n")
    } else {
        reply::text(StatusCode::SERVICE_UNAVAILABLE, "NOT READY\n")
    }
}

/// Starts draining: readiness fails at once, then the process drains as on SIGTERM.
fn drain(admin: &Admin) -> Reply {
    let Some(requests) = &admin.drain else {
        return reply::text(
            StatusCode::NOT_IMPLEMENTED,
            "this process cannot be drained from here\n",
        );
    };
    if admin.draining.swap(true, Ordering::Relaxed) {
        return reply::text(StatusCode::ACCEPTED, "already draining\n");
    }
    tracing::info!("drain requested through the admin server");
    // A full channel already holds a request; a closed one means the run loop is gone.
    let _ = requests.try_send(());
    reply::text(StatusCode::ACCEPTED, "draining\n")
}

fn metrics_text(admin: &Admin) -> Option<String> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, admin.gateway.metrics.registry()).ok()?;
    Some(out)
}

fn metrics(admin: &Admin) -> Reply {
    match metrics_text(admin) {
        Some(out) => reply::respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Bytes::from(out),
        ),
        None => reply::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n"),
    }
}

fn stats_summary(admin: &Admin) -> Reply {
    #[derive(Serialize)]
    struct Answer {
        generation: u64,
        ready: bool,
        #[serde(flatten)]
        summary: summary::Summary,
    }
    let Some(text) = metrics_text(admin) else {
        return reply::text(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics\n");
    };
    let status = admin.status.load();
    reply::json(&Answer {
        generation: status.generation,
        ready: status.ready && !admin.draining.load(Ordering::Relaxed),
        summary: admin.summary.summarize(&text),
    })
}

/// The route table of the current snapshot per port and host, in evaluation order: JSON, or
/// text with `?format=text`.
fn routes(admin: &Admin, query: Option<&str>) -> Reply {
    #[derive(Serialize)]
    struct Routes {
        generation: u64,
        #[serde(flatten)]
        table: RouteTable,
    }
    let active = admin.gateway.active.load();
    let table = RouteTable::of(&active.snapshot);
    if reply::wants_text(query) {
        let body = format!("generation {}\n{}", active.generation, table.to_text());
        reply::text(StatusCode::OK, body)
    } else {
        reply::json(&Routes {
            generation: active.generation,
            table,
        })
    }
}

fn clusters(admin: &Admin, query: Option<&str>) -> Reply {
    let view = clusters::Clusters::of(&admin.gateway.active.load());
    if reply::wants_text(query) {
        reply::text(StatusCode::OK, view.to_text())
    } else {
        reply::json(&view)
    }
}

fn config_dump(admin: &Admin) -> Reply {
    #[derive(Serialize)]
    struct Dump<'a> {
        generation: u64,
        ready: bool,
        listeners: &'a BTreeMap<u16, SocketAddr>,
        snapshot: &'a isthmus_config::Snapshot,
        resources: &'a [ResourceVersion],
        /// As `isthmus validate` prints them.
        diagnostics: Vec<String>,
        /// The same, field by field.
        diagnostic_details: &'a [Diagnostic],
    }
    let status = admin.status.load();
    let active = admin.gateway.active.load();
    reply::json(&Dump {
        generation: status.generation,
        ready: status.ready,
        listeners: &status.listeners,
        snapshot: &active.snapshot,
        resources: &status.resources,
        diagnostics: status.diagnostics.iter().map(ToString::to_string).collect(),
        diagnostic_details: &status.diagnostics,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(origin: Option<&str>) -> Request<()> {
        let mut b = Request::post("/drain").header("host", "127.0.0.1:15000");
        if let Some(o) = origin {
            b = b.header("origin", o);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn only_same_origin_posts() {
        assert!(same_origin(&post(None)));
        assert!(same_origin(&post(Some("http://127.0.0.1:15000"))));
        assert!(!same_origin(&post(Some("http://evil.example"))));
        assert!(!same_origin(&post(Some("null"))));
    }
}
