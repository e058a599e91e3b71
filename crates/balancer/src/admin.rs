//! The admin API (`/rep`, `/add`, `/rm`) and the balancer's own endpoints
//! under `/lb/`, plus the router that sends everything else to the proxy.
//!
//! Input is validated completely before anything changes: a request that
//! fails validation gets a 4xx JSON error in the contract's shape and the
//! pool is untouched. `/add` and `/rm` create and destroy processes or
//! containers, so with `--admin-token` they require `Authorization: Bearer`.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Json, Router,
    body::Body,
    extract::{ConnectInfo, Query, Request, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{delete, get, post},
};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{
    error::{AdminError, failure},
    events::EventLog,
    metrics::Metrics,
    pool::Pool,
    proxy::Proxy,
    supervisor::Control,
};

/// Largest admin request body accepted.
pub const ADMIN_BODY_LIMIT: usize = 16 * 1024;

/// What the handlers share.
pub struct App {
    pub control: Control,
    pub proxy: Proxy,
    pub pool: Arc<Pool>,
    pub metrics: Arc<Metrics>,
    pub events: Arc<EventLog>,
    pub admin_token: Option<String>,
    pub max_replicas: usize,
    /// Static facts shown at `/lb/status`.
    pub describe: Value,
}

/// Whether `path` is one of the balancer's own endpoints (served by
/// [`router`]) rather than a replica's (forwarded by the proxy straight
/// away, without the router). Keep it beside the router's route list.
pub fn is_admin_path(path: &str) -> bool {
    matches!(path, "/rep" | "/add" | "/rm") || path == "/lb" || path.starts_with("/lb/")
}

/// Every route of the balancer.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/rep", get(rep))
        .route("/add", post(add))
        .route("/rm", delete(rm))
        .route(
            "/lb/health",
            get(|| async { Json(json!({"status": "successful"})) }),
        )
        .route("/lb/status", get(status))
        .route("/lb/metrics", get(metrics))
        .route("/lb/events", get(events))
        .method_not_allowed_fallback(|| async {
            failure(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed on this endpoint",
            )
        })
        .fallback(proxy)
        .with_state(app)
}

async fn proxy(
    State(app): State<Arc<App>>,
    ConnectInfo(client): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    app.proxy.forward(client, req).await
}

fn membership(names: Vec<String>) -> Response {
    Json(json!({"message": {"N": names.len(), "replicas": names}, "status": "successful"}))
        .into_response()
}

async fn rep(State(app): State<Arc<App>>) -> Response {
    membership(app.control.members().await)
}

async fn add(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    authorize(&app, &headers)?;
    let change = Change::parse(body, app.max_replicas).await?;
    if change.hostnames.len() > change.n {
        return Err(AdminError::TooManyHostnamesToAdd);
    }
    Ok(membership(
        app.control.add(change.n, change.hostnames).await?,
    ))
}

async fn rm(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AdminError> {
    authorize(&app, &headers)?;
    let change = Change::parse(body, usize::MAX).await?;
    if change.hostnames.len() > change.n {
        return Err(AdminError::TooManyHostnamesToRemove);
    }
    Ok(membership(
        app.control.remove(change.n, change.hostnames).await?,
    ))
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), AdminError> {
    let Some(token) = &app.admin_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time, so the token cannot be guessed byte by byte from timing.
    if subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into() {
        Ok(())
    } else {
        Err(AdminError::Unauthorized)
    }
}

/// A validated `/add` or `/rm` body.
#[derive(Debug, PartialEq, Eq)]
struct Change {
    n: usize,
    hostnames: Vec<String>,
}

impl Change {
    async fn parse(body: Body, max_n: usize) -> Result<Self, AdminError> {
        let bytes = axum::body::to_bytes(body, ADMIN_BODY_LIMIT)
            .await
            .map_err(|_| AdminError::TooLarge(ADMIN_BODY_LIMIT))?;
        Self::from_json(&bytes, max_n)
    }

    fn from_json(bytes: &[u8], max_n: usize) -> Result<Self, AdminError> {
        let bad = |m: String| AdminError::BadRequest(m);
        let example = r#"expected a JSON object like {"n": 1, "hostnames": ["s1"]}"#;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(format!("empty body: {example}")));
        }
        let value: Value =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("malformed JSON: {e}")))?;
        let Value::Object(fields) = value else {
            return Err(bad(example.into()));
        };
        if let Some(unknown) = fields.keys().find(|k| *k != "n" && *k != "hostnames") {
            return Err(bad(format!(
                "unknown field '{unknown}' (expected 'n' and 'hostnames')"
            )));
        }
        let n = match fields.get("n") {
            None | Some(Value::Null) => {
                return Err(bad("missing field 'n' (the number of replicas)".into()));
            }
            Some(Value::Number(num)) => match (num.as_u64(), num.as_i64()) {
                (Some(n), _) => n,
                (None, Some(_)) => {
                    return Err(bad(format!("'n' must be a positive integer, got {num}")));
                }
                _ => return Err(bad(format!("'n' must be an integer, got {num}"))),
            },
            Some(other) => return Err(bad(format!("'n' must be an integer, got {other}"))),
        };
        if n == 0 {
            return Err(bad("'n' must be at least 1".into()));
        }
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n > max_n {
            return Err(bad(format!("'n' is {n}, above --max-replicas ({max_n})")));
        }
        let hostnames = match fields.get("hostnames") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .map(|item| match item {
                    Value::String(s) => validate_hostname(s).map(|()| s.clone()),
                    other => Err(bad(format!("hostnames must be strings, got {other}"))),
                })
                .collect::<Result<Vec<_>, _>>()?,
            Some(other) => {
                return Err(bad(format!(
                    "'hostnames' must be a list of strings, got {other}"
                )));
            }
        };
        let mut seen = std::collections::HashSet::new();
        if let Some(dup) = hostnames.iter().find(|h| !seen.insert(h.as_str())) {
            return Err(bad(format!("hostname '{dup}' is listed twice")));
        }
        Ok(Self { n, hostnames })
    }
}

