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

use serde::Serialize;

/// How many events are kept; older ones are dropped.
const CAPACITY: usize = 1024;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Event {
    /// Monotonic sequence number, so a poller can ask for what is new.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub at_ms: u64,
    /// `added`, `adopted`, `removed`, `exited`, `down`, `suspect`, `up`,
    /// `replacing`, `replaced`, `replace-failed`.
    pub kind: &'static str,
    pub replica: String,
    pub detail: String,
}

#[derive(Debug, Default)]
pub struct EventLog {
    inner: Mutex<(u64, VecDeque<Event>)>,
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl EventLog {
    pub fn record(&self, kind: &'static str, replica: &str, detail: impl Into<String>) {
        let detail = detail.into();
        tracing::info!(kind, replica, %detail, "replica event");
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
            log.record("up", "s1", i.to_string());
        }
        let all = log.since(0);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 11);
        assert_eq!(log.since(all[CAPACITY - 2].seq).len(), 1);
    }
}
