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
