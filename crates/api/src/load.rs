//! YAML loading: text -> typed resources plus diagnostics, the way `kubectl apply -f` reads
//! a file (multi-document streams, `kind: List`).
//!
//! Two steps, each with one job: the text becomes JSON-like values with the line of every
//! field ([`crate::fast`] for the YAML configuration is usually written in, serde-saphyr and
//! [`crate::position`] for the rest, and for the messages of syntax errors), then serde turns
//! each object's body into typed structs while `serde_ignored` names the fields the schema
//! does not know and `serde_path_to_error` names the field a type error is in.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::diagnostic::{Diagnostic, Severity};
use crate::fast::Document;
use crate::position::{LineIndex, index_documents};
use crate::resource::{Kind, Object, ObjectMeta, Origin, Resource, ResourceKey};

/// What one file yielded.
#[derive(Debug, Clone, Default)]
pub struct LoadedFile {
    /// Shared, so that a caller keeping a file's parse (and everything derived from each
    /// resource) across reloads copies pointers, not specs.
    pub resources: Vec<Arc<Resource>>,
    /// Objects that were recognised but are invalid (a type error in a field). The caller may
    /// keep serving an earlier good version of them.
    pub rejected: Vec<ResourceKey>,
    pub diagnostics: Vec<Diagnostic>,
}

/// The file could not be parsed at all (a YAML syntax error, or it could not be read).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FileError(pub Diagnostic);

/// The default namespace of objects without `metadata.namespace`, as `kubectl` uses.
pub const DEFAULT_NAMESPACE: &str = "default";

/// Documents bigger than this are refused: configuration is not bulk data, and the limit keeps
/// a runaway file from exhausting memory.
pub const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// Files at least this big are split at their document markers and read on several threads.
const PARALLEL_BYTES: usize = 1 << 20;

/// Parses one file's text.
pub fn load_str(file: &str, text: &str) -> Result<LoadedFile, FileError> {
    let file: Arc<str> = file.into();
    if let Some(loaded) = load_fast(&file, text) {
        return Ok(loaded);
    }
    let documents = full_parse(text).map_err(|e| {
        let line = e.location().map_or(1, |l| l.line() as usize);
        FileError(Diagnostic {
            severity: Severity::Error,
            file: file.to_string(),
            line,
            resource: "-".into(),
            field: "-".into(),
            message: format!(
                "YAML syntax error: {}",
                first_line(&e.without_snippet().to_string())
            ),
        })
    })?;
    Ok(load_documents(&file, documents).0)
}

/// The documents of a file as serde-saphyr reads them, with their line indexes.
///
/// serde-saphyr's budget counts nodes, events and documents over the whole file (250,000
/// nodes by default, a few thousand routes); files are already limited to
/// [`MAX_FILE_BYTES`], so those limits grow with the text instead: an object that size
/// needs that many bytes, while aliases still cannot expand a file beyond it.
pub(crate) fn full_parse(text: &str) -> Result<Vec<Document>, serde_saphyr::Error> {
    let defaults = serde_saphyr::Budget::default();
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: defaults.max_nodes.max(text.len()),
            max_events: defaults.max_events.max(text.len().saturating_mul(2)),
            max_documents: defaults.max_documents.max(text.len() / 2),
        },
    };
    let values: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)?;
    let mut indexes = index_documents(text).into_iter();
    Ok(values
        .into_iter()
        .map(|v| (v, indexes.next().unwrap_or_default()))
        .collect())
}

