//! The reload path: sources -> build -> cluster state -> atomic swap -> listener diff.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use isthmus_admin::{ResourceVersion, Status};
use isthmus_api::{Diagnostic, Severity};
use isthmus_config::snapshot::ListenerProtocol;
use isthmus_config::{Builder, Instance};
use isthmus_proxy::listeners::Listeners;
use isthmus_proxy::metrics::{ReloadLabels, SeverityLabels};
use isthmus_proxy::tls::server_config;
use isthmus_proxy::{Active, ClusterRegistry, Gateway};

use crate::source::Sources;
use crate::versions::Versions;

pub struct Controller {
    pub source: Sources,
    pub instance: Instance,
    pub gateway: Arc<Gateway>,
    pub listeners: Listeners,
    pub status: Arc<ArcSwap<Status>>,
    clusters: ClusterRegistry,
    builder: Builder,
    generation: u64,
    versions: Versions,
    /// Certificate files of the current configuration, with their modification time and size.
    tls_files: Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)>,
}

fn tls_fingerprints(files: &[PathBuf]) -> Vec<(PathBuf, Option<(std::time::SystemTime, u64)>)> {
    files
        .iter()
        .map(|p| {
            let meta = std::fs::metadata(p).ok();
            (
                p.clone(),
                meta.and_then(|m| Some((m.modified().ok()?, m.len()))),
            )
        })
        .collect()
}

/// Whether the terminating chain `key` has the same names and TLS settings (everything but the
/// certificate and CA bytes) in both snapshots.
fn same_tls_settings(
    old: &isthmus_config::Snapshot,
    new: &isthmus_config::Snapshot,
    key: &str,
) -> bool {
    use isthmus_config::tls::{ChainRoutes, ChainTls, FilterChain};
    let find = |s: &isthmus_config::Snapshot| -> Option<FilterChain> {
        s.listeners
            .values()
            .flat_map(|l| &l.chains)
            .find(|c| c.key == key)
            .cloned()
    };
    let (Some(a), Some(b)) = (find(old), find(new)) else {
        return false;
    };
    let (ChainTls::Terminate(x), ChainTls::Terminate(y)) = (&a.tls, &b.tls) else {
        return false;
    };
    a.server_names == b.server_names
        && matches!(a.routes, ChainRoutes::Http(_)) == matches!(b.routes, ChainRoutes::Http(_))
        && x.client_auth == y.client_auth
        && x.min_version == y.min_version
        && x.max_version == y.max_version
        && x.cipher_suites == y.cipher_suites
        && x.client_checks == y.client_checks
}

impl Controller {
    pub fn new(
        source: Sources,
        instance: Instance,
        gateway: Arc<Gateway>,
        listeners: Listeners,
        status: Arc<ArcSwap<Status>>,
    ) -> Self {
        Controller {
            source,
            instance,
            clusters: ClusterRegistry::new(gateway.metrics.istio.clone()),
            gateway,
            listeners,
            status,
            builder: Builder::default(),
            generation: 0,
            versions: Versions::default(),
            tls_files: Vec::new(),
        }
    }

    /// Loads, compiles and applies the configuration. The previous configuration keeps
    /// serving until the new one is swapped in.
    pub fn reload(&mut self) {
        self.reload_with(false);
    }

    /// [`Controller::reload`], unless no file and nothing in the Kubernetes source changed
    /// since the last load: one edit can wake the file watcher after a SIGHUP already applied
    /// it, and compiling a large configuration twice would double the work for nothing.
    pub fn reload_if_changed(&mut self) {
        self.reload_with(true);
    }

