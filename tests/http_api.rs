//! The HTTP API over real sockets: publish styles, every 4xx/503, connection limits, header
//! read timeout, h2c, ops endpoints and CORS.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{assert_error, assert_quiet, h2_connect, seq, H2};
use common::{
    metric, parse_metric, publish, publish_raw, raw_connect, request, wait_until, Hub, Response,
    SseClient, SseEvent,
};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bound on every single wait in this file.
const T: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// Helpers

fn ev(id: &str, event: &str, data: &str) -> SseEvent {
    SseEvent {
        id: id.into(),
        event: event.into(),
        data: data.into(),
    }
}

/// Subscribes to `/events/<path>` and checks the stream opened.
async fn subscribe(addr: SocketAddr, path: &str) -> SseClient {
    let client = SseClient::connect(addr, &format!("/events/{path}"), &[]).await;
    assert_eq!(client.status, 200, "GET /events/{path}");
    client
}

async fn next(client: &mut SseClient) -> SseEvent {
    client
        .next_event(T)
        .await
        .expect("stream ended instead of delivering an event")
}

async fn post(addr: SocketAddr, path: &str, content_type: &str, body: &[u8]) -> Response {
    request(addr, "POST", path, &[("Content-Type", content_type)], body).await
}

/// `POST /publish` with a JSON body given as text (exact bytes, e.g. invalid JSON).
async fn post_json(addr: SocketAddr, body: &str) -> Response {
    post(addr, "/publish", "application/json", body.as_bytes()).await
}

/// A 200 answer's JSON body.
fn ok_json(response: &Response) -> Value {
    assert_eq!(response.status, 200, "body: {}", response.text());
    response.json()
}

/// The `id` of each receipt of a list answer, checking its channel.
fn receipt_ids(body: &Value, channels: &[&str]) -> Vec<String> {
    let list = body
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {body}"));
    let got: Vec<&str> = list
        .iter()
        .map(|r| r["channel"].as_str().unwrap())
        .collect();
    assert_eq!(got, channels, "receipt channels of {body}");
    list.iter()
        .map(|r| r["id"].as_str().expect("receipt id").to_string())
        .collect()
}

/// Proves a refused publish left `channel` untouched: its subscriber sees nothing, the
/// published counter did not move, and the next event on it is the channel's first.
async fn assert_nothing_published(
    addr: SocketAddr,
    client: &mut SseClient,
    channel: &str,
    published_before: f64,
) {
    assert_quiet(client, "no event expected here").await;
    assert_eq!(
        metric(addr, "ssehub_events_published_total").await,
        published_before
    );
    let marker = ok_json(&publish(addr, json!({"channel": channel, "data": "marker"})).await);
    let id = marker["id"].as_str().unwrap();
    assert_eq!(seq(id), 1, "a refused publish appended to {channel}");
    assert_eq!(next(client).await, ev(id, "message", "marker"));
}

fn has_header_containing(response: &Response, name: &str, needle: &str) -> bool {
    response
        .headers
        .iter()
        .filter(|(n, _)| n == name)
        .any(|(_, v)| v.to_ascii_lowercase().contains(needle))
}

async fn h2_request(
    mut h2: H2,
    addr: SocketAddr,
    method: &str,
    path: String,
    content_type: Option<&str>,
    body: Vec<u8>,
) -> hyper::Response<Incoming> {
    let mut builder = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    if let Some(content_type) = content_type {
        builder = builder.header("content-type", content_type);
    }
    let request = builder.body(Full::new(Bytes::from(body))).unwrap();
    tokio::time::timeout(T, async {
        h2.ready().await.expect("h2 connection usable");
        h2.send_request(request).await
    })
    .await
    .unwrap_or_else(|_| panic!("h2 {method} {path}: no response within {T:?}"))
    .unwrap_or_else(|e| panic!("h2 {method} {path}: {e}"))
}

