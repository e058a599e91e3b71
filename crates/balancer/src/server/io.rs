//! A client connection's socket, with the client-side timeouts that hyper
//! cannot see from where it sits.
//!
//! A client must keep making progress at what it is expected to do:
//! - between requests (none in flight, nothing read since the last one
//!   ended) it may stay silent for `--client-idle-timeout`;
//! - once the first byte of a request has arrived, the whole head must
//!   arrive within `--header-read-timeout` (slowloris);
//! - a write the client does not read may wait `--send-timeout` at most (a
//!   client that stops reading would otherwise pin its response, and the
//!   upstream connection behind it, forever).
//!
//! Bodies have their own bounds (`proxy::upload`). Whether a request is in
//! flight comes from [`Activity`]. The same deadlines hold while the
//! connection is parked (`server::h1`), so parking changes what an
//! idle connection costs, not how long it may idle.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::{Buf as _, Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

use crate::activity::Activity;

/// The client-side timeouts of a connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    pub idle: Duration,
    pub header_read: Duration,
    pub send: Duration,
    /// Longest pause in an upload (`--client-body-timeout`): bounds what
    /// is left of a body read after its response has gone.
    pub body: Duration,
}

/// A socket with the client-side timeouts of the module doc.
pub struct ClientIo<T> {
    inner: T,
    timeouts: ClientTimeouts,
    activity: Arc<Activity>,
    /// When the first byte of the request head now being read arrived.
    head_started: Option<Instant>,
    /// [`Activity::started`] when `head_started` was set: once it moves on,
    /// that head has been parsed (hyper need not read again while the
    /// request is in flight, so this is how the timer learns of it).
    head_of: u32,
    /// Fires at the read deadline (head or idle).
    read_timer: Pin<Box<Sleep>>,
    send: SendTimer,
    /// Bytes read before hyper (re)took the connection, given to it first:
    /// the first bytes, or what hyper had read when it let go.
    replay: Bytes,
}

impl<T> ClientIo<T> {
    /// `accepted`: when the connection was accepted, where its first
    /// head's timeout starts; `first`: what was read from it since.
    pub(crate) fn new(
        inner: T,
        timeouts: ClientTimeouts,
        activity: Arc<Activity>,
        accepted: Instant,
        first: Bytes,
    ) -> Self {
        let now = Instant::now();
        let head_of = activity.started();
        Self {
            inner,
            timeouts,
            activity,
            // A new connection owes its first request head: slowloris is
            // bounded from the accept.
            head_started: Some(accepted),
            head_of,
            read_timer: Box::pin(tokio::time::sleep_until(accepted + timeouts.header_read)),
            send: SendTimer {
                blocked: None,
                timer: Box::pin(tokio::time::sleep_until(now + timeouts.send)),
            },
            replay: first,
        }
    }

    /// Gives `read` back, to be read again before anything else: what
    /// hyper had read when it let go of the connection. Copied: `read` is
    /// a view of hyper's whole read buffer (16 KiB), which it would keep.
    pub(crate) fn replay(&mut self, read: &[u8]) {
        self.replay = match (read.is_empty(), self.replay.is_empty()) {
            (true, _) => std::mem::take(&mut self.replay),
            (false, true) => Bytes::copy_from_slice(read),
            (false, false) => {
                // hyper read these first; what it had not asked for follows.
                let mut both = BytesMut::with_capacity(read.len() + self.replay.len());
                both.extend_from_slice(read);
                both.extend_from_slice(&self.replay);
                both.freeze()
            }
        };
    }

    /// Turns waiting for the client's next bytes into an error once the
    /// deadline of [`Self::read_deadline`] has passed.
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let Some((deadline, why)) = self.read_deadline() else {
            return Poll::Pending;
        };
        if self.read_timer.deadline() != deadline {
            self.read_timer.as_mut().reset(deadline);
        }
        ready!(self.read_timer.as_mut().poll(cx));
        Poll::Ready(timed_out(why))
    }

    /// When waiting for the client's next bytes stops being acceptable,
    /// and why; `None` while a request is in flight (its body has its own
    /// bounds, and the client may wait for the response).
    fn read_deadline(&mut self) -> Option<(Instant, &'static str)> {
        if self.activity.busy() {
            return None;
        }
        if self.activity.started() != self.head_of {
            // The head being timed became a request, which has ended: the
            // connection is idle between requests, not owing a head.
            self.head_started = None;
        }
        Some(match self.head_started {
            Some(at) => (
                at + self.timeouts.header_read,
                "request head not received in time",
            ),
            None => (
                self.activity.idle_since() + self.timeouts.idle,
                "idle connection timed out",
            ),
        })
    }
}

