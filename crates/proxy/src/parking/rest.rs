//! A parked connection's socket, as it waits in its lot.
//!
//! tokio keeps, for every socket in its reactor, a registration of 256 bytes (its readiness
//! state, aligned to a cache line pair), the largest single cost of a parked plain connection.
//! On Linux a plain TCP socket therefore leaves tokio's reactor while it is parked
//! ([`Resting::Detached`]) and is watched by its lot's own epoll set instead, whose entry
//! lives in the kernel; it goes back to tokio when its next request arrives. Other streams
//! (TLS, whose session state must stay with its socket; test streams) stay in tokio's
//! reactor and are polled with a waker ([`Resting::Attached`]).

use std::io;
use std::task::{Context, Poll};

use tokio::io::AsyncRead;

use super::io::poll_first_byte;

/// A parked connection's stream.
pub enum Resting<S> {
    /// In tokio's reactor: polled with the lot's waker. Boxed, so that a detached socket's
    /// parked connection is not as large as a TLS stream (or a tokio socket).
    Attached(Box<S>),
    /// Out of tokio's reactor: in the lot's epoll set, read without a waker.
    #[cfg(target_os = "linux")]
    Detached(std::net::TcpStream),
}

/// A client stream that can leave tokio's reactor while it is parked.
pub trait Detach: Sized {
    /// The stream as it waits in a lot with its own poller.
    fn detach(self) -> io::Result<Resting<Self>> {
        Ok(Resting::Attached(Box::new(self)))
    }

    /// The stream back in tokio's reactor, from what [`Detach::detach`] gave.
    #[cfg(target_os = "linux")]
    fn attach(socket: std::net::TcpStream) -> io::Result<Self> {
        drop(socket);
        Err(io::Error::other("this stream is never detached"))
    }
}

impl Detach for tokio::net::TcpStream {
    #[cfg(target_os = "linux")]
    fn detach(self) -> io::Result<Resting<Self>> {
        // Deregisters it from tokio's reactor; tokio frees its registration soon after.
        // The socket stays non-blocking.
        self.into_std().map(Resting::Detached)
    }

    #[cfg(target_os = "linux")]
    fn attach(socket: std::net::TcpStream) -> io::Result<Self> {
        tokio::net::TcpStream::from_std(socket)
    }
}

impl<S: AsyncRead + Unpin> Resting<S> {
    /// Polls for the next request's first byte; `None` if the client closed. A detached
    /// socket is read at once: its lot's poller, not `cx`, tells when to try again.
    pub fn poll_first_byte(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<u8>>> {
        match self {
            Resting::Attached(stream) => poll_first_byte(stream, cx),
            #[cfg(target_os = "linux")]
            Resting::Detached(socket) => read_first_byte(socket),
        }
    }

    /// The socket the lot's poller watches, if it is out of tokio's reactor.
    #[cfg(target_os = "linux")]
    pub fn detached_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        match self {
            Resting::Attached(_) => None,
            Resting::Detached(socket) => Some(socket.as_fd()),
        }
    }
}

impl<S: Detach> Resting<S> {
    /// The stream, back in tokio's reactor if it had left it.
    pub fn wake(self) -> io::Result<S> {
        match self {
            Resting::Attached(stream) => Ok(*stream),
            #[cfg(target_os = "linux")]
            Resting::Detached(socket) => S::attach(socket),
        }
    }
}

#[cfg(target_os = "linux")]
fn read_first_byte(socket: &mut std::net::TcpStream) -> Poll<io::Result<Option<u8>>> {
    use std::io::Read;
    let mut first = [0u8; 1];
    loop {
        return match socket.read(&mut first) {
            Ok(0) => Poll::Ready(Ok(None)),
            Ok(_) => Poll::Ready(Ok(first.first().copied())),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        };
    }
}

/// TLS keeps its session state with its socket: it stays in tokio's reactor.
impl<S> Detach for tokio_rustls::server::TlsStream<S> {}

/// In-memory streams, for tests and fuzzing.
impl Detach for tokio::io::DuplexStream {}