async fn h2_text(response: hyper::Response<Incoming>) -> String {
    let body = tokio::time::timeout(T, response.into_body().collect())
        .await
        .expect("h2 body timed out")
        .expect("h2 body failed")
        .to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

/// Reads DATA frames of an h2 stream until the text read contains `needle`.
async fn h2_read_until(body: &mut Incoming, needle: &str) -> String {
    let mut text = String::new();
    let read = tokio::time::timeout(T, async {
        while !text.contains(needle) {
            let frame = body
                .frame()
                .await
                .expect("h2 stream ended")
                .expect("h2 stream failed");
            if let Ok(data) = frame.into_data() {
                text.push_str(&String::from_utf8_lossy(&data));
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "h2 stream: no {needle:?} within {T:?}; got {text:?}"
    );
    text
}

/// Reads whatever a raw connection answers until EOF (or `T`); a reset counts as EOF.
async fn read_to_close(stream: &mut tokio::net::TcpStream) -> Option<String> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(T, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    closed
        .ok()
        .map(|()| String::from_utf8_lossy(&got).into_owned())
}

// ---------------------------------------------------------------------------------------------
// 1. Publish success paths

#[tokio::test]
async fn json_single_answers_id_and_channel() {
    let hub = Hub::start().await;
    let mut sub = subscribe(hub.addr, "news").await;
    let response = publish(
        hub.addr,
        json!({"channel": "news", "event": "update", "data": "hello"}),
    )
    .await;
    let body = ok_json(&response);
    assert_eq!(body["channel"], "news");
    let id = body["id"].as_str().expect("id is a string");
    assert_eq!(seq(id), 1);
    assert_eq!(next(&mut sub).await, ev(id, "update", "hello"));
    hub.stop().await;
}

#[tokio::test]
async fn json_channels_answers_one_id_per_channel() {
    let hub = Hub::start().await;
    let mut a = subscribe(hub.addr, "a").await;
    let mut b = subscribe(hub.addr, "b").await;
    let body = ok_json(&publish(hub.addr, json!({"channels": ["a", "b"], "data": [1, 2]})).await);
    let ids = receipt_ids(&body, &["a", "b"]);
    assert_eq!(next(&mut a).await, ev(&ids[0], "message", "[1,2]"));
    assert_eq!(next(&mut b).await, ev(&ids[1], "message", "[1,2]"));
    hub.stop().await;
}

#[tokio::test]
async fn json_non_string_data_arrives_compact() {
    let hub = Hub::start().await;
    let mut sub = subscribe(hub.addr, "j").await;
    let cases = [
        (r#"{"channel":"j","data": 42}"#, "42"),
        (r#"{"channel":"j","data": true}"#, "true"),
        (r#"{"channel":"j","data": null}"#, "null"),
        (r#"{"channel":"j","data": 1.5}"#, "1.5"),
        (
            r#"{"channel":"j","data": { "a" : 1 , "b" : [ 1 , "x" ] }}"#,
            r#"{"a":1,"b":[1,"x"]}"#,
        ),
        (
            r#"{"channel":"j","data": "  spaced \"text\" "}"#,
            r#"  spaced "text" "#,
        ),
        (r#"{"channel":"j","event":"empty"}"#, ""),
    ];
    for (body, _) in &cases {
        ok_json(&post_json(hub.addr, body).await);
    }
    for (body, data) in cases {
        let got = next(&mut sub).await;
        assert_eq!(got.data, data, "published {body}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn json_array_batch_keeps_order_and_per_channel_seqs() {
    let hub = Hub::start().await;
    let mut x = subscribe(hub.addr, "x").await;
    let mut y = subscribe(hub.addr, "y").await;
    let batch = json!([
        {"channel": "x", "data": "1"},
        {"channel": "y", "data": {"n": 2}},
        {"channel": "x", "event": "third", "data": "3"},
    ]);
    let ids = receipt_ids(&ok_json(&publish(hub.addr, batch).await), &["x", "y", "x"]);
    assert_eq!(ids.iter().map(|id| seq(id)).collect::<Vec<_>>(), [1, 1, 2]);
    assert_eq!(
        x.events(2, T).await,
        [ev(&ids[0], "message", "1"), ev(&ids[2], "third", "3")]
    );
    assert_eq!(next(&mut y).await, ev(&ids[1], "message", r#"{"n":2}"#));
    hub.stop().await;
}

#[tokio::test]
async fn json_events_object_batch_keeps_order() {
    let hub = Hub::start().await;
    let mut x = subscribe(hub.addr, "x").await;
    let mut y = subscribe(hub.addr, "y").await;
    let first = ok_json(&publish(hub.addr, json!({"channel": "x", "data": "0"})).await);
    assert_eq!(next(&mut x).await.data, "0");
    let batch = json!({"events": [
        {"channel": "y", "data": "a"},
        {"channel": "x", "data": "b"},
        {"channel": "x", "data": "c"},
    ]});
    let ids = receipt_ids(&ok_json(&publish(hub.addr, batch).await), &["y", "x", "x"]);
    assert_eq!(ids.iter().map(|id| seq(id)).collect::<Vec<_>>(), [1, 2, 3]);
    let x_epoch = first["id"].as_str().unwrap().rsplit_once('-').unwrap().0;
    assert!(ids[1].starts_with(&format!("{x_epoch}-")), "same epoch");
    assert_eq!(
        x.events(2, T).await,
        [ev(&ids[1], "message", "b"), ev(&ids[2], "message", "c")]
    );
    assert_eq!(next(&mut y).await, ev(&ids[0], "message", "a"));
    hub.stop().await;
}

#[tokio::test]
async fn form_encoded_single_and_repeated_channel() {
    let hub = Hub::start().await;
    let mut f1 = subscribe(hub.addr, "f1").await;
    let mut f2 = subscribe(hub.addr, "f2").await;
    let form = "application/x-www-form-urlencoded";

    let single = post(
        hub.addr,
        "/publish",
        form,
        b"channel=f1&data=hello+w%C3%B6rld&event=ev",
    )
    .await;
    let body = ok_json(&single);
    assert_eq!(body["channel"], "f1");
    let id = body["id"].as_str().unwrap();
    assert_eq!(next(&mut f1).await, ev(id, "ev", "hello wörld"));

    let many = post(
        hub.addr,
        "/publish",
        form,
        b"channel=f1&channel=f2&data=both",
    )
    .await;
    let ids = receipt_ids(&ok_json(&many), &["f1", "f2"]);
    assert_eq!(next(&mut f1).await, ev(&ids[0], "message", "both"));
    assert_eq!(next(&mut f2).await, ev(&ids[1], "message", "both"));
    hub.stop().await;
}

#[tokio::test]
async fn raw_body_publish_with_any_content_type_and_event_query() {
    let hub = Hub::start().await;
    let mut sub = subscribe(hub.addr, "raw").await;

    // What `curl -d hi` sends.
    let curl = post(
        hub.addr,
        "/publish/raw",
        "application/x-www-form-urlencoded",
        b"hi",
    )
    .await;
    let body = ok_json(&curl);
    assert_eq!(body["channel"], "raw");
    assert_eq!(
        next(&mut sub).await,
        ev(body["id"].as_str().unwrap(), "message", "hi")
    );

    let plain = ok_json(&publish_raw(hub.addr, "raw", "line1\nline2\r\nline3").await);
    assert_eq!(
        next(&mut sub).await,
        ev(
            plain["id"].as_str().unwrap(),
            "message",
            "line1\nline2\nline3"
        )
    );

    let named = ok_json(&post(hub.addr, "/publish/raw?event=status", "text/plain", b"up").await);
    assert_eq!(
        next(&mut sub).await,
        ev(named["id"].as_str().unwrap(), "status", "up")
    );
    hub.stop().await;
}

#[tokio::test]
async fn percent_encoded_channel_path_is_the_decoded_channel() {
    let hub = Hub::start().await;
    let mut encoded = subscribe(hub.addr, "a%2Fb").await;
    let mut plain = subscribe(hub.addr, "a/b").await;

    let body = ok_json(&publish_raw(hub.addr, "a%2Fb", "via path").await);
    assert_eq!(body["channel"], "a/b");
    let id = body["id"].as_str().unwrap();
    assert_eq!(next(&mut encoded).await, ev(id, "message", "via path"));
    assert_eq!(next(&mut plain).await, ev(id, "message", "via path"));

    let body = ok_json(&publish(hub.addr, json!({"channel": "a/b", "data": "via json"})).await);
    let id = body["id"].as_str().unwrap();
    assert_eq!(seq(id), 2);
    assert_eq!(next(&mut encoded).await, ev(id, "message", "via json"));
    assert_eq!(next(&mut plain).await, ev(id, "message", "via json"));
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Client errors (4xx), each with a JSON {"error": "..."} body

#[tokio::test]
async fn bad_json_and_bad_shapes_are_400() {
    let hub = Hub::start().await;
    for body in [
        r#"{"channel": "c", "data": "#,
        "not json",
        r#""just a string""#,
        r#"{"channel": "c", "retry": "soon"}"#,
        r#"{"events": {"channel": "c"}}"#,
    ] {
        assert_error(&post_json(hub.addr, body).await, 400, body);
    }
    hub.stop().await;
}

#[tokio::test]
async fn missing_channel_both_channel_kinds_and_unknown_fields_are_400() {
    let hub = Hub::start().await;
    let form = "application/x-www-form-urlencoded";
    let missing = publish(hub.addr, json!({"data": "x"})).await;
    assert_error(&missing, 400, "json without channel");
    assert!(
        missing.json()["error"]
            .as_str()
            .unwrap()
            .contains("missing channel"),
        "{}",
        missing.text()
    );
    assert_error(
        &post(hub.addr, "/publish", form, b"data=x").await,
        400,
        "form without channel",
    );
    assert_error(
        &publish(
            hub.addr,
            json!({"channel": "a", "channels": ["b"], "data": "x"}),
        )
        .await,
        400,
        "channel and channels",
    );
    assert_error(
        &publish(
            hub.addr,
            json!({"channel": "a", "data": "x", "colour": "red"}),
        )
        .await,
        400,
        "unknown JSON field",
    );
    assert_error(
        &post(hub.addr, "/publish", form, b"channel=a&colour=red").await,
        400,
        "unknown form field",
    );
    assert_error(
        &post(hub.addr, "/publish/a?colour=red", "text/plain", b"x").await,
        400,
        "unknown query key on raw publish",
    );
    assert_eq!(metric(hub.addr, "ssehub_events_published_total").await, 0.0);
    hub.stop().await;
}

#[tokio::test]
async fn bad_channel_names_are_400() {
    let hub = Hub::start().await;
    let long = "x".repeat(129);
    for name in ["a b", "a/../b", "..", "a\0b", "a//b", long.as_str()] {
        let response = publish(hub.addr, json!({"channel": name, "data": "x"})).await;
        assert_error(&response, 400, &format!("JSON channel {name:?}"));
    }
    for path in [
        "a%20b",
        "a/../b",
        "a/%2E%2E/b",
        "a%00b",
        "%FF",
        long.as_str(),
    ] {
        let response = publish_raw(hub.addr, path, "x").await;
        assert_error(&response, 400, &format!("POST /publish/{path}"));
        let response = request(hub.addr, "GET", &format!("/events/{path}"), &[], b"").await;
        assert_error(&response, 400, &format!("GET /events/{path}"));
    }
    // 128 bytes is still fine.
    ok_json(&publish_raw(hub.addr, &"x".repeat(128), "x").await);
    hub.stop().await;
}

#[tokio::test]
async fn bad_event_names_are_400() {
    let hub = Hub::start().await;
    let long = "e".repeat(65);
    for name in ["a\nb", "a\rb", "a\0b", "gap", "", long.as_str()] {
        let response = publish(
            hub.addr,
            json!({"channel": "c", "event": name, "data": "x"}),
        )
        .await;
        assert_error(&response, 400, &format!("event {name:?}"));
    }
    for query in [
        "event=gap",
        "event=a%0Ab",
        "event=a%0Db",
        &format!("event={long}"),
    ] {
        let response = post(hub.addr, &format!("/publish/c?{query}"), "text/plain", b"x").await;
        assert_error(&response, 400, query);
    }
    // 64 bytes is still fine.
    let name = "e".repeat(64);
    ok_json(
        &publish(
            hub.addr,
            json!({"channel": "c", "event": name, "data": "x"}),
        )
        .await,
    );
    hub.stop().await;
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413() {
    let hub = Hub::start_with(|c| c.max_body_bytes = 1024).await;
    let data = "x".repeat(2000);
    let response = publish(hub.addr, json!({"channel": "c", "data": data})).await;
    assert_error(&response, 413, "JSON body over max_body_bytes");
    assert_error(
        &publish_raw(hub.addr, "c", &data).await,
        413,
        "raw body over max_body_bytes",
    );

    // Chunked, so no Content-Length announces the size.
    let mut stream = raw_connect(hub.addr).await;
    let body = serde_json::to_string(&json!({"channel": "c", "data": data})).unwrap();
    let wire = format!(
        "POST /publish HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        hub.addr,
        body.len()
    );
    stream.write_all(wire.as_bytes()).await.unwrap();
    let answer = read_to_close(&mut stream).await.expect("answer within 5s");
    assert!(answer.starts_with("HTTP/1.1 413"), "chunked: {answer:?}");
    assert!(answer.contains("\"error\""), "chunked: {answer:?}");

    assert_eq!(metric(hub.addr, "ssehub_events_published_total").await, 0.0);
    hub.stop().await;
}

#[tokio::test]
async fn event_data_over_max_event_bytes_is_413() {
    let hub = Hub::start_with(|c| c.max_event_bytes = 100).await;
    let big = "x".repeat(101);
    assert_error(
        &publish(hub.addr, json!({"channel": "c", "data": big})).await,
        413,
        "JSON data over max_event_bytes",
    );
    assert_error(
        &publish_raw(hub.addr, "c", &big).await,
        413,
        "raw data over max_event_bytes",
    );
    let batch = json!([{"channel": "c", "data": "ok"}, {"channel": "c", "data": big}]);
    assert_error(&publish(hub.addr, batch).await, 413, "batch item too big");
    ok_json(&publish(hub.addr, json!({"channel": "c", "data": "x".repeat(100)})).await);
    assert_eq!(metric(hub.addr, "ssehub_events_published_total").await, 1.0);
    hub.stop().await;
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let hub = Hub::start().await;
    let body = br#"{"channel":"c","data":"x"}"#;
    for content_type in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
    ] {
        let response = post(hub.addr, "/publish", content_type, body).await;
        assert_error(&response, 415, content_type);
    }
    let response = request(hub.addr, "POST", "/publish", &[], body).await;
    assert_error(&response, 415, "no content type");
    // Parameters and case do not matter.
    let response = post(
        hub.addr,
        "/publish",
        "Application/JSON; charset=utf-8",
        body,
    )
    .await;
    ok_json(&response);
    hub.stop().await;
}

#[tokio::test]
async fn unknown_route_is_404() {
    let hub = Hub::start_with(|c| c.demo = false).await;
    for path in ["/", "/nope", "/publishx", "/eventsx/a", "/metrics/x"] {
        assert_error(&request(hub.addr, "GET", path, &[], b"").await, 404, path);
    }
    assert_error(
        &post(hub.addr, "/nope", "application/json", b"{}").await,
        404,
        "POST /nope",
    );
    hub.stop().await;
}

#[tokio::test]
async fn wrong_method_is_405_with_allow() {
    let hub = Hub::start().await;
    let cases = [
        ("GET", "/publish", "POST, OPTIONS"),
        ("PUT", "/publish/c", "POST, OPTIONS"),
        ("POST", "/events/c", "GET, OPTIONS"),
        ("DELETE", "/events", "GET, OPTIONS"),
        ("POST", "/metrics", "GET"),
        ("POST", "/healthz", "GET"),
        ("PUT", "/readyz", "GET"),
    ];
    for (method, path, allow) in cases {
        let response = request(hub.addr, method, path, &[], b"").await;
        let what = format!("{method} {path}");
        assert_error(&response, 405, &what);
        assert_eq!(response.header("allow"), Some(allow), "{what}");
    }
    hub.stop().await;
}

#[tokio::test]
async fn batch_over_max_batch_is_400_and_publishes_nothing() {
    let hub = Hub::start_with(|c| c.max_batch = 3).await;
    let mut sub = subscribe(hub.addr, "b").await;
    let four: Vec<Value> = (0..4).map(|i| json!({"channel": "b", "data": i})).collect();
    assert_error(&publish(hub.addr, json!(four)).await, 400, "4 events");
    let channels = json!({"channels": ["b", "c", "d", "e"], "data": "x"});
    assert_error(&publish(hub.addr, channels).await, 400, "4 channels");
    let form = b"channel=b&channel=c&channel=d&channel=e&data=x";
    assert_error(
        &post(
            hub.addr,
            "/publish",
            "application/x-www-form-urlencoded",
            form,
        )
        .await,
        400,
        "4 form channels",
    );
    assert_nothing_published(hub.addr, &mut sub, "b", 0.0).await;
    // Exactly max_batch is fine.
    let three: Vec<Value> = (0..3).map(|i| json!({"channel": "b", "data": i})).collect();
    receipt_ids(
        &ok_json(&publish(hub.addr, json!(three)).await),
        &["b", "b", "b"],
    );
    hub.stop().await;
}

#[tokio::test]
async fn batch_with_invalid_last_item_publishes_nothing() {
    let hub = Hub::start().await;
    let mut sub = subscribe(hub.addr, "atom").await;
    let before = metric(hub.addr, "ssehub_events_published_total").await;
    let last_invalid = [
        json!({"channel": "atom", "event": "gap", "data": "3"}),
        json!({"channel": "bad name", "data": "3"}),
        json!({"channel": "atom", "data": "3", "extra": 1}),
        json!({"data": "3"}),
    ];
    for last in last_invalid {
        let batch = json!([
            {"channel": "atom", "data": "1"},
            {"channel": "atom", "data": "2"},
            last,
        ]);
        assert_error(
            &publish(hub.addr, batch.clone()).await,
            400,
            &batch.to_string(),
        );
        let wrapped = json!({"events": batch});
        assert_error(&publish(hub.addr, wrapped).await, 400, "events batch");
    }
    assert_nothing_published(hub.addr, &mut sub, "atom", before).await;
    hub.stop().await;
}

#[tokio::test]
async fn publish_after_close_is_409() {
    let hub = Hub::start().await;
    let mut sub = subscribe(hub.addr, "done").await;
    let body = ok_json(
        &publish(
            hub.addr,
            json!({"channel": "done", "event": "end", "data": "bye", "close": true}),
        )
        .await,
    );
    assert_eq!(
        next(&mut sub).await,
        ev(body["id"].as_str().unwrap(), "end", "bye")
    );
    sub.expect_end(T).await;

    let again = publish(hub.addr, json!({"channel": "done", "data": "more"})).await;
    assert_error(&again, 409, "JSON publish after close");
    assert_error(
        &publish_raw(hub.addr, "done", "more").await,
        409,
        "raw publish after close",
    );
    let before = metric(hub.addr, "ssehub_events_published_total").await;
    assert_eq!(before, 1.0);

    // In one batch: an event after a close on the same channel refuses the whole batch.
    let mut fresh = subscribe(hub.addr, "fresh").await;
    let batch = json!([
        {"channel": "fresh", "data": "last", "close": true},
        {"channel": "fresh", "data": "after"},
    ]);
    assert_error(&publish(hub.addr, batch).await, 409, "close then event");
    assert_nothing_published(hub.addr, &mut fresh, "fresh", before).await;
    hub.stop().await;
}

#[tokio::test]
async fn invalid_utf8_raw_body_is_400() {
    let hub = Hub::start().await;
    let mut sub = subscribe(hub.addr, "bin").await;
    let response = post(hub.addr, "/publish/bin", "text/plain", b"ok \xff\xfe").await;
    assert_error(&response, 400, "invalid UTF-8 body");
    assert_nothing_published(hub.addr, &mut sub, "bin", 0.0).await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. 503: channel and connection limits

#[tokio::test]
async fn over_max_channels_is_503_with_retry_after() {
    let hub = Hub::start_with(|c| c.max_channels = 2).await;
    let mut c1 = subscribe(hub.addr, "c1").await;
    ok_json(&publish_raw(hub.addr, "c2", "x").await);

    let response = publish_raw(hub.addr, "c3", "x").await;
    assert_error(&response, 503, "publish to a third channel");
    assert_eq!(response.header("retry-after"), Some("1"));

    let response = request(hub.addr, "GET", "/events/c3", &[], b"").await;
    assert_error(&response, 503, "subscribe to a third channel");
    assert_eq!(response.header("retry-after"), Some("1"));

    // A batch touching a new channel last is refused whole.
    let before = metric(hub.addr, "ssehub_events_published_total").await;
    let batch = json!([{"channel": "c1", "data": "x"}, {"channel": "c4", "data": "y"}]);
    assert_error(
        &publish(hub.addr, batch).await,
        503,
        "batch with a new channel",
    );
    assert_quiet(&mut c1, "no event expected here").await;
    assert_eq!(
        metric(hub.addr, "ssehub_events_published_total").await,
        before
    );
    // Existing channels still work.
    ok_json(&publish_raw(hub.addr, "c1", "still").await);
    assert_eq!(next(&mut c1).await.data, "still");
    hub.stop().await;
}

/// `ssehub_connections` read over the long-lived h2 connection `monitor`.
async fn connections_gauge(monitor: &H2, addr: SocketAddr) -> f64 {
    let response = h2_request(
        monitor.clone(),
        addr,
        "GET",
        "/metrics".into(),
        None,
        vec![],
    )
    .await;
    assert_eq!(response.status(), 200);
    parse_metric(&h2_text(response).await, "ssehub_connections").expect("connections gauge")
}

#[tokio::test]
async fn over_max_connections_is_503_until_one_closes() {
    let hub = Hub::start_with(|c| c.max_connections = 3).await;
    // Three connections that stay open: two event streams and one h2 connection used to
    // read the metrics without opening more.
    let first = subscribe(hub.addr, "one").await;
    let _second = subscribe(hub.addr, "two").await;
    let monitor = h2_connect(hub.addr).await;
    wait_until(T, "ssehub_connections is 3", || {
        let monitor = monitor.clone();
        async move { connections_gauge(&monitor, hub.addr).await == 3.0 }
    })
    .await;

    let refused = request(hub.addr, "GET", "/healthz", &[], b"").await;
    assert_error(&refused, 503, "fourth connection");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let refused_sse = SseClient::connect(hub.addr, "/events/three", &[]).await;
    assert_eq!(refused_sse.status, 503, "fourth connection as a stream");
    drop(refused_sse);

    drop(first);
    wait_until(T, "ssehub_connections drops to 2", || {
        let monitor = monitor.clone();
        async move { connections_gauge(&monitor, hub.addr).await == 2.0 }
    })
    .await;
    let response = request(hub.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(
        response.status,
        200,
        "after one closed: {}",
        response.text()
    );
    let response = h2_request(monitor, hub.addr, "GET", "/metrics".into(), None, vec![]).await;
    let text = h2_text(response).await;
    assert_eq!(
        parse_metric(&text, "ssehub_connections_rejected_total"),
        Some(2.0)
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Header read timeout

#[tokio::test]
async fn partial_request_line_is_closed_after_header_read_timeout() {
    let hub = Hub::start_with(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut stream = raw_connect(hub.addr).await;
    stream.write_all(b"GET /heal").await.unwrap();
    let answer = read_to_close(&mut stream)
        .await
        .expect("connection with a partial request line still open after 5s");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer {answer:?}"
    );
    // The hub still serves.
    assert_eq!(
        request(hub.addr, "GET", "/healthz", &[], b"").await.status,
        200
    );
    hub.stop().await;
}

#[tokio::test]
async fn silent_connection_is_closed_after_header_read_timeout() {
    let hub = Hub::start_with(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut stream = raw_connect(hub.addr).await;
    let answer = read_to_close(&mut stream)
        .await
        .expect("connection that sent nothing still open after 5s");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "unexpected answer {answer:?}"
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. HTTP/2 prior knowledge (h2c) on the same port

#[tokio::test]
async fn h2c_publish_and_subscribe() {
    let hub = Hub::start().await;
    let h2 = h2_connect(hub.addr).await;
    let stream = h2_request(
        h2.clone(),
        hub.addr,
        "GET",
        "/events/h2".into(),
        None,
        vec![],
    )
    .await;
    assert_eq!(stream.status(), 200);
    assert_eq!(
        stream.headers().get("content-type").unwrap(),
        "text/event-stream"
    );
    let mut body = stream.into_body();
    h2_read_until(&mut body, "retry: ").await;

    let published = h2_request(
        h2.clone(),
        hub.addr,
        "POST",
        "/publish".into(),
        Some("application/json"),
        br#"{"channel":"h2","event":"hello","data":"over h2"}"#.to_vec(),
    )
    .await;
    assert_eq!(published.status(), 200);
    let receipt: Value = serde_json::from_str(&h2_text(published).await).unwrap();
    assert_eq!(receipt["channel"], "h2");
    let id = receipt["id"].as_str().unwrap();

    let text = h2_read_until(&mut body, "data: over h2\n").await;
    assert!(
        text.contains(&format!("id: {id}\nevent: hello\ndata: over h2\n\n")),
        "{text:?}"
    );
    hub.stop().await;
}

#[tokio::test]
async fn h2c_twenty_concurrent_streams_on_one_connection() {
    const N: usize = 20;
    let hub = Hub::start().await;
    let h2 = h2_connect(hub.addr).await;
    let opening: Vec<_> = (0..N)
        .map(|i| {
            let path = format!("/events/s{i}");
            tokio::spawn(h2_request(h2.clone(), hub.addr, "GET", path, None, vec![]))
        })
        .collect();
    let mut bodies = Vec::new();
    for (i, opened) in opening.into_iter().enumerate() {
        let response = opened.await.expect("stream task");
        assert_eq!(response.status(), 200, "stream {i}");
        bodies.push(response.into_body());
    }
    assert_eq!(metric(hub.addr, "ssehub_subscribers").await, N as f64);

    for i in 0..N {
        let path = format!("/publish/s{i}");
        let data = format!("event-{i}").into_bytes();
        let response = h2_request(h2.clone(), hub.addr, "POST", path, Some("text/plain"), data);
        assert_eq!(response.await.status(), 200, "publish {i}");
    }
    for (i, body) in bodies.iter_mut().enumerate() {
        let text = h2_read_until(body, &format!("data: event-{i}\n")).await;
        assert_eq!(text.matches("data: ").count(), 1, "stream {i}: {text:?}");
    }
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. Ops endpoints and metrics

#[tokio::test]
async fn healthz_and_readyz_answer_json() {
    let hub = Hub::start().await;
    let health = request(hub.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(ok_json(&health), json!({"status": "ok"}));
    assert_eq!(health.header("content-type"), Some("application/json"));
    let ready = request(hub.addr, "GET", "/readyz", &[], b"").await;
    assert_eq!(ok_json(&ready), json!({"status": "ready"}));
    hub.stop().await;
}

#[tokio::test]
async fn metrics_expose_every_family() {
    let hub = Hub::start().await;
    // One request before, so the labelled request counter has a series.
    assert_eq!(
        request(hub.addr, "GET", "/healthz", &[], b"").await.status,
        200
    );
    let response = request(hub.addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200);
    assert!(
        response
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        response.header("content-type")
    );
    let text = response.text();
    for family in [
        "ssehub_connections",
        "ssehub_connections_rejected_total",
        "ssehub_subscribers",
        "ssehub_channels",
        "ssehub_events_published_total",
        "ssehub_events_delivered_total",
        "ssehub_frames_written_total",
        "ssehub_bytes_written_total",
        "ssehub_evictions_total",
        "ssehub_replays_total",
        "ssehub_events_replayed_total",
        "ssehub_gaps_total",
        "ssehub_publish_latency_seconds",
        "ssehub_http_requests_total",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "no family {family} in:\n{text}"
        );
    }
    assert!(text.contains("# TYPE ssehub_publish_latency_seconds histogram"));
    assert!(parse_metric(&text, r#"ssehub_evictions_total{reason="lagged"}"#).is_some());
    assert!(parse_metric(&text, r#"ssehub_evictions_total{reason="write_timeout"}"#).is_some());
    assert_eq!(
        parse_metric(
            &text,
            r#"ssehub_http_requests_total{route="healthz",status="200"}"#
        ),
        Some(1.0)
    );
    hub.stop().await;
}

#[tokio::test]
async fn request_counter_and_publish_latency_move() {
    let hub = Hub::start().await;
    let not_found = r#"ssehub_http_requests_total{route="unknown",status="404"}"#;
    let latency = "ssehub_publish_latency_seconds_count";
    assert_eq!(metric(hub.addr, not_found).await, 0.0);
    assert_eq!(metric(hub.addr, latency).await, 0.0);

    assert_eq!(
        request(hub.addr, "GET", "/nowhere", &[], b"").await.status,
        404
    );
    assert_eq!(metric(hub.addr, not_found).await, 1.0);

    ok_json(&publish_raw(hub.addr, "lat", "x").await);
    assert_eq!(metric(hub.addr, latency).await, 1.0);
    let publishes = r#"ssehub_http_requests_total{route="publish",status="200"}"#;
    assert_eq!(metric(hub.addr, publishes).await, 1.0);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. CORS

const APP: &str = "https://app.example";

async fn publish_from(addr: SocketAddr, origin: &str) -> Response {
    request(
        addr,
        "POST",
        "/publish/c",
        &[("Origin", origin), ("Content-Type", "text/plain")],
        b"x",
    )
    .await
}

async fn preflight(
    addr: SocketAddr,
    path: &str,
    origin: &str,
    method: &str,
    headers: &str,
) -> Response {
    request(
        addr,
        "OPTIONS",
        path,
        &[
            ("Origin", origin),
            ("Access-Control-Request-Method", method),
            ("Access-Control-Request-Headers", headers),
        ],
        b"",
    )
    .await
}

#[tokio::test]
async fn cors_listed_origin_gets_credentials_and_vary() {
    let hub = Hub::start_with(|c| c.cors_origins = vec![APP.into()]).await;
    let response = publish_from(hub.addr, APP).await;
    ok_json(&response);
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert_eq!(
        response.header("access-control-allow-credentials"),
        Some("true")
    );
    assert!(
        has_header_containing(&response, "vary", "origin"),
        "{:?}",
        response.headers
    );

    // Errors carry the headers too, so the browser can read them.
    let refused = request(
        hub.addr,
        "POST",
        "/publish",
        &[("Origin", APP), ("Content-Type", "text/plain")],
        b"x",
    )
    .await;
    assert_error(&refused, 415, "cross-origin 415");
    assert_eq!(refused.header("access-control-allow-origin"), Some(APP));

    let other = publish_from(hub.addr, "https://evil.example").await;
    ok_json(&other);
    assert_eq!(other.header("access-control-allow-origin"), None);
    assert_eq!(other.header("access-control-allow-credentials"), None);
    hub.stop().await;
}

#[tokio::test]
async fn cors_preflight_allows_listed_origin_only() {
    let hub = Hub::start_with(|c| c.cors_origins = vec![APP.into()]).await;
    let response = preflight(hub.addr, "/publish", APP, "POST", "content-type").await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert_eq!(response.header("access-control-allow-origin"), Some(APP));
    assert!(has_header_containing(
        &response,
        "access-control-allow-methods",
        "post"
    ));
    assert!(has_header_containing(
        &response,
        "access-control-allow-headers",
        "content-type"
    ));
    assert_eq!(response.header("access-control-max-age"), Some("600"));

    let response = preflight(hub.addr, "/events/c", APP, "GET", "last-event-id").await;
    assert_eq!(response.status, 204, "{}", response.text());
    assert!(has_header_containing(
        &response,
        "access-control-allow-methods",
        "get"
    ));
    assert!(has_header_containing(
        &response,
        "access-control-allow-headers",
        "last-event-id"
    ));

    let response = preflight(
        hub.addr,
        "/publish",
        "https://evil.example",
        "POST",
        "content-type",
    )
    .await;
    assert_error(&response, 403, "preflight from an unlisted origin");
    assert_eq!(response.header("access-control-allow-origin"), None);
    hub.stop().await;
}

#[tokio::test]
async fn cors_wildcard_never_allows_credentials() {
    let hub = Hub::start_with(|c| c.cors_origins = vec!["*".into()]).await;
    for origin in [APP, "https://any.example"] {
        let response = publish_from(hub.addr, origin).await;
        ok_json(&response);
        assert_eq!(response.header("access-control-allow-origin"), Some("*"));
        assert_eq!(response.header("access-control-allow-credentials"), None);

        let response = preflight(hub.addr, "/publish", origin, "POST", "content-type").await;
        assert_eq!(response.status, 204, "{}", response.text());
        assert_eq!(response.header("access-control-allow-origin"), Some("*"));
        assert_eq!(response.header("access-control-allow-credentials"), None);
    }
    hub.stop().await;
}

#[tokio::test]
async fn cors_headers_on_event_stream() {
    let hub = Hub::start_with(|c| c.cors_origins = vec![APP.into()]).await;
    let mut sub = SseClient::connect(hub.addr, "/events/c", &[("Origin", APP)]).await;
    assert_eq!(sub.status, 200);
    assert_eq!(sub.header("access-control-allow-origin"), Some(APP));
    assert_eq!(sub.header("access-control-allow-credentials"), Some("true"));
    ok_json(&publish_raw(hub.addr, "c", "cross").await);
    assert_eq!(next(&mut sub).await.data, "cross");

    let other =
        SseClient::connect(hub.addr, "/events/c", &[("Origin", "https://evil.example")]).await;
    assert_eq!(other.status, 200);
    assert_eq!(other.header("access-control-allow-origin"), None);
    hub.stop().await;
}
