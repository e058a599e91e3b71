//! The process orchestrator: each replica is a separate local process.
//!
//! By default it re-runs the balancer's own executable as `balancer backend
//! ...`, so a fresh checkout needs one binary. The child binds port 0 and
//! announces the port on stdout, so there is no window in which another
//! program could take a port we picked for it.
//!
//! No orphans, however the balancer ends: every child holds the read end of
//! a pipe whose write end only the balancer has (its stdin) and shuts down
//! when it reads end-of-file. The kernel closes that pipe when the balancer
//! exits, panics, or is SIGKILLed, so this needs no signal handling and no
//! `unsafe` (`PR_SET_PDEATHSIG` would, and it fires on the death of the
//! spawning *thread*, not the process). Children run in their own process
//! group so a terminal's Ctrl-C reaches only the balancer, which then drains
//! and stops them in order.

use std::{
    collections::HashMap,
    path::PathBuf,
    process::Stdio,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{ChildStdin, Command},
    sync::{oneshot, watch},
};

use super::{BoxFuture, Instance, Orchestrator, OrchestratorError, ReplicaSpec};

/// Flags of the process orchestrator.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Process orchestrator")]
pub struct ProcessArgs {
    /// Program run as a replica (default: this executable's `backend` subcommand).
    #[arg(long, env = "LB_BACKEND_BIN", value_name = "PATH")]
    pub backend_bin: Option<PathBuf>,
    /// An argument given to --backend-bin before the replica's own flags
    /// (e.g. `backend`); repeat it.
    #[arg(
        long,
        env = "LB_BACKEND_ARG",
        value_delimiter = ',',
        requires = "backend_bin"
    )]
    pub backend_arg: Vec<String>,
    /// Artificial delay of every replica's /home, for experiments.
    #[arg(long, env = "LB_BACKEND_DELAY_MS", default_value_t = 0)]
    pub backend_delay_ms: u64,
}

/// The process orchestrator of `config`.
pub fn build(
    config: &super::OrchestratorConfig,
) -> Result<std::sync::Arc<dyn Orchestrator>, OrchestratorError> {
    let args = &config.process;
    let command = match &args.backend_bin {
        Some(program) => BackendCommand {
            program: program.clone(),
            args: args.backend_arg.clone(),
        },
        None => BackendCommand::current_exe()
            .map_err(|e| OrchestratorError::Config(format!("cannot find this executable: {e}")))?,
    };
    let extra = if args.backend_delay_ms > 0 {
        vec!["--delay-ms".into(), args.backend_delay_ms.to_string()]
    } else {
        Vec::new()
    };
    Ok(std::sync::Arc::new(ProcessOrchestrator::new(
        command,
        extra,
        config.stop_timeout,
    )))
}

/// How long a child may take to print its port.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);

/// The command line that starts a replica.
#[derive(Debug, Clone)]
pub struct BackendCommand {
    pub program: PathBuf,
    /// Arguments before the replica's own flags, e.g. `["backend"]`.
    pub args: Vec<String>,
}

impl BackendCommand {
    /// This executable's `backend` subcommand.
    pub fn current_exe() -> std::io::Result<Self> {
        Ok(Self {
            program: std::env::current_exe()?,
            args: vec!["backend".into()],
        })
    }
}

/// A child we started and still own.
struct Child {
    /// Dropping it is the graceful stop signal.
    stdin: Option<ChildStdin>,
    kill: Option<oneshot::Sender<()>>,
    exited: watch::Receiver<bool>,
}

/// Runs replicas as child processes.
pub struct ProcessOrchestrator {
    command: BackendCommand,
    /// Extra flags for every replica (e.g. `--delay-ms`).
    extra_args: Vec<String>,
    children: Mutex<HashMap<String, Child>>,
    next: AtomicU64,
    stop_grace: Duration,
}

impl std::fmt::Debug for ProcessOrchestrator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessOrchestrator")
            .field("command", &self.command)
            .finish_non_exhaustive()
    }
}

