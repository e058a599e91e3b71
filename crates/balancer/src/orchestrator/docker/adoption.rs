//! Which of our containers found at start-up a balancer adopts, and which
//! it removes: pure planning ([`plan_adoption`]), then carrying the plan
//! out one container at a time ([`carry_out`]), so one container that
//! cannot be inspected spoils nothing else.

use std::{
    collections::{BTreeMap, btree_map::Entry},
    future::Future,
    net::SocketAddr,
};

use crate::{
    orchestrator::{OrchestratorError, ReplicaSpec},
    replica::ReplicaId,
};

/// One of our containers as listed at start-up, for [`plan_adoption`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The container id.
    pub container: String,
    /// Its `lb.replica` label.
    pub name: Option<String>,
    /// Its `lb.id` label, if it parses.
    pub ring_id: Option<ReplicaId>,
    pub running: bool,
    /// Creation time, seconds since the epoch.
    pub created: i64,
}

/// What to do with the containers found at start-up.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AdoptionPlan {
    /// At most one container per name: (replica, container id).
    pub adopt: Vec<(ReplicaSpec, String)>,
    /// Container ids to remove: dead, unlabelled, or a second container of
    /// an adopted name.
    pub remove: Vec<String>,
}

/// Chooses which containers to adopt: only running ones with both labels,
/// and of several running under one name the newest (the highest id on a
/// tie, so the choice does not depend on the listing's order); the others
/// are removed. Adopted in name order.
pub fn plan_adoption(found: Vec<Found>) -> AdoptionPlan {
    let mut chosen: BTreeMap<String, (ReplicaId, Found)> = BTreeMap::new();
    let mut remove = Vec::new();
    for f in found {
        let (Some(name), Some(ring_id), true) = (f.name.clone(), f.ring_id, f.running) else {
            // Ours but dead or unreadable: clean it up.
            remove.push(f.container);
            continue;
        };
        match chosen.entry(name) {
            Entry::Vacant(e) => {
                e.insert((ring_id, f));
            }
            Entry::Occupied(mut e) => {
                let current = &e.get().1;
                if (f.created, &f.container) > (current.created, &current.container) {
                    let (_, older) = e.insert((ring_id, f));
                    remove.push(older.container);
                } else {
                    remove.push(f.container);
                }
            }
        }
    }
    let adopt = chosen
        .into_iter()
        .map(|(name, (id, f))| (ReplicaSpec { name, id }, f.container))
        .collect();
    AdoptionPlan { adopt, remove }
}

/// Carries out `plan` one container at a time: removes what it says, then
/// finds the address of each container to adopt. A container that cannot
/// be removed or inspected is logged and skipped; the rest go on.
pub(super) async fn carry_out<I, R>(
    plan: AdoptionPlan,
    inspect: impl Fn(String) -> I,
    remove: impl Fn(String) -> R,
) -> Vec<(ReplicaSpec, String, SocketAddr)>
where
    I: Future<Output = Result<SocketAddr, OrchestratorError>>,
    R: Future<Output = Result<(), OrchestratorError>>,
{
    for container in plan.remove {
        if let Err(e) = remove(container.clone()).await {
            tracing::warn!(%container, error = %e, "cannot remove a stale or duplicate container; skipping it");
        }
    }
    let mut adopted = Vec::new();
    for (spec, container) in plan.adopt {
        match inspect(container.clone()).await {
            Ok(addr) => adopted.push((spec, container, addr)),
            Err(e) => tracing::warn!(
                %container, replica = %spec.name, error = %e,
                "cannot inspect a running container; not adopting it"
            ),
        }
    }
    adopted
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::orchestrator::docker::BACKEND_PORT;

    fn engine(e: &str) -> OrchestratorError {
        OrchestratorError::Engine(e.to_owned())
    }

    fn found(container: &str, name: Option<&str>, running: bool, created: i64) -> Found {
        Found {
            container: container.into(),
            name: name.map(Into::into),
            ring_id: Some(1),
            running,
            created,
        }
    }

    fn spec(name: &str, id: ReplicaId) -> ReplicaSpec {
        ReplicaSpec {
            name: name.into(),
            id,
        }
    }

    #[test]
    fn adoption_keeps_one_container_per_name_and_removes_the_rest() {
        let containers = vec![
            found("old", Some("a"), true, 100),
            found("dead", Some("b"), false, 300),
            found("new", Some("a"), true, 200),
            found("live", Some("b"), true, 50),
            found("nameless", None, true, 10),
            Found {
                ring_id: None,
                ..found("no-id", Some("c"), true, 10)
            },
            found("gone", Some("d"), false, 10),
        ];
        // The listing's order does not change the choice.
        for mut list in [containers.clone(), containers.into_iter().rev().collect()] {
            let mut plan = plan_adoption(std::mem::take(&mut list));
            plan.remove.sort();
            assert_eq!(
                plan.adopt,
                vec![
                    (spec("a", 1), "new".to_owned()),
                    (spec("b", 1), "live".to_owned())
                ]
            );
            assert_eq!(
                plan.remove,
                ["dead", "gone", "nameless", "no-id", "old"].map(String::from)
            );
        }
        // Same creation time: the higher container id, whatever the order.
        for pair in [["x1", "x2"], ["x2", "x1"]] {
            let plan = plan_adoption(pair.iter().map(|c| found(c, Some("x"), true, 5)).collect());
            assert_eq!(plan.adopt, vec![(spec("x", 1), "x2".to_owned())]);
            assert_eq!(plan.remove, vec!["x1".to_owned()]);
        }
    }

    #[tokio::test]
    async fn one_container_that_cannot_be_inspected_or_removed_spoils_nothing_else() {
        let plan = AdoptionPlan {
            adopt: vec![
                (spec("a", 1), "a1".into()),
                (spec("b", 2), "broken".into()),
                (spec("c", 3), "c1".into()),
            ],
            remove: vec!["stuck".into(), "stale".into()],
        };
        let removed = std::sync::Mutex::new(Vec::new());
        let adopted = carry_out(
            plan,
            |id| async move {
                if id == "broken" {
                    Err(engine("no such container"))
                } else {
                    Ok(SocketAddr::from(([10, 0, 0, 1], BACKEND_PORT)))
                }
            },
            |id| {
                removed.lock().expect("removed").push(id.clone());
                async move {
                    if id == "stuck" {
                        Err(OrchestratorError::Stop {
                            handle: id,
                            reason: "engine said no".into(),
                        })
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
        let names: Vec<&str> = adopted.iter().map(|(s, _, _)| s.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(*removed.lock().expect("removed"), ["stuck", "stale"]);
    }
}
