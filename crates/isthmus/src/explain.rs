//! `isthmus explain`: loads the configuration as `isthmus run` does and prints what the
//! gateway would do with one request (the explanation itself lives in `isthmus-config`).

use std::process::ExitCode;

use isthmus_api::Diagnostic;
use isthmus_config::explain::{Explanation, Request, RequestSpec, explain};
use isthmus_config::{Instance, LastGood, build};
use serde::Serialize;

use crate::cli::{ExplainArgs, Format};
use crate::source::FileSource;

/// Diagnostics printed before the explanation; `isthmus validate` prints them all.
const SHOWN_DIAGNOSTICS: usize = 5;

/// Exit status for bad arguments or an unreadable configuration (clap uses it too).
const USAGE: u8 = 2;

pub fn run(args: &ExplainArgs) -> ExitCode {
    let req = match Request::parse(&RequestSpec {
        url: &args.url,
        method: Some(&args.method),
        headers: &args.headers,
        sni: args.sni.as_deref(),
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("isthmus explain: {e}");
            return ExitCode::from(USAGE);
        }
    };
    let mut instance = Instance {
        labels: args.labels.clone(),
        namespace: args.namespace.clone(),
        outbound_policy: args.outbound_traffic_policy,
        ..Instance::default()
    };
    args.classes.apply(&mut instance);
    let loaded = FileSource::new(args.config.clone()).load();
    let b = build(
        &loaded.resources,
        &loaded.rejected,
        &LastGood::new(),
        &instance,
    );
    let mut diags = loaded.diagnostics;
    diags.extend(b.diagnostics);
    diags.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    diags.dedup();
    if loaded.failed > 0 {
        for d in diags.iter().filter(|d| d.is_error()) {
            eprintln!("{d}");
        }
        eprintln!("isthmus explain: the configuration cannot be read (see above)");
        return ExitCode::from(USAGE);
    }
    let ex = explain(&b.snapshot, &req);
    summarize(&diags, loaded.resources.len());
    let printed = match args.format {
        Format::Text => Ok(ex.to_text()),
        Format::Json => serde_json::to_string_pretty(&Json {
            explanation: &ex,
            diagnostics: diags.iter().map(ToString::to_string).collect(),
        }),
    };
    match printed {
        Ok(text) => println!("{}", text.trim_end()),
        Err(e) => {
            eprintln!("isthmus explain: cannot encode the explanation: {e}");
            return ExitCode::FAILURE;
        }
    }
    if ex.routed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

#[derive(Serialize)]
struct Json<'a> {
    #[serde(flatten)]
    explanation: &'a Explanation,
    diagnostics: Vec<String>,
}

/// Errors and warnings first, a few of them, on stderr: the explanation is about what is
/// served, and a dropped resource is often the answer to "why does it not route".
fn summarize(diags: &[Diagnostic], resources: usize) {
    let serious: Vec<&Diagnostic> = diags
        .iter()
        .filter(|d| d.severity != isthmus_api::Severity::Note)
        .collect();
    if serious.is_empty() {
        return;
    }
    for d in serious.iter().take(SHOWN_DIAGNOSTICS) {
        eprintln!("{d}");
    }
    let errors = serious.iter().filter(|d| d.is_error()).count();
    let more = serious.len().saturating_sub(SHOWN_DIAGNOSTICS);
    let more = if more > 0 {
        format!(" ({more} more not shown: isthmus validate lists them all)")
    } else {
        String::new()
    };
    eprintln!(
        "{resources} resource(s) loaded: {errors} error(s), {} warning(s){more}{}\n",
        serious.len() - errors,
        if errors > 0 {
            "; resources with errors are not served"
        } else {
            ""
        }
    );
}
