//! Follows the swarm's membership: reads services, tasks and nodes every
//! poll interval, and at once (then every 100 ms for 2 s) after an engine
//! event, and sends each reading to the supervisor.
//!
//! Swarm emits no task events (moby #37403): a killed task shows up only as
//! `container` events on its own node, and another balancer's `/add` as a
//! `service` event on managers. Those events only say "look now"; the
//! reading of `GET /tasks` is always the truth, so a missed event costs at
//! most one poll interval, never a wrong member.

use std::{sync::Arc, time::Duration};

use http_body_util::BodyExt as _;
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::{Inner, engine::with_filters};
use crate::orchestrator::Observation;

/// Poll interval right after an event: a restarted task runs ~1-2 s after
/// its container died, and we want it back as soon as it does.
const FAST_POLL: Duration = Duration::from_millis(100);
/// How long fast polling lasts after an event.
const FAST_FOR: Duration = Duration::from_secs(3);
/// Pause before an event stream that failed is opened again.
const RECONNECT: Duration = Duration::from_secs(1);

/// Runs until `stop` (or the supervisor is gone).
pub(super) async fn run(
    inner: Arc<Inner>,
    tx: mpsc::UnboundedSender<Observation>,
    stop: CancellationToken,
) {
    let poke = Arc::new(Notify::new());
    // Container start/die of swarm tasks (local to this node) and
    // service/node changes (every manager sees them).
    let streams = [
        json!({"type": ["container"], "event": ["start", "die", "kill"],
               "label": ["com.docker.swarm.service.id"]}),
        json!({"type": ["service", "node"]}),
    ];
    for filters in streams {
        let path = with_filters("/events", &filters);
        tokio::spawn(listen(inner.clone(), path, poke.clone(), stop.clone()));
    }
    let mut fast_until = tokio::time::Instant::now();
    let mut last_error: Option<String> = None;
    loop {
        let taken_at = tokio::time::Instant::now();
        match inner.members().await {
            Ok(members) => {
                if last_error.take().is_some() {
                    tracing::info!("swarm engine answers again");
                }
                if tx.send(Observation { taken_at, members }).is_err() {
                    return;
                }
            }
            Err(e) => {
                // Logged once per outage, not every second.
                let text = e.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "cannot read the swarm's tasks");
                }
                last_error = Some(text);
            }
        }
        let now = tokio::time::Instant::now();
        let wait = if now < fast_until {
            FAST_POLL
        } else {
            inner.settings.poll
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
            () = poke.notified() => {
                fast_until = tokio::time::Instant::now() + FAST_FOR;
            }
        }
    }
}

/// Reads one event stream and pokes on every chunk; reconnects on error.
async fn listen(inner: Arc<Inner>, path: String, poke: Arc<Notify>, stop: CancellationToken) {
    loop {
        let read = async {
            let mut body = inner.engine.stream(&path).await?;
            while let Some(frame) = body.frame().await {
                if frame.is_ok_and(|f| f.data_ref().is_some_and(|d| !d.is_empty())) {
                    poke.notify_one();
                }
            }
            Ok::<(), super::EngineError>(())
        };
        tokio::select! {
            () = stop.cancelled() => return,
            result = read => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "swarm event stream");
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(RECONNECT) => {}
        }
    }
}
