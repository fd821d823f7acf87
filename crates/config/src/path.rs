//! Path normalisation before matching, as Istio's MeshConfig `pathNormalization`:
//! - `BASE` (the default): RFC 3986 normalisation: percent-encoded unreserved characters are
//!   decoded (so `%2e%2e` is `..`) and dot segments removed, so `/a/../admin` cannot slip past
//!   a route for `/a`; slashes are not merged and encoded slashes are kept.
//! - `MERGE_SLASHES`: also `//` → `/`.
//! - `DECODE_AND_MERGE_SLASHES`: also `%2F` → `/` and `%5C` → `\` before merging.
//! - `NONE`: the path as received.
//!
//! A path with an encoded NUL (`%00`) is refused (400), as Envoy does.

use std::borrow::Cow;

use serde::Serialize;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PathNormalization {
    None,
    #[default]
    Base,
    MergeSlashes,
    DecodeAndMergeSlashes,
}

impl PathNormalization {
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_uppercase().replace('-', "_").as_str() {
            "NONE" => PathNormalization::None,
            "BASE" | "DEFAULT" => PathNormalization::Base,
            "MERGE_SLASHES" => PathNormalization::MergeSlashes,
            "DECODE_AND_MERGE_SLASHES" => PathNormalization::DecodeAndMergeSlashes,
            _ => return None,
        })
    }

    pub fn is_base(&self) -> bool {
        *self == PathNormalization::Base
    }
}

/// The path `mode` makes of `path`; `None` if it must be refused (an encoded NUL).
pub fn normalize_with(path: &str, mode: PathNormalization) -> Option<Cow<'_, str>> {
    if mode == PathNormalization::None {
        return Some(Cow::Borrowed(path));
    }
    if path.contains('%') {
        let decoded = decode(path, mode == PathNormalization::DecodeAndMergeSlashes)?;
        let merged = merge(&decoded, mode);
        return Some(Cow::Owned(normalize(&merged).into_owned()));
    }
    if mode != PathNormalization::Base && path.contains("//") {
        let merged = merge(path, mode);
        return Some(Cow::Owned(normalize(&merged).into_owned()));
    }
    Some(normalize(path))
}

fn merge(path: &str, mode: PathNormalization) -> String {
    if mode == PathNormalization::Base {
        return path.to_string();
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

/// Decodes percent-encoded unreserved characters (and `/`, `\` when `slashes`); other escapes
/// stay, with upper-case hex. `None` for `%00`.
fn decode(path: &str, slashes: bool) -> Option<String> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .filter(|_| b == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(0) => return None,
            Some(c) if c.is_ascii_alphanumeric() || b"-._~".contains(&c) => out.push(char::from(c)),
            Some(c) if slashes && (c == b'/' || c == b'\\') => out.push(char::from(c)),
            Some(c) => out.push_str(&format!("%{c:02X}")),
            None => {
                // Not an escape: copy the character whole (paths are ASCII after hyper's
                // parsing, but be safe with any UTF-8).
                let ch = path.get(i..).and_then(|r| r.chars().next())?;
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
        }
        i += 3;
    }
    Some(out)
}

pub fn normalize(path: &str) -> Cow<'_, str> {
    if !path.contains("/.") {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => {
                if i == last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if i == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in out {
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Cow::Owned(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_istio() {
        use PathNormalization::*;
        let cases = [
            (Base, "/a/%2e%2e/admin", Some("/admin")),
            (Base, "/%2E%2e/x", Some("/x")),
            (Base, "/a%2fb", Some("/a%2Fb")),
            (Base, "/%7euser", Some("/~user")),
            (Base, "//admin", Some("//admin")),
            (Base, "/a%00b", Option::None),
            (MergeSlashes, "//admin//x", Some("/admin/x")),
            (MergeSlashes, "/a%2f%2fb", Some("/a%2F%2Fb")),
            (DecodeAndMergeSlashes, "/a%2f%2fb", Some("/a/b")),
            (
                DecodeAndMergeSlashes,
                "/public%2f..%2fadmin",
                Some("/admin"),
            ),
            (PathNormalization::None, "/a/../b", Some("/a/../b")),
        ];
        for (mode, input, want) in cases {
            assert_eq!(
                normalize_with(input, mode).as_deref(),
                want,
                "{mode:?} {input}"
            );
        }
    }

    #[test]
    fn removes_dot_segments() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../../etc/passwd", "/etc/passwd"),
            ("/a/b/..", "/a/"),
            ("/a/.", "/a/"),
            ("/a//b", "/a//b"),
            ("/.hidden", "/.hidden"),
            ("/..", "/"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input), want, "{input}");
        }
    }
}
