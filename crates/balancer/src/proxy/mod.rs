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
//! A failure is counted against whoever caused it: a client whose upload
//! breaks or stalls gets 400 or 408 and the replica is not blamed; a pooled
//! connection the replica had already closed is retried for a safe request
//! without blame.
//!
//! The parts: [`upload`] (the client's body, time-bounded and watched),
//! [`payload`] (the request body, buffered for replay when small),
//! [`headers`] (hop-by-hop and forwarding headers), [`attempt`] (one try on
//! one replica and what it came to), [`connector`] (upstream connections
//! stamped with their age), [`tried`] (where a retry must not go),
//! [`body`] (the relayed response body), [`tunnel`] (HTTP/1.1 upgrades),
//! [`error`] (the response for each way of failing), [`observe`] and
//! [`request_id`] (the request's id and its access-log entry).

mod attempt;
mod body;
mod connector;
mod error;
pub(crate) mod forwarded;
mod grpc;
pub(crate) mod headers;
mod observe;
mod payload;
pub mod request_id;
mod tried;
mod tunnel;
mod upload;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, Uri, Version, request::Parts};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;

pub use observe::Arrival;
pub use payload::RETRY_BUFFER;
pub use upload::{ClientFault, UploadLimits};

use crate::{
    access_log::AccessLog,
    activity::RequestGuard,
    error::failure,
    events::EventLog,
    metrics::Metrics,
    policy::{KeySource, Pick},
    pool::{Pool, Snapshot},
    replica::{InFlight, Protocol, Replica},
};
use attempt::{Outcome, blame};
use body::InFlightBody;
use error::UpstreamError;
use payload::Payload;
use tried::Tried;
use upload::Upload;

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
    /// Time bounds of a client's upload.
    pub upload: UploadLimits,
    /// Longest pause in a replica's response body.
    pub upstream_idle: Duration,
    /// Longest silence, both ways, of an upgraded connection.
    pub tunnel_idle: Duration,
    /// How long a request waits for a place under a per-replica limit.
    pub queue_timeout: Duration,
}

/// Who sent a request, as the proxy needs to know it.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub addr: SocketAddr,
    /// `http` or `https`: how the request reached the balancer.
    pub proto: &'static str,
}

/// The forwarding half of the balancer.
#[derive(Debug)]
pub struct Proxy {
    config: ProxyConfig,
    pool: Arc<Pool>,
    /// HTTP/1.1 replicas' pool.
    client: Client<connector::Connector, Body>,
    /// h2c replicas' pool (one multiplexed connection each).
    client_h2c: Client<connector::Connector, Body>,
    metrics: Arc<Metrics>,
    events: Arc<EventLog>,
    /// `--access-log`, when on.
    access_log: Option<AccessLog>,
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
            .build(connector::Connector(connector.clone()));
        let client_h2c = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(UPSTREAM_IDLE)
            .http2_only(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(Some(UPSTREAM_IDLE / 2))
            .build(connector::Connector(connector));
        Self {
            config,
            pool,
            client,
            client_h2c,
            metrics,
            events,
            access_log: None,
        }
    }

    /// Logs every request to `log` (`--access-log`).
    #[must_use]
    pub fn with_access_log(mut self, log: Option<AccessLog>) -> Self {
        self.access_log = log;
        self
    }

    /// Forwards one client request and answers it; never fails, never hangs:
    /// every outcome is a response. `request` is the request's place on
    /// its client connection; the response body holds it until it is sent.
    pub async fn forward<B>(
        &self,
        client: ClientInfo,
        mut req: Request<B>,
        request: Option<RequestGuard>,
    ) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<axum::BoxError>,
    {
        Metrics::inc(&self.metrics.requests);
        let started = Instant::now();
        let arrival = self.arrive(&mut req, client, started);
        let upgrade = tunnel::wants_upgrade(req.version(), req.headers())
            .then(|| {
                let protocol = req.headers().get(http::header::UPGRADE).cloned()?;
                Some((hyper::upgrade::on(&mut req), protocol))
            })
            .flatten();
        let (mut parts, body) = req.into_parts();
        let key = self.config.key.key(&parts, client.addr.ip());
        let call = Call {
            grpc: grpc::is_grpc(&parts.headers),
            deadline: grpc::timeout(&parts.headers).map(|t| started + t),
        };
        let response = match Payload::read(body, self.config.upload).await {
            Err(fault) => self.client_fault(fault, call),
            Ok((payload, upload)) => {
                headers::prepare_headers(&mut parts.headers, client.addr, client.proto);
                match upgrade {
                    Some((on_upgrade, protocol)) => {
                        let to = tunnel::Upgrade {
                            client: on_upgrade,
                            protocol,
                            request,
                        };
                        // Boxed: upgrades are rare, and their future (a
                        // connect and a handshake of its own) would
                        // otherwise size, and be moved with, every request's.
                        Box::pin(self.tunnel(parts, payload, key, to)).await
                    }
                    None => {
                        self.send(parts, payload, upload, key, started, call, request)
                            .await
                    }
                }
            }
        };
        self.metrics.response(response.status());
        self.depart(arrival, response)
    }

