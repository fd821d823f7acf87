//! `isthmus run`: wiring and the signal loop.

use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use isthmus_admin::{Admin, Status};
use isthmus_config::Instance;
use isthmus_proxy::listeners::Listeners;
use isthmus_proxy::{Gateway, Identity};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::RunArgs;
use crate::reload::Controller;
use crate::source::{FileSource, Sources};
use crate::watch;

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before anything is announced (admin address, readiness): a signal sent as soon as the
    // gateway reports ready must reach these handlers, not the default action (terminate).
    let mut hup = signal(SignalKind::hangup())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut instance = Instance {
        labels: args.labels.clone(),
        namespace: args.namespace.clone(),
        locality: isthmus_config::instance::Locality::parse(&args.locality),
        path_normalization: args.path_normalization,
        outbound_policy: args.outbound_traffic_policy,
        ..Instance::default()
    };
    args.classes.apply(&mut instance);
    isthmus_proxy::dns::configure(
        args.resolve.clone(),
        args.hosts_file.clone(),
        args.dns_servers.clone(),
    );
    let edge = isthmus_proxy::edge::EdgeSettings {
        num_trusted_proxies: args.num_trusted_proxies,
        proxy_protocol: args.proxy_protocol,
        max_connections: args.max_connections_per_listener.max(1),
        underscores: args.headers_with_underscores,
        h2_max_concurrent_streams: args.http2_max_concurrent_streams.max(1),
        h2_initial_stream_window: args.http2_initial_stream_window_size,
        h2_initial_connection_window: args.http2_initial_connection_window_size,
        request_headers_timeout: crate::cli::optional(args.request_headers_timeout),
        idle_timeout: crate::cli::optional(args.idle_timeout),
        park_after: crate::cli::optional(args.park_idle_after),
        max_request_buffer: args.max_request_buffer_bytes,
        max_request_body: args.max_request_body_bytes.unwrap_or(u64::MAX),
    };
    let identity = Identity {
        workload: workload_name(&instance),
        namespace: instance.namespace.clone(),
        labels: instance.labels.clone(),
    };
    let gateway = Gateway::with_edge(&identity, &args.telemetry.settings(), edge)?;
    let status = Arc::new(ArcSwap::from_pointee(Status::default()));

    let admin_listener = isthmus_admin::bind(args.admin)
        .await
        .with_context(|| format!("cannot bind the admin server on {}", args.admin))?;
    let admin_addr = admin_listener.local_addr()?;
    // `POST /drain` asks the loop below to drain, as SIGTERM does.
    let (drain_requests, mut drain_requested) = tokio::sync::mpsc::channel(1);
    let admin = Admin::new(gateway.clone(), status.clone())
        .with_logging(crate::logging::control())
        .with_drain(drain_requests);
    tokio::spawn(isthmus_admin::serve(admin_listener, Arc::new(admin)));
    tracing::info!("admin listening on {admin_addr}");

    let own_files: Vec<std::path::PathBuf> = match &args.telemetry.access_log {
        isthmus_proxy::access_log::Target::File(p) => vec![p.clone()],
        _ => Vec::new(),
    };
    let (_watcher, mut changes) =
        watch::watch(&args.config, &own_files).context("cannot watch the configuration paths")?;
    let (kube, mut kube_changes, status_writer) = match args.kubernetes {
        true => {
            let client = isthmus_k8s::client(args.kubeconfig.as_deref())
                .await
                .context("cannot configure the Kubernetes client")?;
            let (source, rx) =
                isthmus_k8s::KubeSource::start(client.clone(), &instance.domain_suffix);
            // Every replica computes status; the one holding the Lease writes it.
            let writer = isthmus_k8s::StatusWriter::start(
                client,
                isthmus_k8s::LeaseSettings::new(&instance.namespace, &workload_name(&instance)),
            );
            tracing::info!(identity = writer.identity(), "status writer started");
            (Some(source), Some(rx), Some(writer))
        }
        false => (None, None, None),
    };
    if let Some(k) = &kube {
        // Not ready, and nothing applied, until every collection was listed once: serving a
        // partial configuration would send requests to the wrong place.
        tracing::info!("waiting for the initial sync with the Kubernetes API server");
        tokio::select! {
            _ = k.synced() => tracing::info!("synced with the Kubernetes API server"),
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
        }
    }
    let listeners = Listeners::new(gateway.clone(), args.binds());
    let mut controller = Controller::new(
        Sources {
            files: FileSource::new(args.config.clone()),
            kube,
            kube_version: 0,
        },
        instance,
        gateway,
        listeners,
        status,
    );
    // `only_if_changed`: for the file watcher and the Kubernetes source, whose events may
    // repeat a change already applied (by a SIGHUP, or an earlier event of the same burst).
    let reload = |controller: &mut Controller, only_if_changed: bool| {
        if only_if_changed {
            controller.reload_if_changed();
        } else {
            controller.reload();
        }
        if let Some(w) = &status_writer {
            let addresses = published_addresses(controller, &args);
            w.update(status_updates(controller, &addresses));
        }
    };
    reload(&mut controller, false);

    // Certificate files may live outside the watched folders (mounted Secrets): poll them.
    let mut certificates = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            Some(()) = changes.recv() => reload(&mut controller, true),
            Some(()) = next(&mut kube_changes) => reload(&mut controller, true),
            _ = certificates.tick() => {
                if controller.certificates_changed() {
                    tracing::info!("a certificate file changed: reloading");
                    reload(&mut controller, false);
                }
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                reload(&mut controller, false);
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
            Some(()) = drain_requested.recv() => break,
        }
    }
    tracing::info!(timeout = ?args.drain_timeout, "draining");
    // The listeners stop accepting now: report not ready, with no port bound, while draining.
    let mut draining = (**controller.status.load()).clone();
    draining.ready = false;
    draining.listeners.clear();
    controller.status.store(Arc::new(draining));
    // Another replica writes status from now on, without waiting out the Lease.
    if let Some(w) = status_writer {
        w.release(std::time::Duration::from_secs(2)).await;
    }
    if controller.listeners.drain(args.drain_timeout).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain timeout reached; exiting with requests still in flight");
    }
    Ok(())
}

