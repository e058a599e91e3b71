//! What the soak saw, judged: each failed request and each ejection laid
//! against the replicas' fates (killed, stopped), the balancer's resources
//! at baseline, peak and end, orphans; and the goals, each met or not.

use std::collections::BTreeMap;

use balancer::events::EventKind;

use super::{
    Observed, Sample, SoakConfig,
    abuse::{Abuse, Kind},
    chaos::{Action, Fate},
    traffic::Record,
};

/// How long after a SIGKILL the replica's requests may still fail (those
/// in flight on it at the kill) and it may still be ejected.
const KILL_WINDOW_S: f64 = 2.0;
/// How long after a SIGCONT a stopped replica may still be ejected, or a
/// request sent to it while it was stopped may still fail (the response
/// timeout of the soak, 2 s, plus a margin).
const STOP_WINDOW_S: f64 = 3.0;
/// Resource bounds, over the baseline read after the warm-up.
const RSS_PEAK_MIB: f64 = 64.0;
const RSS_END_MIB: f64 = 24.0;
const FDS_PEAK: u64 = 256;
const FDS_END: u64 = 32;

/// A failed request and what explains it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Failure {
    #[serde(flatten)]
    pub record: Record,
    /// The chaos actions whose window it overlaps (`kill:server-2`).
    pub explained_by: Vec<String>,
}

/// An ejection (suspect or down) of a replica, and what explains it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Ejection {
    pub t_s: f64,
    pub kind: String,
    pub replica: String,
    pub detail: String,
    pub explained_by: Vec<String>,
}

/// A goal of the soak, met or not.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Goal {
    pub name: String,
    pub value: String,
    pub limit: String,
    pub met: bool,
}

/// Baseline, peak and end of one resource.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Span {
    pub baseline: f64,
    pub peak: f64,
    pub end: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub duration_s: f64,
    pub seed: u64,
    pub balancer_args: Vec<String>,
    pub gets: usize,
    pub gets_failed: Vec<Failure>,
    pub posts: usize,
    pub posts_failed: Vec<Failure>,
    pub rss_mib: Span,
    pub fds: Span,
    pub replica_processes: usize,
    pub orphans: Vec<u32>,
    pub clean_exit: bool,
    pub ejections: Vec<Ejection>,
    pub fates: Vec<Fate>,
    pub abuse: Vec<Abuse>,
    pub samples: Vec<Sample>,
    pub load_end_s: f64,
    /// Per second of the run: GETs and POSTs answered and failed.
    pub per_second: Vec<[u64; 5]>,
    pub goals: Vec<Goal>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.goals.iter().all(|g| g.met)
    }

    /// Ejections no kill or stop explains: blamed on the replica for
    /// something else, a client's fault above all.
    pub fn wrong_ejections(&self) -> impl Iterator<Item = &Ejection> {
        self.ejections.iter().filter(|e| e.explained_by.is_empty())
    }

    pub fn posts_unexplained(&self) -> usize {
        self.posts_failed
            .iter()
            .filter(|f| f.explained_by.is_empty())
            .count()
    }

    /// What the abusive clients of each kind came to.
    pub fn abuse_by_kind(&self) -> Vec<AbuseSummary> {
        Kind::ALL
            .iter()
            .map(|&kind| {
                let of: Vec<_> = self.abuse.iter().filter(|a| a.kind == kind).collect();
                let mut answers = BTreeMap::new();
                for a in &of {
                    let key = a
                        .status
                        .map_or_else(|| "closed".to_owned(), |s| s.to_string());
                    *answers.entry(key).or_insert(0) += 1;
                }
                AbuseSummary {
                    kind,
                    clients: of.len(),
                    answers,
                    still_open: of.iter().filter(|a| a.still_open).count(),
                    longest_held_s: of.iter().map(|a| a.held_s).fold(0.0, f64::max),
                }
            })
            .collect()
    }
}

/// The abusive clients of one kind.
#[derive(Debug, Clone)]
pub struct AbuseSummary {
    pub kind: Kind,
    pub clients: usize,
    /// How many got each answer (a status, or `closed`).
    pub answers: BTreeMap<String, usize>,
    /// Connections still open when the client gave up.
    pub still_open: usize,
    pub longest_held_s: f64,
}

/// The window of `fate` in which its replica's failures are explained.
fn window(fate: &Fate) -> Option<(f64, f64)> {
    match fate.action {
        Action::Kill => Some((fate.at_s, fate.at_s + KILL_WINDOW_S)),
        Action::Stop => Some((fate.at_s, fate.until_s.unwrap_or(f64::MAX) + STOP_WINDOW_S)),
        // A removal drains: nothing may fail because of it.
        Action::Add | Action::Remove => None,
    }
}

fn label(fate: &Fate) -> String {
    let action = match fate.action {
        Action::Kill => "kill",
        Action::Stop => "stop",
        Action::Add => "add",
        Action::Remove => "remove",
    };
    format!("{action}:{}", fate.replica)
}

/// The fates whose window overlaps `[start, end]`, of `replica` if named.
fn explain(fates: &[Fate], start: f64, end: f64, replica: Option<&str>) -> Vec<String> {
    fates
        .iter()
        .filter(|f| replica.is_none_or(|r| r == f.replica))
        .filter(|f| window(f).is_some_and(|(a, b)| start <= b && end >= a))
        .map(label)
        .collect()
}

