//! The admin API (`/rep`, `/add`, `/rm`) and the balancer's own endpoints
//! under `/lb/`, plus the router that sends everything else to the proxy.
//!
//! Input is validated completely, once, before anything changes (into a
//! [`Change`]): a request that fails validation gets a 4xx JSON error in the
//! contract's shape and the pool is untouched. Errors map to responses in
//! [`error`]. With `--admin-token`, every endpoint that reveals or changes
//! state (`/rep`, `/add`, `/rm`, `/lb/*`) requires `Authorization: Bearer
//! <token>` (the scheme in any case); only the `/lb/health` liveness probe
//! and the dashboard's static page ([`dashboard`], which asks for the token
//! and sends it with its calls) stay open.

pub mod dashboard;
pub mod error;
pub mod stats;
pub mod status;

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Body,
    extract::{Query, State},
    http::{HeaderMap, Uri, header},
    response::{IntoResponse, Response},
    routing::{any, delete, get, post},
};
use serde::Deserialize;
use serde_json::json;

pub use error::ApiError;
pub use status::Status;

use crate::{
    change::{Change, Direction},
    events::{EventLog, Events},
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
    /// The facts fixed at start, shown at `/lb/status`.
    pub settings: status::Settings,
    /// Cancelled at shutdown: ends long polls so they do not hold the drain.
    pub shutdown: tokio_util::sync::CancellationToken,
}

/// Whether `path` is one of the balancer's own endpoints (served by
/// [`router`]) rather than a replica's (forwarded by the proxy straight
/// away, without the router). Keep it beside the router's route list.
pub fn is_admin_path(path: &str) -> bool {
    matches!(path, "/rep" | "/add" | "/rm") || path == "/lb" || path.starts_with("/lb/")
}

/// Every route of the balancer.
pub fn router(app: Arc<App>) -> Router {
    let guarded = Router::new()
        .route("/rep", get(rep))
        .route("/add", post(add))
        .route("/rm", delete(rm))
        .route("/lb/status", get(status))
        .route("/lb/metrics", get(metrics))
        .route("/lb/events", get(events))
        .route("/lb/stats", get(stats))
        .route("/lb/ring", get(ring))
        .route("/lb", any(not_found))
        .route("/lb/{*rest}", any(not_found))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_token,
        ));
    Router::new()
        .route(
            "/lb/health",
            get(|| async { Json(json!({"status": "successful"})) }),
        )
        // The page asks for the token; its data endpoints check it.
        .route("/lb/dashboard", get(dashboard::page))
        .route("/lb/dashboard/app.js", get(dashboard::script))
        .route("/lb/dashboard/charts.js", get(dashboard::charts))
        .route("/lb/dashboard/app.css", get(dashboard::style))
        .merge(guarded)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        // Only the paths `is_admin_path` accepts are routed here (or every
        // path, on an --admin-listen listener).
        .fallback(not_found)
        .with_state(app)
}

/// The token check in front of every guarded route.
async fn require_token(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match authorize(&app, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn membership(names: Vec<String>) -> Response {
    Json(json!({"message": {"N": names.len(), "replicas": names}, "status": "successful"}))
        .into_response()
}

async fn rep(State(app): State<Arc<App>>) -> Response {
    membership(app.control.members().await)
}

async fn add(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let change = read_change(body, Direction::Add, app.max_replicas).await?;
    Ok(membership(app.control.add(change).await?))
}

async fn rm(State(app): State<Arc<App>>, body: Body) -> Result<Response, ApiError> {
    let change = read_change(body, Direction::Remove, usize::MAX).await?;
    Ok(membership(app.control.remove(change).await?))
}

/// The body of an `/add` or `/rm`, validated.
async fn read_change(body: Body, direction: Direction, max_n: usize) -> Result<Change, ApiError> {
    let bytes = axum::body::to_bytes(body, ADMIN_BODY_LIMIT)
        .await
        .map_err(|_| ApiError::TooLarge(ADMIN_BODY_LIMIT))?;
    Ok(Change::from_json(direction, &bytes, max_n)?)
}

fn authorize(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = &app.admin_token else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
        .unwrap_or("");
    // Constant time, so the token cannot be guessed byte by byte from timing.
    if subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes()).into() {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// The credentials of `Bearer <token>`; the scheme is case-insensitive
/// (RFC 9110 11.1).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start())
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::NotFound(uri.path().to_owned())
}

async fn status(State(app): State<Arc<App>>) -> Json<Status> {
    Json(Status::new(&app.settings, &app.pool.load()))
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Format::from_accept(accept);
    match crate::metrics::render(&app.metrics, app.pool.load_full(), &app.events, format) {
        Ok(text) => ([(header::CONTENT_TYPE, format.content_type())], text).into_response(),
        Err(_) => ApiError::Internal("the metrics could not be encoded".into()).into_response(),
    }
}

async fn stats(State(app): State<Arc<App>>) -> Json<stats::Stats> {
    Json(stats::Stats::new(&app.metrics, &app.pool.load()))
}

/// A ring's shares take milliseconds to measure: off the async workers.
async fn ring(State(app): State<Arc<App>>) -> Result<Json<stats::Ring>, ApiError> {
    let snapshot = app.pool.load_full();
    tokio::task::spawn_blocking(move || stats::Ring::new(&snapshot))
        .await
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

#[derive(Deserialize)]
struct EventsQuery {
    #[serde(default)]
    after: u64,
    /// Wait up to this long for an event after `after` (a long poll).
    #[serde(default)]
    wait_ms: u64,
}

/// Longest long poll of `/lb/events`: below common proxy idle timeouts.
const MAX_EVENTS_WAIT: std::time::Duration = std::time::Duration::from_secs(25);

async fn events(State(app): State<Arc<App>>, Query(query): Query<EventsQuery>) -> Json<Events> {
    let wait = std::time::Duration::from_millis(query.wait_ms).min(MAX_EVENTS_WAIT);
    let events = if wait.is_zero() {
        app.events.since(query.after)
    } else {
        tokio::select! {
            events = app.events.wait_since(query.after, wait) => events,
            () = app.shutdown.cancelled() => Vec::new(),
        }
    };
    Json(Events { events })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   abc", Some("abc")),
            ("Basic abc", None),
            ("Bearerabc", None),
        ] {
            assert_eq!(bearer(value), token, "{value}");
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
            "/lb/stats",
            "/lb/ring",
            "/lb/dashboard",
            "/lb/anything",
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
}
