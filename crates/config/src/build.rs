//! The whole control-plane pipeline for one configuration generation: validate each resource,
//! keep the last good version of any that became invalid, warn about fields not acted on, and
//! compile. The running gateway and `isthmus validate` both call [`build`], so they agree.

use std::collections::HashMap;
use std::sync::Arc;

use isthmus_api::{Diagnostic, Resource, ResourceKey, Severity};

use crate::compile::{RouteMemo, compile_with};
use crate::instance::Instance;
use crate::snapshot::Snapshot;
use crate::support::unsupported_fields;
use crate::validate::validate;

/// The last valid version of every resource, carried from one build to the next.
pub type LastGood = HashMap<ResourceKey, Arc<Resource>>;

pub struct Build {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
    /// The resources this build used: the next build's [`LastGood`].
    pub accepted: LastGood,
}

/// Builds a snapshot from the loaded resources, with nothing carried from an earlier build
/// but `last_good`. See [`Builder::build`].
pub fn build(
    loaded: &[Arc<Resource>],
    rejected: &[ResourceKey],
    last_good: &LastGood,
    instance: &Instance,
) -> Build {
    let mut builder = Builder {
        last_good: last_good.clone(),
        ..Builder::default()
    };
    builder.build(loaded, rejected, instance)
}

/// Builds one generation after another, carrying the last good version of every resource and
/// what it learnt about each one. A reload of a large configuration usually changes a file or
/// two: every resource still shared (the same `Arc`) with the previous build keeps its
/// checks' diagnostics instead of being validated again.
#[derive(Default)]
pub struct Builder {
    last_good: LastGood,
    /// The checks of every resource of the previous build, by the resource's address. The
    /// entries keep those resources alive, which the route memo relies on.
    checked: HashMap<usize, Checked>,
    /// Routes compiled by the previous build.
    routes: RouteMemo,
}

/// What checking one resource found. It holds the resource, so its address cannot be reused
/// by another while the entry lives.
struct Checked {
    resource: Arc<Resource>,
    /// [`validate`]'s diagnostics; `None` until asked for.
    validated: Option<Vec<Diagnostic>>,
    /// [`unsupported_fields`]' diagnostics; `None` until asked for.
    unsupported: Option<Vec<Diagnostic>>,
}

fn identity(r: &Arc<Resource>) -> usize {
    Arc::as_ptr(r) as usize
}

impl Builder {
    /// Builds a snapshot from the loaded resources.
    ///
    /// `rejected` names objects that failed to load (a type error); like objects that fail
    /// validation, they are served at their last good version if there is one, and dropped
    /// otherwise. `loaded` is in file order; later definitions of the same object win, as
    /// with `kubectl apply`.
    pub fn build(
        &mut self,
        loaded: &[Arc<Resource>],
        rejected: &[ResourceKey],
        instance: &Instance,
    ) -> Build {
        let mut previous = std::mem::take(&mut self.checked);
        let mut diagnostics = Vec::new();
        let mut accepted: LastGood = HashMap::new();
        let mut order: Vec<ResourceKey> = Vec::new();
        for r in loaded {
            let key = r.key();
            let found = self.check(r, &mut previous, |c| &mut c.validated, validate);
            let invalid = found.iter().any(Diagnostic::is_error);
            diagnostics.extend(found.iter().cloned());
            let chosen = if invalid {
                keep_last_good(&key, r, &self.last_good, &mut diagnostics)
            } else {
                Some(r)
            };
            let Some(chosen) = chosen else { continue };
            if let Some(prev) = accepted.insert(key.clone(), chosen.clone()) {
                diagnostics.push(Diagnostic {
                    severity: Severity::Warning,
                    file: r.origin().file.to_string(),
                    line: r.origin().line(),
                    resource: key.to_string(),
                    field: "-".into(),
                    message: format!(
                        "also defined at {}:{}; this later definition wins",
                        prev.origin().file,
                        prev.origin().line()
                    ),
                });
            } else {
                order.push(key);
            }
        }
        for key in rejected {
            if !accepted.contains_key(key)
                && let Some(prev) = self.last_good.get(key)
            {
                diagnostics.push(kept_note(key, prev));
                accepted.insert(key.clone(), prev.clone());
                order.push(key.clone());
            }
        }
        let mut resources: Vec<&Arc<Resource>> =
            order.iter().filter_map(|k| accepted.get(k)).collect();
        sort_by_creation(&mut resources);
        for r in &resources {
            let found = self.check(r, &mut previous, |c| &mut c.unsupported, unsupported_fields);
            diagnostics.extend(found.iter().cloned());
        }
        let resources: Vec<&Resource> = resources.into_iter().map(|r| &**r).collect();
        let (snapshot, compiled) = compile_with(&resources, instance, &mut self.routes);
        diagnostics.extend(compiled);
        diagnostics.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
        diagnostics.dedup();
        self.last_good = accepted.clone();
        Build {
            snapshot,
            diagnostics,
            accepted,
        }
    }

    /// One check's diagnostics for `r`: from the previous build if `r` is the same resource
    /// it checked, else computed now. Either way kept for the next build.
    fn check(
        &mut self,
        r: &Arc<Resource>,
        previous: &mut HashMap<usize, Checked>,
        slot: fn(&mut Checked) -> &mut Option<Vec<Diagnostic>>,
        run: impl FnOnce(&Resource) -> Vec<Diagnostic>,
    ) -> &[Diagnostic] {
        let id = identity(r);
        let entry = self.checked.entry(id).or_insert_with(|| {
            previous.remove(&id).unwrap_or_else(|| Checked {
                resource: r.clone(),
                validated: None,
                unsupported: None,
            })
        });
        debug_assert!(Arc::ptr_eq(&entry.resource, r));
        slot(entry).get_or_insert_with(|| run(r))
    }
}

fn keep_last_good<'a>(
    key: &ResourceKey,
    r: &Arc<Resource>,
    last_good: &'a LastGood,
    diags: &mut Vec<Diagnostic>,
) -> Option<&'a Arc<Resource>> {
    let prev = last_good.get(key)?;
    if **prev == **r {
        return None;
    }
    diags.push(kept_note(key, prev));
    Some(prev)
}

fn kept_note(key: &ResourceKey, prev: &Resource) -> Diagnostic {
    Diagnostic {
        severity: Severity::Note,
        file: prev.origin().file.to_string(),
        line: prev.origin().line(),
        resource: key.to_string(),
        field: "-".into(),
        message: "the new version is invalid; the last good version keeps serving".into(),
    }
}

/// Istio orders configuration by creation time, oldest first. Files carry no creation time
/// unless exported from a cluster, so file order stands in for it (resources with a
/// `creationTimestamp` come in timestamp order; RFC 3339 strings sort chronologically).
fn sort_by_creation(resources: &mut [&Arc<Resource>]) {
    resources.sort_by(|a, b| {
        let ka = (
            a.meta().creation_timestamp.as_deref().unwrap_or(""),
            &a.origin().file,
            a.origin().ordinal,
        );
        let kb = (
            b.meta().creation_timestamp.as_deref().unwrap_or(""),
            &b.origin().file,
            b.origin().ordinal,
        );
        ka.cmp(&kb)
    });
}

#[cfg(test)]
#[path = "build_tests.rs"]
mod tests;
