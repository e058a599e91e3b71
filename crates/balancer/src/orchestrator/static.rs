//! The static orchestrator: balance over servers someone else runs (nginx,
//! another service) given by `--upstream [NAME=]URL`.
//!
//! It adopts the upstream list at start and refuses to create or remove
//! anything, so `/add` and `/rm` answer a clear error. A dead upstream is
//! taken out of rotation by health checks and put back when it answers again.

use std::{
    net::{SocketAddr, ToSocketAddrs},
    sync::Arc,
};

use super::{Adopted, BoxFuture, Instance, Orchestrator, OrchestratorError, ReplicaSpec};
use crate::{replica::Protocol, upstream::UpstreamSpec};

/// Flags of the static orchestrator.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Static orchestrator")]
pub struct StaticArgs {
    /// With --orchestrator static: an upstream as [NAME=]http://HOST:PORT[#weight=W]
    /// (h2c://HOST:PORT for one that speaks HTTP/2 without TLS); repeat it.
    #[arg(long, env = "LB_UPSTREAM", value_delimiter = ',')]
    pub upstream: Vec<String>,
}

/// The static orchestrator of `config`'s `--upstream` list.
pub fn build(
    config: &super::OrchestratorConfig,
) -> Result<Arc<dyn Orchestrator>, OrchestratorError> {
    let list = &config.upstreams.upstream;
    if list.is_empty() {
        return Err(OrchestratorError::Config(
            "--orchestrator static needs at least one --upstream URL".into(),
        ));
    }
    let upstreams = list
        .iter()
        .enumerate()
        .map(|(i, u)| Upstream::parse(u, i))
        .collect::<Result<Vec<_>, _>>()
        .map_err(OrchestratorError::Config)?;
    // Two members of one name could not be told apart (or removed).
    let mut names = std::collections::HashSet::new();
    if let Some(dup) = upstreams.iter().find(|u| !names.insert(u.name.as_str())) {
        return Err(OrchestratorError::Config(format!(
            "upstream name '{}' is used twice",
            dup.name
        )));
    }
    Ok(Arc::new(StaticOrchestrator::new(upstreams)))
}

/// One configured upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u32,
    /// `Some(H2c)` for an `h2c://` URL.
    pub protocol: Option<Protocol>,
}

impl Upstream {
    /// Parses `URL`, `NAME=URL` or either with `#weight=W` (see
    /// [`UpstreamSpec`]), then resolves the host.
    pub fn parse(s: &str, index: usize) -> Result<Self, String> {
        let spec = UpstreamSpec::parse(s, index).map_err(|e| e.to_string())?;
        let hostport = spec.host_port.as_str();
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| format!("cannot resolve upstream '{hostport}': {e}"))?
            .next()
            .ok_or_else(|| format!("upstream '{hostport}' resolves to nothing"))?;
        Ok(Self {
            name: spec.name.into_string(),
            addr,
            weight: spec.weight,
            protocol: spec.protocol,
        })
    }
}

/// Balances over a fixed upstream list.
#[derive(Debug)]
pub struct StaticOrchestrator {
    upstreams: Vec<Upstream>,
}

impl StaticOrchestrator {
    pub fn new(upstreams: Vec<Upstream>) -> Self {
        Self { upstreams }
    }
}

impl Orchestrator for StaticOrchestrator {
    fn kind(&self) -> &'static str {
        "static"
    }

    fn manages_replicas(&self) -> bool {
        false
    }

    fn adopt(&self) -> BoxFuture<'_, Result<Vec<Adopted>, OrchestratorError>> {
        let adopted = self
            .upstreams
            .iter()
            .zip(1..)
            .map(|(u, id)| Adopted {
                spec: ReplicaSpec {
                    name: u.name.clone(),
                    id,
                },
                instance: Instance {
                    protocol: u.protocol,
                    handle: u.name.clone(),
                    addr: u.addr,
                    pid: None,
                    exited: None,
                },
                weight: u.weight,
            })
            .collect();
        Box::pin(async move { Ok(adopted) })
    }

    fn spawn(&self, _spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>> {
        Box::pin(async { Err(OrchestratorError::Unsupported("static")) })
    }

    fn stop(&self, _handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        // Nothing of ours runs there; forgetting the upstream is enough.
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_upstream_forms() {
        let u = Upstream::parse("http://127.0.0.1:8080", 0).expect("plain");
        assert_eq!(
            (u.name.as_str(), u.addr.port(), u.weight),
            ("server-1", 8080, 1)
        );
        let u = Upstream::parse("web=http://127.0.0.1:81/#weight=3", 4).expect("named");
        assert_eq!((u.name.as_str(), u.addr.port(), u.weight), ("web", 81, 3));
        assert!(Upstream::parse("https://127.0.0.1:1", 0).is_err());
        let u = Upstream::parse("grpc=h2c://127.0.0.1:50051", 0).expect("h2c");
        assert_eq!((u.name.as_str(), u.protocol), ("grpc", Some(Protocol::H2c)));
        assert!(Upstream::parse("http://127.0.0.1:1#weight=0", 0).is_err());
        assert!(Upstream::parse("http://no-port", 0).is_err());
        assert!(Upstream::parse("bad name=http://127.0.0.1:1", 0).is_err());
    }

    #[test]
    fn two_upstreams_of_one_name_are_refused() {
        let config = |list: &[&str]| super::super::OrchestratorConfig {
            upstreams: StaticArgs {
                upstream: list.iter().map(|s| (*s).to_owned()).collect(),
            },
            ..Default::default()
        };
        assert!(build(&config(&["a=http://127.0.0.1:1", "b=http://127.0.0.1:2"])).is_ok());
        let err = build(&config(&[
            "http://127.0.0.1:1",
            "server-1=http://127.0.0.1:2",
        ]))
        .err()
        .expect("refused");
        assert!(err.to_string().contains("twice"), "{err}");
    }
}
