//! One client must not be able to hurt the others: each of the edge
//! defects found by trying the balancer as a hostile client would, over
//! real sockets (issue 11's numbering in the test names).

mod common;

use std::time::Duration;

use balancer::Config;
use common::raw::{RawUpstream, Reply, Seen, exchange, ok, raw_upstream, read_for};
use serde_json::Value;
use tokio::{io::AsyncWriteExt, net::TcpStream};

async fn over(
    upstream: &RawUpstream,
    tweak: impl FnOnce(&mut Config),
) -> (balancer::Running, String) {
    let lb = common::start_static(vec![upstream.url.clone()], "round-robin", tweak).await;
    let addr = lb.addr().to_string();
    (lb, addr)
}

/// The only replica's `/lb/status` entry.
async fn replica(addr: &str) -> Value {
    let (_, status) = common::send(common::client().get(format!("http://{addr}/lb/status"))).await;
    status["replicas"][0].clone()
}

async fn get_ok(addr: &str) {
    let (status, body) = common::send(common::client().get(format!("http://{addr}/x"))).await;
    assert_eq!(status, 200, "{body}");
}

fn status_line(reply: &str) -> &str {
    reply.lines().next().unwrap_or("")
}

#[tokio::test]
async fn d01_a_broken_upload_is_the_clients_fault_not_the_replicas() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |_| {}).await;
    // An invalid chunk size (streamed to the replica as it arrives).
    let reply = exchange(
        &addr,
        b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
        Duration::from_secs(3),
    )
    .await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 400"), "{reply}");
    // A client that half-closes in the middle of its (buffered) body.
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 100\r\n\r\n0123456789")
        .await
        .expect("write");
    socket.shutdown().await.expect("half-close");
    let reply = read_for(&mut socket, Duration::from_secs(3)).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 400"), "{reply}");
    // The same again with a streamed body.
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n")
        .await
        .expect("write");
    socket.shutdown().await.expect("half-close");
    let reply = read_for(&mut socket, Duration::from_secs(3)).await;
    assert!(
        reply.is_empty() || status_line(&reply).starts_with("HTTP/1.1 400"),
        "{reply}"
    );

    let r = replica(&addr).await;
    assert_eq!(
        (r["health"].as_str(), r["failures"].as_u64()),
        (Some("up"), Some(0)),
        "{r}"
    );
    for _ in 0..5 {
        get_ok(&addr).await;
    }
    lb.stop().await;
}

#[tokio::test]
async fn d02_a_stalled_or_trickling_body_gets_408() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |c| {
        c.limits.client_body_timeout = Duration::from_millis(500);
        c.limits.client_body_min_rate = 100;
        c.limits.client_body_grace = Duration::from_secs(1);
    })
    .await;
    let started = std::time::Instant::now();
    let reply = exchange(
        &addr,
        b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 65000\r\n\r\nsome of it",
        Duration::from_secs(5),
    )
    .await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A byte every 200 ms: never paused 500 ms, far below 100 B/s.
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ncontent-length: 65000\r\n\r\n")
        .await
        .expect("write");
    let started = std::time::Instant::now();
    let mut reply = String::new();
    for _ in 0..40 {
        if socket.write_all(b"x").await.is_err() {
            break;
        }
        reply = read_for(&mut socket, Duration::from_millis(200)).await;
        if !reply.is_empty() {
            break;
        }
    }
    assert!(status_line(&reply).starts_with("HTTP/1.1 408"), "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(
        up.requests().is_empty(),
        "a body that never arrived reached the replica"
    );
    lb.stop().await;
}

#[tokio::test]
async fn d03_at_the_connection_cap_new_clients_wait_their_turn() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |c| c.limits.max_connections = 3).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut waiting = TcpStream::connect(&addr)
        .await
        .expect("the backlog takes it");
    waiting
        .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    let early = read_for(&mut waiting, Duration::from_millis(500)).await;
    assert!(early.is_empty(), "served above the cap: {early}");
    drop(held.pop());
    let reply = read_for(&mut waiting, Duration::from_secs(2)).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200"), "{reply:?}");
    lb.stop().await;
}

