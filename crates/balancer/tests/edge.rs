//! Edge defects found while building the fuzzers and the soak (issue 11,
//! items 5 and 6), each over a real socket: the client-side timers of a
//! kept-alive connection, what a client's `Forwarded` header may make the
//! balancer vouch for, and a frozen (SIGSTOPped) replica's requests.

mod common;

use std::time::{Duration, Instant};

use balancer::Config;
use common::raw::{RawUpstream, Reply, exchange, ok, raw_upstream, read_for};
use tokio::{io::AsyncWriteExt, net::TcpStream};

async fn over(
    upstream: &RawUpstream,
    tweak: impl FnOnce(&mut Config),
) -> (balancer::Running, String) {
    over_all(&[upstream], tweak).await
}

async fn over_all(
    upstreams: &[&RawUpstream],
    tweak: impl FnOnce(&mut Config),
) -> (balancer::Running, String) {
    let urls = upstreams.iter().map(|u| u.url.clone()).collect();
    let lb = common::start_static(urls, "round-robin", tweak).await;
    let addr = lb.addr().to_string();
    (lb, addr)
}

/// A balancer with a 600 ms head timeout and a 10 s idle timeout, and a
/// connection to it that has been served one GET and is kept alive.
async fn kept_alive(up: &RawUpstream) -> (balancer::Running, TcpStream) {
    let (lb, addr) = over(up, |c| {
        c.limits.header_read_timeout = Duration::from_millis(600);
        c.limits.client_idle_timeout = Duration::from_secs(10);
    })
    .await;
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    let first = get_on(&mut socket, Duration::from_secs(2)).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first:?}");
    (lb, socket)
}

/// Sends one keep-alive GET on `socket` and reads until its whole body
/// (`fine`) has arrived, the connection closes, or `wait` passes.
async fn get_on(socket: &mut TcpStream, wait: Duration) -> String {
    use tokio::io::AsyncReadExt as _;
    if socket
        .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut reply = Vec::new();
    let mut buf = [0; 4096];
    let until = tokio::time::Instant::now() + wait;
    while !reply.ends_with(b"fine") {
        match tokio::time::timeout_at(until, socket.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test]
async fn a_kept_alive_connection_idles_on_the_idle_timeout_not_the_head_timeout() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, mut socket) = kept_alive(&up).await;
    // Idle between requests for longer than the head timeout, well within
    // the idle timeout: the connection must still serve.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = get_on(&mut socket, Duration::from_secs(2)).await;
    assert!(
        second.starts_with("HTTP/1.1 200"),
        "a kept-alive connection was closed by the head timeout: {second:?}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_slow_head_on_a_kept_alive_connection_still_gets_the_head_timeout() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, mut socket) = kept_alive(&up).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Half a head, then nothing: closed by the head timeout (counted from
    // its first byte), long before the idle timeout.
    socket
        .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n")
        .await
        .expect("write");
    let started = Instant::now();
    let rest = read_for(&mut socket, Duration::from_secs(5)).await;
    let waited = started.elapsed();
    assert!(
        waited < Duration::from_secs(3),
        "closed after {waited:?}: {rest:?}"
    );
    assert!(
        waited >= Duration::from_millis(400),
        "closed too early, after {waited:?}: {rest:?}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn a_malformed_client_forwarded_is_dropped_not_extended() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |_| {}).await;
    for (n, forwarded) in [
        // An unterminated quoted-string would swallow the balancer's own
        // element: a parser downstream would see no `for=127.0.0.1` at all.
        (0, "for=\"unterminated"),
        (1, "for=1.2.3.4;;;by"),
        (2, "=x"),
    ] {
        let request = format!(
            "GET /f{n} HTTP/1.1\r\nhost: lb.example\r\nforwarded: {forwarded}\r\nconnection: close\r\n\r\n"
        );
        let reply = exchange(&addr, request.as_bytes(), Duration::from_secs(2)).await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    let good = "GET /ok HTTP/1.1\r\nhost: lb.example\r\nforwarded: for=10.0.0.1;proto=https, for=\"[2001:db8::1]:80\"\r\nconnection: close\r\n\r\n";
    let reply = exchange(&addr, good.as_bytes(), Duration::from_secs(2)).await;
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let seen = up.requests();
    let ours = r#"for=127.0.0.1;proto=http;host="lb.example""#;
    for n in 0..3 {
        let target = format!("/f{n}");
        let s = seen.iter().find(|s| s.target == target).expect("seen");
        assert_eq!(s.all("forwarded"), vec![ours], "{target}");
    }
    let s = seen.iter().find(|s| s.target == "/ok").expect("seen");
    assert_eq!(
        s.all("forwarded"),
        vec![format!(
            "for=10.0.0.1;proto=https, for=\"[2001:db8::1]:80\", {ours}"
        )]
    );
    lb.stop().await;
}

/// A replica that answers its heartbeats but holds every other request
/// (as a SIGSTOPped process does, once the checks have not yet noticed).
async fn silent() -> RawUpstream {
    raw_upstream(|s| {
        if s.target == "/heartbeat" {
            ok("")
        } else {
            Reply::SendAfter(
                Duration::from_secs(10),
                b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nlate".to_vec(),
            )
        }
    })
    .await
}

#[tokio::test]
async fn a_get_that_timed_out_is_retried_elsewhere_a_post_never() {
    let (frozen, fine) = (silent().await, raw_upstream(|_| ok("fine")).await);
    let (lb, addr) = over_all(&[&frozen, &fine], |c| {
        c.limits.response_timeout = Duration::from_millis(300);
    })
    .await;
    let client = common::client();
    // Round robin: one of the first two goes to the frozen replica.
    for _ in 0..2 {
        let started = Instant::now();
        let resp = client
            .get(format!("http://{addr}/x"))
            .send()
            .await
            .expect("get");
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        assert_eq!((status, body.as_str()), (200, "fine"));
        assert!(started.elapsed() < Duration::from_secs(3));
    }
    let gets = |u: &RawUpstream| u.requests().iter().filter(|s| s.target == "/x").count();
    assert_eq!((gets(&frozen), gets(&fine)), (1, 2));
    lb.stop().await;

    let (frozen, fine) = (silent().await, raw_upstream(|_| ok("fine")).await);
    let (lb, addr) = over_all(&[&frozen, &fine], |c| {
        c.limits.response_timeout = Duration::from_millis(300);
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let (status, _) = common::send(client.post(format!("http://{addr}/p")).body("once")).await;
        statuses.push(status);
    }
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 504]);
    let posts = |u: &RawUpstream| u.requests().iter().filter(|s| s.method == "POST").count();
    assert_eq!(
        (posts(&frozen), posts(&fine)),
        (1, 1),
        "a POST was sent twice"
    );
    lb.stop().await;
}
