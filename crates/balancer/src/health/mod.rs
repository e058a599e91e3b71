//! Health: active checks, readiness waits, and the watcher that turns a
//! replica's death into an event for the supervisor. How a replica is asked
//! is a [`Probe`] ([`probe`]: `GET /heartbeat`; [`grpc`]: the gRPC health
//! service).
//!
//! Active checks run every `interval` with a `timeout`; `fall` failures in a
//! row mark a replica down, `rise` successes mark it up again. A heartbeat
//! that timed out while the replica went on answering proxied requests is
//! not a failure: the balancer was too busy to read it in time. Passive
//! checks live in the proxy: a connect error or reset marks a replica
//! `Suspect` at once, which takes it out of rotation until this checker has
//! seen it answer `rise` times (the back-off), or down after `fall` misses.

pub mod grpc;
pub mod probe;

use std::{sync::Arc, time::Duration};

use tokio::sync::mpsc;

pub use grpc::GrpcProbe;
pub use probe::{HttpProbe, Probe, Target, wait_ready};
use tokio_util::sync::CancellationToken;

use crate::{
    events::{EventKind, EventLog},
    orchestrator::BoxFuture,
    replica::{Generation, Health, Replica},
};

/// Active check settings.
#[derive(Debug, Clone, Copy)]
pub struct HealthConfig {
    pub interval: Duration,
    pub timeout: Duration,
    pub fall: u32,
    pub rise: u32,
}

/// What the watcher tells the supervisor.
#[derive(Debug)]
pub enum Signal {
    /// The instance's process or container ended.
    Exited {
        name: String,
        generation: Generation,
    },
    /// `fall` heartbeats in a row failed.
    Down {
        name: String,
        generation: Generation,
    },
}

/// Everything a watcher needs.
#[derive(Clone)]
pub struct Watcher {
    pub config: HealthConfig,
    pub probe: Arc<dyn Probe>,
    pub signals: mpsc::UnboundedSender<Signal>,
    pub events: Arc<EventLog>,
}

impl Watcher {
    /// Watches one replica incarnation until `cancel`: its exit (if the
    /// orchestrator can tell) and its heartbeat.
    pub fn spawn(
        &self,
        replica: Arc<Replica>,
        exited: Option<BoxFuture<'static, ()>>,
        cancel: CancellationToken,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            let exited = async move {
                match exited {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = cancel.cancelled() => {}
                () = exited => {
                    replica.set_health(Health::Down);
                    this.events.record(EventKind::Exited, &replica.name, format!("generation {}", replica.generation));
                    let _ = this.signals.send(Signal::Exited { name: replica.name.clone(), generation: replica.generation });
                }
                () = this.probe_loop(&replica) => {}
            }
        });
    }

    async fn probe_loop(&self, replica: &Replica) {
        let mut counts = Counts::default();
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let served = replica.served();
            let asked = tokio::time::Instant::now();
            let answered = self
                .probe
                .check(Target::of(replica), self.config.timeout)
                .await;
            if !answered && asked.elapsed() >= self.config.timeout && replica.served() > served {
                // Late, not refused or failed, while it kept answering the
                // requests we sent it: the delay is ours (an event loop
                // saturated by the load), and counting it would eject every
                // healthy replica of an overloaded balancer at once.
                tracing::debug!(replica = %replica.name, "heartbeat late while the replica answered requests; not counted");
                continue;
            }
            if !answered {
                replica.record_failure();
            }
            let health = replica.health();
            match counts.observe(answered, health, self.config) {
                Some(Verdict::Up) if replica.transition(health, Health::Up) => {
                    self.events.record(
                        EventKind::Up,
                        &replica.name,
                        format!("{} heartbeats answered", self.config.rise),
                    );
                }
                Some(Verdict::Down) => {
                    replica.set_health(Health::Down);
                    self.events.record(
                        EventKind::Down,
                        &replica.name,
                        format!("{} heartbeats missed", self.config.fall),
                    );
                    let _ = self.signals.send(Signal::Down {
                        name: replica.name.clone(),
                        generation: replica.generation,
                    });
                }
                Some(Verdict::Up) | None => {}
            }
        }
    }
}

/// What a run of heartbeats decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Up,
    Down,
}

