//! A client's request head as the fast path takes it: parsed with
//! `httparse` from the bytes read, its target and field values kept as
//! slices of those bytes, and anything the fast path does not serve
//! itself told apart, so that hyper serves it (and answers its errors)
//! exactly as before.

use std::mem::MaybeUninit;

use super::body::{self, Feeder, RequestBody};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version, header};

/// The most field lines a request head may have (hyper's default too: a
/// head with more goes to hyper, which answers 431).
const MAX_HEADERS: usize = 100;

/// Fields the proxy adds to a request on its way (`X-Forwarded-*`,
/// `Forwarded`, `X-Request-Id`, `TE`): room for them from the start, where
/// growing the map to fit them cost four reallocations a request.
const ADDED_FIELDS: usize = 6;

/// The largest body read whole with its head before the request is
/// served; a longer one is streamed from the connection as it arrives
/// (`body`).
pub const MAX_BUFFERED_BODY: usize = 16 * 1024;

/// What the bytes at the front of the buffer are.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "returned once a request and matched at once: boxing the request would cost an allocation"
)]
pub enum Parsed {
    /// A request served here, split off the buffer with its body.
    Request(Ready),
    /// Not all of it yet: read more.
    Partial,
    /// Anything else (an upgrade, `Expect`, `Transfer-Encoding`, `TE`, a
    /// head hyper would refuse): for hyper, from the first byte.
    Hyper,
}

/// A request ready to be served.
#[derive(Debug)]
pub struct Ready {
    pub request: Request<RequestBody>,
    /// Whether the client keeps the connection after this request.
    pub keep_alive: bool,
    /// The bytes its head and body took (the part of the body read so far).
    pub len: usize,
    /// What reads the rest of a body longer than what came with its head.
    pub feeder: Option<Feeder>,
}

/// Parses the request at the front of `buf`; on [`Parsed::Request`] its
/// head and body are consumed. A head longer than `max_head` is hyper's
/// (it answers 431).
pub fn parse(buf: &mut BytesMut, max_head: usize) -> Parsed {
    // Frozen, so that the target and field values can be slices of the
    // bytes read (no copy, no table of offsets) while the parser borrows
    // them; what is not consumed is given back as it was.
    if buf.is_empty() {
        return Parsed::Partial;
    }
    let bytes = std::mem::take(buf).freeze();
    let parsed = parse_frozen(&bytes, max_head);
    let used = match &parsed {
        Parsed::Request(ready) => ready.len,
        Parsed::Partial | Parsed::Hyper => 0,
    };
    *buf = match (used, bytes.len() - used) {
        (0, _) => bytes
            .try_into_mut()
            .unwrap_or_else(|shared| BytesMut::from(&shared[..])),
        (_, 0) => BytesMut::new(),
        // Pipelined behind the request: rare, copied.
        _ => BytesMut::from(&bytes[used..]),
    };
    parsed
}

/// [`parse`] on the frozen bytes, which it leaves as they are.
fn parse_frozen(bytes: &Bytes, max_head: usize) -> Parsed {
    // Uninitialised: zeroing 100 slots costs more than the parse itself
    // (see `h1::response`).
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut parsed,
        bytes,
        &mut slots,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if bytes.len() <= max_head => return Parsed::Partial,
        Ok(_) | Err(_) => return Parsed::Hyper,
    };
    let (Some(method), Some(path), Some(minor)) = (parsed.method, parsed.path, parsed.version)
    else {
        return Parsed::Hyper;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return Parsed::Hyper;
    };
    if method == Method::CONNECT {
        return Parsed::Hyper;
    }
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let mut headers = HeaderMap::with_capacity(parsed.headers.len() + ADDED_FIELDS);
    let mut body_len = 0;
    let mut lengths = 0;
    let mut connection = Tokens::default();
    for field in &*parsed.headers {
        let Ok(name) = HeaderName::from_bytes(field.name.as_bytes()) else {
            return Parsed::Hyper;
        };
        if name == header::CONTENT_LENGTH {
            match content_length(field.value) {
                Some(n) if lengths == 0 => body_len = n,
                // The same length again is dropped, as hyper does.
                Some(n) if n == body_len => continue,
                _ => return Parsed::Hyper,
            }
            lengths += 1;
        } else if name == header::CONNECTION {
            connection.add(field.value);
        } else if name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
            // A client that takes trailers: hyper sends a chunked
            // response's, this side drops them.
            || name == header::TE
        {
            return Parsed::Hyper;
        }
        let Ok(value) = HeaderValue::from_maybe_shared(bytes.slice_ref(field.value)) else {
            return Parsed::Hyper;
        };
        headers.append(name, value);
    }
    if connection.upgrade {
        return Parsed::Hyper;
    }
    let read = bytes.len() - len;
    if read < body_len && body_len <= MAX_BUFFERED_BODY {
        return Parsed::Partial;
    }
    let Ok(uri) = Uri::from_maybe_shared(bytes.slice_ref(path.as_bytes())) else {
        return Parsed::Hyper;
    };
    let keep_alive = match version {
        Version::HTTP_11 => !connection.close,
        _ => connection.keep_alive && !connection.close,
    };
    let (body, feeder, used) = if read >= body_len {
        let body = bytes.slice(len..len + body_len);
        (RequestBody::Whole(body), None, len + body_len)
    } else {
        let (body, feeder) = body::streamed(bytes.slice(len..), body_len as u64);
        (body, Some(feeder), bytes.len())
    };
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Parsed::Request(Ready {
        request,
        keep_alive,
        len: used,
        feeder,
    })
}

