//! Watching the configuration paths. Folders are watched (not files), because editors and
//! Kubernetes volume updates replace files by rename; bursts of events are debounced into one
//! reload.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time after the last event before reloading; keeps a multi-file save to one reload
/// while staying well inside the promise of "live within 1 s".
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// Starts watching; each burst of changes sends one `()` on the returned channel.
pub fn watch(roots: &[PathBuf]) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
        {
            let _ = raw_tx.send(());
        }
    })?;
    for root in roots {
        let dir = watched_dir(root);
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        while raw_rx.recv().await.is_some() {
            // Swallow the rest of the burst.
            while let Ok(Some(())) = tokio::time::timeout(DEBOUNCE, raw_rx.recv()).await {}
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok((watcher, rx))
}

fn watched_dir(root: &Path) -> PathBuf {
    if root.is_dir() {
        root.to_path_buf()
    } else {
        match root.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}
