//! What the proxy adds to every request for observing it: the request's
//! `X-Request-Id` (see [`request_id`](super::request_id)), set on the way
//! in and echoed on the way out, and its access-log entry (`--access-log`),
//! started at arrival and completed by the response body once sent. The
//! listener uses the same pair for the admin API and refused heads, so the
//! access log has every request, not only the forwarded ones.

use axum::body::Body;
use http::{HeaderValue, Request, Response};
use tokio::time::Instant;

use super::{ClientInfo, Proxy, request_id};
use crate::access_log::{Head, Served};

/// What `arrive` learnt of a request, for `depart`.
pub struct Arrival {
    request_id: HeaderValue,
    head: Option<Head>,
}

impl Proxy {
    /// Gives the request its id; notes its head when there is an access log.
    pub fn arrive<B>(&self, req: &mut Request<B>, client: ClientInfo, started: Instant) -> Arrival {
        let request_id = request_id::ensure(req.headers_mut());
        let head = self.access_log.as_ref().map(|_| Head {
            client: client.addr,
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            request_id: request_id.clone(),
            arrived: std::time::SystemTime::now(),
            started: started.into_std(),
        });
        Arrival { request_id, head }
    }

    /// The response with the request's id, logged once its body is sent.
    pub fn depart(&self, arrival: Arrival, mut response: Response<Body>) -> Response<Body> {
        response
            .headers_mut()
            .insert(request_id::X_REQUEST_ID, arrival.request_id);
        match (&self.access_log, arrival.head) {
            (Some(log), Some(head)) => log.wrap(head, response),
            _ => response,
        }
    }

    /// Notes for the access log who answered, after how many attempts.
    pub(super) fn served(
        &self,
        mut response: Response<Body>,
        replica: Option<String>,
        attempts: usize,
    ) -> Response<Body> {
        if self.access_log.is_some() {
            response.extensions_mut().insert(Served {
                replica,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        response
    }
}