/// A hostname must be a DNS label (RFC 1123): it names a container on the
/// Docker network and is resolved by other containers. Never passed to a
/// shell, but checked all the same.
pub fn validate_hostname(name: &str) -> Result<(), AdminError> {
    let valid = (1..=63).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if valid {
        Ok(())
    } else {
        Err(AdminError::BadRequest(format!(
            "'{}' is not a valid hostname (1-63 letters, digits or '-', not starting or ending with '-')",
            name.escape_debug()
        )))
    }
}

async fn status(State(app): State<Arc<App>>) -> Response {
    let snapshot = app.pool.load();
    let replicas: Vec<Value> = snapshot
        .replicas
        .iter()
        .map(|r| {
            json!({
                "name": r.name, "id": r.id, "addr": r.addr.to_string(), "health": r.health(),
                "in_flight": r.in_flight(), "served": r.served(), "failures": r.failures(),
                "weight": r.weight, "generation": r.generation, "pid": r.pid,
                "uptime_s": r.started.elapsed().as_secs_f64(),
            })
        })
        .collect();
    let mut body = app.describe.clone();
    body["policy"] = json!(snapshot.policy.name());
    body["replicas"] = json!(replicas);
    Json(body).into_response()
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    let text = app.metrics.render(&app.pool.load());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
}

async fn events(State(app): State<Arc<App>>, Query(query): Query<EventsQuery>) -> Response {
    Json(json!({"events": app.events.since(query.after)})).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Change, String> {
        Change::from_json(s.as_bytes(), 10).map_err(|e| e.to_string())
    }

    #[test]
    fn accepts_the_spec_bodies() {
        assert_eq!(
            parse(r#"{"n": 2, "hostnames": ["s4", "s5"]}"#),
            Ok(Change {
                n: 2,
                hostnames: vec!["s4".into(), "s5".into()]
            })
        );
        assert_eq!(
            parse(r#"{"n": 3}"#),
            Ok(Change {
                n: 3,
                hostnames: vec![]
            })
        );
    }

    #[test]
    fn rejects_every_bad_input_with_a_reason() {
        for (body, expect) in [
            ("", "empty body"),
            ("{", "malformed JSON"),
            ("[1]", "JSON object"),
            (r#"{"hostnames": []}"#, "missing field 'n'"),
            (r#"{"n": -1}"#, "positive integer"),
            (r#"{"n": 1.5}"#, "integer"),
            (r#"{"n": "2"}"#, "integer"),
            (r#"{"n": 0}"#, "at least 1"),
            (r#"{"n": 11}"#, "--max-replicas"),
            (r#"{"n": 1, "hostnames": "s1"}"#, "list of strings"),
            (r#"{"n": 1, "hostnames": [1]}"#, "must be strings"),
            (r#"{"n": 2, "hostnames": ["a", "a"]}"#, "listed twice"),
            (
                r#"{"n": 1, "hostnames": ["bad name"]}"#,
                "not a valid hostname",
            ),
            (
                r#"{"n": 1, "hostnames": ["$(reboot)"]}"#,
                "not a valid hostname",
            ),
            (r#"{"n": 1, "extra": true}"#, "unknown field"),
        ] {
            let err = parse(body).expect_err(body);
            assert!(err.contains(expect), "{body}: {err}");
        }
    }

    #[test]
    fn admin_paths_are_exactly_the_routers() {
        for path in [
            "/rep",
            "/add",
            "/rm",
            "/lb",
            "/lb/health",
            "/lb/status",
            "/lb/metrics",
            "/lb/events",
        ] {
            assert!(is_admin_path(path), "{path}");
        }
        for path in [
            "/",
            "/home",
            "/heartbeat",
            "/repx",
            "/rep/",
            "/lbx",
            "/add/1",
            "/x/lb/status",
        ] {
            assert!(!is_admin_path(path), "{path}");
        }
    }

    #[test]
    fn hostname_rules() {
        for ok in ["s1", "server-10", "A", &"a".repeat(63)] {
            assert!(validate_hostname(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-a", "a-", "a_b", "a.b", "a b", &"a".repeat(64), "é"] {
            assert!(validate_hostname(bad).is_err(), "{bad}");
        }
    }
}
