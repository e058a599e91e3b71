//! The HTTP contract of DESIGN.md over real sockets, against the real
//! `balancer` binary running real replica processes.

mod common;

use common::{replica_of, start_balancer};
use serde_json::json;

#[tokio::test]
async fn home_rep_add_rm_follow_the_spec() {
    let lb = start_balancer(&["--replicas", "3"]).await;

    let (status, body) = lb.get("/home").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "successful");
    assert!(["server-1", "server-2", "server-3"].contains(&replica_of(&body).as_str()));

    let (status, body) = lb.get("/rep").await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"message": {"N": 3, "replicas": ["server-1", "server-2", "server-3"]}, "status": "successful"})
    );

    let (status, body) = lb
        .post("/add", r#"{"n": 3, "hostnames": ["s4", "s5"]}"#)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["N"], 6);
    let names = lb.replicas().await;
    assert!(
        names.contains(&"s4".to_owned()) && names.contains(&"s5".to_owned()),
        "{names:?}"
    );
    // The new replicas serve (a /home from each eventually).
    let served = lb.spread(300).await;
    assert!(
        served.contains_key("s4") && served.contains_key("s5"),
        "{served:?}"
    );

    let (status, body) = lb.delete("/rm", r#"{"n": 2, "hostnames": ["s4"]}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["N"], 4);
    let names = lb.replicas().await;
    assert!(!names.contains(&"s4".to_owned()), "{names:?}");
    assert_eq!(names.len(), 4);
    lb.terminate().await;
}

#[tokio::test]
async fn spec_error_messages() {
    let lb = start_balancer(&["--replicas", "2"]).await;
    let (status, body) = lb
        .post("/add", r#"{"n": 1, "hostnames": ["a", "b"]}"#)
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"message": "<Error> Length of hostname list is more than newly added instances", "status": "failure"})
    );
    let (status, body) = lb
        .delete("/rm", r#"{"n": 1, "hostnames": ["server-1", "server-2"]}"#)
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"message": "<Error> Length of hostname list is more than removable instances", "status": "failure"})
    );
    let (status, body) = lb.get("/other").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"message": "<Error> '/other' endpoint does not exist in server replicas", "status": "failure"})
    );
    lb.terminate().await;
}

