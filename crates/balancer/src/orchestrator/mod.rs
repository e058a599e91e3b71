//! Orchestrators start and stop replica instances: local processes, Docker
//! containers, Swarm services, or (static) servers someone else runs.
//!
//! An orchestrator knows nothing about pools, health or policies: it turns
//! a [`ReplicaSpec`] (hostname, ring id) into a running [`Instance`] with an
//! address and a future that resolves when the instance dies, and stops an
//! instance by its handle. The supervisor decides when to call it.
//!
//! Adding an orchestrator is one file here (the type, its flags as a clap
//! `Args` struct, and a `build` function from the [`OrchestratorConfig`]),
//! one line in [`REGISTRY`], and one `#[command(flatten)]` line for its
//! flags in [`OrchestratorConfig`].

pub mod docker;
pub mod process;
pub mod r#static;
pub mod swarm;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use clap::builder::{PossibleValue, PossibleValuesParser};
pub use futures_util::future::BoxFuture;

use crate::replica::ReplicaId;

pub use docker::{DockerArgs, DockerOrchestrator};
pub use process::{ProcessArgs, ProcessOrchestrator};
pub use r#static::{StaticArgs, StaticOrchestrator};
pub use swarm::{SwarmArgs, SwarmOrchestrator};

type Constructor = fn(&OrchestratorConfig) -> Result<Arc<dyn Orchestrator>, OrchestratorError>;

/// Every orchestrator `--orchestrator` accepts: name, one-line description,
/// constructor. A new orchestrator is one more line here.
pub const REGISTRY: &[(&str, &str, Constructor)] = &[
    (
        "process",
        "replicas are local child processes (no Docker needed)",
        process::build,
    ),
    (
        "docker",
        "replicas are Docker containers on --docker-network",
        docker::build,
    ),
    (
        "swarm",
        "replicas are Docker Swarm services on --swarm-network, shared by every balancer",
        swarm::build,
    ),
    (
        "static",
        "balance over existing servers given by --upstream",
        r#static::build,
    ),
];

/// The orchestrator used when none is named.
pub const DEFAULT_ORCHESTRATOR: &str = "process";

/// Names of every registered orchestrator.
pub fn names() -> Vec<&'static str> {
    REGISTRY.iter().map(|(name, _, _)| *name).collect()
}

/// `--orchestrator`, what every orchestrator shares, and each one's flags.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Orchestrator")]
pub struct OrchestratorConfig {
    /// Who runs the replicas.
    #[arg(long = "orchestrator", env = "LB_ORCHESTRATOR", default_value = DEFAULT_ORCHESTRATOR, value_parser = values())]
    pub kind: String,
    /// How long a replica that is stopped gets to exit before it is killed.
    #[arg(long, env = "LB_STOP_TIMEOUT", default_value = "5s", value_parser = crate::duration::parse_duration)]
    pub stop_timeout: Duration,
    #[command(flatten)]
    pub process: ProcessArgs,
    #[command(flatten)]
    pub docker: DockerArgs,
    #[command(flatten)]
    pub upstreams: StaticArgs,
    #[command(flatten)]
    pub swarm: SwarmArgs,
}

impl Default for OrchestratorConfig {
    /// The defaults of the flags (and whatever `LB_*` variables set).
    fn default() -> Self {
        #[derive(clap::Parser)]
        struct Flags {
            #[command(flatten)]
            config: OrchestratorConfig,
        }
        // The defaults are literals that parse (the config tests check).
        #[allow(clippy::panic)]
        <Flags as clap::Parser>::try_parse_from(["balancer"])
            .unwrap_or_else(|e| panic!("orchestrator defaults parse: {e}"))
            .config
    }
}

/// `--orchestrator`'s values, with their descriptions, from the registry.
fn values() -> PossibleValuesParser {
    PossibleValuesParser::new(
        REGISTRY
            .iter()
            .map(|(name, about, _)| PossibleValue::new(*name).help(*about)),
    )
}

/// Builds the orchestrator `config.kind` names, from its flags.
pub fn from_config(
    config: &OrchestratorConfig,
) -> Result<Arc<dyn Orchestrator>, OrchestratorError> {
    let (_, _, build) = REGISTRY
        .iter()
        .find(|(name, _, _)| *name == config.kind)
        .ok_or_else(|| {
            OrchestratorError::Config(format!(
                "unknown orchestrator '{}' (known: {})",
                config.kind,
                names().join(", ")
            ))
        })?;
    build(config)
}

/// What to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaSpec {
    /// Hostname (and `SERVER_ID`) of the replica.
    pub name: String,
    pub id: ReplicaId,
}

