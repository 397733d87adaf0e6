//! `POST /publish` (JSON single, multi-channel or batch; form-encoded) and `POST /publish/<ch>`
//! (raw body). The whole request is validated before anything is published.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Request, Response, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use super::{channel_from_path, form_pairs, App, ConnectionHandle, RequestBody};
use crate::config::Config;
use crate::error::{json_response, ApiError};
use crate::hub::Publication;
use crate::limits::client_key;
use crate::names::{check_channels, check_event_name};
use crate::sse::EventFields;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
}

/// One event as JSON.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    event: Option<String>,
    /// `None` only when absent: `null` is a JSON value like any other and is sent as `null`.
    #[serde(default, deserialize_with = "present")]
    data: Option<Value>,
    retry: Option<u32>,
    #[serde(default)]
    close: bool,
}

fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Fields of one event before validation, from any body style.
#[derive(Debug, Default)]
struct Draft {
    channel: Option<String>,
    channels: Option<Vec<String>>,
    event: Option<String>,
    data: String,
    retry: Option<u32>,
    close: bool,
}

pub async fn handle<B: RequestBody>(
    app: &App,
    request: Request<B>,
    channel_path: Option<&str>,
    connection: &ConnectionHandle,
    accepted: Instant,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let kind = match channel_path {
        Some(_) => None,
        None => Some(body_kind(&request)?),
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    // Checked before the body is read: an unauthenticated client does not get to upload.
    let grant = app.auth.publisher(request.headers(), &query)?;
    // Who the client is matters only to the publish rate limit, when one is set.
    let rate_limit = app
        .publish_rate
        .as_ref()
        .map(|rate| (rate, client_key(request.headers(), connection.peer)));
    let body = read_body(app, request).await?;
    let style = match (channel_path, kind) {
        (Some(channel_path), _) => BodyStyle::Raw {
            channel_path,
            query: &query,
        },
        (None, Some(BodyKind::Json)) => BodyStyle::Json,
        (None, _) => BodyStyle::Form,
    };
    let (publications, single) = publications(&app.config, style, &body)?;
    for publication in &publications {
        grant.check(&publication.channel)?;
    }
    if let Some((rate, client)) = rate_limit {
        rate.take(client, publications.len(), Instant::now())
            .map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    }
    let receipts = app.hub.publish(&publications, accepted).await?;
    Ok(match (single, receipts.as_slice()) {
        (true, [receipt]) => json_response(StatusCode::OK, receipt),
        _ => json_response(StatusCode::OK, &receipts),
    })
}

/// How a publish request carries its events.
#[derive(Debug, Clone, Copy)]
pub enum BodyStyle<'a> {
    /// `POST /publish/<channel_path>?<query>`: the body is the data.
    Raw {
        channel_path: &'a str,
        query: &'a str,
    },
    Json,
    Form,
}

/// Parses and checks a publish body into its publications, all or an error, and whether the
/// answer is one receipt (not a list). No I/O: the whole request is judged before anything is
/// published (and this is what the fuzz target drives).
pub fn publications(
    config: &Config,
    style: BodyStyle<'_>,
    body: &[u8],
) -> Result<(Vec<Publication>, bool), ApiError> {
    let (drafts, single) = match style {
        BodyStyle::Raw {
            channel_path,
            query,
        } => (vec![raw_draft(channel_path, query, body)?], true),
        BodyStyle::Json => json_drafts(body)?,
        BodyStyle::Form => (vec![form_draft(body)?], true),
    };
    let mut publications = Vec::new();
    let batch = drafts.len() > 1 || !single;
    for (i, draft) in drafts.into_iter().enumerate() {
        let at = if batch {
            format!("events[{i}]: ")
        } else {
            String::new()
        };
        publications.extend(validate(config, draft, &at)?);
        if publications.len() > config.max_batch {
            return Err(ApiError::BadRequest(format!(
                "more than {} events in one request",
                config.max_batch
            )));
        }
    }
    if publications.is_empty() {
        return Err(ApiError::BadRequest("no events to publish".into()));
    }
    let single = single && publications.len() == 1;
    Ok((publications, single))
}

fn body_kind<B>(request: &Request<B>) -> Result<BodyKind, ApiError> {
    let value = request
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Ok(BodyKind::Json),
        "application/x-www-form-urlencoded" => Ok(BodyKind::Form),
        _ => Err(ApiError::UnsupportedMediaType(value)),
    }
}

