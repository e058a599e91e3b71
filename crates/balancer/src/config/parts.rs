//! What each part of the balancer is built from: the settings of the
//! policy, the supervisor, health checks and the proxy, each derived from
//! the flags in one place (`/lb/status` builds its own from the config).

use std::collections::HashMap;

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
            max_conns_per_replica: self.limits.max_conns_per_replica,
            upstream_protocol: self.upstream_protocol,
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
        let l = &self.limits;
        crate::proxy::ProxyConfig {
            key: self.key.clone(),
            retries: self.retries,
            connect_timeout: l.connect_timeout,
            response_timeout: l.response_timeout,
            spec_not_found: manages_replicas,
            max_idle_per_replica: self.max_idle,
            upload: crate::proxy::UploadLimits {
                idle: l.client_body_timeout,
                min_rate: l.client_body_min_rate,
                grace: l.client_body_grace,
            },
            upstream_idle: l.upstream_idle_timeout,
            tunnel_idle: l.tunnel_timeout,
            queue_timeout: l.queue_timeout,
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
