//! The access log: one line per request or TCP connection, in Istio's default TEXT format or
//! its JSON encoding, written off the request path.
//!
//! A request formats its line and hands it to a bounded queue; a writer thread batches lines
//! into the file (or stdout) and flushes when the queue runs dry. When the queue is full the
//! line is dropped and counted (`isthmus_access_log_dropped_total`): a slow disk never slows
//! traffic. The file is opened once, in append mode; rotate it with copy-and-truncate (it is
//! not reopened on SIGHUP).

mod format;
mod writer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::mpsc::{SyncSender, TrySendError};
use std::time::SystemTime;

use prometheus_client::metrics::counter::Counter;

use crate::response_flags::ResponseFlags;

/// Lines that may wait for the writer before new ones are dropped.
const QUEUE: usize = 16 * 1024;

/// Istio's two encodings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    /// `EnvoyTextLogFormat`, Istio's default.
    #[default]
    Text,
    /// The same fields as a JSON object per line, with Istio's keys.
    Json,
}

impl FromStr for Format {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "text" => Ok(Format::Text),
            "json" => Ok(Format::Json),
            _ => Err(format!("{s:?} is not an access log format (text, json)")),
        }
    }
}

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Target {
    /// No access log, as Istio by default (MeshConfig `accessLogFile` unset).
    #[default]
    Off,
    Stdout,
    File(PathBuf),
}

impl FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("the access log target is empty (off, stdout or a file path)".into()),
            "off" => Ok(Target::Off),
            "stdout" | "/dev/stdout" => Ok(Target::Stdout),
            path => Ok(Target::File(PathBuf::from(path))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("cannot open the access log {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the access log writer: {0}")]
    Thread(std::io::Error),
}

/// The sending side of the access log.
pub struct AccessLog {
    queue: SyncSender<String>,
    format: Format,
    dropped: Counter,
}

impl AccessLog {
    /// Opens the target and starts its writer; `None` when the log is off.
    pub fn start(
        target: &Target,
        format: Format,
        dropped: Counter,
    ) -> Result<Option<AccessLog>, AccessLogError> {
        let Some(queue) = writer::spawn(target, QUEUE)? else {
            return Ok(None);
        };
        Ok(Some(AccessLog {
            queue,
            format,
            dropped,
        }))
    }

    /// Formats `entry` and queues it, or drops it if the writer is behind.
    pub fn log(&self, entry: &Entry<'_>) {
        let line = match self.format {
            Format::Text => format::text(entry),
            Format::Json => format::json(entry),
        };
        match self.queue.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }
}

/// The fields of one line. `None` prints as `-` (text) or `null` (JSON).
#[derive(Debug, Clone, Default)]
pub struct Entry<'a> {
    pub start: Option<SystemTime>,
    pub method: Option<&'a str>,
    /// `X-ENVOY-ORIGINAL-PATH?:PATH`: the path the client sent, query included.
    pub path: Option<&'a str>,
    /// `HTTP/1.1`, `HTTP/2`; none for TCP.
    pub protocol: Option<&'static str>,
    /// 0 for TCP, as Envoy.
    pub code: u16,
    pub flags: ResponseFlags,
    pub details: Option<&'a str>,
    pub bytes_received: u64,
    pub bytes_sent: u64,
    pub duration_ms: u64,
    pub upstream_service_time: Option<u64>,
    pub x_forwarded_for: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub request_id: Option<&'a str>,
    pub authority: Option<&'a str>,
    pub upstream_host: Option<SocketAddr>,
    /// Istio's cluster name, `outbound|port|subset|host`.
    pub upstream_cluster: Option<&'a str>,
    pub upstream_local: Option<SocketAddr>,
    pub downstream_local: Option<SocketAddr>,
    pub downstream_remote: Option<SocketAddr>,
    pub server_name: Option<&'a str>,
    pub route_name: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_formats_parse() {
        assert_eq!("off".parse::<Target>(), Ok(Target::Off));
        assert_eq!("stdout".parse::<Target>(), Ok(Target::Stdout));
        assert_eq!("/dev/stdout".parse::<Target>(), Ok(Target::Stdout));
        assert_eq!(
            "/var/log/a.log".parse::<Target>(),
            Ok(Target::File("/var/log/a.log".into()))
        );
        assert!("".parse::<Target>().is_err());
        assert_eq!("JSON".parse::<Format>(), Ok(Format::Json));
        assert_eq!("text".parse::<Format>(), Ok(Format::Text));
        assert!("xml".parse::<Format>().is_err());
    }

    #[test]
    fn a_full_queue_drops_and_counts() {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let log = AccessLog {
            queue: tx,
            format: Format::Text,
            dropped: Counter::default(),
        };
        let entry = Entry::default();
        log.log(&entry);
        log.log(&entry);
        log.log(&entry);
        assert_eq!(log.dropped.get(), 2);
        assert!(rx.try_recv().is_ok());
    }
}
