//! Shared helpers of the balancer's integration tests: start the real
//! `balancer` binary (with real replica processes) or an in-process
//! balancer over in-process backends, and talk to it over loopback.
#![allow(dead_code)]

pub mod raw;

use std::{
    collections::BTreeMap,
    process::Stdio,
    time::{Duration, Instant},
};

use balancer::{
    Balancer, Config,
    orchestrator::{OrchestratorConfig, StaticArgs},
};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    net::TcpListener,
    process::{Child, Command},
};

/// A `balancer` process started by a test; killed if the test panics.
pub struct BalancerProcess {
    pub child: Child,
    pub url: String,
    pub http: reqwest::Client,
}

/// Starts the balancer binary on an ephemeral port with `args`, and waits
/// until it prints its address (after its initial replicas are ready).
pub async fn start_balancer(args: &[&str]) -> BalancerProcess {
    let mut child = Command::new(env!("CARGO_BIN_EXE_balancer"))
        .args(["--listen", "127.0.0.1:0", "--log", "warn"])
        .args(args)
        .env_remove("LB_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn balancer");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("balancer starts within 30 s")
        .expect("read stdout")
        .expect("balancer printed its address");
    let url = line
        .strip_prefix("balancer listening on ")
        .expect("address line")
        .trim()
        .to_owned();
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    BalancerProcess {
        child,
        url,
        http: client(),
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .expect("client")
}

impl BalancerProcess {
    pub async fn get(&self, path: &str) -> (u16, Value) {
        send(self.http.get(format!("{}{path}", self.url))).await
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, Value) {
        send(
            self.http
                .post(format!("{}{path}", self.url))
                .body(body.to_owned()),
        )
        .await
    }

    pub async fn delete(&self, path: &str, body: &str) -> (u16, Value) {
        send(
            self.http
                .delete(format!("{}{path}", self.url))
                .body(body.to_owned()),
        )
        .await
    }

    /// Replica names as `/rep` shows them.
    pub async fn replicas(&self) -> Vec<String> {
        let (status, body) = self.get("/rep").await;
        assert_eq!(status, 200, "{body}");
        body["message"]["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|v| v.as_str().expect("name").to_owned())
            .collect()
    }

    /// `/lb/status` replicas by name.
    pub async fn status(&self) -> BTreeMap<String, Value> {
        let (_, body) = self.get("/lb/status").await;
        body["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|r| (r["name"].as_str().expect("name").to_owned(), r.clone()))
            .collect()
    }

    pub async fn pids(&self) -> BTreeMap<String, u32> {
        self.status()
            .await
            .into_iter()
            .map(|(name, r)| {
                (
                    name,
                    u32::try_from(r["pid"].as_u64().expect("pid")).expect("u32"),
                )
            })
            .collect()
    }

    /// Replica ids that answered `n` sequential GETs of /home.
    pub async fn spread(&self, n: usize) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for _ in 0..n {
            let (status, body) = self.get("/home").await;
            assert_eq!(status, 200, "{body}");
            *counts.entry(replica_of(&body)).or_insert(0) += 1;
        }
        counts
    }

    /// SIGTERM and wait for exit.
    pub async fn terminate(mut self) {
        if let Some(pid) = self.child.id() {
            signal(pid, "TERM");
        }
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("balancer exits within 30 s of SIGTERM")
            .expect("wait");
    }
}

pub async fn send(req: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, body)
}

/// The replica id in a `/home` reply.
pub fn replica_of(body: &Value) -> String {
    body["message"]
        .as_str()
        .and_then(|m| m.strip_prefix(backend::HomeReply::PREFIX))
        .unwrap_or_else(|| panic!("not a /home reply: {body}"))
        .to_owned()
}

/// Sends a signal with kill(1): tests only, on our own children.
pub fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .expect("kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Polls `check` every 20 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = Instant::now() + timeout;
    while Instant::now() < until {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out after {timeout:?} waiting for: {what}");
}

/// An in-process replica on an ephemeral loopback port; stops when dropped.
pub struct LocalBackend {
    pub url: String,
    pub addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for LocalBackend {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub async fn local_backend(id: &str, delay_ms: u64) -> LocalBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    local_backend_on(listener, id, delay_ms)
}

pub fn local_backend_on(listener: TcpListener, id: &str, delay_ms: u64) -> LocalBackend {
    let addr = listener.local_addr().expect("addr");
    let config = backend::Config {
        id: id.into(),
        delay_ms,
    };
    LocalBackend {
        url: format!("http://{addr}"),
        addr,
        stop: Some(backend::spawn(listener, config)),
    }
}

/// The configuration of an in-process balancer over fixed upstreams
/// (`[NAME=]URL`, the static orchestrator) on an ephemeral port, with
/// heartbeats out of the way: the tests using it are about the data path.
pub fn static_config(upstreams: Vec<String>, policy: &str) -> Config {
    Config {
        listen: "127.0.0.1:0".into(),
        orchestrator: OrchestratorConfig {
            kind: "static".into(),
            upstreams: StaticArgs {
                upstream: upstreams,
            },
            ..OrchestratorConfig::default()
        },
        policy: policy.into(),
        health_interval: Duration::from_secs(60),
        ..Config::default()
    }
}

/// [`static_config`] changed by `tweak`, started.
pub async fn start_static(
    upstreams: Vec<String>,
    policy: &str,
    tweak: impl FnOnce(&mut Config),
) -> balancer::Running {
    let mut config = static_config(upstreams, policy);
    tweak(&mut config);
    Balancer::new(config).start().await.expect("start")
}

/// Installs the Debian packages of the command-line tools a test drives
/// (`(program, package)`) when they are missing: tests install what they
/// need themselves, so `cargo test` works on a fresh machine.
pub fn ensure_tools(tools: &[(&str, &str)]) {
    let missing: Vec<&str> = tools
        .iter()
        .filter(|(program, _)| {
            std::process::Command::new("sh")
                .args(["-c", &format!("command -v {program}")])
                .stdout(Stdio::null())
                .status()
                .map_or(true, |s| !s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    if missing.is_empty() {
        return;
    }
    let sudo: &[&str] = if std::env::var("USER").as_deref() == Ok("root")
        || std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        }) {
        &[]
    } else {
        &["sudo"]
    };
    let run = |args: &[&str]| {
        let mut command = std::process::Command::new(sudo.first().copied().unwrap_or(args[0]));
        command.args(if sudo.is_empty() { &args[1..] } else { args });
        command.env("DEBIAN_FRONTEND", "noninteractive").status()
    };
    let _ = run(&["apt-get", "update", "-q"]);
    let mut install = vec!["apt-get", "install", "-y", "-q", "--no-install-recommends"];
    install.extend(&missing);
    let status = run(&install).expect("apt-get");
    assert!(status.success(), "could not install {missing:?}");
}

/// `n` GETs of /home with `concurrency` in flight; counts per replica.
pub async fn load(url: &str, n: usize, concurrency: usize) -> BTreeMap<String, usize> {
    let client = client();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, next, url) = (client.clone(), next.clone(), url.to_owned());
        tasks.push(tokio::spawn(async move {
            let mut counts = BTreeMap::new();
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                let (status, body) = send(client.get(format!("{url}/home"))).await;
                assert_eq!(status, 200, "{body}");
                *counts.entry(replica_of(&body)).or_insert(0) += 1;
            }
            counts
        }));
    }
    let mut total = BTreeMap::new();
    for t in tasks {
        for (k, v) in t.await.expect("task") {
            *total.entry(k).or_insert(0) += v;
        }
    }
    total
}
