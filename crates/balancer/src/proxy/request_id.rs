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
    let digits = hex32(fastrand::u128(..));
    HeaderValue::from_maybe_shared(bytes::Bytes::copy_from_slice(&digits))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// `format!("{:032x}", n)` without the formatting machinery (padding,
/// flags, a growing `String`): this runs for every request without an id.
fn hex32(n: u128) -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'0'; 32];
    for (i, digit) in out.iter_mut().enumerate() {
        // The most significant nibble first, as `{:x}` prints it.
        let nibble = (n >> (4 * (31 - i))) & 0xf;
        *digit = HEX[nibble as usize];
    }
    out
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

    #[test]
    fn ids_print_as_zero_padded_lowercase_hex() {
        for n in [
            0,
            1,
            0xabc,
            u128::from(u64::MAX),
            u128::MAX,
            0x0123_4567_89ab_cdef << 60,
        ] {
            assert_eq!(hex32(n).as_slice(), format!("{n:032x}").as_bytes(), "{n:x}");
        }
    }
}
