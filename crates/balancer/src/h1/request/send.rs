//! Sending an [`Outgoing`] request: what is queued goes out in vectored
//! writes, so a head and a small body leave in one system call, and the
//! body is read ahead of the socket. While more of a `Content-Length` body
//! is still to come, writes carry `MSG_MORE`, as HAProxy's do while a
//! message is unfinished: the kernel then sends whole segments rather than
//! one per write (an upload arrives in pieces of whatever one read of the
//! client's socket gave), each segment being a wake-up of the replica, and
//! holds a partial one until the next write or its cork limit (200 ms on
//! Linux).

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use hyper::body::Body as _;
use tokio::{io::Interest, net::TcpStream};

use super::{Framing, Outgoing};

/// How much of the body is read ahead of the socket: enough for large
/// writes, bounded so a slow replica holds back a fast client.
const AHEAD: usize = 64 * 1024;

/// Most slices handed to one `writev`.
const SLICES: usize = 16;

/// Why sending failed.
#[derive(Debug)]
pub enum SendError {
    /// The request's own body failed (the client's upload).
    Body(axum::BoxError),
    /// The socket failed.
    Io(io::Error),
}

impl Outgoing {
    /// Writes what it can to `io`, reading the body ahead; ready once the
    /// whole request has been written.
    pub fn poll_send(
        &mut self,
        io: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            self.read_ahead(cx)?;
            if self.queue.is_empty() {
                return if self.body.is_none() {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            ready!(io.poll_write_ready(cx)).map_err(SendError::Io)?;
            let mut slices = [IoSlice::new(&[]); SLICES];
            let mut count = 0;
            for (slot, bytes) in slices.iter_mut().zip(&self.queue) {
                *slot = IoSlice::new(bytes);
                count += 1;
            }
            let sent = if self.more_to_come() {
                io.try_io(Interest::WRITABLE, || {
                    socket2::SockRef::from(io)
                        .send_vectored_with_flags(&slices[..count], libc::MSG_MORE)
                })
            } else {
                io.try_write_vectored(&slices[..count])
            };
            match sent {
                Ok(n) => self.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(SendError::Io(e))),
            }
        }
    }

    /// Whether bytes of a `Content-Length` body are still to be read after
    /// what is queued. Chunked bodies are left out: they are how a client
    /// streams, and a piece held back would wait for the next.
    fn more_to_come(&self) -> bool {
        self.body.is_some() && matches!(self.framing, Framing::Length(left) if left > 0)
    }

    /// Moves body frames onto the queue, framed, until [`AHEAD`] bytes are
    /// queued or the body has nothing ready.
    fn read_ahead(&mut self, cx: &mut Context<'_>) -> Result<(), SendError> {
        while let Some(body) = &mut self.body {
            if self.queue.iter().map(Bytes::len).sum::<usize>() >= AHEAD
                || self.queue.len() + 3 > SLICES
            {
                return Ok(());
            }
            let frame = match Pin::new(&mut *body).poll_frame(cx) {
                Poll::Pending => return Ok(()),
                Poll::Ready(Some(Err(e))) => return Err(SendError::Body(e.into())),
                Poll::Ready(Some(Ok(frame))) => frame,
                Poll::Ready(None) => {
                    self.body = None;
                    match self.framing {
                        Framing::Length(0) => {}
                        Framing::Length(_) => {
                            return Err(SendError::Body(
                                "the request body ended short of its Content-Length".into(),
                            ));
                        }
                        Framing::Chunked => self.queue.push_back(Bytes::from_static(b"0\r\n\r\n")),
                    }
                    return Ok(());
                }
            };
            match frame.into_data() {
                Ok(data) if data.is_empty() => {}
                Ok(data) => match &mut self.framing {
                    Framing::Length(left) => {
                        let len = data.len() as u64;
                        if len > *left {
                            return Err(SendError::Body(
                                "the request body is longer than its Content-Length".into(),
                            ));
                        }
                        *left -= len;
                        self.queue.push_back(data);
                        if *left == 0 {
                            self.body = None;
                        }
                    }
                    Framing::Chunked => {
                        self.queue
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.queue.push_back(data);
                        self.queue.push_back(Bytes::from_static(b"\r\n"));
                    }
                },
                Err(frame) => {
                    if let (Ok(trailers), Framing::Chunked) = (frame.into_trailers(), self.framing)
                    {
                        let mut last = BytesMut::from(&b"0\r\n"[..]);
                        for (name, value) in &trailers {
                            last.put_slice(name.as_str().as_bytes());
                            last.put_slice(b": ");
                            last.put_slice(value.as_bytes());
                            last.put_slice(b"\r\n");
                        }
                        last.put_slice(b"\r\n");
                        self.queue.push_back(last.freeze());
                        self.body = None;
                    }
                }
            }
        }
        Ok(())
    }