/// The file read by [`crate::fast`]; a big file in parts, one per core, split at document
/// markers. `None` if any part is outside what it reads: the whole file then goes to
/// serde-saphyr.
fn load_fast(file: &Arc<str>, text: &str) -> Option<LoadedFile> {
    let parts = split_documents(text);
    if parts.len() <= 1 {
        return crate::fast::parse(text, 1).map(|docs| load_documents(file, docs).0);
    }
    let loaded: Vec<Option<(LoadedFile, usize)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .iter()
            .map(|&(part, line)| {
                scope.spawn(move || {
                    crate::fast::parse(part, line).map(|docs| load_documents(file, docs))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().ok().flatten())
            .collect()
    });
    let mut out = LoadedFile::default();
    let mut ordinals = 0;
    for part in loaded {
        let (part, count) = part?;
        out.resources
            .extend(part.resources.into_iter().map(|mut r| {
                // Just made, so not shared: this does not copy.
                Arc::make_mut(&mut r).origin_mut().ordinal += ordinals;
                r
            }));
        out.rejected.extend(part.rejected);
        out.diagnostics.extend(part.diagnostics);
        ordinals += count;
    }
    Some(out)
}

/// Splits a big text at lines that are document markers (`---` at column 0) into about one
/// part per core, each with the line number it starts at. Inside what [`crate::fast`] reads,
/// such a line always ends a document; a text where it would not (a block scalar, a quoted
/// scalar spanning lines) has a part that [`crate::fast`] refuses.
fn split_documents(text: &str) -> Vec<(&str, usize)> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if text.len() < PARALLEL_BYTES || cores < 2 {
        return vec![(text, 1)];
    }
    let target = text.len() / cores;
    let mut parts = Vec::new();
    let (mut start, mut line) = (0, 1);
    while let Some(cut) = next_marker(text, start + target) {
        let part = text.get(start..cut).unwrap_or("");
        parts.push((part, line));
        line += part.bytes().filter(|b| *b == b'\n').count();
        start = cut;
    }
    parts.push((text.get(start..).unwrap_or(""), line));
    parts
}

/// The start of the first document marker line at or after `from`.
fn next_marker(text: &str, from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let i = at + text.get(at..)?.find("\n---")? + 1;
        let after = text.as_bytes().get(i + 3);
        if matches!(after, None | Some(b'\n' | b' ')) {
            return Some(i);
        }
        at = i;
    }
}

/// Types the objects of parsed documents; also says how many objects they hold (valid or not),
/// which the ordinals of a next part follow.
fn load_documents(file: &Arc<str>, documents: Vec<Document>) -> (LoadedFile, usize) {
    let mut out = LoadedFile::default();
    let mut ordinal = 0;
    for (value, lines) in documents {
        let doc = Doc {
            file: file.clone(),
            lines: Arc::new(lines),
        };
        doc.load_object(&value, "", &mut ordinal, &mut out);
    }
    (out, ordinal)
}

/// Reads and parses one file.
pub fn load_file(path: &Path) -> Result<LoadedFile, FileError> {
    let text = read_file(path)?;
    load_str(&path.display().to_string(), &text)
}

/// Reads one configuration file's text, refusing files over [`MAX_FILE_BYTES`].
pub fn read_file(path: &Path) -> Result<String, FileError> {
    let name = path.display().to_string();
    let fail = |message: String| {
        FileError(Diagnostic {
            severity: Severity::Error,
            file: name.clone(),
            line: 1,
            resource: "-".into(),
            field: "-".into(),
            message,
        })
    };
    let meta = std::fs::metadata(path).map_err(|e| fail(format!("cannot read file: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(fail(format!(
            "file is {} bytes, more than the limit of {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read file: {e}")))
}

/// The files `kubectl apply -f PATH` would read: PATH itself, or the `.yaml`, `.yml` and
/// `.json` files directly inside a folder (not recursive), sorted by name.
pub fn config_files(path: &Path) -> std::io::Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_config_file(p))
        .collect();
    files.sort();
    Ok(files)
}

pub fn is_config_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'));
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    !hidden && matches!(ext, "yaml" | "yml" | "json")
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim()
}

/// One YAML document of a file.
struct Doc {
    file: Arc<str>,
    lines: Arc<LineIndex>,
}

