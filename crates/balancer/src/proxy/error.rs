//! Why the proxy could not relay a replica's answer, and the response each
//! reason gets: the one place those statuses and messages are decided.

use std::time::Duration;

use axum::body::Body;
use http::{Response, StatusCode};

use crate::error::failure;

/// The last reason a request got no answer from a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpstreamError {
    /// No replica was usable (all down, or all tried).
    NoReplica,
    /// The request body could not be read from the client.
    BadRequestBody,
    /// Nothing was sent: no replica accepted a connection.
    Connect,
    /// The replica closed or reset the connection before answering.
    Failed,
    /// The replica did not answer within `--response-timeout`.
    Timeout(Duration),
}

impl UpstreamError {
    pub(super) fn response(self) -> Response<Body> {
        match self {
            Self::NoReplica => failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy replica is available",
            ),
            Self::BadRequestBody => {
                failure(StatusCode::BAD_REQUEST, "could not read the request body")
            }
            Self::Connect => failure(StatusCode::BAD_GATEWAY, "could not connect to any replica"),
            Self::Failed => failure(
                StatusCode::BAD_GATEWAY,
                "the replica closed the connection before answering",
            ),
            Self::Timeout(after) => failure(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the replica did not answer within {} ms", after.as_millis()),
            ),
        }
    }
}
