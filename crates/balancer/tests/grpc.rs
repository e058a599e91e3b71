//! gRPC end to end through the balancer: a tonic client on h2c to the
//! balancer, the balancer on h2c to tonic echo replicas. Unary and
//! streaming calls, status trailers passed through, `grpc-timeout` honoured
//! by the balancer itself, the gRPC health check as the heartbeat, and the
//! balancer's own failures in gRPC's shape.

mod common;

use std::time::{Duration, Instant};

use balancer::{Config, config::HealthCheck};
use bytes::Bytes;
use echo::pb::{Msg, echo_client::EchoClient};
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::net::TcpListener;
use tokio_stream::StreamExt as _;
use tonic::Code;

/// An echo replica on an ephemeral port; stops when dropped.
struct Replica {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn replica(id: &str) -> Replica {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("h2c://{}", listener.local_addr().expect("addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(echo::serve(listener, id.to_owned(), async {
        let _ = stopped.await;
    }));
    Replica { url, _stop: stop }
}

async fn balancer(replicas: &[&Replica], tweak: impl FnOnce(&mut Config)) -> balancer::Running {
    let upstreams = replicas.iter().map(|r| r.url.clone()).collect();
    common::start_static(upstreams, "round-robin", |config| {
        config.health_check = HealthCheck::Grpc;
        config.health_interval = Duration::from_millis(200);
        tweak(config);
    })
    .await
}

async fn client(lb: &balancer::Running) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(format!("http://{}", lb.addr()))
        .await
        .expect("connect")
}

fn msg(text: &str) -> Msg {
    Msg {
        text: text.into(),
        replica: String::new(),
    }
}

#[tokio::test]
async fn unary_and_streaming_calls_pass_through_with_their_status() {
    let (a, b) = (replica("echo-a").await, replica("echo-b").await);
    let lb = balancer(&[&a, &b], |_| {}).await;
    let mut client = client(&lb).await;

    let mut seen = std::collections::BTreeSet::new();
    for i in 0..6 {
        let reply = client
            .unary(msg(&i.to_string()))
            .await
            .expect("unary")
            .into_inner();
        assert_eq!(reply.text, i.to_string());
        seen.insert(reply.replica);
    }
    assert_eq!(seen.len(), 2, "each call is placed on its own: {seen:?}");

    let counted: Vec<String> = client
        .count(msg("5"))
        .await
        .expect("count")
        .into_inner()
        .map(|m| m.expect("message").text)
        .collect()
        .await;
    assert_eq!(counted, ["1", "2", "3", "4", "5"]);

    let outbound = tokio_stream::iter(["x", "y", "z"].map(msg));
    let collected = client
        .collect(outbound)
        .await
        .expect("collect")
        .into_inner();
    assert_eq!(collected.text, "x,y,z");

    let outbound = tokio_stream::iter(["p", "q"].map(msg));
    let chatted: Vec<String> = client
        .chat(outbound)
        .await
        .expect("chat")
        .into_inner()
        .map(|m| m.expect("message").text)
        .collect()
        .await;
    assert_eq!(chatted, ["p", "q"]);

    // A replica's error status comes through in the trailers.
    let status = client.fail(msg("no such thing")).await.expect_err("fails");
    assert_eq!(
        (status.code(), status.message()),
        (Code::NotFound, "no such thing")
    );
    lb.stop().await;
}

/// A raw h2c call with a `grpc-timeout` the client itself does not enforce:
/// status headers or trailers, messages' bytes, and how long it took.
async fn raw_call(
    lb: &balancer::Running,
    method: &str,
    message: &[u8],
    timeout: &str,
) -> (Option<String>, usize, Duration) {
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let mut body = vec![0];
    body.extend_from_slice(&u32::try_from(message.len()).expect("len").to_be_bytes());
    body.extend_from_slice(message);
    let request = http::Request::post(format!("http://{}/echo.Echo/{method}", lb.addr()))
        .version(http::Version::HTTP_2)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", timeout)
        .body(Full::new(Bytes::from(body)))
        .expect("request");
    let started = Instant::now();
    let response = client.request(request).await.expect("response");
    let head_status = response.headers().get("grpc-status").cloned();
    let collected = response.into_body().collect().await.expect("body");
    let status = head_status
        .or_else(|| {
            collected
                .trailers()
                .and_then(|t| t.get("grpc-status").cloned())
        })
        .map(|v| v.to_str().expect("ascii").to_owned());
    (status, collected.to_bytes().len(), started.elapsed())
}

#[tokio::test]
async fn the_balancer_honours_grpc_timeout() {
    let a = replica("echo-a").await;
    let lb = balancer(&[&a], |_| {}).await;
    // Sleep 2000 ms (field 1 = 2000) under a 300 ms deadline.
    let (status, _, took) = raw_call(&lb, "Sleep", &[0x08, 0xd0, 0x0f], "300m").await;
    assert_eq!(status.as_deref(), Some("4"), "DEADLINE_EXCEEDED");
    assert!(took < Duration::from_millis(1500), "{took:?}");
    // A stream of 100 messages 20 ms apart, cut at 300 ms.
    let (status, bytes, took) =
        raw_call(&lb, "Count", &[0x0a, 0x03, b'1', b'0', b'0'], "300m").await;
    assert_eq!(
        status.as_deref(),
        Some("4"),
        "DEADLINE_EXCEEDED in the trailers"
    );
    assert!(
        bytes > 0 && took < Duration::from_millis(1500),
        "{bytes} bytes in {took:?}"
    );
    // Within its deadline a call completes normally, and the replica was
    // not blamed for the client's short deadlines.
    let (status, _, _) = raw_call(&lb, "Sleep", &[0x08, 0x0a], "5S").await;
    assert_eq!(status.as_deref(), Some("0"));
    let (_, status) =
        common::send(common::client().get(format!("http://{}/lb/status", lb.addr()))).await;
    assert_eq!(status["replicas"][0]["health"], "up", "{status}");
    lb.stop().await;
}

#[tokio::test]
async fn the_grpc_health_check_is_the_heartbeat() {
    let a = replica("echo-a").await;
    let b = replica("echo-b").await;
    let lb = balancer(&[&a, &b], |_| {}).await;
    let url = format!("http://{}/lb/status", lb.addr());
    let health = || async {
        let (_, status) = common::send(common::client().get(url.clone())).await;
        status["replicas"]
            .as_array()
            .expect("replicas")
            .iter()
            .map(|r| r["health"].as_str().expect("health").to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(health().await, ["up", "up"]);
    drop(b);
    common::eventually(
        Duration::from_secs(5),
        "the stopped replica is down",
        || async { health().await[1] == "down" },
    )
    .await;
    // Every call still succeeds, on the replica that is left.
    let mut client = client(&lb).await;
    for _ in 0..4 {
        let reply = client.unary(msg("hi")).await.expect("unary").into_inner();
        assert_eq!(reply.replica, "echo-a");
    }
    drop(a);
    common::eventually(Duration::from_secs(5), "both down", || async {
        health().await == ["down", "down"]
    })
    .await;
    // The balancer's own failure, in gRPC's shape: UNAVAILABLE.
    let status = client.unary(msg("hi")).await.expect_err("no replica");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    lb.stop().await;
}
