//! Probes: how a replica is asked whether it is alive, and the wait for a
//! new replica's first answer.

use std::time::Duration;

use bytes::Bytes;
use http::uri::Authority;
use http_body_util::Empty;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};

use crate::{
    orchestrator::BoxFuture,
    replica::{Protocol, Replica},
};

/// Asks a replica whether it is alive. The HTTP heartbeat is the one the
/// contract names; tests use a probe that answers without a network.
pub trait Probe: Send + Sync + std::fmt::Debug + 'static {
    /// One check: `true` if the replica answered in time that it is alive.
    fn check<'a>(&'a self, target: Target<'a>, timeout: Duration) -> BoxFuture<'a, bool>;
}

/// What a probe asks: where, and in which protocol.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub authority: &'a Authority,
    pub protocol: Protocol,
}

impl<'a> Target<'a> {
    pub fn of(replica: &'a Replica) -> Self {
        Self {
            authority: &replica.authority,
            protocol: replica.protocol,
        }
    }
}

/// How long one check made while waiting for a new replica may take.
const READY_CHECK_TIMEOUT: Duration = Duration::from_millis(500);

/// Polls `probe` until the replica answers or `deadline` passes, backing off
/// from 5 ms to 100 ms between checks.
pub async fn wait_ready(probe: &dyn Probe, target: Target<'_>, deadline: Duration) -> bool {
    let until = tokio::time::Instant::now() + deadline;
    let mut pause = Duration::from_millis(5);
    while tokio::time::Instant::now() < until {
        if probe.check(target, READY_CHECK_TIMEOUT).await {
            return true;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    false
}

/// `GET /heartbeat`, alive on a 200, in the replica's protocol. Small
/// clients of its own, separate from the proxy's pool, so checks never
/// queue behind client traffic.
#[derive(Clone, Debug)]
pub struct HttpProbe {
    http1: Client<HttpConnector, Empty<Bytes>>,
    h2c: Client<HttpConnector, Empty<Bytes>>,
}

/// A probe's client: its own small pool, a short connect timeout.
pub(super) fn client<B>(h2c: bool) -> Client<HttpConnector, B>
where
    B: hyper::body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(1)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(2)
        .http2_only(h2c)
        .build(connector)
}

impl Default for HttpProbe {
    fn default() -> Self {
        Self {
            http1: client(false),
            h2c: client(true),
        }
    }
}

impl Probe for HttpProbe {
    fn check<'a>(&'a self, target: Target<'a>, timeout: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Ok(uri) = uri(target.authority, "/heartbeat") else {
                return false;
            };
            let fut = match target.protocol {
                Protocol::Http1 => self.http1.get(uri),
                Protocol::H2c => self.h2c.get(uri),
            };
            matches!(tokio::time::timeout(timeout, fut).await, Ok(Ok(resp)) if resp.status() == http::StatusCode::OK)
        })
    }
}

/// `http://authority/path`.
pub(super) fn uri(authority: &Authority, path: &'static str) -> Result<http::Uri, http::Error> {
    http::Uri::builder()
        .scheme("http")
        .authority(authority.clone())
        .path_and_query(path)
        .build()
}
