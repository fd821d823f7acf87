//! The client's side of a parkable connection: ends hyper's connection with a made-up end of
//! stream, keeps the socket, and replays what was read ahead of the next hyper connection.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

use crate::activity::Activity;
use crate::tls::prefixed::Prefixed;

/// What HTTP/2 with prior knowledge starts with (RFC 9113, section 3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// The protocol a connection's first bytes speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

/// The client's side of a connection as hyper reads and writes it.
pub struct Parkable<S> {
    /// Replays the bytes read ahead of hyper first: the protocol's first bytes, the byte that
    /// woke a parked connection, what hyper had read but not parsed when it was parked.
    inner: Prefixed<S>,
    activity: Arc<Activity>,
    /// hyper wrote since its last completed flush: it still has bytes to send.
    unflushed: bool,
    /// This side ended hyper's connection with a made-up end of stream: park, do not close.
    parked: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Parkable<S> {
    pub fn new(inner: S, activity: Arc<Activity>) -> Self {
        Parkable {
            inner: Prefixed::new(Vec::new(), inner),
            activity,
            unflushed: false,
            parked: false,
        }
    }

    /// Reads until the first bytes tell HTTP/2's preface from anything else; `None` if the
    /// client closed before sending a byte. The bytes read are given to hyper first.
    pub async fn sniff(&mut self) -> io::Result<Option<Protocol>> {
        let mut head = [0u8; H2_PREFACE.len()];
        let mut n = 0;
        let protocol = loop {
            let read = self
                .inner
                .read(head.get_mut(n..).unwrap_or_default())
                .await?;
            n += read;
            let seen = head.get(..n).unwrap_or_default();
            if read == 0 && n == 0 {
                return Ok(None);
            }
            if read == 0 || !H2_PREFACE.starts_with(seen) {
                break Protocol::Http1;
            }
            if n == H2_PREFACE.len() {
                break Protocol::Http2;
            }
        };
        self.inner.replay(head.get(..n).unwrap_or_default());
        Ok(Some(protocol))
    }

    /// Whether hyper's connection ended because this side parked it.
    pub fn parked(&self) -> bool {
        self.parked
    }

    /// Takes the connection back from a parked hyper connection, with the bytes hyper had
    /// read but not parsed (or, woken from its lot, the byte that woke it).
    pub fn unpark(&mut self, unread: &[u8]) {
        self.parked = false;
        self.unflushed = false;
        // Copied: `unread` is a view of hyper's read buffer, and would keep all of it (8 to
        // 16 KB) allocated, even empty.
        self.inner.replay(unread);
    }

    /// Whether bytes wait to be given to hyper.
    pub fn has_prefix(&self) -> bool {
        self.inner.has_head()
    }

    /// The client's side itself, for the lot; nothing is waiting to be given to hyper
    /// ([`Parkable::has_prefix`]), or it would be lost.
    pub fn into_inner(self) -> S {
        self.inner.into_inner()
    }
}

/// Polls `stream`, parked, for the next request's first byte; `None` if the client closed.
pub fn poll_first_byte<S: AsyncRead + Unpin>(
    stream: &mut S,
    cx: &mut Context<'_>,
) -> Poll<io::Result<Option<u8>>> {
    let mut first = [0u8; 1];
    let mut buf = ReadBuf::new(&mut first);
    ready!(Pin::new(stream).poll_read(cx, &mut buf))?;
    Poll::Ready(Ok(buf.filled().first().copied()))
}

impl<S: AsyncRead + Unpin> AsyncRead for Parkable<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if self.activity.parking() && !self.unflushed => {
                // Nothing to read and nothing left to write: hyper sees the end of the
                // stream and ends its connection, keeping the socket.
                self.parked = true;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Ok(())) if buf.filled().len() > before && self.activity.parking() => {
                // The next request came first: no parking this time.
                self.activity.request_park(false);
                Poll::Ready(Ok(()))
            }
            polled => polled,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Parkable<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.unflushed = true;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let flushed = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Ok(())) = flushed {
            // hyper flushes its connection only once its buffers are written out.
            self.unflushed = false;
        }
        flushed
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.parked {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn sniffed(sent: &[u8]) -> (Option<Protocol>, Vec<u8>) {
        let (mut client, server) = tokio::io::duplex(1024);
        client.write_all(sent).await.unwrap_or_default();
        drop(client);
        let mut io = Parkable::new(server, Activity::new());
        let protocol = io.sniff().await.ok().flatten();
        let mut replayed = Vec::new();
        io.read_to_end(&mut replayed).await.unwrap_or_default();
        (protocol, replayed)
    }

    #[tokio::test]
    async fn the_first_bytes_tell_the_protocol_and_are_read_again() {
        let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        let frames = [preface.as_slice(), b"\0\0\0\x04\0\0\0\0\0"].concat();
        let cases: [(&[u8], Option<Protocol>); 5] = [
            (b"GET / HTTP/1.1\r\n\r\n", Some(Protocol::Http1)),
            (&frames, Some(Protocol::Http2)),
            (b"PRI * HTTP/1.1\r\n", Some(Protocol::Http1)),
            (b"PRI * HT", Some(Protocol::Http1)),
            (b"", None),
        ];
        for (sent, want) in cases {
            let (protocol, replayed) = sniffed(sent).await;
            assert_eq!(protocol, want, "{sent:?}");
            assert_eq!(replayed, sent, "{sent:?}");
        }
    }

    #[tokio::test]
    async fn a_read_ends_the_stream_only_when_parking_with_nothing_unsent() {
        let (mut client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut io = Parkable::new(server, activity.clone());
        let mut buf = [0u8; 16];

        // Data that came before the park is read as usual, and calls the park off.
        client.write_all(b"GET").await.unwrap_or_default();
        activity.request_park(true);
        assert_eq!(io.read(&mut buf).await.ok(), Some(3));
        assert!(!activity.parking() && !io.parked());

        // Written but not flushed: no made-up end while hyper has bytes to send.
        io.write_all(b"HTTP/1.1 200 OK\r\n")
            .await
            .unwrap_or_default();
        activity.request_park(true);
        let read = tokio::time::timeout(Duration::from_millis(50), io.read(&mut buf)).await;
        assert!(read.is_err(), "read ended before the flush: {read:?}");

        // Flushed and quiet: the read ends, the shutdown keeps the socket, and the next
        // byte wakes the connection and is read again.
        io.flush().await.unwrap_or_default();
        assert_eq!(io.read(&mut buf).await.ok(), Some(0));
        assert!(io.parked());
        io.shutdown().await.unwrap_or_default();
        io.unpark(&[]);
        assert!(!io.has_prefix());
        let mut stream = io.into_inner();
        client.write_all(b"POST").await.unwrap_or_default();
        let woken = std::future::poll_fn(|cx| poll_first_byte(&mut stream, cx)).await;
        assert_eq!(woken.ok().flatten(), Some(b'P'));
        let mut io = Parkable::new(stream, Activity::new());
        io.unpark(b"P");
        let mut woke = [0u8; 4];
        io.read_exact(&mut woke).await.unwrap_or_default();
        assert_eq!(&woke, b"POST");
        let mut got = [0u8; 64];
        let n = client.read(&mut got).await.unwrap_or_default();
        assert_eq!(got.get(..n), Some(b"HTTP/1.1 200 OK\r\n".as_slice()));
    }
}