    /// Tries replicas in the policy's order until one answers, or there is
    /// no one left to try, or the request may not be sent again.
    #[allow(clippy::too_many_arguments)]
    async fn send(
        &self,
        mut parts: Parts,
        mut payload: Payload,
        upload: Arc<Upload>,
        key: u64,
        started: Instant,
        call: Call,
        request: Option<RequestGuard>,
    ) -> Response<Body> {
        let path_and_query = parts.uri.path_and_query().cloned();
        let idempotent = is_idempotent(&parts.method);
        // An owned Arc, not a borrowed guard: it is held across awaits.
        let snapshot = self.pool.load_full();
        let mut tried = Tried::new(self.config.retries + 1);
        let mut last_error = UpstreamError::NoReplica;
        // A stale pooled connection: the same replica, once, on a fresh one.
        let mut again = None;
        let mut stale_retried = false;
        let mut attempt = 0;
        // Requests actually sent to a replica (a stale retry is one more).
        let mut sent = 0;
        while attempt <= self.config.retries {
            let index = match again.take() {
                Some(index) => index,
                None => match self.pick(&snapshot, key, &mut tried) {
                    Some(index) => index,
                    None => break,
                },
            };
            let replica = &snapshot.replicas[index];
            let Some(in_flight) = replica.admit(self.config.queue_timeout).await else {
                Metrics::inc(&self.metrics.queue_timeouts);
                last_error = UpstreamError::Busy;
                attempt += 1;
                continue;
            };
            let Some(body) = payload.take() else { break };
            sent += 1;
            if attempt > 0 || stale_retried {
                Metrics::inc(&self.metrics.retries);
            }
            // The headers move into an attempt that cannot be followed by
            // another; only one that may be sent again sends a copy.
            let may_resend = payload.replayable()
                && (attempt < self.config.retries || (idempotent && !stale_retried));
            let headers = if may_resend {
                parts.headers.clone()
            } else {
                std::mem::take(&mut parts.headers)
            };
            let mut upstream = Request::new(body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = upstream_uri(&replica.authority, path_and_query.as_ref());
            *upstream.headers_mut() = headers;
            if replica.protocol == Protocol::H2c {
                *upstream.version_mut() = Version::HTTP_2;
            }
            let response_timeout = call.response_timeout(self.config.response_timeout);

            match self
                .attempt(in_flight, upstream, &upload, response_timeout)
                .await
            {
                Outcome::Answered(resp, in_flight) => {
                    let latency = started.elapsed();
                    self.metrics.upstream_latency(latency);
                    in_flight.replica().latency.observe(latency);
                    let name = self
                        .access_log
                        .as_ref()
                        .map(|_| in_flight.replica().name.clone());
                    let response = self.relay(resp, in_flight, &parts.uri, call, request);
                    return self.served(response, name, sent);
                }
                Outcome::ClientFault(fault) => return self.client_fault(fault, call),
                Outcome::Stale => {
                    last_error = UpstreamError::Failed;
                    if idempotent && payload.replayable() && !stale_retried {
                        stale_retried = true;
                        again = Some(index);
                        continue;
                    }
                    break;
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
                    last_error = UpstreamError::Timeout(response_timeout);
                    // A replica that stopped answering (a frozen process)
                    // holds every request sent to it until its health
                    // checks catch up: a safe request goes elsewhere, as
                    // after a reset; an unsafe one may have been acted on.
                    if !(idempotent && payload.replayable()) {
                        break;
                    }
                }
            }
            attempt += 1;
        }
        if last_error == UpstreamError::NoReplica {
            Metrics::inc(&self.metrics.no_replica);
        }
        self.served(last_error.response(call.grpc), None, sent)
    }

    /// The next replica for `key` that has not been tried; counted as tried.
    fn pick(&self, snapshot: &Snapshot, key: u64, tried: &mut Tried) -> Option<usize> {
        let pick = Pick {
            key,
            replicas: &snapshot.replicas,
            tried: tried.as_slice(),
        };
        let index = snapshot.policy.pick(&pick)?;
        tried.push(index);
        Some(index)
    }

    /// An upgrade request: tunnelled to the replica the policy picks, or
    /// relayed as a plain response if the replica does not switch.
    async fn tunnel(
        &self,
        parts: Parts,
        mut payload: Payload,
        key: u64,
        to: tunnel::Upgrade,
    ) -> Response<Body> {
        let snapshot = self.pool.load_full();
        let mut tried = Tried::new(self.config.retries + 1);
        let mut last_error = UpstreamError::NoReplica;
        for _ in 0..=self.config.retries {
            let Some(index) = self.pick(&snapshot, key, &mut tried) else {
                break;
            };
            let replica: &Arc<Replica> = &snapshot.replicas[index];
            let Some(in_flight) = replica.admit(self.config.queue_timeout).await else {
                last_error = UpstreamError::Busy;
                continue;
            };
            let Some(body) = payload.take() else { break };
            let mut upstream = Request::new(body);
            *upstream.method_mut() = parts.method.clone();
            *upstream.uri_mut() = parts
                .uri
                .path_and_query()
                .map_or_else(|| Uri::from_static("/"), |pq| Uri::from(pq.clone()));
            *upstream.headers_mut() = parts.headers.clone();
            tunnel::keep_upgrade_headers(upstream.headers_mut(), to.protocol.clone());
            let opened = tunnel::open(
                replica.addr,
                upstream,
                self.config.connect_timeout,
                self.config.response_timeout,
            )
            .await;
            let why = match opened {
                Ok(resp) if resp.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    in_flight.served();
                    let switching = tunnel::switching(&resp);
                    tunnel::join(
                        to,
                        resp,
                        in_flight,
                        self.config.tunnel_idle,
                        self.metrics.clone(),
                    );
                    return switching;
                }
                Ok(resp) => {
                    in_flight.served();
                    return self.relay(resp, in_flight, &parts.uri, Call::PLAIN, to.request);
                }
                Err(tunnel::TunnelError::Connect) => {
                    last_error = UpstreamError::Connect;
                    "could not connect for an upgrade"
                }
                Err(tunnel::TunnelError::Failed) => {
                    last_error = UpstreamError::Failed;
                    "closed an upgrade request before answering"
                }
                Err(tunnel::TunnelError::TimedOut) => {
                    last_error = UpstreamError::Timeout(self.config.response_timeout);
                    "did not answer an upgrade request in time"
                }
            };
            blame(replica, &self.events, || why.to_owned());
            if last_error != UpstreamError::Connect || !payload.replayable() {
                break;
            }
        }
        last_error.response(false)
    }

