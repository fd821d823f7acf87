//! The writer thread: takes lines off the queue in batches, writes them through one buffer
//! and flushes when the queue is empty, so a quiet gateway's lines show up at once and a busy
//! one makes few system calls. Blocking file I/O stays on this thread, away from the
//! workers that serve traffic.

use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::time::Duration;

/// How long the writer lets lines gather between batches; lines reach the log this much later
/// at most.
const GATHER: Duration = Duration::from_millis(10);

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
        let mut written = 1;
        for line in queue.try_iter().take(BATCH) {
            result = result.and_then(|()| out.write_all(line.as_bytes()));
            written += 1;
        }
        result = result.and_then(|()| out.flush());
        if written <= BATCH {
            // Let lines gather before the next batch: a writer blocked in `recv` must be woken
            // by the request that queues a line, and one wake-up (and one write) per request
            // cost more than formatting the line.
            std::thread::sleep(GATHER);
        }
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
