//! A fast reader for the YAML that configuration is usually written in: block mappings and
//! sequences, flow collections, plain and quoted one-line scalars, comments and `---`
//! document markers (JSON is one flow mapping). It builds the JSON-like values and the line
//! index of each document in one pass over the bytes.
//!
//! It is an accelerator, not a second YAML implementation: anything outside that subset
//! (block scalars, anchors and aliases, tags, multi-line plain or quoted scalars, tabs,
//! duplicate keys, syntax errors...) makes [`parse`] give up, and the loader reads the file
//! with serde-saphyr as before. So a file this reader accepts gives exactly what serde-saphyr
//! and [`crate::position::index_documents`] give (the differential tests in `fast_tests.rs`
//! hold it to that), and errors keep serde-saphyr's messages. Plain scalars that could be
//! anything but a string or a simple integer (`1.5`, `0x1f`, `yes`, `.inf`) are resolved by
//! serde-saphyr itself, one scalar at a time.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::position::{IndexBuilder, LineIndex};

/// Collections nested deeper than this are left to serde-saphyr, whose own limit is 64.
const MAX_DEPTH: usize = 60;

/// YAML limits implicit keys to 1024 characters.
const MAX_KEY: usize = 1024;

/// One document: its value and the lines of its fields.
pub(crate) type Document = (Value, LineIndex);

/// The documents of `text` (empty ones skipped, as serde-saphyr does), or `None` when the
/// text is outside the subset this reader knows. `first_line` is the line number of the
/// text's first line (a part of a bigger file starts further down).
pub(crate) fn parse(text: &str, first_line: usize) -> Option<Vec<Document>> {
    if !plain_text(text.as_bytes()) {
        return None;
    }
    let mut reader = Reader {
        text,
        pos: 0,
        line: first_line,
        line_start: 0,
        depth: 0,
        index: IndexBuilder::default(),
        resolved: HashMap::new(),
    };
    reader.stream()
}

/// Whether the text is free of what this reader leaves to the full parser: tabs, carriage
/// returns and other control characters, the C1 range (which holds YAML 1.1's NEL line
/// break), the line and paragraph separators, the byte-order mark and U+FFFE/U+FFFF.
fn plain_text(b: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        let next = |k: usize| b.get(i + k).copied();
        let refused = match c {
            b'\n' | 0x20..=0x7e => false,
            0x00..=0x1f | 0x7f => true,
            0xc2 => next(1).is_some_and(|n| (0x80..=0x9f).contains(&n)),
            0xe2 => next(1) == Some(0x80) && matches!(next(2), Some(0xa8 | 0xa9)),
            0xef => {
                (next(1) == Some(0xbb) && next(2) == Some(0xbf))
                    || (next(1) == Some(0xbf) && matches!(next(2), Some(0xbe | 0xbf)))
            }
            _ => false,
        };
        if refused {
            return false;
        }
        i += 1;
    }
    true
}

struct Reader<'t> {
    text: &'t str,
    pos: usize,
    /// The line of `pos`, 1-based.
    line: usize,
    /// Where the line of `pos` starts.
    line_start: usize,
    /// Collections open around `pos`.
    depth: usize,
    /// The line index of the current document.
    index: IndexBuilder,
    /// Plain scalars resolved by serde-saphyr (`5s`, `1.5`, `yes`), by text: large files
    /// repeat the same few.
    resolved: HashMap<&'t str, Value>,
}

impl<'t> Reader<'t> {
    // ---- the stream and its documents ------------------------------------------------------

    fn stream(&mut self) -> Option<Vec<Document>> {
        let mut docs = Vec::new();
        loop {
            self.skip_blank_lines();
            if self.cur().is_none() {
                return Some(docs);
            }
            if self.doc_marker(b"---") {
                // `--- {a: b}` (content on the marker line) is left to the full parser.
                self.pos += 3;
                self.end_line()?;
                continue;
            }
            // A root node must start at column 0 and be a mapping: Kubernetes objects.
            if self.indent() != 0 {
                return None;
            }
            let start = self.line;
            let root = match self.cur()? {
                b'{' => {
                    let v = self.flow_map(true)?;
                    self.end_line()?;
                    v
                }
                _ if self.is_key_line() => Value::Object(self.block_map(0)?),
                _ => return None,
            };
            // After the root: the end of the stream or the next document.
            self.skip_blank_lines();
            if self.cur().is_some() && !self.doc_marker(b"---") {
                return None;
            }
            let mut index = std::mem::take(&mut self.index);
            index.set_start(start);
            docs.push((root, index.finish()));
        }
    }

