//! Why the proxy could not relay a replica's answer, and the response each
//! reason gets: the one place those statuses and messages are decided.

use std::time::Duration;

use axum::body::Body;
use http::{Response, StatusCode};

use super::grpc;
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
    /// The status and message of this failure.
    fn describe(self) -> (StatusCode, String) {
        let (status, message) = match self {
            Self::NoReplica => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy replica is available",
            ),
            Self::BadRequestBody => (
                StatusCode::BAD_REQUEST,
                "the request body was malformed or cut off",
            ),
            Self::ClientTimeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ),
            Self::Busy => (
                StatusCode::SERVICE_UNAVAILABLE,
                "every replica tried is at its connection limit",
            ),
            Self::UnaskedSwitch => (
                StatusCode::BAD_GATEWAY,
                "the replica switched protocols on a request that did not ask to",
            ),
            Self::Connect => (StatusCode::BAD_GATEWAY, "could not connect to any replica"),
            Self::Failed => (
                StatusCode::BAD_GATEWAY,
                "the replica closed the connection before answering",
            ),
            Self::Timeout(after) => {
                return (
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("the replica did not answer within {} ms", after.as_millis()),
                );
            }
        };
        (status, message.to_owned())
    }

    /// The response: the contract's JSON failure, or for a gRPC call a
    /// trailers-only gRPC error.
    pub(super) fn response(self, grpc_call: bool) -> Response<Body> {
        let (status, message) = self.describe();
        if !grpc_call {
            return failure(status, message);
        }
        let code = match self {
            Self::Timeout(_) | Self::ClientTimeout => grpc::Code::DeadlineExceeded,
            Self::BadRequestBody => grpc::Code::Internal,
            Self::NoReplica | Self::Busy | Self::UnaskedSwitch | Self::Connect | Self::Failed => {
                grpc::Code::Unavailable
            }
        };
        grpc::error_response(code, &message)
    }
}
