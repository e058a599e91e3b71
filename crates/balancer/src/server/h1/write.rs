//! A response on its way to the client: its head encoded once into a
//! small buffer, its body framed as RFC 9112 6 says for the request it
//! answers, and the head and first bytes of the body sent in one write,
//! as hyper does from its write buffer, but with no buffer of our own to
//! hold: each body frame goes out from where it was read.

use std::{io, io::IoSlice};

use axum::body::Body;
use bytes::Bytes;
use http::{HeaderValue, Method, Response, StatusCode, Version, header};
use http_body_util::BodyExt as _;
use hyper::body::Body as _;
use tokio::io::{AsyncWrite, AsyncWriteExt as _};

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body is sent (HEAD, 1xx, 204, 304).
    None,
    Length(u64),
    Chunked,
    /// Until the connection closes (an HTTP/1.0 client, no length known).
    Close,
}

/// What the request asked that shapes its response.
#[derive(Debug, Clone, Copy)]
pub struct Asked {
    pub head: bool,
    pub version: Version,
    pub keep_alive: bool,
}

impl Asked {
    pub fn of<B>(request: &http::Request<B>, keep_alive: bool) -> Self {
        Self {
            head: request.method() == Method::HEAD,
            version: request.version(),
            keep_alive,
        }
    }
}

/// Sends `response` on `io`, its head encoded into `head` (cleared first;
/// the caller keeps it for the next response); whether the connection may
/// serve another request after it. An error means the connection is done
/// with (the client has a truncated response at most, never a wrong one).
pub async fn send<W: AsyncWrite + Unpin>(
    io: &mut W,
    response: Response<Body>,
    asked: Asked,
    head: &mut Vec<u8>,
) -> io::Result<bool> {
    let (parts, mut body) = response.into_parts();
    let framing = framing(&parts, &body, asked);
    let keep_alive = asked.keep_alive && framing != Framing::Close && !says_close(&parts.headers);
    head.clear();
    encode_head(head, &parts, framing, asked, keep_alive);
    if framing == Framing::None {
        io.write_all(head).await?;
        return Ok(keep_alive);
    }
    let mut head = Some(&**head);
    let mut left = match framing {
        Framing::Length(n) => Some(n),
        _ => None,
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(io::Error::other)?;
        // Trailers are dropped: a client that asked for them (`TE`) is
        // served by hyper, which sends them.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if let Some(left) = &mut left {
            *left = left
                .checked_sub(data.len() as u64)
                .ok_or_else(|| io::Error::other("response body longer than its length"))?;
        }
        let last = body.is_end_stream() && framing == Framing::Chunked;
        put(io, head.take(), data, framing, last).await?;
        if last {
            return Ok(keep_alive);
        }
    }
    match framing {
        Framing::Chunked => {
            let end = IoSlice::new(b"0\r\n\r\n");
            match head.take() {
                Some(head) => write_all_vectored(io, &mut [IoSlice::new(head), end]).await?,
                None => io.write_all(&end).await?,
            }
        }
        _ if left.is_some_and(|n| n > 0) => {
            return Err(io::Error::other("response body shorter than its length"));
        }
        _ => {
            if let Some(head) = head {
                io.write_all(head).await?;
            }
        }
    }
    Ok(keep_alive)
}

/// Writes one body frame, after the head if it has not gone yet; `last`
/// ends a chunked body in the same write.
async fn put<W: AsyncWrite + Unpin>(
    io: &mut W,
    head: Option<&[u8]>,
    data: Bytes,
    framing: Framing,
    last: bool,
) -> io::Result<()> {
    let mut size = [0u8; 20];
    let mut slices = [IoSlice::new(&[]); 4];
    let mut n = 0;
    if let Some(head) = head {
        slices[n] = IoSlice::new(head);
        n += 1;
    }
    if framing == Framing::Chunked {
        let len = chunk_size(&mut size, data.len());
        slices[n] = IoSlice::new(&size[..len]);
        n += 1;
    }
    slices[n] = IoSlice::new(&data);
    n += 1;
    if framing == Framing::Chunked {
        slices[n] = IoSlice::new(if last { b"\r\n0\r\n\r\n" } else { b"\r\n" });
        n += 1;
    }
    write_all_vectored(io, &mut slices[..n]).await
}

/// `{len:x}\r\n` into `buf`; its length.
fn chunk_size(buf: &mut [u8; 20], len: usize) -> usize {
    use std::io::Write as _;
    let mut cursor = io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{len:X}\r\n");
    usize::try_from(cursor.position()).unwrap_or(0)
}

