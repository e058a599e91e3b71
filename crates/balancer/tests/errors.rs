//! Every request gets an answer: 503 with no replica, 504 when a replica is
//! too slow, 502 when it fails, retries only where they cannot duplicate a
//! request, and `/add`/`/rm` refused with the static orchestrator.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use balancer::Config;
use common::{local_backend, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn over(
    upstreams: Vec<String>,
    policy: &str,
    tweak: impl FnOnce(&mut Config),
) -> (balancer::Running, String) {
    let lb = common::start_static(upstreams, policy, tweak).await;
    let url = format!("http://{}", lb.addr());
    (lb, url)
}

/// A server that reads one request per connection, counts it if it is for
/// `/home` (health checks are not), and closes the connection without
/// answering: the request reached it, no reply came.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                if let Ok(n) = socket.read(&mut buf).await
                    && buf[..n].windows(6).any(|w| w == b" /home")
                {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                let _ = socket.shutdown().await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn no_replica_is_a_503_json_error() {
    // The only upstream refuses connections.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let (lb, url) = over(vec![dead], "round-robin", |_| {}).await;
    let client = common::client();
    // First attempt: connect refused -> replica suspect -> no other replica.
    let (status, body) = send(client.get(format!("{url}/home"))).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["status"], "failure");
    // Now out of rotation: 503, at once, never a hang.
    let (status, body) = send(client.get(format!("{url}/home"))).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("no healthy replica"),
        "{body}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_slow_replica_is_a_504() {
    let slow = local_backend("slow", 2_000).await;
    let (lb, url) = over(vec![slow.url.clone()], "round-robin", |c| {
        c.limits.response_timeout = Duration::from_millis(200)
    })
    .await;
    let started = std::time::Instant::now();
    let client = common::client();
    let (status, body) = send(client.get(format!("{url}/home"))).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // A timeout is the replica's failure like a reset is: counted, and the
    // replica is out of rotation until it answers its heartbeats again.
    let (_, status) = send(client.get(format!("{url}/lb/status"))).await;
    let replica = &status["replicas"][0];
    assert_eq!(replica["health"], "suspect", "{status}");
    assert_eq!(replica["failures"], 1, "{status}");
    let (_, events) = send(client.get(format!("{url}/lb/events"))).await;
    assert!(
        events["events"]
            .as_array()
            .expect("events")
            .iter()
            .any(|e| e["kind"] == "suspect" && e["replica"] == "server-1"),
        "{events}"
    );
    let (status, body) = send(client.get(format!("{url}/home"))).await;
    assert_eq!(status, 503, "{body}");
    lb.stop().await;
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_replica_for_any_method() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = format!("dead=http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let live = local_backend("live", 0).await;
    let (lb, url) = over(
        vec![dead, format!("live={}", live.url)],
        "round-robin",
        |_| {},
    )
    .await;
    let client = common::client();
    for _ in 0..4 {
        let (status, body) = send(client.get(format!("{url}/home"))).await;
        assert_eq!(status, 200, "{body}");
    }
    // A POST that could not connect was never sent: retrying it is safe.
    let resp = client
        .post(format!("{url}/home"))
        .body("x")
        .send()
        .await
        .expect("post");
    assert_ne!(
        resp.status().as_u16(),
        502,
        "a refused connection must be retried"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_request_that_reached_a_replica_is_retried_only_if_idempotent() {
    let (hole, seen) = black_hole().await;
    let live = local_backend("live", 0).await;
    let (lb, url) = over(
        vec![format!("hole={hole}"), format!("live={}", live.url)],
        "round-robin",
        |_| {},
    )
    .await;
    let client = common::client();

    // Round robin starts at the black hole: the POST reaches it, no reply,
    // and it must NOT be sent again anywhere.
    let (status, body) = send(client.post(format!("{url}/home")).body("pay once")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the POST reached the replica once"
    );

    // The black hole is now suspect (out of rotation); put it back in play by
    // starting fresh, then check a GET is retried on the live replica.
    lb.stop().await;
    let (lb, url) = over(
        vec![format!("hole={hole}"), format!("live={}", live.url)],
        "round-robin",
        |_| {},
    )
    .await;
    let (status, body) = send(client.get(format!("{url}/home"))).await;
    assert_eq!(
        status, 200,
        "an idempotent GET is retried elsewhere: {body}"
    );
    assert_eq!(common::replica_of(&body), "live");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        2,
        "the GET reached the black hole first"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    // Slowloris: a connection that sends half a request head and then
    // nothing must not be held open forever.
    let live = local_backend("live", 0).await;
    let (lb, url) = over(vec![live.url.clone()], "round-robin", |c| {
        c.limits.header_read_timeout = Duration::from_millis(300)
    })
    .await;
    let mut socket = tokio::net::TcpStream::connect(lb.addr())
        .await
        .expect("connect");
    socket
        .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\nX-Slow: ")
        .await
        .expect("write");
    let mut buf = [0u8; 1024];
    // Closed (EOF, or a reset) well before the test's own bound.
    let read = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("the balancer closes the connection within 5 s");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    // A complete request on a new connection is still served.
    let (status, body) = send(common::client().get(format!("{url}/home"))).await;
    assert_eq!(status, 200, "{body}");
    lb.stop().await;
}

/// Reads from `socket` until it closes (EOF or a reset) or `within`
/// passes; the time it closed, from `since`.
async fn closed_after(
    socket: &mut tokio::net::TcpStream,
    since: tokio::time::Instant,
    within: Duration,
) -> Option<Duration> {
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout_at(since + within, socket.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(since.elapsed()),
            Ok(Ok(_)) => {}
            Err(_) => return None,
        }
    }
}

/// A `--header-read-timeout` of `d`.
fn head_timeout(d: Duration) -> impl FnOnce(&mut Config) {
    move |c| c.limits.header_read_timeout = d
}

/// A balancer over one replica ("r", answering after `delay_ms`), `tweak`ed,
/// and a raw connection to it, opened at the instant returned.
async fn raw_client(
    delay_ms: u64,
    tweak: impl FnOnce(&mut Config),
) -> (
    common::LocalBackend,
    balancer::Running,
    tokio::net::TcpStream,
    tokio::time::Instant,
) {
    let replica = local_backend("r", delay_ms).await;
    let (lb, _) = over(vec![replica.url.clone()], "round-robin", tweak).await;
    let since = tokio::time::Instant::now();
    let socket = tokio::net::TcpStream::connect(lb.addr())
        .await
        .expect("connect");
    (replica, lb, socket, since)
}

#[tokio::test]
async fn a_connection_that_never_sends_is_closed_at_the_head_timeout() {
    // Until its first byte a connection is held by a small future of its
    // own, before hyper's: that wait has the head timeout too.
    let (_replica, lb, mut socket, since) =
        raw_client(0, head_timeout(Duration::from_millis(300))).await;
    let closed = closed_after(&mut socket, since, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a silent connection was held past 5 s");
    lb.stop().await;
}

#[tokio::test]
async fn the_head_timeout_runs_from_the_accept_not_from_the_first_byte() {
    // A client that waits before it starts its head gets no more time for
    // it: 2 s from the accept, not 2 s from its first byte (3.5 s).
    let (_replica, lb, mut socket, since) =
        raw_client(0, head_timeout(Duration::from_secs(2))).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    socket
        .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\nX-Slow: ")
        .await
        .expect("write");
    let closed = closed_after(&mut socket, since, Duration::from_secs(6))
        .await
        .expect("closed within 6 s");
    assert!(
        closed < Duration::from_millis(3000),
        "closed {closed:?} after the accept: the head timer started at the first byte"
    );
    lb.stop().await;
}

#[tokio::test]
async fn shutdown_closes_connections_that_never_sent_a_byte() {
    let (_replica, lb, mut socket, since) =
        raw_client(0, head_timeout(Duration::from_secs(30))).await;
    // Let the balancer accept it before stopping.
    tokio::time::sleep(Duration::from_millis(200)).await;
    tokio::time::timeout(Duration::from_secs(5), lb.stop())
        .await
        .expect("a silent connection held the shutdown up");
    let closed = closed_after(&mut socket, since, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "a silent connection outlived the shutdown"
    );
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish_then_closes_its_connection() {
    let (_replica, lb, mut socket, since) = raw_client(800, |c| {
        c.drain_timeout = Duration::from_secs(20);
    })
    .await;
    socket
        .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let stopped = tokio::spawn(lb.stop());
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(Ok(n @ 1..)) =
        tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await
    {
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(reply.contains("Hello from Server: r"), "{reply:?}");
    // The read loop above ended on the close, after the answer, and well
    // before the drain timeout.
    assert!(
        since.elapsed() < Duration::from_secs(5),
        "{:?}",
        since.elapsed()
    );
    tokio::time::timeout(Duration::from_secs(5), stopped)
        .await
        .expect("shutdown ends once the request has")
        .expect("join");
}

#[tokio::test]
async fn shutdown_closes_kept_alive_connections_between_requests_at_once() {
    let (_replica, lb, mut socket, _) = raw_client(0, |c| {
        c.drain_timeout = Duration::from_secs(20);
    })
    .await;
    socket
        .write_all(b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 4096];
    let n = socket.read(&mut buf).await.expect("answer");
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let since = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), lb.stop())
        .await
        .expect("an idle kept-alive connection held the shutdown up");
    let closed = closed_after(&mut socket, since, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "a kept-alive connection outlived the shutdown"
    );
}

/// Client connections parked now, from `/lb/metrics` (asked on a
/// connection of its own, which is busy, not parked).
async fn parked(lb: &balancer::Running) -> u64 {
    let text = common::client()
        .get(format!("http://{}/lb/metrics", lb.addr()))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    text.lines()
        .find_map(|l| l.strip_prefix("lb_connections_parked "))
        .and_then(|n| n.trim().parse().ok())
        .expect("lb_connections_parked in /lb/metrics")
}

/// Writes `bytes` on `socket` and reads the backend's answer to the GET
/// they complete.
async fn answer(socket: &mut tokio::net::TcpStream, bytes: &[u8]) -> String {
    socket.write_all(bytes).await.expect("write");
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&reply).contains("Hello from Server") {
        let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .expect("read");
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&reply).into_owned()
}

/// Longer than a connection idles before it is parked (1 s).
const PAST_PARKING: Duration = Duration::from_millis(1600);

#[tokio::test]
async fn an_idle_kept_alive_connection_is_parked_and_serves_its_next_request() {
    let (_replica, lb, mut socket, _) = raw_client(0, |c| {
        c.drain_timeout = Duration::from_secs(20);
    })
    .await;
    let get = b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n";
    assert!(answer(&mut socket, get).await.starts_with("HTTP/1.1 200"));
    assert_eq!(parked(&lb).await, 0, "parked while just used");
    tokio::time::sleep(PAST_PARKING).await;
    assert_eq!(parked(&lb).await, 1, "not parked after idling");
    assert!(answer(&mut socket, get).await.starts_with("HTTP/1.1 200"));
    assert_eq!(parked(&lb).await, 0, "still parked once woken");
    // A head begun before the connection is parked is finished after:
    // what hyper had read of it is given back.
    socket
        .write_all(b"GET /home HTTP/1.1\r\nHo")
        .await
        .expect("write");
    tokio::time::sleep(PAST_PARKING).await;
    assert!(
        answer(&mut socket, b"st: lb\r\n\r\n")
            .await
            .starts_with("HTTP/1.1 200")
    );
    // Shutdown closes a parked connection at once.
    tokio::time::sleep(PAST_PARKING).await;
    assert_eq!(parked(&lb).await, 1);
    let since = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), lb.stop())
        .await
        .expect("a parked connection held the shutdown up");
    let closed = closed_after(&mut socket, since, Duration::from_secs(5)).await;
    assert!(
        closed.is_some(),
        "a parked connection outlived the shutdown"
    );
}

#[tokio::test]
async fn a_parked_connection_still_closes_at_the_idle_timeout() {
    let (_replica, lb, mut socket, _) = raw_client(0, |c| {
        c.limits.client_idle_timeout = Duration::from_millis(2500);
    })
    .await;
    answer(&mut socket, b"GET /home HTTP/1.1\r\nHost: lb\r\n\r\n").await;
    let since = tokio::time::Instant::now();
    tokio::time::sleep(PAST_PARKING).await;
    assert_eq!(parked(&lb).await, 1);
    let closed = closed_after(&mut socket, since, Duration::from_secs(8))
        .await
        .expect("a parked connection outlived its idle timeout");
    assert!(
        closed >= Duration::from_millis(2400),
        "closed {closed:?} after its last answer"
    );
    lb.stop().await;
}

/// Writes `parts` to a new connection with a pause between them and
/// returns the first bytes of the answer.
async fn split_send(lb: &balancer::Running, parts: &[&[u8]]) -> Vec<u8> {
    let mut socket = tokio::net::TcpStream::connect(lb.addr())
        .await
        .expect("connect");
    for part in parts {
        socket.write_all(part).await.expect("write");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut buf = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    buf.truncate(n);
    buf
}

#[tokio::test]
async fn http2_and_http1_are_told_apart_however_the_first_bytes_are_split() {
    // The plain listener tells h2c (prior knowledge) from HTTP/1.1 by the
    // first bytes; a preface or a request line split across writes must
    // not be mistaken (`POST` begins as `PRI` does).
    let live = local_backend("live", 0).await;
    let (lb, _) = over(vec![live.url.clone()], "round-robin", |_| {}).await;
    let settings: &[u8] = &[0, 0, 0, 4, 0, 0, 0, 0, 0];
    let h2 = split_send(
        &lb,
        &[b"P", b"RI * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n", settings],
    )
    .await;
    // The server's preface: a SETTINGS frame (type 4 in the 4th byte).
    assert!(h2.len() >= 9 && h2[3] == 4, "{h2:?}");
    let h1 = split_send(
        &lb,
        &[
            b"P",
            b"OST /home HTTP/1.1\r\nHost: lb\r\ncontent-length: 0\r\n\r\n",
        ],
    )
    .await;
    assert!(
        h1.starts_with(b"HTTP/1.1 "),
        "{:?}",
        String::from_utf8_lossy(&h1)
    );
    lb.stop().await;
}

#[tokio::test]
async fn static_orchestrator_refuses_add_and_rm() {
    let a = local_backend("a", 0).await;
    let (lb, url) = over(vec![a.url.clone()], "round-robin", |_| {}).await;
    let client = common::client();
    let (status, body) = send(client.post(format!("{url}/add")).body(r#"{"n": 1}"#)).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("static"),
        "{body}"
    );
    let (status, _) = send(client.delete(format!("{url}/rm")).body(r#"{"n": 1}"#)).await;
    assert_eq!(status, 409);
    let (_, rep) = send(client.get(format!("{url}/rep"))).await;
    assert_eq!(rep["message"]["N"], 1);
    lb.stop().await;
}
