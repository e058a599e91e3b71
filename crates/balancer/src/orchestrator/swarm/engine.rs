//! A minimal Docker Engine API client over the Unix socket: one HTTP/1.1
//! request per connection (hyper), JSON in and out (serde).
//!
//! Why not bollard for Swarm: bollard 0.21's `Task` model has no
//! `NetworksAttachments`, so the task addresses the balancer routes to are
//! dropped while parsing. The other ways around it are worse: a verbose
//! `inspect_network(scope=swarm)` shows only the tasks this node's network
//! peers know, and `tasks.<service>` DNS works only from inside the overlay
//! and gives IPs without task states. Reading `GET /tasks` ourselves gives
//! every task of the swarm with its state, node and address, from any
//! manager. A handful of calls a second does not need pooled connections.

use std::{path::PathBuf, time::Duration};

use bytes::Bytes;
use http::{Method, Request, StatusCode, header};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

/// How long one non-streaming call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot reach the engine at {socket}: {reason}")]
    Connect { socket: String, reason: String },
    #[error("the engine answered {status} to {method} {path}: {message}")]
    Status {
        status: u16,
        method: Method,
        path: String,
        message: String,
    },
    #[error("unexpected answer to {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("{method} {path} took longer than {CALL_TIMEOUT:?}")]
    Timeout { method: Method, path: String },
}

impl EngineError {
    /// The HTTP status the engine answered, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// The engine behind one Unix socket.
#[derive(Debug, Clone)]
pub struct Engine {
    socket: PathBuf,
}

impl Engine {
    /// `socket`, else `DOCKER_HOST` if it names a Unix socket, else the
    /// default `/var/run/docker.sock`.
    pub fn new(socket: Option<&str>) -> Self {
        let socket = socket
            .map(str::to_owned)
            .or_else(|| {
                std::env::var("DOCKER_HOST")
                    .ok()
                    .and_then(|h| h.strip_prefix("unix://").map(str::to_owned))
            })
            .unwrap_or_else(|| "/var/run/docker.sock".to_owned());
        Self {
            socket: socket.into(),
        }
    }

    /// Sends one request; the answer's head and its body, not read yet.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<hyper::Response<Incoming>, EngineError> {
        let connect = |e: &dyn std::fmt::Display| EngineError::Connect {
            socket: self.socket.display().to_string(),
            reason: e.to_string(),
        };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| connect(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| connect(&e))?;
        // The connection task ends with the body (or the engine closing).
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, "docker")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| connect(&e))?;
        sender.send_request(request).await.map_err(|e| connect(&e))
    }

    /// One call: status checked, body read whole.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, EngineError> {
        let timeout = || EngineError::Timeout {
            method: method.clone(),
            path: path.to_owned(),
        };
        let work = async {
            let response = self.send(method.clone(), path, body).await?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| EngineError::Parse {
                    path: path.to_owned(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            if status.is_success() {
                return Ok(bytes);
            }
            Err(EngineError::Status {
                status: status.as_u16(),
                method: method.clone(),
                path: path.to_owned(),
                message: message_of(&bytes),
            })
        };
        tokio::time::timeout(CALL_TIMEOUT, work)
            .await
            .map_err(|_| timeout())?
    }

    /// `GET path`, parsed.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        let bytes = self.call(Method::GET, path, None).await?;
        parse(path, &bytes)
    }

    /// `POST path` with a JSON body, the answer parsed.
    pub async fn post<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, EngineError> {
        let body = serde_json::to_vec(body).map_err(|e| EngineError::Parse {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let bytes = self.call(Method::POST, path, Some(body)).await?;
        parse(path, &bytes)
    }

    /// `DELETE path`; a 404 (already gone) is success.
    pub async fn delete(&self, path: &str) -> Result<(), EngineError> {
        match self.call(Method::DELETE, path, None).await {
            Err(e) if e.status() == Some(StatusCode::NOT_FOUND.as_u16()) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// `GET path` of a stream (`/events`): the body, read as it comes.
    pub async fn stream(&self, path: &str) -> Result<Incoming, EngineError> {
        let response = self.send(Method::GET, path, None).await?;
        if !response.status().is_success() {
            return Err(EngineError::Status {
                status: response.status().as_u16(),
                method: Method::GET,
                path: path.to_owned(),
                message: String::new(),
            });
        }
        Ok(response.into_body())
    }
}

fn parse<T: DeserializeOwned>(path: &str, bytes: &[u8]) -> Result<T, EngineError> {
    serde_json::from_slice(bytes).map_err(|e| EngineError::Parse {
        path: path.to_owned(),
        reason: e.to_string(),
    })
}

/// The engine's `{"message": ...}`, or the body as text.
fn message_of(bytes: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Message {
        message: String,
    }
    serde_json::from_slice::<Message>(bytes)
        .map(|m| m.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(bytes).into_owned())
}

/// `path?filters=<json>`, the JSON percent-encoded.
pub fn with_filters(path: &str, filters: &serde_json::Value) -> String {
    let json = filters.to_string();
    let mut encoded = String::with_capacity(json.len() * 3);
    for b in json.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    format!("{path}?filters={encoded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_are_percent_encoded() {
        let path = with_filters("/tasks", &serde_json::json!({"label": ["lb.project=x"]}));
        assert_eq!(
            path,
            "/tasks?filters=%7B%22label%22%3A%5B%22lb.project%3Dx%22%5D%7D"
        );
    }

    #[test]
    fn engine_messages_are_read_from_their_json() {
        let body = br#"{"message":"rpc error: code = AlreadyExists desc = name conflicts"}"#;
        assert_eq!(
            message_of(body),
            "rpc error: code = AlreadyExists desc = name conflicts"
        );
        assert_eq!(message_of(b"plain"), "plain");
    }

    #[tokio::test]
    async fn a_missing_socket_is_a_connect_error() {
        let engine = Engine::new(Some("/nonexistent/docker.sock"));
        let err = engine
            .get::<serde_json::Value>("/info")
            .await
            .expect_err("no socket");
        assert!(matches!(err, EngineError::Connect { .. }), "{err}");
        assert_eq!(err.status(), None);
    }
}