async fn write_all_vectored<W: AsyncWrite + Unpin>(
    io: &mut W,
    mut slices: &mut [IoSlice<'_>],
) -> io::Result<()> {
    while !slices.is_empty() {
        let n = io.write_vectored(slices).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        IoSlice::advance_slices(&mut slices, n);
    }
    Ok(())
}

/// Whether the response's own `Connection` says close.
fn says_close(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// RFC 9112 6.3 from the server's side: a length when one is known, else
/// chunked for HTTP/1.1, else the connection's end.
fn framing(parts: &http::response::Parts, body: &Body, asked: Asked) -> Framing {
    let status = parts.status;
    if asked.head
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Framing::None;
    }
    if let Some(n) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
    {
        return Framing::Length(n);
    }
    if let Some(n) = body.size_hint().exact() {
        return Framing::Length(n);
    }
    if asked.version == Version::HTTP_11 {
        return Framing::Chunked;
    }
    Framing::Close
}

/// The status line and fields, with the framing and connection fields
/// this hop's own and a `Date` if the response has none.
fn encode_head(
    out: &mut Vec<u8>,
    parts: &http::response::Parts,
    framing: Framing,
    asked: Asked,
    keep_alive: bool,
) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(parts.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(
        parts
            .status
            .canonical_reason()
            .unwrap_or("<none>")
            .as_bytes(),
    );
    out.extend_from_slice(b"\r\n");
    let mut has_date = false;
    for (name, value) in &parts.headers {
        // Framing is this hop's: written below from `framing`, except
        // that a HEAD's answer keeps the length a GET would have had.
        if name == header::TRANSFER_ENCODING
            || name == header::CONNECTION
            || (name == header::CONTENT_LENGTH && !asked.head)
        {
            continue;
        }
        has_date |= name == header::DATE;
        field(out, name.as_str().as_bytes(), value);
    }
    match framing {
        Framing::Length(n) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        Framing::None | Framing::Close => {}
    }
    if !keep_alive {
        out.extend_from_slice(b"connection: close\r\n");
    } else if asked.version == Version::HTTP_10 {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    if !has_date {
        out.extend_from_slice(b"date: ");
        super::date::with(|date| out.extend_from_slice(date));
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

fn field(out: &mut Vec<u8>, name: &[u8], value: &HeaderValue) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn wire(response: Response<Body>, asked: Asked) -> (String, bool) {
        let mut out = Vec::new();
        let keep = send(&mut out, response, asked, &mut Vec::new())
            .await
            .expect("sent");
        (String::from_utf8(out).expect("utf-8"), keep)
    }

    fn asked(version: Version, keep_alive: bool) -> Asked {
        Asked {
            head: false,
            version,
            keep_alive,
        }
    }

    fn without_date(wire: &str) -> String {
        wire.lines()
            .filter(|l| !l.starts_with("date: "))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[tokio::test]
    async fn a_known_length_is_sent_as_content_length() {
        let (out, keep) = wire(
            Response::new(Body::from("hello")),
            asked(Version::HTTP_11, true),
        )
        .await;
        assert!(keep);
        assert_eq!(
            without_date(&out),
            "HTTP/1.1 200 OK\ncontent-length: 5\n\nhello"
        );
        assert!(out.contains("\r\ndate: "), "{out}");
    }

    #[tokio::test]
    async fn an_unknown_length_is_chunked_for_http_11_and_closes_for_http_10() {
        let stream = || {
            let chunks: Vec<Result<Bytes, io::Error>> =
                vec![Ok(Bytes::from("ab")), Ok(Bytes::from("cde"))];
            Response::new(Body::from_stream(futures_util::stream::iter(chunks)))
        };
        let (out, keep) = wire(stream(), asked(Version::HTTP_11, true)).await;
        assert!(keep);
        assert!(out.contains("transfer-encoding: chunked\r\n"), "{out}");
        assert!(out.ends_with("2\r\nab\r\n3\r\ncde\r\n0\r\n\r\n"), "{out}");
        let (out, keep) = wire(stream(), asked(Version::HTTP_10, true)).await;
        assert!(!keep);
        assert!(out.contains("connection: close\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nabcde"), "{out}");
    }

    /// A response with `body` and one header field.
    fn with_field(body: Body, name: header::HeaderName, value: &'static str) -> Response<Body> {
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(name, HeaderValue::from_static(value));
        response
    }

    #[tokio::test]
    async fn head_and_no_content_send_no_body() {
        let response = with_field(Body::from("hello"), header::CONTENT_LENGTH, "5");
        let head = Asked {
            head: true,
            ..asked(Version::HTTP_11, true)
        };
        let (out, _) = wire(response, head).await;
        assert!(out.contains("content-length: 5\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\n"), "{out}");
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let (out, _) = wire(response, asked(Version::HTTP_11, true)).await;
        assert!(!out.contains("content-length"), "{out}");
        assert!(out.starts_with("HTTP/1.1 204 No Content\r\n"), "{out}");
    }

    #[tokio::test]
    async fn close_is_said_when_either_side_closes() {
        let (out, keep) = wire(Response::new(Body::empty()), asked(Version::HTTP_11, false)).await;
        assert!(!keep);
        assert!(out.contains("connection: close\r\n"), "{out}");
        let response = with_field(Body::empty(), header::CONNECTION, "close");
        let (out, keep) = wire(response, asked(Version::HTTP_11, true)).await;
        assert!(!keep);
        assert_eq!(out.matches("connection: close").count(), 1, "{out}");
        let (out, keep) = wire(Response::new(Body::empty()), asked(Version::HTTP_10, true)).await;
        assert!(keep);
        assert!(out.contains("connection: keep-alive\r\n"), "{out}");
    }

    #[tokio::test]
    async fn the_length_sent_is_the_framing_s_own() {
        // A length field that does not parse is not passed on beside the
        // body's real length.
        let response = with_field(Body::from("hello"), header::CONTENT_LENGTH, "five");
        let (out, keep) = wire(response, asked(Version::HTTP_11, true)).await;
        assert!(keep);
        assert_eq!(out.matches("content-length").count(), 1, "{out}");
        assert!(out.contains("content-length: 5\r\n"), "{out}");
        assert!(out.ends_with("\r\n\r\nhello"), "{out}");
    }

    #[tokio::test]
    async fn a_body_shorter_than_its_length_is_an_error() {
        let response = with_field(Body::from("abc"), header::CONTENT_LENGTH, "5");
        let mut out = Vec::new();
        let sent = send(
            &mut out,
            response,
            asked(Version::HTTP_11, true),
            &mut Vec::new(),
        )
        .await;
        assert!(sent.is_err());
    }

    #[test]
    fn chunk_sizes_are_hex() {
        let mut buf = [0u8; 20];
        let n = chunk_size(&mut buf, 0x1f40);
        assert_eq!(&buf[..n], b"1F40\r\n");
    }
}
