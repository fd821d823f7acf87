//! The command line. Every `run` flag has an environment variable of the same name in upper
//! case with an `ISTHMUS_` prefix (README lists them).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use isthmus_config::instance::OutboundPolicy;
use isthmus_proxy::access_log::{Format as LogFormat, Target};

#[derive(Debug, Parser)]
#[command(
    name = "isthmus",
    version,
    about = "An Istio-compatible ingress and egress gateway"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Istio resources found in files and folders, reloading them when they change.
    Run(Box<RunArgs>),
    /// Check configuration files and print every diagnostic; exit 1 if any is an error.
    Validate(ValidateArgs),
    /// Run the bundled example with demo backends (the quickstart).
    Demo(DemoArgs),
    /// Show which listener, server, virtual host and route would take a request, why the
    /// routes before it did not match, and where it would go. Nothing is sent. Exit 0 when a
    /// route takes the request, 1 when the gateway would answer an error itself, 2 on bad
    /// arguments or a configuration that cannot be read.
    Explain(ExplainArgs),
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// A YAML file or a folder of YAML files, read like `kubectl apply -f`. Repeatable.
    #[arg(
        long = "config",
        env = "ISTHMUS_CONFIG",
        value_delimiter = ',',
        required_unless_present = "kubernetes"
    )]
    pub config: Vec<PathBuf>,
    /// Take the configuration from the Kubernetes API server as well (in-cluster, or as
    /// kubectl finds it; see --kubeconfig).
    #[arg(long, env = "ISTHMUS_KUBERNETES")]
    pub kubernetes: bool,
    /// The kubeconfig file for --kubernetes (default: KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account).
    #[arg(long, env = "ISTHMUS_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// With --kubernetes: the addresses (IPs or host names) written to the
    /// `status.loadBalancer` of the Ingresses this instance serves, as ingress-nginx's
    /// --publish-status-address (typically the LoadBalancer Service's address). Without it,
    /// Ingress status is left alone.
    #[arg(long, env = "ISTHMUS_PUBLISH_STATUS_ADDRESS", value_delimiter = ',')]
    pub publish_status_address: Vec<String>,

    /// NAMESPACE/NAME (or NAME, in the instance's namespace) of the Service in front of this
    /// instance (its own LoadBalancer Service), as ingress-nginx's --publish-service: its
    /// load-balancer addresses (else its
    /// externalIPs) become the Ingresses' `status.loadBalancer` and the Gateway API Gateways'
    /// `status.addresses`, following the Service as they change. --publish-status-address
    /// overrides it.
    #[arg(long, env = "ISTHMUS_PUBLISH_SERVICE")]
    pub publish_service: Option<String>,
    /// This instance's labels; Gateways whose selector matches them apply here.
    #[arg(long, env = "ISTHMUS_LABELS", default_value = "istio=ingressgateway", value_parser = parse_labels)]
    pub labels: BTreeMap<String, String>,
    /// This instance's namespace (exportTo and DestinationRule lookup use it).
    #[arg(long, env = "ISTHMUS_NAMESPACE", default_value = "istio-system")]
    pub namespace: String,
    /// Where this instance runs, `region/zone/subzone`: locality load balancing keeps traffic
    /// near it and fails over by distance.
    #[arg(long, env = "ISTHMUS_LOCALITY", default_value = "")]
    pub locality: String,
    /// Proxies in front of the gateway whose X-Forwarded-For entries are trusted to name the
    /// client (Istio's gatewayTopology.numTrustedProxies).
    #[arg(long, env = "ISTHMUS_NUM_TRUSTED_PROXIES", default_value_t = 0)]
    pub num_trusted_proxies: usize,
    /// Every connection starts with a PROXY protocol v1/v2 header (behind a load balancer
    /// that sends one); connections without a valid header are closed.
    #[arg(long, env = "ISTHMUS_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
    /// Connections per Gateway port at most; new ones beyond it are closed at once.
    #[arg(
        long,
        env = "ISTHMUS_MAX_CONNECTIONS_PER_LISTENER",
        default_value_t = 100_000
    )]
    pub max_connections_per_listener: usize,
    /// Header names with underscores: allow (Envoy's default), drop, or reject (400).
    #[arg(long, env = "ISTHMUS_HEADERS_WITH_UNDERSCORES", default_value = "allow", value_parser = parse_underscores)]
    pub headers_with_underscores: isthmus_proxy::edge::Underscores,
    /// Path normalisation before matching: none, base (Istio's default), merge-slashes,
    /// decode-and-merge-slashes.
    #[arg(long, env = "ISTHMUS_PATH_NORMALIZATION", default_value = "base", value_parser = parse_path_normalization)]
    pub path_normalization: isthmus_config::path::PathNormalization,
    /// Streams a client may open at once on one HTTP/2 connection.
    #[arg(
        long,
        env = "ISTHMUS_HTTP2_MAX_CONCURRENT_STREAMS",
        default_value_t = 100
    )]
    pub http2_max_concurrent_streams: u32,
    /// HTTP/2 flow-control window per stream granted to clients, in bytes (65535 to
    /// 2147483647; Envoy's edge best practice: 64 KiB).
    #[arg(
        long,
        env = "ISTHMUS_HTTP2_INITIAL_STREAM_WINDOW_SIZE",
        default_value_t = isthmus_proxy::edge::DEFAULT_H2_STREAM_WINDOW,
        value_parser = parse_window
    )]
    pub http2_initial_stream_window_size: u32,
    /// HTTP/2 flow-control window per connection granted to clients, in bytes (65535 to
    /// 2147483647; Envoy's edge best practice: 1 MiB).
    #[arg(
        long,
        env = "ISTHMUS_HTTP2_INITIAL_CONNECTION_WINDOW_SIZE",
        default_value_t = isthmus_proxy::edge::DEFAULT_H2_CONNECTION_WINDOW,
        value_parser = parse_window
    )]
    pub http2_initial_connection_window_size: u32,
    /// A request's headers must be complete this long after their first byte (the first
    /// request's: after the connection opened); the connection is closed otherwise. 0: off.
    #[arg(long, env = "ISTHMUS_REQUEST_HEADERS_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub request_headers_timeout: Duration,
    /// A downstream HTTP connection without a request in flight for this long is closed
    /// (GOAWAY on HTTP/2). 0: never.
    #[arg(long, env = "ISTHMUS_IDLE_TIMEOUT", default_value = "1h", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// A downstream HTTP/1 connection quiet this long between requests is parked: its
    /// HTTP state and buffers (about 20 kB) are freed until its next request arrives, so
    /// many idle keep-alive connections cost little memory. 0: never.
    #[arg(long, env = "ISTHMUS_PARK_IDLE_AFTER", default_value = "1s", value_parser = parse_duration)]
    pub park_idle_after: Duration,
    /// Request bodies up to this many bytes are buffered so retries and mirrors can resend
    /// them; larger bodies stream once, without retries or mirror copies.
    #[arg(
        long,
        env = "ISTHMUS_MAX_REQUEST_BUFFER_BYTES",
        default_value_t = isthmus_proxy::edge::DEFAULT_MAX_REQUEST_BUFFER
    )]
    pub max_request_buffer_bytes: usize,
    /// Request bodies larger than this many bytes are refused with 413 (Payload Too Large):
    /// at once when their Content-Length says so, otherwise when they pass it, which ends
    /// their request upstream. Applies to every body, gRPC streams included. Default: no
    /// limit, as Envoy and Istio.
    #[arg(long, env = "ISTHMUS_MAX_REQUEST_BODY_BYTES")]
    pub max_request_body_bytes: Option<u64>,
    /// Bind Gateway port PORT on HOST:PORT instead of 0.0.0.0:PORT. Repeatable.
    #[arg(long = "bind", env = "ISTHMUS_BIND", value_delimiter = ',', value_parser = parse_bind)]
    pub bind: Vec<(u16, SocketAddr)>,
    /// Address of the admin server.
    #[arg(long, env = "ISTHMUS_ADMIN", default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// How long in-flight requests may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "ISTHMUS_DRAIN_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// Worker threads for traffic (default: one per core).
    #[arg(long, env = "ISTHMUS_WORKERS")]
    pub workers: Option<usize>,
    /// What forward-proxy ports do with a host no ServiceEntry declares: ALLOW_ANY passes it
    /// through (PassthroughCluster), REGISTRY_ONLY answers 502 (BlackHoleCluster).
    #[arg(
        long,
        env = "ISTHMUS_OUTBOUND_TRAFFIC_POLICY",
        default_value = "ALLOW_ANY"
    )]
    pub outbound_traffic_policy: OutboundPolicy,
    /// Answer NAME with ADDRESS before asking DNS, like curl's --resolve (NAME may be
    /// `*.suffix`). Repeatable.
    #[arg(long = "resolve", env = "ISTHMUS_RESOLVE", value_delimiter = ',', value_parser = isthmus_proxy::dns::parse_resolve)]
    pub resolve: Vec<(String, IpAddr)>,
    /// A file in /etc/hosts format (names may be `*.suffix`) consulted before DNS, read again
    /// when it changes.
    #[arg(long, env = "ISTHMUS_HOSTS_FILE")]
    pub hosts_file: Option<PathBuf>,
    /// Ask this name server (ADDRESS or ADDRESS:PORT, UDP then TCP) instead of those of
    /// /etc/resolv.conf, after --resolve, --hosts-file and /etc/hosts. Repeatable.
    #[arg(long = "dns-server", env = "ISTHMUS_DNS_SERVER", value_delimiter = ',', value_parser = isthmus_proxy::dns::parse_dns_server)]
    pub dns_servers: Vec<SocketAddr>,
    #[command(flatten)]
    pub telemetry: TelemetryArgs,
    #[command(flatten)]
    pub classes: ClassArgs,
}

