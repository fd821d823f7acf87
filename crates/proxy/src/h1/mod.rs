//! The gateway's own HTTP/1.1 server, for plain requests: a head with no body, no upgrade
//! and no expectation, which is what most requests to a gateway are. It parses the head
//! straight into the request the handler takes and writes the response with the framing
//! hyper's server would give it, without hyper's dispatcher, its per-request channels and its
//! read-ahead buffer management: about a quarter of the instructions a request costs.
//!
//! The first request that is not plain (a body, an upgrade, CONNECT, HTTP/1.0, `Expect`, or a
//! head hyper would refuse) is handed over, with every byte read of it, to hyper, which
//! serves the connection from there as it serves every connection's first request otherwise
//! ([`crate::serve`]): the hardening, the error answers and the rarer features stay hyper's.

mod request;
mod response;
mod server;

pub use server::{Ended, Server};
