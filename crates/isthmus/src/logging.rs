//! Logging to stderr with a filter (`RUST_LOG`, `info` by default) that the admin server's
//! `/logging` can replace while the process runs.

use std::sync::{Arc, OnceLock};

use isthmus_admin::{FilterError, LogControl};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

/// The filter's reload handle. The subscriber is process-wide, and so is its handle: `run`
/// finds it here without every caller of `run` passing it along.
static FILTER: OnceLock<Arc<ReloadableFilter>> = OnceLock::new();

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

pub struct ReloadableFilter {
    handle: reload::Handle<EnvFilter, Registry>,
}

/// Installs the subscriber; call once, before anything logs.
pub fn init() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, handle) = reload::Layer::new(filter);
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .try_init();
    if installed.is_ok() {
        let _ = FILTER.set(Arc::new(ReloadableFilter { handle }));
    }
}

/// The control the admin server uses, if [`init`] installed the subscriber.
pub fn control() -> Option<Arc<dyn LogControl>> {
    FILTER.get().map(|f| f.clone() as Arc<dyn LogControl>)
}

/// Parses a filter strictly: `EnvFilter` takes a lone word for a target name, so a misspelt
/// level (`debgu`) would silence everything else; a lone word must be a level here.
pub fn parse(directives: &str) -> Result<EnvFilter, FilterError> {
    let directives = directives.trim();
    if !directives.contains([',', '=', '[', ':'])
        && !LEVELS.contains(&directives.to_ascii_lowercase().as_str())
    {
        return Err(FilterError(format!(
            "{directives:?} is not a level ({}); write TARGET=LEVEL for one target",
            LEVELS.join(", ")
        )));
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| FilterError(e.to_string()))
}

impl LogControl for ReloadableFilter {
    fn current(&self) -> String {
        self.handle
            .with_current(ToString::to_string)
            .unwrap_or_else(|e| format!("unknown ({e})"))
    }

    fn set(&self, directives: &str) -> Result<(), FilterError> {
        let filter = parse(directives)?;
        self.handle
            .reload(filter)
            .map_err(|e| FilterError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_parsing() {
        assert_eq!(parse("debug").unwrap().to_string(), "debug");
        assert_eq!(
            parse("info,isthmus_proxy=debug").unwrap().to_string(),
            "isthmus_proxy=debug,info"
        );
        assert!(parse("isthmus_proxy=debug").is_ok());
        assert!(parse("debgu").unwrap_err().0.contains("not a level"));
        assert!(parse("isthmus_proxy=loud").is_err());
    }
}
