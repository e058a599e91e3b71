//! `/lb/status`: what the balancer was told at start, and every replica now.

use serde::{Deserialize, Serialize};

use crate::{pool::Snapshot, replica::Health};

/// The body of `/lb/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    #[serde(flatten)]
    pub settings: Settings,
    /// The policy in use (its registered name, or a custom policy's).
    pub policy: String,
    /// Every member, by ring id.
    pub replicas: Vec<ReplicaStatus>,
}

/// The facts fixed at start.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub listen: String,
    pub orchestrator: String,
    pub key: String,
    pub hash_preset: String,
    pub slots: u64,
    pub vnodes: u32,
    pub max_replicas: usize,
    /// Every policy `--policy` accepts.
    pub policies: Vec<String>,
    pub health: HealthSettings,
    pub retries: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HealthSettings {
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub fall: u32,
    pub rise: u32,
}

/// One replica as `/lb/status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReplicaStatus {
    pub name: String,
    pub id: u32,
    pub addr: String,
    pub health: Health,
    pub in_flight: u64,
    pub served: u64,
    pub failures: u64,
    pub weight: u32,
    pub generation: u64,
    pub pid: Option<u32>,
    pub uptime_s: f64,
}

impl Status {
    pub fn new(settings: &Settings, snapshot: &Snapshot) -> Self {
        let replicas = snapshot
            .replicas
            .iter()
            .map(|r| ReplicaStatus {
                name: r.name.clone(),
                id: r.id,
                addr: r.addr.to_string(),
                health: r.health(),
                in_flight: r.in_flight(),
                served: r.served(),
                failures: r.failures(),
                weight: r.weight,
                generation: r.generation,
                pid: r.pid,
                uptime_s: r.started.elapsed().as_secs_f64(),
            })
            .collect();
        Self {
            settings: settings.clone(),
            policy: snapshot.policy.name().to_owned(),
            replicas,
        }
    }
}
