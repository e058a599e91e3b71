//! The load generator and the experiments A-1..A-4.
//!
//! [`run`] fires N requests with bounded concurrency on keep-alive
//! connections and reports requests per replica, throughput and latency
//! percentiles. [`experiment`] starts its own balancer stack, drives load
//! through it and writes raw data, SVG charts ([`chart`]) and a generated
//! summary under `analysis/`. [`soak`] is a bounded chaos run against a
//! balancer process: steady load, abusive clients, replicas killed, frozen,
//! added and removed, and the goals that must hold through it.

pub mod chart;
pub mod experiment;
pub mod run;
pub mod soak;

pub use run::{LoadError, Report, RunConfig, run};
