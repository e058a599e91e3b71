//! `/lb/status`: what the balancer was told at start, and every replica now.

use serde::{Deserialize, Serialize};

use std::time::Duration;

use crate::{config::Config, pool::Snapshot, replica::Health};

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
    /// Where the admin API listens when not on `listen`.
    pub admin_listen: Option<String>,
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
    /// Every limit and timeout in effect.
    pub limits: crate::config::LimitsStatus,
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

impl Settings {
    /// The facts `/lb/status` shows, from the configuration.
    pub fn from_config(
        c: &Config,
        listen: std::net::SocketAddr,
        admin_listen: Option<std::net::SocketAddr>,
        max_connections: usize,
        orchestrator: &str,
        options: &crate::policy::PolicyOptions,
    ) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            listen: listen.to_string(),
            admin_listen: admin_listen.map(|a| a.to_string()),
            orchestrator: orchestrator.to_owned(),
            key: c.key.to_string(),
            hash_preset: c.hash_preset.to_string(),
            slots: options.ring.slots,
            vnodes: options.ring.vnodes,
            max_replicas: c.max_replicas,
            policies: crate::policy::names()
                .into_iter()
                .map(String::from)
                .collect(),
            health: HealthSettings {
                interval_ms: ms(c.health_interval),
                timeout_ms: ms(c.health_timeout),
                fall: c.fall,
                rise: c.rise,
            },
            retries: c.retries,
            limits: c.limits.status(max_connections),
        }
    }
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
