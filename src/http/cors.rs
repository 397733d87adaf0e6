//! CORS for browsers on other origins: exact allowed origins may send credentials; `*` allows
//! any origin but never with credentials.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ORIGIN, VARY,
};
use hyper::{Request, Response, StatusCode};

use crate::error::ApiError;

/// Request headers a cross-origin client may send.
const ALLOWED_HEADERS: &str = "content-type, authorization, last-event-id";
const ALLOWED_HEADER_NAMES: [&str; 3] = ["content-type", "authorization", "last-event-id"];

/// The configured CORS policy.
#[derive(Debug, Clone, Default)]
pub struct Cors {
    origins: Vec<String>,
    any: bool,
}

enum Grant {
    /// Echo the origin and allow credentials.
    Listed(HeaderValue),
    /// `*`, without credentials.
    Any,
}

impl Cors {
    pub fn new(origins: &[String]) -> Cors {
        Cors {
            any: origins.iter().any(|o| o == "*"),
            origins: origins
                .iter()
                .filter(|o| *o != "*")
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
        }
    }

    fn grant(&self, origin: &HeaderValue) -> Option<Grant> {
        let text = origin.to_str().ok()?;
        if self.origins.iter().any(|o| o == text) {
            Some(Grant::Listed(origin.clone()))
        } else if self.any {
            Some(Grant::Any)
        } else {
            None
        }
    }

    fn write(grant: Grant, headers: &mut HeaderMap) {
        match grant {
            Grant::Listed(origin) => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
                headers.insert(
                    ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            Grant::Any => {
                headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
            }
        }
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }

    /// Adds the CORS headers of an actual (non-preflight) response for `origin`.
    pub fn decorate(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        if let Some(grant) = origin.and_then(|o| self.grant(o)) {
            Self::write(grant, headers);
        }
    }

    /// Answers a preflight `OPTIONS` for a route allowing `methods`.
    pub fn preflight<B>(
        &self,
        request: &Request<B>,
        methods: &'static str,
    ) -> Result<Response<Full<Bytes>>, ApiError> {
        let Some(origin) = request.headers().get(ORIGIN) else {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::NO_CONTENT;
            response
                .headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(methods));
            return Ok(response);
        };
        let grant = self.grant(origin).ok_or_else(|| {
            ApiError::OriginNotAllowed(String::from_utf8_lossy(origin.as_bytes()).into_owned())
        })?;
        if let Some(asked) = request.headers().get(ACCESS_CONTROL_REQUEST_HEADERS) {
            let asked = asked.to_str().unwrap_or("");
            if let Some(bad) = asked.split(',').map(str::trim).find(|h| {
                !h.is_empty() && !ALLOWED_HEADER_NAMES.contains(&h.to_ascii_lowercase().as_str())
            }) {
                return Err(ApiError::BadRequest(format!(
                    "header {bad:?} is not allowed; allowed: {ALLOWED_HEADERS}"
                )));
            }
        }
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NO_CONTENT;
        let headers = response.headers_mut();
        Self::write(grant, headers);
        headers.insert(
            ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(methods),
        );
        headers.insert(
            ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static(ALLOWED_HEADERS),
        );
        headers.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        Ok(response)
    }
}
