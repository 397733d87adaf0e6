//! `GET /events/<channel>` and `GET /events?channel=a&channel=b`: opens an event stream, resuming
//! from `Last-Event-ID` (header, or `?lastEventId=`; the header wins, since EventSource keeps the
//! URL and sends the header on reconnect).

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};

use super::{channel_from_path, App, ResponseBody};
use crate::connection::Cut;
use crate::error::ApiError;
use crate::hub::Opened;
use crate::names::check_channels;

pub async fn handle<B>(
    app: &App,
    request: &Request<B>,
    channel_path: Option<&str>,
    connection: Cut,
) -> Result<Response<ResponseBody>, ApiError> {
    let mut channels = Vec::new();
    let mut query_cursor = None;
    // Decoded leniently: a channel name with a replaced byte fails the name check anyway,
    // and an undecodable cursor becomes an `invalid_cursor` gap rather than a 400 that would
    // stop EventSource for good.
    let query = request.uri().query().unwrap_or("");
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "channel" => channels.push(value),
            "lastEventId" | "last-event-id" => query_cursor = Some(value),
            _ => {}
        }
    }
    if let Some(path) = channel_path {
        if !channels.is_empty() {
            return Err(ApiError::BadRequest(
                "give channels in the path or in ?channel=, not both".into(),
            ));
        }
        channels.push(channel_from_path(path)?);
    }
    if channels.is_empty() {
        return Err(ApiError::BadRequest("missing channel".into()));
    }
    if channels.len() > app.config.max_channels_per_connection {
        return Err(ApiError::BadRequest(format!(
            "{} channels on one connection; at most {} allowed",
            channels.len(),
            app.config.max_channels_per_connection
        )));
    }
    check_channels(&channels).map_err(|err| ApiError::BadRequest(err.to_string()))?;
    let header_cursor = request
        .headers()
        .get("last-event-id")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let cursor = header_cursor
        .or(query_cursor)
        .filter(|c| !c.trim().is_empty());
    let valid_for = app
        .auth
        .check_subscribe(request.headers(), query, &channels)?;
    let opened = app
        .hub
        .subscribe(&channels, cursor.as_deref(), connection, valid_for)
        .await?;
    match opened {
        Opened::Finished => {
            let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
            *response.status_mut() = StatusCode::NO_CONTENT;
            Ok(response)
        }
        Opened::Stream(subscription) => {
            let mut response = Response::new(Either::Right(subscription));
            let headers = response.headers_mut();
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
            Ok(response)
        }
    }
}
