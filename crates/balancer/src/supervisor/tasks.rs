//! The slow work of membership, run outside the supervisor's loop in
//! tracked tasks: starting an instance and waiting until it is ready,
//! stopping one, draining a replica before its instance stops.

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{Message, Op, Supervisor};
use crate::{
    health::{Target, wait_ready},
    orchestrator::{Instance, Orchestrator, OrchestratorError, ReplicaSpec},
    replica::{Generation, Health, Replica},
};

/// How often a drain looks at the requests still in flight.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// How an instance that is retired is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StopKind {
    /// Stopped, whatever the orchestrator's habit (removed, or never
    /// committed).
    Always,
    /// The balancer is going away: the orchestrator may leave it running
    /// for the next balancer to adopt.
    OnShutdown,
}

impl Supervisor {
    /// Starts an instance and waits for its heartbeat in a tracked task;
    /// the result comes back as [`Message::Started`]. `old` is stopped
    /// first. If shutdown begins meanwhile, the task stops the instance
    /// itself (nobody would take the result any more).
    pub(super) fn start_instance(
        &self,
        op: Op,
        spec: ReplicaSpec,
        generation: Generation,
        old: Option<String>,
    ) {
        let orchestrator = self.orchestrator.clone();
        let probe = self.watcher.probe.clone();
        let tx = self.tx.clone();
        let ready_timeout = self.settings.ready_timeout;
        let default_protocol = self.settings.upstream_protocol;
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            if let Some(old) = old
                && let Err(e) = orchestrator.stop(old).await
            {
                tracing::warn!(error = %e, "stopping the failed instance");
            }
            let name = spec.name.clone();
            let result = async {
                let instance = orchestrator.spawn(spec.clone()).await?;
                let ready = until_ready(
                    probe.as_ref(),
                    instance.addr,
                    instance.protocol.unwrap_or(default_protocol),
                    ready_timeout,
                    &stopping,
                )
                .await;
                if ready && !stopping.is_cancelled() {
                    return Ok(instance);
                }
                let _ = orchestrator.stop(instance.handle).await;
                Err(if stopping.is_cancelled() {
                    OrchestratorError::Cancelled {
                        name: spec.name.clone(),
                    }
                } else {
                    OrchestratorError::NotReady {
                        name: spec.name.clone(),
                        timeout_ms: u64::try_from(ready_timeout.as_millis()).unwrap_or(u64::MAX),
                    }
                })
            }
            .await;
            let sent = tx.send(Message::Started {
                op,
                name,
                generation,
                result,
            });
            // The supervisor stopped taking messages (shutdown): stop it here.
            if let Err(mpsc::error::SendError(Message::Started {
                result: Ok(instance),
                ..
            })) = sent
            {
                let _ = orchestrator.stop(instance.handle).await;
            }
        });
    }

    /// Waits in a tracked task until `instance`, which the engine runs (not
    /// started by us), answers its heartbeat; reports [`Message::Started`]
    /// with [`Op::Follow`]. Never stops it: the engine owns it.
    pub(super) fn follow_instance(&self, name: String, generation: Generation, instance: Instance) {
        let probe = self.watcher.probe.clone();
        let tx = self.tx.clone();
        let ready_timeout = self.settings.ready_timeout;
        let default_protocol = self.settings.upstream_protocol;
        let stopping = self.stopping.clone();
        self.tasks.spawn(async move {
            let ready = until_ready(
                probe.as_ref(),
                instance.addr,
                instance.protocol.unwrap_or(default_protocol),
                ready_timeout,
                &stopping,
            )
            .await;
            let result = if ready {
                Ok(instance)
            } else {
                Err(OrchestratorError::NotReady {
                    name: name.clone(),
                    timeout_ms: u64::try_from(ready_timeout.as_millis()).unwrap_or(u64::MAX),
                })
            };
            let _ = tx.send(Message::Started {
                op: Op::Follow,
                name,
                generation,
                result,
            });
        });
    }

    /// Stops an instance in a tracked task; then, if `name` is given,
    /// reports [`Message::Stopped`] so the name is free again.
    pub(super) fn stop_later(&self, handle: String, name: Option<String>) {
        let (orchestrator, tx) = (self.orchestrator.clone(), self.tx.clone());
        self.tasks.spawn(async move {
            if let Err(e) = orchestrator.stop(handle).await {
                tracing::warn!(error = %e, "stopping an instance that is not wanted");
            }
            if let Some(name) = name {
                let _ = tx.send(Message::Stopped { name });
            }
        });
    }

    /// Drains and stops a removed member's instance in a tracked task,
    /// then reports [`Message::Stopped`] for `name`.
    pub(super) fn retire_later(&self, name: String, replica: Arc<Replica>, handle: String) {
        let retiring = retire(
            self.orchestrator.clone(),
            Some(replica),
            handle,
            self.settings.drain_timeout,
            StopKind::Always,
        );
        let tx = self.tx.clone();
        self.tasks.spawn(async move {
            retiring.await;
            let _ = tx.send(Message::Stopped { name });
        });
    }
}

/// Whether the instance at `addr` answers its heartbeat within `timeout` (false at
/// once when shutdown begins).
async fn until_ready(
    probe: &dyn crate::health::Probe,
    addr: std::net::SocketAddr,
    protocol: crate::replica::Protocol,
    timeout: Duration,
    stopping: &tokio_util::sync::CancellationToken,
) -> bool {
    let Ok(authority) = addr.to_string().parse::<http::uri::Authority>() else {
        return false;
    };
    let target = Target {
        authority: &authority,
        protocol,
    };
    tokio::select! {
        ready = wait_ready(probe, target, timeout) => ready,
        () = stopping.cancelled() => false,
    }
}

/// Takes `replica` out of rotation, waits for its requests in flight
/// (bounded by `grace`), then stops its instance.
pub(super) async fn retire(
    orchestrator: Arc<dyn Orchestrator>,
    replica: Option<Arc<Replica>>,
    handle: String,
    grace: Duration,
    how: StopKind,
) {
    if let Some(replica) = replica {
        replica.set_health(Health::Draining);
        drain(&replica, grace).await;
    }
    let stopped = match how {
        StopKind::Always => orchestrator.stop(handle).await,
        StopKind::OnShutdown => orchestrator.stop_on_shutdown(handle).await,
    };
    if let Err(e) = stopped {
        tracing::warn!(error = %e, "stopping a retired replica");
    }
}

/// Waits until `replica` has no request in flight, or `grace` has passed.
async fn drain(replica: &Replica, grace: Duration) {
    let until = tokio::time::Instant::now() + grace;
    while replica.in_flight() > 0 && tokio::time::Instant::now() < until {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}
