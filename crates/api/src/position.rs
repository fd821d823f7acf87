//! Where each field of a YAML document sits: field paths (`spec.http[0].route[0].destination.host`)
//! to 1-based lines.
//!
//! serde gives typed values but forgets positions; the parser keeps them. The loader records
//! every node of a document as it parses it (see [`crate::fast`], or [`index_documents`] when
//! the full parser reads the file), so that every later diagnostic (including those of the
//! compiler, long after parsing) points at the exact line of the field it names.
//!
//! The index is a flat tree, not a map from path strings: a configuration of 100,000 routes
//! has over a million fields, and a string per field would cost more than parsing them.

use granit_parser::{Event, Parser, ScalarStyle};

/// The nodes of one YAML document, in document order, with their lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LineIndex {
    /// Line of the document's root node.
    pub start: usize,
    /// Every node below the root, in pre-order: a node's subtree follows it.
    nodes: Vec<Node>,
    /// The mapping keys, back to back; nodes refer to ranges of it.
    keys: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Node {
    seg: Seg,
    line: u32,
    /// One past the last node of this node's subtree (its next sibling, if any).
    end: u32,
}

/// How a node hangs from its parent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg {
    /// A mapping value, under the key `keys[start..end]`.
    Key { start: u32, end: u32 },
    /// A sequence item.
    Index(u32),
}

impl LineIndex {
    /// The line of `path`, or of its nearest ancestor present in the document.
    pub fn line_of(&self, path: &str) -> usize {
        let mut p = path;
        loop {
            if let Some(line) = self.find(p) {
                return self.nodes.get(line).map_or(self.start, |n| n.line as usize);
            }
            match parent_path(p) {
                Some(parent) => p = parent,
                None => return self.start,
            }
        }
    }

    /// Calls `f(path, shape)` for every node under `under` (a path; empty for the whole
    /// document), in document order (a node before its subtree), with paths relative to it.
    /// The shape is the path without its list indexes (`http[].match[].uri`), which large
    /// documents repeat. `f` returns whether to go on into the node's subtree.
    pub fn walk(&self, under: &str, mut f: impl FnMut(&str, &str) -> bool) {
        let range = if under.is_empty() {
            Some((0, self.nodes.len()))
        } else {
            self.find(under)
                .and_then(|i| Some((i + 1, self.nodes.get(i)?.end as usize)))
        };
        let Some((from, to)) = range else { return };
        let mut names = Names::default();
        self.walk_range(from, to, &mut names, &mut f);
    }

    fn walk_range(
        &self,
        from: usize,
        to: usize,
        names: &mut Names,
        f: &mut impl FnMut(&str, &str) -> bool,
    ) {
        let mut i = from;
        while let Some(node) = self.nodes.get(i).filter(|_| i < to) {
            let (path_len, shape_len) = (names.path.len(), names.shape.len());
            match node.seg {
                Seg::Key { start, end } => {
                    let key = self.keys.get(start as usize..end as usize).unwrap_or("");
                    names.push_key(key);
                }
                Seg::Index(n) => names.push_index(n),
            }
            if f(&names.path, &names.shape) {
                self.walk_range(i + 1, node.end as usize, names, f);
            }
            names.path.truncate(path_len);
            names.shape.truncate(shape_len);
            i = node.end as usize;
        }
    }

    /// The first node (in document order) whose path is exactly `path`.
    fn find(&self, path: &str) -> Option<usize> {
        if path.is_empty() {
            return None;
        }
        self.find_in(0, self.nodes.len(), path, true)
    }

    fn find_in(&self, from: usize, to: usize, rest: &str, top: bool) -> Option<usize> {
        let mut i = from;
        while let Some(node) = self.nodes.get(i).filter(|_| i < to) {
            if let Some(after) = self.strip_seg(node.seg, rest, top) {
                if after.is_empty() {
                    return Some(i);
                }
                if let Some(found) = self.find_in(i + 1, node.end as usize, after, false) {
                    return Some(found);
                }
            }
            i = node.end as usize;
        }
        None
    }

