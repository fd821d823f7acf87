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
        ..Instance::default()
    };
    args.classes.apply(&mut instance);
    let gateway = Gateway::new(Identity {
        workload: Arc::new(workload_name(&instance)),
        namespace: Arc::new(instance.namespace.clone()),
    });
    let status = Arc::new(ArcSwap::from_pointee(Status::default()));

    let admin_listener = isthmus_admin::bind(args.admin)
        .await
        .with_context(|| format!("cannot bind the admin server on {}", args.admin))?;
    let admin_addr = admin_listener.local_addr()?;
    tokio::spawn(isthmus_admin::serve(
        admin_listener,
        Arc::new(Admin {
            gateway: gateway.clone(),
            status: status.clone(),
        }),
    ));
    tracing::info!("admin listening on {admin_addr}");

    let (_watcher, mut changes) =
        watch::watch(&args.config).context("cannot watch the configuration paths")?;
    let (kube, mut kube_changes) = match args.kubernetes {
        true => {
            let client = isthmus_k8s::client(args.kubeconfig.as_deref())
                .await
                .context("cannot configure the Kubernetes client")?;
            let (source, rx) = isthmus_k8s::KubeSource::start(client, &instance.domain_suffix);
            (Some(source), Some(rx))
        }
        false => (None, None),
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
        },
        instance,
        gateway,
        listeners,
        status,
    );
    controller.reload();

    // Certificate files may live outside the watched folders (mounted Secrets): poll them.
    let mut certificates = tokio::time::interval(std::time::Duration::from_millis(250));
    loop {
        tokio::select! {
            Some(()) = changes.recv() => controller.reload(),
            Some(()) = next(&mut kube_changes) => controller.reload(),
            _ = certificates.tick() => {
                if controller.certificates_changed() {
                    tracing::info!("a certificate file changed: reloading");
                    controller.reload();
                }
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading");
                controller.reload();
            }
            _ = term.recv() => break,
            _ = int.recv() => break,
        }
    }
    tracing::info!(timeout = ?args.drain_timeout, "draining");
    // The listeners stop accepting now: report not ready, with no port bound, while draining.
    let mut draining = (**controller.status.load()).clone();
    draining.ready = false;
    draining.listeners.clear();
    controller.status.store(Arc::new(draining));
    if controller.listeners.drain(args.drain_timeout).await {
        tracing::info!("drained; exiting");
    } else {
        tracing::warn!("drain timeout reached; exiting with requests still in flight");
    }
    Ok(())
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
