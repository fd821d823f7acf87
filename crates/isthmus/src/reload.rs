//! The reload path: sources -> build -> cluster state -> atomic swap -> listener diff.

use std::collections::BTreeSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use isthmus_admin::Status;
use isthmus_api::{Diagnostic, Severity};
use isthmus_config::{Instance, LastGood, build};
use isthmus_proxy::listeners::Listeners;
use isthmus_proxy::metrics::{ReloadLabels, SeverityLabels};
use isthmus_proxy::{Active, ClusterRegistry, Gateway};

use crate::source::FileSource;

pub struct Controller {
    pub source: FileSource,
    pub instance: Instance,
    pub gateway: Arc<Gateway>,
    pub listeners: Listeners,
    pub status: Arc<ArcSwap<Status>>,
    clusters: ClusterRegistry,
    last_good: LastGood,
    generation: u64,
}

impl Controller {
    pub fn new(
        source: FileSource,
        instance: Instance,
        gateway: Arc<Gateway>,
        listeners: Listeners,
        status: Arc<ArcSwap<Status>>,
    ) -> Self {
        Controller {
            source,
            instance,
            gateway,
            listeners,
            status,
            clusters: ClusterRegistry::default(),
            last_good: LastGood::new(),
            generation: 0,
        }
    }

    /// Loads, compiles and applies the configuration. The previous configuration keeps
    /// serving until the new one is swapped in.
    pub fn reload(&mut self) {
        let loaded = self.source.load();
        let b = build(
            &loaded.resources,
            &loaded.rejected,
            &self.last_good,
            &self.instance,
        );
        let mut diagnostics = loaded.diagnostics;
        diagnostics.extend(b.diagnostics);
        diagnostics.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        diagnostics.dedup();
        self.last_good = b.accepted;
        self.generation += 1;
        let clusters = self.clusters.apply(&b.snapshot.clusters);
        let ports: BTreeSet<u16> = b.snapshot.listeners.keys().copied().collect();
        self.gateway.active.store(Arc::new(Active {
            generation: self.generation,
            snapshot: Arc::new(b.snapshot),
            clusters,
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
        self.publish(diagnostics, report.failed.is_empty());
    }

    fn publish(&self, diagnostics: Vec<Diagnostic>, all_bound: bool) {
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
        tracing::info!(
            generation = self.generation,
            errors,
            "configuration applied"
        );
        self.status.store(Arc::new(Status {
            generation: self.generation,
            ready: all_bound,
            listeners: self.listeners.bound(),
            diagnostics,
        }));
    }
}
