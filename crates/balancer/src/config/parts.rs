//! What each part of the balancer is built from: the settings of the
//! policy, the supervisor, health checks, the proxy and `/lb/status`, each
//! derived from the flags in one place.

use std::{collections::HashMap, time::Duration};

use super::Config;

impl Config {
    /// Options of the policies (ring shape, load slack).
    pub fn policy_options(&self) -> crate::policy::PolicyOptions {
        crate::policy::PolicyOptions {
            ring: ring::RingConfig {
                slots: self.slots,
                vnodes: self.vnodes.unwrap_or_else(|| self.slots.max(2).ilog2()),
                preset: self.hash_preset,
            },
            bounded_eps: self.bounded_eps,
        }
    }

    /// Settings of membership changes.
    pub fn supervisor_settings(
        &self,
        weights: HashMap<String, u32>,
    ) -> crate::supervisor::Settings {
        crate::supervisor::Settings {
            max_replicas: self.max_replicas,
            ready_timeout: self.ready_timeout,
            drain_timeout: self.drain_timeout,
            retry_backoff: crate::supervisor::REPLACE_RETRY_BACKOFF,
            weights,
            health: self.health_config(),
        }
    }

    /// Settings of active health checks.
    pub fn health_config(&self) -> crate::health::HealthConfig {
        crate::health::HealthConfig {
            interval: self.health_interval,
            timeout: self.health_timeout,
            fall: self.fall,
            rise: self.rise,
        }
    }

    /// Settings of the data path; `manages_replicas` when the replicas are
    /// ours (their 404 then becomes the spec's 400).
    pub fn proxy_config(&self, manages_replicas: bool) -> crate::proxy::ProxyConfig {
        crate::proxy::ProxyConfig {
            key: self.key.clone(),
            retries: self.retries,
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            spec_not_found: manages_replicas,
            max_idle_per_replica: self.max_idle,
        }
    }

    /// The facts `/lb/status` shows.
    pub fn status_settings(
        &self,
        listen: std::net::SocketAddr,
        orchestrator: &str,
        options: &crate::policy::PolicyOptions,
    ) -> crate::admin::status::Settings {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        crate::admin::status::Settings {
            listen: listen.to_string(),
            orchestrator: orchestrator.to_owned(),
            key: self.key.to_string(),
            hash_preset: self.hash_preset.to_string(),
            slots: options.ring.slots,
            vnodes: options.ring.vnodes,
            max_replicas: self.max_replicas,
            policies: crate::policy::names()
                .into_iter()
                .map(String::from)
                .collect(),
            health: crate::admin::status::HealthSettings {
                interval_ms: ms(self.health_interval),
                timeout_ms: ms(self.health_timeout),
                fall: self.fall,
                rise: self.rise,
            },
            retries: self.retries,
        }
    }

    /// Weights from `--weight NAME=W`.
    pub fn weights(&self) -> Result<HashMap<String, u32>, String> {
        self.weight
            .iter()
            .map(|w| {
                let (name, value) = w
                    .split_once('=')
                    .ok_or_else(|| format!("--weight '{w}' is not NAME=W"))?;
                let value: u32 = value
                    .parse()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| format!("--weight '{w}': W must be a positive integer"))?;
                Ok((name.to_owned(), value))
            })
            .collect()
    }
}
