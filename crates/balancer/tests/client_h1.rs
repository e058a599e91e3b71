//! HTTP/1.1 as clients speak it to the balancer, over raw sockets: what
//! the balancer's own server side (`server::h1`) answers, and that a
//! request it leaves to hyper, in the middle of a kept-alive connection,
//! is answered as well and the connection goes on.

mod common;

use std::time::Duration;

use common::raw::{Reply, Seen, exchange, raw_upstream, read_for};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Answers with the request's method, target and body, so a test can tell
/// the responses apart and see what reached the replica.
fn echo(seen: &Seen) -> Reply {
    let body = format!(
        "{} {} {}",
        seen.method,
        seen.target,
        String::from_utf8_lossy(&seen.body)
    );
    Reply::Send(
        format!(
            "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes(),
    )
}

async fn balancer() -> (balancer::Running, String) {
    let up = raw_upstream(echo).await;
    let lb = common::start_static(vec![up.url.clone()], "round-robin", |_| {}).await;
    let addr = lb.addr().to_string();
    // The raw upstream lives as long as its listener task: leaked with it.
    std::mem::forget(up);
    (lb, addr)
}

/// The responses in `wire`, each as its status line and body.
fn responses(wire: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = wire;
    while let Some(end) = rest.find("\r\n\r\n") {
        let head = &rest[..end];
        let length: usize = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length: ")
                    .map(|v| v.trim().to_owned())
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let body_end = (end + 4 + length).min(rest.len());
        let status = head.lines().next().unwrap_or("").to_owned();
        out.push((status, rest[end + 4..body_end].to_owned()));
        rest = &rest[body_end..];
    }
    out
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_with_their_bodies() {
    let (lb, addr) = balancer().await;
    let wire = exchange(
        &addr,
        b"GET /one HTTP/1.1\r\nHost: lb\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\nhello\
          GET /three HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let got = responses(&wire);
    assert_eq!(
        got,
        [
            ("HTTP/1.1 200 OK".into(), "GET /one ".into()),
            ("HTTP/1.1 200 OK".into(), "POST /two hello".into()),
            ("HTTP/1.1 200 OK".into(), "GET /three ".into()),
        ],
        "{wire}"
    );
    // The last asked to close: said so, and closed (exchange read to EOF).
    assert!(
        wire.to_ascii_lowercase().contains("connection: close\r\n"),
        "{wire}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn head_and_http_10_are_answered_as_rfc_9112_says() {
    let (lb, addr) = balancer().await;
    let wire = exchange(
        &addr,
        b"HEAD /h HTTP/1.1\r\nHost: lb\r\n\r\nGET /after-head HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    // HEAD: the GET's length, no body; then the HTTP/1.0 request's answer
    // right behind it, and the connection closed (no keep-alive asked).
    let (head, rest) = wire.split_once("\r\n\r\n").expect("a head");
    assert!(head.starts_with("HTTP/1.1 200"), "{wire}");
    assert!(head.contains("content-length: 8"), "{wire}");
    assert!(
        rest.starts_with("HTTP/1.1 200"),
        "the HEAD had a body: {wire}"
    );
    assert!(rest.ends_with("GET /after-head "), "{wire}");
    assert!(rest.contains("connection: close\r\n"), "{wire}");
    // HTTP/1.0 asking for keep-alive gets it, and says so.
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .await
        .expect("write");
    let first = read_for(&mut socket, Duration::from_millis(500)).await;
    assert!(first.contains("connection: keep-alive\r\n"), "{first}");
    socket
        .write_all(b"GET /b HTTP/1.0\r\n\r\n")
        .await
        .expect("write");
    let second = read_for(&mut socket, Duration::from_secs(5)).await;
    assert!(second.ends_with("GET /b "), "{second}");
    lb.stop().await;
}

#[tokio::test]
async fn a_request_left_to_hyper_is_answered_and_the_connection_goes_on() {
    let (lb, addr) = balancer().await;
    // A chunked upload (hyper's) between two plain GETs (ours), then a
    // head with a bad field name, which hyper refuses with a 400.
    let wire = exchange(
        &addr,
        b"GET /one HTTP/1.1\r\nHost: lb\r\n\r\n\
          POST /two HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
          GET /three HTTP/1.1\r\nHost: lb\r\n\r\n\
          GET /four HTTP/1.1\r\nBad Name: x\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let got = responses(&wire);
    let statuses: Vec<_> = got.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(statuses.len(), 4, "{wire}");
    assert_eq!(got[0].1, "GET /one ", "{wire}");
    assert_eq!(got[1].1, "POST /two abc", "{wire}");
    assert_eq!(got[2].1, "GET /three ", "{wire}");
    assert!(statuses[3].starts_with("HTTP/1.1 400"), "{wire}");
    lb.stop().await;
}
