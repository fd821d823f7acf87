//! A lot's own epoll set, for the parked sockets that left tokio's reactor
//! ([`super::rest::Resting::Detached`]): the kernel keeps their entries, and the lot's task
//! learns which became readable from one file descriptor in tokio's reactor.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::buffer::spare_capacity;
use rustix::event::{Timespec, epoll};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Events taken from the kernel per pass of the lot.
pub const BATCH: usize = 256;

pub struct Poller {
    epoll: AsyncFd<OwnedFd>,
}

impl Poller {
    /// A poller in the current runtime's reactor; `None` outside a runtime with I/O.
    pub fn new() -> Option<Self> {
        tokio::runtime::Handle::try_current().ok()?;
        let made = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(io::Error::from)
            .and_then(register);
        match made {
            Ok(epoll) => Some(Poller { epoll }),
            Err(e) => {
                tracing::warn!("parked sockets stay in tokio's reactor: no epoll set: {e}");
                None
            }
        }
    }

    /// Watches `socket` for its next bytes (or its end), reported as `key`. Level-triggered:
    /// a socket left readable is reported again.
    pub fn add(&self, socket: BorrowedFd<'_>, key: usize) -> io::Result<()> {
        let data = epoll::EventData::new_u64(key as u64);
        epoll::add(self.epoll.get_ref(), socket, data, epoll::EventFlags::IN)?;
        Ok(())
    }

    /// Stops watching `socket`, before it goes back to tokio's reactor. A closed socket
    /// leaves the set by itself.
    pub fn remove(&self, socket: BorrowedFd<'_>) -> io::Result<()> {
        epoll::delete(self.epoll.get_ref(), socket)?;
        Ok(())
    }

    /// Waits until watched sockets are ready, and adds their keys to `keys`.
    pub async fn ready(&self, keys: &mut Vec<usize>) -> io::Result<()> {
        loop {
            let mut guard = self.epoll.readable().await?;
            // `WouldBlock` (nothing ready) clears the readiness tokio reported.
            if let Ok(taken) = guard.try_io(|epoll| take_ready(epoll.get_ref().as_fd(), keys)) {
                return taken;
            }
        }
    }
}

/// Puts the epoll set in tokio's reactor.
///
/// tokio 1.54 deprecated this safe constructor for `unsafe AsyncFd::register_with_interest`,
/// whose contract is that the descriptor stays open and the same while registered: objects
/// whose `as_raw_fd` could change made the safe one unsound. An `OwnedFd` owned by the
/// `AsyncFd` meets that contract, and the workspace denies `unsafe` outside its allocator, so the safe one stays.
#[allow(deprecated)]
fn register(epoll: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    AsyncFd::with_interest(epoll, Interest::READABLE)
}

/// Takes up to [`BATCH`] ready sockets' keys without waiting; `WouldBlock` if none was ready.
/// Once: the set is level-triggered, so asking again before the lot reads the sockets would
/// report the same ones (the next call, after the lot's pass, takes the rest).
fn take_ready(epoll: BorrowedFd<'_>, keys: &mut Vec<usize>) -> io::Result<()> {
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut events = Vec::with_capacity(BATCH);
    let n = loop {
        match epoll::wait(epoll, spare_capacity(&mut events), Some(&now)) {
            Ok(n) => break n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    keys.extend(events.iter().map(|event| {
        let data = event.data;
        usize::try_from(data.u64()).unwrap_or(usize::MAX)
    }));
    Ok(())
}