#[tokio::test]
async fn every_bad_input_is_a_json_4xx_and_changes_nothing() {
    let lb = start_balancer(&["--replicas", "2", "--max-replicas", "4"]).await;
    let before = lb.replicas().await;
    // Over the 16 KiB limit, but small enough that the client has sent it
    // all before the balancer answers 413 and closes (a larger body races
    // the close and the client may see a reset instead of the answer).
    let big = format!(r#"{{"n": 1, "hostnames": ["{}"]}}"#, "a".repeat(20 * 1024));
    let cases: Vec<(&str, &str, String, u16)> = vec![
        ("POST", "/add", "{not json".into(), 400),
        ("POST", "/add", "".into(), 400),
        ("POST", "/add", r#"{"hostnames": ["x"]}"#.into(), 400),
        ("POST", "/add", r#"{"n": -2}"#.into(), 400),
        ("POST", "/add", r#"{"n": "two"}"#.into(), 400),
        ("POST", "/add", r#"{"n": 2.5}"#.into(), 400),
        ("POST", "/add", r#"{"n": 0}"#.into(), 400),
        ("POST", "/add", r#"{"n": 5}"#.into(), 400),
        ("POST", "/add", r#"{"n": 3}"#.into(), 400),
        (
            "POST",
            "/add",
            r#"{"n": 1, "hostnames": ["server-1"]}"#.into(),
            409,
        ),
        (
            "POST",
            "/add",
            r#"{"n": 2, "hostnames": ["dup", "dup"]}"#.into(),
            400,
        ),
        (
            "POST",
            "/add",
            r#"{"n": 1, "hostnames": ["bad_name!"]}"#.into(),
            400,
        ),
        (
            "POST",
            "/add",
            r#"{"n": 1, "hostnames": ["a;rm -rf /"]}"#.into(),
            400,
        ),
        ("POST", "/add", big, 413),
        (
            "DELETE",
            "/rm",
            r#"{"n": 1, "hostnames": ["ghost"]}"#.into(),
            404,
        ),
        ("DELETE", "/rm", r#"{"n": 3}"#.into(), 400),
        ("DELETE", "/rm", r#"{"n": -1}"#.into(), 400),
        ("DELETE", "/rm", "[]".into(), 400),
        ("GET", "/add", String::new(), 405),
        ("POST", "/rep", String::new(), 405),
    ];
    for (method, path, body, expected) in cases {
        let req = lb
            .http
            .request(method.parse().expect("method"), format!("{}{path}", lb.url))
            .body(body.clone());
        let (status, reply) = common::send(req).await;
        let shown: String = body.chars().take(60).collect();
        assert_eq!(status, expected, "{method} {path} {shown}: {reply}");
        assert_eq!(
            reply["status"], "failure",
            "{method} {path} {shown}: {reply}"
        );
        assert!(
            reply["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("<Error> ")),
            "{reply}"
        );
        assert_eq!(
            lb.replicas().await,
            before,
            "{method} {path} {shown} changed the pool"
        );
    }
    lb.terminate().await;
}

#[tokio::test]
async fn admin_token_guards_every_endpoint_that_reveals_or_changes_state() {
    let lb = start_balancer(&["--replicas", "1", "--admin-token", "s3cret"]).await;
    let (status, body) = lb.post("/add", r#"{"n": 1}"#).await;
    assert_eq!(status, 401, "{body}");
    let with = |method: reqwest::Method, path: &str, auth: Option<&str>| {
        let mut req = lb.http.request(method, format!("{}{path}", lb.url));
        if let Some(auth) = auth {
            req = req.header("authorization", auth.to_owned());
        }
        req
    };
    let wrong = with(reqwest::Method::POST, "/add", Some("Bearer guess")).body(r#"{"n": 1}"#);
    assert_eq!(common::send(wrong).await.0, 401);
    let (status, _) = lb.delete("/rm", r#"{"n": 1}"#).await;
    assert_eq!(status, 401);
    // Reading the pool (names, addresses, pids, metrics) needs it too;
    // the liveness probe and the replicas' paths do not.
    for path in [
        "/rep",
        "/lb/status",
        "/lb/metrics",
        "/lb/events",
        "/lb/nope",
    ] {
        let (status, body) = common::send(with(reqwest::Method::GET, path, None)).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert_eq!(body["status"], "failure", "{path}");
    }
    assert_eq!(lb.get("/lb/health").await.0, 200);
    assert_eq!(lb.get("/home").await.0, 200);
    let listed = common::send(with(reqwest::Method::GET, "/rep", Some("Bearer s3cret"))).await;
    assert_eq!((listed.0, &listed.1["message"]["N"]), (200, &json!(1)));
    // The scheme is case-insensitive (RFC 9110 11.1).
    let right = with(reqwest::Method::POST, "/add", Some("bearer s3cret")).body(r#"{"n": 1}"#);
    let (status, body) = common::send(right).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"]["N"], 2);
    lb.terminate().await;
}

#[tokio::test]
async fn a_ring_that_cannot_hold_more_replicas_refuses_add() {
    // 22 slots, 9 vnodes: two replicas fit, a third cannot.
    let lb = start_balancer(&[
        "--replicas",
        "2",
        "--policy",
        "ring",
        "--slots",
        "22",
        "--vnodes",
        "9",
    ])
    .await;
    let (status, body) = lb.post("/add", r#"{"n": 1}"#).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"].as_str().expect("message").contains("ring"),
        "{body}"
    );
    assert_eq!(lb.replicas().await.len(), 2);
    lb.terminate().await;
}

#[tokio::test]
async fn forwards_method_query_headers_and_body() {
    // The backend's /heartbeat is GET only, so a POST there is a 405 from
    // the replica, passed through; the balancer's own answer would be JSON.
    let lb = start_balancer(&["--replicas", "1"]).await;
    let resp = lb
        .http
        .get(format!("{}/home?delay_ms=1", lb.url))
        .header("x-custom", "kept")
        .send()
        .await
        .expect("get");
    assert_eq!(resp.status(), 200);
    let resp = lb
        .http
        .post(format!("{}/heartbeat", lb.url))
        .body("payload")
        .send()
        .await
        .expect("post");
    assert_eq!(resp.status(), 405);
    lb.terminate().await;
}

#[tokio::test]
async fn lb_endpoints_report_status_metrics_and_events() {
    let lb = start_balancer(&["--replicas", "2", "--policy", "round-robin"]).await;
    lb.spread(10).await;
    let (status, body) = lb.get("/lb/status").await;
    assert_eq!(status, 200);
    assert_eq!(body["policy"], "round-robin");
    assert_eq!(body["replicas"].as_array().expect("replicas").len(), 2);
    let metrics = lb
        .http
        .get(format!("{}/lb/metrics", lb.url))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("lb_requests_total"), "{metrics}");
    assert!(
        metrics.contains("lb_replica_served_total{replica=\"server-1\",id=\"1\"} 5"),
        "{metrics}"
    );
    let (_, events) = lb.get("/lb/events").await;
    let kinds: Vec<_> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["kind"].clone())
        .collect();
    assert!(kinds.contains(&json!("added")), "{events}");
    // Every path under /lb/ is the balancer's: one it does not serve is a
    // 404 of its own, never forwarded (a replica's 404 would come back as
    // the spec's 400 "endpoint does not exist").
    for path in ["/lb/nope", "/lb/status/x", "/lb"] {
        let (status, body) = lb.get(path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains("not an endpoint of the balancer")),
            "{path}: {body}"
        );
    }
    lb.terminate().await;
}
