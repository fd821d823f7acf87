//! Parking idle HTTP/1 connections, so that thousands of keep-alive clients cost kilobytes
//! each instead of tens of kilobytes.
//!
//! hyper keeps, for every connection, its state and its read and write buffers (8 KB each, the
//! read buffer often grown to 16 KB) from the first request until the connection closes, and
//! has no setting to give them back while the connection waits. So a connection that stays
//! quiet between requests ([`crate::activity::Ending::Park`]) ends hyper's connection without
//! closing the socket: [`Parkable`] answers hyper's next read with an end of stream, which
//! hyper takes as the client closing an idle connection, and skips the shutdown hyper then
//! asks for. The connection's task then ends too: what the connection needs to go on (its
//! socket, its settings, its drain watches) waits in its listener's [`Lot`], which has one task
//! for all its parked connections and no timer or future per connection. When the next
//! request's first byte arrives ([`poll_first_byte`]), the lot spawns the connection's task
//! again; that byte, and anything hyper had read but not parsed, are read again by a new hyper
//! connection, which serves the request as if nothing happened.
//!
//! The made-up end of stream is given only when nothing could be lost by it: the connection
//! is between requests as the [`crate::activity::Activity`] sees it (no request in flight, no
//! request body still arriving, no byte of the next head), the socket has nothing to read, and
//! hyper has flushed everything it wrote.
//!
//! A parked connection's task would otherwise stay as large as its busiest moment (about 1.8
//! KB: the accept path's and the hyper connection's futures, its timers and drain watches).

mod io;
mod lot;
#[cfg(target_os = "linux")]
mod poller;
mod rest;

pub use io::{Parkable, Protocol, poll_first_byte};
pub use lot::{Lot, Parked};
pub use rest::{Detach, Resting};
