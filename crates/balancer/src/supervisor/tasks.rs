//! The slow work of membership, run outside the supervisor's loop in
//! tracked tasks: starting an instance and waiting until it is ready,
//! stopping one, draining a replica before its instance stops.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use tokio::sync::mpsc;

use super::{Message, Op, Supervisor};
use crate::{
    health::{Target, wait_ready},
    orchestrator::{Instance, Orchestrator, OrchestratorError, ReplicaSpec},
    replica::{Generation, Health, Protocol, Replica},
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
    fn readiness(&self) -> Readiness {
        Readiness {
            probe: self.watcher.probe.clone(),
            timeout: self.settings.ready_timeout,
            protocol: self.settings.upstream_protocol,
            stopping: self.stopping.clone(),
        }
    }

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
        let tx = self.tx.clone();
        let readiness = self.readiness();
        self.tasks.spawn(async move {
            if let Some(old) = old
                && let Err(e) = orchestrator.stop(old).await
            {
                tracing::warn!(error = %e, "stopping the failed instance");
            }
            let name = spec.name.clone();
            let result = async {
                let instance = orchestrator.spawn(spec.clone()).await?;
                let ready = readiness.wait(instance.addr, instance.protocol).await;
                if ready && !readiness.stopping.is_cancelled() {
                    return Ok(instance);
                }
                let _ = orchestrator.stop(instance.handle).await;
                Err(if readiness.stopping.is_cancelled() {
                    OrchestratorError::Cancelled {
                        name: spec.name.clone(),
                    }
                } else {
                    readiness.not_ready(spec.name.clone())
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
        let tx = self.tx.clone();
        let readiness = self.readiness();
        self.tasks.spawn(async move {
            let result = if readiness.wait(instance.addr, instance.protocol).await {
                Ok(instance)
            } else {
                Err(readiness.not_ready(name.clone()))
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

/// What waiting for an instance's first heartbeat needs, taken into the
/// task that waits.
struct Readiness {
    probe: Arc<dyn crate::health::Probe>,
    timeout: Duration,
    protocol: Protocol,
    stopping: tokio_util::sync::CancellationToken,
}

impl Readiness {
    /// Whether the instance at `addr` (speaking `protocol`, or the
    /// configured one) answers its heartbeat within the timeout (false at
    /// once when shutdown begins).
    async fn wait(&self, addr: SocketAddr, protocol: Option<Protocol>) -> bool {
        let Ok(authority) = addr.to_string().parse::<http::uri::Authority>() else {
            return false;
        };
        let target = Target {
            authority: &authority,
            protocol: protocol.unwrap_or(self.protocol),
        };
        tokio::select! {
            ready = wait_ready(self.probe.as_ref(), target, self.timeout) => ready,
            () = self.stopping.cancelled() => false,
        }
    }

    fn not_ready(&self, name: String) -> OrchestratorError {
        OrchestratorError::NotReady {
            name,
            timeout_ms: u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX),
        }
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
