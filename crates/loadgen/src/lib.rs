//! The load generator and the experiments A-1..A-4.
//!
//! [`run`] fires N requests with bounded concurrency on keep-alive
//! connections and reports requests per replica, throughput and latency
//! percentiles. [`experiment`] starts its own balancer stack, drives load
//! through it and writes raw data, SVG charts ([`chart`]) and a generated
//! summary under `analysis/`.

pub mod chart;
pub mod experiment;
pub mod run;

pub use run::{LoadError, Report, RunConfig, run};
