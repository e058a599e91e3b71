//! Configuration: every flag, its `LB_*` environment variable, and the
//! optional TOML file given by `--config`. Flags win over the environment,
//! the environment over the file, the file over defaults ([`file`]).
//! [`parts`] derives each component's settings from these flags.

mod file;
mod limits;
mod parts;

use std::{path::PathBuf, time::Duration};

use clap::{
    Args, Parser, Subcommand,
    builder::{PossibleValue, PossibleValuesParser},
};

pub use crate::duration::parse_duration;
pub use file::{ConfigError, parse, parse_toml};
pub use limits::{Limits, LimitsStatus};

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

/// `--policy`'s values, with their descriptions, from the policy registry.
fn policy_values() -> PossibleValuesParser {
    PossibleValuesParser::new(
        crate::policy::REGISTRY
            .iter()
            .map(|(name, about, _)| PossibleValue::new(*name).help(*about)),
    )
}

/// How replicas are asked whether they are alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HealthCheck {
    /// `GET /heartbeat`, alive on a 200.
    Http,
    /// `grpc.health.v1.Health/Check`, alive when SERVING.
    Grpc,
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

    /// Selection policy.
    #[arg(long, env = "LB_POLICY", default_value = crate::policy::DEFAULT_POLICY, value_parser = policy_values())]
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

    /// What replicas speak: http1, or h2c (HTTP/2 without TLS, for gRPC
    /// replicas). A static upstream's h2c:// URL says it for itself.
    #[arg(
        long,
        env = "LB_UPSTREAM_PROTOCOL",
        value_enum,
        default_value = "http1"
    )]
    pub upstream_protocol: crate::replica::Protocol,
    /// How replicas are asked whether they are alive: http (GET
    /// /heartbeat) or grpc (the grpc.health.v1 health service).
    #[arg(long, env = "LB_HEALTH_CHECK", value_enum, default_value = "http")]
    pub health_check: HealthCheck,
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
    /// Extra attempts on other replicas when one fails (see README: Retries).
    #[arg(long, env = "LB_RETRIES", default_value_t = 2)]
    pub retries: usize,
    /// Idle keep-alive connections kept per replica (per worker thread).
    #[arg(long, env = "LB_MAX_IDLE", default_value_t = 256)]
    pub max_idle: usize,
    /// How long a new replica may take to answer its first heartbeat.
    #[arg(long, env = "LB_READY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub ready_timeout: Duration,
    /// How long a removed replica may finish its requests before it is stopped.
    #[arg(long, env = "LB_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub drain_timeout: Duration,

    /// Require `Authorization: Bearer <token>` on every admin endpoint that
    /// reveals or changes state (/rep, /add, /rm, /lb/* but /lb/health).
    #[arg(long, env = "LB_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Serve the admin API (/rep, /add, /rm, /lb/*) on this address
    /// instead of --listen; --listen then forwards those paths to replicas.
    #[arg(long, env = "LB_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,

    /// Worker threads of the async runtime (default: one per core).
    #[arg(long, env = "LB_THREADS", value_parser = clap::value_parser!(u16).range(1..))]
    pub threads: Option<u16>,
    /// With more than one thread: `work-stealing` is tokio's shared
    /// scheduler, where any thread serves any connection; `per-thread` gives
    /// each thread an event loop of its own and each connection to the
    /// least loaded one (as HAProxy's threads).
    #[arg(
        long,
        env = "LB_SCHEDULER",
        value_enum,
        default_value = "work-stealing"
    )]
    pub scheduler: crate::workers::Scheduler,

    /// Log filter (tracing's EnvFilter syntax, e.g. info, balancer=debug).
    #[arg(long, env = "LB_LOG", default_value = "info")]
    pub log: String,
    /// Log lines as text, or as JSON lines for a collector.
    #[arg(long, env = "LB_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: crate::logging::LogFormat,
    /// Write an access log (JSON lines: time, client, method, path, status,
    /// replica, attempts, duration, bytes, request id) to this file, or to
    /// stdout with `-`. Off by default.
    #[arg(long, env = "LB_ACCESS_LOG", value_name = "PATH|-")]
    pub access_log: Option<PathBuf>,

    /// Limits and timeouts of the edge (after the options above: their
    /// help heading would swallow what follows).
    #[command(flatten)]
    pub limits: Limits,

    /// TLS termination (`--tls-listen`, `--tls-cert`, `--tls-key`).
    #[command(flatten)]
    pub tls: crate::tls::TlsArgs,

    /// `--orchestrator`, `--stop-timeout` and each orchestrator's own flags.
    #[command(flatten)]
    pub orchestrator: crate::orchestrator::OrchestratorConfig,
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

#[cfg(test)]
mod tests {
    use super::*;

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
    fn bad_flags_are_refused() {
        assert!(parse(["balancer", "--key", "ip"]).is_err());
        assert!(parse(["balancer", "--hash-preset", "md5"]).is_err());
        assert!(parse(["balancer", "--fall", "0"]).is_err());
        assert!(parse(["balancer", "--orchestrator", "k8s"]).is_err());
        assert!(parse(["balancer", "--policy", "fastest"]).is_err());
        assert!(
            parse(["balancer", "--backend-arg", "x"]).is_err(),
            "needs --backend-bin"
        );
    }

    #[test]
    fn help_lists_every_registered_policy_and_orchestrator() {
        use clap::CommandFactory as _;
        let help = Cli::command().render_long_help().to_string();
        for (name, about) in crate::policy::REGISTRY
            .iter()
            .map(|(n, a, _)| (*n, *a))
            .chain(
                crate::orchestrator::REGISTRY
                    .iter()
                    .map(|(n, a, _)| (*n, *a)),
            )
        {
            let listed = help.lines().any(|line| {
                line.trim()
                    .strip_prefix(&format!("- {name}:"))
                    .is_some_and(|rest| rest.trim() == about)
            });
            assert!(listed, "{name} missing from --help");
        }
    }
}
