//! Per-client limits: publish rate per token or IP (429 + Retry-After, nothing published) and
//! open connections per IP (429).

mod common;

use std::time::Duration;

use common::{metric, publish, request, wait_until, Hub, SseClient};
use serde_json::json;

const PUBLISHED: &str = "ssehub_events_published_total";

#[tokio::test]
async fn publishers_over_their_rate_get_429_and_publish_nothing() {
    let hub = Hub::start_with(|c| {
        c.publish_rate = 1;
        c.publish_burst = 3;
    })
    .await;
    for i in 0..3 {
        let ok = publish(hub.addr, json!({"channel": "r", "data": i})).await;
        assert_eq!(ok.status, 200, "within the burst: {}", ok.text());
    }
    let refused = publish(hub.addr, json!({"channel": "r", "data": "too many"})).await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert!(refused.json()["error"].is_string());
    let retry: u64 = refused
        .header("retry-after")
        .expect("Retry-After")
        .parse()
        .expect("seconds");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        metric(hub.addr, PUBLISHED).await,
        3.0,
        "the refused event was not published"
    );

    // A batch larger than the burst can never pass; a bearer token is its own client.
    let batch = json!([{"channel": "r", "data": 1}, {"channel": "r", "data": 2}, {"channel": "r", "data": 3}, {"channel": "r", "data": 4}]);
    let body = batch.to_string();
    let headers = [
        ("content-type", "application/json"),
        ("authorization", "Bearer someone-else"),
    ];
    let too_big = request(hub.addr, "POST", "/publish", &headers, body.as_bytes()).await;
    assert_eq!(too_big.status, 429, "{}", too_big.text());
    let small = r#"{"channel": "r", "data": "other client"}"#;
    let other = request(hub.addr, "POST", "/publish", &headers, small.as_bytes()).await;
    assert_eq!(
        other.status,
        200,
        "another client has its own bucket: {}",
        other.text()
    );

    // The bucket refills at the rate.
    wait_until(Duration::from_secs(5), "the bucket refilled", || async {
        publish(hub.addr, json!({"channel": "r", "data": "later"}))
            .await
            .status
            == 200
    })
    .await;
    hub.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_ip_limit_get_429() {
    let hub = Hub::start_with(|c| c.max_connections_per_ip = 2).await;
    let first = SseClient::connect(hub.addr, "/events/a", &[]).await;
    let second = SseClient::connect(hub.addr, "/events/b", &[]).await;
    assert_eq!((first.status, second.status), (200, 200));
    let refused = request(hub.addr, "GET", "/healthz", &[], b"").await;
    assert_eq!(refused.status, 429, "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(refused.json()["error"].is_string());
    drop(first);
    wait_until(Duration::from_secs(5), "a slot is free again", || async {
        request(hub.addr, "GET", "/healthz", &[], b"").await.status == 200
    })
    .await;
    drop(second);
    hub.stop().await;
}
