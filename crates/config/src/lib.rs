#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]
//! The control plane of Isthmus, pure and synchronous: it validates the loaded resources and
//! compiles them into the immutable [`Snapshot`] that the data plane serves.
//!
//! Nothing here does I/O or knows about sockets; everything is tested with tables.

pub mod actions;
pub mod build;
pub mod compile;
pub mod diag;
pub mod egress;
pub mod explain;
pub mod gateway_status;
pub mod hosts;
pub mod instance;
pub mod matching;
pub mod path;
pub mod policy;
pub mod route_table;
pub mod snapshot;
pub mod support;
pub mod tls;
pub mod validate;

pub use build::{Build, Builder, LastGood, build};
pub use instance::Instance;
pub use snapshot::Snapshot;
