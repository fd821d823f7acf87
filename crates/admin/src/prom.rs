//! A reader of the Prometheus/OpenMetrics text the gateway writes: just enough to take the
//! samples of a few metrics with their labels. Reading the text, rather than the metric
//! structures, keeps `/stats/summary` in step with exactly what Prometheus scrapes.

/// One sample line: `name{label="value",...} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<'a> {
    pub name: &'a str,
    pub labels: Vec<(&'a str, String)>,
    pub value: f64,
}

impl Sample<'_> {
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of `text` whose metric name is one of `names`; other lines (comments, other
/// metrics, lines that do not parse) are skipped.
pub fn samples<'a>(text: &'a str, names: &[&str]) -> Vec<Sample<'a>> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| names.iter().any(|n| has_name(l, n)))
        .filter_map(parse_line)
        .collect()
}

fn has_name(line: &str, name: &str) -> bool {
    line.strip_prefix(name)
        .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
}

fn parse_line(line: &str) -> Option<Sample<'_>> {
    let name_end = line.find(['{', ' '])?;
    let name = line.get(..name_end)?;
    let rest = line.get(name_end..)?;
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(r) => labels(r)?,
        None => (Vec::new(), rest),
    };
    // After the value may come a timestamp and an exemplar (` # {...} v`).
    let value = rest.split_whitespace().next()?;
    Some(Sample {
        name,
        labels,
        value: parse_value(value)?,
    })
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

/// Parses `k="v",k2="v2"}` and returns the labels and what follows the `}`.
fn labels(mut s: &str) -> Option<(Vec<(&str, String)>, &str)> {
    let mut out = Vec::new();
    loop {
        s = s.trim_start_matches([',', ' ']);
        if let Some(rest) = s.strip_prefix('}') {
            return Some((out, rest));
        }
        let (key, rest) = s.split_once("=\"")?;
        let (value, rest) = quoted(rest)?;
        out.push((key.trim(), value));
        s = rest;
    }
}

/// Reads an escaped label value up to its closing quote.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, s.get(i + 1..)?)),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                other => value.push(other),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_labels() {
        let text = "# HELP istio_requests Requests\n\
                    # TYPE istio_requests counter\n\
                    istio_requests_total{reporter=\"source\",destination_service=\"a\\\"b\",response_code=\"200\"} 3\n\
                    istio_requests_totally 9\n\
                    isthmus_config_generation 4\n\
                    istio_request_duration_milliseconds_bucket{le=\"+Inf\"} 7 # {trace_id=\"x\"} 1.0\n\
                    broken{le=\"1 5\n";
        let s = samples(
            text,
            &[
                "istio_requests_total",
                "isthmus_config_generation",
                "istio_request_duration_milliseconds_bucket",
                "broken",
            ],
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].label("destination_service"), Some("a\"b"));
        assert_eq!(s[0].label("response_code"), Some("200"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].name, "isthmus_config_generation");
        assert_eq!(s[1].value, 4.0);
        assert_eq!(s[2].label("le"), Some("+Inf"));
        assert_eq!(s[2].value, 7.0);
    }
}
