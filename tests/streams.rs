mod common;

// Event streams over real HTTP: framing, resume by `Last-Event-ID`, gap events, multi-channel
// connections, replay racing live publishing, terminal events and history expiry.

use std::net::SocketAddr;
use std::time::Duration;

use common::{metric, publish, split_id, wait_until, Hub, SseClient, SseEvent};
use serde_json::{json, Value};
use tokio::sync::watch;

/// Bound on reading the events a step expects.
const T: Duration = Duration::from_secs(10);
/// How long "nothing more arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);
/// Bound on each replay-race scenario as a whole.
const RACE_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Helpers

/// Opens `GET path` with `headers` and asserts a `200` event stream.
async fn subscribe(hub: &Hub, path: &str, headers: &[(&str, &str)]) -> SseClient {
    let client = SseClient::connect(hub.addr, path, headers).await;
    assert_eq!(client.status, 200, "GET {path} with {headers:?}");
    client
}

/// Opens `GET /events/<channel>` resuming after `cursor` (sent as `Last-Event-ID`).
async fn resume(hub: &Hub, channel: &str, cursor: &str) -> SseClient {
    subscribe(
        hub,
        &format!("/events/{channel}"),
        &[("Last-Event-ID", cursor)],
    )
    .await
}

/// Publishes one event from a JSON object and returns its id; asserts `200`.
async fn publish_ok(addr: SocketAddr, body: Value) -> String {
    let response = publish(addr, body.clone()).await;
    assert_eq!(response.status, 200, "publish {body}: {}", response.text());
    let receipt = response.json();
    receipt["id"]
        .as_str()
        .unwrap_or_else(|| panic!("publish {body}: no id in {receipt}"))
        .to_string()
}