impl Doc {
    fn diag(
        &self,
        severity: Severity,
        line: usize,
        resource: &str,
        field: &str,
        message: String,
    ) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.to_string(),
            line,
            resource: resource.to_string(),
            field: if field.is_empty() {
                "-".into()
            } else {
                field.into()
            },
            message,
        }
    }

    /// Loads the object at `prefix` (empty for a document root, `items[N].` inside a List).
    fn load_object(&self, value: &Value, prefix: &str, ordinal: &mut usize, out: &mut LoadedFile) {
        let at = |field: &str| self.lines.line_of(&format!("{prefix}{field}"));
        let Some(obj) = value.as_object() else {
            out.diagnostics.push(self.diag(
                Severity::Error,
                at(""),
                "-",
                prefix.trim_end_matches('.'),
                "expected a Kubernetes object (a mapping with apiVersion and kind)".into(),
            ));
            return;
        };
        let api_version = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() || api_version.is_empty() {
            let field = if kind.is_empty() {
                "kind"
            } else {
                "apiVersion"
            };
            out.diagnostics.push(self.diag(
                Severity::Error,
                at(""),
                "-",
                &format!("{prefix}{field}"),
                format!("object has no {field}; skipped"),
            ));
            return;
        }
        if kind == "List" || kind.ends_with("List") && obj.contains_key("items") {
            let items = obj.get("items").and_then(Value::as_array);
            for (i, item) in items.into_iter().flatten().enumerate() {
                self.load_object(item, &format!("{prefix}items[{i}]."), ordinal, out);
            }
            return;
        }
        *ordinal += 1;
        let Some(kind) = self.recognise(api_version, kind, at(""), prefix, out) else {
            return;
        };
        let meta: ObjectMeta = obj
            .get("metadata")
            .and_then(|m| ObjectMeta::deserialize(m).ok())
            .unwrap_or_default();
        let namespace = if kind.cluster_scoped() {
            String::new()
        } else {
            meta.namespace
                .clone()
                .filter(|n| !n.is_empty())
                .unwrap_or_else(|| DEFAULT_NAMESPACE.to_string())
        };
        let Some(name) = meta.name.clone().filter(|n| !n.is_empty()) else {
            out.diagnostics.push(self.diag(
                Severity::Error,
                at("metadata"),
                &format!("{kind} {namespace}/-"),
                &format!("{prefix}metadata.name"),
                "metadata.name is required; object skipped".into(),
            ));
            return;
        };
        let key = ResourceKey {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let header = ObjectHeader {
            api_version: api_version.to_string(),
            name,
            namespace,
            meta,
            origin: Origin::new(
                self.file.clone(),
                *ordinal,
                self.lines.clone(),
                prefix.to_string(),
            ),
        };
        let resource = match kind {
            Kind::Gateway => self.typed(obj, header, &key, out).map(Resource::Gateway),
            Kind::VirtualService => self
                .typed(obj, header, &key, out)
                .map(Resource::VirtualService),
            Kind::DestinationRule => self
                .typed(obj, header, &key, out)
                .map(Resource::DestinationRule),
            Kind::ServiceEntry => self
                .typed(obj, header, &key, out)
                .map(Resource::ServiceEntry),
            Kind::Secret => self.typed(obj, header, &key, out).map(Resource::Secret),
            Kind::Namespace => self.typed(obj, header, &key, out).map(Resource::Namespace),
            Kind::GatewayClass => self
                .typed(obj, header, &key, out)
                .map(Resource::GatewayClass),
            Kind::KubeGateway => self
                .typed(obj, header, &key, out)
                .map(Resource::KubeGateway),
            Kind::HttpRoute => self.typed(obj, header, &key, out).map(Resource::HttpRoute),
            Kind::GrpcRoute => self.typed(obj, header, &key, out).map(Resource::GrpcRoute),
            Kind::TlsRoute => self.typed(obj, header, &key, out).map(Resource::TlsRoute),
            Kind::TcpRoute => self.typed(obj, header, &key, out).map(Resource::TcpRoute),
            Kind::ReferenceGrant => self
                .typed(obj, header, &key, out)
                .map(Resource::ReferenceGrant),
            Kind::Ingress => self.typed(obj, header, &key, out).map(Resource::Ingress),
            Kind::IngressClass => self
                .typed(obj, header, &key, out)
                .map(Resource::IngressClass),
        };
        match resource {
            Some(r) => out.resources.push(Arc::new(r)),
            None => out.rejected.push(key),
        }
    }

    /// Maps `apiVersion` + `kind` to a kind we read; anything else is reported and skipped.
    fn recognise(
        &self,
        api_version: &str,
        kind: &str,
        line: usize,
        prefix: &str,
        out: &mut LoadedFile,
    ) -> Option<Kind> {
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let known = known_kind(group, kind);
        let resource = format!("{kind} -");
        let Some((k, versions)) = known else {
            out.diagnostics.push(self.diag(
                Severity::Note,
                line,
                &resource,
                &format!("{prefix}kind"),
                format!("{api_version} {kind} is not a kind Isthmus reads; skipped"),
            ));
            return None;
        };
        if versions.contains(&version) {
            return Some(k);
        }
        let shown = if group.is_empty() { "core" } else { group };
        out.diagnostics.push(self.diag(
            Severity::Error,
            line,
            &resource,
            &format!("{prefix}apiVersion"),
            format!(
                "unsupported version {version} of {shown} {kind} (expected {}); object skipped",
                one_of(versions)
            ),
        ));
        None
    }

    /// Deserialises the body of an object into `S`, warning about unknown fields.
    /// Returns `None` (with an error diagnostic) if a field has the wrong type.
    fn typed<S: DeserializeOwned>(
        &self,
        obj: &Map<String, Value>,
        header: ObjectHeader,
        key: &ResourceKey,
        out: &mut LoadedFile,
    ) -> Option<Object<S>> {
        let resource = key.to_string();
        // Istio kinds keep their body under `spec`; a Secret's body is its top level.
        let (body, base) = if key.kind == Kind::Secret {
            let mut body = obj.clone();
            for k in ["apiVersion", "kind", "metadata"] {
                body.remove(k);
            }
            (std::borrow::Cow::Owned(Value::Object(body)), "")
        } else {
            for k in obj.keys() {
                if !matches!(
                    k.as_str(),
                    "apiVersion" | "kind" | "metadata" | "spec" | "status"
                ) {
                    out.diagnostics.push(self.diag(
                        Severity::Warning,
                        header.origin.line_of(k),
                        &resource,
                        k,
                        format!("unknown field `{k}` (ignored)"),
                    ));
                }
            }
            // Borrowed: specs can be large, and this is the loader's hot path.
            let spec = obj.get("spec").filter(|v| !v.is_null());
            (
                spec.map_or_else(
                    || std::borrow::Cow::Owned(Value::Null),
                    std::borrow::Cow::Borrowed,
                ),
                "spec",
            )
        };
        let body = if body.is_null() {
            std::borrow::Cow::Owned(Value::Object(Map::new()))
        } else {
            body
        };
        let (result, unknown) = deserialize_body::<S>(body.as_ref(), base);
        let mut header = header;
        header.origin.set_body_hash(body_hash(body.as_ref()));
        header.origin.set_unknown(unknown.clone());
        for path in unknown {
            let name = path.rsplit(['.', '[']).next().unwrap_or(&path).to_string();
            out.diagnostics.push(self.diag(
                Severity::Warning,
                header.origin.line_of(&path),
                &resource,
                &path,
                format!("unknown field `{name}` (ignored; check the spelling)"),
            ));
        }
        match result {
            Ok(spec) => Some(Object {
                api_version: header.api_version,
                name: header.name,
                namespace: header.namespace,
                meta: header.meta,
                spec,
                origin: header.origin,
            }),
            Err((path, message)) => {
                out.diagnostics.push(self.diag(
                    Severity::Error,
                    header.origin.line_of(&path),
                    &resource,
                    &path,
                    format!("{message}; object rejected"),
                ));
                None
            }
        }
    }
}

