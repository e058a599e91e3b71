//! `/lb/dashboard`: the live page, its script and its style, compiled into
//! the binary (`include_str!`) so nothing is fetched from anywhere else at
//! run time; the Content-Security-Policy says so to the browser too.
//!
//! The page itself reveals nothing and is served without the admin token:
//! a browser cannot attach a bearer token to a navigation. It asks for the
//! token and sends it with every call to the data endpoints (`/lb/status`,
//! `/lb/stats`, `/lb/events`, `/lb/ring`, `/rep`, `/add`, `/rm`), which
//! check it as they do for any client.

use axum::{
    http::header,
    response::{IntoResponse, Response},
};

const HTML: &str = include_str!("assets/dashboard.html");
const SCRIPT: &str = include_str!("assets/dashboard.js");
const CHARTS: &str = include_str!("assets/dashboard-charts.js");
const STYLE: &str = include_str!("assets/dashboard.css");

/// Only this origin, no inline script or style: the page works offline
/// and an injected replica name cannot run as code.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

pub async fn page() -> Response {
    asset("text/html; charset=utf-8", HTML)
}

pub async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

pub async fn charts() -> Response {
    asset("text/javascript; charset=utf-8", CHARTS)
}

pub async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}
