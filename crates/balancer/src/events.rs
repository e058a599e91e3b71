//! A bounded log of what happened to replicas (down, replaced, added,
//! removed), served at `/lb/events`.
//!
//! Timestamps are Unix milliseconds so an outside observer (the A-3
//! experiment, an operator) can line them up with its own clock: time to
//! detect a failure is `down.at_ms - kill time`, time to recover is
//! `replaced.at_ms - kill time`.

use std::{
    collections::VecDeque,
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use serde::{Deserialize, Serialize};

/// How many events are kept; older ones are dropped.
const CAPACITY: usize = 1024;

/// What happened to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    /// Joined the pool through `/add` (or at start).
    Added,
    /// Found running at start and taken over.
    Adopted,
    /// A second instance of a name or ring id found at start; stopped.
    Duplicate,
    /// Left the pool through `/rm`.
    Removed,
    /// Its process or container ended.
    Exited,
    /// Missed `fall` heartbeats in a row.
    Down,
    /// A proxied request to it failed: out of rotation until it answers
    /// `rise` heartbeats.
    Suspect,
    /// Back in rotation after `rise` answered heartbeats.
    Up,
    /// A new incarnation is starting in its place.
    Replacing,
    /// The new incarnation serves.
    Replaced,
    /// The new incarnation did not start; tried again after a back-off.
    ReplaceFailed,
}

impl EventKind {
    /// Every kind, in the order above.
    pub const ALL: [Self; 11] = [
        Self::Added,
        Self::Adopted,
        Self::Duplicate,
        Self::Removed,
        Self::Exited,
        Self::Down,
        Self::Suspect,
        Self::Up,
        Self::Replacing,
        Self::Replaced,
        Self::ReplaceFailed,
    ];

    /// The name in `/lb/events` (`replace-failed`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "added",
            Self::Adopted => "adopted",
            Self::Duplicate => "duplicate",
            Self::Removed => "removed",
            Self::Exited => "exited",
            Self::Down => "down",
            Self::Suspect => "suspect",
            Self::Up => "up",
            Self::Replacing => "replacing",
            Self::Replaced => "replaced",
            Self::ReplaceFailed => "replace-failed",
        }
    }

    /// Whether the replica left rotation because it failed (the moment a
    /// failure is detected).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Suspect | Self::Exited | Self::Down)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of `/lb/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// Monotonic sequence number, so a poller can ask for what is new.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    pub kind: EventKind,
    pub replica: String,
    pub detail: String,
}

/// The body of `/lb/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Events {
    pub events: Vec<Event>,
}

#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<Event>)>,
    /// Events of each kind ever recorded (by `EventKind::ALL` index), for
    /// `/lb/metrics`: the log itself forgets old ones.
    counts: [std::sync::atomic::AtomicU64; EventKind::ALL.len()],
    /// Wakes long-polls of `/lb/events?wait_ms=` when an event is recorded.
    recorded: tokio::sync::Notify,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventLog {
    pub fn record(&self, kind: EventKind, replica: &str, detail: impl Into<String>) {
        let detail = detail.into();
        if let Some(i) = EventKind::ALL.iter().position(|k| *k == kind) {
            self.counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        tracing::info!(kind = kind.as_str(), replica, %detail, "replica event");
        let mut guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (seq, events) = &mut *guard;
        *seq += 1;
        if events.len() == CAPACITY {
            events.pop_front();
        }
        events.push_back(Event {
            seq: *seq,
            at_ms: unix_ms(),
            kind,
            replica: replica.to_owned(),
            detail,
        });
        drop(guard);
        self.recorded.notify_waiters();
    }

    /// Events after `after`, waiting up to `wait` for one if there is none
    /// yet (a long poll: the dashboard sees a replica fall the moment it
    /// does, without polling fast).
    pub async fn wait_since(&self, after: u64, wait: std::time::Duration) -> Vec<Event> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so an event recorded in between
            // still wakes this waiter.
            let notified = self.recorded.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let events = self.since(after);
            if !events.is_empty() {
                return events;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// How many events of `kind` were ever recorded.
    pub fn count(&self, kind: EventKind) -> u64 {
        EventKind::ALL
            .iter()
            .position(|k| *k == kind)
            .map_or(0, |i| {
                self.counts[i].load(std::sync::atomic::Ordering::Relaxed)
            })
    }

    /// Events with a sequence number above `after`.
    pub fn since(&self, after: u64) -> Vec<Event> {
        let guard = self
            .inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        guard.1.iter().filter(|e| e.seq > after).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_order_and_a_bounded_history() {
        let log = EventLog::default();
        for i in 0..(CAPACITY + 10) {
            log.record(EventKind::Up, "s1", i.to_string());
        }
        let all = log.since(0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 11);
        assert_eq!(log.since(all[CAPACITY - 2].seq).len(), 1);
        assert_eq!(log.count(EventKind::Up), CAPACITY as u64 + 10);
        assert_eq!(log.count(EventKind::Down), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_poll_returns_at_the_next_event_or_its_deadline() {
        let log = std::sync::Arc::new(EventLog::default());
        log.record(EventKind::Added, "s1", "");
        let wait = std::time::Duration::from_secs(10);
        assert_eq!(log.wait_since(0, wait).await.len(), 1, "already there");
        let waiting = tokio::spawn({
            let log = log.clone();
            async move { log.wait_since(1, wait).await }
        });
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        log.record(EventKind::Exited, "s1", "");
        let got = waiting.await.expect("task");
        assert_eq!(
            got.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventKind::Exited]
        );
        let started = tokio::time::Instant::now();
        assert!(log.wait_since(2, wait).await.is_empty());
        assert_eq!(started.elapsed(), wait);
    }

    #[test]
    fn kinds_serialize_as_their_names_and_back() {
        for kind in EventKind::ALL {
            let json = serde_json::to_string(&kind).expect("serializes");
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(
                serde_json::from_str::<EventKind>(&json).expect("parses"),
                kind
            );
        }
    }
}
