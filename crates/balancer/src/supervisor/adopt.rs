//! Start-up: taking over what the orchestrator already runs, so a
//! restarted balancer neither duplicates nor orphans its replicas.

use std::sync::Arc;

use super::{Member, Phase, Supervisor};
use crate::{
    events::EventKind,
    orchestrator::{OrchestratorError, ReplicaSpec},
    replica::Replica,
};

impl Supervisor {
    /// Takes over what the orchestrator already runs.
    pub(super) async fn adopt(&mut self) -> Result<(), OrchestratorError> {
        for adopted in self.orchestrator.adopt().await? {
            let ReplicaSpec { name, id } = adopted.spec;
            let instance = adopted.instance;
            if self.members.contains_key(&name) || self.members.values().any(|m| m.id == id) {
                // Never overwrite a member (which would leave its instance
                // running unmanaged): keep the first, stop the duplicate.
                tracing::warn!(
                    %name, id, handle = %instance.handle,
                    "found a second instance with this name or ring id; stopping it"
                );
                self.events
                    .record(EventKind::Duplicate, &name, instance.addr.to_string());
                self.stop_later(instance.handle, None);
                continue;
            }
            let generation = self.generations.next();
            let weight = self
                .settings
                .weights
                .get(&name)
                .copied()
                .unwrap_or(adopted.weight);
            let replica = Arc::new(
                Replica::new(&name, id, instance.addr, weight, generation)
                    .with_pid(instance.pid)
                    .with_protocol(self.protocol_of(&instance))
                    .with_limit(self.settings.max_conns_per_replica),
            );
            self.events
                .record(EventKind::Adopted, &name, instance.addr.to_string());
            let phase = Phase::running(&self.watcher, replica, instance.handle, instance.exited);
            self.members.insert(
                name,
                Member {
                    id,
                    generation,
                    phase,
                    joined: tokio::time::Instant::now(),
                },
            );
        }
        self.publish();
        Ok(())
    }
}