    // ---- block collections -----------------------------------------------------------------

    /// A block mapping whose keys sit at column `indent`; `pos` is at its first key.
    /// Returns with `pos` at the start of the first line after it.
    fn block_map(&mut self, indent: usize) -> Option<Map<String, Value>> {
        self.enter()?;
        let mut map = Map::new();
        loop {
            let line = self.line;
            let key = self.block_key()?;
            self.index.open_key(&key, line);
            let value = self.block_value(indent)?;
            self.index.close();
            if map.insert(key, value).is_some() {
                // serde-saphyr reports duplicate keys.
                return None;
            }
            self.skip_blank_lines();
            if self.cur().is_none() {
                break;
            }
            let ind = self.indent();
            if ind < indent || (ind == 0 && self.doc_marker(b"---")) {
                break;
            }
            if ind > indent {
                // A continuation line (a multi-line scalar) or an error.
                return None;
            }
            self.pos += ind;
            if !self.is_key_line() {
                return None;
            }
        }
        self.leave();
        Some(map)
    }

    /// The value after a block mapping key's `:`.
    fn block_value(&mut self, indent: usize) -> Option<Value> {
        if self.rest_is_blank() {
            self.next_line();
            return self.nested_value(indent);
        }
        self.inline_node()
    }

    /// A mapping value that starts on a later line: a more indented node, or a sequence at the
    /// key's own column (`http:` then `- match:`); nothing there is null.
    fn nested_value(&mut self, indent: usize) -> Option<Value> {
        self.skip_blank_lines();
        if self.cur().is_none() {
            return Some(Value::Null);
        }
        let ind = self.indent();
        if ind > indent {
            self.pos += ind;
            return self.block_node(ind);
        }
        if ind == indent && self.seq_entry_at(self.pos + ind) {
            self.pos += ind;
            return self.block_seq(ind);
        }
        Some(Value::Null)
    }

    /// A node that starts a line at column `ind`.
    fn block_node(&mut self, ind: usize) -> Option<Value> {
        if self.seq_entry_at(self.pos) {
            self.block_seq(ind)
        } else if self.is_key_line() {
            self.block_map(ind).map(Value::Object)
        } else {
            self.inline_node()
        }
    }

    /// A block sequence whose `-` sit at column `indent`; `pos` is at its first `-`.
    fn block_seq(&mut self, indent: usize) -> Option<Value> {
        self.enter()?;
        let mut items = Vec::new();
        loop {
            let line = self.line;
            let n = items.len();
            self.pos += 1;
            if self.rest_is_blank() {
                // The item starts on a later line.
                self.next_line();
                self.skip_blank_lines();
                let ind = self.indent();
                if self.cur().is_none() || ind <= indent {
                    // A null item.
                    return None;
                }
                self.pos += ind;
                self.index.open_item(n, self.line);
                items.push(self.block_node(ind)?);
                self.index.close();
            } else {
                self.skip_spaces();
                if self.seq_entry_at(self.pos) {
                    // `- - a`: a sequence in a sequence on one line.
                    return None;
                }
                let column = self.pos - self.line_start;
                self.index.open_item(n, line);
                let item = if self.is_key_line() {
                    Value::Object(self.block_map(column)?)
                } else {
                    self.inline_node()?
                };
                self.index.close();
                items.push(item);
            }
            self.skip_blank_lines();
            if self.cur().is_none() {
                break;
            }
            let ind = self.indent();
            if ind > indent {
                return None;
            }
            if ind < indent || !self.seq_entry_at(self.pos + ind) {
                break;
            }
            self.pos += ind;
        }
        self.leave();
        Some(Value::Array(items))
    }