    /// `rest` without the path segment of `seg` at its front, if it starts with it.
    fn strip_seg<'p>(&self, seg: Seg, rest: &'p str, top: bool) -> Option<&'p str> {
        match seg {
            Seg::Key { start, end } => {
                let key = self.keys.get(start as usize..end as usize)?;
                let rest = if top { rest } else { rest.strip_prefix('.')? };
                rest.strip_prefix(key)
            }
            Seg::Index(n) => {
                let rest = rest.strip_prefix('[')?;
                let (digits, after) = rest.split_once(']')?;
                (canonical_index(digits)? == n).then_some(after)
            }
        }
    }
}

/// A node's path and shape, built as a walk descends.
#[derive(Default)]
struct Names {
    path: String,
    shape: String,
}

impl Names {
    fn push_key(&mut self, key: &str) {
        for s in [&mut self.path, &mut self.shape] {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(key);
        }
    }

    fn push_index(&mut self, n: u32) {
        use std::fmt::Write;
        let _ = write!(self.path, "[{n}]");
        self.shape.push_str("[]");
    }
}

/// `12` -> 12; `012`, `+1` and `` are not indexes as paths spell them.
fn canonical_index(digits: &str) -> Option<u32> {
    let canonical = digits.bytes().all(|b| b.is_ascii_digit())
        && (digits.len() == 1 || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten()
}

/// Builds a [`LineIndex`] as a parser walks a document: open a node at each mapping key and
/// sequence item, close it when its value ends.
#[derive(Debug, Default)]
pub(crate) struct IndexBuilder {
    index: LineIndex,
    open: Vec<usize>,
}

impl IndexBuilder {
    pub(crate) fn set_start(&mut self, line: usize) {
        self.index.start = line;
    }

    /// Opens the node of the value of mapping key `key`.
    pub(crate) fn open_key(&mut self, key: &str, line: usize) {
        let start = self.index.keys.len();
        self.index.keys.push_str(key);
        let seg = Seg::Key {
            start: to_u32(start),
            end: to_u32(self.index.keys.len()),
        };
        self.open(seg, line);
    }

    /// Opens the node of item `n` of a sequence.
    pub(crate) fn open_item(&mut self, n: usize, line: usize) {
        self.open(Seg::Index(to_u32(n)), line);
    }

    fn open(&mut self, seg: Seg, line: usize) {
        self.open.push(self.index.nodes.len());
        self.index.nodes.push(Node {
            seg,
            line: to_u32(line),
            end: 0,
        });
    }

    /// Closes the innermost open node.
    pub(crate) fn close(&mut self) {
        let end = to_u32(self.index.nodes.len());
        if let Some(node) = self.open.pop().and_then(|i| self.index.nodes.get_mut(i)) {
            node.end = end;
        }
    }

    pub(crate) fn finish(mut self) -> LineIndex {
        while !self.open.is_empty() {
            self.close();
        }
        self.index
    }
}

/// Files are at most 64 MiB ([`crate::load::MAX_FILE_BYTES`]), so lines, offsets and counts
/// fit; saturate rather than wrap if that ever changes.
fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
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
    /// A mapping; `key` is set between a key and its value.
    Map {
        key: bool,
    },
    Seq {
        index: usize,
    },
}

