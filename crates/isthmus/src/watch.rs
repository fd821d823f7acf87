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

/// Starts watching; each burst of changes sends one `()` on the returned channel. Changes
/// to the files in `ignore` alone (the gateway's own access log, which may live in a watched
/// folder) are not changes of the configuration.
pub fn watch(
    roots: &[PathBuf],
    ignore: &[PathBuf],
) -> notify::Result<(RecommendedWatcher, mpsc::Receiver<()>)> {
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel::<()>();
    let ignore: Vec<PathBuf> = ignore.iter().filter_map(|p| absolute(p)).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
            && !only_ignored(&e.paths, &ignore)
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

fn absolute(p: &Path) -> Option<PathBuf> {
    std::path::absolute(p).ok()
}

fn only_ignored(paths: &[PathBuf], ignore: &[PathBuf]) -> bool {
    !paths.is_empty()
        && paths
            .iter()
            .all(|p| absolute(p).is_some_and(|p| ignore.contains(&p)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_on_ignored_files_alone_are_not_changes() {
        let log = PathBuf::from("/etc/gw/access.log");
        let ignore = [log.clone()];
        assert!(only_ignored(std::slice::from_ref(&log), &ignore));
        assert!(!only_ignored(
            &[log.clone(), PathBuf::from("/etc/gw/vs.yaml")],
            &ignore
        ));
        assert!(!only_ignored(&[PathBuf::from("/etc/gw/vs.yaml")], &ignore));
        // An event without paths may be anything (a rescan): reload.
        assert!(!only_ignored(&[], &ignore));
    }
}
