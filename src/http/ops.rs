//! Operations endpoints: Prometheus metrics, liveness and readiness.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use super::App;
use crate::error::json_response;

pub fn metrics(app: &App) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(app.metrics.render())));
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// The process is alive and serving HTTP.
pub fn healthz() -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, &serde_json::json!({ "status": "ok" }))
}

/// The hub accepts publishes and subscriptions (not shutting down, broker reachable).
pub fn readyz(app: &App) -> Response<Full<Bytes>> {
    if app.hub.is_ready() {
        json_response(StatusCode::OK, &serde_json::json!({ "status": "ready" }))
    } else {
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "not ready" }),
        )
    }
}