    /// The answer to a request whose upload failed: the client's fault, so
    /// its connection is closed (its framing cannot be trusted any more).
    fn client_fault(&self, fault: ClientFault, call: Call) -> Response<Body> {
        let (counter, error) = match fault {
            ClientFault::Stalled | ClientFault::TooSlow => (
                &self.metrics.client_body_timeouts,
                UpstreamError::ClientTimeout,
            ),
            ClientFault::Broken => (
                &self.metrics.client_body_errors,
                UpstreamError::BadRequestBody,
            ),
        };
        Metrics::inc(counter);
        let mut response = error.response(call.grpc);
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        response
    }

    /// The upstream's response, streamed back; the replica counts the request
    /// in flight until the body is done.
    fn relay(
        &self,
        resp: Response<Incoming>,
        in_flight: InFlight,
        uri: &Uri,
        call: Call,
        request: Option<RequestGuard>,
    ) -> Response<Body> {
        if self.config.spec_not_found && !call.grpc && resp.status() == StatusCode::NOT_FOUND {
            return failure(
                StatusCode::BAD_REQUEST,
                format!(
                    "'{}' endpoint does not exist in server replicas",
                    uri.path()
                ),
            );
        }
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            // Only an upgrade request may be answered 101 (RFC 9110 15.2.2).
            in_flight.replica().record_failure();
            return UpstreamError::UnaskedSwitch.response(call.grpc);
        }
        let (mut parts, body) = resp.into_parts();
        // Both framings: Transfer-Encoding governs, and a Content-Length
        // must not be passed on beside it (RFC 9112 6.3).
        if parts.headers.contains_key(http::header::TRANSFER_ENCODING) {
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        headers::strip_hop_by_hop(&mut parts.headers);
        Response::from_parts(
            parts,
            Body::new(InFlightBody::new(
                body,
                in_flight,
                self.config.upstream_idle,
                self.events.clone(),
                request,
                call.deadline,
            )),
        )
    }
}

/// What the proxy knows of a call beyond its request.
#[derive(Debug, Clone, Copy)]
struct Call {
    /// A gRPC call: failures are answered in gRPC's shape.
    grpc: bool,
    /// When the client's `grpc-timeout` runs out.
    deadline: Option<Instant>,
}

impl Call {
    const PLAIN: Self = Self {
        grpc: false,
        deadline: None,
    };

    /// The wait for a response head: `configured`, or less if the call's
    /// deadline comes first.
    fn response_timeout(self, configured: Duration) -> Duration {
        self.deadline.map_or(configured, |d| {
            d.saturating_duration_since(Instant::now()).min(configured)
        })
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
