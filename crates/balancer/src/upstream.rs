//! The text of one `--upstream` of the static orchestrator,
//! `[NAME=]http://HOST:PORT[/][#weight=W]` (or `h2c://`), parsed without
//! touching the network: resolving `HOST` is the orchestrator's business,
//! after this has said the text is well-formed. The name is a [`Hostname`]
//! like any replica's, so `/rm` and `/lb/status` can name it.

use std::fmt;

use crate::{
    change::{Hostname, InvalidInput},
    replica::{Protocol, generated_name},
};

/// A well-formed `--upstream`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    pub name: Hostname,
    /// `HOST:PORT` as written (`[v6]:PORT` for an IPv6 address).
    pub host_port: String,
    pub weight: u32,
    /// `Some(H2c)` for an `h2c://` URL.
    pub protocol: Option<Protocol>,
}

/// Why an `--upstream` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("bad weight in '{0}' (a whole number from 1)")]
    Weight(String),
    #[error("upstream name: {0}")]
    Name(#[from] InvalidInput),
    #[error("upstream '{0}' must start with http:// or h2c://")]
    Scheme(String),
    #[error("upstream '{0}' must be HOST:PORT (a path, user or query is not allowed)")]
    HostPort(String),
}

impl UpstreamSpec {
    /// Parses the `index`th `--upstream` (0-based): an unnamed one is
    /// `server-<index + 1>`.
    pub fn parse(s: &str, index: usize) -> Result<Self, UpstreamError> {
        let (spec, weight) = match s.split_once("#weight=") {
            Some((spec, w)) => (
                spec,
                w.parse::<u32>()
                    .ok()
                    // `u32::from_str` takes a leading `+`; a weight is digits.
                    .filter(|parsed| *parsed > 0 && w.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| UpstreamError::Weight(s.to_owned()))?,
            ),
            None => (s, 1),
        };
        let (name, url) = match spec.split_once("://") {
            // The scheme's `=`-free prefix decides: `a=http://...` is named.
            Some((before, _)) if before.contains('=') => {
                let (name, url) = spec.split_once('=').unwrap_or((spec, ""));
                (Hostname::try_from(name)?, url)
            }
            _ => (
                Hostname::try_from(generated_name(u32::try_from(index + 1).unwrap_or(u32::MAX)))?,
                spec,
            ),
        };
        let (rest, protocol) = match (url.strip_prefix("http://"), url.strip_prefix("h2c://")) {
            (Some(rest), _) => (rest, None),
            (None, Some(rest)) => (rest, Some(Protocol::H2c)),
            _ => return Err(UpstreamError::Scheme(url.to_owned())),
        };
        let host_port = rest.strip_suffix('/').unwrap_or(rest);
        if !valid_host_port(host_port) {
            return Err(UpstreamError::HostPort(rest.to_owned()));
        }
        Ok(Self {
            name,
            host_port: host_port.to_owned(),
            weight,
            protocol,
        })
    }
}

impl fmt::Display for UpstreamSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.protocol {
            Some(Protocol::H2c) => "h2c",
            _ => "http",
        };
        write!(f, "{}={scheme}://{}", self.name, self.host_port)?;
        if self.weight != 1 {
            write!(f, "#weight={}", self.weight)?;
        }
        Ok(())
    }
}

/// `HOST:PORT`: a DNS name or IPv4 address, or a bracketed IPv6 address,
/// and a port from 1.
fn valid_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else {
        return false;
    };
    let port_ok = !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host.len() <= 253
                && host.split('.').all(|label| {
                    Hostname::try_from(label).is_ok() && label.len() <= Hostname::MAX_LEN
                })
        }
    };
    port_ok && host_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_upstream_forms() {
        let u = UpstreamSpec::parse("http://127.0.0.1:8080", 0).expect("plain");
        assert_eq!(
            (u.name.as_str(), u.host_port.as_str(), u.weight),
            ("server-1", "127.0.0.1:8080", 1)
        );
        let u = UpstreamSpec::parse("web=http://localhost:81/#weight=3", 4).expect("named");
        assert_eq!((u.name.as_str(), u.weight), ("web", 3));
        assert_eq!(u.to_string(), "web=http://localhost:81#weight=3");
        let u = UpstreamSpec::parse("grpc=h2c://[::1]:50051", 0).expect("h2c");
        assert_eq!((u.name.as_str(), u.protocol), ("grpc", Some(Protocol::H2c)));
        assert_eq!(UpstreamSpec::parse(&u.to_string(), 7), Ok(u));
    }

    #[test]
    fn refuses_what_is_not_an_upstream() {
        for bad in [
            "https://127.0.0.1:1",
            "http://127.0.0.1:1#weight=0",
            "http://127.0.0.1:1#weight=+2",
            "http://no-port",
            "http://a:0",
            "http://a:99999",
            "http://a:80/path",
            "http://u@a:80",
            "http://a b:80",
            "http://[::1:80",
            // A name must be a hostname like any replica's.
            "=http://127.0.0.1:1",
            "bad name=http://127.0.0.1:1",
            "a;b=http://127.0.0.1:1",
        ] {
            assert!(UpstreamSpec::parse(bad, 0).is_err(), "{bad}");
        }
    }
}
