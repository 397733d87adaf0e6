mod common;

// Redis mode: several in-process hubs on one real `redis-server` act as one hub. Fan-out and
// resume across nodes, replay from the Redis stream, gaps, publish acknowledgement while Redis
// is down, pub/sub subscription lifecycle, key expiry, URL/password/db/prefix settings, and
// ordering under concurrent publishers.

use std::net::SocketAddr;
use std::time::Duration;

use common::redis_server::RedisServer;
use common::{
    metric, publish, publish_ok, request, seq, split_id, wait_until, Hub, Response, SseClient,
    SseEvent,
};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Bound on one step (events arriving, a hub becoming ready, ...).
const T: Duration = Duration::from_secs(10);
/// Unsubscribe delay of every hub in these tests.
const LINGER: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Starts a hub on `redis` (linger [`LINGER`], then `f`) and waits until it is ready.
async fn redis_hub(redis: &RedisServer, f: impl FnOnce(&mut ssehub::Config)) -> Hub {
    let url = redis.url();
    let hub = Hub::start_with(|c| {
        c.redis_url = Some(url);
        c.redis_linger = LINGER;
        f(c);
    })
    .await;
    wait_ready(hub.addr, true).await;
    hub
}

/// Status of `GET /readyz`.
async fn readyz(addr: SocketAddr) -> u16 {
    request(addr, "GET", "/readyz", &[], b"").await.status
}

/// Waits until `/readyz` answers 200 (`ready`) or 503 (`!ready`).
async fn wait_ready(addr: SocketAddr, ready: bool) {
    let want = if ready { 200 } else { 503 };
    wait_until(
        T,
        &format!("GET /readyz on {addr} is {want}"),
        move || async move { readyz(addr).await == want },
    )
    .await;
}

/// Opens `GET path` with `headers` and asserts a `200` event stream.
async fn subscribe(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
    let client = SseClient::connect(addr, path, headers).await;
    assert_eq!(client.status, 200, "GET {path} on {addr} with {headers:?}");
    client
}

/// `(id, data)` of each event, asserting they are plain (unnamed) events.
fn ids_and_data(events: &[SseEvent]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            assert_eq!(e.event, "message", "{e:?}");
            (e.id.clone(), e.data.clone())
        })
        .collect()
}

/// Reads the next `expected.len()` events and asserts they are exactly `expected` (id, data).
async fn expect_events(client: &mut SseClient, expected: &[(String, String)], what: &str) {
    let events = client.events(expected.len(), T).await;
    assert_eq!(ids_and_data(&events), expected, "{what}");
}

/// Reads one event and asserts it is a `gap` with `reason`; returns its JSON data and id.
async fn expect_gap(client: &mut SseClient, reason: &str) -> (Value, String) {
    let event = client
        .next_event(T)
        .await
        .unwrap_or_else(|| panic!("stream ended before the {reason} gap event"));
    assert_eq!(event.event, "gap", "expected a {reason} gap, got {event:?}");
    let data: Value = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("gap data is not JSON ({e}): {event:?}"));
    assert_eq!(data["reason"], reason, "gap {event:?}");
    (data, event.id)
}

/// `EXISTS key` on `redis` (db 0).
async fn exists(redis: &RedisServer, key: &str) -> i64 {
    redis.cmd::<i64>(&["EXISTS", key]).await
}

/// Pub/sub topics with at least one subscriber.
async fn pubsub_channels(redis: &RedisServer) -> Vec<String> {
    redis.cmd::<Vec<String>>(&["PUBSUB", "CHANNELS"]).await
}

/// Numbered `(receipt id, data)` pairs for publishes of `"{prefix}-{n}"`.
async fn publish_numbered(
    addr: SocketAddr,
    channel: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for n in numbers {
        let data = format!("{channel}-{n}");
        out.push((publish_ok(addr, channel, &data).await, data));
    }
    out
}

