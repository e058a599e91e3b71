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
//! one replica and what it came to), [`exchange`] (an HTTP/1.1 exchange on
//! a replica's pooled or new connection), [`connector`] (h2c connections
//! stamped with their age), [`tried`] (where a retry must not go),
//! [`body`] (the relayed response body), [`tunnel`] (HTTP/1.1 upgrades),
//! [`error`] (the response for each way of failing), [`relay`] (the answer
//! streamed back), [`call`] (a call's deadline, idempotence, upstream URI), [`observe`] and
//! [`request_id`] (the request's id and its access-log entry).

mod attempt;
mod body;
mod call;
mod connector;
mod error;
mod exchange;
pub(crate) mod forwarded;
mod grpc;
pub(crate) mod headers;
mod observe;
mod payload;
mod relay;
pub mod request_id;
mod tried;
mod tunnel;
mod upgrade;
mod upload;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::body::Body;
use bytes::Bytes;
use http::{Request, Response, StatusCode, Uri, Version, request::Parts};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;

pub use observe::Arrival;
pub use payload::RETRY_BUFFER;
pub use tunnel::Handover;
pub use upload::{ClientFault, UploadLimits};

use crate::{
    access_log::AccessLog,
    activity::RequestGuard,
    error::failure,
    events::EventLog,
    h1::Outgoing,
    metrics::Metrics,
    policy::{KeySource, Pick},
    pool::{Pool, Snapshot},
    replica::{InFlight, Protocol, Replica},
};
use attempt::{Outcome, Upstream, blame};
use body::{Answer, InFlightBody};
use call::{Call, is_idempotent, upstream_uri};
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
    /// How HTTP/1.1 replicas are connected to (their idle connections
    /// are on each replica).
    connect: exchange::Connect,
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
        let connect = exchange::Connect {
            tcp: connector.clone(),
        };
        let client_h2c = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(UPSTREAM_IDLE)
            .http2_only(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .http2_keep_alive_interval(Some(UPSTREAM_IDLE / 2))
            .build(connector::Connector(connector));
        Self {
            config,
            pool,
            connect,
            client_h2c,
            metrics,
            events,
            access_log: None,
        }
    }

    /// Closes idle upstream connections older than the idle timeout, every
    /// few seconds until `stop`: a replica no request reaches any more
    /// keeps no connection open for long.
    pub async fn sweep_idle(&self, stop: tokio_util::sync::CancellationToken) {
        let mut every = tokio::time::interval(crate::conns::PARK_AFTER);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => {}
            }
            for replica in &self.pool.load().replicas {
                replica.conns.sweep(UPSTREAM_IDLE);
            }
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
                let handover = req.extensions_mut().remove::<tunnel::Handover>()?;
                Some((handover, protocol))
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
                    Some((handover, protocol)) => {
                        let to = tunnel::Upgrade {
                            client: handover,
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
            // After a stale pooled connection the same replica is tried
            // on a new connection: the rest of its idle list may have been
            // closed by the same restart and not be seen as closed yet.
            let fresh = again.is_some();
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
            let upstream = match replica.protocol {
                // Encoded from the borrowed head: another attempt can
                // follow with no copy of the headers.
                Protocol::Http1 => {
                    let target = path_and_query
                        .as_ref()
                        .map_or("/", http::uri::PathAndQuery::as_str);
                    match Outgoing::encode(
                        &parts.method,
                        target,
                        &parts.headers,
                        Some(replica.authority.as_str()),
                        body,
                    ) {
                        Ok(out) => Upstream::H1 { out, fresh },
                        // The client's head, not the replica's fault.
                        Err(e) => {
                            drop(in_flight);
                            return self.served(failure(StatusCode::BAD_REQUEST, e), None, sent);
                        }
                    }
                }
                Protocol::H2c => {
                    // The headers move into an attempt that cannot be
                    // followed by another; only one that may be sent
                    // again sends a copy.
                    let may_resend = payload.replayable()
                        && (attempt < self.config.retries || (idempotent && !stale_retried));
                    let headers = if may_resend {
                        parts.headers.clone()
                    } else {
                        std::mem::take(&mut parts.headers)
                    };
                    let mut upstream = Request::new(body);
                    *upstream.method_mut() = parts.method.clone();
                    *upstream.headers_mut() = headers;
                    *upstream.uri_mut() = upstream_uri(&replica.authority, path_and_query.as_ref());
                    *upstream.version_mut() = Version::HTTP_2;
                    Upstream::H2c(upstream)
                }
            };
            // Counted once the request is ready to go: one refused above
            // (a Content-Length that does not parse) reached no replica.
            sent += 1;
            if attempt > 0 || stale_retried {
                Metrics::inc(&self.metrics.retries);
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
}
