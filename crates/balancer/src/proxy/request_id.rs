//! `X-Request-Id`: one id per request, the same in the balancer's access
//! log, at the replica and in the reply, so one request can be followed
//! through every log. A client's own id is kept when it is a plausible
//! one (1 to 128 characters of letters, digits and `-_.:+/=@`); anything
//! else (empty, too long, spaces, quotes, control bytes) is replaced, so a
//! client cannot inject text into log lines through it.

use http::{HeaderMap, HeaderName, HeaderValue};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Longest client id kept.
pub const MAX_LEN: usize = 128;

/// The request's id: the client's if valid, else a new random one; the
/// header is set to it (one value only).
pub fn ensure(headers: &mut HeaderMap) -> HeaderValue {
    let mut given = headers.get_all(&X_REQUEST_ID).iter();
    let id = match (given.next(), given.next()) {
        (Some(v), None) if is_valid(v.as_bytes()) => v.clone(),
        _ => generate(),
    };
    headers.insert(X_REQUEST_ID, id.clone());
    id
}

fn is_valid(id: &[u8]) -> bool {
    (1..=MAX_LEN).contains(&id.len())
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b))
}

/// 128 random bits as 32 hex digits: one allocation, which the header
/// value takes over (`from_maybe_shared` does not copy).
fn generate() -> HeaderValue {
    let text = format!("{:032x}", fastrand::u128(..));
    HeaderValue::from_maybe_shared(bytes::Bytes::from(text))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_valid_id_and_replaces_the_rest() {
        let mut h = HeaderMap::new();
        h.insert(X_REQUEST_ID, HeaderValue::from_static("abc-123_x.y:z"));
        assert_eq!(ensure(&mut h), "abc-123_x.y:z");
        let too_long = "a".repeat(MAX_LEN + 1);
        for bad in ["", "a b", "a\"b", "<script>", too_long.as_str()] {
            let mut h = HeaderMap::new();
            h.insert(X_REQUEST_ID, HeaderValue::from_str(bad).expect("value"));
            let id = ensure(&mut h);
            assert_ne!(id, bad);
            assert_eq!(id.len(), 32, "{bad:?} -> {id:?}");
            assert_eq!(h[&X_REQUEST_ID], id);
        }
        // Two ids: neither is trusted, one new one replaces both.
        let mut h = HeaderMap::new();
        h.append(X_REQUEST_ID, HeaderValue::from_static("a"));
        h.append(X_REQUEST_ID, HeaderValue::from_static("b"));
        let id = ensure(&mut h);
        assert_eq!(h.get_all(&X_REQUEST_ID).iter().count(), 1);
        assert_eq!(id.len(), 32);
        // Generated ids differ.
        assert_ne!(ensure(&mut HeaderMap::new()), ensure(&mut HeaderMap::new()));
    }
}