/// Publishes `"<channel>-<n>"` for each `n` in `numbers` to `channel`; returns the ids in order.
async fn publish_numbered(
    addr: SocketAddr,
    channel: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> Vec<String> {
    let mut ids = Vec::new();
    for n in numbers {
        ids.push(
            publish_ok(
                addr,
                json!({"channel": channel, "data": format!("{channel}-{n}")}),
            )
            .await,
        );
    }
    ids
}

/// The positions of a composite (multi-channel) id, one `(epoch, seq)` per channel.
fn split_composite(id: &str, channels: usize) -> Vec<(String, u64)> {
    let positions: Vec<_> = id.split('.').map(split_id).collect();
    assert_eq!(
        positions.len(),
        channels,
        "id {id:?} should have {channels} positions"
    );
    positions
}

/// Id of `epoch` at `seq`.
fn id_at(epoch: &str, seq: u64) -> String {
    format!("{epoch}-{seq}")
}

/// Reads the next `n` events and asserts they are the plain events `"<channel>-<k>"` for `k` in
/// `numbers`, each with id `EPOCH-k` of one epoch.
async fn expect_numbered(
    client: &mut SseClient,
    channel: &str,
    numbers: std::ops::RangeInclusive<u64>,
) -> Vec<SseEvent> {
    let expected: Vec<u64> = numbers.collect();
    let events = client.events(expected.len(), T).await;
    let datas: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    let want: Vec<String> = expected.iter().map(|n| format!("{channel}-{n}")).collect();
    assert_eq!(datas, want, "events: {events:?}");
    let epoch = events.first().map(|e| split_id(&e.id).0);
    for (event, n) in events.iter().zip(&expected) {
        assert_eq!(event.event, "message", "{event:?}");
        assert_eq!(Some(split_id(&event.id)), epoch.clone().map(|e| (e, *n)));
    }
    events
}

/// Asserts that no event arrives (and the stream stays open) for [`QUIET`].
async fn expect_quiet(client: &mut SseClient) {
    match tokio::time::timeout(QUIET, client.next_event(Duration::from_secs(60))).await {
        Err(_) => {}
        Ok(Some(event)) => panic!("expected no further event, got {event:?}"),
        Ok(None) => panic!(
            "expected the stream to stay open, it ended: {:?}",
            client.end_reason()
        ),
    }
}

/// Waits for the stream's first bytes (the `:ok` comment and the `retry:` line).
async fn read_preamble(client: &mut SseClient, within: Duration) {
    if client.retry().is_none() {
        client.wait_comment(within).await;
    }
    assert!(
        client.retry().is_some(),
        "no retry: line with the first comment"
    );
}

/// Reads a `gap` event and returns its parsed JSON data.
async fn expect_gap(client: &mut SseClient, channel: &str, reason: &str) -> (SseEvent, Value) {
    let event = client
        .next_event(T)
        .await
        .unwrap_or_else(|| panic!("stream ended before the {reason} gap event"));
    assert_eq!(event.event, "gap", "expected a gap event, got {event:?}");
    let data: Value = serde_json::from_str(&event.data)
        .unwrap_or_else(|e| panic!("gap data is not JSON ({e}): {:?}", event.data));
    assert_eq!(data["channel"], channel, "gap {data}");
    assert_eq!(data["reason"], reason, "gap {data}");
    (event, data)
}

async fn gaps(addr: SocketAddr, reason: &str) -> f64 {
    metric(addr, &format!("ssehub_gaps_total{{reason=\"{reason}\"}}")).await
}

// ---------------------------------------------------------------------------------------------
// 1. Stream basics

#[tokio::test]
async fn stream_headers_and_preamble_arrive_before_any_publish() {
    let hub = Hub::start_with(|c| c.retry = Duration::from_millis(1500)).await;
    let mut client = subscribe(&hub, "/events/basics", &[]).await;
    assert_eq!(client.header("content-type"), Some("text/event-stream"));
    assert_eq!(client.header("cache-control"), Some("no-cache"));
    assert_eq!(client.header("x-accel-buffering"), Some("no"));
    // Nothing is published and the default heartbeat is 15 s: whatever comes now is the preamble.
    read_preamble(&mut client, Duration::from_secs(2)).await;
    assert_eq!(client.retry(), Some(1500));
    assert_eq!(client.comments(), 1);
    assert_eq!(client.bytes_read(), ":ok\nretry: 1500\n\n".len());
    expect_quiet(&mut client).await;
    hub.stop().await;
}

#[tokio::test]
async fn heartbeat_comments_arrive_on_an_idle_stream() {
    let hub = Hub::start_with(|c| c.heartbeat = Duration::from_millis(200)).await;
    let mut client = subscribe(&hub, "/events/idle", &[]).await;
    read_preamble(&mut client, T).await;
    let after_preamble = client.comments();
    client.wait_comment(Duration::from_secs(3)).await;
    client.wait_comment(Duration::from_secs(3)).await;
    assert!(client.comments() >= after_preamble + 2);
    // Heartbeats are comments, never events.
    expect_quiet(&mut client).await;
    hub.stop().await;
}

#[tokio::test]
async fn multi_line_data_is_split_into_data_lines_and_cannot_inject_fields() {
    let hub = Hub::start().await;
    let mut client = subscribe(&hub, "/events/lines", &[]).await;
    let cases = [
        ("l1\nl2\rl3\r\nl4", "l1\nl2\nl3\nl4"),
        (
            "a\n\nevent: x\nid: 9\ndata: y",
            "a\n\nevent: x\nid: 9\ndata: y",
        ),
        ("\r\nretry: 1\r\r\n: c\n", "\nretry: 1\n\n: c\n"),
        (" leading space", " leading space"),
        ("", ""),
    ];
    let mut ids = Vec::new();
    for (data, _) in &cases {
        ids.push(publish_ok(hub.addr, json!({"channel": "lines", "data": data})).await);
    }
    // Empty data is one empty `data:` line: EventSource dispatches it with data "".
    let events = client.events(cases.len(), T).await;
    for ((event, (sent, expected)), id) in events.iter().zip(&cases).zip(&ids) {
        assert_eq!(&event.data, expected, "data {sent:?} arrived as {event:?}");
        assert_eq!(
            event.event, "message",
            "data {sent:?} changed the event name"
        );
        assert_eq!(&event.id, id, "data {sent:?} changed the id");
    }
    assert_eq!(
        client.retry(),
        Some(3000),
        "a data line set the reconnect delay"
    );
    expect_quiet(&mut client).await;
    hub.stop().await;
}

#[tokio::test]
async fn named_events_json_data_and_increasing_ids() {
    let hub = Hub::start().await;
    let mut client = subscribe(&hub, "/events/kinds", &[]).await;
    let payload = json!({"k": [1, 2, {"x": null}], "s": "q\"uote\nline", "n": 1.5});
    let id1 = publish_ok(
        hub.addr,
        json!({"channel": "kinds", "event": "update", "data": "named"}),
    )
    .await;
    let id2 = publish_ok(hub.addr, json!({"channel": "kinds", "data": payload})).await;
    let id3 = publish_ok(hub.addr, json!({"channel": "kinds", "data": 42})).await;
    let events = client.events(3, T).await;

    assert_eq!(events[0].event, "update");
    assert_eq!(events[0].data, "named");
    assert_eq!(events[1].event, "message");
    assert_eq!(events[1].data, serde_json::to_string(&payload).unwrap());
    let parsed: Value = serde_json::from_str(&events[1].data).expect("JSON data parses");
    assert_eq!(parsed, payload);
    assert_eq!(events[2].data, "42");

    let ids: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, [id1.as_str(), id2.as_str(), id3.as_str()]);
    let positions: Vec<(String, u64)> = ids.iter().map(|id| split_id(id)).collect();
    assert!(positions.iter().all(|(e, _)| *e == positions[0].0));
    let seqs: Vec<u64> = positions.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, [1, 2, 3]);
    for id in ids {
        assert!(id.len() < 32, "id {id:?} is not short");
    }
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Resume