/// Access log and tracing.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// The access log: `off` (Istio's default), `stdout`, or a file path (appended to).
    #[arg(long = "access-log", env = "ISTHMUS_ACCESS_LOG", default_value = "off")]
    pub access_log: Target,
    /// Access log encoding: `text` (Istio's default format) or `json`.
    #[arg(
        long = "access-log-format",
        env = "ISTHMUS_ACCESS_LOG_FORMAT",
        default_value = "text"
    )]
    pub access_log_format: LogFormat,
    /// Percentage of requests without a sampling decision whose new trace is sampled
    /// (Istio's default: 1).
    #[arg(long = "trace-sampling", env = "ISTHMUS_TRACE_SAMPLING", default_value = "1", value_parser = parse_percent)]
    pub trace_sampling: f64,
}

impl TelemetryArgs {
    pub fn settings(&self) -> isthmus_proxy::Telemetry {
        isthmus_proxy::Telemetry {
            access_log: self.access_log.clone(),
            access_log_format: self.access_log_format,
            trace_sampling: self.trace_sampling,
        }
    }
}

pub fn parse_percent(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('%').parse::<f64>() {
        Ok(p) if (0.0..=100.0).contains(&p) => Ok(p),
        _ => Err(format!("{s:?} is not a percentage from 0 to 100")),
    }
}

