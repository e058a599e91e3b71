//! A request on its way to a replica: the head written once into one
//! buffer, and the body framed as hyper's client would frame it (a known
//! length as `Content-Length`, an unknown one chunked, none for a GET
//! without a body). Sending it is [`send`]'s.

mod send;

use std::collections::VecDeque;

use axum::body::Body;
use bytes::{BufMut as _, Bytes, BytesMut};
use http::{HeaderMap, Method, header};
use hyper::body::Body as _;
pub use send::SendError;

use super::Error;

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
}
