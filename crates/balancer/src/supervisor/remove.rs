//! `/rm`: members leave the pool at once and drain in the background; their
//! names stay reserved until nothing of them runs.

use super::{Member, MembershipError, Phase, Reservation, Supervisor};
use crate::{change::Change, events::EventKind, replica::Health};

impl Supervisor {
    pub(super) fn remove(&mut self, change: Change) -> Result<Vec<String>, MembershipError> {
        self.ensure_manages_replicas()?;
        let (n, hostnames) = change.into_parts();
        let removable: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| !m.phase.is_adding())
            .map(|(n, _)| n.clone())
            .collect();
        if let Some(name) = hostnames
            .iter()
            .find(|h| !self.members.contains_key(h.as_str()))
        {
            return Err(MembershipError::Unknown(name.to_string()));
        }
        if let Some(name) = hostnames
            .iter()
            .find(|h| !removable.iter().any(|r| r == h.as_str()))
        {
            return Err(MembershipError::StillStarting(name.to_string()));
        }
        if n > removable.len() {
            return Err(MembershipError::NotEnough {
                wanted: n,
                available: removable.len(),
            });
        }
        let mut chosen: Vec<String> = hostnames.into_iter().map(|h| h.into_string()).collect();
        let mut others: Vec<String> = removable
            .into_iter()
            .filter(|h| !chosen.contains(h))
            .collect();
        fastrand::shuffle(&mut others);
        chosen.extend(others.into_iter().take(n.saturating_sub(chosen.len())));

        for name in chosen {
            let Some(Member {
                phase, generation, ..
            }) = self.members.remove(&name)
            else {
                continue;
            };
            self.events.record(EventKind::Removed, &name, "");
            match phase {
                Phase::Running {
                    replica, handle, ..
                } => {
                    replica.set_health(Health::Draining);
                    self.reserved.insert(name.clone(), Reservation::Stopping);
                    self.retire_later(name, replica, handle);
                }
                Phase::Replacing {
                    dead,
                    engine: Some(handle),
                    ..
                } => {
                    // The engine still runs it (restarting): remove it there.
                    dead.set_health(Health::Draining);
                    self.reserved.insert(name.clone(), Reservation::Stopping);
                    self.retire_later(name, dead, handle);
                }
                Phase::Replacing { dead, .. } => {
                    // Its dead incarnation was stopped already, but its
                    // replacement's start (or retry) is still due: the name
                    // stays taken until that resolves (see `replaced`).
                    dead.set_health(Health::Draining);
                    self.reserved
                        .insert(name, Reservation::PendingStart(generation));
                }
                Phase::Adding { .. } => {}
            }
        }
        self.publish();
        Ok(self.names())
    }
}
