//! The data path: pick a replica, forward the request, stream the answer.
//!
//! Per request: one lock-free snapshot load, one key, one pick, one pooled
//! keep-alive upstream request. A connect failure (nothing was sent) is
//! retried on another replica for any method whose body we still hold; a
//! failure after the request may have reached a replica is retried only for
//! idempotent methods, so a POST is never applied twice. A replica that
//! failed (refused, reset, or did not answer in time) is marked suspect at
//! once: the passive half of health checking.
//!
//! The parts: [`payload`] (the request body, buffered for replay when
//! small), [`headers`] (hop-by-hop and forwarding headers), [`attempt`]
//! (one try on one replica and what it came to), [`tried`] (where a retry
//! must not go), [`body`] (the relayed response body), [`error`] (the
//! response for each way of failing).

mod attempt;
mod body;
mod error;
mod headers;
mod payload;
mod tried;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, request::Parts};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;

pub use payload::RETRY_BUFFER;

use crate::{
    error::failure,
    events::EventLog,
    metrics::Metrics,
    policy::{KeySource, Pick},
    pool::Pool,
    replica::InFlight,
};
use attempt::Outcome;
use body::InFlightBody;
use error::UpstreamError;
use payload::Payload;
use tried::Tried;

/// How long an idle upstream connection is kept (and TCP keep-alive probes
/// it), so a replica's idle timeout rarely closes one under us.
const UPSTREAM_IDLE: Duration = Duration::from_secs(60);

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
        connector.set_keepalive(Some(UPSTREAM_IDLE));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(UPSTREAM_IDLE)
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
        let response = match Payload::read(body).await {
            Ok(payload) => {
                headers::prepare_headers(&mut parts.headers, client_addr);
                self.send(parts, payload, key, started).await
            }
            Err(payload::ReadError) => UpstreamError::BadRequestBody.response(),
        };
        self.metrics.response(response.status());
        response
    }

    /// Tries replicas in the policy's order until one answers, or there is
    /// no one left to try, or the request may not be sent again.
    async fn send(
        &self,
        mut parts: Parts,
        mut payload: Payload,
        key: u64,
        started: Instant,
    ) -> Response<Body> {
        let path_and_query = parts.uri.path_and_query().cloned();
        let idempotent = is_idempotent(&parts.method);
        // An owned Arc, not a borrowed guard: it is held across awaits.
        let snapshot = self.pool.load_full();
        let mut tried = Tried::new(self.config.retries + 1);
        let mut last_error = UpstreamError::NoReplica;
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

            match self.attempt(replica, upstream).await {
                Outcome::Answered(resp, in_flight) => {
                    self.metrics.upstream_latency(started.elapsed());
                    return self.relay(resp, in_flight, &parts.uri);
                }
                Outcome::Failed { connect } => {
                    last_error = if connect {
                        UpstreamError::Connect
                    } else {
                        UpstreamError::Failed
                    };
                    // Nothing was sent, or sending again cannot do harm.
                    let may_retry = payload.replayable() && (connect || idempotent);
                    if !may_retry {
                        break;
                    }
                }
                Outcome::TimedOut => {
                    last_error = UpstreamError::Timeout(self.config.response_timeout);
                    break;
                }
            }
        }
        if last_error == UpstreamError::NoReplica {
            Metrics::inc(&self.metrics.no_replica);
        }
        last_error.response()
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
        headers::strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(
            parts,
            Body::new(InFlightBody {
                inner: body,
                _in_flight: in_flight,
            }),
        )
    }
}

/// Methods whose request can be sent twice with the effect of once
/// (RFC 9110 9.2.2).
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
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
