//! Egress: original-destination clusters, forward-proxy ports (the outbound registry and
//! policy for requests no route takes) and CONNECT tunnels.

pub mod connect;
pub mod forward_proxy;
pub mod original_dst;