/// Consecutive heartbeat results of one replica.
///
/// Answers count only while the replica is out of rotation, so `rise`
/// starts again from zero each time the proxy marks it suspect: a replica
/// that was healthy for an hour and then reset a connection still needs
/// `rise` fresh answers before it gets traffic again.
#[derive(Debug, Default)]
struct Counts {
    fails: u32,
    oks: u32,
}

impl Counts {
    fn observe(&mut self, answered: bool, health: Health, config: HealthConfig) -> Option<Verdict> {
        if answered {
            self.fails = 0;
            if !matches!(health, Health::Suspect | Health::Down) {
                self.oks = 0;
                return None;
            }
            self.oks = self.oks.saturating_add(1);
            (self.oks >= config.rise).then(|| {
                self.oks = 0;
                Verdict::Up
            })
        } else {
            self.oks = 0;
            self.fails = self.fails.saturating_add(1);
            (self.fails == config.fall && health != Health::Draining).then_some(Verdict::Down)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: HealthConfig = HealthConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(100),
        fall: 2,
        rise: 3,
    };

    use Health::{Down, Draining, Suspect, Up};

    /// Feeds (answered, health seen) steps and checks each verdict.
    fn steps(counts: &mut Counts, steps: &[(bool, Health, Option<Verdict>)]) {
        for (i, (answered, health, want)) in steps.iter().enumerate() {
            let got = counts.observe(*answered, *health, CONFIG);
            assert_eq!(&got, want, "step {i}: answered {answered}, {health:?}");
        }
    }

    #[test]
    fn a_suspect_replica_needs_rise_fresh_answers_however_long_it_was_up() {
        let mut counts = Counts::default();
        steps(&mut counts, &[(true, Up, None); 50]);
        // The proxy marks it suspect; answers before that do not count.
        let back_after_three = [
            (true, Suspect, None),
            (true, Suspect, None),
            (true, Suspect, Some(Verdict::Up)),
        ];
        steps(&mut counts, &back_after_three);
        // Suspect again later: again three answers.
        steps(&mut counts, &[(true, Up, None)]);
        steps(&mut counts, &back_after_three);
    }

    #[test]
    fn fall_misses_in_a_row_mark_down_once_and_a_miss_resets_rise() {
        steps(
            &mut Counts::default(),
            &[
                (false, Up, None),
                (true, Up, None),
                (false, Up, None),
                (false, Suspect, Some(Verdict::Down)),
                (false, Down, None),
                (true, Down, None),
                (false, Down, None),
                (true, Down, None),
                (true, Down, None),
                (true, Down, Some(Verdict::Up)),
            ],
        );
        // A draining replica is never reported down (it is leaving anyway).
        steps(
            &mut Counts::default(),
            &[(false, Draining, None), (false, Draining, None)],
        );
    }

    /// A probe whose every heartbeat times out.
    #[derive(Debug)]
    struct Late;

    impl Probe for Late {
        fn check<'a>(&'a self, _: Target<'a>, timeout: Duration) -> BoxFuture<'a, bool> {
            Box::pin(async move {
                tokio::time::sleep(timeout).await;
                false
            })
        }
    }

    /// Whether `Late` heartbeats mark a replica down within a second,
    /// with proxied requests answered meanwhile or not.
    async fn marked_down(serving: bool) -> bool {
        let replica = Arc::new(Replica::new(
            "s1",
            1,
            "127.0.0.1:1".parse().expect("addr"),
            1,
            0,
        ));
        let (signals, mut received) = mpsc::unbounded_channel();
        let watcher = Watcher {
            config: HealthConfig {
                interval: Duration::from_millis(10),
                timeout: Duration::from_millis(20),
                fall: 2,
                rise: 2,
            },
            probe: Arc::new(Late),
            signals,
            events: Arc::new(EventLog::default()),
        };
        let cancel = CancellationToken::new();
        watcher.spawn(replica.clone(), None, cancel.clone());
        let traffic = tokio::spawn({
            let replica = replica.clone();
            async move {
                if !serving {
                    return;
                }
                loop {
                    replica.start_request().served();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        });
        let down = tokio::time::timeout(Duration::from_secs(1), received.recv())
            .await
            .is_ok();
        cancel.cancel();
        traffic.abort();
        down
    }

    #[tokio::test]
    async fn late_heartbeats_while_requests_are_answered_do_not_mark_down() {
        assert!(!marked_down(true).await, "ejected while answering");
        assert!(marked_down(false).await, "a silent replica stayed up");
    }
}