/// A started replica instance.
pub struct Instance {
    /// Opaque handle for [`Orchestrator::stop`] (a container id, a pid...).
    pub handle: String,
    pub addr: SocketAddr,
    pub pid: Option<u32>,
    /// What it speaks, if the orchestrator knows (a static upstream's
    /// `h2c://`); otherwise `--upstream-protocol`.
    pub protocol: Option<crate::replica::Protocol>,
    /// Resolves when the instance stops for any reason; `None` if the
    /// orchestrator cannot tell (active health checks still will).
    pub exited: Option<BoxFuture<'static, ()>>,
}

impl std::fmt::Debug for Instance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instance")
            .field("handle", &self.handle)
            .field("addr", &self.addr)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

/// An instance found running at start-up, to adopt instead of respawning.
#[derive(Debug)]
pub struct Adopted {
    pub spec: ReplicaSpec,
    pub instance: Instance,
    pub weight: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum OrchestratorError {
    #[error("cannot start replica '{name}': {reason}")]
    Spawn { name: String, reason: String },
    #[error("replica '{name}' did not answer /heartbeat within {timeout_ms} ms")]
    NotReady { name: String, timeout_ms: u64 },
    #[error(
        "the {0} orchestrator does not create or remove replicas; change the upstream list instead"
    )]
    Unsupported(&'static str),
    #[error("container engine unreachable: {0}")]
    Engine(String),
    #[error("cannot stop instance {handle}: {reason}")]
    Stop { handle: String, reason: String },
    #[error("the start of replica '{name}' was cancelled: the balancer is shutting down")]
    Cancelled { name: String },
    #[error("{0}")]
    Config(String),
    /// The engine already has a replica with this name or ring id (another
    /// balancer added it first): nothing was created.
    #[error("replica '{name}': its {what} is taken in the engine")]
    Taken { name: String, what: Taken },
}

/// What of a replica another one already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taken {
    Name,
    Id(ReplicaId),
}

impl std::fmt::Display for Taken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name => f.write_str("name"),
            Self::Id(id) => write!(f, "ring id {id}"),
        }
    }
}

/// One replica as the engine shows it, for orchestrators whose membership
/// lives in the engine and is shared by several balancers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub spec: ReplicaSpec,
    /// What [`Orchestrator::stop`] takes to remove it.
    pub handle: String,
    /// Where its serving instance answers; `None` while none serves (it
    /// died and the engine restarts it, or its node is down).
    pub addr: Option<SocketAddr>,
}

/// Every replica the engine shows at one moment.
#[derive(Debug, Clone)]
pub struct Observation {
    /// When the engine was asked: a member that joined after this may be
    /// missing from `members` without having left.
    pub taken_at: tokio::time::Instant,
    pub members: Vec<Observed>,
}

/// Starts and stops replica instances.
pub trait Orchestrator: Send + Sync + 'static {
    /// Its name in [`REGISTRY`], for `/lb/status`.
    fn kind(&self) -> &'static str;

    /// Whether it can create replicas (and so replace a dead one).
    fn manages_replicas(&self) -> bool {
        true
    }

    /// Whether the engine restarts a dead instance itself (Swarm's restart
    /// policy): then the supervisor takes it out of rotation and waits for
    /// [`Orchestrator::observe`] to show the new one, instead of starting a
    /// replacement.
    fn restarts_replicas(&self) -> bool {
        false
    }

    /// Membership as the engine sees it, for engines shared by several
    /// balancers: a task that sends an [`Observation`] on every change it
    /// sees (and at least every poll interval) until `stop`. `None` (the
    /// default): this balancer's own memory is the membership.
    fn observe(
        &self,
        _tx: tokio::sync::mpsc::UnboundedSender<Observation>,
        _stop: tokio_util::sync::CancellationToken,
    ) -> Option<BoxFuture<'static, ()>> {
        None
    }

    /// Instances already running that this balancer should manage.
    fn adopt(&self) -> BoxFuture<'_, Result<Vec<Adopted>, OrchestratorError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    /// Starts an instance; returns once it has an address (not necessarily
    /// ready: the supervisor waits for its heartbeat).
    fn spawn(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>>;

    /// Stops an instance, gracefully first, within a bounded time.
    fn stop(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>>;

    /// Stops an instance because the balancer is shutting down. Orchestrators
    /// whose instances should outlive the balancer (to be adopted by the
    /// next one) override this to leave them running.
    fn stop_on_shutdown(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        self.stop(handle)
    }

    /// Called once when the balancer shuts down, after every replica it
    /// still runs has been drained.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}
