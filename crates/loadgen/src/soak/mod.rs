//! The soak: a bounded chaos run against the balancer with its process
//! orchestrator (issue 11, item 6).
//!
//! The balancer runs as its own process ([`process`]) so its memory and
//! descriptors, and the replicas it leaves behind, can be measured. For
//! the whole run a steady GET and POST load ([`traffic`]) goes through it
//! beside slow and abusive clients ([`abuse`]), while replicas are
//! SIGKILLed, SIGSTOPped, added and removed at random ([`chaos`]). Then the
//! load stops, the balancer is given time to settle and is sent SIGTERM.
//! [`report`] lays failures and ejections against the replicas' fates and
//! checks the goals; [`output`] writes data, charts and a summary.

pub mod abuse;
pub mod chaos;
pub mod output;
pub mod process;
pub mod report;
pub mod traffic;

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use process::{BalancerProcess, Resources};
pub use report::Report;

/// Errors that stop the soak before it can report.
#[derive(Debug, thiserror::Error)]
pub enum SoakError {
    #[error("cannot start the balancer: {0}")]
    Start(String),
    #[error("the stack never came up: {0}")]
    NotReady(String),
    #[error(transparent)]
    Io(std::io::Error),
    #[error(transparent)]
    Chart(#[from] crate::chart::ChartError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

/// What to run.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// How long the load and the chaos last.
    pub duration: Duration,
    /// Where the data, charts and summary go.
    pub out: PathBuf,
    /// The `balancer` binary (its replicas are itself, re-run).
    pub balancer_bin: PathBuf,
    /// Seed of the chaos (which action, which replica, when).
    pub seed: u64,
}

/// The flags the balancer runs with: timeouts short enough that a
/// frozen replica or a slow client is dealt with within the run. Ten
/// missed heartbeats (2.5 s) take longer than the response timeout (2 s),
/// so requests sent to a frozen replica time out before it is taken out
/// of rotation, as they do on a replica whose heartbeat still answers.
pub const BALANCER_ARGS: &[&str] = &[
    "--listen=127.0.0.1:0",
    "--replicas=3",
    "--max-replicas=6",
    "--health-interval=250ms",
    "--health-timeout=250ms",
    "--fall=10",
    "--response-timeout=2s",
    "--header-read-timeout=3s",
    "--client-body-timeout=3s",
    "--client-idle-timeout=10s",
    "--drain-timeout=3s",
    "--stop-timeout=2s",
    "--log=warn",
];

/// GET and POST workers, and their pause between requests.
const GET_WORKERS: usize = 8;
const POST_WORKERS: usize = 4;
const PACE: Duration = Duration::from_millis(10);
/// A new abusive client this often, at most this many at once.
const ABUSE_EVERY: Duration = Duration::from_millis(250);
const ABUSE_MAX_OPEN: usize = 24;
/// Load before the baseline is read (connections pooled, allocator warm),
/// and the quiet after the load before the end is read.
const WARMUP: Duration = Duration::from_secs(3);
const SETTLE: Duration = Duration::from_secs(6);
const SAMPLE_EVERY: Duration = Duration::from_millis(500);

/// One reading of the balancer's resources, `t_s` seconds into the run.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Sample {
    pub t_s: f64,
    #[serde(flatten)]
    pub resources: Resources,
}

/// Runs the soak and writes its results under `config.out`.
pub async fn run(config: &SoakConfig) -> Result<Report, SoakError> {
    std::fs::create_dir_all(&config.out).map_err(SoakError::Io)?;
    let args: Vec<String> = BALANCER_ARGS.iter().map(|s| (*s).to_owned()).collect();
    let log = std::env::temp_dir().join(format!("soak-balancer-{}.log", std::process::id()));
    let lb = BalancerProcess::start(&config.balancer_bin, &args, &log)?;
    let base = format!("http://{}", lb.addr);
    let addr = lb.addr.clone();
    let lb = Arc::new(Mutex::new(lb));
    let ready = ready(&base).await;
    let result = match ready {
        Ok(()) => Ok(phases(config, &base, &addr, &lb).await),
        Err(e) => Err(e),
    };
    // Whatever happened above, the balancer is stopped and its leftovers
    // counted.
    let lb = match Arc::try_unwrap(lb) {
        Ok(lb) => lb
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
        Err(_) => return Err(SoakError::Start("the balancer is still shared".into())),
    };
    let (clean_exit, pids) = lb.terminate(Duration::from_secs(30));
    // The replicas get their own drain after the balancer's exit signal.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let orphans = process::survivors(&pids);
    for &pid in &orphans {
        process::signal(pid, "KILL");
    }
    let observed = result?;
    let report = report::analyse(observed, clean_exit, pids.len(), orphans, config);
    output::write(&config.out, &report)?;
    Ok(report)
}