impl ProcessOrchestrator {
    pub fn new(command: BackendCommand, extra_args: Vec<String>, stop_grace: Duration) -> Self {
        Self {
            command,
            extra_args,
            children: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            stop_grace,
        }
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        // A panic while holding this lock leaves the map consistent (every
        // operation is a single insert/remove), so poisoning is ignorable.
        self.children
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn start(&self, spec: ReplicaSpec) -> Result<Instance, OrchestratorError> {
        let fail = |reason: String| OrchestratorError::Spawn {
            name: spec.name.clone(),
            reason,
        };
        let mut command = Command::new(&self.command.program);
        command
            .args(&self.command.args)
            .args([
                "--id",
                &spec.name,
                "--listen",
                "127.0.0.1:0",
                "--announce",
                "--exit-with-parent",
            ])
            .args(&self.extra_args)
            .env("SERVER_ID", &spec.name)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| fail(format!("{}: {e}", self.command.program.display())))?;
        let pid = child.id();
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| fail("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let announced = tokio::time::timeout(ANNOUNCE_TIMEOUT, lines.next_line()).await;
        let addr = match announced {
            Ok(Ok(Some(line))) => line
                .strip_prefix("LISTENING ")
                .and_then(|a| a.trim().parse().ok())
                .ok_or_else(|| fail(format!("unexpected first line {line:?}"))),
            Ok(Ok(None)) => Err(fail("exited before listening".into())),
            Ok(Err(e)) => Err(fail(format!("reading its stdout: {e}"))),
            Err(_) => Err(fail(format!(
                "did not announce a port within {ANNOUNCE_TIMEOUT:?}"
            ))),
        };
        let addr = match addr {
            Ok(addr) => addr,
            Err(e) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                return Err(e);
            }
        };
        // Keep reading so a chatty child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        let handle = format!(
            "{}#{}",
            spec.name,
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let (kill_tx, kill_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(false);
        let stdin = child.stdin.take();
        tokio::spawn(reap(child, kill_rx, exit_tx));
        self.children().insert(
            handle.clone(),
            Child {
                stdin,
                kill: Some(kill_tx),
                exited: exit_rx.clone(),
            },
        );
        let mut exited = exit_rx;
        Ok(Instance {
            protocol: None,
            handle,
            addr,
            pid,
            exited: Some(Box::pin(async move {
                let _ = exited.wait_for(|e| *e).await;
            })),
        })
    }

    async fn stop_child(&self, handle: String) -> Result<(), OrchestratorError> {
        let Some(mut child) = self.children().remove(&handle) else {
            return Ok(());
        };
        drop(child.stdin.take());
        let graceful = tokio::time::timeout(self.stop_grace, child.exited.wait_for(|e| *e))
            .await
            .is_ok();
        if !graceful {
            tracing::warn!(%handle, "replica did not stop in time; killing it");
            if let Some(kill) = child.kill.take() {
                let _ = kill.send(());
            }
            let _ = child.exited.wait_for(|e| *e).await;
        }
        Ok(())
    }
}

/// Owns the child: reports its exit, kills it on request.
async fn reap(
    mut child: tokio::process::Child,
    kill: oneshot::Receiver<()>,
    exited: watch::Sender<bool>,
) {
    tokio::select! {
        status = child.wait() => {
            tracing::debug!(?status, pid = child.id(), "replica process exited");
        }
        _ = kill => {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }
    let _ = exited.send(true);
}

impl Orchestrator for ProcessOrchestrator {
    fn kind(&self) -> &'static str {
        "process"
    }

    fn spawn(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<Instance, OrchestratorError>> {
        Box::pin(self.start(spec))
    }

    fn stop(&self, handle: String) -> BoxFuture<'_, Result<(), OrchestratorError>> {
        Box::pin(self.stop_child(handle))
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let handles: Vec<String> = self.children().keys().cloned().collect();
            futures_util::future::join_all(handles.into_iter().map(|h| self.stop_child(h))).await;
        })
    }
}
