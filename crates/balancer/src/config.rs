//! Configuration: every flag, its `LB_*` environment variable, and the
//! optional TOML file given by `--config`. Flags win over the environment,
//! the environment over the file, the file over defaults.
//!
//! The file is applied by turning its keys into flags placed *before* the
//! real command line (clap lets a later flag override an earlier one), and
//! skipping keys whose environment variable is set. So one parser, with one
//! set of validation rules and one `--help`, serves all three sources.

use std::{collections::HashMap, ffi::OsString, path::PathBuf, time::Duration};

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::policy::KeySource;

/// The `balancer` command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "balancer",
    version,
    about = "A customizable HTTP load balancer",
    args_override_self = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub config: Config,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Run a replica (what the process orchestrator starts).
    Backend(backend::Args),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrchestratorKind {
    /// Replicas are local child processes (no Docker needed).
    Process,
    /// Replicas are Docker containers on --docker-network.
    Docker,
    /// Balance over existing servers given by --upstream.
    Static,
}

/// Everything the balancer can be told.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// TOML file with any of these options (keys as the long flag names).
    #[arg(long, env = "LB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on.
    #[arg(long, env = "LB_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: String,
    /// Replicas to run at start (process and docker orchestrators).
    #[arg(long, env = "LB_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// Most replicas the pool may hold; /add beyond it is refused.
    #[arg(long, env = "LB_MAX_REPLICAS", default_value_t = 16)]
    pub max_replicas: usize,
    /// Who runs the replicas.
    #[arg(long, env = "LB_ORCHESTRATOR", value_enum, default_value = "process")]
    pub orchestrator: OrchestratorKind,
    /// With --orchestrator static: an upstream as [NAME=]http://HOST:PORT[#weight=W]; repeat it.
    #[arg(long, env = "LB_UPSTREAM", value_delimiter = ',')]
    pub upstream: Vec<String>,

    /// Selection policy: maglev, ring, bounded-load, round-robin,
    /// weighted-round-robin, least-connections, p2c, random.
    #[arg(long, env = "LB_POLICY", default_value = crate::policy::DEFAULT_POLICY)]
    pub policy: String,
    /// Hash functions of the `ring` policy: spec, spec-v1, fmix64, xxh3.
    #[arg(long, env = "LB_HASH_PRESET", default_value = "spec")]
    pub hash_preset: ring::HashPreset,
    /// Slots M of the `ring` policy.
    #[arg(long, env = "LB_SLOTS", default_value_t = 512)]
    pub slots: u64,
    /// Virtual nodes K per replica of the `ring` policy (default log2 M).
    #[arg(long, env = "LB_VNODES")]
    pub vnodes: Option<u32>,
    /// Load slack of `bounded-load`: no replica above ceil((1+eps) x mean).
    #[arg(long, env = "LB_BOUNDED_EPS", default_value_t = 0.25)]
    pub bounded_eps: f64,
    /// Hash key: random, client-ip, path, header:NAME, cookie:NAME.
    #[arg(long, env = "LB_KEY", default_value = "random")]
    pub key: KeySource,
    /// Weight of a replica for weighted-round-robin, as NAME=W; repeat it.
    #[arg(long, env = "LB_WEIGHT", value_delimiter = ',')]
    pub weight: Vec<String>,

    /// Interval of active /heartbeat checks (e.g. 500ms, 1s).
    #[arg(long, env = "LB_HEALTH_INTERVAL", default_value = "500ms", value_parser = parse_duration)]
    pub health_interval: Duration,
    /// Timeout of one heartbeat.
    #[arg(long, env = "LB_HEALTH_TIMEOUT", default_value = "300ms", value_parser = parse_duration)]
    pub health_timeout: Duration,
    /// Consecutive failed heartbeats that mark a replica down.
    #[arg(long, env = "LB_FALL", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub fall: u32,
    /// Consecutive answered heartbeats that put a replica back up.
    #[arg(long, env = "LB_RISE", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub rise: u32,
    /// Timeout to connect to a replica.
    #[arg(long, env = "LB_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,
    /// Timeout until a replica's response headers arrive (then 504).
    #[arg(long, env = "LB_RESPONSE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub response_timeout: Duration,
    /// Extra attempts on other replicas when one fails (see README: Retries).
    #[arg(long, env = "LB_RETRIES", default_value_t = 2)]
    pub retries: usize,
    /// Idle keep-alive connections kept per replica.
    #[arg(long, env = "LB_MAX_IDLE", default_value_t = 256)]
    pub max_idle: usize,
    /// How long a new replica may take to answer its first heartbeat.
    #[arg(long, env = "LB_READY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// How long a removed replica may finish its requests before it is stopped.
    #[arg(long, env = "LB_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    /// How long a client may take to send a request's headers (also how
    /// long an idle keep-alive client connection stays open).
    #[arg(long, env = "LB_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Require `Authorization: Bearer <token>` on /add and /rm.
    #[arg(long, env = "LB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Program run as a replica (default: this executable's `backend` subcommand).
    #[arg(long, env = "LB_BACKEND_BIN", value_name = "PATH")]
    pub backend_bin: Option<PathBuf>,
    /// Artificial delay of every replica's /home, for experiments.
    #[arg(long, env = "LB_BACKEND_DELAY_MS", default_value_t = 0)]
    pub backend_delay_ms: u64,

    /// Image of replica containers (docker orchestrator).
    #[arg(long, env = "LB_DOCKER_IMAGE", default_value = "lb-backend:latest")]
    pub docker_image: String,
    /// Network replica containers join (docker orchestrator).
    #[arg(long, env = "LB_DOCKER_NETWORK", default_value = "net1")]
    pub docker_network: String,
    /// Label value that marks containers as this balancer's (docker orchestrator).
    #[arg(long, env = "LB_DOCKER_PROJECT", default_value = "lb")]
    pub docker_project: String,

    /// Worker threads of the async runtime (default: one per core).
    #[arg(long, env = "LB_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,

    /// Log filter (tracing's EnvFilter syntax, e.g. info, balancer=debug).
    #[arg(long, env = "LB_LOG", default_value = "info")]
    pub log: String,
}

