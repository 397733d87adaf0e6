//! `rediss://`: nodes reach Redis over TLS, trusting the CA given by `--redis-ca-file`.

mod common;

use std::time::Duration;

use common::redis_server::RedisServer;
use common::{publish, Hub, SseClient};
use serde_json::json;

#[tokio::test]
async fn nodes_publish_and_deliver_through_redis_over_tls() {
    let redis = RedisServer::start_tls().await;
    assert!(redis.url().starts_with("rediss://"));
    let start = |ca: Option<std::path::PathBuf>| {
        let url = redis.url();
        Hub::start_with(move |c| {
            c.redis_url = Some(url);
            c.redis_ca_file = ca;
            c.redis_timeout = Duration::from_millis(500);
        })
    };
    let a = start(Some(redis.ca_file())).await;
    let b = start(Some(redis.ca_file())).await;
    let mut subscriber = SseClient::connect(b.addr, "/events/secure", &[]).await;
    assert_eq!(subscriber.status, 200);

    let answer = publish(a.addr, json!({"channel": "secure", "data": "over tls"})).await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    let id = answer.json()["id"].as_str().expect("an id").to_owned();
    let event = subscriber
        .next_event(Duration::from_secs(5))
        .await
        .expect("the event");
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), "over tls")
    );
    let stored: i64 = redis.cmd(&["EXISTS", "ssehub:{secure}:s"]).await;
    assert_eq!(stored, 1, "the stream is in the TLS Redis");

    // Without the CA the server's certificate is not trusted: nothing is published.
    let untrusting = start(None).await;
    let refused = publish(untrusting.addr, json!({"channel": "secure", "data": "no"})).await;
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(refused.json()["error"].is_string());
    let length: i64 = redis.cmd(&["XLEN", "ssehub:{secure}:s"]).await;
    assert_eq!(length, 1);

    drop(subscriber);
    untrusting.stop().await;
    b.stop().await;
    a.stop().await;
}
