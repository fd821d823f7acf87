//! TLS on the downstream side: reading the ClientHello without consuming it, rustls server
//! configurations built from the snapshot, and serving TLS ports (terminate or pass through).

pub mod client_auth;
pub mod client_config;
pub mod client_hello;
pub mod prefixed;
pub mod serve;
pub mod server_config;
pub mod x509;
pub mod xfcc;
