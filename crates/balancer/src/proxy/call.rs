//! A call's own facts: its gRPC shape and deadline, whether its method may
//! be sent twice, and the URI it gets upstream.

use std::time::Duration;

use http::{Method, Uri};
use tokio::time::Instant;

/// What the proxy knows of a call beyond its request.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    /// A gRPC call: failures are answered in gRPC's shape.
    pub(super) grpc: bool,
    /// When the client's `grpc-timeout` runs out.
    pub(super) deadline: Option<Instant>,
}

impl Call {
    pub(super) const PLAIN: Self = Self {
        grpc: false,
        deadline: None,
    };

    /// The wait for a response head: `configured`, or less if the call's
    /// deadline comes first.
    pub(super) fn response_timeout(self, configured: Duration) -> Duration {
        self.deadline.map_or(configured, |d| {
            d.saturating_duration_since(Instant::now()).min(configured)
        })
    }
}

/// Methods whose request can be sent twice with the effect of once
/// (RFC 9110 9.2.2).
pub(super) fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

pub(super) fn upstream_uri(
    authority: &http::uri::Authority,
    path_and_query: Option<&http::uri::PathAndQuery>,
) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(authority.clone());
    parts.path_and_query = Some(
        path_and_query
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/")),
    );
    Uri::from_parts(parts).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_keeps_path_and_query() {
        let authority: http::uri::Authority = "127.0.0.1:9000".parse().expect("authority");
        let pq: http::uri::PathAndQuery = "/a/b?x=1&y=2".parse().expect("pq");
        assert_eq!(
            upstream_uri(&authority, Some(&pq)).to_string(),
            "http://127.0.0.1:9000/a/b?x=1&y=2"
        );
        assert_eq!(
            upstream_uri(&authority, None).to_string(),
            "http://127.0.0.1:9000/"
        );
    }

    #[test]
    fn only_idempotent_methods_are_resent() {
        for m in [Method::GET, Method::HEAD, Method::PUT, Method::DELETE] {
            assert!(is_idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!is_idempotent(&m), "{m}");
        }
    }
}
