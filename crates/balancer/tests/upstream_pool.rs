//! The upstream connection pool (`conns`, `proxy/exchange`): a kept-alive
//! connection to a replica serves the next request once its response body
//! has ended, whatever the body's framing; at most `--max-idle` are kept;
//! the request target sent is origin-form, with a `Host`.

mod common;

use std::collections::BTreeSet;

use common::raw::{Reply, Seen, raw_upstream};

/// The connections (by the upstream's count) that carried the requests.
fn conns(seen: &[Seen]) -> BTreeSet<usize> {
    seen.iter().map(|s| s.conn).collect()
}

async fn sequential_gets(reply: fn() -> Reply, max_idle: usize, n: usize) -> Vec<Seen> {
    let up = raw_upstream(move |_| reply()).await;
    let lb = common::start_static(vec![up.url.clone()], "round-robin", |c| {
        c.max_idle = max_idle;
    })
    .await;
    let client = common::client();
    for _ in 0..n {
        let response = client
            .get(format!("http://{}/x?q=1", lb.addr()))
            .send()
            .await
            .expect("response");
        assert!(response.status().is_success(), "{}", response.status());
        response.bytes().await.expect("body");
    }
    lb.stop().await;
    up.requests()
}

fn sized() -> Reply {
    common::raw::ok("fine")
}

fn chunked() -> Reply {
    Reply::Send(
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nfine\r\n0\r\n\r\n".to_vec(),
    )
}

fn empty() -> Reply {
    Reply::Send(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec())
}

#[tokio::test]
async fn one_connection_serves_sequential_requests_whatever_the_framing() {
    for (framing, reply) in [
        ("content-length", sized as fn() -> Reply),
        ("chunked", chunked),
        ("no body", empty),
    ] {
        let seen = sequential_gets(reply, 32, 10).await;
        assert_eq!(seen.len(), 10, "{framing}");
        assert_eq!(conns(&seen).len(), 1, "{framing}: {:?}", conns(&seen));
    }
}

#[tokio::test]
async fn no_connection_is_kept_with_max_idle_zero() {
    let seen = sequential_gets(sized, 0, 5).await;
    assert_eq!(conns(&seen).len(), 5, "{:?}", conns(&seen));
}

#[tokio::test]
async fn the_target_is_origin_form_with_the_clients_host() {
    let seen = sequential_gets(sized, 32, 1).await;
    assert_eq!(seen[0].target, "/x?q=1");
    assert!(
        seen[0]
            .header("host")
            .is_some_and(|h| h.starts_with("127.0.0.1:")),
        "{:?}",
        seen[0].headers
    );
}

#[tokio::test]
async fn a_large_upload_streams_through_a_pooled_connection() {
    // Larger than the retry buffer, so it is streamed, not held: the
    // upstream connection must keep writing it while the request waits
    // for the answer. Twice, the second on the kept connection.
    let up = raw_upstream(|s: &Seen| common::raw::ok(&s.body.len().to_string())).await;
    let lb = common::start_static(vec![up.url.clone()], "round-robin", |_| {}).await;
    let client = common::client();
    for _ in 0..2 {
        let upload = vec![b'x'; 1 << 20];
        let response = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            client
                .post(format!("http://{}/up", lb.addr()))
                .body(upload)
                .send(),
        )
        .await
        .expect("the upload finished in time")
        .expect("response");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("body"), (1 << 20).to_string());
    }
    lb.stop().await;
}

/// A replica of the test's own on a loopback port, serving each connection
/// with `serve`; its URL.
async fn replica_serving<F, Fut>(serve: F) -> String
where
    F: Fn(tokio::io::BufReader<tokio::net::TcpStream>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(serve(tokio::io::BufReader::new(socket)));
        }
    });
    url
}

