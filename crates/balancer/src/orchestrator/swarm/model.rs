//! The engine's JSON, as far as membership needs it, and the pure rule that
//! turns services, tasks and nodes into members. No I/O, so the fixtures
//! captured from a real swarm (`tests/fixtures/swarm/`) pin it.
//!
//! Every balancer runs this same function on the same engine answers, so
//! they agree on the member set: names and ring ids come from the services'
//! labels, and when two services claim one name or ring id (two balancers
//! adding at once) the older service wins everywhere.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
};

use serde::Deserialize;

use super::{LABEL_ID, LABEL_PROJECT, LABEL_REPLICA};
use crate::orchestrator::{Observed, ReplicaSpec};

/// `GET /services`, trimmed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(rename = "ID")]
    pub id: String,
    /// RFC 3339 with nanoseconds; compared as text only after a parse.
    #[serde(default)]
    pub created_at: String,
    pub spec: ServiceSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceSpec {
    pub name: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
}

/// `GET /tasks`, trimmed. bollard's `Task` has no `NetworksAttachments`:
/// the reason this module parses the JSON itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Task {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    #[serde(rename = "NodeID", default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub desired_state: String,
    pub status: TaskStatus,
    #[serde(default)]
    pub networks_attachments: Vec<Attachment>,
    #[serde(default)]
    pub version: Version,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TaskStatus {
    pub state: String,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    #[serde(default)]
    pub index: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    pub network: AttachedNetwork,
    #[serde(default)]
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttachedNetwork {
    #[serde(rename = "ID")]
    pub id: String,
    pub spec: NetworkSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetworkSpec {
    pub name: String,
}

/// `GET /nodes`, trimmed.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub status: NodeStatus,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeStatus {
    pub state: String,
}

/// What the membership rule needs besides the engine's answers.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub project: &'a str,
    pub network: &'a str,
    pub port: u16,
}

/// The members the engine shows: every service of `scope.project` with a
/// name and ring id label, oldest first on a clash; each with the address
/// of its serving task, if it has one.
///
/// A task serves when it is wanted running, runs, sits on a Ready node and
/// has an address on our network. A dead task stays listed with its old
/// address, and a cut node's task still says `running` while its desired
/// state is already `shutdown`: both are skipped. Of several serving tasks
/// (an update in progress) the newest (highest version index) is taken.
pub fn members(
    scope: Scope<'_>,
    services: &[Service],
    tasks: &[Task],
    nodes: &[Node],
) -> Vec<Observed> {
    let ready: HashSet<&str> = nodes
        .iter()
        .filter(|n| n.status.state == "ready")
        .map(|n| n.id.as_str())
        .collect();
    let mut ours: Vec<(&Service, ReplicaSpec)> = services
        .iter()
        .filter(|s| s.spec.labels.get(LABEL_PROJECT).map(String::as_str) == Some(scope.project))
        .filter_map(|s| Some((s, spec_of(s)?)))
        .collect();
    // Oldest first: creation time, then service id, the same order on
    // every balancer. Parsing the time keeps "…49.5Z" before "…49.25Z"
    // right, which comparing the text would not.
    ours.sort_by(|(a, _), (b, _)| {
        (created_nanos(&a.created_at), &a.id).cmp(&(created_nanos(&b.created_at), &b.id))
    });
    let (mut names, mut ids) = (HashSet::new(), HashSet::new());
    let mut out = Vec::new();
    for (service, spec) in ours {
        if !names.insert(spec.name.clone()) || !ids.insert(spec.id) {
            continue;
        }
        let addr = tasks
            .iter()
            .filter(|t| t.service_id == service.id)
            .filter(|t| t.desired_state == "running" && t.status.state == "running")
            .filter(|t| t.node_id.as_deref().is_some_and(|n| ready.contains(n)))
            .filter_map(|t| Some((t.version.index, address(t, scope.network)?)))
            .max_by_key(|(index, _)| *index)
            .map(|(_, ip)| SocketAddr::new(ip, scope.port));
        out.push(Observed {
            spec,
            handle: service.id.clone(),
            addr,
        });
    }
    out.sort_by_key(|o| o.spec.id);
    out
}

/// Name and ring id from a service's labels.
pub fn spec_of(service: &Service) -> Option<ReplicaSpec> {
    let labels = &service.spec.labels;
    Some(ReplicaSpec {
        name: labels.get(LABEL_REPLICA)?.clone(),
        id: labels.get(LABEL_ID)?.parse().ok()?,
    })
}

/// A task's IP on `network` (by name or id), from `10.0.1.2/24`.
fn address(task: &Task, network: &str) -> Option<IpAddr> {
    task.networks_attachments
        .iter()
        .filter(|a| a.network.spec.name == network || a.network.id == network)
        .flat_map(|a| a.addresses.iter())
        .find_map(|cidr| cidr.split('/').next()?.parse().ok())
}

/// `2026-11-26T01:55:49.348079862Z` as nanoseconds since the epoch day of
/// its date (enough to order two services; `None` sorts first).
pub fn created_nanos(text: &str) -> Option<(u32, u32, u32, u64)> {
    let (date, time) = text.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<u32>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.trim_end_matches('Z');
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|p| p.parse::<u64>().ok());
    let secs = t.next()?? * 3600 + t.next()?? * 60 + t.next()??;
    // Right-pad the fraction to nanoseconds: ".5" is 500000000 ns.
    let digits: String = frac.chars().take(9).collect();
    let nanos: u64 = format!("{digits:0<9}").parse().ok()?;
    Some((y, m, day, secs * 1_000_000_000 + nanos))
}

#[cfg(test)]
mod tests;
