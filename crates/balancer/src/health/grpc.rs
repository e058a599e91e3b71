//! The gRPC health check (`grpc.health.v1.Health/Check`, the standard
//! health service) as a probe, for replicas that speak gRPC over h2c and
//! have no `/heartbeat`.
//!
//! The two messages are tiny and fixed, so they are written and read here
//! rather than generated: the request is an empty `HealthCheckRequest`
//! (all services), the answer's field 1 is the serving status, and
//! `SERVING` is 1. Alive means: HTTP 200, `grpc-status` 0, and `SERVING`.

use std::time::Duration;

use bytes::{Buf, Bytes};
use http::{HeaderMap, Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};

use super::probe::{Probe, Target, client, uri};
use crate::orchestrator::BoxFuture;

/// The health service's method.
pub const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// `HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// Asks the replica's gRPC health service.
#[derive(Clone, Debug)]
pub struct GrpcProbe {
    h2c: Client<HttpConnector, Full<Bytes>>,
}

impl Default for GrpcProbe {
    fn default() -> Self {
        Self { h2c: client(true) }
    }
}

impl Probe for GrpcProbe {
    fn check<'a>(&'a self, target: Target<'a>, timeout: Duration) -> BoxFuture<'a, bool> {
        Box::pin(async move {
            let Ok(uri) = uri(target.authority, CHECK_PATH) else {
                return false;
            };
            let request = Request::builder()
                .method(Method::POST)
                .uri(uri)
                .version(http::Version::HTTP_2)
                .header(header::CONTENT_TYPE, "application/grpc")
                .header(header::TE, "trailers")
                // An empty message: no compression flag, length 0.
                .body(Full::new(Bytes::from_static(&[0, 0, 0, 0, 0])));
            let Ok(request) = request else { return false };
            let exchange = async {
                let response = self.h2c.request(request).await.ok()?;
                if response.status() != http::StatusCode::OK {
                    return None;
                }
                let (head, body) = response.into_parts();
                let collected = body.collect().await.ok()?;
                let trailers = collected.trailers().cloned();
                let message = collected.to_bytes();
                let status_ok = grpc_status(&head.headers)
                    .or_else(|| trailers.as_ref().and_then(grpc_status))
                    == Some(0);
                Some(status_ok && serving_status(message) == Some(SERVING))
            };
            matches!(
                tokio::time::timeout(timeout, exchange).await,
                Ok(Some(true))
            )
        })
    }
}

fn grpc_status(headers: &HeaderMap) -> Option<u32> {
    headers.get("grpc-status")?.to_str().ok()?.parse().ok()
}

/// Field 1 (a varint) of the first gRPC message in `body`.
fn serving_status(mut body: Bytes) -> Option<u64> {
    if body.len() < 5 || body[0] != 0 {
        return None;
    }
    body.advance(1);
    let len = usize::try_from(body.get_u32()).ok()?;
    let mut message = body.get(..len)?;
    let mut status = 0;
    while !message.is_empty() {
        let tag = varint(&mut message)?;
        match (tag >> 3, tag & 7) {
            (1, 0) => status = varint(&mut message)?,
            (_, 0) => {
                varint(&mut message)?;
            }
            (_, 2) => {
                let n = usize::try_from(varint(&mut message)?).ok()?;
                message = message.get(n..)?;
            }
            _ => return None,
        }
    }
    Some(status)
}

fn varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_serving_status() {
        let frame = |msg: &[u8]| {
            let mut b = vec![0];
            b.extend_from_slice(&u32::try_from(msg.len()).expect("len").to_be_bytes());
            b.extend_from_slice(msg);
            Bytes::from(b)
        };
        assert_eq!(serving_status(frame(&[0x08, 0x01])), Some(SERVING));
        assert_eq!(serving_status(frame(&[0x08, 0x02])), Some(2));
        // Unknown fields are skipped; no field 1 is UNKNOWN (0).
        assert_eq!(
            serving_status(frame(&[0x12, 0x01, b'x', 0x08, 0x01])),
            Some(1)
        );
        assert_eq!(serving_status(frame(&[])), Some(0));
        assert_eq!(serving_status(Bytes::from_static(&[1, 0, 0, 0, 0])), None);
        assert_eq!(serving_status(frame(&[0x08])), None);
    }
}
