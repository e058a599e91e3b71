//! A request on its way to a replica: the head written once into one
//! buffer, and the body framed as hyper's client would frame it (a known
//! length as `Content-Length`, an unknown one chunked, none for a GET
//! without a body), sent by [`Outgoing::poll_send`] with vectored writes so
//! a head and a small body leave in one system call. While more of a
//! `Content-Length` body is still to come, writes carry `MSG_MORE`, as
//! HAProxy's do while a message is unfinished: the kernel then sends whole
//! segments rather than one per write (an upload is read from the client
//! 16 KiB at a time), each segment being a wake-up of the replica, and
//! holds a partial one until the next write or its cork limit (200 ms on
//! Linux).

use std::{
    collections::VecDeque,
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::body::Body;
use bytes::{Buf as _, BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, Method, header};
use hyper::body::Body as _;
use tokio::{io::Interest, net::TcpStream};

use super::Error;

/// How much of the body is read ahead of the socket: enough for large
/// writes, bounded so a slow replica holds back a fast client.
const AHEAD: usize = 64 * 1024;

/// Most slices handed to one `writev`.
const SLICES: usize = 16;

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// `Content-Length`: this many bytes still to come from the body.
    Length(u64),
    Chunked,
}

/// A request being sent: what is queued for the socket, and the body
/// still to read.
pub struct Outgoing {
    method: Method,
    queue: VecDeque<Bytes>,
    body: Option<Body>,
    framing: Framing,
    /// Bytes written so far: none means the replica saw nothing of it.
    written: u64,
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("method", &self.method)
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// Why sending failed.
#[derive(Debug)]
pub enum SendError {
    /// The request's own body failed (the client's upload).
    Body(axum::BoxError),
    /// The socket failed.
    Io(io::Error),
}

impl Outgoing {
    /// `req` with an origin-form target, encoded for the wire (the tests'
    /// shorthand for [`Outgoing::encode`]).
    #[cfg(test)]
    pub fn new(req: http::Request<Body>) -> Result<Self, Error> {
        let (parts, body) = req.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        Self::encode(&parts.method, target, &parts.headers, None, body)
    }

    /// A request encoded for the wire from its borrowed head: the caller
    /// keeps the headers for another attempt, so none is copied to send
    /// one. `target` is origin-form; `host` is written when the headers
    /// have no `Host`.
    pub fn encode(
        method: &Method,
        target: &str,
        headers: &HeaderMap,
        host: Option<&str>,
        body: Body,
    ) -> Result<Self, Error> {
        let end = body.is_end_stream();
        let (framing, added) = framing(headers, method, end, body.size_hint().exact())?;
        let host = host.filter(|_| !headers.contains_key(header::HOST));
        let size = method.as_str().len()
            + target.len()
            + 16
            + headers
                .iter()
                .map(|(k, v)| k.as_str().len() + v.len() + 4)
                .sum::<usize>()
            + host.map_or(0, |h| h.len() + 8)
            + if added.is_some() { 40 } else { 0 };
        let mut head = BytesMut::with_capacity(size);
        head.put_slice(method.as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(target.as_bytes());
        head.put_slice(b" HTTP/1.1\r\n");
        for (name, value) in headers {
            // Transfer-Encoding is hop-by-hop: whatever the client sent is
            // not this connection's.
            if name == header::TRANSFER_ENCODING {
                continue;
            }
            line(&mut head, name.as_str(), value.as_bytes());
        }
        if let Some(host) = host {
            line(&mut head, "host", host.as_bytes());
        }
        match added {
            Some(Framing::Length(len)) => {
                line(
                    &mut head,
                    "content-length",
                    http::HeaderValue::from(len).as_bytes(),
                );
            }
            Some(Framing::Chunked) => line(&mut head, "transfer-encoding", b"chunked"),
            None => {}
        }
        head.put_slice(b"\r\n");
        let mut queue = VecDeque::with_capacity(2);
        queue.push_back(head.freeze());
        let nothing_to_send = end || framing == Framing::Length(0);
        Ok(Self {
            method: method.clone(),
            queue,
            body: (!nothing_to_send).then_some(body),
            framing,
            written: 0,
        })
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    /// Whether nothing of it has reached the socket.
    pub fn unsent(&self) -> bool {
        self.written == 0
    }

    /// Whether all of it has been written.
    pub fn is_done(&self) -> bool {
        self.body.is_none() && self.queue.is_empty()
    }

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

fn line(head: &mut BytesMut, name: &str, value: &[u8]) {
    head.put_slice(name.as_bytes());
    head.put_slice(b": ");
    head.put_slice(value);
    head.put_slice(b"\r\n");
}

/// The body's framing as hyper's client sets it, and the framing header to
/// add: a `Content-Length` the client sent is kept, a known size becomes
/// one, an unknown size is chunked unless the method never has a body.
fn framing(
    headers: &HeaderMap,
    method: &Method,
    end: bool,
    exact: Option<u64>,
) -> Result<(Framing, Option<Framing>), Error> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or(Error::Request("bad Content-Length"))
        })
        .transpose()?;
    if end {
        return Ok((Framing::Length(0), None));
    }
    if let Some(len) = declared {
        return Ok((Framing::Length(len), None));
    }
    if let Some(len) = exact {
        return Ok((Framing::Length(len), Some(Framing::Length(len))));
    }
    if matches!(*method, Method::GET | Method::HEAD | Method::CONNECT) {
        return Ok((Framing::Length(0), None));
    }
    Ok((Framing::Chunked, Some(Framing::Chunked)))
}

#[cfg(test)]
mod tests {
    use http::Request;