#[tokio::test]
async fn resume_with_last_event_id_header_gets_exactly_the_missed_events_then_live() {
    let hub = Hub::start().await;
    let mut first = subscribe(&hub, "/events/res", &[]).await;
    publish_numbered(hub.addr, "res", 1..=10).await;
    let read = expect_numbered(&mut first, "res", 1..=3).await;
    drop(first);

    let mut again = resume(&hub, "res", &read[2].id).await;
    expect_numbered(&mut again, "res", 4..=10).await;
    expect_quiet(&mut again).await;
    publish_numbered(hub.addr, "res", 11..=12).await;
    expect_numbered(&mut again, "res", 11..=12).await;
    hub.stop().await;
}

#[tokio::test]
async fn resume_with_query_parameter_and_header_wins_over_query() {
    let hub = Hub::start().await;
    let ids = publish_numbered(hub.addr, "resq", 1..=10).await;

    let path = format!("/events/resq?lastEventId={}", ids[2]);
    let mut by_query = subscribe(&hub, &path, &[]).await;
    expect_numbered(&mut by_query, "resq", 4..=10).await;
    expect_quiet(&mut by_query).await;

    // Header says "after 5", query says "after 2": the header wins.
    let path = format!("/events/resq?lastEventId={}", ids[1]);
    let mut both = subscribe(&hub, &path, &[("Last-Event-ID", &ids[4])]).await;
    expect_numbered(&mut both, "resq", 6..=10).await;
    expect_quiet(&mut both).await;

    publish_numbered(hub.addr, "resq", 11..=11).await;
    expect_numbered(&mut by_query, "resq", 11..=11).await;
    expect_numbered(&mut both, "resq", 11..=11).await;
    hub.stop().await;
}

#[tokio::test]
async fn earliest_gets_all_retained_history_then_live() {
    let hub = Hub::start().await;
    publish_numbered(hub.addr, "early", 1..=10).await;
    let mut client = subscribe(&hub, "/events/early?lastEventId=earliest", &[]).await;
    expect_numbered(&mut client, "early", 1..=10).await;
    expect_quiet(&mut client).await;
    publish_numbered(hub.addr, "early", 11..=11).await;
    expect_numbered(&mut client, "early", 11..=11).await;

    // No cursor at all: live only.
    let mut live = subscribe(&hub, "/events/early", &[]).await;
    expect_quiet(&mut live).await;
    hub.stop().await;
}