/// Everything seen during the run, for [`report::analyse`].
pub struct Observed {
    pub requests: Vec<traffic::Record>,
    pub abuse: Vec<abuse::Abuse>,
    pub fates: Vec<chaos::Fate>,
    pub events: Vec<balancer::events::Event>,
    pub samples: Vec<Sample>,
    /// Indices into `samples`: the baseline, and the end.
    pub baseline: usize,
    pub load_end_s: f64,
    /// `t0` as Unix milliseconds, to place the balancer's events.
    pub t0_unix_ms: u64,
}

async fn phases(
    config: &SoakConfig,
    base: &str,
    addr: &str,
    lb: &Arc<Mutex<BalancerProcess>>,
) -> Observed {
    let t0 = Instant::now();
    let t0_unix_ms = balancer::events::unix_ms();
    let samples = Arc::new(Mutex::new(Vec::new()));
    let sampling = CancellationToken::new();
    let sampler = tokio::spawn(sample(lb.clone(), t0, samples.clone(), sampling.clone()));

    // Warm-up: the same load without chaos, then quiet, then the baseline.
    let warm = CancellationToken::new();
    let discard = Arc::new(Mutex::new(Vec::new()));
    tokio::join!(steady_load(base, t0, &warm, &discard), async {
        tokio::time::sleep(WARMUP).await;
        warm.cancel();
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let baseline = lock(&samples).len().saturating_sub(1);

    let stop = CancellationToken::new();
    let records = Arc::new(Mutex::new(Vec::new()));
    let chaos_settings = chaos::Settings {
        every_ms: (1_500, 4_000),
        stopped_ms: (1_500, 4_000),
        min_up: 2,
        max_replicas: 6,
    };
    let ((), abuse, fates, ()) = tokio::join!(
        steady_load(base, t0, &stop, &records),
        abuse::run(addr.into(), ABUSE_EVERY, ABUSE_MAX_OPEN, t0, stop.clone()),
        chaos::run(base.into(), chaos_settings, config.seed, t0, stop.clone()),
        async {
            tokio::time::sleep(config.duration).await;
            stop.cancel();
        }
    );
    let load_end_s = t0.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let events = events(base).await;
    sampling.cancel();
    let _ = sampler.await;
    let samples = std::mem::take(&mut *lock(&samples));
    let requests = std::mem::take(&mut *lock(&records));
    Observed {
        requests,
        abuse,
        fates,
        events,
        samples,
        baseline,
        load_end_s,
        t0_unix_ms,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn sample(
    lb: Arc<Mutex<BalancerProcess>>,
    t0: Instant,
    out: Arc<Mutex<Vec<Sample>>>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        if let Some(resources) = lock(&lb).sample() {
            lock(&out).push(Sample {
                t_s: t0.elapsed().as_secs_f64(),
                resources,
            });
        }
        pause(&stop, SAMPLE_EVERY).await;
    }
}

/// Sleeps `d`, or less if `stop` is cancelled.
pub async fn pause(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        () = stop.cancelled() => {},
        () = tokio::time::sleep(d) => {},
    }
}

/// The steady GET and POST load until `stop`, its records into `sink`.
async fn steady_load(
    base: &str,
    t0: Instant,
    stop: &CancellationToken,
    sink: &Arc<Mutex<Vec<traffic::Record>>>,
) {
    tokio::join!(
        traffic::steady(
            base.into(),
            "GET",
            GET_WORKERS,
            PACE,
            t0,
            stop.clone(),
            sink.clone()
        ),
        traffic::steady(
            base.into(),
            "POST",
            POST_WORKERS,
            PACE,
            t0,
            stop.clone(),
            sink.clone()
        ),
    );
}

/// Waits until the balancer serves its three replicas.
async fn ready(base: &str) -> Result<(), SoakError> {
    let client = traffic::client();
    let until = Instant::now() + Duration::from_secs(30);
    let url = format!("{base}/rep");
    let mut last = String::new();
    while Instant::now() < until {
        match traffic::get(&client, &url, Duration::from_secs(2)).await {
            Ok((200, body)) => {
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if v["message"]["N"].as_u64() == Some(3) {
                    return Ok(());
                }
                last = String::from_utf8_lossy(&body).into_owned();
            }
            Ok((code, _)) => last = code.to_string(),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(SoakError::NotReady(last))
}

/// The balancer's replica events of the run.
async fn events(base: &str) -> Vec<balancer::events::Event> {
    let client = traffic::client();
    let url = format!("{base}/lb/events");
    match traffic::get(&client, &url, Duration::from_secs(5)).await {
        Ok((200, body)) => serde_json::from_slice::<balancer::events::Events>(&body)
            .map(|e| e.events)
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}