fn timed_out(why: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, why)
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.replay.is_empty() {
            // Read earlier, timed as it was then.
            let n = this.replay.len().min(buf.remaining());
            buf.put_slice(&this.replay[..n]);
            this.replay.advance(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if this.activity.busy() {
                    // Bytes of a request in flight (its body), or the next
                    // one pipelined behind it: its head timer starts when
                    // hyper asks for more of it with nothing in flight.
                    this.head_started = None;
                } else if buf.filled().len() > before
                    && (this.head_started.is_none() || this.activity.started() != this.head_of)
                {
                    this.head_started = Some(Instant::now());
                    this.head_of = this.activity.started();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if this.activity.busy() {
                    this.head_started = None;
                    return Poll::Pending;
                }
                this.poll_deadline(cx).map(Err)
            }
        }
    }
}

/// How long a write has waited for the client to read, failing it once
/// that is `--send-timeout`.
struct SendTimer {
    /// Since when a write has been waiting for the client to read.
    blocked: Option<Instant>,
    timer: Pin<Box<Sleep>>,
}

impl SendTimer {
    /// Turns a write that made no progress into an error once it has
    /// waited `timeout`.
    fn on_write<R>(
        &mut self,
        timeout: Duration,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        match result {
            Poll::Ready(r) => {
                self.blocked = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let since = *self.blocked.get_or_insert_with(Instant::now);
                let deadline = since + timeout;
                if self.timer.deadline() != deadline {
                    self.timer.as_mut().reset(deadline);
                }
                ready!(self.timer.as_mut().poll(cx));
                Poll::Ready(Err(timed_out("client did not read its response in time")))
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> ClientIo<T> {
    fn on_write<R>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        self.send.on_write(self.timeouts.send, cx, result)
    }
}

impl ClientIo<TcpStream> {
    /// The client-side timeouts it was made with.
    pub(crate) fn timeouts(&self) -> ClientTimeouts {
        self.timeouts
    }

    /// The connection taken apart for a request whose body is still
    /// arriving while its response may already be going out (a replica
    /// may answer, even stream its answer, before it has read the whole
    /// upload): the socket to read the body from, the bytes read earlier
    /// and not yet given out (read before the socket), and the write side,
    /// still under the send timeout. The read deadlines do not apply while
    /// a request is in flight, so reading around them changes nothing.
    pub(crate) fn split_for_body(&mut self) -> (&TcpStream, Bytes, SendHalf<'_>) {
        let replay = std::mem::take(&mut self.replay);
        let send = SendHalf {
            tcp: &self.inner,
            timeout: self.timeouts.send,
            timer: &mut self.send,
        };
        (&self.inner, replay, send)
    }
}

/// The write side of a [`ClientIo`] split by [`ClientIo::split_for_body`].
pub(crate) struct SendHalf<'a> {
    tcp: &'a TcpStream,
    timeout: Duration,
    timer: &'a mut SendTimer,
}

impl SendHalf<'_> {
    /// Writes with `write` once the socket is writable, as tokio's own
    /// `TcpStream` does, under the send timeout.
    fn poll_with<R>(
        &mut self,
        cx: &mut Context<'_>,
        write: impl Fn(&TcpStream) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        let tcp = self.tcp;
        let result = loop {
            match tcp.poll_write_ready(cx) {
                Poll::Pending => break Poll::Pending,
                Poll::Ready(Err(e)) => break Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => match write(tcp) {
                    // Readiness is cleared: the next poll waits for it.
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    done => break Poll::Ready(done),
                },
            }
        };
        self.timer.on_write(self.timeout, cx, result)
    }
}

impl AsyncWrite for SendHalf<'_> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().poll_with(cx, |tcp| tcp.try_write(buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.get_mut()
            .poll_with(cx, |tcp| tcp.try_write_vectored(bufs))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Nothing is buffered here: a write is the socket's.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(socket2::SockRef::from(self.tcp).shutdown(std::net::Shutdown::Write))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.on_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_flush(cx);
        this.on_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt as _;

    use super::*;

    fn io(first: &'static [u8], rest: &'static [u8]) -> ClientIo<&'static [u8]> {
        let long = Duration::from_secs(60);
        let timeouts = ClientTimeouts {
            idle: long,
            header_read: long,
            send: long,
            body: long,
        };
        let first = Bytes::from_static(first);
        ClientIo::new(rest, timeouts, Activity::new(1), Instant::now(), first)
    }

    #[tokio::test]
    async fn bytes_given_back_are_read_before_the_rest_in_order() {
        let mut io = io(b"GET / HT", b" then the socket");
        let mut two = [0u8; 2];
        io.read_exact(&mut two).await.expect("read");
        assert_eq!(&two, b"GE");
        // hyper let go having read these, but not the first bytes' end.
        io.replay(b"<hyper's>");
        io.replay(b"");
        let mut all = String::new();
        io.read_to_string(&mut all).await.expect("read");
        assert_eq!(all, "<hyper's>T / HT then the socket");
    }
}
