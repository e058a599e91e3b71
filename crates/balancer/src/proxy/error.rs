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
    /// The client's request body was malformed or cut off.
    BadRequestBody,
    /// The client's request body paused too long or came too slowly.
    ClientTimeout,
    /// Every replica tried was at its `--max-conns-per-replica` limit for
    /// the whole `--queue-timeout`.
    Busy,
    /// A replica switched protocols on a request that did not ask it to.
    UnaskedSwitch,
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
            Self::BadRequestBody => failure(
                StatusCode::BAD_REQUEST,
                "the request body was malformed or cut off",
            ),
            Self::ClientTimeout => failure(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ),
            Self::Busy => failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "every replica tried is at its connection limit",
            ),
            Self::UnaskedSwitch => failure(
                StatusCode::BAD_GATEWAY,
                "the replica switched protocols on a request that did not ask to",
            ),
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