/// A hash of a body's values. serde_json's maps are ordered by key, so the order of keys in
/// the file does not count. SipHash with fixed keys: the same text hashes the same in every
/// process, which resource versions rely on.
fn body_hash(body: &Value) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

/// An object's body as `S`, with the paths of the fields `S` does not know; a type error
/// comes with the path of its field. Tracking the path of every field costs as much as
/// reading it, so it is done only again after an error, to name the field.
fn deserialize_body<S: DeserializeOwned>(
    body: &Value,
    base: &str,
) -> (Result<S, (String, String)>, Vec<String>) {
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(base, &path));
    if let Ok(value) = S::deserialize(serde_ignored::Deserializer::new(body, &mut record)) {
        return (Ok(value), unknown);
    }
    let mut unknown = Vec::new();
    let mut record = |path: serde_ignored::Path<'_>| unknown.push(ignored_path(base, &path));
    let de = serde_ignored::Deserializer::new(body, &mut record);
    let result: Result<S, _> = serde_path_to_error::deserialize(de);
    let result = result.map_err(|e| {
        (
            join_path(base, &error_path(e.path())),
            e.inner().to_string(),
        )
    });
    (result, unknown)
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(items: &[&str]) -> String {
    match items.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

/// The kind Isthmus reads for a group and kind, with the versions it accepts.
fn known_kind(group: &str, kind: &str) -> Option<(Kind, &'static [&'static str])> {
    const ISTIO: &[&str] = &["v1", "v1beta1", "v1alpha3"];
    const GATEWAY_API: &[&str] = &["v1", "v1beta1", "v1alpha2", "v1alpha3"];
    const V1: &[&str] = &["v1"];
    let k = match (group, kind) {
        ("networking.istio.io", "Gateway") => (Kind::Gateway, ISTIO),
        ("networking.istio.io", "VirtualService") => (Kind::VirtualService, ISTIO),
        ("networking.istio.io", "DestinationRule") => (Kind::DestinationRule, ISTIO),
        ("networking.istio.io", "ServiceEntry") => (Kind::ServiceEntry, ISTIO),
        ("gateway.networking.k8s.io", "GatewayClass") => (Kind::GatewayClass, GATEWAY_API),
        ("gateway.networking.k8s.io", "Gateway") => (Kind::KubeGateway, GATEWAY_API),
        ("gateway.networking.k8s.io", "HTTPRoute") => (Kind::HttpRoute, GATEWAY_API),
        ("gateway.networking.k8s.io", "GRPCRoute") => (Kind::GrpcRoute, GATEWAY_API),
        ("gateway.networking.k8s.io", "TLSRoute") => (Kind::TlsRoute, GATEWAY_API),
        ("gateway.networking.k8s.io", "TCPRoute") => (Kind::TcpRoute, GATEWAY_API),
        ("gateway.networking.k8s.io", "ReferenceGrant") => (Kind::ReferenceGrant, GATEWAY_API),
        ("networking.k8s.io", "Ingress") => (Kind::Ingress, V1),
        ("networking.k8s.io", "IngressClass") => (Kind::IngressClass, V1),
        ("", "Secret") => (Kind::Secret, V1),
        ("", "Namespace") => (Kind::Namespace, V1),
        _ => return None,
    };
    Some(k)
}

