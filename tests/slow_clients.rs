//! Slow and vanishing subscribers over real HTTP/TCP: lag and write-timeout eviction, lossless
//! resume after eviction, a paused reader that gets its whole stream, and gauge cleanup when
//! clients disconnect.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{
    assert_quiet, metric, parse_metric, publish_raw, raw_connect, request, seq, wait_until, Hub,
    SseClient, SseEvent,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

const LAGGED: &str = "ssehub_evictions_total{reason=\"lagged\"}";
const WRITE_TIMEOUT: &str = "ssehub_evictions_total{reason=\"write_timeout\"}";
const SUBSCRIBERS: &str = "ssehub_subscribers";
const CONNECTIONS: &str = "ssehub_connections";
const CHANNELS: &str = "ssehub_channels";

/// `size` bytes of data that name event number `i` (0-based) in their first 8 bytes.
fn payload(i: usize, size: usize) -> String {
    let mut data = format!("{i:08}:");
    data.extend(std::iter::repeat_n('x', size.saturating_sub(data.len())));
    data
}

/// The EPOCH of an `EPOCH-SEQ` id.
fn epoch_of(id: &str) -> &str {
    id.rsplit_once('-')
        .map(|(epoch, _)| epoch)
        .unwrap_or_else(|| panic!("event id {id:?} is not EPOCH-SEQ"))
}

/// One `GET /metrics` exposition.
async fn exposition(addr: SocketAddr) -> String {
    let response = request(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    response.text()
}

fn series(exposition: &str, name: &str) -> f64 {
    parse_metric(exposition, name).unwrap_or(0.0)
}

/// Publishes `data` to `channel` and checks the answer is 200 with the expected seq.
async fn publish_seq(addr: SocketAddr, channel: &str, data: &str, seq: u64) -> String {
    let response = publish_raw(addr, channel, data).await;
    assert_eq!(
        response.status,
        200,
        "publish #{seq} to {channel}: {}",
        response.text()
    );
    let receipt = response.json();
    let id = receipt["id"]
        .as_str()
        .unwrap_or_else(|| panic!("publish #{seq}: no id in {receipt}"))
        .to_string();
    assert_eq!(common::seq(&id), seq, "publish #{seq}: receipt {receipt}");
    id
}

/// A subscriber that sends its request and then never reads a byte.
async fn stalled_subscriber(addr: SocketAddr, channel: &str) -> TcpStream {
    let mut stream = raw_connect(addr).await;
    let head = format!(
        "GET /events/{channel} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream
        .write_all(head.as_bytes())
        .await
        .expect("send the stalled subscriber's request");
    stream
}

/// Reads `stream` until the server closes it (EOF or reset); returns the bytes read and how it
/// ended. Panics if it is still open after `timeout`.
async fn read_until_closed(stream: &mut TcpStream, timeout: Duration) -> (usize, String) {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!(
                "the server did not close the stalled connection within {timeout:?} \
                 ({total} bytes read)"
            ),
            Ok(Ok(0)) => return (total, "EOF".to_string()),
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => return (total, format!("read error: {e}")),
        }
    }
}

/// Checks that `events` are the events numbered `first..` (1-based seqs) of one epoch, unnamed,
/// with the data [`payload`] gave them.
fn check_run(events: &[SseEvent], first: u64, size: usize, who: &str) {
    let epoch = events.first().map(|e| epoch_of(&e.id).to_string());
    for (k, event) in events.iter().enumerate() {
        let seq = first + k as u64;
        assert_eq!(
            common::seq(&event.id),
            seq,
            "{who}: event #{k} has id {:?}, expected seq {seq} (gap or duplicate)",
            event.id
        );
        assert_eq!(
            Some(epoch_of(&event.id)),
            epoch.as_deref(),
            "{who}: epoch changed"
        );
        assert_eq!(
            event.event, "message",
            "{who}: unexpected event type at seq {seq}"
        );
        assert!(
            event.data == payload(seq as usize - 1, size),
            "{who}: wrong data at seq {seq}: {:?}...",
            &event.data[..event.data.len().min(40)]
        );
    }
}

/// Waits (up to 10 s) until the hub counts `count` subscribers.
async fn wait_subscribers(addr: SocketAddr, count: u32, what: &str) {
    wait_until(Duration::from_secs(10), what, || async {
        metric(addr, SUBSCRIBERS).await == f64::from(count)
    })
    .await;
}

