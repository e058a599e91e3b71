//! Which names and ring ids new replicas get. Pure: no I/O, no async.
//!
//! A generated name is always `server-<id>` of its own ring id, and an
//! explicit `server-<k>` gets id k when it is free, so placement follows
//! names: the spec's `server-1` is id 1, and a replica removed and added
//! back under its name lands where it was.

use std::collections::HashSet;

use super::MembershipError;
use crate::{
    change::Hostname,
    orchestrator::ReplicaSpec,
    replica::{ReplicaId, generated_name},
};

/// Names and ids for `n` new replicas, `hostnames` first (at most `n`,
/// distinct: a [`Change`](crate::change::Change) guarantees it).
///
/// `used` holds the ring ids of current members; `taken` the names of
/// current members and of names still reserved. An id whose generated name
/// is taken or asked for is left alone, so a draining `server-2` gets id 2
/// back if it is added again.
pub(super) fn name_new(
    n: usize,
    hostnames: &[Hostname],
    used: &HashSet<ReplicaId>,
    taken: &HashSet<&str>,
) -> Result<Vec<ReplicaSpec>, MembershipError> {
    if let Some(name) = hostnames.iter().find(|h| taken.contains(h.as_str())) {
        return Err(MembershipError::Duplicate(name.to_string()));
    }
    let mut used = used.clone();
    let mut reserved: HashSet<String> = taken
        .iter()
        .map(|&s| s.to_owned())
        .chain(hostnames.iter().map(ToString::to_string))
        .collect();
    // An explicit `server-<k>` takes id k first, when it is free.
    let mut ids: Vec<Option<ReplicaId>> = hostnames
        .iter()
        .map(|h| h.generated_id().filter(|&k| used.insert(k)))
        .collect();
    // The lowest id that is unused and whose generated name is free.
    let next_id = |used: &mut HashSet<ReplicaId>, reserved: &HashSet<String>| {
        let id = (1..=ReplicaId::MAX)
            .find(|&i| !used.contains(&i) && !reserved.contains(&generated_name(i)))
            .ok_or(MembershipError::NoRingIdLeft)?;
        used.insert(id);
        Ok::<_, MembershipError>(id)
    };
    for id in &mut ids {
        if id.is_none() {
            *id = Some(next_id(&mut used, &reserved)?);
        }
    }
    let mut specs: Vec<ReplicaSpec> = hostnames
        .iter()
        .zip(ids)
        .filter_map(|(name, id)| {
            id.map(|id| ReplicaSpec {
                name: name.to_string(),
                id,
            })
        })
        .collect();
    while specs.len() < n {
        let id = next_id(&mut used, &reserved)?;
        let name = generated_name(id);
        reserved.insert(name.clone());
        specs.push(ReplicaSpec { name, id });
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(
        n: usize,
        hostnames: &[&str],
        used: &[ReplicaId],
        taken: &[&str],
    ) -> Vec<(String, ReplicaId)> {
        let hostnames: Vec<Hostname> = hostnames
            .iter()
            .map(|h| Hostname::try_from(*h).expect("valid"))
            .collect();
        name_new(
            n,
            &hostnames,
            &used.iter().copied().collect(),
            &taken.iter().copied().collect(),
        )
        .expect("plan")
        .into_iter()
        .map(|s| (s.name, s.id))
        .collect()
    }

    fn pairs(list: &[(&str, ReplicaId)]) -> Vec<(String, ReplicaId)> {
        list.iter().map(|(n, i)| ((*n).to_owned(), *i)).collect()
    }

    #[test]
    fn generated_names_follow_their_ids() {
        assert_eq!(
            plan(3, &[], &[], &[]),
            pairs(&[("server-1", 1), ("server-2", 2), ("server-3", 3)])
        );
        // A gap is filled first.
        assert_eq!(
            plan(1, &[], &[1, 3], &["server-1", "server-3"]),
            pairs(&[("server-2", 2)])
        );
    }

    #[test]
    fn a_reserved_name_keeps_its_id_free() {
        // server-2 drains (taken, its id no longer used): s4 must not take 2.
        assert_eq!(
            plan(1, &["s4"], &[1, 3], &["server-1", "server-3", "server-2"]),
            pairs(&[("s4", 4)])
        );
    }

    #[test]
    fn explicit_generated_names_take_their_own_id() {
        assert_eq!(
            plan(3, &["s9", "server-7"], &[1], &["server-1"]),
            pairs(&[("s9", 2), ("server-7", 7), ("server-3", 3)])
        );
        // server-1 is asked for but id 1 is taken by "other": another id.
        assert_eq!(
            plan(1, &["server-1"], &[1], &["other"]),
            pairs(&[("server-1", 2)])
        );
    }

    #[test]
    fn a_taken_name_is_a_duplicate() {
        let h = [Hostname::try_from("a").expect("valid")];
        let err =
            name_new(1, &h, &HashSet::new(), &["a"].into_iter().collect()).expect_err("duplicate");
        assert!(
            matches!(err, MembershipError::Duplicate(ref n) if n == "a"),
            "{err}"
        );
    }
}
