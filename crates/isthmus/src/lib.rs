#![cfg_attr(
    test,
    allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]
//! The `isthmus` binary's pieces: command line, configuration sources, the reload loop, and
//! the demo backends of the quickstart.

pub mod cli;
pub mod demo;
pub mod explain;
pub mod logging;
pub mod reload;
pub mod run;
pub mod source;
pub mod validate;
pub mod versions;
pub mod watch;
