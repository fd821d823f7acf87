//! The writer thread: takes lines off the queue in batches, writes them through one buffer
//! and flushes when the queue is empty, so a quiet gateway's lines show up at once and a busy
//! one makes few system calls. Blocking file I/O stays on this thread, away from the
//! workers that serve traffic.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::{AccessLogError, Target};

/// Lines written between two checks of the queue at most (bounds the buffer's growth).
const BATCH: usize = 1024;

/// Opens `target` and starts its writer; the sender feeds it. `None` when the log is off.
pub fn spawn(
    target: &Target,
    capacity: usize,
) -> Result<Option<SyncSender<String>>, AccessLogError> {
    let out: Box<dyn Write + Send> = match target {
        Target::Off => return Ok(None),
        Target::Stdout => Box::new(io::stdout()),
        Target::File(path) => Box::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| AccessLogError::Open {
                    path: path.clone(),
                    source,
                })?,
        ),
    };
    let (tx, rx) = sync_channel(capacity);
    std::thread::Builder::new()
        .name("access-log".into())
        .spawn(move || run(&rx, out))
        .map_err(AccessLogError::Thread)?;
    Ok(Some(tx))
}

/// Runs until every sender is gone.
fn run(queue: &Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = BufWriter::with_capacity(64 * 1024, out);
    let mut failing = false;
    while let Ok(first) = queue.recv() {
        let mut result = out.write_all(first.as_bytes());
        for line in queue.try_iter().take(BATCH) {
            result = result.and_then(|()| out.write_all(line.as_bytes()));
        }
        result = result.and_then(|()| out.flush());
        // Say it once per failing stretch, not once per line.
        match result {
            Err(e) if !failing => {
                tracing::warn!("access log write failed: {e}");
                failing = true;
            }
            Err(_) => {}
            Ok(()) => failing = false,
        }
    }
}
