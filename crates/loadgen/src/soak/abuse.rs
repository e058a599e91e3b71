//! Slow and abusive clients mixed into the soak, over raw sockets: what
//! each did and how the balancer answered. None of it may cost another
//! client a request or a replica its place in rotation.

use std::{sync::Arc, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::Semaphore,
    time::Instant,
};
use tokio_util::sync::CancellationToken;

/// The kinds of abuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A request head sent a header line a second (slowloris).
    SlowHead,
    /// A body sent a byte a second.
    TrickleBody,
    /// A chunked body with an invalid chunk size.
    BadChunk,
    /// A body cut off: the client closes half-way.
    AbortMidBody,
    /// A body cut off by a half-close (`shutdown(SHUT_WR)`).
    HalfCloseMidBody,
}

impl Kind {
    pub const ALL: [Self; 5] = [
        Self::SlowHead,
        Self::TrickleBody,
        Self::BadChunk,
        Self::AbortMidBody,
        Self::HalfCloseMidBody,
    ];
}

/// One abusive client.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Abuse {
    pub kind: Kind,
    pub start_s: f64,
    /// How long until the balancer answered or closed the connection.
    pub held_s: f64,
    /// The status the balancer answered, if any.
    pub status: Option<u16>,
    /// The connection was still open when the client gave up.
    pub still_open: bool,
}

/// Starts an abusive client every `every` (at most `max_open` at once)
/// until `stop`; returns what each came to.
pub async fn run(
    addr: String,
    every: Duration,
    max_open: usize,
    t0: Instant,
    stop: CancellationToken,
) -> Vec<Abuse> {
    let open = Arc::new(Semaphore::new(max_open));
    let mut tasks = Vec::new();
    let mut n = 0usize;
    while !stop.is_cancelled() {
        if let Ok(permit) = open.clone().try_acquire_owned() {
            let kind = Kind::ALL[n % Kind::ALL.len()];
            n += 1;
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let _permit = permit;
                let start = t0.elapsed().as_secs_f64();
                let (status, still_open) = one(&addr, kind).await;
                Abuse {
                    kind,
                    start_s: start,
                    held_s: t0.elapsed().as_secs_f64() - start,
                    status,
                    still_open,
                }
            }));
        }
        super::pause(&stop, every).await;
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        if let Ok(abuse) = t.await {
            out.push(abuse);
        }
    }
    out
}

/// The longest an abusive client keeps trying: well past every timeout of
/// the balancer under soak, so "still open" means no timeout fired.
const GIVE_UP: Duration = Duration::from_secs(20);

async fn one(addr: &str, kind: Kind) -> (Option<u16>, bool) {
    let Ok(mut socket) = TcpStream::connect(addr).await else {
        return (None, false);
    };
    let head = "host: soak\r\n";
    let outcome = match kind {
        Kind::SlowHead => {
            let _ = socket
                .write_all(format!("GET /home HTTP/1.1\r\n{head}").as_bytes())
                .await;
            trickle(&mut socket, b"x-slow: 1\r\n").await
        }
        Kind::TrickleBody => {
            let _ = socket
                .write_all(
                    format!("POST /home HTTP/1.1\r\n{head}content-length: 64\r\n\r\n").as_bytes(),
                )
                .await;
            trickle(&mut socket, b"x").await
        }
        Kind::BadChunk => {
            let request = format!(
                "POST /home HTTP/1.1\r\n{head}transfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n"
            );
            let _ = socket.write_all(request.as_bytes()).await;
            None
        }
        Kind::AbortMidBody => {
            let mut request =
                format!("POST /home HTTP/1.1\r\n{head}content-length: 10000\r\n\r\n").into_bytes();
            request.extend(std::iter::repeat_n(b'a', 1000));
            let _ = socket.write_all(&request).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            // Dropped: the client is gone mid-body.
            return (None, false);
        }
        Kind::HalfCloseMidBody => {
            let mut request =
                format!("POST /home HTTP/1.1\r\n{head}content-length: 10000\r\n\r\n").into_bytes();
            request.extend(std::iter::repeat_n(b'a', 1000));
            let _ = socket.write_all(&request).await;
            let _ = socket.shutdown().await;
            None
        }
    };
    match outcome {
        Some(closed) => closed,
        None => read_answer(&mut socket).await,
    }
}

/// Writes `piece` once a second until the balancer answers or closes, or
/// [`GIVE_UP`]; `Some` with the outcome then.
async fn trickle(socket: &mut TcpStream, piece: &[u8]) -> Option<(Option<u16>, bool)> {
    let until = Instant::now() + GIVE_UP;
    let mut buf = [0u8; 1024];
    while Instant::now() < until {
        if socket.write_all(piece).await.is_err() {
            return Some((None, false));
        }
        match tokio::time::timeout(Duration::from_secs(1), socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some((None, false)),
            Ok(Ok(n)) => return Some((status_of(&buf[..n]), false)),
            Err(_) => {}
        }
    }
    Some((None, true))
}

/// Reads the balancer's answer (or its close) for up to [`GIVE_UP`].
async fn read_answer(socket: &mut TcpStream) -> (Option<u16>, bool) {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(GIVE_UP, socket.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => (None, false),
        Ok(Ok(n)) => (status_of(&buf[..n]), false),
        Err(_) => (None, true),
    }
}

fn status_of(reply: &[u8]) -> Option<u16> {
    let line = reply.split(|&b| b == b'\n').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}