#[tokio::test]
async fn an_answer_before_the_upload_ends_does_not_stall_the_upload() {
    // As nginx's `return 200` does: the replica answers at the head and
    // reads (and drops) the body afterwards. The connection must still
    // carry the rest of the client's upload, or the client's connection
    // stalls behind its unread body.
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let url = replica_serving(|mut socket| async move {
        loop {
            let mut length = 0;
            loop {
                let mut line = String::new();
                if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                    return;
                }
                let line = line.trim_end().to_ascii_lowercase();
                if line.is_empty() {
                    break;
                }
                if let Some(v) = line.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if socket.get_mut().write_all(ok).await.is_err() {
                return;
            }
            let mut rest = vec![0; length];
            if socket.read_exact(&mut rest).await.is_err() {
                return;
            }
        }
    })
    .await;
    let lb = common::start_static(vec![url], "round-robin", |_| {}).await;
    let mut client = tokio::net::TcpStream::connect(lb.addr())
        .await
        .expect("connect");
    let size = 4 << 20;
    let mut request =
        format!("POST /up HTTP/1.1\r\nhost: a\r\ncontent-length: {size}\r\n\r\n").into_bytes();
    request.resize(request.len() + size, b'x');
    request.extend_from_slice(b"GET /next HTTP/1.1\r\nhost: a\r\n\r\n");
    let (mut read, mut write) = client.split();
    let send = async {
        write.write_all(&request).await.expect("send");
    };
    let answers = async {
        let mut seen = Vec::new();
        let mut buf = [0; 4096];
        while seen.windows(2).filter(|w| w == b"ok").count() < 2 {
            let n = read.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed: {}", String::from_utf8_lossy(&seen));
            seen.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        tokio::join!(send, answers)
    })
    .await
    .expect("both answers came: the upload went through");
    lb.stop().await;
}

#[tokio::test]
async fn a_replica_may_answer_as_it_reads_the_upload() {
    // Full duplex, as an echo service streams: the replica sends its head
    // and each piece of the body back as it reads it, and the client sends
    // the next piece only once it has seen the last one come back. A
    // balancer that read the body only while waiting for the response
    // head, or sent the response only once the body was read, stalls here.
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    const PIECE: usize = 40_000;
    const PIECES: usize = 4;
    let url = replica_serving(|mut socket| async move {
        loop {
            let mut line = String::new();
            if socket.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            if line.trim_end().is_empty() {
                break;
            }
        }
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.get_mut().write_all(head).await.is_err() {
            return;
        }
        let mut piece = vec![0; PIECE];
        for _ in 0..PIECES {
            if socket.read_exact(&mut piece).await.is_err() {
                return;
            }
            let chunk = [format!("{PIECE:x}\r\n").as_bytes(), &piece, b"\r\n"].concat();
            if socket.get_mut().write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = socket.get_mut().write_all(b"0\r\n\r\n").await;
    })
    .await;
    let lb = common::start_static(vec![url], "round-robin", |_| {}).await;
    let mut client = tokio::net::TcpStream::connect(lb.addr())
        .await
        .expect("connect");
    let head = format!(
        "POST /echo HTTP/1.1\r\nhost: a\r\ncontent-length: {}\r\n\r\n",
        PIECE * PIECES
    );
    client.write_all(head.as_bytes()).await.expect("head");
    let mut seen = Vec::new();
    let mut buf = vec![0; 64 * 1024];
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        for i in 0..PIECES {
            let piece = vec![b'a' + i as u8; PIECE];
            client.write_all(&piece).await.expect("piece");
            // Wait for this piece to come back before sending the next.
            while seen.iter().filter(|&&b| b == b'a' + i as u8).count() < PIECE {
                let n = client.read(&mut buf).await.expect("read");
                assert!(n > 0, "closed after {} bytes", seen.len());
                seen.extend_from_slice(&buf[..n]);
            }
        }
    })
    .await
    .expect("every piece came back before the next was sent");
    assert!(seen.starts_with(b"HTTP/1.1 200"), "{:?}", &seen[..20]);
    lb.stop().await;
}