#[tokio::test]
async fn d03_a_burst_beyond_1024_waiting_connections_is_queued_not_dropped() {
    // At the cap nothing is accepted, so the kernel's accept queue holds a
    // burst: sized past tokio's default 1024, every handshake completes at
    // once (a full queue drops the client's ACK; it waits a second or more
    // for a retransmit). Needs `net.core.somaxconn` >= 1600 (4096 by
    // default since Linux 5.4).
    let somaxconn: usize = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .expect("somaxconn")
        .trim()
        .parse()
        .expect("a number");
    assert!(somaxconn >= 1600, "net.core.somaxconn is {somaxconn}");
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |c| c.limits.max_connections = 1).await;
    let _held = TcpStream::connect(&addr).await.expect("connect");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let burst = (0..1500).map(|_| {
        let addr = addr.clone();
        tokio::spawn(async move {
            tokio::time::timeout(Duration::from_millis(900), TcpStream::connect(addr)).await
        })
    });
    let mut connected = Vec::new();
    for attempt in join_all(burst).await {
        if let Ok(Ok(socket)) = attempt.expect("join") {
            connected.push(socket);
        }
    }
    assert_eq!(
        connected.len(),
        1500,
        "handshakes left waiting on a full accept queue"
    );
    lb.stop().await;
}

/// Awaits every handle, in order.
async fn join_all<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await);
    }
    out
}

#[tokio::test]
async fn d04_a_stalled_response_body_is_cut_off_and_the_replica_blamed() {
    let up = raw_upstream(|_| {
        Reply::SendAndStall(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789".to_vec())
    })
    .await;
    let (lb, addr) = over(&up, |c| {
        c.limits.upstream_idle_timeout = Duration::from_millis(500)
    })
    .await;
    let started = std::time::Instant::now();
    let resp = common::client()
        .get(format!("http://{addr}/x"))
        .send()
        .await
        .expect("head");
    assert_eq!(resp.status(), 200);
    assert!(
        resp.bytes().await.is_err(),
        "a cut-off body must not look complete"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    let r = replica(&addr).await;
    assert_eq!(
        (r["in_flight"].as_u64(), r["health"].as_str()),
        (Some(0), Some("suspect")),
        "{r}"
    );
    lb.stop().await;
}

#[tokio::test]
async fn d04_a_client_that_stops_reading_releases_its_upstream() {
    let big = {
        let mut bytes = b"HTTP/1.1 200 OK\r\ncontent-length: 33554432\r\n\r\n".to_vec();
        bytes.resize(bytes.len() + 32 * 1024 * 1024, b'x');
        bytes
    };
    let up = raw_upstream(move |_| Reply::Send(big.clone())).await;
    let (lb, addr) = over(&up, |c| c.limits.send_timeout = Duration::from_millis(500)).await;
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    // Read nothing: the balancer must give up on us and let the replica go.
    let mut released = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if replica(&addr).await["in_flight"] == 0 {
            released = true;
            break;
        }
    }
    assert!(released, "a client that does not read pins its upstream");
    drop(socket);
    lb.stop().await;
}

#[tokio::test]
async fn d05_the_response_timeout_starts_after_the_upload() {
    let up = raw_upstream(|s: &Seen| ok(&format!("got {}", s.body.len()))).await;
    let (lb, addr) = over(&up, |c| c.limits.response_timeout = Duration::from_secs(1)).await;
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"POST /x HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n")
        .await
        .expect("write");
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(800)).await;
        socket.write_all(b"4\r\nabcd\r\n").await.expect("chunk");
    }
    socket.write_all(b"0\r\n\r\n").await.expect("end");
    let reply = read_for(&mut socket, Duration::from_secs(2)).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with("got 12"), "{reply}");
    lb.stop().await;
}