struct ObjectHeader {
    api_version: String,
    name: String,
    namespace: String,
    meta: ObjectMeta,
    origin: Origin,
}

fn join_path(base: &str, path: &str) -> String {
    match (base.is_empty(), path.is_empty()) {
        (true, _) => path.to_string(),
        (false, true) => base.to_string(),
        (false, false) if path.starts_with('[') => format!("{base}{path}"),
        (false, false) => format!("{base}.{path}"),
    }
}

/// Formats a `serde_ignored` path as `a.b[0].c`.
fn ignored_path(base: &str, path: &serde_ignored::Path<'_>) -> String {
    fn walk(p: &serde_ignored::Path<'_>, out: &mut String) {
        use serde_ignored::Path;
        match p {
            Path::Root => {}
            Path::Seq { parent, index } => {
                walk(parent, out);
                out.push_str(&format!("[{index}]"));
            }
            Path::Map { parent, key } => {
                walk(parent, out);
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Path::Some { parent }
            | Path::NewtypeStruct { parent }
            | Path::NewtypeVariant { parent } => walk(parent, out),
        }
    }
    let mut s = String::new();
    walk(path, &mut s);
    join_path(base, &s)
}

/// Formats a `serde_path_to_error` path as `a.b[0].c`.
fn error_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod tests;
