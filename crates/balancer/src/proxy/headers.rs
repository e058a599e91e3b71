//! The headers a proxy rewrites: hop-by-hop headers removed both ways
//! (RFC 9110 7.6.1), `X-Forwarded-*` and `Forwarded` (RFC 7239) added.
//!
//! What the balancer vouches for is its own: `X-Forwarded-Proto` and
//! `X-Forwarded-Host` are set, never passed on from the client, and the
//! host it writes into `Forwarded` is a quoted-string, so a client cannot
//! smuggle parameters into the element the balancer adds. `X-Forwarded-For`
//! and `Forwarded` keep what earlier proxies added (they are lists), but a
//! `Forwarded` that breaks RFC 7239's grammar is dropped, not extended. A
//! client's `TE: trailers` is passed on (the only transfer coding a proxy
//! may forward), and `Trailer` is not hop-by-hop: trailers go through.

use std::net::SocketAddr;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether `name` is one of the fixed hop-by-hop headers.
pub(super) fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

pub(super) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the (few) names present is cheaper than seven hashed
    // removals, and most messages carry no hop-by-hop header at all.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    // Names listed in Connection are hop-by-hop too.
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::try_from(name.trim()).ok())
        .collect();
    for name in listed.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// Removes hop-by-hop headers and adds `X-Forwarded-*` and `Forwarded`
/// for a request that came from `client` over `proto` (`http`, `https`).
///
/// Each value is written once into a buffer of the right size and handed
/// to the header map without a copy: this runs for every request.
pub(crate) fn prepare_headers(headers: &mut HeaderMap, client: SocketAddr, proto: &'static str) {
    let trailers = headers
        .get(header::TE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|c| c.trim().eq_ignore_ascii_case("trailers"))
        });
    strip_hop_by_hop(headers);
    if trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let ip = client.ip();

    let prior = headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
    let mut xff = String::with_capacity(prior.map_or(0, |p| p.len() + 2) + 39);
    if let Some(prior) = prior {
        xff.push_str(prior);
        xff.push_str(", ");
    }
    push_ip(&mut xff, ip);
    if let Some(v) = header_value(xff) {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    // One lookup of Host serves both headers that repeat it.
    let host = headers.get(header::HOST).cloned();
    match &host {
        Some(host) => {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }

    let host = host.as_ref().and_then(|h| h.to_str().ok());
    let prior = prior_forwarded(headers);
    let mut forwarded = String::with_capacity(
        prior.as_ref().map_or(0, |p| p.len() + 2) + host.map_or(0, |h| h.len() + 8) + 64,
    );
    if let Some(prior) = prior {
        forwarded.push_str(&prior);
        forwarded.push_str(", ");
    }
    forwarded.push_str("for=");
    if ip.is_ipv6() {
        forwarded.push_str("\"[");
        push_ip(&mut forwarded, ip);
        forwarded.push_str("]\"");
    } else {
        push_ip(&mut forwarded, ip);
    }
    forwarded.push_str(";proto=");
    forwarded.push_str(proto);
    if let Some(host) = host {
        forwarded.push_str(";host=");
        push_quoted(&mut forwarded, host);
    }
    if let Some(v) = header_value(forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

/// What earlier proxies wrote into `Forwarded` (every line, as one list),
/// if all of it is well-formed; a malformed value is dropped rather than
/// extended (see [`forwarded`](super::forwarded)).
fn prior_forwarded(headers: &HeaderMap) -> Option<String> {
    let mut lines = headers.get_all(header::FORWARDED).iter();
    let first = lines.next()?;
    let mut prior = first.to_str().ok()?.to_owned();
    for line in lines {
        prior.push_str(", ");
        prior.push_str(line.to_str().ok()?);
    }
    // Nothing but separators says nothing: no list to extend.
    super::forwarded::parse(&prior)
        .filter(|elements| !elements.is_empty())
        .map(|_| prior)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A header value that owns `s` without copying it; `None` if `s` is not a
/// valid value (it always is here: built from `to_str` parts and an IP).
fn header_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(s)).ok()
}

/// Appends `s` as an RFC 7230 quoted-string: `"` and `\\` escaped.
fn push_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// Appends an IP address as `Display` would, without the formatting
/// machinery for the common IPv4 case.
fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    use std::fmt::Write as _;
    match ip {
        std::net::IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        std::net::IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed_and_forwarding_headers_added() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::HOST, HeaderValue::from_static("lb.local"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        prepare_headers(&mut h, "127.0.0.9:5555".parse().expect("addr"), "http");
        assert!(h.get(header::CONNECTION).is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert_eq!(h["x-kept"], "yes");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "lb.local");
        assert_eq!(
            h[header::FORWARDED],
            "for=127.0.0.9;proto=http;host=\"lb.local\""
        );
    }

    #[test]
    fn the_client_cannot_set_what_the_balancer_vouches_for() {
        let mut h = HeaderMap::new();
        h.insert(
            header::HOST,
            HeaderValue::from_static(r#"a", for=6.6.6.6;proto=https;host="b"#),
        );
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.insert(header::TE, HeaderValue::from_static("trailers, deflate"));
        h.insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
        prepare_headers(&mut h, "10.0.0.2:1".parse().expect("addr"), "http");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], h[header::HOST]);
        // The host stays one quoted-string: one element, one `for`.
        assert_eq!(
            h[header::FORWARDED],
            r#"for=10.0.0.2;proto=http;host="a\", for=6.6.6.6;proto=https;host=\"b""#
        );
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h[header::TRAILER], "x-checksum");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        prepare_headers(&mut h, "10.0.0.2:1".parse().expect("addr"), "https");
        assert!(h.get("x-forwarded-host").is_none());
        assert_eq!(h["x-forwarded-proto"], "https");
        assert!(h.get(header::TE).is_none());
    }

    #[test]
    fn ipv6_clients_are_quoted_in_forwarded() {
        let mut h = HeaderMap::new();
        prepare_headers(&mut h, "[::1]:80".parse().expect("addr"), "http");
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn prior_forwarded_is_kept_and_ips_print_as_display_does() {
        let mut h = HeaderMap::new();
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        prepare_headers(&mut h, "0.10.100.255:1".parse().expect("addr"), "http");
        assert_eq!(
            h[header::FORWARDED],
            "for=10.0.0.1, for=0.10.100.255;proto=http"
        );
        assert_eq!(h["x-forwarded-for"], "0.10.100.255");
        for ip in [
            "0.0.0.0",
            "1.2.3.4",
            "9.99.199.250",
            "255.255.255.255",
            "::1",
            "2001:db8::7",
        ] {
            let ip: std::net::IpAddr = ip.parse().expect("ip");
            let mut s = String::new();
            push_ip(&mut s, ip);
            assert_eq!(s, ip.to_string());
        }
    }
}
