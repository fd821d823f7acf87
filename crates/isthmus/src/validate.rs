//! `isthmus validate`: the same loading and checks as the running gateway, printed.

use std::process::ExitCode;

use isthmus_config::{Instance, LastGood, build};

use crate::cli::ValidateArgs;
use crate::source::FileSource;

pub fn run(args: &ValidateArgs) -> ExitCode {
    let mut instance = Instance {
        labels: args.labels.clone(),
        namespace: args.namespace.clone(),
        ..Instance::default()
    };
    args.classes.apply(&mut instance);
    let mut source = FileSource::new(args.paths.clone());
    let loaded = source.load();
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
    for d in &diags {
        println!("{d}");
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    eprintln!(
        "{} resource(s) checked: {errors} error(s), {warnings} warning(s) or note(s)",
        loaded.resources.len()
    );
    if errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
