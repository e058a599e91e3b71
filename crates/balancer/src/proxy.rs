//! The data path: pick a replica, forward the request, stream the answer.
//!
//! Per request: one lock-free snapshot load, one key, one pick, one pooled
//! keep-alive upstream request. A connect failure (nothing was sent) is
//! retried on another replica for any method whose body we still hold; a
//! failure after the request may have reached a replica is retried only for
//! idempotent methods, so a POST is never applied twice. Bodies up to
//! [`RETRY_BUFFER`] are held for that; larger ones stream through once.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri, header,
};
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;

use crate::{
    error::failure,
    events::EventLog,
    metrics::Metrics,
    policy::{KeySource, Pick},
    pool::Pool,
    replica::{Health, InFlight},
};

/// Request bodies up to this size are buffered so a retry can resend them.
pub const RETRY_BUFFER: u64 = 64 * 1024;

/// Settings of the data path.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub key: KeySource,
    /// Extra attempts after the first, each on a different replica.
    pub retries: usize,
    pub connect_timeout: Duration,
    /// Time until the upstream's response headers arrive.
    pub response_timeout: Duration,
    /// Answer a replica's 404 with the spec's 400 "endpoint does not exist"
    /// (for replicas we run; a static upstream's 404 passes through).
    pub spec_not_found: bool,
    pub max_idle_per_replica: usize,
}

/// The forwarding half of the balancer.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    pool: Arc<Pool>,
    client: Client<HttpConnector, Body>,
    metrics: Arc<Metrics>,
    events: Arc<EventLog>,
}

/// A request body in a form we can send (again).
enum Payload {
    Empty,
    Buffered(Bytes),
    /// Can be sent once; `None` after that.
    Stream(Option<Body>),
}

impl Payload {
    fn replayable(&self) -> bool {
        !matches!(self, Self::Stream(_))
    }

    fn take(&mut self) -> Option<Body> {
        match self {
            Self::Empty => Some(Body::empty()),
            Self::Buffered(b) => Some(Body::from(b.clone())),
            Self::Stream(s) => s.take(),
        }
    }
}

impl Proxy {
    pub fn new(
        config: ProxyConfig,
        pool: Arc<Pool>,
        metrics: Arc<Metrics>,
        events: Arc<EventLog>,
    ) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(config.max_idle_per_replica)
            .build(connector);
        Self {
            config,
            pool,
            client,
            metrics,
            events,
        }
    }

    /// Forwards one client request and answers it; never fails, never hangs:
    /// every outcome is a response.
    pub async fn forward<B>(&self, client_addr: SocketAddr, req: Request<B>) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<axum::BoxError>,
    {
        Metrics::inc(&self.metrics.requests);
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let key = self.config.key.key(&parts, client_addr.ip());

        let mut payload = if body.is_end_stream() {
            Payload::Empty
        } else if body.size_hint().upper().is_some_and(|n| n <= RETRY_BUFFER) {
            match http_body_util::Limited::new(body, RETRY_BUFFER as usize)
                .collect()
                .await
            {
                Ok(collected) => Payload::Buffered(collected.to_bytes()),
                Err(_) => {
                    return self.answer(
                        failure(StatusCode::BAD_REQUEST, "could not read the request body"),
                        started,
                    );
                }
            }
        } else {
            Payload::Stream(Some(Body::new(body)))
        };

        prepare_headers(&mut parts.headers, client_addr);
        let path_and_query = parts.uri.path_and_query().cloned();
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );

        // An owned Arc, not a borrowed guard: it is held across awaits.
        let snapshot = self.pool.load_full();
        let mut tried = Tried::new(self.config.retries + 1);
        let mut last_error = None;
        for attempt in 0..=self.config.retries {
            let pick = Pick {
                key,
                replicas: &snapshot.replicas,
                tried: tried.as_slice(),
            };
            let Some(index) = snapshot.policy.pick(&pick) else {
                break;
            };
            tried.push(index);
            let replica = &snapshot.replicas[index];
            let Some(body) = payload.take() else { break };
            if attempt > 0 {
                Metrics::inc(&self.metrics.retries);
            }

            // The headers move into the attempt that cannot be followed by
            // another; only an attempt that may be retried sends a copy.
            let last = attempt == self.config.retries || !payload.replayable();
            let headers = if last {
                std::mem::take(&mut parts.headers)
            } else {
                parts.headers.clone()
            };
            let mut upstream = Request::new(body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = upstream_uri(&replica.authority, path_and_query.as_ref());
            *upstream.headers_mut() = headers;

            let in_flight = replica.start_request();
            let sent =
                tokio::time::timeout(self.config.response_timeout, self.client.request(upstream))
                    .await;
            match sent {
                Ok(Ok(resp)) => {
                    in_flight.served();
                    return self.answer(self.relay(resp, in_flight, &parts.uri), started);
                }
                Ok(Err(e)) => {
                    drop(in_flight);
                    replica.record_failure();
                    let connect = e.is_connect();
                    Metrics::inc(if connect {
                        &self.metrics.connect_errors
                    } else {
                        &self.metrics.upstream_errors
                    });
                    if replica.transition(Health::Up, Health::Suspect) {
                        self.events.record(
                            "suspect",
                            &replica.name,
                            format!("proxied request failed: {e}"),
                        );
                    }
                    tracing::debug!(replica = %replica.name, error = %e, connect, "upstream request failed");
                    last_error = Some(if connect {
                        UpstreamError::Connect
                    } else {
                        UpstreamError::Failed
                    });
                    let may_retry = payload.replayable() && (connect || idempotent);
                    if !may_retry {
                        break;
                    }
                }
                Err(_) => {
                    Metrics::inc(&self.metrics.timeouts);
                    last_error = Some(UpstreamError::Timeout);
                    break;
                }
            }
        }
        let response = match last_error {
            None => {
                Metrics::inc(&self.metrics.no_replica);
                failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no healthy replica is available",
                )
            }
            Some(UpstreamError::Timeout) => failure(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "the replica did not answer within {} ms",
                    self.config.response_timeout.as_millis()
                ),
            ),
            Some(UpstreamError::Connect) => {
                failure(StatusCode::BAD_GATEWAY, "could not connect to any replica")
            }
            Some(UpstreamError::Failed) => failure(
                StatusCode::BAD_GATEWAY,
                "the replica closed the connection before answering",
            ),
        };
        self.answer(response, started)
    }

    fn answer(&self, response: Response<Body>, started: Instant) -> Response<Body> {
        self.metrics.response(response.status(), started.elapsed());
        response
    }

    /// The upstream's response, streamed back; the replica counts the request
    /// in flight until the body is done.
    fn relay(&self, resp: Response<Incoming>, in_flight: InFlight, uri: &Uri) -> Response<Body> {
        if self.config.spec_not_found && resp.status() == StatusCode::NOT_FOUND {
            return failure(
                StatusCode::BAD_REQUEST,
                format!(
                    "'{}' endpoint does not exist in server replicas",
                    uri.path()
                ),
            );
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(
            parts,
            Body::new(Tracked {
                inner: body,
                _in_flight: in_flight,
            }),
        )
    }
}

