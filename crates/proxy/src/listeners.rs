//! The listener manager: one accept loop per Gateway port, started and stopped as the ports
//! of the snapshot change, leaving the other listeners and their connections untouched.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{Semaphore, oneshot};

use crate::Gateway;
use crate::drain::{DrainTrigger, DrainWatch};
use crate::handler::ConnInfo;
use crate::parking::Lot;
use crate::serve::FromListener;
use crate::{proxy_protocol, serve, tcp, tls};
use isthmus_config::snapshot::ListenerProtocol;

struct Running {
    local: SocketAddr,
    protocol: ListenerProtocol,
    stop: oneshot::Sender<()>,
    /// Held only to be dropped with the port: its connections then close gracefully.
    _closing: DrainTrigger,
}

pub struct Listeners {
    gateway: Arc<Gateway>,
    /// `--bind` overrides: Gateway port -> address.
    binds: HashMap<u16, SocketAddr>,
    running: BTreeMap<u16, Running>,
    builder: Arc<serve::Protocols>,
    drain: DrainTrigger,
}

/// The outcome of reconciling listeners with a snapshot.
#[derive(Debug, Default)]
pub struct ApplyReport {
    pub started: Vec<(u16, SocketAddr)>,
    pub stopped: Vec<u16>,
    pub failed: Vec<(u16, SocketAddr, io::Error)>,
}

impl Listeners {
    pub fn new(gateway: Arc<Gateway>, binds: HashMap<u16, SocketAddr>) -> Self {
        Listeners {
            builder: Arc::new(serve::protocols(&gateway.edge)),
            gateway,
            binds,
            running: BTreeMap::new(),
            drain: DrainTrigger::new(),
        }
    }

    /// The address a Gateway port is bound on when it has no `--bind` override.
    pub fn address_for(&self, port: u16) -> SocketAddr {
        self.binds
            .get(&port)
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], port)))
    }

    /// Binds the ports in `wanted` that are not bound yet and stops those no longer wanted
    /// (or whose protocol changed, which needs a new accept loop).
    pub fn apply(&mut self, wanted: &BTreeMap<u16, ListenerProtocol>) -> ApplyReport {
        let mut report = ApplyReport::default();
        let gone: Vec<u16> = self
            .running
            .iter()
            .filter(|(p, r)| wanted.get(p) != Some(&r.protocol))
            .map(|(p, _)| *p)
            .collect();
        for port in gone {
            if let Some(r) = self.running.remove(&port) {
                // Dropping `r` stops the accept loop and its `closing` trigger, which tells
                // the port's keep-alive connections to finish their requests and close
                // (instead of answering 404 for as long as the client keeps them).
                let _ = r.stop.send(());
                report.stopped.push(port);
            }
        }
        for (&port, &protocol) in wanted {
            if self.running.contains_key(&port) {
                continue;
            }
            let addr = self.address_for(port);
            match bind(addr) {
                Ok(listener) => {
                    let local = listener.local_addr().unwrap_or(addr);
                    let (stop, stopped) = oneshot::channel();
                    let closing = DrainTrigger::new();
                    let drain = [self.drain.watcher(), closing.watcher()];
                    let lot = Lot::new(self.gateway.metrics.parked_connections.clone());
                    tokio::spawn(lot.clone().run(drain.clone()));
                    let gives = Port {
                        port,
                        protocol,
                        drain,
                        lot,
                    };
                    tokio::spawn(accept_loop(
                        self.gateway.clone(),
                        self.builder.clone(),
                        listener,
                        gives,
                        stopped,
                    ));
                    self.running.insert(
                        port,
                        Running {
                            local,
                            protocol,
                            stop,
                            _closing: closing,
                        },
                    );
                    report.started.push((port, local));
                }
                Err(e) => report.failed.push((port, addr, e)),
            }
        }
        report
    }

    /// Gateway port -> the address actually bound.
    pub fn bound(&self) -> BTreeMap<u16, SocketAddr> {
        self.running.iter().map(|(p, r)| (*p, r.local)).collect()
    }

    /// Stops accepting everywhere and waits for connections to finish, up to `deadline`.
    pub async fn drain(mut self, deadline: std::time::Duration) -> bool {
        for (_, r) in std::mem::take(&mut self.running) {
            let _ = r.stop.send(());
        }
        self.drain.drain(deadline).await
    }
}

/// What an accept loop gives each of its connections.
struct Port {
    port: u16,
    protocol: ListenerProtocol,
    drain: [DrainWatch; 2],
    /// Where its parked connections wait.
    lot: Lot,
}

/// A connection the listener took, holding one of its connection slots.
struct Accepted {
    stream: TcpStream,
    peer: SocketAddr,
    port: u16,
    protocol: ListenerProtocol,
    from: FromListener,
}

/// Serves one accepted connection by the listener's protocol, after the PROXY protocol
/// header when the edge expects one. Spawned as is: every layer of future around it would
/// add its arguments to the connection's task, for as long as the connection lives.
async fn serve_accepted(gw: Arc<Gateway>, builder: Arc<serve::Protocols>, accepted: Accepted) {
    let Accepted {
        mut stream,
        mut peer,
        port,
        protocol,
        from,
    } = accepted;
    if gw.edge.proxy_protocol {
        match proxy_protocol::read(&mut stream).await {
            Ok(Some(source)) => peer = source,
            Ok(None) => {}
            Err(e) => {
                // As Envoy's listener filter: no valid header, no connection.
                tracing::debug!(port, %peer, "connection closed: {e}");
                return;
            }
        }
    }
    let local = stream.local_addr().unwrap_or(peer);
    let info = ConnInfo::plain(port, peer, local);
    // The connection's task is as large as the largest of these futures, for as long as the
    // connection lives. TLS's (its handshake and its stream's state) is more than twice plain
    // HTTP's, so it is boxed rather than carried by every plain connection: an idle plain
    // keep-alive connection's task went from 7.6 KB to 3 KB.
    match protocol {
        ListenerProtocol::Http => {
            let _ = stream.set_nodelay(true);
            serve::connection(gw, builder, stream, info, from).await;
        }
        ListenerProtocol::Tls => {
            Box::pin(tls::serve::connection(gw, builder, stream, info, from)).await;
        }
        ListenerProtocol::Tcp => {
            let _slot = from.slot;
            Box::pin(tcp::connection(gw, stream, info)).await;
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn accept_loop(
    gw: Arc<Gateway>,
    builder: Arc<serve::Protocols>,
    listener: TcpListener,
    port: Port,
    mut stopped: oneshot::Receiver<()>,
) {
    let slots = Arc::new(Semaphore::new(gw.edge.max_connections));
    loop {
        tokio::select! {
            _ = &mut stopped => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Over the limit, the new connection is shed at once; the others go on.
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        tracing::debug!(port = port.port, %peer, "connection limit reached; connection closed");
                        drop(stream);
                        continue;
                    };
                    let from = FromListener {
                        drain: port.drain.clone(),
                        lot: port.lot.clone(),
                        slot: Some(slot),
                    };
                    let accepted = Accepted { stream, peer, port: port.port, protocol: port.protocol, from };
                    tokio::spawn(serve_accepted(gw.clone(), builder.clone(), accepted));
                }
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(port = port.port, "accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            }
        }
    }
}
