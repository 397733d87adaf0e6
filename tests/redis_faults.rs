//! Redis mode under faults: Redis killed and restarted (with and without its data), Redis
//! stalled while a subscriber opens, the pub/sub connections cut, a hole on the feed, and a hub
//! node killed under its subscribers. Each test owns its `redis-server`; hubs run in-process or
//! as real processes (`common::node`).

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::node::Node;
use common::redis_server::RedisServer;
use common::{
    ids_and_data, metric, publish, publish_ok, request, split_id, wait_until, Hub, SseClient,
    SseEvent,
};
use serde_json::json;
use tokio::time::Instant;

/// `redis_timeout` of the in-process hubs.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);
/// Bound on a hub noticing Redis came back (backoff is at most 2s).
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// Bound on an expected event reaching a subscriber.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// A hub in Redis mode with a short heartbeat and Redis timeout.
async fn redis_hub(url: &str) -> Hub {
    let url = url.to_string();
    Hub::start_with(move |c| {
        c.redis_url = Some(url);
        c.heartbeat = Duration::from_millis(200);
        c.redis_timeout = REDIS_TIMEOUT;
    })
    .await
}

async fn readyz(addr: SocketAddr) -> u16 {
    request(addr, "GET", "/readyz", &[], b"").await.status
}

async fn wait_ready(addr: SocketAddr, what: &str) {
    wait_until(
        RECONNECT_TIMEOUT,
        &format!("{what}: /readyz is 200"),
        || async move { readyz(addr).await == 200 },
    )
    .await;
}

/// Subscribes to `/events/<channel>` (optionally resuming after `last_id`); asserts 200.
async fn subscribe(addr: SocketAddr, channel: &str, last_id: Option<&str>) -> SseClient {
    let path = format!("/events/{channel}");
    let headers: Vec<(&str, &str)> = last_id
        .map(|id| ("Last-Event-ID", id))
        .into_iter()
        .collect();
    let client = SseClient::connect(addr, &path, &headers).await;
    assert_eq!(
        client.status, 200,
        "GET {path} on {addr} (Last-Event-ID {last_id:?}): {:?}",
        client.headers
    );
    client
}

/// Reads events until one with data `marker` (included), within `timeout`; panics if the
/// stream ends first.
async fn read_until(client: &mut SseClient, marker: &str, timeout: Duration) -> Vec<SseEvent> {
    let deadline = Instant::now() + timeout;
    let mut events = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_event(left).await {
            Some(event) => {
                let done = event.data == marker;
                events.push(event);
                if done {
                    return events;
                }
            }
            None => panic!(
                "stream ended ({:?}) before the marker {marker:?}; got {} events, last {:?}",
                client.end_reason(),
                events.len(),
                events.last()
            ),
        }
    }
}

