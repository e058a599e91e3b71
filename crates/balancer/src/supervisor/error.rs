//! Why the supervisor refuses a valid change. No variant leaves the pool
//! changed. The admin API maps each to the contract's JSON (status code and
//! message) in one place (`admin::error`).

use crate::orchestrator::OrchestratorError;

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("hostname '{0}' is already in use")]
    Duplicate(String),
    #[error("hostname '{0}' is not a replica")]
    Unknown(String),
    #[error("replica '{0}' is still starting")]
    StillStarting(String),
    #[error("cannot remove {wanted} replicas: only {available} can be removed")]
    NotEnough { wanted: usize, available: usize },
    #[error("adding {wanted} replicas would exceed --max-replicas ({max}); {current} exist")]
    OverMax {
        wanted: usize,
        current: usize,
        max: usize,
    },
    /// Someone else runs the replicas (`--orchestrator static`).
    #[error("{}", OrchestratorError::Unsupported(.0))]
    Unsupported(&'static str),
    #[error("no ring id is left")]
    NoRingIdLeft,
    /// The policy cannot be built for the grown member set (a ring too small).
    #[error("cannot add {n} replicas: {reason}")]
    RingRejects { n: usize, reason: String },
    /// Some instance of an `/add` did not come up; none was added.
    #[error("no replica was added: {}", .0.join("; "))]
    NotAdded(Vec<String>),
    #[error("the balancer is shutting down")]
    ShuttingDown,
}
