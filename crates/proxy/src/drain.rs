//! Draining: on shutdown, listeners stop accepting, every connection is asked to finish its
//! in-flight requests and close, and the process waits for them up to a deadline.

use std::time::Duration;

use tokio::sync::{mpsc, watch};

/// Held by the process; triggers and awaits the drain.
pub struct DrainTrigger {
    signal: watch::Sender<bool>,
    done_tx: Option<mpsc::Sender<()>>,
    done_rx: mpsc::Receiver<()>,
}

/// Held by each listener and connection, and by the tunnels (WebSocket, CONNECT) that outlive
/// their HTTP connection. Dropping it tells the trigger the holder is done.
#[derive(Clone)]
pub struct DrainWatch {
    signal: watch::Receiver<bool>,
    _alive: Option<mpsc::Sender<()>>,
}

impl std::fmt::Debug for DrainWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainWatch")
            .field("draining", &self.is_draining())
            .finish()
    }
}

impl Default for DrainTrigger {
    fn default() -> Self {
        Self::new()
    }
}

impl DrainTrigger {
    pub fn new() -> Self {
        let (signal, _) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        DrainTrigger {
            signal,
            done_tx: Some(done_tx),
            done_rx,
        }
    }

    pub fn watcher(&self) -> DrainWatch {
        DrainWatch {
            signal: self.signal.subscribe(),
            _alive: self.done_tx.clone(),
        }
    }

    /// Starts the drain and waits until every watcher is dropped or `deadline` passes.
    /// Returns whether everything finished in time.
    pub async fn drain(mut self, deadline: Duration) -> bool {
        self.signal.send_replace(true);
        self.done_tx = None;
        tokio::time::timeout(deadline, self.done_rx.recv())
            .await
            .is_ok()
    }
}

impl DrainWatch {
    /// Resolves once draining has started, or the trigger is gone.
    pub async fn started(&mut self) {
        let _ = self.signal.wait_for(|d| *d).await;
    }

    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }
}