fn assert_json_error(response: &Response, what: &str) {
    let body = response.json();
    assert!(
        body["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{what}: expected a JSON error body, got {body}"
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Cross-node fan-out

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_node_delivers_every_event_with_the_same_ids() {
    let redis = RedisServer::start().await;
    let hubs = [
        redis_hub(&redis, |_| {}).await,
        redis_hub(&redis, |_| {}).await,
        redis_hub(&redis, |_| {}).await,
    ];
    let mut subscribers = Vec::new();
    for hub in &hubs {
        for _ in 0..2 {
            subscribers.push(subscribe(hub.addr, "/events/fan", &[]).await);
        }
    }

    let mut published = Vec::new();
    for i in 1..=30u64 {
        let hub = &hubs[(i % 3) as usize];
        let data = format!("fan-{i} via {}", hub.addr);
        published.push((publish_ok(hub.addr, "fan", &data).await, data));
    }
    let epoch = split_id(&published[0].0).0;
    for (n, (id, _)) in published.iter().enumerate() {
        assert_eq!(
            split_id(id),
            (epoch.clone(), n as u64 + 1),
            "receipts of the three nodes share one epoch and dense seqs: {published:?}"
        );
    }

    let mut sequences = Vec::new();
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let events = subscriber.events(30, T).await;
        let seqs: Vec<u64> = events.iter().map(|e| seq(&e.id)).collect();
        assert_eq!(
            seqs,
            (1..=30).collect::<Vec<_>>(),
            "subscriber {i} (on hub {}) seqs",
            i / 2
        );
        sequences.push(ids_and_data(&events));
    }
    for (i, sequence) in sequences.iter().enumerate() {
        assert_eq!(
            sequence,
            &published,
            "subscriber {i} (on hub {}) must see exactly the published (id, data) sequence",
            i / 2
        );
    }

    // Nothing extra was queued behind the 30: the next event each reads is the 31st.
    let last = publish_ok(hubs[0].addr, "fan", "fan-31").await;
    assert_eq!(seq(&last), 31);
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let next = subscriber.events(1, T).await;
        assert_eq!(
            ids_and_data(&next),
            vec![(last.clone(), "fan-31".to_string())],
            "subscriber {i}"
        );
    }

    // A multi-channel subscriber on node 0 reads channels published through nodes 1 and 2.
    let mut multi = subscribe(hubs[0].addr, "/events?channel=a&channel=b", &[]).await;
    let mut receipts_a = Vec::new();
    let mut receipts_b = Vec::new();
    for k in 1..=10 {
        receipts_a.push(publish_ok(hubs[1].addr, "a", &format!("a-{k}")).await);
        receipts_b.push(publish_ok(hubs[2].addr, "b", &format!("b-{k}")).await);
    }
    let events = multi.events(20, T).await;
    let (mut next_a, mut next_b) = (0usize, 0usize);
    for event in &events {
        assert_eq!(event.event, "message", "{event:?}");
        let positions: Vec<&str> = event.id.split('.').collect();
        assert_eq!(positions.len(), 2, "composite id of {event:?}");
        if event.data.starts_with("a-") {
            assert_eq!(
                event.data,
                format!("a-{}", next_a + 1),
                "a in order: {events:?}"
            );
            assert_eq!(positions[0], receipts_a[next_a], "a position of {event:?}");
            next_a += 1;
        } else {
            assert_eq!(
                event.data,
                format!("b-{}", next_b + 1),
                "b in order: {events:?}"
            );
            assert_eq!(positions[1], receipts_b[next_b], "b position of {event:?}");
            next_b += 1;
        }
    }
    assert_eq!((next_a, next_b), (10, 10), "{events:?}");
    assert_eq!(
        multi.last_event_id(),
        format!("{}.{}", receipts_a[9], receipts_b[9])
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Cross-node resume, replay from the Redis stream, gaps

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_on_another_node() {
    let redis = RedisServer::start().await;
    let a = redis_hub(&redis, |_| {}).await;
    let b = redis_hub(&redis, |_| {}).await;

    let mut first = subscribe(a.addr, "/events/resume", &[]).await;
    let published = publish_numbered(a.addr, "resume", 1..=40).await;
    let read = first.events(10, T).await;
    assert_eq!(ids_and_data(&read), &published[..10], "first 10 on A");
    let cursor = read[9].id.clone();
    drop(first);

    let mut resumed = subscribe(b.addr, "/events/resume", &[("Last-Event-ID", &cursor)]).await;
    expect_events(&mut resumed, &published[10..], "resume on B after event 10").await;
    let live = publish_numbered(a.addr, "resume", 41..=42).await;
    expect_events(&mut resumed, &live, "live events after the replay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_older_than_the_local_ring_comes_from_the_redis_stream() {
    let redis = RedisServer::start().await;
    let a = redis_hub(&redis, |c| c.history_size = 1000).await;
    let b = redis_hub(&redis, |c| c.history_size = 5).await;

    // B mirrors the channel live from the start, so its ring holds only the newest 5.
    let mut live_b = subscribe(b.addr, "/events/deep", &[]).await;
    let published = publish_numbered(a.addr, "deep", 1..=40).await;
    expect_events(&mut live_b, &published, "live subscriber on B").await;
    assert_eq!(
        redis.cmd::<i64>(&["XLEN", "ssehub:{deep}:s"]).await,
        40,
        "A's history_size bounds the stream"
    );

    let mut resumed = subscribe(
        b.addr,
        "/events/deep",
        &[("Last-Event-ID", published[9].0.as_str())],
    )
    .await;
    expect_events(&mut resumed, &published[10..], "resume on B after event 10").await;

    let mut earliest = subscribe(b.addr, "/events/deep?lastEventId=earliest", &[]).await;
    expect_events(&mut earliest, &published, "earliest on B").await;

    // Exactly those: the next event each reads is the next one published.
    let live = publish_numbered(a.addr, "deep", 41..=41).await;
    expect_events(&mut resumed, &live, "resumed, then live").await;
    expect_events(&mut earliest, &live, "earliest, then live").await;
    expect_events(&mut live_b, &live, "live on B").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gaps_across_nodes() {
    let redis = RedisServer::start().await;
    let a = redis_hub(&redis, |c| c.history_size = 5).await;
    let b = redis_hub(&redis, |c| c.history_size = 5).await;
    let published = publish_numbered(a.addr, "gapc", 1..=20).await;
    let retained = &published[15..];
    let epoch = split_id(&published[0].0).0;

    // Trimmed: the stream holds only 16..20.
    let mut trimmed = subscribe(
        b.addr,
        "/events/gapc",
        &[("Last-Event-ID", published[1].0.as_str())],
    )
    .await;
    let (data, id) = expect_gap(&mut trimmed, "trimmed").await;
    assert_eq!(data["channel"], "gapc", "{data}");
    assert_eq!(data["last_event_id"], published[1].0.as_str(), "{data}");
    assert_eq!(data["first_id"], published[15].0.as_str(), "{data}");
    assert_eq!(
        id, published[14].0,
        "gap id is the position before the history"
    );
    expect_events(&mut trimmed, retained, "after the trimmed gap").await;

    // Another epoch.
    let foreign_epoch = if epoch == "000000" {
        "000001"
    } else {
        "000000"
    };
    let foreign = format!("{foreign_epoch}-3");
    let mut other = subscribe(b.addr, "/events/gapc", &[("Last-Event-ID", &foreign)]).await;
    let (data, _) = expect_gap(&mut other, "epoch_changed").await;
    assert_eq!(data["last_event_id"], foreign.as_str(), "{data}");
    assert_eq!(data["first_id"], published[15].0.as_str(), "{data}");
    expect_events(&mut other, retained, "after the epoch_changed gap").await;

    // Unparseable.
    let mut garbage = subscribe(b.addr, "/events/gapc", &[("Last-Event-ID", "garbage")]).await;
    let (data, _) = expect_gap(&mut garbage, "invalid_cursor").await;
    assert_eq!(data["last_event_id"], Value::Null, "{data}");
    expect_events(&mut garbage, retained, "after the invalid_cursor gap").await;

    // Ahead of the newest event.
    let ahead = format!("{epoch}-99");
    let mut early = subscribe(b.addr, "/events/gapc", &[("Last-Event-ID", &ahead)]).await;
    expect_gap(&mut early, "cursor_ahead").await;
    expect_events(&mut early, retained, "after the cursor_ahead gap").await;

    // All of them continue live.
    let live = publish_numbered(a.addr, "gapc", 21..=21).await;
    for client in [&mut trimmed, &mut other, &mut garbage, &mut early] {
        expect_events(client, &live, "live after a gap").await;
    }
    assert!(metric(b.addr, "ssehub_gaps_total{reason=\"trimmed\"}").await >= 1.0);
}

// ---------------------------------------------------------------------------------------------
// 3. Publish acknowledgement while Redis is down

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publish_is_refused_while_redis_is_down_and_nothing_half_published() {
    let redis_timeout = Duration::from_millis(500);
    let bound = redis_timeout + Duration::from_secs(3);
    let mut redis = RedisServer::start().await;
    let hub = redis_hub(&redis, |c| {
        c.redis_timeout = redis_timeout;
        c.heartbeat = Duration::from_millis(200);
    })
    .await;
    let addr = hub.addr;
    // A second node that has not published anything before the outage.
    let cold = redis_hub(&redis, |c| c.redis_timeout = redis_timeout).await;
    publish_ok(addr, "warmup", "x").await;
    assert_eq!(metric(addr, "ssehub_redis_up").await, 1.0);
    let mut steady = subscribe(addr, "/events/steady", &[]).await;
    let before = publish_ok(addr, "steady", "before the outage").await;
    expect_events(
        &mut steady,
        &[(before.clone(), "before the outage".to_string())],
        "steady before the outage",
    )
    .await;

    redis.kill().await;
    wait_ready(addr, false).await;
    assert_eq!(metric(addr, "ssehub_redis_up").await, 0.0);

    let started = Instant::now();
    let single = publish(addr, json!({"channel": "down", "data": "lost"})).await;
    let took = started.elapsed();
    assert_eq!(single.status, 503, "publish while down: {}", single.text());
    assert_json_error(&single, "publish while down");
    assert!(took <= bound, "503 took {took:?}, bound {bound:?}");

    let started = Instant::now();
    let batch = publish(
        addr,
        json!([
            {"channel": "b1", "data": "one"},
            {"channel": "b2", "data": "two"},
            {"channel": "b3", "data": "three"},
        ]),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(batch.status, 503, "batch while down: {}", batch.text());
    assert_json_error(&batch, "batch while down");
    assert!(took <= bound, "batch 503 took {took:?}, bound {bound:?}");

    // A node's first publish (its command connection not yet set up) is bounded too; checked
    // at the end so the rest of the scenario still runs.
    wait_ready(cold.addr, false).await;
    let started = Instant::now();
    let first = publish(cold.addr, json!({"channel": "down", "data": "cold"})).await;
    let cold_took = started.elapsed();
    assert_eq!(
        first.status,
        503,
        "first publish of a node while down: {}",
        first.text()
    );
    assert_json_error(&first, "first publish of a node while down");

    let refused = SseClient::connect(addr, "/events/fresh", &[]).await;
    assert_eq!(refused.status, 503, "new subscription while Redis is down");

    // The existing subscriber stays connected and keeps getting heartbeats.
    steady.wait_comment(T).await;
    steady.wait_comment(T).await;
    assert_eq!(readyz(addr).await, 503);

    redis.restart().await;
    wait_ready(addr, true).await;
    assert_eq!(metric(addr, "ssehub_redis_up").await, 1.0);
    assert!(metric(addr, "ssehub_redis_reconnects_total").await >= 1.0);

    for channel in ["down", "b1", "b2", "b3"] {
        for suffix in ["m", "s"] {
            let key = format!("ssehub:{{{channel}}}:{suffix}");
            assert_eq!(
                exists(&redis, &key).await,
                0,
                "{key} after a refused publish"
            );
        }
    }

    // Redis lost "steady" (no persistence): its stream ends, and resuming tells of the gap.
    steady.expect_end(T).await;
    assert_eq!(steady.end_reason(), Some("end of body"), "a clean end");
    let mut back = subscribe(addr, "/events/steady", &[("Last-Event-ID", &before)]).await;
    expect_gap(&mut back, "epoch_changed").await;

    // Fresh `earliest` subscribers see nothing of the refused publishes: their first event is a
    // new one with seq 1.
    for channel in ["down", "b1", "b2", "b3"] {
        let mut fresh = subscribe(
            addr,
            &format!("/events/{channel}?lastEventId=earliest"),
            &[],
        )
        .await;
        // The command connection may still be reconnecting: retry until accepted.
        let mut attempt = 0;
        wait_until(T, &format!("a publish to {channel} is accepted"), || {
            attempt += 1;
            let data = format!("marker {attempt}");
            async move {
                let response = publish(addr, json!({"channel": channel, "data": data})).await;
                assert!(
                    matches!(response.status, 200 | 503),
                    "publish after restart: {} {}",
                    response.status,
                    response.text()
                );
                response.status == 200
            }
        })
        .await;
        let event = fresh
            .next_event(T)
            .await
            .unwrap_or_else(|| panic!("{channel}: stream ended"));
        assert_eq!(event.event, "message", "{channel}: {event:?}");
        assert!(
            event.data.starts_with("marker"),
            "{channel}: first event must be the new one, got {event:?}"
        );
        assert_eq!(seq(&event.id), 1, "{channel}: {event:?}");
    }

    assert!(
        cold_took <= bound,
        "503 for a node's first publish while Redis is down took {cold_took:?}, bound {bound:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Pub/sub subscription lifecycle

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pubsub_subscriptions_follow_local_subscribers() {
    let redis = RedisServer::start().await;
    let hub = redis_hub(&redis, |c| {
        c.max_channels_per_connection = 100;
        c.max_connections = 1000;
        c.heartbeat = Duration::from_secs(1);
    })
    .await;
    let addr = hub.addr;
    let r = &redis;

    let mut one = subscribe(addr, "/events/life", &[]).await;
    assert!(
        pubsub_channels(r)
            .await
            .contains(&"ssehub:{life}".to_string()),
        "subscribed while a subscriber is on the channel"
    );
    let id = publish_ok(addr, "life", "alive").await;
    expect_events(&mut one, &[(id, "alive".to_string())], "life").await;
    drop(one);
    wait_until(
        LINGER + Duration::from_secs(10),
        "ssehub:{life} is unsubscribed after its subscriber left",
        move || async move {
            !pubsub_channels(r)
                .await
                .contains(&"ssehub:{life}".to_string())
        },
    )
    .await;
    wait_until(T, "ssehub_channels is 0", move || async move {
        metric(addr, "ssehub_channels").await == 0.0
    })
    .await;

    // 100 connections × 100 channels.
    let mut opening = JoinSet::new();
    for conn in 0..100usize {
        let query: Vec<String> = (0..100)
            .map(|k| format!("channel=c{}", conn * 100 + k))
            .collect();
        let path = format!("/events?{}", query.join("&"));
        opening.spawn(async move { (conn, subscribe(addr, &path, &[]).await) });
    }
    let mut clients: Vec<Option<SseClient>> = (0..100).map(|_| None).collect();
    while let Some(joined) = opening.join_next().await {
        let (conn, client) = joined.expect("connect task");
        clients[conn] = Some(client);
    }
    let mut clients: Vec<SseClient> = clients.into_iter().map(Option::unwrap).collect();
    wait_until(
        Duration::from_secs(30),
        "10 000 channels and 100 subscribers",
        move || async move {
            metric(addr, "ssehub_channels").await == 10_000.0
                && metric(addr, "ssehub_subscribers").await == 100.0
        },
    )
    .await;
    let topics = pubsub_channels(r).await;
    assert_eq!(topics.len(), 10_000, "one pub/sub topic per channel");
    assert!(topics.contains(&"ssehub:{c4242}".to_string()));
    let numsub: Vec<redis::Value> = redis
        .cmd(&["PUBSUB", "NUMSUB", "ssehub:{c0}", "ssehub:{c9999}"])
        .await;
    let counts: Vec<i64> = numsub
        .chunks(2)
        .map(|pair| redis::from_redis_value(pair[1].clone()).expect("NUMSUB count"))
        .collect();
    assert_eq!(counts, vec![1, 1], "one subscription per topic per node");

    // Delivery still works on one of them.
    publish_ok(addr, "c4242", "needle").await;
    let event = clients[42].next_event(T).await.expect("connection 42 open");
    assert_eq!(event.data, "needle", "{event:?}");
    assert_eq!(event.id.split('.').count(), 100, "composite id: {event:?}");
    assert!(
        event
            .id
            .split('.')
            .nth(42)
            .is_some_and(|p| p.ends_with("-1")),
        "position 42 is c4242's first event: {event:?}"
    );

    clients.clear();
    wait_until(
        Duration::from_secs(30),
        "every pub/sub topic is unsubscribed after all connections left",
        move || async move { pubsub_channels(r).await.is_empty() },
    )
    .await;
    wait_until(
        T,
        "ssehub_channels and ssehub_subscribers are 0",
        move || async move {
            metric(addr, "ssehub_channels").await == 0.0
                && metric(addr, "ssehub_subscribers").await == 0.0
        },
    )
    .await;
}

// ---------------------------------------------------------------------------------------------
// 5. History keys expire by history_ttl

#[tokio::test]
async fn history_keys_expire_after_history_ttl() {
    let redis = RedisServer::start().await;
    let hub = redis_hub(&redis, |c| c.history_ttl = Duration::from_secs(1)).await;
    let id = publish_ok(hub.addr, "ttl", "short-lived").await;
    for key in ["ssehub:{ttl}:m", "ssehub:{ttl}:s"] {
        assert_eq!(exists(&redis, key).await, 1, "{key} right after publishing");
        let pttl = redis.cmd::<i64>(&["PTTL", key]).await;
        assert!(pttl > 0 && pttl <= 1000, "PTTL {key} = {pttl}");
    }
    let r = &redis;
    wait_until(
        Duration::from_secs(5),
        "the ttl channel's keys expired",
        move || async move {
            exists(r, "ssehub:{ttl}:m").await == 0 && exists(r, "ssehub:{ttl}:s").await == 0
        },
    )
    .await;
    // What the user sees: the history (and its epoch) is gone.
    let mut late = subscribe(hub.addr, "/events/ttl", &[("Last-Event-ID", &id)]).await;
    let (data, _) = expect_gap(&mut late, "epoch_changed").await;
    assert_eq!(data["last_event_id"], id.as_str(), "{data}");
}

// ---------------------------------------------------------------------------------------------
// 6. URL (password, db), prefix, bad password, bad URL

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn password_database_and_prefix() {
    let redis = RedisServer::start_with(&["--requirepass", "secret"]).await;
    let port = redis.port;
    let r = &redis;

    // Password and database 2.
    let db2_url = format!("redis://:secret@127.0.0.1:{port}/2");
    let url = db2_url.clone();
    let in_db2 = Hub::start_with(|c| {
        c.redis_url = Some(url);
        c.redis_linger = LINGER;
    })
    .await;
    wait_ready(in_db2.addr, true).await;
    let mut sub = subscribe(in_db2.addr, "/events/c", &[]).await;
    let id = publish_ok(in_db2.addr, "c", "in db 2").await;
    expect_events(&mut sub, &[(id, "in db 2".to_string())], "db 2 hub").await;
    let db2 = redis::Client::open(db2_url.as_str()).expect("db 2 URL");
    let mut db2 = tokio::time::timeout(T, db2.get_multiplexed_async_connection())
        .await
        .expect("connect to db 2 in time")
        .expect("connect to db 2");
    for key in ["ssehub:{c}:m", "ssehub:{c}:s"] {
        let n: i64 = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut db2)
            .await
            .expect("EXISTS in db 2");
        assert_eq!(n, 1, "{key} in db 2");
        assert_eq!(exists(r, key).await, 0, "{key} must not be in db 0");
    }

    // Prefix "myapp" (db 0).
    let url = format!("redis://:secret@127.0.0.1:{port}");
    let prefixed = Hub::start_with(|c| {
        c.redis_url = Some(url);
        c.redis_linger = LINGER;
        c.redis_prefix = "myapp".into();
    })
    .await;
    wait_ready(prefixed.addr, true).await;
    let mut sub = subscribe(prefixed.addr, "/events/c", &[]).await;
    let topics = pubsub_channels(r).await;
    assert!(
        topics.contains(&"myapp:{c}".to_string()),
        "topic myapp:{{c}} in {topics:?}"
    );
    let id = publish_ok(prefixed.addr, "c", "prefixed").await;
    assert_eq!(seq(&id), 1, "its own channel, separate from db 2's");
    expect_events(&mut sub, &[(id, "prefixed".to_string())], "prefixed hub").await;
    for key in ["myapp:{c}:m", "myapp:{c}:s"] {
        assert_eq!(exists(r, key).await, 1, "{key}");
    }
    assert_eq!(exists(r, "ssehub:{c}:m").await, 0);
    drop(sub);
    wait_until(
        LINGER + Duration::from_secs(10),
        "myapp:{c} is unsubscribed",
        move || async move { !pubsub_channels(r).await.contains(&"myapp:{c}".to_string()) },
    )
    .await;

    // Wrong password: never ready, publishes refused.
    let url = format!("redis://:wrong@127.0.0.1:{port}");
    let denied = Hub::start_with(|c| {
        c.redis_url = Some(url);
        c.redis_timeout = Duration::from_millis(500);
    })
    .await;
    let started = Instant::now();
    let response = publish(denied.addr, json!({"channel": "c", "data": "denied"})).await;
    let took = started.elapsed();
    assert_eq!(response.status, 503, "wrong password: {}", response.text());

    assert_json_error(&response, "wrong password");
    assert_eq!(readyz(denied.addr).await, 503, "wrong password: not ready");
    assert_eq!(metric(denied.addr, "ssehub_redis_up").await, 0.0);

    // An unparseable URL stops the server before it serves.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let config = ssehub::Config {
        listen: listener.local_addr().expect("local_addr"),
        redis_url: Some("notaurl".into()),
        ..ssehub::Config::default()
    };
    let result = tokio::time::timeout(
        Duration::from_secs(5),
        ssehub::server::run(config, listener, std::future::pending::<()>()),
    )
    .await
    .expect("run with an invalid Redis URL returns promptly");
    assert!(
        result.is_err(),
        "run with redis_url \"notaurl\": {result:?}"
    );

    in_db2.stop().await;
    prefixed.stop().await;
    denied.stop().await;

    // Checked last so the rest of the scenario still runs.
    let bound = Duration::from_millis(500) + Duration::from_secs(3);
    assert!(
        took <= bound,
        "wrong password: 503 took {took:?}, bound redis_timeout + 3 s = {bound:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// 7. One order under concurrent publishers

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_on_three_nodes_produce_one_order() {
    const PER_PUBLISHER: usize = 300;
    const TOTAL: usize = 3 * PER_PUBLISHER;
    let redis = RedisServer::start().await;
    let hubs = [
        redis_hub(&redis, |_| {}).await,
        redis_hub(&redis, |_| {}).await,
        redis_hub(&redis, |_| {}).await,
    ];

    let mut readers = Vec::new();
    for (h, hub) in hubs.iter().enumerate() {
        for s in 0..2 {
            let mut client = subscribe(hub.addr, "/events/order", &[]).await;
            readers.push(tokio::spawn(async move {
                let events = client.events(TOTAL, Duration::from_secs(60)).await;
                (h, s, events)
            }));
        }
    }

    let mut publishers = Vec::new();
    for (p, hub) in hubs.iter().enumerate() {
        let addr = hub.addr;
        publishers.push(tokio::spawn(async move {
            let mut receipts = Vec::with_capacity(PER_PUBLISHER);
            for i in 0..PER_PUBLISHER {
                let data = format!("p{p}-{i}");
                receipts.push((publish_ok(addr, "order", &data).await, data));
            }
            receipts
        }));
    }
    let mut receipts = Vec::new();
    for publisher in publishers {
        receipts.push(publisher.await.expect("publisher task"));
    }

    let mut streams = Vec::new();
    for reader in readers {
        let (h, s, events) = reader.await.expect("reader task");
        let seqs: Vec<u64> = events.iter().map(|e| seq(&e.id)).collect();
        assert!(
            seqs.iter().copied().eq(1..=TOTAL as u64),
            "hub {h} subscriber {s}: seqs must be 1..={TOTAL} without gap or duplicate: {seqs:?}"
        );
        streams.push(((h, s), ids_and_data(&events)));
    }
    let reference = &streams[0].1;
    for ((h, s), stream) in &streams {
        assert!(
            stream == reference,
            "hub {h} subscriber {s} saw another sequence than hub 0 subscriber 0"
        );
    }

    // Every receipt is in the stream with its data, and each publisher's events keep their order.
    let position: std::collections::HashMap<&str, (usize, &str)> = reference
        .iter()
        .enumerate()
        .map(|(i, (id, data))| (id.as_str(), (i, data.as_str())))
        .collect();
    for (p, published) in receipts.iter().enumerate() {
        let mut last = None;
        for (id, data) in published {
            let (at, seen) = position
                .get(id.as_str())
                .unwrap_or_else(|| panic!("publisher {p}: receipt {id} not in the stream"));
            assert_eq!(*seen, data, "publisher {p}: data of {id}");
            assert!(
                last.is_none_or(|l| l < *at),
                "publisher {p}: {id} out of its publish order"
            );
            last = Some(*at);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Terminal events across nodes

#[tokio::test]
async fn terminal_event_ends_streams_on_every_node() {
    let redis = RedisServer::start().await;
    let a = redis_hub(&redis, |_| {}).await;
    let b = redis_hub(&redis, |_| {}).await;
    let mut on_b = subscribe(b.addr, "/events/job", &[]).await;
    let first = publish_ok(a.addr, "job", "working").await;
    let close = publish(
        a.addr,
        json!({"channel": "job", "event": "done", "data": "ok", "close": true}),
    )
    .await;
    assert_eq!(close.status, 200, "{}", close.text());
    let close_id = close.json()["id"].as_str().expect("an id").to_string();

    let events = on_b.events(2, T).await;
    assert_eq!(events[0].id, first);
    assert_eq!(
        (events[1].event.as_str(), events[1].id.as_str()),
        ("done", close_id.as_str())
    );
    on_b.expect_end(T).await;

    // Any node: no cursor or a cursor at the end gets 204; before it, the rest and the end.
    for addr in [a.addr, b.addr] {
        for headers in [vec![], vec![("Last-Event-ID", close_id.as_str())]] {
            let client = SseClient::connect(addr, "/events/job", &headers).await;
            assert_eq!(
                client.status, 204,
                "GET /events/job on {addr} with {headers:?}"
            );
        }
        let mut late = subscribe(addr, "/events/job", &[("Last-Event-ID", &first)]).await;
        let rest = late.events(1, T).await;
        assert_eq!(rest[0].id, close_id);
        late.expect_end(T).await;
    }

    for addr in [a.addr, b.addr] {
        let refused = publish(addr, json!({"channel": "job", "data": "more"})).await;
        assert_eq!(refused.status, 409, "{}", refused.text());
        assert!(refused.json()["error"].is_string());
    }
    a.stop().await;
    b.stop().await;
}