/// Builds one [`LineIndex`] per non-empty document, in stream order (the order in which
/// serde-saphyr returns documents, which skips empty ones), from the full parser's events.
/// The loader uses it for files outside the subset [`crate::fast`] reads.
///
/// Parse errors stop the walk; the caller reports them from serde-saphyr, which has the
/// better message.
pub fn index_documents(text: &str) -> Vec<LineIndex> {
    let mut docs = Vec::new();
    let mut current: Option<IndexBuilder> = None;
    let mut stack: Vec<Frame> = Vec::new();
    let mut empty_root = false;
    for event in Parser::new_from_str(text) {
        let Ok((event, span)) = event else { break };
        let line = span.start.line();
        match event {
            Event::DocumentStart(..) => {
                current = Some(IndexBuilder::default());
                stack.clear();
                empty_root = false;
            }
            Event::DocumentEnd => {
                if let Some(doc) = current.take()
                    && !empty_root
                {
                    docs.push(doc.finish());
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
                    doc.set_start(line);
                    continue;
                }
                if let Some(Frame::Map { key }) = stack.last_mut()
                    && !*key
                {
                    doc.open_key(&value, line);
                    *key = true;
                    continue;
                }
                open_value(doc, &mut stack, line);
                doc.close();
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let Some(doc) = current.as_mut() else {
                    continue;
                };
                if stack.is_empty() {
                    doc.set_start(line);
                } else {
                    if let Some(Frame::Map { key: false }) = stack.last() {
                        // A complex mapping key: Kubernetes resources never have one.
                        break;
                    }
                    open_value(doc, &mut stack, line);
                }
                stack.push(if matches!(event, Event::MappingStart(..)) {
                    Frame::Map { key: false }
                } else {
                    Frame::Seq { index: 0 }
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                stack.pop();
                if !stack.is_empty()
                    && let Some(doc) = current.as_mut()
                {
                    doc.close();
                }
            }
            Event::Alias(_) => {
                if let Some(doc) = current.as_mut()
                    && !stack.is_empty()
                {
                    open_value(doc, &mut stack, line);
                    doc.close();
                }
            }
            _ => {}
        }
    }
    docs
}

/// Opens the node of a value under the top frame: a mapping value's node was opened at its
/// key (so it takes the key's line); a sequence item opens its own, on its own line.
fn open_value(doc: &mut IndexBuilder, stack: &mut [Frame], line: usize) {
    match stack.last_mut() {
        Some(Frame::Map { key }) => *key = false,
        Some(Frame::Seq { index }) => {
            doc.open_item(*index, line);
            *index += 1;
        }
        None => {}
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
            ("spec.http[00]", 4),
            ("", 1),
        ];
        for (path, line) in cases {
            assert_eq!(a.line_of(path), line, "{path}");
        }
        assert_eq!(docs[1].line_of("spec.hosts[1]"), 14);
        assert_eq!(docs[1].start, 13);
    }

    #[test]
    fn keys_with_dots_and_the_first_of_equal_paths() {
        let text = "\
metadata:
  annotations:
    a.b/c: x
  a:
    b/c: y
data: {tls.crt: A, tls: {crt: B}}
";
        let [doc] = index_documents(text).try_into().unwrap();
        assert_eq!(doc.line_of("metadata.annotations.a.b/c"), 3);
        assert_eq!(doc.line_of("metadata.a.b/c"), 5);
        assert_eq!(doc.line_of("data.tls.crt"), 6);
    }

    #[test]
    fn walks_paths_in_document_order() {
        let [doc] = index_documents("spec:\n  b: [x, {c: 1}]\n  a: 2\n")
            .try_into()
            .unwrap();
        let mut seen = Vec::new();
        doc.walk("", |p, s| {
            seen.push(format!("{p} {s}"));
            true
        });
        assert_eq!(
            seen,
            [
                "spec spec",
                "spec.b spec.b",
                "spec.b[0] spec.b[]",
                "spec.b[1] spec.b[]",
                "spec.b[1].c spec.b[].c",
                "spec.a spec.a"
            ]
        );
        let mut under = Vec::new();
        doc.walk("spec.b[1]", |p, _| {
            under.push(p.to_string());
            true
        });
        assert_eq!(under, ["c"]);
        // Returning false skips a node's subtree, not its siblings.
        let mut pruned = Vec::new();
        doc.walk("", |p, _| {
            pruned.push(p.to_string());
            p != "spec.b"
        });
        assert_eq!(pruned, ["spec", "spec.b", "spec.a"]);
    }

    #[test]
    fn parent_paths() {
        assert_eq!(parent_path("a.b[2].c"), Some("a.b[2]"));
        assert_eq!(parent_path("a.b[2]"), Some("a.b"));
        assert_eq!(parent_path("a"), Some(""));
        assert_eq!(parent_path(""), None);
    }
}
