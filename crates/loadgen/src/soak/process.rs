//! The balancer under test as a process of its own (the `balancer` binary
//! with the process orchestrator), so its memory and descriptors can be
//! read from `/proc` apart from the load generator's, and so what it leaves
//! behind after SIGTERM (orphan replicas) can be seen.

use std::{
    collections::BTreeSet,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use super::SoakError;

/// A running balancer process.
pub struct BalancerProcess {
    child: Child,
    pub addr: String,
    /// Every replica process seen as its child while it ran.
    pub replica_pids: BTreeSet<u32>,
}

/// One reading of the balancer's resources.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Resources {
    pub rss_kib: u64,
    pub fds: u64,
}

impl BalancerProcess {
    /// Starts `program` with `args` (which must include `--listen
    /// 127.0.0.1:0`) and waits for the address it prints.
    pub fn start(program: &Path, args: &[String], log: &Path) -> Result<Self, SoakError> {
        let log = std::fs::File::create(log).map_err(SoakError::Io)?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|e| SoakError::Start(format!("{}: {e}", program.display())))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| SoakError::Start("no stdout".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(addr) = line.strip_prefix("balancer listening on http://") {
                        break addr.trim().to_owned();
                    }
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SoakError::Start(
                        "the balancer exited before listening".into(),
                    ));
                }
            }
        };
        // Keep draining stdout so the balancer never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Self {
            child,
            addr,
            replica_pids: BTreeSet::new(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory and open descriptors now; also notes its
    /// replica children.
    pub fn sample(&mut self) -> Option<Resources> {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let rss_kib = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())?;
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
        self.replica_pids.extend(children_of(pid));
        Some(Resources { rss_kib, fds })
    }

    /// SIGTERM, then waits up to `grace` for the balancer to drain and stop
    /// its replicas (then SIGKILL). Whether it exited on its own.
    pub fn terminate(mut self, grace: Duration) -> (bool, BTreeSet<u32>) {
        self.replica_pids.extend(children_of(self.pid()));
        signal(self.pid(), "TERM");
        let until = std::time::Instant::now() + grace;
        let clean = loop {
            if let Ok(Some(_)) = self.child.try_wait() {
                break true;
            }
            if std::time::Instant::now() >= until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        (clean, self.replica_pids)
    }
}

/// Sends `SIG<name>` to `pid` (with kill(1): this crate has no unsafe code).
pub fn signal(pid: u32, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| stat(*child).is_some_and(|(_, ppid)| ppid == pid))
        .collect()
}

/// A process's state letter and parent, from `/proc/<pid>/stat`.
fn stat(pid: u32) -> Option<(char, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// Of `pids`, those still alive (not zombies) and still a replica (the
/// command line says `backend`: a reused pid is not an orphan of ours).
pub fn survivors(pids: &BTreeSet<u32>) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|&pid| stat(pid).is_some_and(|(state, _)| state != 'Z'))
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.split(|&b| b == 0).any(|arg| arg == b"backend"))
        })
        .collect()
}