    /// A block mapping key and its `:`, which must be followed by a space or the line's end.
    fn block_key(&mut self) -> Option<String> {
        let key = match self.cur()? {
            b'"' => self.double_quoted()?,
            b'\'' => self.single_quoted()?,
            _ => {
                let start = self.pos;
                let end = self.plain_key_end()?;
                let key = self.slice(start, end).trim_end_matches(' ');
                self.pos = end;
                plain_key(key)?.to_string()
            }
        };
        self.skip_spaces();
        if self.cur() != Some(b':') || !self.separates(self.pos + 1) {
            return None;
        }
        self.pos += 1;
        (key.len() <= MAX_KEY).then_some(key)
    }

    /// Where the plain key at `pos` ends: at its `:` (followed by a space or the end of the
    /// line). `None` when the line has no such `:` before a comment or its end.
    fn plain_key_end(&self) -> Option<usize> {
        let b = self.text.as_bytes();
        if !plain_start(b, self.pos, false) {
            return None;
        }
        let mut i = self.pos;
        while let Some(&c) = b.get(i) {
            match c {
                b'\n' => return None,
                b'#' if space_before(b, i) => return None,
                b':' if self.separates(i + 1) => return Some(i),
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// Whether the line from `pos` is a block mapping entry (`key: ...`).
    fn is_key_line(&self) -> bool {
        let b = self.text.as_bytes();
        let after_quoted = |quote: u8| {
            let mut i = self.pos + 1;
            while let Some(&c) = b.get(i) {
                match c {
                    b'\n' => return None,
                    b'\\' if quote == b'"' => i += 1,
                    b'\'' if quote == b'\'' && b.get(i + 1) == Some(&b'\'') => i += 1,
                    _ if c == quote => return Some(i + 1),
                    _ => {}
                }
                i += 1;
            }
            None
        };
        match self.cur() {
            Some(q @ (b'"' | b'\'')) => after_quoted(q).is_some_and(|mut i| {
                while b.get(i) == Some(&b' ') {
                    i += 1;
                }
                b.get(i) == Some(&b':') && self.separates(i + 1)
            }),
            Some(b'{' | b'[') => false,
            _ => self.plain_key_end().is_some(),
        }
    }

    // ---- nodes on one line -----------------------------------------------------------------

    /// A scalar or flow collection that ends on the current line, then the rest of the line
    /// (spaces, a comment). `pos` ends at the start of the next line.
    fn inline_node(&mut self) -> Option<Value> {
        let value = match self.cur()? {
            b'{' => self.flow_map(false)?,
            b'[' => self.flow_seq(false)?,
            b'"' => Value::String(self.double_quoted()?),
            b'\'' => Value::String(self.single_quoted()?),
            _ => {
                let s = self.block_plain()?;
                self.resolve(s)?
            }
        };
        self.end_line()?;
        Some(value)
    }

    /// A plain scalar in block context, up to a comment or the end of the line.
    fn block_plain(&mut self) -> Option<&'t str> {
        let b = self.text.as_bytes();
        if !plain_start(b, self.pos, false) {
            return None;
        }
        let start = self.pos;
        let mut i = start;
        while let Some(&c) = b.get(i) {
            match c {
                b'\n' => break,
                b'#' if space_before(b, i) => break,
                // `a: b: c` is an error; `a: b:` too.
                b':' if self.separates(i + 1) => return None,
                _ => {}
            }
            i += 1;
        }
        self.pos = i;
        Some(self.slice(start, i).trim_end_matches(' '))
    }

    // ---- flow collections ------------------------------------------------------------------

    /// `{...}`. Only a document's root may span lines: the indentation rules of flow
    /// collections inside block ones are left to the full parser.
    fn flow_map(&mut self, multiline: bool) -> Option<Value> {
        self.enter()?;
        self.pos += 1;
        let mut map = Map::new();
        self.flow_space(multiline)?;
        if self.cur()? == b'}' {
            self.pos += 1;
            self.leave();
            return Some(Value::Object(map));
        }
        loop {
            let line = self.line;
            let key = match self.cur()? {
                b'"' => self.double_quoted()?,
                b'\'' => self.single_quoted()?,
                _ => plain_key(self.flow_plain()?)?.to_string(),
            };
            if key.len() > MAX_KEY {
                return None;
            }
            self.skip_spaces();
            if self.cur()? != b':' {
                return None;
            }
            self.pos += 1;
            self.flow_space(multiline)?;
            if matches!(self.cur()?, b',' | b'}') {
                // `{a: }`: a null value.
                return None;
            }
            self.index.open_key(&key, line);
            let value = self.flow_node(multiline)?;
            self.index.close();
            if map.insert(key, value).is_some() {
                return None;
            }
            self.flow_space(multiline)?;
            match self.cur()? {
                b',' => {
                    self.pos += 1;
                    self.flow_space(multiline)?;
                    if self.cur()? == b'}' {
                        return None;
                    }
                }
                b'}' => {
                    self.pos += 1;
                    break;
                }
                _ => return None,
            }
        }
        self.leave();
        Some(Value::Object(map))
    }

    /// `[...]`.
    fn flow_seq(&mut self, multiline: bool) -> Option<Value> {
        self.enter()?;
        self.pos += 1;
        let mut items = Vec::new();
        self.flow_space(multiline)?;
        if self.cur()? == b']' {
            self.pos += 1;
            self.leave();
            return Some(Value::Array(items));
        }
        loop {
            self.index.open_item(items.len(), self.line);
            items.push(self.flow_node(multiline)?);
            self.index.close();
            self.flow_space(multiline)?;
            match self.cur()? {
                b',' => {
                    self.pos += 1;
                    self.flow_space(multiline)?;
                    if self.cur()? == b']' {
                        return None;
                    }
                }
                b']' => {
                    self.pos += 1;
                    break;
                }
                // `[a: b]`: a mapping in a sequence.
                _ => return None,
            }
        }
        self.leave();
        Some(Value::Array(items))
    }

    fn flow_node(&mut self, multiline: bool) -> Option<Value> {
        match self.cur()? {
            b'{' => self.flow_map(multiline),
            b'[' => self.flow_seq(multiline),
            b'"' => self.double_quoted().map(Value::String),
            b'\'' => self.single_quoted().map(Value::String),
            _ => {
                let s = self.flow_plain()?;
                self.resolve(s)
            }
        }
    }

    /// A plain scalar in flow context: it ends at a flow indicator, a `:` followed by a space,
    /// a comment or the end of the line (a next line that continues it is refused by the
    /// caller, which then finds neither `,` nor a closing bracket).
    fn flow_plain(&mut self) -> Option<&'t str> {
        let b = self.text.as_bytes();
        if !plain_start(b, self.pos, true) {
            return None;
        }
        let start = self.pos;
        let mut i = start;
        while let Some(&c) = b.get(i) {
            match c {
                b'\n' | b',' | b'[' | b']' | b'{' | b'}' => break,
                b'#' if space_before(b, i) => break,
                b':' if self.separates(i + 1)
                    || matches!(b.get(i + 1), Some(b',' | b'[' | b']' | b'{' | b'}')) =>
                {
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        self.pos = i;
        let s = self.slice(start, i).trim_end_matches(' ');
        (!s.is_empty()).then_some(s)
    }

    /// Skips spaces and comments, and line breaks when `multiline`; a line break otherwise,
    /// or a document marker inside the collection, gives up.
    fn flow_space(&mut self, multiline: bool) -> Option<()> {
        let b = self.text.as_bytes();
        loop {
            match self.cur() {
                Some(b' ') => self.pos += 1,
                Some(b'\n') if multiline => {
                    self.next_line();
                    if self.doc_marker(b"---") || self.doc_marker(b"...") {
                        return None;
                    }
                }
                Some(b'#') if self.pos == self.line_start || space_before(b, self.pos) => {
                    self.pos = self.line_end();
                }
                Some(b'\n') => return None,
                _ => return Some(()),
            }
        }
    }

    // ---- quoted scalars --------------------------------------------------------------------

    /// `"..."` on one line, with the escapes JSON has.
    fn double_quoted(&mut self) -> Option<String> {
        let b = self.text.as_bytes();
        let mut out = String::new();
        let mut i = self.pos + 1;
        let mut run = i;
        loop {
            match *b.get(i)? {
                b'"' => break,
                b'\n' => return None,
                b'\\' => {
                    out.push_str(self.slice(run, i));
                    let (c, len) = escape(b, i + 1)?;
                    out.push(c);
                    i += 1 + len;
                    run = i;
                }
                _ => i += 1,
            }
        }
        out.push_str(self.slice(run, i));
        self.pos = i + 1;
        Some(out)
    }

    /// `'...'` on one line (`''` is a quote).
    fn single_quoted(&mut self) -> Option<String> {
        let b = self.text.as_bytes();
        let mut out = String::new();
        let mut i = self.pos + 1;
        let mut run = i;
        loop {
            match *b.get(i)? {
                b'\'' if b.get(i + 1) == Some(&b'\'') => {
                    out.push_str(self.slice(run, i + 1));
                    i += 2;
                    run = i;
                }
                b'\'' => break,
                b'\n' => return None,
                _ => i += 1,
            }
        }
        out.push_str(self.slice(run, i));
        self.pos = i + 1;
        Some(out)
    }

    // ---- scalars' types --------------------------------------------------------------------

    /// The value of a plain scalar: strings and simple integers here, anything that may be
    /// another type (`1.5`, `0x1f`, `yes`, `~`) as serde-saphyr resolves it.
    fn resolve(&mut self, s: &'t str) -> Option<Value> {
        if let Some(n) = simple_integer(s) {
            return Some(n);
        }
        match s {
            "true" => return Some(Value::Bool(true)),
            "false" => return Some(Value::Bool(false)),
            "null" | "Null" | "NULL" | "~" => return Some(Value::Null),
            _ => {}
        }
        if !maybe_not_a_string(s) {
            return Some(Value::String(s.to_string()));
        }
        if let Some(v) = self.resolved.get(s) {
            return Some(v.clone());
        }
        // Alone on a line, `---` and `...` would be document markers, not the scalar.
        if s.starts_with("---") || s.starts_with("...") {
            return None;
        }
        let v: Value = serde_saphyr::from_str(s).ok()?;
        self.resolved.insert(s, v.clone());
        Some(v)
    }

    // ---- lines and positions ---------------------------------------------------------------

    fn cur(&self) -> Option<u8> {
        self.text.as_bytes().get(self.pos).copied()
    }

    fn slice(&self, start: usize, end: usize) -> &'t str {
        self.text.get(start..end).unwrap_or("")
    }

    /// Whether the byte at `at` ends a key or a plain scalar after a `:`: a space, a line
    /// break or the end of the text.
    fn separates(&self, at: usize) -> bool {
        matches!(self.text.as_bytes().get(at), None | Some(b' ' | b'\n'))
    }

    /// Whether `at` holds a block sequence entry: `-` followed by a space or the line's end.
    fn seq_entry_at(&self, at: usize) -> bool {
        self.text.as_bytes().get(at) == Some(&b'-') && self.separates(at + 1)
    }

    /// Whether the line at `pos` (a line start) is the document marker `marker`.
    fn doc_marker(&self, marker: &[u8; 3]) -> bool {
        let b = self.text.as_bytes();
        b.get(self.pos..self.pos + 3) == Some(marker) && self.separates(self.pos + 3)
    }

    fn line_end(&self) -> usize {
        let rest = self.text.get(self.pos..).unwrap_or("");
        rest.find('\n').map_or(self.text.len(), |i| self.pos + i)
    }

    /// Moves to the start of the next line.
    fn next_line(&mut self) {
        let end = self.line_end();
        if end < self.text.len() {
            self.pos = end + 1;
            self.line += 1;
        } else {
            self.pos = end;
        }
        self.line_start = self.pos;
    }

    fn skip_spaces(&mut self) {
        while self.cur() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// Whether the rest of the line is spaces and perhaps a comment (`pos` moves past the
    /// spaces).
    fn rest_is_blank(&mut self) -> bool {
        self.skip_spaces();
        match self.cur() {
            None | Some(b'\n') => true,
            Some(b'#') => {
                self.pos == self.line_start || space_before(self.text.as_bytes(), self.pos)
            }
            _ => false,
        }
    }

    /// Finishes a line after a node: only spaces and a comment may follow.
    fn end_line(&mut self) -> Option<()> {
        if !self.rest_is_blank() {
            return None;
        }
        self.next_line();
        Some(())
    }

    /// Skips lines that hold only spaces or a comment; `pos` must be at a line start and ends
    /// at the start of a line with content (or the end).
    fn skip_blank_lines(&mut self) {
        while self.cur().is_some() {
            let start = self.pos;
            if !self.rest_is_blank() {
                self.pos = start;
                return;
            }
            self.next_line();
        }
    }

    /// The indentation of the line starting at `pos`.
    fn indent(&self) -> usize {
        let b = self.text.as_bytes();
        let mut i = self.pos;
        while b.get(i) == Some(&b' ') {
            i += 1;
        }
        i - self.pos
    }

    fn enter(&mut self) -> Option<()> {
        self.depth += 1;
        (self.depth <= MAX_DEPTH).then_some(())
    }

    fn leave(&mut self) {
        self.depth -= 1;
    }
}

/// Whether a space precedes `at` (a `#` there starts a comment).
fn space_before(b: &[u8], at: usize) -> bool {
    at.checked_sub(1).and_then(|i| b.get(i)) == Some(&b' ')
}

/// Whether a plain scalar may start at `at`: not with an indicator, except `-`, `?` and `:`
/// directly followed by a character that could be part of it.
fn plain_start(b: &[u8], at: usize, flow: bool) -> bool {
    let Some(&c) = b.get(at) else { return false };
    match c {
        b'-' | b'?' | b':' => match b.get(at + 1) {
            None | Some(b' ' | b'\n') => false,
            Some(b',' | b'[' | b']' | b'{' | b'}') => !flow,
            Some(_) => true,
        },
        b',' | b'[' | b']' | b'{' | b'}' | b'#' | b'&' | b'*' | b'!' | b'|' | b'>' | b'\''
        | b'"' | b'%' | b'@' | b'`' | b' ' | b'\n' => false,
        _ => true,
    }
}

/// A plain mapping key as serde-saphyr reads it into a JSON map: a string. Keys that YAML
/// could read as something else (`1`, `true`, `~`, the merge key `<<`) are left to it.
fn plain_key(key: &str) -> Option<&str> {
    let refused = key.is_empty()
        || key == "<<"
        || maybe_not_a_string(key)
        || matches!(key, "null" | "Null" | "NULL");
    (!refused).then_some(key)
}

/// Whether serde-saphyr might read a plain scalar as something other than a string: it starts
/// like a number (or `~`), or is one of YAML 1.1's boolean or null words in any case.
fn maybe_not_a_string(s: &str) -> bool {
    const WORDS: &[&str] = &["y", "yes", "n", "no", "true", "false", "on", "off", "null"];
    let starts_like_a_number = s
        .as_bytes()
        .first()
        .is_some_and(|c| matches!(c, b'0'..=b'9' | b'+' | b'-' | b'.' | b'~'));
    starts_like_a_number || WORDS.iter().any(|w| w.eq_ignore_ascii_case(s))
}

/// `0`, `8080`, `-3` (no sign, leading zero or underscore; fits 64 bits) as serde-saphyr
/// reads it into a JSON value: a `u64`, or an `i64` when negative.
fn simple_integer(s: &str) -> Option<Value> {
    let (negative, digits) = match s.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, s),
    };
    let canonical = !digits.is_empty()
        && digits.len() <= 18
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'))
        && !(negative && digits == "0");
    if !canonical {
        return None;
    }
    if negative {
        s.parse::<i64>().ok().map(Value::from)
    } else {
        s.parse::<u64>().ok().map(Value::from)
    }
}

/// The character of the escape after a backslash at `at`, and the length of the escape.
/// Only JSON's escapes; YAML's others are left to the full parser.
fn escape(b: &[u8], at: usize) -> Option<(char, usize)> {
    let c = match *b.get(at)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => {
            let hex = std::str::from_utf8(b.get(at + 1..at + 5)?).ok()?;
            if !hex.bytes().all(|h| h.is_ascii_hexdigit()) {
                return None;
            }
            // Surrogates are not characters: left to the full parser.
            let c = char::from_u32(u32::from_str_radix(hex, 16).ok()?)?;
            return Some((c, 5));
        }
        _ => return None,
    };
    Some((c, 1))
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