/// A `Content-Length` value hyper's server accepts: digits only (no sign,
/// no list), within 64 bits.
fn content_length(value: &[u8]) -> Option<usize> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The `Connection` tokens that matter here.
#[derive(Debug, Default)]
struct Tokens {
    close: bool,
    keep_alive: bool,
    upgrade: bool,
}

impl Tokens {
    fn add(&mut self, value: &[u8]) {
        for token in value.split(|&b| b == b',') {
            let token = token.trim_ascii();
            self.close |= token.eq_ignore_ascii_case(b"close");
            self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            self.upgrade |= token.eq_ignore_ascii_case(b"upgrade");
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt as _;
    use hyper::body::Body as _;

    use super::*;

    fn parse_str(wire: &str) -> (Parsed, BytesMut) {
        let mut buf = BytesMut::from(wire.as_bytes());
        (parse(&mut buf, 1024), buf)
    }

    fn ready(wire: &str) -> (Ready, BytesMut) {
        match parse_str(wire) {
            (Parsed::Request(ready), rest) => (ready, rest),
            (other, _) => panic!("not served here: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_get_is_split_off_with_its_fields_and_leaves_what_follows() {
        let (ready, rest) =
            ready("GET /a?b=c HTTP/1.1\r\nHost: lb\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
        let req = ready.request;
        assert_eq!(req.method(), Method::GET);
        assert_eq!(req.uri(), "/a?b=c");
        assert_eq!(req.version(), Version::HTTP_11);
        assert_eq!(req.headers()["host"], "lb");
        let two: Vec<_> = req.headers().get_all("x-two").iter().collect();
        assert_eq!(two, ["1", "2"]);
        assert!(ready.keep_alive);
        assert_eq!(&rest[..], b"GET /next");
        let body = req.into_body().collect().await.expect("body").to_bytes();
        assert!(body.is_empty());
    }

    #[tokio::test]
    async fn a_body_within_the_bound_comes_with_its_head() {
        let wire = "POST /p HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\nhello";
        let (partial, _) = parse_str(&wire[..wire.len() - 2]);
        assert!(matches!(partial, Parsed::Partial), "{partial:?}");
        let (ready, rest) = ready(wire);
        assert!(rest.is_empty());
        let body = ready.request.into_body().collect().await.expect("body");
        assert_eq!(&body.to_bytes()[..], b"hello");
    }

    #[tokio::test]
    async fn a_longer_body_streams_from_what_came_with_its_head() {
        let wire = format!(
            "POST /p HTTP/1.1\r\nHost: lb\r\nContent-Length: {}\r\n\r\nfirst",
            MAX_BUFFERED_BODY + 1
        );
        let (ready, rest) = ready(&wire);
        assert!(rest.is_empty(), "what came of the body is the body's");
        assert_eq!(ready.len, wire.len());
        assert!(ready.feeder.is_some());
        let body = ready.request.into_body();
        assert_eq!(body.size_hint().exact(), Some(MAX_BUFFERED_BODY as u64 + 1));
        let mut body = body;
        let first = body.frame().await.expect("a piece").expect("ok");
        assert_eq!(&first.into_data().expect("data")[..], b"first");
        // Not all of it arrived: the connection's loop reads the rest.
        assert!(!body.is_end_stream());
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let keeps = |wire: &str| ready(wire).0.keep_alive;
        assert!(keeps("GET / HTTP/1.1\r\nHost: lb\r\n\r\n"));
        assert!(!keeps(
            "GET / HTTP/1.1\r\nHost: lb\r\nConnection: Close\r\n\r\n"
        ));
        assert!(!keeps("GET / HTTP/1.0\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
    }

    #[test]
    fn what_hyper_serves_is_left_whole() {
        // Longer than the 1 KiB bound `parse_str` gives: hyper answers 431.
        let long_head = format!(
            "GET / HTTP/1.1\r\nHost: lb\r\nX: {}\r\n\r\n",
            "a".repeat(1024)
        );
        let long_partial = format!("GET / HTTP/1.1\r\nHost: lb\r\nX: {}", "a".repeat(1024));
        for wire in [
            "GET / HTTP/1.1\r\nHost: lb\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: lb\r\nConnection: upgrade\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: lb\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 3, 3\r\n\r\nabc",
            "CONNECT lb:443 HTTP/1.1\r\nHost: lb:443\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: lb\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nHo st: lb\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
            &long_head,
            &long_partial,
        ] {
            let (parsed, rest) = parse_str(wire);
            assert!(matches!(parsed, Parsed::Hyper), "{wire:?}: {parsed:?}");
            assert_eq!(&rest[..], wire.as_bytes(), "{wire:?} consumed");
        }
    }

    #[test]
    fn a_length_is_digits_and_a_repeat_of_it_is_dropped() {
        assert_eq!(content_length(b"3"), Some(3));
        for bad in [&b"3, 3"[..], b"", b"+3", b"-3", b"99999999999999999999999"] {
            assert_eq!(content_length(bad), None, "{bad:?}");
        }
        let (ready, _) =
            ready("POST / HTTP/1.1\r\nHost: lb\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\nx");
        assert_eq!(
            ready
                .request
                .headers()
                .get_all("content-length")
                .iter()
                .count(),
            1
        );
    }
}