#[tokio::test]
async fn d06_d07_forwarding_headers_and_host_are_the_balancers() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |_| {}).await;
    let reply = exchange(
        &addr,
        b"GET /a HTTP/1.1\r\nhost: lb.example\r\nx-forwarded-proto: https\r\nx-forwarded-host: evil.example\r\nconnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200"), "{reply}");
    for (request, want) in [
        (&b"GET /b HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n"[..], "400"),
        (b"GET /b HTTP/1.1\r\n\r\n", "400"),
        (b"GET /b HTTP/1.1\r\nhost: a\", for=6.6.6.6\r\n\r\n", "400"),
        (b"GET /c HTTP/1.0\r\n\r\n", "200"),
    ] {
        let reply = exchange(&addr, request, Duration::from_secs(2)).await;
        assert!(
            status_line(&reply).starts_with(&format!("HTTP/1.1 {want}"))
                || status_line(&reply).starts_with(&format!("HTTP/1.0 {want}")),
            "{}: {reply}",
            String::from_utf8_lossy(request)
        );
    }
    let reply = exchange(
        &addr,
        b"GET http://real.example:81/d HTTP/1.1\r\nhost: spoofed\r\nconnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200"), "{reply}");
    let seen = up.requests();
    let by_target = |t: &str| seen.iter().find(|s| s.target == t).expect(t).clone();
    let a = by_target("/a");
    assert_eq!(a.header("x-forwarded-proto"), Some("http"));
    assert_eq!(a.header("x-forwarded-host"), Some("lb.example"));
    assert_eq!(
        a.all("forwarded"),
        vec![r#"for=127.0.0.1;proto=http;host="lb.example""#]
    );
    let d = by_target("/d");
    assert_eq!(d.all("host"), vec!["real.example:81"]);
    assert_eq!(d.header("x-forwarded-host"), Some("real.example:81"));
    assert!(
        seen.iter().all(|s| s.target != "/b"),
        "a bad head reached the replica"
    );
    lb.stop().await;
}

#[tokio::test]
async fn d08_both_framings_from_a_replica_are_not_passed_on() {
    let up = raw_upstream(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\ntransfer-encoding: chunked\r\n\r\nb\r\nhello world\r\n0\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let (lb, addr) = over(&up, |_| {}).await;
    let client = common::client();
    for _ in 0..2 {
        let resp = client
            .get(format!("http://{addr}/x"))
            .send()
            .await
            .expect("get");
        assert!(
            resp.headers().get("content-length").is_none(),
            "{:?}",
            resp.headers()
        );
        assert_eq!(resp.text().await.expect("body"), "hello world");
    }
    lb.stop().await;
}

#[tokio::test]
async fn d09_upgrades_are_tunnelled_and_an_unasked_101_is_a_502() {
    let up = raw_upstream(|s: &Seen| {
        let switching =
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n"
                .to_vec();
        if s.header("upgrade").is_some() {
            Reply::Echo(switching)
        } else {
            Reply::Send(switching)
        }
    })
    .await;
    let (lb, addr) = over(&up, |_| {}).await;
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let head = read_for(&mut socket, Duration::from_millis(500)).await;
    assert!(status_line(&head).starts_with("HTTP/1.1 101"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("upgrade: echo"),
        "{head}"
    );
    socket
        .write_all(b"ping over the tunnel")
        .await
        .expect("write");
    let echoed = read_for(&mut socket, Duration::from_millis(500)).await;
    assert_eq!(echoed, "ping over the tunnel");
    assert_eq!(
        replica(&addr).await["in_flight"],
        1,
        "a tunnel is a request in flight"
    );
    let seen = up.requests();
    assert_eq!(seen[0].header("upgrade"), Some("echo"));
    assert_eq!(seen[0].header("connection"), Some("upgrade"));
    drop(socket);

    let (status, body) = common::send(common::client().get(format!("http://{addr}/plain"))).await;
    assert_eq!(status, 502, "{body}");
    lb.stop().await;
}

#[tokio::test]
async fn d09_bytes_sent_right_behind_an_upgrade_request_reach_the_replica() {
    // A client may send its first tunnelled bytes with the request head,
    // in one write: what was read with the head goes to the replica first.
    let up = raw_upstream(|_| {
        Reply::Echo(
            b"HTTP/1.1 101 Switching Protocols\r\nupgrade: echo\r\nconnection: upgrade\r\n\r\n"
                .to_vec(),
        )
    })
    .await;
    let (lb, addr) = over(&up, |_| {}).await;
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"GET /ws HTTP/1.1\r\nhost: a\r\nconnection: Upgrade\r\nupgrade: echo\r\n\r\nsent early")
        .await
        .expect("write");
    let reply = read_for(&mut socket, Duration::from_millis(800)).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 101"), "{reply}");
    assert!(reply.ends_with("\r\n\r\nsent early"), "{reply:?}");
    socket.write_all(b" and late").await.expect("write");
    assert_eq!(
        read_for(&mut socket, Duration::from_millis(500)).await,
        " and late"
    );
    lb.stop().await;
}

#[tokio::test]
async fn d10_the_admin_api_can_listen_apart() {
    let up = raw_upstream(|_| ok("from the replica")).await;
    let (lb, addr) = over(&up, |c| c.admin_listen = Some("127.0.0.1:0".into())).await;
    let admin = lb.admin_addr().expect("admin address");
    let client = common::client();
    let (status, body) = common::send(client.get(format!("http://{admin}/rep"))).await;
    assert_eq!(
        (status, &body["message"]["N"]),
        (200, &serde_json::json!(1))
    );
    let (status, _) = common::send(client.get(format!("http://{admin}/x"))).await;
    assert_eq!(status, 404, "the admin listener serves the admin API only");
    for path in ["/rep", "/lb/status"] {
        let (status, body) = common::send(client.get(format!("http://{addr}{path}"))).await;
        assert_eq!(
            (status, body.as_str()),
            (200, Some("from the replica")),
            "{path}"
        );
    }
    lb.stop().await;
}

#[tokio::test]
async fn d11_trailers_go_through_both_ways() {
    let up = raw_upstream(|_| {
        Reply::Send(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n2\r\nok\r\n0\r\nx-sum: 42\r\n\r\n".to_vec(),
        )
    })
    .await;
    let (lb, addr) = over(&up, |_| {}).await;
    let reply = exchange(
        &addr,
        b"POST /x HTTP/1.1\r\nhost: a\r\nte: trailers\r\ntrailer: x-checksum\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n4\r\nbody\r\n0\r\nx-checksum: abc\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.to_ascii_lowercase().contains("x-sum: 42"), "{reply}");
    let seen = up.requests();
    assert_eq!(
        seen[0].trailers,
        vec![("x-checksum".to_owned(), "abc".to_owned())]
    );
    lb.stop().await;
}

#[tokio::test]
async fn d12_a_half_closed_client_gets_its_answer() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |_| {}).await;
    let mut socket = TcpStream::connect(&addr).await.expect("connect");
    socket
        .write_all(b"GET /x HTTP/1.1\r\nhost: a\r\n\r\n")
        .await
        .expect("write");
    socket.shutdown().await.expect("half-close");
    let reply = read_for(&mut socket, Duration::from_secs(2)).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 200"), "{reply:?}");
    lb.stop().await;
}

