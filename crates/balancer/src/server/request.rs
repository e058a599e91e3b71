//! What a request head must be before anything else sees it (RFC 9112
//! 3.2): exactly one valid `Host` on HTTP/1.1 (none or one on HTTP/1.0),
//! and for an absolute-form target the target's authority replaces
//! whatever `Host` the client sent. A head that breaks these is answered
//! 400 and the connection closed.

use http::{HeaderValue, Request, Version, header, uri::Authority};

/// Why a request head is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHead {
    #[error("more than one Host header")]
    TwoHosts,
    #[error("an HTTP/1.1 request needs a Host header")]
    NoHost,
    #[error("the Host header is not a valid host[:port]")]
    InvalidHost,
    #[error("the request target's authority is not a valid host[:port]")]
    InvalidTarget,
}

/// Checks `req`'s head and puts an absolute-form target's authority in
/// `Host`.
pub fn check<B>(req: &mut Request<B>) -> Result<(), BadHead> {
    if let Some(authority) = req.uri().authority() {
        let host = plain_authority(authority.as_str()).ok_or(BadHead::InvalidTarget)?;
        let host = HeaderValue::from_str(host.as_str()).map_err(|_| BadHead::InvalidTarget)?;
        req.headers_mut().insert(header::HOST, host);
        return Ok(());
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(BadHead::TwoHosts),
        (None, _) if req.version() == Version::HTTP_11 => Err(BadHead::NoHost),
        (None, _) => Ok(()),
        (Some(value), None) if is_simple_host(value.as_bytes()) => Ok(()),
        (Some(value), None) => value
            .to_str()
            .ok()
            .and_then(plain_authority)
            .map(|_| ())
            .ok_or(BadHead::InvalidHost),
    }
}

/// Whether `s` is `name[:port]` with a name of letters, digits, `.` and
/// `-` and a port that fits in 16 bits: what nearly every `Host` is, and
/// always a valid one ([`plain_authority`] accepts it). Checked for every
/// request, so it is one pass over the bytes, where parsing an
/// [`Authority`] copies the value into a new buffer first. Anything else
/// (IPv6 literals, odd characters) takes the full check.
fn is_simple_host(s: &[u8]) -> bool {
    let colon = s.iter().position(|&b| b == b':').unwrap_or(s.len());
    let (name, port) = s.split_at(colon);
    !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && match port {
            [] => true,
            [b':', digits @ ..] => {
                (1..=5).contains(&digits.len())
                    && digits.iter().all(u8::is_ascii_digit)
                    && digits
                        .iter()
                        .fold(0u32, |n, &d| n * 10 + u32::from(d - b'0'))
                        <= u32::from(u16::MAX)
            }
            _ => false,
        }
}

/// `host[:port]` without userinfo and with a numeric port, or `None`.
fn plain_authority(s: &str) -> Option<Authority> {
    if s.is_empty() || s.contains('@') {
        return None;
    }
    let authority: Authority = s.parse().ok()?;
    // `http` takes any text after the host's colon as the port.
    let host_end = if s.starts_with('[') {
        s.find(']')? + 1
    } else {
        s.find(':').unwrap_or(s.len())
    };
    match &s[host_end..] {
        "" => Some(authority),
        rest => rest
            .strip_prefix(':')
            .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|p| p.parse::<u16>().ok())
            .map(|_| authority),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, target: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(target);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).expect("request")
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let ok = |v, t, h: &[&str]| check(&mut req(v, t, h));
        assert_eq!(ok(Version::HTTP_11, "/", &["lb.local"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/", &["lb.local:8080"]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/", &["[::1]:80"]), Ok(()));
        assert_eq!(ok(Version::HTTP_10, "/", &[]), Ok(()));
        assert_eq!(ok(Version::HTTP_11, "/", &[]), Err(BadHead::NoHost));
        assert_eq!(
            ok(Version::HTTP_11, "/", &["a", "b"]),
            Err(BadHead::TwoHosts)
        );
        assert_eq!(
            ok(Version::HTTP_10, "/", &["a", "a"]),
            Err(BadHead::TwoHosts)
        );
        for bad in [
            "a b", "a\"b", "u@h", "h:port", "h:", "h:99999", "[::1]x", "",
        ] {
            assert_eq!(
                ok(Version::HTTP_11, "/", &[bad]),
                Err(BadHead::InvalidHost),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_simple_host_check_accepts_only_what_the_full_check_does() {
        let full = |s: &str| plain_authority(s).is_some();
        for host in [
            "lb.local",
            "lb.local:8080",
            "127.0.0.1:65535",
            "a",
            "A-b.C",
            "x:0",
            "h:00080",
            "h:65536",
            "h:99999",
            "h:123456",
            "h:",
            ":80",
            "",
            "h:8a",
            "a b",
            "[::1]:80",
            "u@h",
            "h:1:2",
            "h_1",
            "h%20",
            "h/p",
            "h?q",
        ] {
            if is_simple_host(host.as_bytes()) {
                assert!(full(host), "{host:?} passes the simple check only");
            }
        }
        for host in [
            "lb.local",
            "lb.local:8080",
            "127.0.0.1:65535",
            "x:0",
            "h:00080",
        ] {
            assert!(is_simple_host(host.as_bytes()), "{host:?}");
        }
        for host in ["h:65536", "h:", "", "[::1]:80", "u@h", "h:1:2"] {
            assert!(!is_simple_host(host.as_bytes()), "{host:?}");
        }
    }

    #[test]
    fn an_absolute_target_sets_host() {
        let mut r = req(Version::HTTP_11, "http://real.example:81/p?q", &["spoofed"]);
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.headers()[header::HOST], "real.example:81");
        assert_eq!(r.headers().get_all(header::HOST).iter().count(), 1);
        // Even without a Host of its own.
        let mut r = req(Version::HTTP_11, "http://real.example/", &[]);
        assert_eq!(check(&mut r), Ok(()));
        assert_eq!(r.headers()[header::HOST], "real.example");
    }
}
