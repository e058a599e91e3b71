//! One attempt: a request sent to one replica and what it came to. The
//! response timeout starts once the whole request has been sent (a long
//! upload is not a slow replica). A failure is the client's when its upload
//! failed, a stale pooled connection's when the connection predates the
//! request and closed before answering, and otherwise the replica's, which
//! is blamed here: the one place passive health is fed from the data path.
//!
//! While it waits for the response head, an attempt also gives up when its
//! replica is declared down (missed heartbeats): a replica on a node that
//! was cut off never answers nor resets, and its requests would otherwise
//! wait out the whole response timeout. Given up that way it counts as a
//! reset connection: retried elsewhere when the request is idempotent.

use std::{error::Error as _, sync::Arc, time::Duration};

use axum::body::Body;
use http::{Request, Response};
use tokio::time::Instant;

use super::{
    Proxy, UPSTREAM_IDLE,
    body::Answer,
    connector,
    exchange::{Failure, closed_before_answer, exchange},
    upload::{ClientFault, Upload},
};
use crate::{
    events::{EventKind, EventLog},
    h1::Outgoing,
    metrics::Metrics,
    replica::{Health, InFlight, Replica},
};

/// How often an attempt waiting for its response head looks whether its
/// replica was declared down. One timer at a time, as before: a request
/// answered sooner never sees the second step.
const DOWN_CHECK: Duration = Duration::from_millis(100);

/// Why an attempt stopped waiting for the response head.
enum GaveUp {
    /// `--response-timeout` (or the client's shorter deadline) ran out.
    Deadline,
    /// The replica was declared down meanwhile.
    ReplicaDown,
}

/// What one attempt came to.
// Returned once per attempt and taken apart at once: boxing the answer
// would cost an allocation per request to save a few bytes of stack.
#[allow(clippy::large_enum_variant)]
pub(super) enum Outcome {
    /// The replica answered; the request stays counted in flight on it
    /// until the response body has been relayed.
    Answered(Response<Answer>, InFlight),
    /// The client's upload failed; nothing is the replica's fault.
    ClientFault(ClientFault),
    /// A pooled connection the replica had closed; not the replica's fault.
    Stale,
    /// The replica refused (`connect`: nothing was sent) or closed or reset
    /// the connection before answering.
    Failed { connect: bool },
    /// No response head within `--response-timeout` of the request's end.
    TimedOut,
}

/// One attempt's request: encoded for our HTTP/1.1 client (from the
/// borrowed head, so a request that may be sent again needs no copy of
/// its headers), or a `Request` for hyper's h2c client.
pub(super) enum Upstream {
    /// `fresh`: on a new connection, not one from the idle list.
    H1 {
        out: Outgoing,
        fresh: bool,
    },
    H2c(Request<Body>),
}

impl Proxy {
    pub(super) async fn attempt(
        &self,
        in_flight: InFlight,
        upstream: Upstream,
        upload: &Upload,
        response_timeout: Duration,
    ) -> Outcome {
        let since = Instant::now();
        let watched = in_flight.replica().clone();
        let deadline = async move {
            upload.sent().await;
            let until = Instant::now() + response_timeout;
            loop {
                let now = Instant::now();
                if now >= until {
                    return GaveUp::Deadline;
                }
                tokio::time::sleep((until - now).min(DOWN_CHECK)).await;
                if watched.health() == Health::Down {
                    return GaveUp::ReplicaDown;
                }
            }
        };
        let sent = tokio::select! {
            sent = self.exchange(in_flight.replica(), upstream, since) => sent,
            gave_up = deadline => {
                if let GaveUp::ReplicaDown = gave_up {
                    // Already out of rotation: its heartbeats told, not this.
                    Metrics::inc(&self.metrics.upstream_errors);
                    tracing::debug!(replica = %in_flight.replica().name, "replica declared down while a request waited for its answer");
                    return Outcome::Failed { connect: false };
                }
                // A client's shorter deadline (grpc-timeout) running out is
                // not the replica's failure; --response-timeout is.
                if response_timeout >= self.config.response_timeout {
                    Metrics::inc(&self.metrics.timeouts);
                    blame(in_flight.replica(), &self.events, || {
                        format!("no answer within {} ms", response_timeout.as_millis())
                    });
                }
                return Outcome::TimedOut;
            }
        };
        let e = match sent {
            Ok(resp) => {
                in_flight.served();
                return Outcome::Answered(resp, in_flight);
            }
            Err(e) => e,
        };
        let replica = in_flight.replica().clone();
        drop(in_flight);
        if let Some(fault) = upload.fault() {
            tracing::debug!(replica = %replica.name, ?fault, "the client's upload failed");
            return Outcome::ClientFault(fault);
        }
        let connect = matches!(e, Failure::Connect(_));
        if let Failure::Stale(e) = &e {
            Metrics::inc(&self.metrics.stale_connections);
            tracing::debug!(replica = %replica.name, error = %e, "a pooled connection was closed by the replica");
            return Outcome::Stale;
        }
        Metrics::inc(if connect {
            &self.metrics.connect_errors
        } else {
            &self.metrics.upstream_errors
        });
        tracing::debug!(replica = %replica.name, error = %e, connect, "upstream request failed");
        blame(&replica, &self.events, || {
            format!("proxied request failed: {e}")
        });
        Outcome::Failed { connect }
    }
}

impl Proxy {
    /// One exchange with `replica`: HTTP/1.1 on our own pool, h2c on
    /// hyper-util's (one multiplexed connection per replica).
    async fn exchange(
        &self,
        replica: &Arc<Replica>,
        upstream: Upstream,
        since: Instant,
    ) -> Result<Response<Answer>, Failure> {
        match upstream {
            Upstream::H1 { out, fresh } => {
                exchange(&self.connect, replica, out, UPSTREAM_IDLE, fresh)
                    .await
                    .map(|resp| resp.map(Answer::Own))
            }
            Upstream::H2c(upstream) => match self.client_h2c.request(upstream).await {
                Ok(resp) => Ok(resp.map(Answer::Hyper)),
                Err(e) if e.is_connect() => Err(Failure::Connect(e.to_string())),
                Err(e) => {
                    let stale = connector::was_reused(&e, since)
                        && e.source()
                            .and_then(|s| s.downcast_ref::<hyper::Error>())
                            .is_some_and(closed_before_answer);
                    Err(if stale {
                        Failure::Stale(e.into())
                    } else {
                        Failure::Failed(e.into())
                    })
                }
            },
        }
    }
}

/// Counts a failure of `replica` and takes it out of rotation until
/// health checks see it answer again (the event says `why`).
pub(super) fn blame(replica: &Replica, events: &EventLog, why: impl FnOnce() -> String) {
    replica.record_failure();
    if replica.transition(Health::Up, Health::Suspect) {
        events.record(EventKind::Suspect, &replica.name, why());
    }
}