/// Which Gateway API Gateways and Ingresses an instance serves (`run`, `validate`, `explain`).
#[derive(Debug, Clone, Args)]
pub struct ClassArgs {
    /// The GatewayClass whose Gateways this instance serves. A GatewayClass of this name, if
    /// loaded, must name the controller isthmus.io/gateway-controller.
    #[arg(long, env = "ISTHMUS_GATEWAY_CLASS", default_value = isthmus_config::instance::DEFAULT_CLASS)]
    pub gateway_class: String,
    /// Serve only this Gateway API Gateway, NAMESPACE/NAME.
    #[arg(long, env = "ISTHMUS_GATEWAY", value_parser = parse_gateway)]
    pub gateway: Option<(String, String)>,
    /// The Ingress class this instance serves (spec.ingressClassName, or the
    /// kubernetes.io/ingress.class annotation).
    #[arg(long, env = "ISTHMUS_INGRESS_CLASS", default_value = isthmus_config::instance::DEFAULT_CLASS)]
    pub ingress_class: String,
}

impl ClassArgs {
    /// Sets the classes of `instance`.
    pub fn apply(&self, instance: &mut isthmus_config::Instance) {
        instance.gateway_class = self.gateway_class.clone();
        instance.gateway = self.gateway.clone();
        instance.ingress_class = self.ingress_class.clone();
    }
}

impl RunArgs {
    pub fn binds(&self) -> HashMap<u16, SocketAddr> {
        self.bind.iter().copied().collect()
    }
}

#[derive(Debug, Clone, Args)]
pub struct ValidateArgs {
    /// Files or folders to check.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[arg(long, default_value = "istio=ingressgateway", value_parser = parse_labels)]
    pub labels: BTreeMap<String, String>,
    #[arg(long, default_value = "istio-system")]
    pub namespace: String,
    #[command(flatten)]
    pub classes: ClassArgs,
}