#[tokio::test]
async fn earliest_after_trimming_gets_the_last_history_size_events_without_gap() {
    let hub = Hub::start_with(|c| c.history_size = 5).await;
    publish_numbered(hub.addr, "trim", 1..=20).await;
    let mut client = subscribe(&hub, "/events/trim", &[("Last-Event-ID", "earliest")]).await;
    expect_numbered(&mut client, "trim", 16..=20).await;
    expect_quiet(&mut client).await;
    assert_eq!(gaps(hub.addr, "trimmed").await, 0.0);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Gaps

#[tokio::test]
async fn trimmed_cursor_gets_gap_then_retained_history_and_gap_id_resumes_cleanly() {
    let hub = Hub::start_with(|c| c.history_size = 5).await;
    let ids = publish_numbered(hub.addr, "g", 1..=20).await;
    let (epoch, _) = split_id(&ids[0]);
    let before = gaps(hub.addr, "trimmed").await;

    let mut client = resume(&hub, "g", &ids[1]).await;
    let (gap, data) = expect_gap(&mut client, "g", "trimmed").await;
    assert_eq!(data["last_event_id"], ids[1].as_str(), "gap {data}");
    assert_eq!(data["first_id"], ids[15].as_str(), "gap {data}");
    assert_eq!(
        gap.id,
        id_at(&epoch, 15),
        "gap id is the position before the history"
    );
    expect_numbered(&mut client, "g", 16..=20).await;
    expect_quiet(&mut client).await;
    assert_eq!(gaps(hub.addr, "trimmed").await, before + 1.0);
    drop(client);

    // Reconnecting with the gap event's own id is an ordinary resume.
    let mut again = resume(&hub, "g", &gap.id).await;
    expect_numbered(&mut again, "g", 16..=20).await;
    expect_quiet(&mut again).await;
    assert_eq!(gaps(hub.addr, "trimmed").await, before + 1.0);
    hub.stop().await;
}

#[tokio::test]
async fn invalid_cursors_get_invalid_cursor_gap_then_retained_history() {
    let hub = Hub::start_with(|c| c.history_size = 5).await;
    let ids = publish_numbered(hub.addr, "inv", 1..=20).await;
    let (epoch, _) = split_id(&ids[0]);
    let long = "x".repeat(10 * 1024);
    let before = gaps(hub.addr, "invalid_cursor").await;
    for cursor in ["garbage", "-1", long.as_str()] {
        let mut client = resume(&hub, "inv", cursor).await;
        let (gap, data) = expect_gap(&mut client, "inv", "invalid_cursor").await;
        assert_eq!(data["last_event_id"], Value::Null, "gap {data}");
        assert_eq!(data["first_id"], ids[15].as_str(), "gap {data}");
        assert_eq!(gap.id, id_at(&epoch, 15));
        expect_numbered(&mut client, "inv", 16..=20).await;
        expect_quiet(&mut client).await;
    }
    // Same through the query parameter.
    let mut client = subscribe(&hub, "/events/inv?lastEventId=garbage", &[]).await;
    expect_gap(&mut client, "inv", "invalid_cursor").await;
    expect_numbered(&mut client, "inv", 16..=20).await;
    assert_eq!(gaps(hub.addr, "invalid_cursor").await, before + 4.0);
    hub.stop().await;
}

#[tokio::test]
async fn cursor_beyond_head_gets_cursor_ahead_gap() {
    let hub = Hub::start_with(|c| c.history_size = 5).await;
    let ids = publish_numbered(hub.addr, "ahead", 1..=20).await;
    let (epoch, _) = split_id(&ids[0]);
    let before = gaps(hub.addr, "cursor_ahead").await;

    let mut client = resume(&hub, "ahead", &id_at(&epoch, 999)).await;
    let (_, data) = expect_gap(&mut client, "ahead", "cursor_ahead").await;
    assert_eq!(data["last_event_id"], id_at(&epoch, 999), "gap {data}");
    assert_eq!(data["first_id"], ids[15].as_str(), "gap {data}");
    expect_numbered(&mut client, "ahead", 16..=20).await;
    expect_quiet(&mut client).await;
    publish_numbered(hub.addr, "ahead", 21..=21).await;
    expect_numbered(&mut client, "ahead", 21..=21).await;
    assert_eq!(gaps(hub.addr, "cursor_ahead").await, before + 1.0);
    hub.stop().await;
}

#[tokio::test]
async fn cursor_from_before_a_restart_gets_epoch_changed_gap() {
    let old = Hub::start().await;
    let old_ids = publish_numbered(old.addr, "restart", 1..=3).await;
    old.stop().await;

    let hub = Hub::start().await;
    let new_ids = publish_numbered(hub.addr, "restart", 1..=2).await;
    assert_ne!(split_id(&old_ids[0]).0, split_id(&new_ids[0]).0);
    let mut client = resume(&hub, "restart", &old_ids[2]).await;
    let (gap, data) = expect_gap(&mut client, "restart", "epoch_changed").await;
    assert_eq!(data["last_event_id"], old_ids[2].as_str(), "gap {data}");
    assert_eq!(data["first_id"], new_ids[0].as_str(), "gap {data}");
    assert_eq!(gap.id, id_at(&split_id(&new_ids[0]).0, 0));
    expect_numbered(&mut client, "restart", 1..=2).await;
    expect_quiet(&mut client).await;
    assert_eq!(gaps(hub.addr, "epoch_changed").await, 1.0);
    drop(client);

    let mut again = resume(&hub, "restart", &gap.id).await;
    expect_numbered(&mut again, "restart", 1..=2).await;
    expect_quiet(&mut again).await;
    assert_eq!(gaps(hub.addr, "epoch_changed").await, 1.0);
    hub.stop().await;
}

#[tokio::test]
async fn cursor_of_another_channel_gets_epoch_changed_gap() {
    let hub = Hub::start().await;
    let a_ids = publish_numbered(hub.addr, "chan-a", 1..=3).await;
    publish_numbered(hub.addr, "chan-b", 1..=2).await;
    let mut client = resume(&hub, "chan-b", &a_ids[1]).await;
    let (_, data) = expect_gap(&mut client, "chan-b", "epoch_changed").await;
    assert_eq!(data["last_event_id"], a_ids[1].as_str(), "gap {data}");
    expect_numbered(&mut client, "chan-b", 1..=2).await;
    expect_quiet(&mut client).await;
    assert_eq!(gaps(hub.addr, "epoch_changed").await, 1.0);
    hub.stop().await;
}

#[tokio::test]
async fn invalid_cursor_on_a_channel_without_history_gets_gap_then_live() {
    let hub = Hub::start().await;
    let mut client = resume(&hub, "blank", "garbage").await;
    let (gap, data) = expect_gap(&mut client, "blank", "invalid_cursor").await;
    assert_eq!(data["first_id"], Value::Null, "gap {data}");
    let (epoch, seq) = split_id(&gap.id);
    assert_eq!(seq, 0, "gap id before any event: {gap:?}");
    expect_quiet(&mut client).await;
    let ids = publish_numbered(hub.addr, "blank", 1..=1).await;
    assert_eq!(ids[0], id_at(&epoch, 1));
    expect_numbered(&mut client, "blank", 1..=1).await;

    let mut again = resume(&hub, "blank", &gap.id).await;
    expect_numbered(&mut again, "blank", 1..=1).await;
    expect_quiet(&mut again).await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Multi-channel connections

/// Reads `n` events of a connection on channels `names`; asserts every id is a composite whose
/// position for the event's channel (told by its first data line, `"<channel>-<k>"`) is `k`, positions never
/// go back, and each channel's events come in order. Returns the `k`s per channel.
async fn read_multi(client: &mut SseClient, names: &[&str], n: usize) -> Vec<Vec<u64>> {
    let events = client.events(n, T).await;
    let mut seen: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    let mut last: Option<Vec<(String, u64)>> = None;
    for event in &events {
        assert_eq!(event.event, "message", "{event:?}");
        let label = event.data.lines().next().unwrap_or_default();
        let (channel, k) = label
            .rsplit_once('-')
            .unwrap_or_else(|| panic!("unexpected data {event:?}"));
        let k: u64 = k.parse().expect("numbered data");
        let index = names
            .iter()
            .position(|c| *c == channel)
            .unwrap_or_else(|| panic!("event of an unknown channel: {event:?}"));
        let positions = split_composite(&event.id, names.len());
        assert_eq!(positions[index].1, k, "id of {event:?}");
        if let Some(previous) = &last {
            for (p, q) in previous.iter().zip(&positions) {
                assert_eq!(p.0, q.0, "epoch changed within a stream: {event:?}");
                assert!(q.1 >= p.1, "position went back: {event:?}");
            }
        }
        last = Some(positions);
        seen[index].push(k);
    }
    seen
}

#[tokio::test]
async fn multi_channel_stream_has_composite_ids_and_resumes_every_channel() {
    let hub = Hub::start().await;
    let names = ["ma", "mb"];
    let mut client = subscribe(&hub, "/events?channel=ma&channel=mb", &[]).await;
    for (channel, k) in [
        ("ma", 1),
        ("mb", 1),
        ("ma", 2),
        ("ma", 3),
        ("mb", 2),
        ("mb", 3),
    ] {
        publish_numbered(hub.addr, channel, k..=k).await;
    }
    let seen = read_multi(&mut client, &names, 6).await;
    assert_eq!(seen, [vec![1, 2, 3], vec![1, 2, 3]]);
    let cursor = client.last_event_id().to_string();
    assert_eq!(
        split_composite(&cursor, 2)
            .iter()
            .map(|p| p.1)
            .collect::<Vec<_>>(),
        [3, 3]
    );
    drop(client);

    publish_numbered(hub.addr, "ma", 4..=6).await;
    publish_numbered(hub.addr, "mb", 4..=5).await;
    let mut again = subscribe(
        &hub,
        "/events?channel=ma&channel=mb",
        &[("Last-Event-ID", &cursor)],
    )
    .await;
    let seen = read_multi(&mut again, &names, 5).await;
    assert_eq!(seen, [vec![4, 5, 6], vec![4, 5]]);
    expect_quiet(&mut again).await;

    // Live events of both channels keep coming on the resumed connection.
    publish_numbered(hub.addr, "mb", 6..=6).await;
    publish_numbered(hub.addr, "ma", 7..=7).await;
    let seen = read_multi(&mut again, &names, 2).await;
    assert_eq!(seen, [vec![7], vec![6]]);
    hub.stop().await;
}

#[tokio::test]
async fn composite_id_with_wrong_number_of_positions_gets_invalid_cursor_gaps() {
    let hub = Hub::start().await;
    let names = ["wa", "wb"];
    let a_ids = publish_numbered(hub.addr, "wa", 1..=2).await;
    let b_ids = publish_numbered(hub.addr, "wb", 1..=3).await;
    let three = format!("{}.{}.{}", a_ids[0], b_ids[0], a_ids[1]);
    for cursor in [a_ids[1].clone(), three] {
        let mut client = subscribe(
            &hub,
            "/events?channel=wa&channel=wb",
            &[("Last-Event-ID", &cursor)],
        )
        .await;
        let (gap_a, data_a) = expect_gap(&mut client, "wa", "invalid_cursor").await;
        let (gap_b, _) = expect_gap(&mut client, "wb", "invalid_cursor").await;
        assert_eq!(data_a["first_id"], a_ids[0].as_str(), "gap {data_a}");
        for gap in [&gap_a, &gap_b] {
            let positions = split_composite(&gap.id, 2);
            assert_eq!([positions[0].1, positions[1].1], [0, 0], "{gap:?}");
        }
        let seen = read_multi(&mut client, &names, 5).await;
        assert_eq!(seen, [vec![1, 2], vec![1, 2, 3]], "cursor {cursor:?}");
        expect_quiet(&mut client).await;
    }
    assert_eq!(gaps(hub.addr, "invalid_cursor").await, 4.0);
    hub.stop().await;
}

#[tokio::test]
async fn multi_channel_resume_reports_a_gap_only_for_the_channel_that_lost_events() {
    let hub = Hub::start_with(|c| c.history_size = 5).await;
    let names = ["pa", "pb"];
    let a_ids = publish_numbered(hub.addr, "pa", 1..=3).await;
    let b_ids = publish_numbered(hub.addr, "pb", 1..=3).await;
    let cursor = format!("{}.{}", a_ids[2], b_ids[2]);
    // pa moves on far enough to trim its events 4..=15; pb keeps everything after 3.
    let a_more = publish_numbered(hub.addr, "pa", 4..=20).await;
    publish_numbered(hub.addr, "pb", 4..=5).await;

    let mut client = subscribe(
        &hub,
        "/events?channel=pa&channel=pb",
        &[("Last-Event-ID", &cursor)],
    )
    .await;
    let (gap, data) = expect_gap(&mut client, "pa", "trimmed").await;
    assert_eq!(data["last_event_id"], a_ids[2].as_str(), "gap {data}");
    assert_eq!(data["first_id"], a_more[12].as_str(), "gap {data}");
    let positions = split_composite(&gap.id, 2);
    assert_eq!([positions[0].1, positions[1].1], [15, 3], "{gap:?}");
    let seen = read_multi(&mut client, &names, 7).await;
    assert_eq!(seen, [(16..=20).collect::<Vec<_>>(), vec![4, 5]]);
    expect_quiet(&mut client).await;
    assert_eq!(gaps(hub.addr, "trimmed").await, 1.0);
    hub.stop().await;
}

#[tokio::test]
async fn replay_larger_than_one_frame_arrives_whole_and_in_order() {
    let hub = Hub::start().await;
    let names = ["big-a", "big-b"];
    let pad = "p".repeat(2000);
    for k in 1..=150u64 {
        for channel in names {
            let data = format!("{channel}-{k}\n{pad}");
            publish_ok(hub.addr, json!({"channel": channel, "data": data})).await;
        }
    }
    // About 300 kB per channel: several body frames.
    let mut single = resume(&hub, "big-a", "earliest").await;
    let events = single.events(150, T).await;
    for (event, k) in events.iter().zip(1u64..) {
        assert_eq!(event.data, format!("big-a-{k}\n{pad}"));
        assert_eq!(split_id(&event.id).1, k);
    }
    expect_quiet(&mut single).await;

    let mut multi = subscribe(
        &hub,
        "/events?channel=big-a&channel=big-b",
        &[("Last-Event-ID", "earliest")],
    )
    .await;
    let seen = read_multi(&mut multi, &names, 300).await;
    let all: Vec<u64> = (1..=150).collect();
    assert_eq!(seen, [all.clone(), all]);
    expect_quiet(&mut multi).await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Replay racing live publishing

const RACE_EVENTS: u64 = 2000;
const RACE_SUBSCRIBERS: u64 = 20;

/// Publishes `RACE_EVENTS` events `"1"`, `"2"`... to `channel` one after another, reporting
/// `(published, id of the newest)` after each.
async fn race_publisher(addr: SocketAddr, channel: String, progress: watch::Sender<(u64, String)>) {
    for n in 1..=RACE_EVENTS {
        let id = publish_ok(addr, json!({"channel": channel, "data": n.to_string()})).await;
        progress.send_replace((n, id));
    }
}

/// Reads until seq `RACE_EVENTS`, asserting the stream holds exactly seqs `after+1..` in order,
/// each once, all of one epoch, with no gap event.
async fn race_reader(mut client: SseClient, who: String, after: u64) {
    let mut expected = after + 1;
    let mut epoch: Option<String> = None;
    while expected <= RACE_EVENTS {
        let event = client
            .next_event(T)
            .await
            .unwrap_or_else(|| panic!("{who}: stream ended before seq {expected}"));
        assert_eq!(event.event, "message", "{who}: unexpected {event:?}");
        let (e, seq) = split_id(&event.id);
        if let Some(epoch) = &epoch {
            assert_eq!(&e, epoch, "{who}: epoch changed at {event:?}");
        }
        epoch = Some(e);
        assert_eq!(
            seq, expected,
            "{who}: expected seq {expected}, got {event:?} (duplicate or missed events)"
        );
        assert_eq!(event.data, seq.to_string(), "{who}: {event:?}");
        expected += 1;
    }
    expect_quiet(&mut client).await;
}

/// Publishes in the background while subscribers join at staggered moments; each opens with
/// `cursor(progress)` (a `Last-Event-ID` and the seq it stands for) and must read exactly the
/// events after it.
async fn run_race(channel: &str, resume_mid_stream: bool) {
    let hub = Hub::start_with(|c| {
        c.history_size = 5000;
        // Lag eviction is not under test here.
        c.max_lag = 100_000;
    })
    .await;
    let (tx, rx) = watch::channel((0u64, String::new()));
    let publisher = tokio::spawn(race_publisher(hub.addr, channel.to_string(), tx));
    let mut readers = Vec::new();
    for i in 0..RACE_SUBSCRIBERS {
        let mut rx = rx.clone();
        let addr = hub.addr;
        let channel = channel.to_string();
        readers.push(tokio::spawn(async move {
            let threshold = (i * RACE_EVENTS / RACE_SUBSCRIBERS).max(u64::from(resume_mid_stream));
            let (published, newest) = rx
                .wait_for(|(n, _)| *n >= threshold)
                .await
                .expect("publisher alive")
                .clone();
            let path = format!("/events/{channel}");
            let who = format!("subscriber {i} (joined after {published})");
            let (client, after) = if resume_mid_stream {
                let client = SseClient::connect(addr, &path, &[("Last-Event-ID", &newest)]).await;
                (client, published)
            } else {
                let client =
                    SseClient::connect(addr, &path, &[("Last-Event-ID", "earliest")]).await;
                (client, 0)
            };
            assert_eq!(client.status, 200, "{who}");
            race_reader(client, who, after).await;
        }));
    }
    tokio::time::timeout(RACE_TIMEOUT, async {
        publisher.await.expect("publisher task");
        for reader in readers {
            reader.await.expect("reader task");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("race on {channel} did not finish within {RACE_TIMEOUT:?}"));
    assert_eq!(gaps(hub.addr, "trimmed").await, 0.0);
    assert_eq!(gaps(hub.addr, "invalid_cursor").await, 0.0);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replay_from_earliest_races_concurrent_publishing_without_loss_or_duplicates() {
    run_race("race-earliest", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn resume_mid_stream_races_concurrent_publishing_without_loss_or_duplicates() {
    run_race("race-resume", true).await;
}

// ---------------------------------------------------------------------------------------------
// 6. Terminal events

/// Publishes `"job-1".."job-3"` then the terminal event `done`; returns the four ids.
async fn publish_job(addr: SocketAddr, channel: &str) -> Vec<String> {
    let mut ids = publish_numbered(addr, channel, 1..=3).await;
    ids.push(
        publish_ok(
            addr,
            json!({"channel": channel, "event": "done", "data": "finished", "close": true}),
        )
        .await,
    );
    ids
}

/// Reads the terminal event and the clean end of the stream.
async fn expect_close_and_end(client: &mut SseClient, close_id: &str) {
    let event = client.next_event(T).await.expect("the terminal event");
    assert_eq!(event.event, "done", "{event:?}");
    assert_eq!(event.data, "finished");
    assert_eq!(event.id, close_id);
    client.expect_end(T).await;
    assert_eq!(client.end_reason(), Some("end of body"));
}

async fn expect_no_content(hub: &Hub, path: &str, headers: &[(&str, &str)]) {
    let mut client = SseClient::connect(hub.addr, path, headers).await;
    assert_eq!(client.status, 204, "GET {path} with {headers:?}");
    client.expect_end(T).await;
    assert_eq!(client.bytes_read(), 0);
}

#[tokio::test]
async fn terminal_event_ends_streams_and_later_subscribers_get_the_rest_or_204() {
    let hub = Hub::start().await;
    let mut live = subscribe(&hub, "/events/job", &[]).await;
    let ids = publish_job(hub.addr, "job").await;
    expect_numbered(&mut live, "job", 1..=3).await;
    expect_close_and_end(&mut live, &ids[3]).await;

    expect_no_content(&hub, "/events/job", &[]).await;
    expect_no_content(&hub, "/events/job", &[("Last-Event-ID", &ids[3])]).await;
    expect_no_content(&hub, &format!("/events/job?lastEventId={}", ids[3]), &[]).await;

    let mut late = resume(&hub, "job", &ids[1]).await;
    expect_numbered(&mut late, "job", 3..=3).await;
    expect_close_and_end(&mut late, &ids[3]).await;

    let mut earliest = resume(&hub, "job", "earliest").await;
    expect_numbered(&mut earliest, "job", 1..=3).await;
    expect_close_and_end(&mut earliest, &ids[3]).await;

    let refused = publish(hub.addr, json!({"channel": "job", "data": "more"})).await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert!(refused.json()["error"].is_string(), "{}", refused.text());
    let refused = common::publish_raw(hub.addr, "job", "more").await;
    assert_eq!(refused.status, 409, "{}", refused.text());
    // Nothing was appended: the close event is still the last one.
    expect_no_content(&hub, "/events/job", &[("Last-Event-ID", &ids[3])]).await;
    hub.stop().await;
}

#[tokio::test]
async fn multi_channel_stream_outlives_a_closed_channel() {
    let hub = Hub::start().await;
    let mut both = subscribe(&hub, "/events?channel=job2&channel=open", &[]).await;
    let ids = publish_job(hub.addr, "job2").await;
    let events = both.events(4, T).await;
    let datas: Vec<&str> = events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(datas, ["job2-1", "job2-2", "job2-3", "finished"]);
    assert_eq!(events[3].event, "done");
    let close_position = split_composite(&events[3].id, 2)[0].clone();
    assert_eq!(close_position, split_id(&ids[3]));
    expect_quiet(&mut both).await;

    publish_numbered(hub.addr, "open", 1..=2).await;
    let seen = read_multi(&mut both, &["job2", "open"], 2).await;
    assert_eq!(seen, [vec![], vec![1, 2]]);

    // A new connection on the closed and the open channel still streams the open one.
    let mut fresh = subscribe(&hub, "/events?channel=job2&channel=open", &[]).await;
    expect_quiet(&mut fresh).await;
    publish_numbered(hub.addr, "open", 3..=3).await;
    assert_eq!(read_multi(&mut fresh, &["job2", "open"], 1).await[1], [3]);
    assert_eq!(read_multi(&mut both, &["job2", "open"], 1).await[1], [3]);

    // Once every channel of a connection has ended, the stream ends; at start that is a 204.
    publish_job(hub.addr, "job3").await;
    expect_no_content(&hub, "/events?channel=job2&channel=job3", &[]).await;
    publish_ok(
        hub.addr,
        json!({"channel": "open", "data": "open-4", "close": true}),
    )
    .await;
    let last = both.next_event(T).await.expect("the open channel's close");
    assert_eq!(last.data, "open-4");
    both.expect_end(T).await;
    assert_eq!(both.end_reason(), Some("end of body"));
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 7. History TTL

/// Whether a fresh `earliest` subscriber of `channel` gets no history for a short while.
async fn history_is_empty(hub: &Hub, channel: &str) -> bool {
    let mut probe = resume(hub, channel, "earliest").await;
    tokio::time::timeout(
        Duration::from_millis(100),
        probe.next_event(Duration::from_secs(60)),
    )
    .await
    .is_err()
}

#[tokio::test]
async fn expired_history_is_not_replayed() {
    let hub = Hub::start_with(|c| c.history_ttl = Duration::from_millis(300)).await;
    // A live subscriber keeps the channel (and its epoch) alive while its history expires.
    let mut keeper = subscribe(&hub, "/events/ttl", &[]).await;
    let ids = publish_numbered(hub.addr, "ttl", 1..=3).await;
    expect_numbered(&mut keeper, "ttl", 1..=3).await;

    wait_until(Duration::from_secs(5), "the ttl history expired", || {
        history_is_empty(&hub, "ttl")
    })
    .await;

    let mut late = resume(&hub, "ttl", "earliest").await;
    expect_quiet(&mut late).await;
    publish_numbered(hub.addr, "ttl", 4..=4).await;
    expect_numbered(&mut late, "ttl", 4..=4).await;
    expect_numbered(&mut keeper, "ttl", 4..=4).await;

    // A cursor whose following events expired gets a trimmed gap, then what is retained.
    let mut behind = resume(&hub, "ttl", &ids[0]).await;
    let (_, data) = expect_gap(&mut behind, "ttl", "trimmed").await;
    assert_eq!(data["last_event_id"], ids[0].as_str(), "gap {data}");
    let rest: Vec<SseEvent> = match tokio::time::timeout(QUIET, behind.next_event(T)).await {
        Ok(Some(event)) => vec![event],
        Ok(None) => panic!("stream ended"),
        Err(_) => Vec::new(),
    };
    // Event 4 may or may not have expired too by now; nothing older may come.
    assert!(
        rest.iter().all(|e| e.data == "ttl-4"),
        "expired events replayed: {rest:?}"
    );
    hub.stop().await;
}

/// Whether the history of the closed `channel` is gone: an `earliest` subscriber gets either
/// `204` or a stream without history.
async fn closed_history_is_gone(hub: &Hub, channel: &str) -> bool {
    let mut probe = SseClient::connect(
        hub.addr,
        &format!("/events/{channel}"),
        &[("Last-Event-ID", "earliest")],
    )
    .await;
    match probe.status {
        204 => true,
        200 => tokio::time::timeout(
            Duration::from_millis(100),
            probe.next_event(Duration::from_secs(60)),
        )
        .await
        .is_err(),
        other => panic!("earliest on closed {channel}: status {other}"),
    }
}

#[tokio::test]
async fn terminal_state_outlives_the_expiry_of_its_history() {
    let hub = Hub::start_with(|c| c.history_ttl = Duration::from_millis(300)).await;
    let ids = publish_job(hub.addr, "expired-job").await;
    expect_no_content(&hub, "/events/expired-job", &[("Last-Event-ID", &ids[3])]).await;

    wait_until(
        Duration::from_secs(5),
        "the closed channel's history expired",
        || closed_history_is_gone(&hub, "expired-job"),
    )
    .await;

    // EventSource reconnects after the end with the close event's id: it must be told to stop.
    expect_no_content(&hub, "/events/expired-job", &[("Last-Event-ID", &ids[3])]).await;
    expect_no_content(&hub, "/events/expired-job", &[]).await;
    let refused = publish(hub.addr, json!({"channel": "expired-job", "data": "more"})).await;
    assert_eq!(
        refused.status,
        409,
        "publish after close: {}",
        refused.text()
    );
    hub.stop().await;
}