    fn reload_with(&mut self, only_if_changed: bool) {
        let started = std::time::Instant::now();
        let loaded = self.source.load();
        if only_if_changed && !loaded.changed {
            tracing::debug!(
                load_ms = started.elapsed().as_secs_f64() * 1e3,
                "nothing changed since the last load: not recompiled"
            );
            return;
        }
        let loaded_at = started.elapsed();
        let b = self
            .builder
            .build(&loaded.resources, &loaded.rejected, &self.instance);
        let compiled_at = started.elapsed();
        // Until the Secrets the configuration names have been fetched, its TLS servers are
        // incomplete: not ready yet (their arrival reloads again).
        let secrets_settled = self.source.want_secrets(&loaded.resources, &self.instance);
        let mut diagnostics = loaded.diagnostics;
        diagnostics.extend(b.diagnostics);
        diagnostics.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        diagnostics.dedup();
        self.generation += 1;
        let resources = self.versions.update(&loaded.resources, self.generation);
        let clusters = self.clusters.apply(&b.snapshot.clusters);
        self.gateway
            .metrics
            .upstreams
            .set_clusters(clusters.clone());
        let ports: BTreeMap<u16, ListenerProtocol> = b
            .snapshot
            .listeners
            .iter()
            .map(|(p, l)| (*p, l.protocol))
            .collect();
        // Fingerprints first, then the files are read: a file that changes while it is read
        // differs from its fingerprint and is read again at the next check.
        self.tls_files = tls_fingerprints(&server_config::files(&b.snapshot));
        let tls = self.tls_configs(&b.snapshot, &mut diagnostics);
        // The replaced configuration frees itself in the background (`Active`'s `Drop`).
        self.gateway.active.store(Arc::new(Active {
            generation: self.generation,
            snapshot: Arc::new(b.snapshot),
            clusters,
            tls,
        }));
        let report = self.listeners.apply(&ports);
        for (port, addr) in &report.started {
            tracing::info!(port, %addr, "listener started");
        }
        for port in &report.stopped {
            tracing::info!(port, "listener stopped");
        }
        for (port, addr, e) in &report.failed {
            tracing::error!(port, %addr, "cannot bind listener: {e}");
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: "-".into(),
                line: 0,
                resource: "-".into(),
                field: "-".into(),
                message: format!("cannot bind Gateway port {port} on {addr}: {e}"),
            });
        }
        let timing = Timing {
            started,
            loaded: loaded_at,
            compiled: compiled_at,
            files_read: loaded.files_read,
        };
        self.publish(
            diagnostics,
            resources,
            report.failed.is_empty() && secrets_settled,
            timing,
        );
    }

    /// rustls configurations for the snapshot's terminating chains. A chain whose certificates
    /// cannot be loaded keeps the configuration it had, if any, as long as its TLS settings
    /// did not change: a bad rotation never takes a working certificate down, and a stricter
    /// setting (MUTUAL instead of SIMPLE, a higher minimum version) never falls back to the
    /// laxer configuration it replaces.
    fn tls_configs(
        &self,
        snapshot: &isthmus_config::Snapshot,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> HashMap<String, Arc<rustls::ServerConfig>> {
        let built = server_config::build_all(snapshot);
        let previous = self.gateway.active.load();
        let mut configs = built.configs;
        for (key, error) in built.errors {
            let kept = previous
                .tls
                .get(&key)
                .filter(|_| same_tls_settings(&previous.snapshot, snapshot, &key))
                .cloned();
            let consequence = if kept.is_some() {
                "the previous certificate keeps serving"
            } else {
                "the server refuses TLS connections"
            };
            diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: "-".into(),
                line: 0,
                resource: format!(
                    "Gateway {}",
                    key.rsplit_once('/').map_or(key.as_str(), |(g, _)| g)
                ),
                field: "-".into(),
                message: format!("TLS for server {key}: {error}; {consequence}"),
            });
            if let Some(c) = kept {
                configs.insert(key, c);
            }
        }
        configs
    }

    /// Whether a certificate file changed since the last reload (rotation without a restart).
    pub fn certificates_changed(&self) -> bool {
        let files: Vec<PathBuf> = self.tls_files.iter().map(|(p, _)| p.clone()).collect();
        tls_fingerprints(&files) != self.tls_files
    }

    fn publish(
        &self,
        diagnostics: Vec<Diagnostic>,
        resources: Vec<ResourceVersion>,
        all_bound: bool,
        timing: Timing,
    ) {
        let m = &self.gateway.metrics;
        let errors = diagnostics.iter().filter(|d| d.is_error()).count();
        for d in &diagnostics {
            match d.severity {
                Severity::Error => tracing::warn!("{d}"),
                Severity::Warning => tracing::info!("{d}"),
                Severity::Note => tracing::debug!("{d}"),
            }
        }
        for (label, sev) in [
            ("error", Severity::Error),
            ("warning", Severity::Warning),
            ("note", Severity::Note),
        ] {
            let n = diagnostics.iter().filter(|d| d.severity == sev).count();
            m.diagnostics
                .get_or_create(&SeverityLabels { severity: label })
                .set(n as i64);
        }
        let result = if errors == 0 { "success" } else { "partial" };
        m.reloads.get_or_create(&ReloadLabels { result }).inc();
        m.generation.set(self.generation as i64);
        // The phases' times (cumulative) show where a slow reload spends it: reading and
        // parsing the files, compiling, or applying (clusters, TLS, listeners).
        tracing::info!(
            generation = self.generation,
            errors,
            files_read = timing.files_read,
            load_ms = millis(timing.loaded),
            compile_ms = millis(timing.compiled.saturating_sub(timing.loaded)),
            total_ms = millis(timing.started.elapsed()),
            "configuration applied"
        );
        self.status.store(Arc::new(Status {
            generation: self.generation,
            ready: all_bound,
            listeners: self.listeners.bound(),
            diagnostics,
            resources,
        }));
    }
}

/// When a reload started, and how long after that reading and compiling had finished.
struct Timing {
    started: std::time::Instant,
    loaded: std::time::Duration,
    compiled: std::time::Duration,
    /// Files read by the load (the others were known unchanged by their metadata).
    files_read: usize,
}

fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}