/// The whole body, within `max-body-bytes` and `body-read-timeout`.
async fn read_body<B: RequestBody>(app: &App, request: Request<B>) -> Result<Bytes, ApiError> {
    let limit = app.config.max_body_bytes;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let collect = Limited::new(request.into_body(), limit).collect();
    match tokio::time::timeout(app.config.body_read_timeout, collect).await {
        Err(_) => Err(ApiError::RequestTimeout(app.config.body_read_timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if err.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Ok(Err(err)) => Err(ApiError::BadRequest(format!(
            "request body could not be read: {err}"
        ))),
    }
}

/// `POST /publish/<channel>?event=&retry=&close=`: the raw body is the data.
fn raw_draft(path: &str, query: &str, body: &[u8]) -> Result<Draft, ApiError> {
    let channel = channel_from_path(path)?;
    let data = std::str::from_utf8(body)
        .map_err(|_| ApiError::BadRequest("data is not valid UTF-8".into()))?
        .to_owned();
    let mut draft = Draft {
        channel: Some(channel),
        data,
        ..Draft::default()
    };
    for (key, value) in form_pairs(query.as_bytes())? {
        match key.as_str() {
            "event" => set_once(&mut draft.event, &key, value)?,
            "retry" => draft.retry = Some(parse_retry(&value)?),
            "close" => draft.close = parse_bool(&key, &value)?,
            // A token passed in the URL (see `auth`), not an event field.
            "access_token" => {}
            _ => return Err(unknown_field(&key)),
        }
    }
    Ok(draft)
}

/// `channel` (repeatable), `data`, `event`, `retry`, `close`.
fn form_draft(body: &[u8]) -> Result<Draft, ApiError> {
    let mut draft = Draft::default();
    let mut channels = Vec::new();
    let mut data = None;
    for (key, value) in form_pairs(body)? {
        match key.as_str() {
            "channel" => channels.push(value),
            "data" => set_once(&mut data, &key, value)?,
            "event" => set_once(&mut draft.event, &key, value)?,
            "retry" => draft.retry = Some(parse_retry(&value)?),
            "close" => draft.close = parse_bool(&key, &value)?,
            _ => return Err(unknown_field(&key)),
        }
    }
    draft.data = data.unwrap_or_default();
    match channels.len() {
        0 => {}
        1 => draft.channel = channels.pop(),
        _ => draft.channels = Some(channels),
    }
    Ok(draft)
}

/// A JSON object, an array of them, or `{"events": [..]}`; `true` when it was a single object.
fn json_drafts(body: &[u8]) -> Result<(Vec<Draft>, bool), ApiError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::BadRequest(format!("invalid JSON: {err}")))?;
    let (items, single) = match value {
        Value::Array(items) => (items, false),
        Value::Object(mut object) if object.contains_key("events") => {
            if object.len() > 1 {
                return Err(ApiError::BadRequest(
                    "\"events\" cannot be mixed with other fields".into(),
                ));
            }
            match object.remove("events") {
                Some(Value::Array(items)) => (items, false),
                _ => {
                    return Err(ApiError::BadRequest(
                        "\"events\" must be an array of events".into(),
                    ))
                }
            }
        }
        object @ Value::Object(_) => (vec![object], true),
        _ => {
            return Err(ApiError::BadRequest(
                "expected a JSON object, an array of objects, or {\"events\": [...]}".into(),
            ))
        }
    };
    let drafts = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let event: JsonEvent = serde_json::from_value(item).map_err(|err| {
                let at = if single {
                    String::new()
                } else {
                    format!("events[{i}]: ")
                };
                ApiError::BadRequest(format!("{at}{err}"))
            })?;
            Ok(Draft {
                channel: event.channel,
                channels: event.channels,
                event: event.event,
                data: match event.data {
                    None => String::new(),
                    Some(Value::String(text)) => text,
                    Some(other) => other.to_string(),
                },
                retry: event.retry,
                close: event.close,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    Ok((drafts, single))
}

/// Checks one draft against the naming rules and size bounds; one publication per channel.
fn validate(config: &Config, draft: Draft, at: &str) -> Result<Vec<Publication>, ApiError> {
    let bad = |msg: String| ApiError::BadRequest(format!("{at}{msg}"));
    let channels = match (draft.channel, draft.channels) {
        (Some(_), Some(_)) => return Err(bad("give either channel or channels, not both".into())),
        (None, None) => return Err(bad("missing channel".into())),
        (Some(channel), None) => vec![channel],
        (None, Some(channels)) if channels.is_empty() => {
            return Err(bad("channels is empty".into()))
        }
        (None, Some(channels)) if channels.len() > config.max_batch => {
            return Err(bad(format!(
                "{} channels in one event; at most {} allowed",
                channels.len(),
                config.max_batch
            )))
        }
        (None, Some(channels)) => channels,
    };
    check_channels(&channels).map_err(|err| bad(err.to_string()))?;
    if let Some(event) = &draft.event {
        check_event_name(event).map_err(|err| bad(err.to_string()))?;
    }
    if draft.data.len() > config.max_event_bytes {
        return Err(ApiError::EventTooLarge {
            at: at.to_owned(),
            limit: config.max_event_bytes,
        });
    }
    let fields = EventFields {
        event: draft.event,
        data: draft.data,
        retry: draft.retry,
        close: draft.close,
    };
    // The last channel takes the fields themselves: a single-channel event copies nothing.
    let copies = std::iter::repeat_n(fields, channels.len());
    Ok(channels
        .into_iter()
        .zip(copies)
        .map(|(channel, fields)| Publication { channel, fields })
        .collect())
}

fn set_once(slot: &mut Option<String>, key: &str, value: String) -> Result<(), ApiError> {
    if slot.replace(value).is_some() {
        return Err(ApiError::BadRequest(format!("{key} is given twice")));
    }
    Ok(())
}

fn parse_retry(value: &str) -> Result<u32, ApiError> {
    value.parse().map_err(|_| {
        ApiError::BadRequest(format!("retry {value:?} is not a number of milliseconds"))
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" | "" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::BadRequest(format!(
            "{key} must be true or false, not {value:?}"
        ))),
    }
}

fn unknown_field(key: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "unknown field {key:?}; expected channel, data, event, retry or close"
    ))
}