#[tokio::test]
async fn d13_a_huge_header_is_431() {
    let up = raw_upstream(|_| ok("fine")).await;
    let (lb, addr) = over(&up, |_| {}).await;
    let mut request = b"GET /x HTTP/1.1\r\nhost: a\r\nx-big: ".to_vec();
    request.resize(request.len() + 100 * 1024, b'a');
    request.extend_from_slice(b"\r\n\r\n");
    let reply = exchange(&addr, &request, Duration::from_secs(2)).await;
    assert!(status_line(&reply).starts_with("HTTP/1.1 431"), "{reply}");
    assert!(up.requests().is_empty());
    lb.stop().await;
}

#[tokio::test]
async fn d14_a_stale_pooled_connection_is_retried_for_get_never_for_post() {
    // The replica closes every connection at its second request, unanswered:
    // the race of a pooled connection the replica has just closed.
    let up = raw_upstream(|s: &Seen| {
        if s.index == 0 {
            ok("fine")
        } else {
            Reply::Close
        }
    })
    .await;
    let (lb, addr) = over(&up, |_| {}).await;
    let client = common::client();
    for _ in 0..3 {
        let (status, body) = common::send(client.get(format!("http://{addr}/get"))).await;
        assert_eq!(status, 200, "{body}");
    }
    let r = replica(&addr).await;
    assert_eq!(
        (r["health"].as_str(), r["failures"].as_u64()),
        (Some("up"), Some(0)),
        "{r}"
    );

    let (status, body) =
        common::send(client.post(format!("http://{addr}/post")).body("once")).await;
    assert_eq!(status, 502, "{body}");
    let posts = up.requests().iter().filter(|s| s.method == "POST").count();
    assert_eq!(posts, 1, "a POST was sent twice");
    assert_eq!(replica(&addr).await["health"], "up");
    lb.stop().await;
}