impl Default for Config {
    fn default() -> Self {
        // The defaults are literals checked by `defaults_are_the_documented_ones`.
        #[allow(clippy::panic)]
        Cli::try_parse_from(["balancer"])
            .unwrap_or_else(|e| panic!("defaults parse: {e}"))
            .config
    }
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid TOML: {source}")]
    Toml {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("{path}: unknown option '{key}'")]
    UnknownKey { path: PathBuf, key: String },
    #[error(
        "{path}: option '{key}' has an unsupported value (use a string, number, boolean or a list of them)"
    )]
    BadValue { path: PathBuf, key: String },
    #[error(transparent)]
    Clap(#[from] clap::Error),
}

impl Config {
    /// Weights from `--weight NAME=W`.
    pub fn weights(&self) -> Result<HashMap<String, u32>, String> {
        self.weight
            .iter()
            .map(|w| {
                let (name, value) = w
                    .split_once('=')
                    .ok_or_else(|| format!("--weight '{w}' is not NAME=W"))?;
                let value: u32 = value
                    .parse()
                    .ok()
                    .filter(|v| *v > 0)
                    .ok_or_else(|| format!("--weight '{w}': W must be a positive integer"))?;
                Ok((name.to_owned(), value))
            })
            .collect()
    }
}

/// Parses `500ms`, `2s`, `1m`, or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, "ms"), |i| s.split_at(i));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 500ms or 2s"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("'{s}': unknown unit '{unit}' (ms, s, m)")),
    }
}

/// Parses the command line `args` (program name first) with the file named
/// by `--config`/`LB_CONFIG` applied underneath it.
pub fn parse<I, T>(args: I) -> Result<Cli, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let first = Cli::try_parse_from(&args)?;
    let Some(path) = first
        .config
        .config
        .clone()
        .filter(|_| first.command.is_none())
    else {
        return Ok(first);
    };
    let file_args = file_args(&path)?;
    let mut merged = Vec::with_capacity(args.len() + file_args.len());
    merged.extend(args.first().cloned());
    merged.extend(file_args.into_iter().map(OsString::from));
    merged.extend(args.into_iter().skip(1));
    let mut command = Cli::command();
    let matches = command.try_get_matches_from_mut(merged)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The file's options as flags, leaving out those the environment sets.
fn file_args(path: &PathBuf) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let table: toml::Table = text.parse().map_err(|source| ConfigError::Toml {
        path: path.clone(),
        source,
    })?;
    let command = Cli::command();
    let mut out = Vec::new();
    for (key, value) in table {
        let flag = key.replace('_', "-");
        let arg = command
            .get_arguments()
            .find(|a| a.get_long() == Some(flag.as_str()) && flag != "config")
            .ok_or_else(|| ConfigError::UnknownKey {
                path: path.clone(),
                key: key.clone(),
            })?;
        if arg
            .get_env()
            .is_some_and(|env| std::env::var_os(env).is_some())
        {
            continue;
        }
        let bad = || ConfigError::BadValue {
            path: path.clone(),
            key: key.clone(),
        };
        let scalar = |v: &toml::Value| match v {
            toml::Value::String(s) => Some(s.clone()),
            toml::Value::Integer(i) => Some(i.to_string()),
            toml::Value::Float(f) => Some(f.to_string()),
            toml::Value::Boolean(b) => Some(b.to_string()),
            _ => None,
        };
        match &value {
            toml::Value::Array(items) => {
                for item in items {
                    out.push(format!("--{flag}={}", scalar(item).ok_or_else(bad)?));
                }
            }
            v => out.push(format!("--{flag}={}", scalar(v).ok_or_else(bad)?)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("250"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5h").is_err());
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = Config::default();
        assert_eq!(
            (c.listen.as_str(), c.replicas, c.policy.as_str()),
            ("127.0.0.1:5000", 3, "maglev")
        );
        assert_eq!(c.health_interval, Duration::from_millis(500));
    }

    #[test]
    fn file_values_sit_under_flags() {
        let dir = std::env::temp_dir().join(format!("lb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("lb.toml");
        std::fs::write(&path, "replicas = 5\npolicy = \"round-robin\"\nhealth_interval = \"1s\"\nweight = [\"a=2\", \"b=3\"]\n")
            .expect("write");
        let cli = parse([
            "balancer",
            "--config",
            path.to_str().expect("utf8"),
            "--replicas",
            "4",
        ])
        .expect("parses");
        assert_eq!(cli.config.replicas, 4, "the flag wins");
        assert_eq!(cli.config.policy, "round-robin", "the file fills in");
        assert_eq!(cli.config.health_interval, Duration::from_secs(1));
        assert_eq!(cli.config.weights().expect("weights").get("b"), Some(&3));

        std::fs::write(&path, "replicaz = 5\n").expect("write");
        let err =
            parse(["balancer", "--config", path.to_str().expect("utf8")]).expect_err("unknown key");
        assert!(err.to_string().contains("replicaz"), "{err}");
    }

    #[test]
    fn bad_flags_are_refused() {
        assert!(parse(["balancer", "--key", "ip"]).is_err());
        assert!(parse(["balancer", "--hash-preset", "md5"]).is_err());
        assert!(parse(["balancer", "--fall", "0"]).is_err());
        assert!(parse(["balancer", "--orchestrator", "k8s"]).is_err());
    }
}
