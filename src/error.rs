//! Errors a client can cause, and the one place they become HTTP answers with a JSON body.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use crate::auth::AuthError;
use crate::hub::{PublishError, SubscribeError};

/// Why a request was refused. Nothing was published for a refused publish.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("{at}data is larger than {limit} bytes")]
    EventTooLarge { at: String, limit: usize },
    #[error(
        "unsupported content type {0:?}: use application/json or application/x-www-form-urlencoded"
    )]
    UnsupportedMediaType(String),
    #[error("request body was not received within {0:?}")]
    RequestTimeout(Duration),
    #[error("origin {0:?} is not allowed")]
    OriginNotAllowed(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("publishing too fast: retry in {}s", retry_after.as_secs().max(1))]
    RateLimited { retry_after: Duration },
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::PayloadTooLarge { .. } | ApiError::EventTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::OriginNotAllowed(_) => StatusCode::FORBIDDEN,
            ApiError::Auth(err) if err.is_forbidden() => StatusCode::FORBIDDEN,
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Publish(PublishError::Closed(_)) => StatusCode::CONFLICT,
            ApiError::Publish(
                PublishError::RegistryFull(_)
                | PublishError::ShuttingDown
                | PublishError::Broker(_),
            )
            | ApiError::Subscribe(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The answer: status, `{"error": ...}` body, and `Allow` or `Retry-After` where they apply.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        let mut response = json_response(status, &serde_json::json!({ "error": self.to_string() }));
        let headers = response.headers_mut();
        if let ApiError::MethodNotAllowed { allow, .. } = &self {
            headers.insert(ALLOW, HeaderValue::from_static(allow));
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if let ApiError::RateLimited { retry_after } = &self {
            let seconds = retry_after.as_secs_f64().ceil().max(1.0) as u64;
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                headers.insert(RETRY_AFTER, value);
            }
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// A JSON answer, serialized straight from the answer's type (no `Value` tree per publish).
pub fn json_response<T: serde::Serialize + ?Sized>(
    status: StatusCode,
    body: &T,
) -> Response<Full<Bytes>> {
    // Answers are strings, numbers and string-keyed maps, which always serialize.
    let json = serde_json::to_vec(body).expect("an answer serializes to JSON");
    let mut response = Response::new(Full::new(Bytes::from(json)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
