//! `/logging`: the log filter, shown (GET) and replaced at run time (POST). The binary owns
//! the logging setup and hands the admin server a [`LogControl`].

use http::StatusCode;

use crate::reply::{self, Reply};

/// A log filter directive that was refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

/// What the admin server may do to the process's logging.
pub trait LogControl: Send + Sync {
    /// The filter in force, as `RUST_LOG` would spell it.
    fn current(&self) -> String;
    /// Replaces the filter with `directives` (`debug`, `info,isthmus_proxy=debug`, ...).
    fn set(&self, directives: &str) -> Result<(), FilterError>;
}

pub fn show(control: Option<&dyn LogControl>) -> Reply {
    match control {
        Some(c) => reply::text(StatusCode::OK, format!("{}\n", c.current())),
        None => unavailable(),
    }
}

/// Applies the `level` query parameter, or else the body, as the new filter.
pub fn change(control: Option<&dyn LogControl>, query: Option<&str>, body: &[u8]) -> Reply {
    let Some(control) = control else {
        return unavailable();
    };
    let directives = reply::param(query, "level")
        .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string());
    if directives.is_empty() {
        return reply::text(
            StatusCode::BAD_REQUEST,
            "give the filter as ?level=debug (or a directive such as info,isthmus_proxy=debug)\n",
        );
    }
    let before = control.current();
    match control.set(&directives) {
        Ok(()) => {
            let now = control.current();
            tracing::warn!(from = %before, to = %now, "log filter changed through the admin server");
            reply::text(StatusCode::OK, format!("{now}\n"))
        }
        Err(e) => reply::text(
            StatusCode::BAD_REQUEST,
            format!("invalid log filter {directives:?}: {e}\n"),
        ),
    }
}

fn unavailable() -> Reply {
    reply::text(
        StatusCode::NOT_IMPLEMENTED,
        "this process's log filter cannot be changed\n",
    )
}
