//! The whole control-plane pipeline for one configuration generation: validate each resource,
//! keep the last good version of any that became invalid, warn about fields not acted on, and
//! compile. The running gateway and `isthmus validate` both call [`build`], so they agree.

use std::collections::HashMap;

use isthmus_api::{Diagnostic, Resource, ResourceKey, Severity};

use crate::compile::compile;
use crate::instance::Instance;
use crate::snapshot::Snapshot;
use crate::support::unsupported_fields;
use crate::validate::validate;

/// The last valid version of every resource, carried from one build to the next.
pub type LastGood = HashMap<ResourceKey, Resource>;

pub struct Build {
    pub snapshot: Snapshot,
    pub diagnostics: Vec<Diagnostic>,
    /// The resources this build used: the next build's [`LastGood`].
    pub accepted: LastGood,
}

/// Builds a snapshot from the loaded resources.
///
/// `rejected` names objects that failed to load (a type error); like objects that fail
/// validation, they are served at their last good version if there is one, and dropped
/// otherwise. `loaded` is in file order; later definitions of the same object win, as with
/// `kubectl apply`.
pub fn build(
    loaded: &[Resource],
    rejected: &[ResourceKey],
    last_good: &LastGood,
    instance: &Instance,
) -> Build {
    let mut diagnostics = Vec::new();
    let mut accepted: LastGood = HashMap::new();
    let mut order: Vec<ResourceKey> = Vec::new();
    for r in loaded {
        let key = r.key();
        let found = validate(r);
        let invalid = found.iter().any(Diagnostic::is_error);
        diagnostics.extend(found);
        let chosen = if invalid {
            keep_last_good(&key, r, last_good, &mut diagnostics)
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
            && let Some(prev) = last_good.get(key)
        {
            diagnostics.push(kept_note(key, prev));
            accepted.insert(key.clone(), prev.clone());
            order.push(key.clone());
        }
    }
    let mut resources: Vec<&Resource> = order.iter().filter_map(|k| accepted.get(k)).collect();
    sort_by_creation(&mut resources);
    for r in &resources {
        diagnostics.extend(unsupported_fields(r));
    }
    let (snapshot, compiled) = compile(&resources, instance);
    diagnostics.extend(compiled);
    diagnostics.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    diagnostics.dedup();
    Build {
        snapshot,
        diagnostics,
        accepted,
    }
}

fn keep_last_good<'a>(
    key: &ResourceKey,
    r: &Resource,
    last_good: &'a LastGood,
    diags: &mut Vec<Diagnostic>,
) -> Option<&'a Resource> {
    let prev = last_good.get(key)?;
    if prev == r {
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
fn sort_by_creation(resources: &mut [&Resource]) {
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
