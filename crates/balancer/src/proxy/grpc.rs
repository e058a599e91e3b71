//! What the proxy does differently for gRPC requests (`content-type:
//! application/grpc...`): its own failures are answered the way gRPC
//! clients read them (HTTP 200, "trailers-only", `grpc-status` and
//! `grpc-message`: UNAVAILABLE where HTTP would say 502 or 503,
//! DEADLINE_EXCEEDED for 504), and the client's `grpc-timeout` bounds the
//! call: the wait for the response head, and the whole response, which is
//! ended with DEADLINE_EXCEEDED when the deadline passes.

use std::time::Duration;

use axum::body::Body;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};

/// A constant name: looked up on every request, and a `&str` would be
/// parsed and checked as a header name each time.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");

/// gRPC status codes the proxy answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    DeadlineExceeded = 4,
    Internal = 13,
    Unavailable = 14,
}

/// Whether the request is a gRPC call.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The call's `grpc-timeout` (`<digits><unit>`, unit one of H M S m u n,
/// at most 8 digits).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(GRPC_TIMEOUT)?.to_str().ok()?;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// The status headers (or trailers) of a failed call.
pub fn status(code: Code, message: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("grpc-status", HeaderValue::from(u16::from(code as u8)));
    if let Ok(m) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert("grpc-message", m);
    }
    headers
}

/// A trailers-only response: the call failed before any message.
pub fn error_response(code: Code, message: &str) -> Response<Body> {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.extend(status(code, message));
    response
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII but `%` as
/// it is, everything else as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_as_the_spec_writes_them() {
        let t = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            timeout(&h)
        };
        assert_eq!(t("100m"), Some(Duration::from_millis(100)));
        assert_eq!(t("2S"), Some(Duration::from_secs(2)));
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "m", "123456789m", "10x", "1.5S", "-1S"] {
            assert_eq!(t(bad), None, "{bad}");
        }
    }

    #[test]
    fn errors_are_trailers_only() {
        let r = error_response(Code::Unavailable, "no healthy replica: 100%");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["grpc-status"], "14");
        assert_eq!(r.headers()["grpc-message"], "no healthy replica: 100%25");
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/grpc");
    }
}
