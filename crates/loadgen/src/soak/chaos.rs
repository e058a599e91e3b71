//! The chaos of the soak: at random moments a replica is SIGKILLed, or
//! SIGSTOPped (and SIGCONTed a few seconds later), or one is added or
//! removed through the admin API. Every action is recorded with its time,
//! so failures and ejections can be laid against the replicas' fates.

use std::time::Duration;

use balancer::{admin::Status, replica::Health};
use bytes::Bytes;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    process::signal,
    traffic::{HttpClient, exchange, get},
};

/// What was done to a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    Kill,
    Stop,
    Add,
    Remove,
}

/// One chaos action.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Fate {
    pub action: Action,
    pub at_s: f64,
    pub replica: String,
    pub pid: Option<u32>,
    /// When a stopped replica was continued.
    pub until_s: Option<f64>,
    /// The admin API's status for `/add` and `/rm`; whether the signal
    /// was delivered for the others.
    pub result: String,
}

/// How the chaos behaves.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Pause between two actions: uniform in this range (milliseconds).
    pub every_ms: (u64, u64),
    /// How long a stopped replica stays stopped (milliseconds).
    pub stopped_ms: (u64, u64),
    /// Fewest replicas left up after a kill, stop or removal.
    pub min_up: usize,
    pub max_replicas: usize,
}

/// Acts until `stop`, then continues every replica it stopped.
pub async fn run(
    base: String,
    settings: Settings,
    seed: u64,
    t0: Instant,
    stop: CancellationToken,
) -> Vec<Fate> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let client = super::traffic::client();
    let mut fates: Vec<Fate> = Vec::new();
    // (index into fates, pid, when to continue)
    let mut stopped: Vec<(usize, u32, Instant)> = Vec::new();
    loop {
        let pause = Duration::from_millis(rng.u64(settings.every_ms.0..=settings.every_ms.1));
        super::pause(&stop, pause).await;
        continue_due(&mut stopped, &mut fates, t0, false);
        if stop.is_cancelled() {
            break;
        }
        let Some(status) = status(&client, &base).await else {
            continue;
        };
        let frozen: Vec<u32> = stopped.iter().map(|s| s.1).collect();
        let up: Vec<_> = status
            .replicas
            .iter()
            .filter(|r| r.health == Health::Up)
            .filter(|r| r.pid.is_some_and(|p| !frozen.contains(&p)))
            .collect();
        let total = status.replicas.len();
        let mut allowed = Vec::new();
        if up.len() > settings.min_up {
            allowed.extend([Action::Kill, Action::Stop, Action::Remove]);
        }
        if total < settings.max_replicas {
            allowed.push(Action::Add);
        }
        if allowed.is_empty() {
            continue;
        }
        let action = allowed[rng.usize(..allowed.len())];
        let at_s = t0.elapsed().as_secs_f64();
        let fate = match action {
            Action::Add => {
                let result = admin(&client, &base, "POST", "/add", r#"{"n": 1}"#).await;
                Fate {
                    action,
                    at_s,
                    replica: String::new(),
                    pid: None,
                    until_s: None,
                    result,
                }
            }
            Action::Remove | Action::Kill | Action::Stop => {
                let victim = up[rng.usize(..up.len())];
                let pid = victim.pid;
                let result = match (action, pid) {
                    (Action::Remove, _) => {
                        let body = format!(r#"{{"n": 1, "hostnames": ["{}"]}}"#, victim.name);
                        admin(&client, &base, "DELETE", "/rm", &body).await
                    }
                    (Action::Kill, Some(pid)) => signal(pid, "KILL").to_string(),
                    (_, Some(pid)) => {
                        let sent = signal(pid, "STOP");
                        if sent {
                            let ms = rng.u64(settings.stopped_ms.0..=settings.stopped_ms.1);
                            stopped.push((
                                fates.len(),
                                pid,
                                Instant::now() + Duration::from_millis(ms),
                            ));
                        }
                        sent.to_string()
                    }
                    (_, None) => "no pid".into(),
                };
                Fate {
                    action,
                    at_s,
                    replica: victim.name.clone(),
                    pid,
                    until_s: None,
                    result,
                }
            }
        };
        fates.push(fate);
    }
    continue_due(&mut stopped, &mut fates, t0, true);
    fates
}

/// SIGCONTs the stopped replicas that are due (all of them with `all`).
fn continue_due(
    stopped: &mut Vec<(usize, u32, Instant)>,
    fates: &mut [Fate],
    t0: Instant,
    all: bool,
) {
    let now = Instant::now();
    stopped.retain(|&(index, pid, due)| {
        if !all && due > now {
            return true;
        }
        signal(pid, "CONT");
        fates[index].until_s = Some(t0.elapsed().as_secs_f64());
        false
    });
}

async fn status(client: &HttpClient, base: &str) -> Option<Status> {
    let url = format!("{base}/lb/status");
    let (code, body) = get(client, &url, Duration::from_secs(5)).await.ok()?;
    (code == 200)
        .then(|| serde_json::from_slice(&body).ok())
        .flatten()
}

async fn admin(client: &HttpClient, base: &str, method: &str, path: &str, body: &str) -> String {
    let url = format!("{base}{path}");
    let body = Bytes::from(body.to_owned());
    match exchange(client, method, &url, body, Duration::from_secs(30)).await {
        Ok((code, _)) => code.to_string(),
        Err(e) => e,
    }
}