/// Every event of `events` is a distinct, non-gap event of one epoch with seqs dense and
/// increasing from `first_seq`.
fn assert_dense_stream(who: &str, events: &[SseEvent], first_seq: u64) {
    let mut ids = HashSet::new();
    let mut epoch: Option<String> = None;
    for (expected, event) in (first_seq..).zip(events) {
        assert_ne!(event.event, "gap", "{who}: unexpected gap event {event:?}");
        assert!(ids.insert(&event.id), "{who}: duplicate id in {event:?}");
        let (e, seq) = split_id(&event.id);
        match &epoch {
            None => epoch = Some(e),
            Some(first) => assert_eq!(first, &e, "{who}: epoch changed at {event:?}"),
        }
        assert_eq!(
            seq, expected,
            "{who}: events out of order or missing: expected seq {expected}, got {event:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Redis SIGKILL and restart with persistence

/// One publish attempt of the background publisher.
#[derive(Debug, Clone)]
struct Attempt {
    n: u64,
    status: u16,
    id: Option<String>,
    took: Duration,
}

#[derive(Default)]
struct PublisherState {
    attempts: Mutex<Vec<Attempt>>,
    acked: AtomicUsize,
    refused: AtomicUsize,
    stop: AtomicBool,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_and_restarted_with_aof_loses_no_acknowledged_event() {
    const MAX_EVENTS: u64 = 3000;
    const PUBLISH_FOR: Duration = Duration::from_secs(60);
    const ACKED_EACH_SIDE: usize = 40;
    let started = Instant::now();
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let url = redis.url();
    let hubs = [redis_hub(&url).await, redis_hub(&url).await];
    let addrs = [hubs[0].addr, hubs[1].addr];
    for (i, addr) in addrs.iter().enumerate() {
        wait_ready(*addr, &format!("hub {i} at start")).await;
    }
    let mut subscribers = Vec::new();
    for addr in addrs {
        for _ in 0..2 {
            subscribers.push(subscribe(addr, "k", None).await);
        }
    }

    let state = Arc::new(PublisherState::default());
    let publisher = tokio::spawn({
        let state = state.clone();
        async move {
            let until = Instant::now() + PUBLISH_FOR;
            for n in 1..=MAX_EVENTS {
                if state.stop.load(Ordering::SeqCst) || Instant::now() >= until {
                    break;
                }
                let addr = addrs[(n % 2) as usize];
                let begun = Instant::now();
                let response = publish(addr, json!({"channel": "k", "data": n.to_string()})).await;
                let took = begun.elapsed();
                let id = match response.status {
                    200 => {
                        let id = response.json()["id"].as_str().map(str::to_string);
                        assert!(id.is_some(), "200 without id: {}", response.text());
                        id
                    }
                    503 => {
                        assert!(
                            response.json()["error"].is_string(),
                            "503 without a JSON error: {}",
                            response.text()
                        );
                        None
                    }
                    other => panic!(
                        "publish {n}: unexpected status {other}: {}",
                        response.text()
                    ),
                };
                state.attempts.lock().unwrap().push(Attempt {
                    n,
                    status: response.status,
                    id,
                    took,
                });
                if response.status == 200 {
                    state.acked.fetch_add(1, Ordering::SeqCst);
                } else {
                    state.refused.fetch_add(1, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });

    let acked = |state: &Arc<PublisherState>| state.acked.load(Ordering::SeqCst);
    wait_until(
        Duration::from_secs(20),
        "40 publishes are acknowledged before the outage",
        || async { acked(&state) >= ACKED_EACH_SIDE },
    )
    .await;
    assert_eq!(
        state.refused.load(Ordering::SeqCst),
        0,
        "no publish is refused while Redis is up: {:?}",
        state.attempts.lock().unwrap()
    );

    redis.kill().await;
    let killed = Instant::now();
    for (i, addr) in addrs.iter().enumerate() {
        let addr = *addr;
        wait_until(
            Duration::from_secs(10),
            &format!("hub {i}: /readyz is 503 and ssehub_redis_up 0 while Redis is down"),
            || async move {
                readyz(addr).await == 503 && metric(addr, "ssehub_redis_up").await == 0.0
            },
        )
        .await;
    }
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        for _ in 0..3 {
            subscriber.wait_comment(Duration::from_secs(3)).await;
        }
        assert!(
            subscriber.end_reason().is_none(),
            "subscriber {i} stays connected during the outage: {:?}",
            subscriber.end_reason()
        );
    }
    let new_channel = SseClient::connect(addrs[0], "/events/k-new", &[]).await;
    assert_eq!(
        new_channel.status, 503,
        "a subscription that needs Redis (new channel) while Redis is down: {:?}",
        new_channel.headers
    );
    drop(new_channel);
    wait_until(
        Duration::from_secs(15),
        "three publishes were refused with 503 during the outage",
        || async { state.refused.load(Ordering::SeqCst) >= 3 },
    )
    .await;
    let outage_acked = acked(&state);

    redis.restart().await;
    let outage = killed.elapsed();
    wait_until(
        Duration::from_secs(30),
        "40 more publishes are acknowledged after Redis restarted",
        || async { acked(&state) >= outage_acked + ACKED_EACH_SIDE },
    )
    .await;
    state.stop.store(true, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(20), publisher)
        .await
        .expect("publisher stops")
        .expect("publisher task");

    for (i, addr) in addrs.iter().enumerate() {
        let addr = *addr;
        wait_until(
            RECONNECT_TIMEOUT,
            &format!("hub {i}: ssehub_redis_reconnects_total >= 1"),
            || async move { metric(addr, "ssehub_redis_reconnects_total").await >= 1.0 },
        )
        .await;
        wait_ready(addr, &format!("hub {i} after the restart")).await;
    }
    let marker_id = publish_ok(addrs[0], "k", "end").await;

    let attempts = state.attempts.lock().unwrap().clone();
    let acked_ids: BTreeMap<u64, String> = attempts
        .iter()
        .filter_map(|a| Some((a.n, a.id.clone()?)))
        .collect();
    let unacked: HashSet<u64> = attempts
        .iter()
        .filter(|a| a.status != 200)
        .map(|a| a.n)
        .collect();
    let slowest_refusal = attempts
        .iter()
        .filter(|a| a.status == 503)
        .map(|a| a.took)
        .max()
        .unwrap_or_default();
    assert!(
        slowest_refusal < Duration::from_secs(3),
        "a 503 took {slowest_refusal:?} (redis_timeout {REDIS_TIMEOUT:?})"
    );
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let who = format!("subscriber {i} (hub {})", i / 2);
        let events = read_until(subscriber, "end", Duration::from_secs(30)).await;
        assert_dense_stream(&who, &events, 1);
        assert_eq!(
            events.last().map(|e| e.id.as_str()),
            Some(marker_id.as_str())
        );
        let mut seen: HashMap<u64, &SseEvent> = HashMap::new();
        for event in &events[..events.len() - 1] {
            let n: u64 = event
                .data
                .parse()
                .unwrap_or_else(|_| panic!("{who}: unexpected event {event:?}"));
            assert!(
                acked_ids.contains_key(&n) || unacked.contains(&n),
                "{who}: event {event:?} was never published"
            );
            assert!(
                seen.insert(n, event).is_none(),
                "{who}: publish {n} delivered twice"
            );
        }
        for (n, id) in &acked_ids {
            let event = seen.get(n).unwrap_or_else(|| {
                panic!("{who}: acknowledged publish {n} (id {id}) was never delivered")
            });
            assert_eq!(
                &event.id, id,
                "{who}: publish {n} delivered under another id"
            );
        }
    }
    let mut catchups = Vec::new();
    for addr in addrs {
        catchups.push(metric(addr, "ssehub_redis_catchups_total").await);
    }
    println!(
        "{} publishes: {} acknowledged, {} refused (slowest 503 {slowest_refusal:?}); outage \
         {outage:?}; catch-ups per hub {catchups:?}; total {:?}",
        attempts.len(),
        acked_ids.len(),
        unacked.len(),
        started.elapsed()
    );
    for hub in hubs {
        hub.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Redis restart without persistence: the history is gone

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_without_data_ends_streams_and_resumes_with_epoch_changed_gap() {
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let hubs = [redis_hub(&url).await, redis_hub(&url).await];
    let addrs = [hubs[0].addr, hubs[1].addr];
    for (i, addr) in addrs.iter().enumerate() {
        wait_ready(*addr, &format!("hub {i} at start")).await;
    }
    let mut subscribers = Vec::new();
    for addr in addrs {
        for _ in 0..2 {
            subscribers.push(subscribe(addr, "k", None).await);
        }
    }
    let mut old_ids = Vec::new();
    for n in 1..=5 {
        old_ids.push(publish_ok(addrs[n % 2], "k", &format!("old {n}")).await);
    }
    let old_epoch = split_id(&old_ids[0]).0;
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let events = subscriber.events(5, EVENT_TIMEOUT).await;
        let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, old_ids, "subscriber {i}");
    }

    redis.kill().await;
    redis.restart().await;
    let restarted = Instant::now();
    let mut last_ids = Vec::new();
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        subscriber.expect_end(RECONNECT_TIMEOUT).await;
        assert_eq!(
            subscriber.end_reason(),
            Some("end of body"),
            "subscriber {i}: the stream of a channel Redis lost ends cleanly"
        );
        assert_eq!(subscriber.last_event_id(), old_ids[4], "subscriber {i}");
        last_ids.push(subscriber.last_event_id().to_string());
    }
    println!("streams ended {:?} after the restart", restarted.elapsed());
    for (i, addr) in addrs.iter().enumerate() {
        assert!(
            metric(*addr, "ssehub_redis_reconnects_total").await >= 1.0,
            "hub {i} counted its reconnect"
        );
    }

    let mut resumed = Vec::new();
    let mut gap_ids = Vec::new();
    for (i, last_id) in last_ids.iter().enumerate() {
        let mut client = subscribe(addrs[i / 2], "k", Some(last_id)).await;
        let gap = client
            .next_event(EVENT_TIMEOUT)
            .await
            .unwrap_or_else(|| panic!("resumed subscriber {i}: stream ended before a gap"));
        assert_eq!(gap.event, "gap", "resumed subscriber {i}: {gap:?}");
        let data: serde_json::Value = serde_json::from_str(&gap.data)
            .unwrap_or_else(|e| panic!("gap data is not JSON ({e}): {gap:?}"));
        assert_eq!(
            data["reason"], "epoch_changed",
            "resumed subscriber {i}: {data}"
        );
        assert_eq!(data["channel"], "k", "{data}");
        assert_eq!(data["last_event_id"], last_id.as_str(), "{data}");
        assert!(
            data.get("first_id").is_some(),
            "gap data has first_id: {data}"
        );
        assert_ne!(
            split_id(&gap.id).0,
            old_epoch,
            "resumed subscriber {i}: the gap id is in the new epoch: {gap:?}"
        );
        gap_ids.push(gap.id.clone());
        resumed.push(client);
    }

    let new_id = publish_ok(addrs[0], "k", "new 1").await;
    let (new_epoch, new_seq) = split_id(&new_id);
    assert_ne!(new_epoch, old_epoch, "Redis lost the channel: a new epoch");
    assert_eq!(new_seq, 1, "the new epoch starts at seq 1: {new_id}");
    for (i, gap_id) in gap_ids.iter().enumerate() {
        assert_eq!(
            gap_id,
            &format!("{new_epoch}-0"),
            "resumed subscriber {i}: gap id is the position before the (empty) history"
        );
    }
    let newer_id = publish_ok(addrs[1], "k", "new 2").await;
    for (i, client) in resumed.iter_mut().enumerate() {
        let events = client.events(2, EVENT_TIMEOUT).await;
        let got = ids_and_data(&events);
        assert_eq!(
            got,
            [(new_id.as_str(), "new 1"), (newer_id.as_str(), "new 2")],
            "resumed subscriber {i}"
        );
    }
    for hub in hubs {
        hub.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_publish_after_redis_restart_succeeds_once_the_node_is_ready() {
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let hub = redis_hub(&redis.url()).await;
    let addr = hub.addr;
    wait_ready(addr, "hub at start").await;
    let mut client = subscribe(addr, "k", None).await;
    let before = publish_ok(addr, "k", "before").await;

    redis.kill().await;
    redis.restart().await;
    wait_until(
        RECONNECT_TIMEOUT,
        "the hub reconnected to Redis (ssehub_redis_reconnects_total >= 1)",
        || async { metric(addr, "ssehub_redis_reconnects_total").await >= 1.0 },
    )
    .await;
    wait_ready(addr, "hub after the restart").await;
    // Redis is up and the node says it is ready: a publish is not "Redis down or slow".
    let after = publish_ok(addr, "k", "after").await;
    let events = client.events(2, EVENT_TIMEOUT).await;
    let got = ids_and_data(&events);
    assert_eq!(
        got,
        [(before.as_str(), "before"), (after.as_str(), "after")]
    );
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_from_redis_after_redis_restart_succeeds_once_the_node_is_ready() {
    let mut redis =
        RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]).await;
    let hub = redis_hub(&redis.url()).await;
    let addr = hub.addr;
    wait_ready(addr, "hub at start").await;
    // No subscriber on this node: the events are only in Redis's stream.
    let first = publish_ok(addr, "r", "r1").await;
    let second = publish_ok(addr, "r", "r2").await;

    redis.kill().await;
    redis.restart().await;
    wait_until(
        RECONNECT_TIMEOUT,
        "the hub reconnected to Redis (ssehub_redis_reconnects_total >= 1)",
        || async { metric(addr, "ssehub_redis_reconnects_total").await >= 1.0 },
    )
    .await;
    wait_ready(addr, "hub after the restart").await;
    let mut client = SseClient::connect(addr, "/events/r", &[("Last-Event-ID", "earliest")]).await;
    assert_eq!(
        client.status, 200,
        "replay of history kept in Redis, with Redis up and the node ready: {:?}",
        client.headers
    );
    let events = client.events(2, EVENT_TIMEOUT).await;
    let got = ids_and_data(&events);
    assert_eq!(got, [(first.as_str(), "r1"), (second.as_str(), "r2")]);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. The pub/sub connections cut alone

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pubsub_connections_killed_while_publishing_lose_nothing() {
    const ROUNDS: usize = 4;
    const PER_ROUND: usize = 20;
    let started = Instant::now();
    let redis = RedisServer::start().await;
    let url = redis.url();
    let hubs = [redis_hub(&url).await, redis_hub(&url).await];
    let addrs = [hubs[0].addr, hubs[1].addr];
    for (i, addr) in addrs.iter().enumerate() {
        wait_ready(*addr, &format!("hub {i} at start")).await;
    }
    let mut subscribers = Vec::new();
    for addr in addrs {
        subscribers.push(subscribe(addr, "p", None).await);
    }
    let mut all_ids = Vec::new();
    for round in 0..ROUNDS {
        let mut reconnects = Vec::new();
        for addr in addrs {
            reconnects.push(metric(addr, "ssehub_redis_reconnects_total").await);
        }
        let via = addrs[round % 2];
        let mut ids = Vec::new();
        // The kill lands after a few publishes, with more right behind it.
        let kill_after = round * 3 % PER_ROUND;
        for n in 0..PER_ROUND {
            if n == kill_after {
                let killed: i64 = redis.cmd(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
                assert!(
                    killed >= 2,
                    "round {round}: both hubs' pub/sub connections were killed, not {killed}"
                );
            }
            ids.push(publish_ok(via, "p", &format!("{round}/{n}")).await);
        }
        for (i, subscriber) in subscribers.iter_mut().enumerate() {
            let events = subscriber.events(PER_ROUND, EVENT_TIMEOUT).await;
            let got = ids_and_data(&events);
            let want: Vec<(&str, String)> = ids
                .iter()
                .enumerate()
                .map(|(n, id)| (id.as_str(), format!("{round}/{n}")))
                .collect();
            let want: Vec<(&str, &str)> = want.iter().map(|(id, d)| (*id, d.as_str())).collect();
            assert_eq!(got, want, "round {round}, subscriber {i} (hub {i})");
        }
        for (i, addr) in addrs.iter().enumerate() {
            let (addr, before) = (*addr, reconnects[i]);
            wait_until(
                RECONNECT_TIMEOUT,
                &format!("round {round}: hub {i} counted a pub/sub reconnect"),
                || async move { metric(addr, "ssehub_redis_reconnects_total").await > before },
            )
            .await;
            wait_ready(addr, &format!("round {round}: hub {i}")).await;
        }
        all_ids.extend(ids);
    }
    let marker = publish_ok(addrs[0], "p", "end").await;
    for (i, subscriber) in subscribers.iter_mut().enumerate() {
        let events = subscriber.events(1, EVENT_TIMEOUT).await;
        assert_eq!(
            events[0].id, marker,
            "subscriber {i}: nothing extra before the marker"
        );
    }
    let mut catchups = Vec::new();
    for addr in addrs {
        catchups.push(metric(addr, "ssehub_redis_catchups_total").await);
    }
    assert_eq!(all_ids.len(), ROUNDS * PER_ROUND);
    println!(
        "{ROUNDS} pub/sub kills: catch-ups per hub {catchups:?}; total {:?}",
        started.elapsed()
    );
    for hub in hubs {
        hub.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// 4. A hub node SIGKILLed under its subscribers

/// One subscriber of the node test: every event it read, across reconnects.
struct Reader {
    client: SseClient,
    node: usize,
    events: Vec<SseEvent>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn node_killed_subscribers_fail_over_to_other_nodes_without_loss() {
    const FIRST: usize = 20;
    const UNREAD: usize = 10;
    const SECOND: usize = 60;
    let started = Instant::now();
    let redis = RedisServer::start().await;
    let url = redis.url();
    let args = ["--redis-url", url.as_str(), "--heartbeat", "500ms"];
    let mut nodes = Vec::new();
    for i in 1..=3 {
        nodes.push(Node::start(&format!("redis-node{i}"), &args, &[], false).await);
    }
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.addr).collect();
    for (i, addr) in addrs.iter().enumerate() {
        wait_ready(*addr, &format!("node {}", i + 1)).await;
    }
    let mut readers = Vec::new();
    for (node, addr) in addrs.iter().enumerate() {
        for _ in 0..3 {
            readers.push(Reader {
                client: subscribe(*addr, "n", None).await,
                node,
                events: Vec::new(),
            });
        }
    }

    let mut published: Vec<(String, String)> = Vec::new();
    for n in 0..FIRST {
        let data = format!("e{n}");
        published.push((publish_ok(addrs[n % 2], "n", &data).await, data));
    }
    for reader in &mut readers {
        let events = reader.client.events(FIRST, EVENT_TIMEOUT).await;
        reader.events.extend(events);
    }
    // Published but not awaited: node 3 may or may not deliver these before it dies.
    for n in FIRST..FIRST + UNREAD {
        let data = format!("e{n}");
        published.push((publish_ok(addrs[n % 2], "n", &data).await, data));
    }

    nodes[2].signal("KILL").await;
    let status = nodes[2]
        .exit_by(Instant::now() + Duration::from_secs(10), "after SIGKILL")
        .await;
    assert!(!status.success(), "node 3 was killed: {status}");

    let progress = Arc::new(AtomicUsize::new(0));
    let publisher = tokio::spawn({
        let addrs = addrs.clone();
        let progress = progress.clone();
        async move {
            let mut published = Vec::new();
            for n in FIRST + UNREAD..FIRST + UNREAD + SECOND {
                let data = format!("e{n}");
                published.push((publish_ok(addrs[n % 2], "n", &data).await, data));
                progress.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            published
        }
    });

    // Resume only once events were published while the node 3 subscribers were away.
    wait_until(
        Duration::from_secs(20),
        "10 events are published after node 3 died",
        || async { progress.load(Ordering::SeqCst) >= 10 },
    )
    .await;
    let mut read_before_failover = Vec::new();
    for (k, reader) in readers.iter_mut().filter(|r| r.node == 2).enumerate() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while let Some(event) = reader
            .client
            .next_event(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            reader.events.push(event);
        }
        assert_ne!(
            reader.client.end_reason(),
            Some("end of body"),
            "node 3 subscriber {k}: a killed node's stream ends abruptly"
        );
        read_before_failover.push(reader.events.len());
        let last_id = reader.client.last_event_id().to_string();
        assert_eq!(Some(&last_id), reader.events.last().map(|e| &e.id));
        reader.node = k % 2;
        reader.client = subscribe(addrs[reader.node], "n", Some(&last_id)).await;
    }

    let rest = tokio::time::timeout(Duration::from_secs(60), publisher)
        .await
        .expect("publisher finishes")
        .expect("publisher task");
    published.extend(rest);
    let marker = publish_ok(addrs[0], "n", "end").await;
    published.push((marker, "end".to_string()));

    for (i, reader) in readers.iter_mut().enumerate() {
        let events = read_until(&mut reader.client, "end", Duration::from_secs(30)).await;
        reader.events.extend(events);
        let who = format!("subscriber {i} (now on node {})", reader.node + 1);
        assert_dense_stream(&who, &reader.events, 1);
        let got = ids_and_data(&reader.events);
        let want: Vec<(&str, &str)> = published
            .iter()
            .map(|(id, data)| (id.as_str(), data.as_str()))
            .collect();
        assert_eq!(got, want, "{who}: every event exactly once, in order");
    }
    println!(
        "node 3 subscribers had read {read_before_failover:?} of {} events before failing over; \
         total {:?}",
        published.len(),
        started.elapsed()
    );
    for node in &nodes[..2] {
        node.signal("TERM").await;
    }
    for (i, node) in nodes.iter_mut().take(2).enumerate() {
        let status = node
            .exit_by(Instant::now() + Duration::from_secs(15), "after SIGTERM")
            .await;
        assert_eq!(
            status.code(),
            Some(0),
            "node {}: {}",
            i + 1,
            node.log_text()
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 5. A hole on the feed (a lost PUBLISH) is filled from the stream

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_micros() as u64
}

/// Runs the hub's own publish script for one event on `channel`, but `PUBLISH`es it to a topic
/// nobody listens to: the event is in the stream and the channel's seq advanced, as when a
/// node's pub/sub message is lost. Returns `[epoch, seq]`.
async fn publish_with_lost_message(
    redis: &RedisServer,
    config: &ssehub::Config,
    channel: &str,
    data: &str,
) -> (String, u64) {
    const SCRIPT: &str = include_str!("../src/broker/lua/publish.lua");
    let prefix = &config.redis_prefix;
    let meta = format!("{prefix}:{{{channel}}}:m");
    let stream = format!("{prefix}:{{{channel}}}:s");
    let nowhere = format!("{prefix}:{{{channel}}}:nobody-listens");
    let ttl = config.history_ttl.as_millis().to_string();
    let maxlen = config.history_size.to_string();
    let now = unix_micros().to_string();
    let args: &[&str] = &[
        "EVAL", SCRIPT, "2", &meta, &stream, // keys
        "1", &ttl, &ttl, &maxlen, &now, "zzzzzz", &nowhere, // one channel
        "1", "", data, "", "0", // the event: channel 1, no name, data, no retry, not closing
    ];
    let mut answer: Vec<(String, u64)> = redis.cmd(args).await;
    assert_eq!(answer.len(), 1, "{answer:?}");
    answer.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hole_on_the_feed_is_filled_from_the_stream() {
    let redis = RedisServer::start().await;
    let hub = redis_hub(&redis.url()).await;
    let addr = hub.addr;
    wait_ready(addr, "hub").await;
    let mut client = subscribe(addr, "h", None).await;
    let first = publish_ok(addr, "h", "one").await;
    let event = client.next_event(EVENT_TIMEOUT).await.expect("event one");
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (first.as_str(), "one")
    );
    let catchups = metric(addr, "ssehub_redis_catchups_total").await;

    let (epoch, seq) = publish_with_lost_message(&redis, &hub.config, "h", "two").await;
    let lost = format!("{epoch}-{seq}");
    assert_eq!(
        split_id(&first),
        (epoch.clone(), 1),
        "same channel, next seq"
    );
    let third = publish_ok(addr, "h", "three").await;
    assert_eq!(split_id(&third), (epoch, 3));
    let events = client.events(2, EVENT_TIMEOUT).await;
    let got = ids_and_data(&events);
    assert_eq!(got, [(lost.as_str(), "two"), (third.as_str(), "three")]);
    assert!(
        metric(addr, "ssehub_redis_catchups_total").await > catchups,
        "the filled hole is counted in ssehub_redis_catchups_total"
    );
    hub.stop().await;
}

/// A subscriber counts in `ssehub_subscribers` only once its stream is open, after its node
/// subscribed to the channel in Redis: a publisher that waits for the gauge (as tests and
/// operators do) cannot publish into the moment before, which the subscriber would never see.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_counts_only_once_redis_has_its_channel() {
    let redis = RedisServer::start().await;
    let url = redis.url();
    // Longer than the stall below, so the subscription waits instead of failing.
    let hub = Hub::start_with(move |c| {
        c.redis_url = Some(url);
        c.redis_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = hub.addr;
    wait_ready(addr, "hub").await;

    redis.signal("STOP").await;
    let opening = tokio::spawn(async move { subscribe(addr, "stalled", None).await });
    wait_until(
        EVENT_TIMEOUT,
        "the stalled subscription's channel exists",
        || async move { metric(addr, "ssehub_channels").await == 1.0 },
    )
    .await;
    assert_eq!(
        metric(addr, "ssehub_subscribers").await,
        0.0,
        "a subscriber counted while its channel's Redis subscription was still pending"
    );

    redis.signal("CONT").await;
    let mut client = tokio::time::timeout(EVENT_TIMEOUT, opening)
        .await
        .expect("the stream opens once Redis answers")
        .expect("subscribe task");
    assert_eq!(metric(addr, "ssehub_subscribers").await, 1.0);
    let id = publish_ok(addr, "stalled", "first").await;
    let event = client
        .next_event(EVENT_TIMEOUT)
        .await
        .expect("the first event");
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), "first")
    );
    drop(client);
    wait_until(
        EVENT_TIMEOUT,
        "the gauge drops with the stream",
        || async move { metric(addr, "ssehub_subscribers").await == 0.0 },
    )
    .await;
    hub.stop().await;
}
