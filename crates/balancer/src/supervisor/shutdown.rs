//! Shutdown: drain and stop every member, and wait (bounded) for the
//! membership work still in flight.

use tokio::sync::mpsc;

use super::{
    Message, Phase, Supervisor,
    tasks::{StopKind, retire},
};

impl Supervisor {
    /// Drains and stops every member, and waits (bounded by
    /// `ready_timeout + drain_timeout`) for the tasks still in flight:
    /// removals draining and stopping, and starts, whose instances are
    /// stopped once they come up.
    pub(super) async fn shutdown(mut self, mut rx: mpsc::UnboundedReceiver<Message>) {
        self.stopping.cancel();
        // From here on a finished start cannot report and stops its own
        // instance; one that reported already is still in the buffer.
        rx.close();
        while let Some(msg) = rx.recv().await {
            // Requests waiting for an answer get "shutting down" when their
            // reply is dropped here.
            if let Message::Started {
                result: Ok(instance),
                ..
            } = msg
            {
                self.stop_later(instance.handle, None);
            }
        }
        let grace = self.settings.drain_timeout;
        let mut stops = Vec::new();
        for (_, member) in std::mem::take(&mut self.members) {
            let (replica, handle, how) = match member.phase {
                Phase::Running {
                    replica, handle, ..
                } => (replica, handle, StopKind::OnShutdown),
                // An uncommitted `/add` is answered as failed: nothing of it
                // may outlive the balancer, whatever the orchestrator's habit.
                Phase::Adding {
                    started: Some(s), ..
                } => (s.replica, s.handle, StopKind::Always),
                // A start in flight stops its own instance (see
                // `start_instance`); a dead one was stopped already.
                Phase::Adding { started: None, .. } | Phase::Replacing { .. } => continue,
            };
            stops.push(retire(
                self.orchestrator.clone(),
                Some(replica),
                handle,
                grace,
                how,
            ));
        }
        self.tasks.close();
        let bound = self.settings.ready_timeout + self.settings.drain_timeout;
        let tasks = self.tasks.clone();
        let in_flight = async move {
            if tokio::time::timeout(bound, tasks.wait()).await.is_err() {
                tracing::warn!(
                    tasks = tasks.len(),
                    "shutting down without waiting longer for starts and stops in flight"
                );
            }
        };
        tokio::join!(futures_util::future::join_all(stops), in_flight);
        self.orchestrator.shutdown().await;
    }
}