pub fn analyse(
    o: Observed,
    clean_exit: bool,
    replica_processes: usize,
    orphans: Vec<u32>,
    config: &SoakConfig,
) -> Report {
    let failures = |method: &str| -> Vec<Failure> {
        o.requests
            .iter()
            .filter(|r| r.method == method && !r.ok())
            .map(|r| Failure {
                record: r.clone(),
                // Which replica a failed request reached is not known
                // from outside: any kill or stop in flight with it counts.
                explained_by: explain(&o.fates, r.start_s, r.end_s, None),
            })
            .collect()
    };
    let ejections: Vec<Ejection> = o
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::Suspect | EventKind::Down))
        .map(|e| {
            let t_s = (e.at_ms as f64 - o.t0_unix_ms as f64) / 1000.0;
            Ejection {
                t_s,
                kind: e.kind.to_string(),
                replica: e.replica.clone(),
                detail: e.detail.clone(),
                explained_by: explain(&o.fates, t_s, t_s, Some(&e.replica)),
            }
        })
        // The warm-up has no chaos, and belongs to the run all the same.
        .collect();
    let after = &o.samples[o.baseline.min(o.samples.len().saturating_sub(1))..];
    let span = |f: fn(&Sample) -> f64| Span {
        baseline: after.first().map_or(0.0, f),
        peak: after.iter().map(f).fold(0.0, f64::max),
        end: after.last().map_or(0.0, f),
    };
    let rss_mib = span(|s| s.resources.rss_kib as f64 / 1024.0);
    let fds = span(|s| s.resources.fds as f64);
    let per_second = per_second(&o.requests);
    let mut report = Report {
        duration_s: config.duration.as_secs_f64(),
        seed: config.seed,
        balancer_args: super::BALANCER_ARGS
            .iter()
            .map(|s| (*s).to_owned())
            .collect(),
        gets: o.requests.iter().filter(|r| r.method == "GET").count(),
        gets_failed: failures("GET"),
        posts: o.requests.iter().filter(|r| r.method == "POST").count(),
        posts_failed: failures("POST"),
        rss_mib,
        fds,
        replica_processes,
        orphans,
        clean_exit,
        ejections,
        fates: o.fates,
        abuse: o.abuse,
        samples: o.samples,
        load_end_s: o.load_end_s,
        per_second,
        goals: Vec::new(),
    };
    report.goals = goals(&report);
    report
}

fn goals(r: &Report) -> Vec<Goal> {
    let goal = |name: &str, value: String, limit: String, met: bool| Goal {
        name: name.into(),
        value,
        limit,
        met,
    };
    let wrong = r.wrong_ejections().count();
    let unexplained = r.posts_unexplained();
    vec![
        goal(
            "GETs answered",
            format!("{} failed of {}", r.gets_failed.len(), r.gets),
            "0 failed".into(),
            r.gets_failed.is_empty() && r.gets > 0,
        ),
        goal(
            "POSTs failed only on a killed or stopped replica",
            format!(
                "{unexplained} unexplained of {} failed ({} sent)",
                r.posts_failed.len(),
                r.posts
            ),
            "0 unexplained".into(),
            unexplained == 0 && r.posts > 0,
        ),
        goal(
            "Replicas ejected while healthy",
            wrong.to_string(),
            "0".into(),
            wrong == 0,
        ),
        goal(
            "Peak RSS over baseline (MiB)",
            format!("{:.1}", r.rss_mib.peak - r.rss_mib.baseline),
            format!("<= {RSS_PEAK_MIB}"),
            r.rss_mib.peak - r.rss_mib.baseline <= RSS_PEAK_MIB,
        ),
        goal(
            "End RSS over baseline (MiB)",
            format!("{:.1}", r.rss_mib.end - r.rss_mib.baseline),
            format!("<= {RSS_END_MIB}"),
            r.rss_mib.end - r.rss_mib.baseline <= RSS_END_MIB,
        ),
        goal(
            "Peak fds over baseline",
            format!("{}", r.fds.peak - r.fds.baseline),
            format!("<= {FDS_PEAK}"),
            r.fds.peak - r.fds.baseline <= FDS_PEAK as f64,
        ),
        goal(
            "End fds over baseline",
            format!("{}", r.fds.end - r.fds.baseline),
            format!("<= {FDS_END}"),
            r.fds.end - r.fds.baseline <= FDS_END as f64,
        ),
        goal(
            "Abusive clients still held open at give-up",
            r.abuse.iter().filter(|a| a.still_open).count().to_string(),
            "0".into(),
            r.abuse.iter().all(|a| !a.still_open),
        ),
        goal(
            "Balancer exited on SIGTERM",
            r.clean_exit.to_string(),
            "true".into(),
            r.clean_exit,
        ),
        goal(
            "Orphan replica processes",
            format!("{} of {} seen", r.orphans.len(), r.replica_processes),
            "0".into(),
            r.orphans.is_empty() && r.replica_processes > 0,
        ),
    ]
}

/// `[second, GET ok, GET failed, POST ok, POST failed]` by end time.
fn per_second(records: &[Record]) -> Vec<[u64; 5]> {
    let last = records.iter().map(|r| r.end_s as usize).max().unwrap_or(0);
    let first = records.iter().map(|r| r.end_s as usize).min().unwrap_or(0);
    let mut out: Vec<[u64; 5]> = (first..=last).map(|s| [s as u64, 0, 0, 0, 0]).collect();
    for r in records {
        let row = &mut out[r.end_s as usize - first];
        let col = match (r.method, r.ok()) {
            ("GET", true) => 1,
            ("GET", false) => 2,
            (_, true) => 3,
            (_, false) => 4,
        };
        row[col] += 1;
    }
    out
}

#[cfg(test)]
mod tests;
