//! HTTP/1.1 to replicas, our own client side of it.
//!
//! hyper's client connection costs each upstream connection a task, a
//! request channel and fixed read and write buffers (about 35 KiB held for
//! as long as a request is in flight), and each response two task wake-ups
//! (the connection's task, then the request's). Here the request's own
//! future writes the head and body and reads the response head from the
//! socket, and the response body is read by whoever polls it: a connection
//! is a bare socket between requests and holds only the bytes in flight
//! during one. Parsing is `httparse`'s; what is ours is the framing (RFC
//! 9112 6 and 7) and the connection's life: kept only when the response
//! said so, its body was read to the end and the whole request was sent.
//!
//! Upgrades and h2c replicas stay on hyper's client ([`crate::proxy`]).

mod body;
mod chunked;
mod request;
mod response;

use std::{future::poll_fn, io, task::Poll};

use bytes::BytesMut;
use http::Response;
use tokio::{io::Interest, net::TcpStream};

pub use body::{End, ResponseBody};
pub use request::Outgoing;
pub use response::MAX_HEAD;

use request::SendError;

/// The first read of a response head (heads and small bodies fit).
const HEAD_READ: usize = 4 * 1024;

/// A protocol or socket error on a replica's connection.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("bad response head from the replica: {0}")]
    Head(String),
    #[error("bad chunked response body: {0}")]
    Chunked(&'static str),
    #[error("cannot send the request: {0}")]
    Request(&'static str),
    #[error("the replica closed the connection before the response body ended")]
    Incomplete,
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// How an exchange failed.
#[derive(Debug)]
pub enum Failed {
    /// Nothing of the request was written: it can go on another
    /// connection whatever its method.
    Unsent(Outgoing),
    /// The connection closed (or was reset) before any byte of a response.
    Closed(io::Error),
    /// The request's own body failed (the client's upload).
    Body(axum::BoxError),
    /// Anything else: a bad response, an error after part of one.
    Other(Error),
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unsent(_) => f.write_str("the connection closed before the request was sent"),
            Self::Closed(e) => write!(f, "the replica closed the connection before answering: {e}"),
            Self::Body(e) => write!(f, "the request body failed: {e}"),
            Self::Other(e) => write!(f, "{e}"),
        }
    }
}

/// Sends `out` on `io` and reads the response head. The body keeps sending
/// the request if the replica answered before reading all of it.
pub async fn send(io: TcpStream, mut out: Outgoing) -> Result<Response<ResponseBody>, Failed> {
    let mut buf = BytesMut::new();
    // A write that failed after part of the request went: the replica may
    // still answer (a 413, say) before it closes.
    let mut write_failed: Option<io::Error> = None;
    let head = poll_fn(|cx| {
        if write_failed.is_none() && !out.is_done() {
            match out.poll_send(&io, cx) {
                Poll::Ready(Ok(())) | Poll::Pending => {}
                Poll::Ready(Err(SendError::Body(e))) => return Poll::Ready(Err(Failed::Body(e))),
                Poll::Ready(Err(SendError::Io(e))) if out.unsent() => {
                    return Poll::Ready(Err(Failed::Closed(e)));
                }
                Poll::Ready(Err(SendError::Io(e))) => write_failed = Some(e),
            }
        }
        loop {
            if !buf.is_empty() {
                match response::parse(&mut buf, out.method()) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(Failed::Other(e))),
                }
            }
            match io.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failed::Other(e.into()))),
                Poll::Ready(Ok(())) => {}
            }
            if buf.capacity() - buf.len() < 512 {
                buf.reserve(if buf.is_empty() { HEAD_READ } else { buf.len() });
            }
            match read(&io, &mut buf) {
                Ok(0) if buf.is_empty() => {
                    let e = write_failed
                        .take()
                        .unwrap_or_else(|| io::ErrorKind::UnexpectedEof.into());
                    return Poll::Ready(Err(Failed::Closed(e)));
                }
                Ok(0) => {
                    return Poll::Ready(Err(Failed::Other(Error::Head(
                        "the connection closed inside it".into(),
                    ))));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if buf.is_empty() && is_reset(&e) => {
                    return Poll::Ready(Err(Failed::Closed(e)));
                }
                Err(e) => return Poll::Ready(Err(Failed::Other(e.into()))),
            }
        }
    })
    .await;
    let head = match head {
        Ok(head) => head,
        Err(Failed::Closed(e)) if out.unsent() => {
            drop(e);
            return Err(Failed::Unsent(out));
        }
        Err(e) => return Err(e),
    };
    let keep_alive = head.keep_alive && write_failed.is_none();
    let upload = (!out.is_done() && write_failed.is_none()).then_some(out);
    let (parts, ()) = head.response.into_parts();
    Ok(Response::from_parts(
        parts,
        ResponseBody::new(io, buf, head.framing, keep_alive, upload),
    ))
}

