//! Errors the admin API answers, mapped to the contract's JSON in one place.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};

/// The contract's failure body: `{"message": "<Error> ...", "status": "failure"}`.
pub fn failure(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "message": format!("<Error> {message}"), "status": "failure" })),
    )
        .into_response()
}

/// Everything `/add`, `/rm` and friends can refuse. No variant leaves the
/// pool changed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("Length of hostname list is more than newly added instances")]
    TooManyHostnamesToAdd,
    #[error("Length of hostname list is more than removable instances")]
    TooManyHostnamesToRemove,
    #[error("{0}")]
    BadRequest(String),
    #[error("request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("hostname '{0}' is already in use")]
    Duplicate(String),
    #[error("hostname '{0}' is not a replica")]
    Unknown(String),
    #[error("cannot remove {wanted} replicas: only {available} can be removed")]
    NotEnough { wanted: usize, available: usize },
    #[error("adding {wanted} replicas would exceed --max-replicas ({max}); {current} exist")]
    OverMax {
        wanted: usize,
        current: usize,
        max: usize,
    },
    #[error("{0}")]
    Conflict(String),
    #[error("missing or wrong admin token")]
    Unauthorized,
    #[error("{0}")]
    Unavailable(String),
}

impl AdminError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooManyHostnamesToAdd
            | Self::TooManyHostnamesToRemove
            | Self::BadRequest(_)
            | Self::NotEnough { .. }
            | Self::OverMax { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Duplicate(_) | Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Unknown(_) => StatusCode::NOT_FOUND,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        failure(self.status(), &self)
    }
}

/// Why the balancer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Orchestrator(#[from] crate::orchestrator::OrchestratorError),
    #[error("server error: {0}")]
    Serve(std::io::Error),
}
