//! The command line. Every `run` flag has an environment variable of the same name in upper
//! case with an `ISTHMUS_` prefix (README lists them).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

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
    Run(RunArgs),
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
    #[command(flatten)]
    pub classes: ClassArgs,
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
    isthmus_api::duration::ProtoDuration::parse(s)
        .map(|d| d.0)
        .map_err(|e| e.to_string())
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
    }
}
