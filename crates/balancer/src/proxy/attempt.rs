//! One attempt: a request sent to one replica, bounded by the response
//! timeout, and what it came to. A replica that failed is blamed here, the
//! one place passive health is fed.

use std::sync::Arc;

use axum::body::Body;
use http::{Request, Response};
use hyper::body::Incoming;

use super::Proxy;
use crate::{
    events::EventKind,
    metrics::Metrics,
    replica::{Health, InFlight, Replica},
};

/// What one attempt came to.
pub(super) enum Outcome {
    /// The replica answered; the request stays counted in flight on it
    /// until the response body has been relayed.
    Answered(Response<Incoming>, InFlight),
    /// The replica refused (`connect`: nothing was sent) or closed or reset
    /// the connection before answering.
    Failed { connect: bool },
    /// No response head within `--response-timeout`.
    TimedOut,
}

impl Proxy {
    pub(super) async fn attempt(&self, replica: &Arc<Replica>, upstream: Request<Body>) -> Outcome {
        let in_flight = replica.start_request();
        let sent =
            tokio::time::timeout(self.config.response_timeout, self.client.request(upstream)).await;
        match sent {
            Ok(Ok(resp)) => {
                in_flight.served();
                Outcome::Answered(resp, in_flight)
            }
            Ok(Err(e)) => {
                drop(in_flight);
                let connect = e.is_connect();
                Metrics::inc(if connect {
                    &self.metrics.connect_errors
                } else {
                    &self.metrics.upstream_errors
                });
                tracing::debug!(replica = %replica.name, error = %e, connect, "upstream request failed");
                self.blame(replica, || format!("proxied request failed: {e}"));
                Outcome::Failed { connect }
            }
            Err(_) => {
                drop(in_flight);
                Metrics::inc(&self.metrics.timeouts);
                self.blame(replica, || {
                    format!(
                        "no answer within {} ms",
                        self.config.response_timeout.as_millis()
                    )
                });
                Outcome::TimedOut
            }
        }
    }

    /// Counts a failure of `replica` and takes it out of rotation until
    /// health checks see it answer again (the event says `why`).
    fn blame(&self, replica: &Replica, why: impl FnOnce() -> String) {
        replica.record_failure();
        if replica.transition(Health::Up, Health::Suspect) {
            self.events.record(EventKind::Suspect, &replica.name, why());
        }
    }
}