/// The addresses clients reach this instance at: `--publish-status-address`, else those of
/// the `--publish-service` Service (read from the cluster, so they follow it).
fn published_addresses(controller: &Controller, args: &RunArgs) -> Vec<String> {
    if !args.publish_status_address.is_empty() {
        return args.publish_status_address.clone();
    }
    let (Some(service), Some(kube)) = (&args.publish_service, &controller.source.kube) else {
        return Vec::new();
    };
    match service.split_once('/') {
        Some((namespace, name)) => kube.service_addresses(namespace, name),
        None => kube.service_addresses(&controller.instance.namespace, service),
    }
}

/// The status of the configuration just applied, for the status writer: the Gateway API
/// objects' (Gateways with the published addresses), and the load-balancer addresses of the
/// Ingresses served (when there are any).
fn status_updates(controller: &Controller, addresses: &[String]) -> Vec<isthmus_k8s::StatusUpdate> {
    let active = controller.gateway.active.load();
    let snapshot = &active.snapshot;
    let mut out: Vec<isthmus_k8s::StatusUpdate> = snapshot
        .gateway_status
        .objects()
        .into_iter()
        .map(|o| {
            let mut status = o.status;
            if o.kind == "Gateway"
                && !addresses.is_empty()
                && let Some(map) = status.as_object_mut()
            {
                map.insert("addresses".into(), gateway_addresses(addresses));
            }
            isthmus_k8s::StatusUpdate {
                group: o.group.to_string(),
                kind: o.kind.to_string(),
                namespace: o.namespace,
                name: o.name,
                status,
            }
        })
        .collect();
    if !addresses.is_empty() {
        let status = ingress_status(addresses);
        out.extend(snapshot.served_ingresses.iter().map(|(namespace, name)| {
            isthmus_k8s::StatusUpdate {
                group: "networking.k8s.io".into(),
                kind: "Ingress".into(),
                namespace: namespace.clone(),
                name: name.clone(),
                status: status.clone(),
            }
        }));
    }
    out
}

/// A Gateway's `status.addresses`: each address typed `IPAddress` or `Hostname`.
fn gateway_addresses(addresses: &[String]) -> serde_json::Value {
    addresses
        .iter()
        .map(|a| match a.parse::<std::net::IpAddr>() {
            Ok(_) => serde_json::json!({"type": "IPAddress", "value": a}),
            Err(_) => serde_json::json!({"type": "Hostname", "value": a}),
        })
        .collect()
}

/// An Ingress's `status`: each address as `ip` when it is one, else as `hostname`.
fn ingress_status(addresses: &[String]) -> serde_json::Value {
    let entries: Vec<serde_json::Value> = addresses
        .iter()
        .map(|a| match a.parse::<std::net::IpAddr>() {
            Ok(_) => serde_json::json!({ "ip": a }),
            Err(_) => serde_json::json!({ "hostname": a }),
        })
        .collect();
    serde_json::json!({ "loadBalancer": { "ingress": entries } })
}

/// The next change of the Kubernetes source; never, without one.
async fn next(rx: &mut Option<tokio::sync::mpsc::Receiver<()>>) -> Option<()> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The name metrics give this instance as `source_workload`: Istio's gateways are
/// `istio-ingressgateway` / `istio-egressgateway`, from their `istio=` label.
fn workload_name(instance: &Instance) -> String {
    if let Some(app) = instance.labels.get("app") {
        return app.clone();
    }
    match instance.labels.get("istio") {
        Some(role) => format!("istio-{role}"),
        None => "isthmus".into(),
    }
}
