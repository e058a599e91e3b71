//! The steady load of the soak: GET and POST workers on keep-alive
//! connections, each request recorded with when it ran, how it ended and
//! which replica answered.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// One request of the steady load.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Record {
    pub method: &'static str,
    /// Seconds since the soak started.
    pub start_s: f64,
    pub end_s: f64,
    /// The status, or `None` if no response arrived.
    pub status: Option<u16>,
    /// The error, for a request that did not get a 200 with a replica's
    /// answer.
    pub error: Option<String>,
    pub replica: Option<String>,
}

impl Record {
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(5))
        .build_http()
}

/// A GET of `url` with [`exchange`].
pub async fn get(
    client: &HttpClient,
    url: &str,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    exchange(client, "GET", url, Bytes::new(), timeout).await
}

/// One request: (status, body) or why none came, bounded by `timeout`
/// over head and body.
pub async fn exchange(
    client: &HttpClient,
    method: &str,
    url: &str,
    body: Bytes,
    timeout: Duration,
) -> Result<(u16, Bytes), String> {
    let req = http::Request::builder()
        .method(method)
        .uri(url)
        .body(Full::new(body))
        .map_err(|e| e.to_string())?;
    let call = async {
        let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
}

/// Workers sending `method` to `/home` until `stop`, pausing `pace`
/// between requests; records go to `out`.
pub async fn steady(
    base: String,
    method: &'static str,
    workers: usize,
    pace: Duration,
    t0: Instant,
    stop: CancellationToken,
    out: Arc<Mutex<Vec<Record>>>,
) {
    let client = client();
    let url = format!("{base}/home");
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let (client, url, stop, out) = (client.clone(), url.clone(), stop.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.is_cancelled() {
                n += 1;
                let body = if method == "POST" {
                    // 4 KiB, different per request, so nothing is cached.
                    Bytes::from(format!("{w}-{n}-").repeat(4096 / 8 + 1).into_bytes())
                } else {
                    Bytes::new()
                };
                let start = t0.elapsed().as_secs_f64();
                let result = exchange(&client, method, &url, body, Duration::from_secs(15)).await;
                let end = t0.elapsed().as_secs_f64();
                let record = match result {
                    Ok((200, body)) => match backend::HomeReply::replica_id(&body) {
                        Some(id) => Record {
                            method,
                            start_s: start,
                            end_s: end,
                            status: Some(200),
                            error: None,
                            replica: Some(id),
                        },
                        None => failed(method, start, end, Some(200), "not a replica's answer"),
                    },
                    Ok((status, body)) => failed(
                        method,
                        start,
                        end,
                        Some(status),
                        &String::from_utf8_lossy(&body[..body.len().min(200)]),
                    ),
                    Err(e) => failed(method, start, end, None, &e),
                };
                if let Ok(mut out) = out.lock() {
                    out.push(record);
                }
                super::pause(&stop, pace).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

fn failed(method: &'static str, start: f64, end: f64, status: Option<u16>, why: &str) -> Record {
    Record {
        method,
        start_s: start,
        end_s: end,
        status,
        error: Some(why.to_owned()),
        replica: None,
    }
}
