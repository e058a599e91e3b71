//! A response head as it comes from a replica: parsed with `httparse`
//! from the bytes read, its field values kept as slices of those bytes (no
//! copy per value), and the body's framing decided as RFC 9112 6.3 says.

use std::mem::MaybeUninit;

use bytes::{Buf as _, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Version, header};

use super::Error;

/// The most field lines a response head may have (hyper's default too).
const MAX_HEADERS: usize = 100;

/// The longest response head accepted.
pub const MAX_HEAD: usize = 64 * 1024;

/// How the body after a head is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a HEAD request's response, 1xx, 204, 304).
    Empty,
    /// `Content-Length`.
    Length(u64),
    Chunked,
    /// Until the replica closes the connection.
    Close,
}

/// A parsed head: the response without its body, how the body is framed,
/// and whether the connection may carry another request afterwards.
#[derive(Debug)]
pub struct Head {
    pub response: Response<()>,
    pub framing: Framing,
    pub keep_alive: bool,
}

/// Parses the response head at the front of `buf`, consuming it; `None`
/// if it is not complete yet. Interim (1xx) responses other than 101 are
/// skipped, as a client does.
pub fn parse(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    loop {
        // Uninitialised: zeroing 100 headers (3 KiB) cost more than the
        // parse itself (callgrind: 3,216 instructions a request in memset).
        let mut headers = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut headers,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                return Err(Error::Head("too long".into()));
            }
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(Error::Head(e.to_string())),
        };
        let code = parsed.code.unwrap_or_default();
        if (100..200).contains(&code) && code != 101 {
            buf.advance(len);
            continue;
        }
        let status = StatusCode::from_u16(code).map_err(|e| Error::Head(e.to_string()))?;
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // Offsets into the bytes, so the values can be slices of them once
        // the head is split off (the borrow of `buf` ends here).
        let base = buf.as_ptr() as usize;
        let spans: Vec<_> = parsed
            .headers
            .iter()
            .map(|h| {
                let name = h.name.as_ptr() as usize - base;
                let value = h.value.as_ptr() as usize - base;
                (name, name + h.name.len(), value, value + h.value.len())
            })
            .collect();
        let head = buf.split_to(len).freeze();
        let mut map = HeaderMap::with_capacity(spans.len());
        for (ns, ne, vs, ve) in spans {
            let name = HeaderName::from_bytes(&head[ns..ne])
                .map_err(|_| Error::Head("bad field name".into()))?;
            let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
                .map_err(|_| Error::Head(format!("bad value of {name}")))?;
            map.append(name, value);
        }
        let framing = framing(status, method, version, &map)?;
        let keep_alive = status != StatusCode::SWITCHING_PROTOCOLS
            && framing != Framing::Close
            && keeps_alive(version, &map);
        let mut response = Response::new(());
        *response.status_mut() = status;
        *response.version_mut() = version;
        *response.headers_mut() = map;
        return Ok(Some(Head {
            response,
            framing,
            keep_alive,
        }));
    }
}

/// RFC 9112 6.3, for a response to `method`.
fn framing(
    status: StatusCode,
    method: &Method,
    version: Version,
    headers: &HeaderMap,
) -> Result<Framing, Error> {
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
        || *method == Method::HEAD
    {
        return Ok(Framing::Empty);
    }
    if headers.contains_key(header::TRANSFER_ENCODING) {
        if version == Version::HTTP_10 {
            return Err(Error::Head("Transfer-Encoding in HTTP/1.0".into()));
        }
        return Ok(if last_coding_is_chunked(headers) {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = std::str::from_utf8(part)
                .ok()
                .map(str::trim)
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Error::Head("bad Content-Length".into()))?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Head("differing Content-Lengths".into()));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

fn last_coding_is_chunked(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"))
}

/// Whether the replica keeps the connection open after this response.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match version {
        Version::HTTP_11 => !has("close"),
        _ => has("keep-alive") && !has("close"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(wire: &str, method: &Method) -> Result<Option<Head>, Error> {
        parse(&mut BytesMut::from(wire.as_bytes()), method)
    }

    fn framing_of(wire: &str, method: &Method) -> Framing {
        head(wire, method)
            .expect("parses")
            .expect("complete")
            .framing
    }

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 201 Created\r\nX-A: 1\r\nx-a: 2\r\nContent-Length: 4\r\n\r\nbody"[..],
        );
        let head = parse(&mut buf, &Method::GET)
            .expect("parses")
            .expect("complete");
        assert_eq!(head.response.status(), 201);
        let values: Vec<_> = head.response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(head.framing, Framing::Length(4));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"body");
    }

    #[test]
    fn a_partial_head_waits_and_a_huge_one_fails() {
        assert!(
            head("HTTP/1.1 200 OK\r\nA: b\r\n", &Method::GET)
                .expect("ok")
                .is_none()
        );
        let huge = format!("HTTP/1.1 200 OK\r\nA: {}", "b".repeat(MAX_HEAD));
        assert!(head(&huge, &Method::GET).is_err());
        assert!(head("HTTP/1.1 abc\r\n\r\n", &Method::GET).is_err());
    }

    #[test]
    fn interim_responses_are_skipped_but_not_101() {
        let wire = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
        assert_eq!(
            head(wire, &Method::POST)
                .expect("ok")
                .expect("complete")
                .response
                .status(),
            200
        );
        let switch = head(
            "HTTP/1.1 101 Switching Protocols\r\nupgrade: x\r\n\r\n",
            &Method::GET,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(switch.response.status(), 101);
        assert!(!switch.keep_alive);
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let get = &Method::GET;
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
                &Method::HEAD
            ),
            Framing::Empty
        );
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\n\r\n", get),
            Framing::Empty
        );
        assert_eq!(
            framing_of(
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                get
            ),
            Framing::Empty
        );
        assert_eq!(
            framing_of(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 3\r\n\r\n",
                get
            ),
            Framing::Chunked
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", get),
            Framing::Close
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\ncontent-length: 7, 7\r\n\r\n", get),
            Framing::Length(7)
        );
        assert_eq!(framing_of("HTTP/1.1 200 OK\r\n\r\n", get), Framing::Close);
        assert!(
            head(
                "HTTP/1.1 200 OK\r\ncontent-length: 7\r\ncontent-length: 8\r\n\r\n",
                get
            )
            .is_err()
        );
        assert!(head("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", get).is_err());
        assert!(head("HTTP/1.0 200 OK\r\ntransfer-encoding: chunked\r\n\r\n", get).is_err());
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let ka = |wire: &str| {
            head(wire, &Method::GET)
                .expect("ok")
                .expect("complete")
                .keep_alive
        };
        assert!(ka("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n"
        ));
        assert!(
            !ka("HTTP/1.1 200 OK\r\n\r\n"),
            "a close-delimited body ends the connection"
        );
    }
}
