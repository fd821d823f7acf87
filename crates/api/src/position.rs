//! Where each field of a YAML document sits: a map from field path
//! (`spec.http[0].route[0].destination.host`) to its 1-based line.
//!
//! serde gives typed values but forgets positions; the parser's event stream keeps them.
//! Walking the events once per file lets every later diagnostic (including those of the
//! compiler, long after parsing) point at the exact line of the field it names.

use std::collections::BTreeMap;

use granit_parser::{Event, Parser, ScalarStyle};

/// Field path to line, for one YAML document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineIndex {
    /// Line of the document's root node.
    pub start: usize,
    lines: BTreeMap<String, usize>,
}

impl LineIndex {
    /// The line of `path`, or of its nearest ancestor present in the document.
    pub fn line_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(line) = self.lines.get(p) {
                return *line;
            }
            match parent_path(p) {
                Some(parent) => p = parent,
                None => return self.start,
            }
        }
    }

    /// Every field path present in the document, in sorted order.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.lines.keys().map(String::as_str)
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> None.
pub fn parent_path(path: &str) -> Option<&str> {
    if path.is_empty() {
        return None;
    }
    if path.ends_with(']') {
        return path.rfind('[').and_then(|i| path.get(..i));
    }
    Some(path.rfind('.').and_then(|i| path.get(..i)).unwrap_or(""))
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

/// Builds one [`LineIndex`] per non-empty document, in stream order (the order in which
/// serde-saphyr returns documents, which skips empty ones).
///
/// Parse errors stop the walk; the caller reports them from serde-saphyr, which has the
/// better message.
pub fn index_documents(text: &str) -> Vec<LineIndex> {
    let mut docs = Vec::new();
    let mut current: Option<LineIndex> = None;
    let mut stack: Vec<Frame> = Vec::new();
    let mut empty_root = false;
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let line = span.start.line();
        match event {
            Event::DocumentStart(..) => {
                current = Some(LineIndex::default());
                stack.clear();
                empty_root = false;
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take()
                    && !empty_root
                {
                    docs.push(doc);
                }
            }
            Event::Scalar(value, style, ..) => {
                let Some(doc) = current.as_mut() else {
                    continue;
                };
                if stack.is_empty() {
                    // A document whose root is a null scalar is skipped by serde-saphyr.
                    empty_root = style == ScalarStyle::Plain
                        && matches!(value.as_ref(), "" | "~" | "null" | "Null" | "NULL");
                    doc.start = line;
                    continue;
                }
                if let Some(Frame::Map { path, key }) = stack.last_mut()
                    && key.is_none()
                {
                    let p = join(path, &value);
                    doc.lines.entry(p).or_insert(line);
                    *key = Some(value.into_owned());
                    continue;
                }
                record_value(doc, &mut stack, line);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let Some(doc) = current.as_mut() else {
                    continue;
                };
                let path = if stack.is_empty() {
                    doc.start = line;
                    String::new()
                } else {
                    if let Some(Frame::Map { key: None, .. }) = stack.last() {
                        // A complex mapping key: Kubernetes resources never have one.
                        break;
                    }
                    record_value(doc, &mut stack, line)
                };
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { path, key: None }
                } else {
                    Frame::Seq { path, index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
            }
            Event::Alias(_) => {
                if let Some(doc) = current.as_mut()
                    && !stack.is_empty()
                {
                    record_value(doc, &mut stack, line);
                }
            }
            _ => {}
        }
    }
    docs
}

/// Records the position of a value node under the top frame and returns its path.
/// Mapping values take the line of their key (recorded already); sequence items their own.
fn record_value(doc: &mut LineIndex, stack: &mut [Frame], line: usize) -> String {
    match stack.last_mut() {
        Some(Frame::Map { path, key }) => {
            let p = join(path, key.as_deref().unwrap_or("?"));
            *key = None;
            p
        }
        Some(Frame::Seq { path, index }) => {
            let p = format!("{path}[{index}]");
            *index += 1;
            doc.lines.entry(p.clone()).or_insert(line);
            p
        }
        None => String::new(),
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &str = "\
apiVersion: v1
kind: X
spec:
  http:
  - match:
    - uri:
        prefix: /a
    route:
    - destination:
        host: a
---
---
kind: Y
spec: {hosts: [a, b]}
";

    #[test]
    fn indexes_fields_and_skips_empty_documents() {
        let docs = index_documents(DOCS);
        assert_eq!(docs.len(), 2);
        let a = &docs[0];
        let cases = [
            ("kind", 2),
            ("spec.http[0]", 5),
            ("spec.http[0].match[0].uri.prefix", 7),
            ("spec.http[0].route[0].destination.host", 10),
            ("spec.http[0].route[0].destination.port.number", 9),
            ("spec.nothing", 3),
            ("", 1),
        ];
        for (path, line) in cases {
            assert_eq!(a.line_of(path), line, "{path}");
        }
        assert_eq!(docs[1].line_of("spec.hosts[1]"), 14);
        assert_eq!(docs[1].start, 13);
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }
}
