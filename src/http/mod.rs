//! HTTP routing: turns requests into hub calls and hub results into responses, nothing more.

pub mod cors;
pub mod demo;
pub mod ops;
pub mod publish;
pub mod subscribe;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::{Method, Request, Response};

use crate::auth::Auth;
use crate::config::Config;
use crate::connection::Cut;
use crate::error::ApiError;
use crate::hub::{Hub, Subscription};
use crate::limits::PublishRate;
use crate::metrics::Metrics;
use cors::Cors;

/// A request body hyper or the direct event-stream path hands over.
pub trait RequestBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send
{
}

impl<B> RequestBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>> + Send
{
}

/// Body of every answer: a whole JSON/text body, or an event stream.
pub type ResponseBody = Either<Full<Bytes>, Subscription>;

/// The connection a request arrived on, handed by the server to each request's handler: its
/// peer address, and the handle that cuts it even when hyper is not polling a subscription.
#[derive(Clone)]
pub struct ConnectionHandle {
    pub cut: Cut,
    pub peer: std::net::IpAddr,
}

/// What request handlers share.
pub struct App {
    pub hub: Arc<Hub>,
    pub auth: Auth,
    /// `None` unless `--publish-rate` is set.
    pub publish_rate: Option<PublishRate>,
    pub metrics: Arc<Metrics>,
    pub config: Config,
    pub cors: Cors,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    Demo,
    Publish,
    Events,
    Metrics,
    Healthz,
    Readyz,
    Unknown,
}

impl Route {
    fn of(path: &str) -> (Route, Option<&str>) {
        match path {
            "/" => (Route::Demo, None),
            "/publish" => (Route::Publish, None),
            "/events" => (Route::Events, None),
            "/metrics" => (Route::Metrics, None),
            "/healthz" => (Route::Healthz, None),
            "/readyz" => (Route::Readyz, None),
            _ => {
                if let Some(rest) = path.strip_prefix("/publish/") {
                    (Route::Publish, Some(rest))
                } else if let Some(rest) = path.strip_prefix("/events/") {
                    (Route::Events, Some(rest))
                } else {
                    (Route::Unknown, None)
                }
            }
        }
    }

    fn label(self) -> &'static str {
        match self {
            Route::Demo => "demo",
            Route::Publish => "publish",
            Route::Events => "events",
            Route::Metrics => "metrics",
            Route::Healthz => "healthz",
            Route::Readyz => "readyz",
            Route::Unknown => "unknown",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Publish => "POST, OPTIONS",
            Route::Events => "GET, OPTIONS",
            _ => "GET",
        }
    }
}

/// Answers one request.
pub async fn handle<B: RequestBody>(
    app: Arc<App>,
    request: Request<B>,
    connection: &ConnectionHandle,
) -> Response<ResponseBody> {
    let accepted = Instant::now();
    let (route, channel_path) = Route::of(request.uri().path());
    let origin = request.headers().get(hyper::header::ORIGIN).cloned();
    let method = request.method().clone();
    let result = match (route, &method) {
        (Route::Unknown, _) => Err(ApiError::NotFound(request.uri().path().to_owned())),
        (Route::Demo, _) if !app.config.demo => {
            Err(ApiError::NotFound(request.uri().path().to_owned()))
        }
        (Route::Publish | Route::Events, &Method::OPTIONS) => {
            app.cors.preflight(&request, route.allow()).map(full)
        }
        (Route::Publish, &Method::POST) => {
            let channel_path = channel_path.map(str::to_owned);
            publish::handle(&app, request, channel_path.as_deref(), connection, accepted)
                .await
                .map(full)
        }
        (Route::Events, &Method::GET) => {
            subscribe::handle(&app, &request, channel_path, connection.cut.clone()).await
        }
        (Route::Demo, &Method::GET) => Ok(full(demo::page())),
        (Route::Metrics, &Method::GET) => Ok(full(ops::metrics(&app))),
        (Route::Healthz, &Method::GET) => Ok(full(ops::healthz())),
        (Route::Readyz, &Method::GET) => Ok(full(ops::readyz(&app))),
        _ => Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: route.allow(),
        }),
    };
    let mut response = result.unwrap_or_else(|err| {
        if err.status().is_server_error() {
            tracing::warn!(error = %err, route = route.label(), "request refused");
        } else {
            tracing::debug!(error = %err, route = route.label(), "bad request");
        }
        full(err.into_response())
    });
    if method != Method::OPTIONS {
        app.cors.decorate(origin.as_ref(), response.headers_mut());
    }
    app.metrics
        .http_requests
        .with_label_values(&[route.label(), response.status().as_str()])
        .inc();
    response
}

fn full(response: Response<Full<Bytes>>) -> Response<ResponseBody> {
    response.map(Either::Left)
}

/// The channel named by the rest of a `/events/...` or `/publish/...` path, percent-decoded.
pub fn channel_from_path(path: &str) -> Result<String, ApiError> {
    percent_encoding::percent_decode_str(path)
        .decode_utf8()
        .map(|name| name.into_owned())
        .map_err(|_| ApiError::BadRequest("channel name is not UTF-8".into()))
}

/// Decodes one `application/x-www-form-urlencoded` query or body; a name or value that is not
/// UTF-8 once decoded is refused rather than silently replaced.
pub fn form_pairs(input: &[u8]) -> Result<Vec<(String, String)>, ApiError> {
    let decode = |part: &[u8]| {
        let spaced: Vec<u8> = part
            .iter()
            .map(|&b| if b == b'+' { b' ' } else { b })
            .collect();
        percent_encoding::percent_decode(&spaced)
            .decode_utf8()
            .map(|text| text.into_owned())
            .map_err(|_| ApiError::BadRequest("form or query data is not valid UTF-8".into()))
    };
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let split = pair.iter().position(|&b| b == b'=').unwrap_or(pair.len());
            let value = pair.get(split + 1..).unwrap_or_default();
            Ok((decode(&pair[..split])?, decode(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_pairs_decode_strictly() {
        let pairs = form_pairs(b"channel=a%2Fb&data=caf%C3%A9+ok&close").unwrap();
        assert_eq!(
            pairs,
            vec![
                ("channel".into(), "a/b".into()),
                ("data".into(), "café ok".into()),
                ("close".into(), String::new()),
            ]
        );
        assert!(form_pairs(b"data=caf%FF").is_err());
        assert!(form_pairs(b"%FF=x").is_err());
    }
}
