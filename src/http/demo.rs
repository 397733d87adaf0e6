//! The demo page at `/`: one self-contained HTML file to subscribe, publish and watch
//! reconnects from a browser (off with `--no-demo`).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{
    HeaderValue, CACHE_CONTROL, CONTENT_SECURITY_POLICY, CONTENT_TYPE, X_CONTENT_TYPE_OPTIONS,
};
use hyper::Response;

const PAGE: &str = include_str!("demo.html");

/// The page may run only its own inline script and style (by SHA-256 of their text) and talk
/// only to this origin. Editing either block changes its hash: tests/browser.rs checks these
/// against the page and prints the new value.
const POLICY: &str = "default-src 'none'; \
    script-src 'sha256-a2d5cXyffaiTAv1RFc9uqHfsDA9XTVePAPci87kKV3U='; \
    style-src 'sha256-dAXHMWbBNN5Wkuut0xmM2KWf7EGcqXG5WCKuNiWZ55Y='; \
    connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The page, served from the binary without copying.
pub fn page() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(CONTENT_SECURITY_POLICY, HeaderValue::from_static(POLICY));
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}