/// Reads events until one whose data is `marker`; returns those before it.
async fn read_until_marker(client: &mut SseClient, marker: &str, each: Duration) -> Vec<SseEvent> {
    let mut events = Vec::new();
    loop {
        match client.next_event(each).await {
            Some(event) if event.data == marker => return events,
            Some(event) => events.push(event),
            None => panic!(
                "stream ended after {} events, before the marker {marker:?} ({:?})",
                events.len(),
                client.end_reason()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Lag eviction

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn lagging_subscriber_is_evicted_and_others_get_everything() {
    const EVENTS: usize = 3000;
    const SIZE: usize = 4096;
    let hub = Hub::start_with(|c| {
        c.max_lag = 50;
        c.history_size = 1000;
        c.write_timeout = Duration::from_secs(60);
        c.heartbeat = Duration::from_secs(60);
    })
    .await;
    let addr = hub.addr;
    let channel = "slow/lag";

    let mut stalled = stalled_subscriber(addr, channel).await;
    wait_subscribers(addr, 1, "the stalled subscriber is open").await;
    let mut healthy = SseClient::connect(addr, &format!("/events/{channel}"), &[]).await;
    assert_eq!(healthy.status, 200);
    wait_subscribers(addr, 2, "both subscribers are open").await;

    let reader = tokio::spawn(async move {
        let events = healthy.events(EVENTS, Duration::from_secs(180)).await;
        (healthy, events)
    });

    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..EVENTS {
        let sent = Instant::now();
        publish_seq(addr, channel, &payload(i, SIZE), i as u64 + 1).await;
        slowest = slowest.max(sent.elapsed());
    }
    println!(
        "published {EVENTS} x {SIZE} B in {:?}; slowest publish round trip {slowest:?}",
        started.elapsed()
    );

    let (healthy, events) = reader.await.expect("healthy reader task");
    check_run(&events, 1, SIZE, "healthy subscriber");

    wait_until(
        Duration::from_secs(10),
        "a lagged eviction is counted",
        || async { metric(addr, LAGGED).await >= 1.0 },
    )
    .await;
    let (bytes, how) = read_until_closed(&mut stalled, Duration::from_secs(30)).await;
    println!("stalled subscriber read {bytes} bytes, then {how}");
    assert!(
        bytes < EVENTS * SIZE,
        "the stalled subscriber got the whole stream ({bytes} bytes): it was not cut"
    );
    wait_subscribers(addr, 1, "only the healthy subscriber remains").await;
    assert_eq!(
        metric(addr, CONNECTIONS).await,
        2.0,
        "connections: the healthy stream and the metrics request"
    );
    assert_eq!(metric(addr, WRITE_TIMEOUT).await, 0.0);
    drop(healthy);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Write-timeout eviction

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stalled_socket_is_evicted_after_write_timeout() {
    const MAX_EVENTS: usize = 2000;
    const SIZE: usize = 16 * 1024;
    let hub = Hub::start_with(|c| {
        c.max_lag = 1_000_000;
        c.history_size = 100_000;
        c.history_bytes = 1 << 30;
        c.write_timeout = Duration::from_millis(500);
        c.heartbeat = Duration::from_millis(200);
    })
    .await;
    let addr = hub.addr;
    let channel = "slow/write-timeout";

    let mut stalled = stalled_subscriber(addr, channel).await;
    wait_subscribers(addr, 1, "the stalled subscriber is open").await;
    let mut healthy = SseClient::connect(addr, &format!("/events/{channel}"), &[]).await;
    assert_eq!(healthy.status, 200);
    wait_subscribers(addr, 2, "both subscribers are open").await;

    let reader = tokio::spawn(async move {
        let events = read_until_marker(&mut healthy, "end", Duration::from_secs(30)).await;
        (healthy, events)
    });

    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut published = 0;
    let mut evicted = false;
    while published < MAX_EVENTS {
        let sent = Instant::now();
        publish_seq(
            addr,
            channel,
            &payload(published, SIZE),
            published as u64 + 1,
        )
        .await;
        slowest = slowest.max(sent.elapsed());
        published += 1;
        if published.is_multiple_of(10) && metric(addr, WRITE_TIMEOUT).await >= 1.0 {
            evicted = true;
            break;
        }
    }
    println!(
        "published {published} x {SIZE} B in {:?} (evicted during publishing: {evicted}); \
         slowest publish round trip {slowest:?}",
        started.elapsed()
    );
    wait_until(
        Duration::from_secs(10),
        "a write_timeout eviction is counted",
        || async { metric(addr, WRITE_TIMEOUT).await >= 1.0 },
    )
    .await;
    publish_seq(addr, channel, "end", published as u64 + 1).await;

    let (healthy, events) = reader.await.expect("healthy reader task");
    assert_eq!(events.len(), published, "healthy subscriber missed events");
    check_run(&events, 1, SIZE, "healthy subscriber");

    let (bytes, how) = read_until_closed(&mut stalled, Duration::from_secs(30)).await;
    println!("stalled subscriber read {bytes} bytes, then {how}");
    wait_subscribers(addr, 1, "only the healthy subscriber remains").await;
    assert_eq!(
        metric(addr, CONNECTIONS).await,
        2.0,
        "connections: the healthy stream and the metrics request"
    );
    assert_eq!(
        metric(addr, LAGGED).await,
        0.0,
        "nothing was trimmed and max_lag is huge: no lagged eviction expected"
    );
    drop(healthy);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Eviction loses nothing: resume by Last-Event-ID

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn evicted_subscriber_resumes_without_gap_or_duplicate() {
    const MAX_EVENTS: usize = 3000;
    const FIRST: usize = 5;
    const SIZE: usize = 4096;
    let hub = Hub::start_with(|c| {
        c.max_lag = 50;
        c.history_size = 10_000;
        c.history_bytes = 1 << 30;
        c.write_timeout = Duration::from_secs(60);
        c.heartbeat = Duration::from_secs(60);
    })
    .await;
    let addr = hub.addr;
    let channel = "slow/lossless";
    let path = format!("/events/{channel}");

    let mut slow = SseClient::connect(addr, &path, &[]).await;
    assert_eq!(slow.status, 200);
    wait_subscribers(addr, 1, "the subscriber is open").await;
    for i in 0..FIRST {
        publish_seq(addr, channel, &payload(i, SIZE), i as u64 + 1).await;
    }
    let first = slow.events(FIRST, Duration::from_secs(10)).await;
    check_run(&first, 1, SIZE, "first events");
    let early_id = slow.last_event_id().to_string();
    assert_eq!(early_id, first[FIRST - 1].id);

    // The client stops reading; flood until it is evicted.
    let mut published = FIRST;
    while published < MAX_EVENTS {
        publish_seq(
            addr,
            channel,
            &payload(published, SIZE),
            published as u64 + 1,
        )
        .await;
        published += 1;
        if published.is_multiple_of(25) && metric(addr, LAGGED).await >= 1.0 {
            break;
        }
    }
    wait_until(
        Duration::from_secs(10),
        "the stalled subscriber is evicted",
        || async { metric(addr, LAGGED).await >= 1.0 },
    )
    .await;
    let published = published as u64;

    // What reached the client before the cut is still readable; the stream then ends abruptly.
    let mut drained = Vec::new();
    while let Some(event) = slow.next_event(Duration::from_secs(15)).await {
        drained.push(event);
    }
    let end = slow.end_reason().unwrap_or_default().to_string();
    println!(
        "published {published}; evicted client parsed {} more events, then: {end}",
        drained.len()
    );
    assert!(
        end.starts_with("EOF before the end of the body") || end.starts_with("read error"),
        "an evicted stream ends abruptly (no final chunk), got: {end}"
    );
    check_run(
        &drained,
        FIRST as u64 + 1,
        SIZE,
        "events drained after eviction",
    );
    let last_id = slow.last_event_id().to_string();
    let last_seq = seq(&last_id);
    assert_eq!(last_seq, FIRST as u64 + drained.len() as u64);
    assert!(
        last_seq < published,
        "the evicted client already had everything"
    );
    drop(slow);

    // Resume from the last fully parsed event: exactly the rest, then live.
    let mut resumed = SseClient::connect(addr, &path, &[("Last-Event-ID", &last_id)]).await;
    assert_eq!(resumed.status, 200);
    let rest = resumed
        .events((published - last_seq) as usize, Duration::from_secs(60))
        .await;
    check_run(
        &rest,
        last_seq + 1,
        SIZE,
        "resumed after the last parsed event",
    );
    publish_seq(
        addr,
        channel,
        &payload(published as usize, SIZE),
        published + 1,
    )
    .await;
    let live = resumed.next_event(Duration::from_secs(10)).await;
    let live = live.expect("resumed stream ended before the live event");
    assert_eq!(
        seq(&live.id),
        published + 1,
        "after the replay comes the live event"
    );

    // Resume from the id recorded before the client stalled: also exactly the rest.
    let mut early = SseClient::connect(addr, &path, &[("Last-Event-ID", &early_id)]).await;
    assert_eq!(early.status, 200);
    let rest = early
        .events(published as usize + 1 - FIRST, Duration::from_secs(60))
        .await;
    check_run(&rest, FIRST as u64 + 1, SIZE, "resumed after the early id");
    publish_seq(
        addr,
        channel,
        &payload(published as usize + 1, SIZE),
        published + 2,
    )
    .await;
    let live = early.next_event(Duration::from_secs(10)).await;
    let live = live.expect("resumed stream ended before the live event");
    assert_eq!(seq(&live.id), published + 2);

    let metrics = exposition(addr).await;
    for reason in ["trimmed", "epoch_changed", "cursor_ahead", "invalid_cursor"] {
        let name = format!("ssehub_gaps_total{{reason=\"{reason}\"}}");
        assert_eq!(series(&metrics, &name), 0.0, "{name}");
    }
    drop((resumed, early));
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Disconnect cleanup

const CLIENTS: usize = 300;
const ROOMS: usize = 30;

async fn open_rooms(addr: SocketAddr, prefix: &str) -> Vec<SseClient> {
    let mut clients = Vec::with_capacity(CLIENTS);
    for i in 0..CLIENTS {
        let client =
            SseClient::connect(addr, &format!("/events/{prefix}-{}", i % ROOMS), &[]).await;
        assert_eq!(client.status, 200, "subscriber {i}");
        clients.push(client);
    }
    wait_until(
        Duration::from_secs(10),
        "300 subscribers on 30 channels are counted",
        || async {
            let m = exposition(addr).await;
            series(&m, SUBSCRIBERS) == CLIENTS as f64 && series(&m, CHANNELS) == ROOMS as f64
        },
    )
    .await;
    // The metrics request itself is an open connection.
    let m = exposition(addr).await;
    assert_eq!(
        series(&m, CONNECTIONS),
        CLIENTS as f64 + 1.0,
        "connections while 300 streams are open (plus the metrics request)"
    );
    clients
}

/// Waits until no subscriber is left and the only connection is the metrics request itself.
async fn wait_all_gone(addr: SocketAddr) {
    wait_until(
        Duration::from_secs(10),
        "subscribers return to 0 and connections to 1 (the metrics request)",
        || async {
            let m = exposition(addr).await;
            series(&m, SUBSCRIBERS) == 0.0 && series(&m, CONNECTIONS) == 1.0
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dropped_subscribers_release_gauges_and_idle_channels() {
    let hub = Hub::start_with(|c| {
        // No heartbeat or write timeout can help notice the closed sockets.
        c.heartbeat = Duration::from_secs(60);
        c.write_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = hub.addr;
    let clients = open_rooms(addr, "idle").await;
    drop(clients);
    wait_all_gone(addr).await;
    wait_until(
        Duration::from_secs(10),
        "channels without history are removed",
        || async { metric(addr, CHANNELS).await == 0.0 },
    )
    .await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channels_with_history_outlive_subscribers_until_ttl() {
    let ttl = Duration::from_secs(5);
    let hub = Hub::start_with(|c| {
        c.heartbeat = Duration::from_secs(60);
        c.write_timeout = Duration::from_secs(60);
        c.history_ttl = ttl;
    })
    .await;
    let addr = hub.addr;
    let mut clients = open_rooms(addr, "kept").await;
    let published_at = Instant::now();
    for room in 0..ROOMS {
        publish_seq(
            addr,
            &format!("kept-{room}"),
            &format!("hello kept-{room}"),
            1,
        )
        .await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let event = client.next_event(Duration::from_secs(10)).await;
        let event = event.unwrap_or_else(|| panic!("subscriber {i}: stream ended"));
        assert_eq!(event.data, format!("hello kept-{}", i % ROOMS));
    }
    drop(clients);
    wait_all_gone(addr).await;
    let channels = metric(addr, CHANNELS).await;
    let age = published_at.elapsed();
    assert!(
        age < ttl,
        "test too slow: history already {age:?} old (ttl {ttl:?}) before checking"
    );
    assert_eq!(
        channels, ROOMS as f64,
        "channels with retained history stay after their subscribers left"
    );
    wait_until(
        ttl + Duration::from_secs(5),
        "channels are removed once their history expired",
        || async { metric(addr, CHANNELS).await == 0.0 },
    )
    .await;
    assert!(
        published_at.elapsed() >= ttl,
        "channels were removed before their history expired"
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 5. Raw abrupt disconnects

/// Reads until a complete response head arrived (bounded).
async fn read_head(stream: &mut TcpStream) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(10);
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => panic!(
                "connection closed before the response head: {:?}",
                String::from_utf8_lossy(&got)
            ),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read failed before the response head: {e}"),
            Err(_) => panic!("no response head within 10s"),
        }
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

/// Closes with a TCP reset instead of a FIN.
fn reset(stream: TcpStream) {
    #[allow(deprecated)]
    stream
        .set_linger(Some(Duration::ZERO))
        .expect("set SO_LINGER 0");
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn abrupt_disconnects_release_everything() {
    let hub = Hub::start_with(|c| {
        c.heartbeat = Duration::from_secs(60);
        c.write_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = hub.addr;
    for i in 0..100 {
        let mut stream = raw_connect(addr).await;
        let request = format!(
            "GET /events/abrupt-{} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n",
            i % 10
        );
        match i % 5 {
            // Request sent, closed before any answer.
            0 => {
                stream.write_all(request.as_bytes()).await.unwrap();
                drop(stream);
            }
            // Request sent, reset before any answer.
            1 => {
                stream.write_all(request.as_bytes()).await.unwrap();
                reset(stream);
            }
            // Head read, then closed while streaming.
            2 => {
                stream.write_all(request.as_bytes()).await.unwrap();
                read_head(&mut stream).await;
                drop(stream);
            }
            // Head read, then reset while streaming.
            3 => {
                stream.write_all(request.as_bytes()).await.unwrap();
                read_head(&mut stream).await;
                reset(stream);
            }
            // Half a request head, then closed.
            _ => {
                let half = &request.as_bytes()[..request.len() / 2];
                stream.write_all(half).await.unwrap();
                drop(stream);
            }
        }
    }
    wait_until(
        Duration::from_secs(10),
        "subscribers, channels return to 0 and connections to 1 (the metrics request)",
        || async {
            let m = exposition(addr).await;
            series(&m, SUBSCRIBERS) == 0.0
                && series(&m, CHANNELS) == 0.0
                && series(&m, CONNECTIONS) == 1.0
        },
    )
    .await;
    // The hub still serves.
    let mut client = SseClient::connect(addr, "/events/abrupt-0", &[]).await;
    assert_eq!(client.status, 200);
    publish_seq(addr, "abrupt-0", "still alive", 1).await;
    let event = client.next_event(Duration::from_secs(10)).await;
    assert_eq!(event.map(|e| e.data).as_deref(), Some("still alive"));
    drop(client);
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// 6. A full socket delays a stream, never corrupts it

/// The largest send buffer the kernel grants a TCP socket (`tcp_wmem`'s maximum).
fn tcp_send_buffer_max() -> usize {
    let path = "/proc/sys/net/ipv4/tcp_wmem";
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    text.split_whitespace()
        .nth(2)
        .and_then(|max| max.parse().ok())
        .unwrap_or_else(|| panic!("{path}: no maximum in {text:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriber_that_pauses_until_its_socket_is_full_then_reads_gets_everything_exactly() {
    const EVENTS: usize = 500;
    const SIZE: usize = 16 * 1024;
    // Set, it stops the kernel growing the buffer (which then holds twice this).
    const RECEIVE_BUFFER: u32 = 64 * 1024;
    // More than the hub's send buffer and the subscriber's receive buffer can hold: the hub's
    // writes must stop part-way through frames and resume when the subscriber reads again.
    let buffers = tcp_send_buffer_max() + 2 * RECEIVE_BUFFER as usize;
    assert!(
        EVENTS * SIZE > buffers,
        "{EVENTS} x {SIZE} B fit in the socket buffers ({buffers} B): raise EVENTS"
    );
    // The defaults for the rest: history and max_lag hold 1 000 events.
    let hub = Hub::start_with(|c| {
        c.history_bytes = 2 * EVENTS * SIZE;
        c.write_timeout = Duration::from_secs(60);
    })
    .await;
    let addr = hub.addr;
    let channel = "slow/paused";

    let socket = TcpSocket::new_v4().expect("a TCP socket");
    socket
        .set_recv_buffer_size(RECEIVE_BUFFER)
        .expect("set SO_RCVBUF");
    let stream = socket.connect(addr).await.expect("connect the subscriber");
    let mut paused = SseClient::over(stream, &format!("/events/{channel}"), &[]).await;
    assert_eq!(paused.status, 200);
    wait_subscribers(addr, 1, "the subscriber is open").await;
    for i in 0..EVENTS {
        publish_seq(addr, channel, &payload(i, SIZE), i as u64 + 1).await;
    }

    let events = paused.events(EVENTS, Duration::from_secs(60)).await;
    check_run(&events, 1, SIZE, "paused subscriber");
    assert_quiet(&mut paused, "after the last event").await;
    let m = exposition(addr).await;
    assert_eq!(
        series(&m, LAGGED) + series(&m, WRITE_TIMEOUT),
        0.0,
        "no eviction"
    );
    assert_eq!(series(&m, SUBSCRIBERS), 1.0);
    drop(paused);
    hub.stop().await;
}