    fn advance(&mut self, mut n: usize) {
        self.written += n as u64;
        while n > 0 {
            let Some(front) = self.queue.front_mut() else {
                return;
            };
            if n < front.len() {
                front.advance(n);
                return;
            }
            n -= front.len();
            self.queue.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use http::Request;

    use super::*;

    /// A body fed by the test: each `Bytes` sent is one frame.
    fn fed() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
        use tokio_stream::StreamExt as _;
        let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(Ok::<_, std::io::Error>);
        (tx, Body::from_stream(stream))
    }

    #[test]
    fn more_is_to_come_only_inside_a_content_length_body() {
        let post = |len: Option<&str>, body: Body| {
            let mut req = Request::post("/");
            if let Some(len) = len {
                req = req.header("content-length", len);
            }
            Outgoing::new(req.body(body).expect("req")).expect("encodes")
        };
        let (_tx, body) = fed();
        assert!(post(Some("10"), body).more_to_come());
        let (_tx, body) = fed();
        assert!(!post(None, body).more_to_come(), "chunked: a stream");
        assert!(!post(Some("0"), Body::empty()).more_to_come());
    }

    /// What is written with `MSG_MORE` is not held for long when the client
    /// stalls in the middle of its body: the kernel lets it go (200 ms on
    /// Linux), so the replica is never left waiting on the proxy for bytes
    /// the proxy has. Then the rest arrives, and all of it in order.
    #[tokio::test]
    async fn a_stalled_body_still_reaches_the_replica_and_arrives_whole() {
        use tokio::io::AsyncReadExt as _;
        let (io, mut replica) = crate::conns::testing::tcp_pair().await;
        // As the pool's connections are.
        io.set_nodelay(true).expect("nodelay");
        let (tx, body) = fed();
        let req = Request::post("/up")
            .header("content-length", "8")
            .body(body)
            .expect("req");
        let mut out = Outgoing::new(req).expect("encodes");
        let send = tokio::spawn(async move {
            std::future::poll_fn(|cx| out.poll_send(&io, cx))
                .await
                .map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>(io)
        });
        tx.send(Bytes::from("abcd")).await.expect("feed");
        let mut got = Vec::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        while !got.ends_with(b"abcd") {
            let mut buf = [0u8; 256];
            let n = tokio::time::timeout_at(deadline, replica.read(&mut buf))
                .await
                .expect("the first half reaches the replica while the client stalls")
                .expect("read");
            got.extend_from_slice(&buf[..n]);
        }
        tx.send(Bytes::from("efgh")).await.expect("feed");
        let _io = send.await.expect("join").expect("sent");
        let mut rest = [0u8; 4];
        replica.read_exact(&mut rest).await.expect("rest");
        got.extend_from_slice(&rest);
        let text = String::from_utf8(got).expect("utf-8");
        assert!(text.starts_with("POST /up HTTP/1.1\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\nabcdefgh"), "{text}");
    }
}
