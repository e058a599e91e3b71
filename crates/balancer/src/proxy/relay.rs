//! What goes back to the client once an attempt has an answer: the
//! replica's response streamed through (its framing and hop-by-hop headers
//! settled), or the answer to an upload the client broke.

use super::*;

impl Proxy {
    /// The answer to a request whose upload failed: the client's fault, so
    /// its connection is closed (its framing cannot be trusted any more).
    pub(super) fn client_fault(&self, fault: ClientFault, call: Call) -> Response<Body> {
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
    pub(super) fn relay(
        &self,
        resp: Response<Answer>,
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
            Body::new(
                InFlightBody::new(
                    body,
                    in_flight,
                    self.config.upstream_idle,
                    self.events.clone(),
                    request,
                    call.deadline,
                )
                .keeping(self.config.max_idle_per_replica),
            ),
        )
    }
}