    use super::*;

    fn head(req: Request<Body>) -> String {
        let out = Outgoing::new(req).expect("encodes");
        String::from_utf8(out.queue[0].to_vec()).expect("utf-8")
    }

    #[test]
    fn a_get_has_no_framing_headers() {
        let req = Request::get("/a?b=c")
            .header("host", "x")
            .body(Body::empty())
            .expect("req");
        assert_eq!(head(req), "GET /a?b=c HTTP/1.1\r\nhost: x\r\n\r\n");
    }

    #[test]
    fn a_known_size_becomes_content_length() {
        let req = Request::post("/").body(Body::from("abc")).expect("req");
        let out = Outgoing::new(req).expect("encodes");
        assert!(String::from_utf8_lossy(&out.queue[0]).contains("content-length: 3\r\n"));
        assert_eq!(out.framing, Framing::Length(3));
    }

    #[test]
    fn an_unknown_size_is_chunked_and_a_sent_length_kept() {
        let stream = || {
            Body::from_stream(futures_util::stream::iter([Ok::<_, std::io::Error>(
                Bytes::from("x"),
            )]))
        };
        let req = Request::post("/")
            .header("transfer-encoding", "gzip")
            .body(stream())
            .expect("req");
        let text = head(req);
        assert!(
            text.contains("transfer-encoding: chunked\r\n") && !text.contains("gzip"),
            "{text}"
        );
        let req = Request::put("/")
            .header("content-length", "1")
            .body(stream())
            .expect("req");
        assert!(!head(req).contains("chunked"));
        let req = Request::put("/")
            .header("content-length", "x")
            .body(stream())
            .expect("req");
        assert!(Outgoing::new(req).is_err());
    }

    #[test]
    fn encoding_borrows_the_head_and_names_the_host_only_when_missing() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", "1".parse().expect("value"));
        headers.insert("transfer-encoding", "gzip".parse().expect("value"));
        let before = headers.clone();
        let encode = |headers: &HeaderMap| {
            let out = Outgoing::encode(
                &Method::POST,
                "/p",
                headers,
                Some("10.0.0.1:80"),
                Body::from("hi"),
            )
            .expect("encodes");
            String::from_utf8(out.queue[0].to_vec()).expect("utf-8")
        };
        assert_eq!(
            encode(&headers),
            "POST /p HTTP/1.1\r\nx-a: 1\r\nhost: 10.0.0.1:80\r\ncontent-length: 2\r\n\r\n"
        );
        // The same head again, for a second attempt: untouched by the first.
        assert_eq!(headers, before);
        headers.insert("host", "example.com".parse().expect("value"));
        let text = encode(&headers);
        assert!(
            text.contains("host: example.com\r\n") && !text.contains("10.0.0.1"),
            "{text}"
        );
    }

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let io = TcpStream::connect(listener.local_addr().expect("addr"))
            .await
            .expect("connect");
        io.set_nodelay(true).expect("nodelay");
        let (mut replica, _) = listener.accept().await.expect("accept");
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
