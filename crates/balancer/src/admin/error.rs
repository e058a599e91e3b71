//! Every error the admin API answers, mapped to the contract's JSON
//! (`{"message": "<Error> ...", "status": "failure"}`) and its status code
//! in one place.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{change::InvalidInput, error::failure, supervisor::MembershipError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid change.
    #[error(transparent)]
    Input(#[from] InvalidInput),
    /// A valid change the pool cannot take.
    #[error(transparent)]
    Membership(#[from] MembershipError),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("missing or wrong admin token")]
    Unauthorized,
    /// A path under `/lb/` that is not an endpoint.
    #[error("'{0}' is not an endpoint of the balancer")]
    NotFound(String),
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    /// The balancer failed at something that should not fail.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        use MembershipError as M;
        match self {
            Self::Input(_) => StatusCode::BAD_REQUEST,
            Self::Membership(e) => match e {
                M::NotEnough { .. } | M::OverMax { .. } => StatusCode::BAD_REQUEST,
                M::Unknown(_) => StatusCode::NOT_FOUND,
                M::Duplicate(_)
                | M::StillStarting(_)
                | M::Unsupported(_)
                | M::NoRingIdLeft
                | M::RingRejects { .. } => StatusCode::CONFLICT,
                M::NotAdded(_) | M::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
            },
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        failure(self.status(), &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::change::Direction;

    #[test]
    fn the_spec_errors_are_400_with_the_spec_text() {
        for (direction, text) in [
            (
                Direction::Add,
                "Length of hostname list is more than newly added instances",
            ),
            (
                Direction::Remove,
                "Length of hostname list is more than removable instances",
            ),
        ] {
            let e = ApiError::from(InvalidInput::TooManyHostnames(direction));
            assert_eq!(
                (e.status(), e.to_string().as_str()),
                (StatusCode::BAD_REQUEST, text)
            );
        }
    }

    #[test]
    fn membership_errors_keep_their_statuses() {
        for (e, status) in [
            (MembershipError::Duplicate("a".into()), 409),
            (MembershipError::StillStarting("a".into()), 409),
            (MembershipError::Unsupported("static"), 409),
            (MembershipError::Unknown("a".into()), 404),
            (
                MembershipError::NotEnough {
                    wanted: 2,
                    available: 1,
                },
                400,
            ),
            (
                MembershipError::OverMax {
                    wanted: 2,
                    current: 1,
                    max: 2,
                },
                400,
            ),
            (MembershipError::NotAdded(vec!["x".into()]), 503),
            (MembershipError::ShuttingDown, 503),
        ] {
            assert_eq!(ApiError::from(e).status().as_u16(), status);
        }
    }
}