enum UpstreamError {
    Connect,
    Failed,
    Timeout,
}

fn upstream_uri(
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

/// Headers that describe one connection, not the message (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// Removes hop-by-hop headers and adds `X-Forwarded-*` and `Forwarded`.
///
/// Each value is written once into a buffer of the right size and handed
/// to the header map without a copy: this runs for every request.
fn prepare_headers(headers: &mut HeaderMap, client: SocketAddr) {
    use std::fmt::Write as _;
    strip_hop_by_hop(headers);
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
    headers
        .entry(X_FORWARDED_PROTO)
        .or_insert(HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.entry(X_FORWARDED_HOST).or_insert(host);
    }

    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let prior = headers.get(header::FORWARDED).and_then(|v| v.to_str().ok());
    let mut forwarded = String::with_capacity(
        prior.map_or(0, |p| p.len() + 2) + host.map_or(0, |h| h.len() + 8) + 64,
    );
    if let Some(prior) = prior {
        forwarded.push_str(prior);
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
    forwarded.push_str(";proto=http");
    if let Some(host) = host {
        let _ = write!(forwarded, ";host=\"{host}\"");
    }
    if let Some(v) = header_value(forwarded) {
        headers.insert(header::FORWARDED, v);
    }
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// A header value that owns `s` without copying it; `None` if `s` is not a
/// valid value (it always is here: built from `to_str` parts and an IP).
fn header_value(s: String) -> Option<HeaderValue> {
    HeaderValue::from_maybe_shared(Bytes::from(s)).ok()
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

/// Replicas already tried for one request, without a heap allocation for
/// any sensible `--retries`.
struct Tried {
    inline: [usize; 8],
    len: usize,
    spill: Vec<usize>,
}

impl Tried {
    fn new(attempts: usize) -> Self {
        let spill = if attempts > 8 {
            Vec::with_capacity(attempts)
        } else {
            Vec::new()
        };
        Self {
            inline: [0; 8],
            len: 0,
            spill,
        }
    }

    fn push(&mut self, index: usize) {
        if self.spill.capacity() > 0 {
            self.spill.push(index);
        } else if let Some(slot) = self.inline.get_mut(self.len) {
            *slot = index;
            self.len += 1;
        }
    }

    fn as_slice(&self) -> &[usize] {
        if self.spill.capacity() > 0 {
            &self.spill
        } else {
            &self.inline[..self.len]
        }
    }
}

/// A response body that keeps its request counted in flight until it ends.
struct Tracked {
    inner: Incoming,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
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
        prepare_headers(&mut h, "127.0.0.9:5555".parse().expect("addr"));
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
    fn ipv6_clients_are_quoted_in_forwarded() {
        let mut h = HeaderMap::new();
        prepare_headers(&mut h, "[::1]:80".parse().expect("addr"));
        assert_eq!(h[header::FORWARDED], "for=\"[::1]\";proto=http");
    }

    #[test]
    fn prior_forwarded_is_kept_and_ips_print_as_display_does() {
        let mut h = HeaderMap::new();
        h.insert(header::FORWARDED, HeaderValue::from_static("for=10.0.0.1"));
        prepare_headers(&mut h, "0.10.100.255:1".parse().expect("addr"));
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

    #[test]
    fn tried_holds_every_attempt_inline_or_spilled() {
        for attempts in [1, 3, 8, 9, 20] {
            let mut t = Tried::new(attempts);
            for i in 0..attempts {
                t.push(i * 2);
            }
            assert_eq!(
                t.as_slice(),
                (0..attempts).map(|i| i * 2).collect::<Vec<_>>(),
                "{attempts}"
            );
        }
    }

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
}
