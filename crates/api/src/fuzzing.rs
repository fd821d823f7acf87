//! Entry points for the fuzz targets under `fuzz/` and their regression tests, here because
//! they reach the crate's private fast YAML reader.

use crate::fast;
use crate::load::full_parse;

/// Holds the fast reader to its rule on any text: when it reads the text, it gives exactly the
/// values and lines serde-saphyr and the event walk give; when they refuse the text, so does
/// it. Panics when the rule is broken (the fuzzer's signal); returns whether the fast reader
/// read the text.
#[allow(clippy::panic)] // A differential oracle reports a disagreement by panicking.
pub fn fast_reader_agrees(text: &str) -> bool {
    let fast = fast::parse(text, 1);
    match (full_parse(text), &fast) {
        (Ok(full), Some(fast)) => {
            if fast != &full {
                panic!("different results for {text:?}:\nfast: {fast:?}\nfull: {full:?}");
            }
            true
        }
        (Err(e), Some(fast)) => panic!("read {fast:?} from {text:?}, which fails with {e}"),
        (_, None) => false,
    }
}
