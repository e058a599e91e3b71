//! A raw HTTP/1.1 upstream for edge tests: it parses each request itself
//! (head, a Content-Length or chunked body, trailers), records it, and
//! answers with exactly the bytes a test asks for, so a test can send what
//! no well-behaved server would (both framings, a stall mid-body, an
//! unsolicited 101, a close on a reused connection). Heartbeats get a 200.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
};

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Which connection (0, 1, ...) and which request on it.
    pub conn: usize,
    pub index: usize,
    pub method: String,
    pub target: String,
    /// Header lines, lower-cased names: (name, value).
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// What to do with a request.
pub enum Reply {
    /// Write these bytes, keep the connection for the next request.
    Send(Vec<u8>),
    /// Wait, then write these bytes and keep the connection.
    SendAfter(Duration, Vec<u8>),
    /// Write these bytes, then hold the connection without writing more.
    SendAndStall(Vec<u8>),
    /// Close the connection without answering.
    Close,
    /// Write these bytes (a 101), then echo whatever arrives.
    Echo(Vec<u8>),
}

/// A simple `200 OK` with `body` and keep-alive.
pub fn ok(body: &str) -> Reply {
    Reply::Send(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

pub struct RawUpstream {
    pub url: String,
    pub seen: Arc<Mutex<Vec<Seen>>>,
}

impl RawUpstream {
    /// Requests other than heartbeats, in order of arrival.
    pub fn requests(&self) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("seen")
            .iter()
            .filter(|s| s.target != "/heartbeat")
            .cloned()
            .collect()
    }
}

/// Starts an upstream that answers every request with `respond`.
pub async fn raw_upstream<F>(respond: F) -> RawUpstream
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let respond = Arc::new(respond);
    let log = seen.clone();
    tokio::spawn(async move {
        let mut conn = 0;
        while let Ok((socket, _)) = listener.accept().await {
            let (respond, log) = (respond.clone(), log.clone());
            tokio::spawn(serve(socket, conn, respond, log));
            conn += 1;
        }
    });
    RawUpstream { url, seen }
}

async fn serve<F>(socket: TcpStream, conn: usize, respond: Arc<F>, log: Arc<Mutex<Vec<Seen>>>)
where
    F: Fn(&Seen) -> Reply + Send + Sync + 'static,
{
    let mut socket = BufReader::new(socket);
    for index in 0.. {
        let Some(seen) = read_request(&mut socket, conn, index).await else {
            return;
        };
        log.lock().expect("seen").push(seen.clone());
        let reply = if seen.target == "/heartbeat" {
            Reply::Send(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec())
        } else {
            respond(&seen)
        };
        match reply {
            Reply::Send(bytes) => {
                if socket.get_mut().write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendAfter(wait, bytes) => {
                tokio::time::sleep(wait).await;
                if socket.get_mut().write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::SendAndStall(bytes) => {
                let _ = socket.get_mut().write_all(&bytes).await;
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return;
            }
            Reply::Close => return,
            Reply::Echo(bytes) => {
                let _ = socket.get_mut().write_all(&bytes).await;
                let mut buf = vec![0; 4096];
                loop {
                    match socket.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if socket.get_mut().write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        }
    }
}

async fn read_line(socket: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = String::new();
    let n = socket.read_line(&mut line).await.ok()?;
    (n > 0).then(|| line.trim_end_matches(['\r', '\n']).to_owned())
}

async fn read_headers(socket: &mut BufReader<TcpStream>) -> Option<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(socket).await?;
        if line.is_empty() {
            return Some(headers);
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

async fn read_request(
    socket: &mut BufReader<TcpStream>,
    conn: usize,
    index: usize,
) -> Option<Seen> {
    let line = read_line(socket).await?;
    let mut parts = line.split(' ');
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let headers = read_headers(socket).await?;
    let mut seen = Seen {
        conn,
        index,
        method,
        target,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    let chunked = seen
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"));
    if chunked {
        loop {
            let size = read_line(socket).await?;
            let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                seen.trailers = read_headers(socket).await?;
                break;
            }
            let mut chunk = vec![0; size + 2];
            socket.read_exact(&mut chunk).await.ok()?;
            seen.body.extend_from_slice(&chunk[..size]);
        }
    } else if let Some(len) = seen
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        let mut body = vec![0; len];
        socket.read_exact(&mut body).await.ok()?;
        seen.body = body;
    }
    Some(seen)
}

/// A raw client: sends `bytes` on a fresh connection to `addr`, then reads
/// until the connection closes or `wait` passes; what it read.
pub async fn exchange(addr: &str, bytes: &[u8], wait: Duration) -> String {
    let mut socket = TcpStream::connect(addr).await.expect("connect");
    socket.write_all(bytes).await.expect("write");
    read_for(&mut socket, wait).await
}

/// Reads from `socket` until it closes or `wait` passes.
pub async fn read_for(socket: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = vec![0; 65536];
    let until = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(until, socket.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