/// Whether `e` is the peer resetting or closing under a write or read.
/// Reads what `io` holds into `buf`'s spare room. A TCP receive returns
/// everything queued up to the room offered, so a read that leaves room
/// found the socket drained: its readiness is cleared then, as HAProxy
/// does after a short read, and the next wait goes to the reactor instead
/// of a receive that only says "would block" (one syscall a request on a
/// kept-alive connection). The clear is tokio's own (`try_io`), keyed to
/// the readiness seen before the read: data that arrived since is not
/// missed.
fn read(io: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let mut got = None;
    let read = io.try_io(Interest::READABLE, || {
        let room = buf.capacity() - buf.len();
        let n = io.try_read_buf(buf)?;
        got = Some(n);
        if n > 0 && n < room {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(n)
        }
    });
    match (read, got) {
        (Err(e), Some(n)) if e.kind() == io::ErrorKind::WouldBlock => Ok(n),
        (read, _) => read,
    }
}

fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::ConnectionAborted
    )
}

#[cfg(test)]
mod tests {
    use std::task::{Context, Waker};

    use tokio::{io::AsyncWriteExt as _, net::TcpListener};

    use super::*;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let ours = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        let (theirs, _) = listener.accept().await.expect("accept");
        (ours, theirs)
    }

    fn ready_now(io: &TcpStream) -> bool {
        io.poll_read_ready(&mut Context::from_waker(Waker::noop()))
            .is_ready()
    }

    #[tokio::test]
    async fn a_short_read_clears_readiness_and_new_data_brings_it_back() {
        let (ours, mut theirs) = pair().await;
        theirs.write_all(b"hello").await.expect("write");
        ours.readable().await.expect("readable");
        let mut buf = BytesMut::with_capacity(64);
        assert_eq!(read(&ours, &mut buf).expect("read"), 5);
        // Drained: the next wait is the reactor's, with no receive first.
        assert!(!ready_now(&ours));
        theirs.write_all(b" again").await.expect("write");
        tokio::time::timeout(std::time::Duration::from_secs(5), ours.readable())
            .await
            .expect("the new data is announced")
            .expect("readable");
        assert_eq!(read(&ours, &mut buf).expect("read"), 6);
        assert_eq!(&buf[..], b"hello again");
    }

    #[tokio::test]
    async fn a_read_that_fills_the_room_keeps_readiness() {
        let (ours, mut theirs) = pair().await;
        theirs.write_all(&[b'x'; 100]).await.expect("write");
        ours.readable().await.expect("readable");
        let mut buf = BytesMut::with_capacity(64);
        let room = buf.capacity();
        assert_eq!(read(&ours, &mut buf).expect("read"), room);
        // More may be queued: the socket is read again before any wait.
        assert!(ready_now(&ours));
        buf.reserve(256);
        assert_eq!(read(&ours, &mut buf).expect("read"), 100 - room);
    }

    #[tokio::test]
    async fn end_of_stream_is_read_as_zero_and_stays_ready() {
        let (ours, theirs) = pair().await;
        drop(theirs);
        ours.readable().await.expect("readable");
        let mut buf = BytesMut::with_capacity(64);
        assert_eq!(read(&ours, &mut buf).expect("read"), 0);
        assert!(ready_now(&ours));
    }
}
