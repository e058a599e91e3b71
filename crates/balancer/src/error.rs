//! The contract's failure body, and why the balancer could not start.

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
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}