#[derive(Debug, Clone, Args)]
pub struct ExplainArgs {
    /// The request: http://HOST[:PORT]/PATH[?QUERY] or https://... PORT is the Gateway port
    /// (default 80 or 443); an https URL sends HOST as the TLS SNI.
    pub url: String,
    /// A YAML file or a folder of YAML files, read as `isthmus run` reads them. Repeatable.
    #[arg(
        long = "config",
        env = "ISTHMUS_CONFIG",
        value_delimiter = ',',
        required = true
    )]
    pub config: Vec<PathBuf>,
    /// A request header `name: value`, as curl's -H (a Host header replaces the URL's host
    /// for routing). Repeatable.
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The request method.
    #[arg(short = 'X', long, default_value = "GET")]
    pub method: String,
    /// The TLS SNI to send instead of the URL's host.
    #[arg(long)]
    pub sni: Option<String>,
    /// `text` (for people) or `json` (for machines).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    #[arg(long, env = "ISTHMUS_LABELS", default_value = "istio=ingressgateway", value_parser = parse_labels)]
    pub labels: BTreeMap<String, String>,
    #[arg(long, env = "ISTHMUS_NAMESPACE", default_value = "istio-system")]
    pub namespace: String,
    /// The outbound traffic policy, as `isthmus run` takes it (forward-proxy ports).
    #[arg(
        long,
        env = "ISTHMUS_OUTBOUND_TRAFFIC_POLICY",
        default_value = "ALLOW_ANY"
    )]
    pub outbound_traffic_policy: OutboundPolicy,
    #[command(flatten)]
    pub classes: ClassArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// Where the demo gateway listens for HTTP (Gateway port 80).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "127.0.0.1:15000")]
    pub admin: SocketAddr,
    /// The folder of the bundled example.
    #[arg(long, default_value = "examples/quickstart")]
    pub config: PathBuf,
}

pub fn parse_labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    s.split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| format!("label {kv:?} is not key=value"))
        })
        .collect()
}

pub fn parse_gateway(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_string(), name.to_string()))
        }
        _ => Err(format!("{s:?} is not NAMESPACE/NAME")),
    }
}

pub fn parse_bind(s: &str) -> Result<(u16, SocketAddr), String> {
    let (port, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not PORT=HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} is not a port number"))?;
    let addr: SocketAddr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not HOST:PORT"))?;
    Ok((port, addr))
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    // A bare 0 needs no unit: the flags document `0` as "off".
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    isthmus_api::duration::ProtoDuration::parse(s)
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

/// An HTTP/2 window: RFC 9113 allows at most 2^31-1, and less than the protocol's initial
/// 65535 would only slow clients down.
fn parse_window(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (65_535..=0x7fff_ffff).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?}: expected a number of bytes from 65535 to 2147483647"
        )),
    }
}

/// A zero duration turns a timeout off.
pub fn optional(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

fn parse_underscores(text: &str) -> Result<isthmus_proxy::edge::Underscores, String> {
    isthmus_proxy::edge::Underscores::parse(text)
        .ok_or_else(|| format!("{text:?}: expected allow, drop or reject"))
}

fn parse_path_normalization(text: &str) -> Result<isthmus_config::path::PathNormalization, String> {
    isthmus_config::path::PathNormalization::parse(text).ok_or_else(|| {
        format!("{text:?}: expected none, base, merge-slashes or decode-and-merge-slashes")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags() {
        assert_eq!(parse_labels("istio=egressgateway, app=x").unwrap().len(), 2);
        assert!(parse_labels("nope").is_err());
        assert_eq!(
            parse_bind("80=127.0.0.1:8080").unwrap(),
            (80, "127.0.0.1:8080".parse().unwrap())
        );
        assert!(parse_bind("80:8080").is_err());
        assert_eq!(
            parse_gateway("infra/gw").unwrap(),
            ("infra".to_string(), "gw".to_string())
        );
        for bad in ["gw", "/gw", "a/", "a/b/c"] {
            assert!(parse_gateway(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_percent("1").unwrap(), 1.0);
        assert_eq!(parse_percent("0.5%").unwrap(), 0.5);
        assert!(parse_percent("101").is_err());
        assert!(parse_percent("x").is_err());
        assert_eq!(parse_window("65536").unwrap(), 65536);
        assert!(parse_window("1024").is_err());
        assert!(parse_window("2147483648").is_err());
        assert_eq!(parse_duration("0s").map(optional).unwrap(), None);
        assert_eq!(parse_duration("0").map(optional).unwrap(), None);
        assert!(
            parse_duration("5").is_err(),
            "a number other than 0 needs a unit"
        );
    }
}
