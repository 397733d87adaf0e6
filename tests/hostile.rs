//! Hostile and broken clients (issue 5, "Hostile input"). Every case shows a clear answer (a JSON
//! 4xx where HTTP allows one, else a closed connection), no crash (a subscriber connected before
//! the attack still receives a marker published after it), and no leak (the `ssehub_connections`
//! and `ssehub_subscribers` gauges return to their baseline).

mod common;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::{assert_error, assert_quiet, h2_connect, ids_and_data, seq, QUIET};
use common::{
    metric, publish, publish_raw, raw_connect, request, wait_until, ChunkedDecoder, Hub, Response,
    SseClient, SseEvent, SseParser,
};
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

/// Bound on every single wait in this file.
const T: Duration = Duration::from_secs(5);
/// `header-read-timeout` and `body-read-timeout` of the hubs that test them.
const SHORT: Duration = Duration::from_millis(300);
/// Longest acceptable time for the hub to cut a client that overran [`SHORT`].
const CUT_WITHIN: Duration = Duration::from_secs(3);
/// Longest acceptable time for a normal request while the hub is under attack.
const SERVED_WITHIN: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------------
// Health and leak checks

/// A healthy subscriber connected before an attack, and the gauges' baseline.
struct Watch {
    addr: SocketAddr,
    healthy: SseClient,
    markers: u64,
    connections: f64,
    subscribers: f64,
}

impl Watch {
    /// Subscribes to `healthy` and records the baseline: that stream plus the scrape itself.
    async fn new(addr: SocketAddr) -> Watch {
        let healthy = SseClient::connect(addr, "/events/healthy", &[]).await;
        assert_eq!(healthy.status, 200, "healthy subscriber");
        let (connections, subscribers) = (2.0, 1.0);
        wait_until(
            T,
            "the baseline: 1 subscriber, 1 stream + 1 scrape",
            || async move {
                metric(addr, "ssehub_subscribers").await == subscribers
                    && metric(addr, "ssehub_connections").await == connections
            },
        )
        .await;
        Watch {
            addr,
            healthy,
            markers: 0,
            connections,
            subscribers,
        }
    }

    /// The gauges are back at baseline, and the hub still serves: the healthy subscriber gets
    /// a new marker (as the channel's next event: nothing else reached it) and `/healthz`
    /// answers.
    async fn check(&mut self, what: &str) {
        let (addr, connections, subscribers) = (self.addr, self.connections, self.subscribers);
        let mut last = None;
        let last_seen = &mut last;
        // Scrapes that find the hub still full (503) are retried.
        let waited = tokio::time::timeout(T + T, async {
            loop {
                let now = (
                    gauge(addr, "ssehub_connections").await,
                    gauge(addr, "ssehub_subscribers").await,
                );
                *last_seen = Some(now);
                if now == (Some(connections), Some(subscribers)) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "{what}: gauges (connections, subscribers) stuck at {last:?}, baseline \
             ({connections}, {subscribers}): a leak"
        );
        self.marker(what).await;
        let health = request(addr, "GET", "/healthz", &[], b"").await;
        assert_eq!(health.status, 200, "{what}: /healthz: {}", health.text());
    }

    /// Publishes the next marker to `healthy` and checks the healthy subscriber receives it.
    async fn marker(&mut self, what: &str) {
        self.markers += 1;
        let data = format!("marker-{}", self.markers);
        let receipt = publish(self.addr, json!({"channel": "healthy", "data": data})).await;
        assert_eq!(receipt.status, 200, "{what}: marker: {}", receipt.text());
        let id = receipt.json()["id"].as_str().unwrap().to_string();
        assert_eq!(seq(&id), self.markers, "{what}: marker id {id}");
        let event = self
            .healthy
            .next_event(T)
            .await
            .unwrap_or_else(|| panic!("{what}: the healthy subscriber's stream ended"));
        assert_eq!(
            (event.id.as_str(), event.data.as_str()),
            (id.as_str(), data.as_str()),
            "{what}: healthy subscriber"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Raw connections

/// Reads HTTP/1.1 answers from a raw connection (or one half of it).
struct Reader<R> {
    r: R,
    buf: Vec<u8>,
    /// Why the connection ended (EOF or a read error such as a reset), once it did.
    end: Option<String>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    fn new(r: R) -> Reader<R> {
        Reader {
            r,
            buf: Vec::new(),
            end: None,
        }
    }

    /// Reads once more; `false` once the connection ended. Panics at `deadline`.
    async fn fill(&mut self, deadline: Instant, what: &str) -> bool {
        if self.end.is_some() {
            return false;
        }
        let mut chunk = vec![0u8; 64 * 1024];
        match tokio::time::timeout_at(deadline, self.r.read(&mut chunk)).await {
            Err(_) => panic!(
                "{what}: connection neither answered nor closed in time; read so far: {:?}",
                lossy(&self.buf)
            ),
            Ok(Ok(0)) => self.end = Some("EOF".into()),
            Ok(Err(e)) => self.end = Some(format!("read error: {e}")),
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                return true;
            }
        }
        false
    }

    /// The next response head; `None` when the connection ended first.
    async fn head(
        &mut self,
        deadline: Instant,
        what: &str,
    ) -> Option<(u16, Vec<(String, String)>)> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let head = parse_head(&self.buf[..end])
                    .unwrap_or_else(|e| panic!("{what}: {e}; bytes {:?}", lossy(&self.buf)));
                self.buf.drain(..end + 4);
                return Some(head);
            }
            if !self.fill(deadline, what).await {
                return None;
            }
        }
    }

    /// The next whole response (`Content-Length`, chunked or to EOF); `None` when the
    /// connection ended before a response head.
    async fn response(&mut self, deadline: Instant, what: &str) -> Option<Response> {
        let (status, headers) = self.head(deadline, what).await?;
        let header = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        };
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else if let Some(length) = header("content-length") {
            let length: usize = length.parse().expect("numeric content-length");
            while self.buf.len() < length {
                assert!(
                    self.fill(deadline, what).await,
                    "{what}: closed {} bytes into a {length}-byte body",
                    self.buf.len()
                );
            }
            self.buf.drain(..length).collect()
        } else if header("transfer-encoding").is_some_and(|te| te.contains("chunked")) {
            let mut decoder = ChunkedDecoder::default();
            let mut body = Vec::new();
            loop {
                let raw = std::mem::take(&mut self.buf);
                body.extend(decoder.feed(&raw).unwrap_or_else(|e| panic!("{what}: {e}")));
                if decoder.finished() {
                    break body;
                }
                assert!(
                    self.fill(deadline, what).await,
                    "{what}: closed inside a chunked body"
                );
            }
        } else {
            while self.fill(deadline, what).await {}
            std::mem::take(&mut self.buf)
        };
        Some(Response {
            status,
            headers,
            body,
        })
    }

    /// Reads until the connection ends; returns everything not consumed yet.
    async fn rest(&mut self, deadline: Instant, what: &str) -> Vec<u8> {
        while self.fill(deadline, what).await {}
        std::mem::take(&mut self.buf)
    }
}

/// An event stream read over a raw connection with the shared chunk decoder and SSE parser.
struct RawSse<R> {
    reader: Reader<R>,
    decoder: ChunkedDecoder,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
}

impl<R: AsyncRead + Unpin> RawSse<R> {
    /// Takes over `reader` after a `200` event-stream head.
    fn new(reader: Reader<R>) -> RawSse<R> {
        let mut sse = RawSse {
            reader,
            decoder: ChunkedDecoder::default(),
            parser: SseParser::default(),
            queue: VecDeque::new(),
        };
        sse.ingest();
        sse
    }

    fn ingest(&mut self) {
        let raw = std::mem::take(&mut self.reader.buf);
        let body = self
            .decoder
            .feed(&raw)
            .unwrap_or_else(|e| panic!("bad chunked framing: {e}"));
        self.queue.extend(self.parser.feed(&body));
    }

    /// The next event; panics if the stream ends or nothing arrives within [`T`].
    async fn next(&mut self, what: &str) -> SseEvent {
        let deadline = Instant::now() + T;
        loop {
            if let Some(event) = self.queue.pop_front() {
                return event;
            }
            assert!(
                self.reader.fill(deadline, what).await,
                "{what}: stream ended ({:?}) instead of an event",
                self.reader.end
            );
            self.ingest();
        }
    }
}

fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let text = lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap_or((line, ""));
            (name.trim().to_ascii_lowercase(), value.trim().to_string())
        })
        .collect();
    Ok((status, headers))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn lossy(bytes: &[u8]) -> String {
    if bytes.len() > 400 {
        let start = String::from_utf8_lossy(&bytes[..400]);
        format!("{start}... ({} bytes)", bytes.len())
    } else {
        String::from_utf8_lossy(bytes).into_owned()
    }
}

/// Writes `wire` (ignoring a write error: the hub may close first) and reads the first answer.
/// `Err` holds what was read when the hub closed without a complete response head.
async fn exchange(addr: SocketAddr, wire: Vec<u8>, what: &str) -> Result<Response, String> {
    let (read, mut write) = raw_connect(addr).await.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&wire).await;
        write
    });
    let mut reader = Reader::new(read);
    let deadline = Instant::now() + T;
    let answer = match reader.response(deadline, what).await {
        Some(response) => Ok(response),
        None => Err(format!(
            "closed ({:?}) after {:?}",
            reader.end,
            lossy(&reader.buf)
        )),
    };
    writer.abort();
    answer
}

/// Sends `head` one byte every `pace` (never completing it) and returns how long the hub took
/// to close the connection, and what it answered. Panics if it stays open for [`T`].
async fn slowloris(addr: SocketAddr, head: &[u8], pace: Duration) -> (Duration, Vec<u8>) {
    let (read, mut write) = raw_connect(addr).await.into_split();
    let started = Instant::now();
    let head = head.to_vec();
    let trickle = async move {
        for byte in head {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(pace).await;
        }
        std::future::pending::<()>().await
    };
    let mut reader = Reader::new(read);
    let closed = tokio::select! {
        answer = reader.rest(started + T, "slowloris") => answer,
        _ = trickle => unreachable!(),
    };
    (started.elapsed(), closed)
}

/// A head that is never complete and takes `pace × len` to send.
fn endless_head(first_line: &str) -> Vec<u8> {
    let mut head = format!("{first_line}\r\nHost: 127.0.0.1\r\nX-Pad: ").into_bytes();
    head.extend(std::iter::repeat_n(b'a', 400));
    head
}

/// Either nothing (closed) or a `408`.
fn assert_cut_answer(answer: &[u8], what: &str) {
    assert!(
        answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
        "{what}: unexpected answer {:?}",
        lossy(answer)
    );
}

// ---------------------------------------------------------------------------------------------
// Small helpers

/// `series` from `/metrics`, or `None` when the scrape is refused (the hub is full).
async fn gauge(addr: SocketAddr, series: &str) -> Option<f64> {
    let response = request(addr, "GET", "/metrics", &[], b"").await;
    (response.status == 200).then(|| common::parse_metric(&response.text(), series).unwrap_or(0.0))
}

async fn published(addr: SocketAddr) -> f64 {
    metric(addr, "ssehub_events_published_total").await
}

async fn subscribe(addr: SocketAddr, channel: &str) -> SseClient {
    let client = SseClient::connect(addr, &format!("/events/{channel}"), &[]).await;
    assert_eq!(client.status, 200, "GET /events/{channel}");
    client
}

fn post_head(path: &str, extra: &str) -> String {
    format!("POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n")
}

/// `body` as `Transfer-Encoding: chunked` chunks of `size` bytes, with the final chunk.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for piece in body.chunks(size) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// Slowloris

#[tokio::test]
async fn slowloris_headers_are_cut_after_header_read_timeout() {
    let hub = Hub::start_with(|c| c.header_read_timeout = SHORT).await;
    let mut watch = Watch::new(hub.addr).await;
    let pace = Duration::from_millis(20);
    let events = endless_head("GET /events/slow HTTP/1.1");
    let publish = endless_head("POST /publish HTTP/1.1");
    let ((events_took, events_answer), (publish_took, publish_answer)) = tokio::join!(
        slowloris(hub.addr, &events, pace),
        slowloris(hub.addr, &publish, pace)
    );
    for (what, took, answer) in [
        ("GET /events trickled", events_took, events_answer),
        ("POST /publish trickled", publish_took, publish_answer),
    ] {
        assert!(
            took >= SHORT - Duration::from_millis(100) && took < CUT_WITHIN,
            "{what}: closed after {took:?}; header-read-timeout is {SHORT:?}"
        );
        assert_cut_answer(&answer, what);
    }
    watch.check("after slowloris").await;
    hub.stop().await;
}

#[tokio::test]
async fn slowloris_second_request_on_a_keep_alive_connection_is_cut() {
    let hub = Hub::start_with(|c| c.header_read_timeout = SHORT).await;
    let mut watch = Watch::new(hub.addr).await;
    let (read, mut write) = raw_connect(hub.addr).await.into_split();
    write
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .unwrap();
    let mut reader = Reader::new(read);
    let first = reader
        .response(Instant::now() + T, "first request")
        .await
        .expect("an answer to the first request");
    assert_eq!(first.status, 200);
    let started = Instant::now();
    let head = endless_head("POST /publish HTTP/1.1");
    let trickle = async move {
        for byte in head {
            if write.write_all(&[byte]).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::future::pending::<()>().await
    };
    let answer = tokio::select! {
        answer = reader.rest(started + T, "trickled second request") => answer,
        _ = trickle => unreachable!(),
    };
    let took = started.elapsed();
    assert!(
        took < CUT_WITHIN,
        "second request trickled: closed after {took:?}"
    );
    assert_cut_answer(&answer, "second request trickled");
    watch.check("after a trickled second request").await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_slowloris_connections_do_not_stop_normal_requests() {
    const ATTACKERS: usize = 50;
    let hub = Hub::start_with(|c| c.header_read_timeout = SHORT).await;
    let mut watch = Watch::new(hub.addr).await;
    let addr = hub.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // Each attacker keeps one trickling connection open at all times, reconnecting when cut.
    let attackers: Vec<_> = (0..ATTACKERS)
        .map(|i| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let head = if i % 2 == 0 {
                    endless_head(&format!("GET /events/slow{i} HTTP/1.1"))
                } else {
                    endless_head("POST /publish HTTP/1.1")
                };
                let until = Instant::now() + Duration::from_secs(10);
                let (mut connections, mut slowest) = (0, Duration::ZERO);
                while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                    let (took, answer) = slowloris(addr, &head, Duration::from_millis(20)).await;
                    assert_cut_answer(&answer, "one of 50 slowloris connections");
                    connections += 1;
                    slowest = slowest.max(took);
                }
                (connections, slowest)
            })
        })
        .collect();
    let baseline = watch.connections;
    wait_until(T, "the attack holds 40+ connections", || async move {
        metric(addr, "ssehub_connections").await >= 40.0 + baseline
    })
    .await;
    // Normal requests for over three header-read-timeouts, while the attackers reconnect.
    let attack_started = Instant::now();
    let mut rounds = 0;
    while attack_started.elapsed() < SHORT * 4 && rounds < 100 {
        rounds += 1;
        let round = rounds;
        let started = Instant::now();
        watch.marker(&format!("under attack, round {round}")).await;
        let health = request(addr, "GET", "/healthz", &[], b"").await;
        assert_eq!(health.status, 200);
        let took = started.elapsed();
        assert!(
            took < SERVED_WITHIN,
            "round {round}: a publish, its delivery and /healthz took {took:?} under attack"
        );
    }
    stop.store(true, Ordering::Relaxed);
    for (i, attacker) in attackers.into_iter().enumerate() {
        let (connections, slowest) = attacker.await.expect("attacker task");
        assert!(connections >= 1, "attacker {i} never connected");
        assert!(
            slowest < CUT_WITHIN,
            "attacker {i}: a connection stayed {slowest:?}"
        );
    }
    watch.check("after 50 slowloris attackers").await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Bodies: trickled, oversized, truncated

#[tokio::test]
async fn body_trickled_past_body_read_timeout_is_408() {
    let hub = Hub::start_with(|c| c.body_read_timeout = SHORT).await;
    let mut watch = Watch::new(hub.addr).await;
    let mut subscriber = subscribe(hub.addr, "trickle").await;
    let before = published(hub.addr).await;
    let json_body = br#"{"channel":"trickle","data":"slowly, slowly, very slowly, too slowly"}"#;
    let raw_body = b"slowly, slowly, very slowly, much too slowly for the hub".to_vec();
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "raw publish with Content-Length",
            post_head(
                "/publish/trickle",
                &format!(
                    "Content-Type: text/plain\r\nContent-Length: {}\r\n",
                    raw_body.len()
                ),
            ),
            raw_body.clone(),
        ),
        (
            "JSON publish with Content-Length",
            post_head(
                "/publish",
                &format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    json_body.len()
                ),
            ),
            json_body.to_vec(),
        ),
        (
            "chunked JSON publish",
            post_head(
                "/publish",
                "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
            ),
            chunked(json_body, 1),
        ),
    ];
    for (what, head, body) in cases {
        let (read, mut write) = raw_connect(hub.addr).await.into_split();
        write.write_all(head.as_bytes()).await.unwrap();
        let started = Instant::now();
        let trickle = async move {
            for byte in body {
                if write.write_all(&[byte]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            std::future::pending::<()>().await
        };
        let mut reader = Reader::new(read);
        let answer = tokio::select! {
            answer = reader.response(started + T, what) => answer,
            _ = trickle => unreachable!(),
        };
        let took = started.elapsed();
        let answer = answer.unwrap_or_else(|| panic!("{what}: closed without an answer"));
        assert_error(&answer, 408, what);
        assert!(took < CUT_WITHIN, "{what}: 408 only after {took:?}");
    }
    assert_quiet(&mut subscriber, "trickled bodies").await;
    assert_eq!(
        published(hub.addr).await,
        before,
        "a trickled body was published"
    );
    drop(subscriber);
    watch.check("after trickled bodies").await;
    hub.stop().await;
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413_with_and_without_length() {
    const LIMIT: usize = 1024;
    let hub = Hub::start_with(|c| c.max_body_bytes = LIMIT).await;
    let mut watch = Watch::new(hub.addr).await;
    let mut subscriber = subscribe(hub.addr, "big").await;
    let before = published(hub.addr).await;
    let big_raw = vec![b'x'; 3 * LIMIT];
    let big_json = serde_json::to_vec(&json!({"channel": "big", "data": "y".repeat(3 * LIMIT)}))
        .expect("json");
    let with_length = |path: &str, content_type: &str, body: &[u8]| {
        let mut wire = post_head(
            path,
            &format!(
                "Content-Type: {content_type}\r\nContent-Length: {}\r\n",
                body.len()
            ),
        )
        .into_bytes();
        wire.extend_from_slice(body);
        wire
    };
    let chunked_wire = |path: &str, content_type: &str, body: &[u8]| {
        let mut wire = post_head(
            path,
            &format!("Content-Type: {content_type}\r\nTransfer-Encoding: chunked\r\n"),
        )
        .into_bytes();
        wire.extend(chunked(body, 500));
        wire
    };
    let cases = [
        (
            "raw, Content-Length",
            with_length("/publish/big", "text/plain", &big_raw),
        ),
        (
            "JSON, Content-Length",
            with_length("/publish", "application/json", &big_json),
        ),
        (
            "raw, chunked without length",
            chunked_wire("/publish/big", "text/plain", &big_raw),
        ),
        (
            "JSON, chunked without length",
            chunked_wire("/publish", "application/json", &big_json),
        ),
        (
            "a Content-Length of a petabyte, body never sent",
            post_head(
                "/publish/big",
                "Content-Type: text/plain\r\nContent-Length: 1000000000000000\r\n",
            )
            .into_bytes(),
        ),
    ];
    for (what, wire) in cases {
        let started = Instant::now();
        let answer = exchange(hub.addr, wire, what)
            .await
            .unwrap_or_else(|closed| panic!("{what}: no answer, {closed}"));
        assert_error(&answer, 413, what);
        assert!(started.elapsed() < T, "{what}: answered only after {T:?}");
    }
    // Just at the limit is fine.
    let at_limit = publish_raw(hub.addr, "big", &"z".repeat(LIMIT)).await;
    assert_eq!(at_limit.status, 200, "body of exactly max-body-bytes");
    let event = subscriber.next_event(T).await.expect("the at-limit event");
    assert_eq!(event.data.len(), LIMIT);
    assert_eq!(seq(&event.id), 1, "an oversized body was published before");
    assert_eq!(published(hub.addr).await, before + 1.0);
    drop(subscriber);
    watch.check("after oversized bodies").await;
    hub.stop().await;
}

#[tokio::test]
async fn truncated_chunked_body_publishes_nothing() {
    let hub = Hub::start_with(|c| c.body_read_timeout = Duration::from_secs(2)).await;
    let mut watch = Watch::new(hub.addr).await;
    let mut subscriber = subscribe(hub.addr, "trunc").await;
    let before = published(hub.addr).await;
    let head = post_head(
        "/publish/trunc",
        "Content-Type: text/plain\r\nTransfer-Encoding: chunked\r\n",
    );
    let bodies: [(&str, &[u8]); 4] = [
        ("chunk declared 0x100, 3 bytes sent", b"100\r\nabc"),
        ("a whole chunk, then no final chunk", b"3\r\nabc\r\n"),
        ("chunk size of 2^64-1", b"ffffffffffffffff\r\nabc"),
        ("chunk size that is not hex", b"zz\r\nabc\r\n0\r\n\r\n"),
    ];
    for (what, body) in bodies {
        // Half-close: the hub sees the end of the body early and may still answer.
        let stream = raw_connect(hub.addr).await;
        let (read, mut write) = stream.into_split();
        write.write_all(head.as_bytes()).await.unwrap();
        write.write_all(body).await.unwrap();
        write.shutdown().await.unwrap();
        let mut reader = Reader::new(read);
        match reader
            .response(Instant::now() + T, &format!("{what}, half-closed"))
            .await
        {
            Some(answer) => assert_error(&answer, 400, what),
            None => assert!(
                reader.buf.is_empty(),
                "{what}: partial answer {:?}",
                lossy(&reader.buf)
            ),
        }
        // Full close right after sending.
        let mut stream = raw_connect(hub.addr).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        drop(stream);
    }
    assert_quiet(&mut subscriber, "truncated bodies").await;
    assert_eq!(
        published(hub.addr).await,
        before,
        "a truncated body was published"
    );
    drop(subscriber);
    watch.check("after truncated chunked bodies").await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Oversized heads

#[tokio::test]
async fn oversized_headers_get_431_or_a_closed_connection() {
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let big = |kib: usize| "b".repeat(kib * 1024);
    let many: String = (0..200).map(|i| format!("X-Many-{i}: {i}\r\n")).collect();
    let cases = [
        (
            "GET /events, one 1 MiB header",
            format!(
                "GET /events/big HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
                big(1024)
            ),
        ),
        (
            "POST /publish, one 1 MiB header",
            format!(
                "POST /publish/big HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nContent-Length: 2\r\n\r\nhi",
                big(1024)
            ),
        ),
        (
            "GET /events, 200 headers",
            format!("GET /events/big HTTP/1.1\r\nHost: x\r\n{many}\r\n"),
        ),
        (
            "POST /publish, 200 headers",
            format!("POST /publish/big HTTP/1.1\r\nHost: x\r\n{many}Content-Length: 2\r\n\r\nhi"),
        ),
    ];
    for (what, wire) in cases {
        if let Ok(answer) = exchange(hub.addr, wire.into_bytes(), what).await {
            assert_eq!(answer.status, 431, "{what}: {}", answer.text());
        }
    }
    watch.check("after oversized heads").await;
    hub.stop().await;
}

#[tokio::test]
async fn header_of_64_kib_is_refused_or_served_without_harm() {
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let pad = "b".repeat(64 * 1024);
    let cases = [
        (
            "GET /events/big",
            format!("GET /events/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {pad}\r\n\r\n"),
        ),
        (
            "POST /publish/big",
            format!(
                "POST /publish/big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {pad}\r\nContent-Length: 2\r\n\r\nhi"
            ),
        ),
        (
            "GET /healthz",
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {pad}\r\n\r\n"),
        ),
    ];
    let mut outcomes = Vec::new();
    for (what, wire) in cases {
        let (read, mut write) = raw_connect(hub.addr).await.into_split();
        let wire = wire.into_bytes();
        let writer = tokio::spawn(async move {
            let _ = write.write_all(&wire).await;
            write
        });
        let mut reader = Reader::new(read);
        let head = reader.head(Instant::now() + T, what).await;
        match head {
            None => outcomes.push(format!("{what}: closed")),
            Some((status, _)) => {
                assert!(
                    status == 431 || status == 200,
                    "{what}: status {status}, expected 431 (refused) or 200 (served)"
                );
                outcomes.push(format!("{what}: {status}"));
            }
        }
        writer.abort();
    }
    eprintln!("64 KiB header outcomes: {outcomes:?}");
    watch.check("after 64 KiB headers").await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Names: invalid UTF-8, NUL and control characters, dot segments

#[tokio::test]
async fn invalid_utf8_control_characters_and_dot_segments_are_400() {
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let channels_before = metric(hub.addr, "ssehub_channels").await;
    let before = published(hub.addr).await;
    let bad_paths = [
        "%FF",
        "a%FFb",
        "%C3%28",
        "%00",
        "a%00b",
        "%0A",
        "a%0D%0Ab",
        "a%09b",
        "a%7Fb",
        "..",
        ".",
        "%2E%2E",
        "%2F..%2F",
        "a%2F..%2Fb",
        "a/../b",
        "a/./b",
        "a/%2E%2E/b",
        "../a",
        "a/..",
        "a//b",
        "%2Fa",
        "a%2F",
        "a%20b",
        "a%",
        "a%G0",
    ];
    for path in bad_paths {
        let events = request(hub.addr, "GET", &format!("/events/{path}"), &[], b"").await;
        assert_error(&events, 400, &format!("GET /events/{path}"));
        let raw = publish_raw(hub.addr, path, "data").await;
        assert_error(&raw, 400, &format!("POST /publish/{path}"));
    }
    for query in [
        "channel=%FF",
        "channel=a%00b",
        "channel=a%0Ab",
        "channel=..",
        "channel=a%2F..%2Fb",
    ] {
        let events = request(hub.addr, "GET", &format!("/events?{query}"), &[], b"").await;
        assert_error(&events, 400, &format!("GET /events?{query}"));
    }
    for channel in [
        "a\u{0}b", "a\nb", "a\rb", "..", "a/../b", "a/./b", "\u{FFFD}", "é",
    ] {
        let response = publish(hub.addr, json!({"channel": channel, "data": "x"})).await;
        assert_error(&response, 400, &format!("JSON channel {channel:?}"));
    }
    // Event names with NUL and control characters.
    for event in ["a%00b", "%0A", "a%0D%0Aid:%201", "%7F"] {
        let response = publish_raw(hub.addr, &format!("ok?event={event}"), "x").await;
        assert_error(&response, 400, &format!("raw publish ?event={event}"));
    }
    for event in ["a\u{0}b", "a\nb", "x\r\ndata: injected", "\u{1b}[31m"] {
        let response = publish(
            hub.addr,
            json!({"channel": "ok", "event": event, "data": "x"}),
        )
        .await;
        assert_error(&response, 400, &format!("JSON event {event:?}"));
    }
    // Invalid UTF-8 in data: raw body, and inside a JSON string.
    for (what, path, content_type, body) in [
        (
            "raw body 0xFF",
            "/publish/ok",
            "text/plain",
            b"caf\xff".to_vec(),
        ),
        (
            "raw body truncated sequence",
            "/publish/ok",
            "text/plain",
            b"caf\xc3".to_vec(),
        ),
        (
            "JSON string with 0xFF",
            "/publish",
            "application/json",
            b"{\"channel\":\"ok\",\"data\":\"caf\xff\"}".to_vec(),
        ),
        (
            "JSON with a lone surrogate escape",
            "/publish",
            "application/json",
            br#"{"channel":"ok","data":"\ud800"}"#.to_vec(),
        ),
    ] {
        let response = request(
            hub.addr,
            "POST",
            path,
            &[("Content-Type", content_type)],
            &body,
        )
        .await;
        assert_error(&response, 400, what);
    }
    assert_eq!(
        published(hub.addr).await,
        before,
        "an invalid request published"
    );
    assert_eq!(
        metric(hub.addr, "ssehub_channels").await,
        channels_before,
        "an invalid request created a channel"
    );
    watch.check("after invalid names").await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Absurd Last-Event-ID values

/// Opens `/events/cur` with `Last-Event-ID: cursor` and checks the stream starts with a `gap`
/// whose reason is one of `reasons`, then replays the whole history (`history`).
async fn expect_gap_then_history(
    addr: SocketAddr,
    path: &str,
    cursor: Option<&[u8]>,
    reasons: &[&str],
    history: &[SseEvent],
    what: &str,
) -> Result<(), Response> {
    let mut wire =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n")
            .into_bytes();
    if let Some(cursor) = cursor {
        wire.extend_from_slice(b"Last-Event-ID: ");
        wire.extend_from_slice(cursor);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"\r\n");
    let (read, mut write) = raw_connect(addr).await.into_split();
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&wire).await;
        write
    });
    let mut reader = Reader::new(read);
    let deadline = Instant::now() + T;
    let Some((status, headers)) = reader.head(deadline, what).await else {
        panic!("{what}: connection closed without an answer");
    };
    if status != 200 {
        let mut rest = reader.rest(deadline, what).await;
        if let Some((_, length)) = headers.iter().find(|(n, _)| n == "content-length") {
            rest.truncate(length.parse().unwrap_or(rest.len()));
        }
        return Err(Response {
            status,
            headers,
            body: rest,
        });
    }
    let mut sse = RawSse::new(reader);
    let gap = sse.next(what).await;
    assert_eq!(gap.event, "gap", "{what}: first event {gap:?}");
    let data: Value = serde_json::from_str(&gap.data).expect("gap data is JSON");
    assert_eq!(data["channel"], "cur", "{what}: {data}");
    let reason = data["reason"].as_str().unwrap_or_default();
    assert!(
        reasons.contains(&reason),
        "{what}: gap reason {reason:?}, expected one of {reasons:?}: {data}"
    );
    for expected in history {
        let event = sse.next(what).await;
        assert_eq!(&event, expected, "{what}: history after the gap");
    }
    drop(sse);
    drop(writer.await);
    Ok(())
}

#[tokio::test]
async fn absurd_last_event_ids_get_a_gap_and_the_history() {
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let addr = hub.addr;
    let mut history = Vec::new();
    for data in ["one", "two"] {
        let receipt = publish_raw(addr, "cur", data).await;
        assert_eq!(receipt.status, 200);
        let id = receipt.json()["id"].as_str().unwrap().to_string();
        history.push(SseEvent {
            id,
            event: "message".into(),
            data: data.into(),
        });
    }
    let other = publish_raw(addr, "other", "elsewhere").await.json()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let epoch = history[0].id.split_once('-').unwrap().0.to_string();
    assert_ne!(
        other.split_once('-').unwrap().0,
        epoch,
        "two channels drew the same epoch (1 in 62^6): rerun"
    );
    let invalid: &[&str] = &["invalid_cursor"];
    let long = "7".repeat(5000);
    let cases: Vec<(String, Vec<u8>, &[&str])> = vec![
        ("-1".into(), b"-1".to_vec(), invalid),
        ("abc".into(), b"abc".to_vec(), invalid),
        (
            "24 nines".into(),
            b"999999999999999999999999".to_vec(),
            invalid,
        ),
        (
            "epoch, seq over u64".into(),
            format!("{epoch}-99999999999999999999999").into_bytes(),
            invalid,
        ),
        (
            "negative seq".into(),
            format!("{epoch}--1").into_bytes(),
            invalid,
        ),
        (
            "two positions for one channel".into(),
            format!("{0}.{0}", history[0].id).into_bytes(),
            invalid,
        ),
        ("5000 digits".into(), long.into_bytes(), invalid),
        (
            "bytes that are not UTF-8".into(),
            b"\xff\xfe-1".to_vec(),
            invalid,
        ),
        (
            "another channel's id (seq 1)".into(),
            other.clone().into_bytes(),
            &["epoch_changed"],
        ),
        (
            "this channel's epoch, seq far ahead".into(),
            format!("{epoch}-18446744073709551615").into_bytes(),
            &["cursor_ahead"],
        ),
    ];
    let gaps_before = metric(addr, "ssehub_gaps_total{reason=\"invalid_cursor\"}").await;
    for (what, cursor, reasons) in &cases {
        let what = format!("Last-Event-ID {what}");
        if let Err(answer) =
            expect_gap_then_history(addr, "/events/cur", Some(cursor), reasons, &history, &what)
                .await
        {
            panic!("{what}: status {} {}", answer.status, answer.text());
        }
    }
    let invalid_cases = cases.iter().filter(|(_, _, r)| *r == invalid).count() as f64;
    assert_eq!(
        metric(addr, "ssehub_gaps_total{reason=\"invalid_cursor\"}").await,
        gaps_before + invalid_cases
    );
    // The query-string form.
    for query in ["-1", "abc", "%FF%FE", "999999999999999999999999"] {
        let what = format!("?lastEventId={query}");
        let path = format!("/events/cur?lastEventId={query}");
        if let Err(answer) =
            expect_gap_then_history(addr, &path, None, invalid, &history, &what).await
        {
            panic!("{what}: status {} {}", answer.status, answer.text());
        }
    }
    // 100 KiB: over the direct path's 16 KiB head, so hyper reads it. Either a clear refusal
    // or a gap, never a crash.
    let huge = vec![b'9'; 100 * 1024];
    match expect_gap_then_history(
        addr,
        "/events/cur",
        Some(&huge),
        invalid,
        &history,
        "100 KiB Last-Event-ID",
    )
    .await
    {
        Ok(()) => {}
        Err(answer) => assert!(
            matches!(answer.status, 400 | 431),
            "100 KiB Last-Event-ID: status {} {}",
            answer.status,
            answer.text()
        ),
    }
    // A live event still reaches a stream opened with an absurd cursor.
    let mut client = SseClient::connect(addr, "/events/cur", &[("Last-Event-ID", "abc")]).await;
    assert_eq!(client.status, 200);
    let mut got = client.events(3, T).await;
    assert_eq!(got.remove(0).event, "gap");
    assert_eq!(got, history);
    let live = publish_raw(addr, "cur", "three").await;
    assert_eq!(live.status, 200);
    let event = client.next_event(T).await.expect("live event");
    assert_eq!(event.data, "three");
    drop(client);
    watch.check("after absurd cursors").await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Thousands of channels on one request

fn channel_query(n: usize) -> String {
    (0..n)
        .map(|i| format!("channel=c{i}"))
        .collect::<Vec<_>>()
        .join("&")
}

#[tokio::test]
async fn thousands_of_channels_on_one_connection_are_refused() {
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let addr = hub.addr;
    let channels_before = metric(addr, "ssehub_channels").await;
    // Under the 16 KiB head: the direct path answers.
    for n in [33, 1000] {
        let path = format!("/events?{}", channel_query(n));
        assert!(
            path.len() < 15 * 1024,
            "{n} channels: the URL is {} bytes",
            path.len()
        );
        let response = request(addr, "GET", &path, &[], b"").await;
        assert_error(&response, 400, &format!("{n} channels in the query"));
        assert!(
            response.json()["error"]
                .as_str()
                .unwrap()
                .contains("at most 32"),
            "{}",
            response.text()
        );
    }
    // 5000 channels: a URL of about 67 KiB, handed to hyper. Any refusal, no crash.
    let path = format!("/events?{}", channel_query(5000));
    let wire = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    match exchange(addr, wire.into_bytes(), "5000 channels in the query").await {
        Ok(answer) => assert!(
            (400..500).contains(&answer.status),
            "5000 channels in the query: status {} {}",
            answer.status,
            answer.text()
        ),
        Err(closed) => eprintln!("5000 channels in the query: {closed}"),
    }
    // The same with a publish: over max-batch.
    let names: Vec<String> = (0..5000).map(|i| format!("c{i}")).collect();
    let before = published(addr).await;
    let response = publish(addr, json!({"channels": names, "data": "x"})).await;
    assert_error(&response, 400, "publish to 5000 channels");
    assert_eq!(published(addr).await, before);
    assert_eq!(
        metric(addr, "ssehub_channels").await,
        channels_before,
        "a refused request created channels"
    );
    watch.check("after thousands of channels").await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_full_of_channel_names_is_refused_quickly() {
    // A 1 MiB body (the default max-body-bytes) holds about 100 000 distinct channel names.
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let addr = hub.addr;
    let names: Vec<String> = (0..100_000).map(|i| format!("c{i}")).collect();
    let body = serde_json::to_vec(&json!({"channels": names, "data": "x"})).expect("json");
    let body_len = body.len();
    assert!(body_len < 1 << 20, "{body_len} bytes");
    let mut wire = post_head(
        "/publish",
        &format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
    )
    .into_bytes();
    wire.extend_from_slice(&body);
    let started = Instant::now();
    let bound = SERVED_WITHIN + Duration::from_secs(1);
    let response = tokio::time::timeout(bound, exchange(addr, wire, "publish to 100 000 channels"))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a publish naming 100 000 channels (a {} KiB body) was not answered within 3s",
                body_len / 1024
            )
        })
        .unwrap_or_else(|closed| panic!("publish to 100 000 channels: {closed}"));
    let took = started.elapsed();
    assert_error(&response, 400, "publish to 100 000 channels");
    assert!(
        took < SERVED_WITHIN,
        "a publish naming 100 000 channels took {took:?} to refuse"
    );
    watch.check("after a 100 000-channel publish").await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Connections past --max-connections

#[tokio::test]
async fn connections_past_max_connections_get_503_quickly() {
    const CONNECTS: usize = 200;
    const MAX: usize = 50;
    let hub = Hub::start_with(|c| c.max_connections = MAX).await;
    let mut watch = Watch::new(hub.addr).await;
    let addr = hub.addr;
    let rejected_before = metric(addr, "ssehub_connections_rejected_total").await;
    let tasks: Vec<_> = (0..CONNECTS)
        .map(|i| {
            tokio::spawn(async move {
                let started = Instant::now();
                let (read, mut write) = raw_connect(addr).await.into_split();
                let head = format!("GET /events/flood{i} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
                let _ = write.write_all(head.as_bytes()).await;
                let mut reader = Reader::new(read);
                let what = format!("connection {i}");
                let deadline = started + T;
                match reader.head(deadline, &what).await {
                    Some((200, _)) => Ok((reader, write)),
                    Some((503, headers)) => {
                        let took = started.elapsed();
                        let retry_after = headers
                            .iter()
                            .find(|(n, _)| n == "retry-after")
                            .map(|(_, v)| v.clone());
                        let body = reader.rest(deadline, &what).await;
                        Err((took, retry_after, body))
                    }
                    other => panic!("{what}: {other:?}, {:?}", reader.end),
                }
            })
        })
        .collect();
    let mut held = Vec::new();
    let mut refused = 0;
    for task in tasks {
        match task.await.expect("connect task") {
            Ok(stream) => held.push(stream),
            Err((took, retry_after, body)) => {
                refused += 1;
                assert!(took < SERVED_WITHIN, "a 503 took {took:?}");
                assert_eq!(retry_after.as_deref(), Some("1"), "503 without Retry-After");
                let body: Value = serde_json::from_slice(&body)
                    .unwrap_or_else(|e| panic!("503 body not JSON ({e}): {:?}", lossy(&body)));
                assert!(body["error"].is_string(), "{body}");
            }
        }
    }
    // The healthy stream and perhaps scrapes still finishing hold the other slots.
    assert!(
        (MAX - 3..MAX).contains(&held.len()),
        "{} connections accepted with max-connections {MAX}",
        held.len()
    );
    assert_eq!(held.len() + refused, CONNECTS);
    drop(held);
    watch.check("after 200 connects past max-connections").await;
    assert_eq!(
        metric(addr, "ssehub_connections_rejected_total").await,
        rejected_before + refused as f64
    );
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Pipelining

#[tokio::test]
async fn pipelined_publishes_are_answered_in_order() {
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let mut subscriber = subscribe(hub.addr, "pipe").await;
    let mut wire = Vec::new();
    for (i, data) in ["first", "second", "third"].iter().enumerate() {
        let body = json!({"channel": "pipe", "data": data}).to_string();
        let connection = if i == 2 { "close" } else { "keep-alive" };
        wire.extend_from_slice(
            format!(
                "POST /publish HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {connection}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
    }
    let mut stream = raw_connect(hub.addr).await;
    stream.write_all(&wire).await.unwrap();
    let mut reader = Reader::new(stream);
    let deadline = Instant::now() + T;
    let mut ids = Vec::new();
    for i in 0..3 {
        let answer = reader
            .response(deadline, "pipelined publishes")
            .await
            .unwrap_or_else(|| panic!("pipelined publish {i} got no answer"));
        assert_eq!(
            answer.status,
            200,
            "pipelined publish {i}: {}",
            answer.text()
        );
        ids.push(answer.json()["id"].as_str().unwrap().to_string());
    }
    assert_eq!(
        ids.iter().map(|id| seq(id)).collect::<Vec<_>>(),
        [1, 2, 3],
        "answers out of order: {ids:?}"
    );
    assert!(reader
        .rest(deadline, "after the last answer")
        .await
        .is_empty());
    let events = subscriber.events(3, T).await;
    let got = ids_and_data(&events);
    assert_eq!(
        got,
        [
            (ids[0].as_str(), "first"),
            (ids[1].as_str(), "second"),
            (ids[2].as_str(), "third")
        ]
    );
    drop(subscriber);
    watch.check("after pipelined publishes").await;
    hub.stop().await;
}

#[tokio::test]
async fn garbage_after_an_event_stream_request_is_ignored() {
    let hub = Hub::start().await;
    let mut watch = Watch::new(hub.addr).await;
    let mut wire = b"GET /events/pipe HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".to_vec();
    wire.extend_from_slice(
        b"\x00\xff\xfegarbage\r\n\r\nPOST /publish/pipe HTTP/1.1\r\nContent-Length: 5\r\n\r\nforge",
    );
    let (read, mut write) = raw_connect(hub.addr).await.into_split();
    write.write_all(&wire).await.unwrap();
    let mut reader = Reader::new(read);
    let (status, headers) = reader
        .head(Instant::now() + T, "GET /events then garbage")
        .await
        .expect("an answer");
    assert_eq!(status, 200);
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v == "text/event-stream"),
        "{headers:?}"
    );
    let mut sse = RawSse::new(reader);
    // More garbage while the stream is open.
    write.write_all(&vec![0xAB; 256 * 1024]).await.unwrap();
    let receipt = publish_raw(hub.addr, "pipe", "real").await;
    assert_eq!(receipt.status, 200);
    let id = receipt.json()["id"].as_str().unwrap().to_string();
    assert_eq!(seq(&id), 1, "the pipelined POST was executed");
    let event = sse.next("stream after garbage").await;
    assert_eq!(
        (event.id.as_str(), event.data.as_str()),
        (id.as_str(), "real")
    );
    drop(sse);
    drop(write);
    watch.check("after garbage on a stream").await;
    hub.stop().await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 stream floods

#[tokio::test]
async fn h2_fifty_streams_with_max_concurrent_streams_10_run_ten_at_a_time() {
    const STREAMS: usize = 50;
    const MAX: usize = 10;
    let hub = Hub::start_with(|c| c.max_concurrent_streams = MAX as u32).await;
    let mut watch = Watch::new(hub.addr).await;
    let addr = hub.addr;
    let h2 = h2_connect(addr).await;
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::unbounded_channel();
    // Before the hub's SETTINGS arrive the client does not know the limit: streams over it
    // are refused (REFUSED_STREAM, safe to retry); after that the client queues them.
    let refusals = Arc::new(AtomicUsize::new(0));
    let requests: Vec<_> = (0..STREAMS)
        .map(|i| {
            let mut h2 = h2.clone();
            let opened = opened_tx.clone();
            let refusals = refusals.clone();
            tokio::spawn(async move {
                for _attempt in 0..3 {
                    let request = hyper::Request::builder()
                        .uri(format!("http://{addr}/events/h2flood{i}"))
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    h2.ready().await.expect("h2 connection usable");
                    match h2.send_request(request).await {
                        Ok(response) => {
                            assert_eq!(response.status(), 200, "h2 stream {i}");
                            let _ = opened.send((i, response.into_body()));
                            return;
                        }
                        Err(e) if format!("{e:?}").contains("REFUSED_STREAM") => {
                            refusals.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => panic!("h2 stream {i}: {e:?}"),
                    }
                }
                panic!("h2 stream {i} refused three times");
            })
        })
        .collect();
    let mut served = BTreeSet::new();
    let deadline = Instant::now() + T + T + T;
    while served.len() < STREAMS {
        // Take every stream that opens; then exactly MAX are open and no more opens.
        let mut open = Vec::new();
        let batch = MAX.min(STREAMS - served.len());
        while open.len() < batch {
            let (i, mut body) = tokio::time::timeout_at(deadline, opened_rx.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} h2 streams served", served.len() + open.len()))
                .expect("request tasks alive");
            // The stream's first bytes: it is live on the hub.
            let frame = tokio::time::timeout(T, body.frame())
                .await
                .expect("first frame");
            assert!(frame.is_some(), "h2 stream {i} ended at once");
            assert!(served.insert(i), "stream {i} twice");
            open.push(body);
        }
        let subscribers = metric(addr, "ssehub_subscribers").await;
        assert!(
            subscribers <= (MAX + 1) as f64,
            "{subscribers} subscribers: more than {MAX} h2 streams active at once"
        );
        if let Ok(Some((i, _))) = tokio::time::timeout(QUIET, opened_rx.recv()).await {
            let now = metric(addr, "ssehub_subscribers").await;
            panic!(
                "h2 stream {i} opened while {MAX} were active (served so far {}, subscribers \
                 {subscribers} before, {now} now)",
                served.len()
            );
        }
        drop(open);
    }
    for request in requests {
        request.await.expect("request task");
    }
    eprintln!(
        "h2 flood: {} streams refused before the client learnt the limit",
        refusals.load(Ordering::Relaxed)
    );
    drop(h2);
    watch.check("after 50 h2 streams").await;
    hub.stop().await;
}

/// One HTTP/2 frame.
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut frame = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// HPACK block for `GET path` (indexed :method/:scheme, literal :path and :authority).
fn h2_get_headers(authority: &str, path: &str) -> Vec<u8> {
    let mut block = vec![0x82, 0x86, 0x04, path.len() as u8];
    block.extend_from_slice(path.as_bytes());
    block.push(0x01);
    block.push(authority.len() as u8);
    block.extend_from_slice(authority.as_bytes());
    block
}

#[tokio::test]
async fn h2_client_ignoring_max_concurrent_streams_is_refused() {
    const STREAMS: u32 = 50;
    const MAX: u32 = 10;
    let hub = Hub::start_with(|c| c.max_concurrent_streams = MAX).await;
    let mut watch = Watch::new(hub.addr).await;
    let addr = hub.addr;
    let (read, mut write) = raw_connect(addr).await.into_split();
    let mut wire = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    wire.extend(h2_frame(4, 0, 0, &[]));
    for k in 0..STREAMS {
        let block = h2_get_headers(&addr.to_string(), &format!("/events/raw{k}"));
        // HEADERS with END_STREAM | END_HEADERS, all at once, as if no limit existed.
        wire.extend(h2_frame(1, 0x5, 2 * k + 1, &block));
    }
    write.write_all(&wire).await.unwrap();

    let mut reader = Reader::new(read);
    let deadline = Instant::now() + T;
    let mut answered = BTreeSet::new();
    let mut reset = BTreeMap::new();
    let mut goaway = None;
    while answered.len() + reset.len() < STREAMS as usize && goaway.is_none() {
        while reader.buf.len() < 9 {
            assert!(
                reader.fill(deadline, "raw h2 flood").await,
                "h2 connection closed; {} answered, {} reset",
                answered.len(),
                reset.len()
            );
        }
        let len = (usize::from(reader.buf[0]) << 16)
            | (usize::from(reader.buf[1]) << 8)
            | usize::from(reader.buf[2]);
        while reader.buf.len() < 9 + len {
            assert!(
                reader.fill(deadline, "raw h2 flood").await,
                "h2 connection closed mid-frame"
            );
        }
        let frame: Vec<u8> = reader.buf.drain(..9 + len).collect();
        let (kind, flags) = (frame[3], frame[4]);
        let stream = u32::from_be_bytes([frame[5], frame[6], frame[7], frame[8]]) & 0x7fff_ffff;
        let payload = &frame[9..];
        match kind {
            1 => {
                answered.insert(stream);
            }
            3 => {
                reset.insert(stream, u32::from_be_bytes(payload[..4].try_into().unwrap()));
            }
            4 if flags & 1 == 0 => write.write_all(&h2_frame(4, 1, 0, &[])).await.unwrap(),
            6 if flags & 1 == 0 => write.write_all(&h2_frame(6, 1, 0, payload)).await.unwrap(),
            7 => goaway = Some(u32::from_be_bytes(payload[4..8].try_into().unwrap())),
            _ => {}
        }
    }
    let subscribers = metric(addr, "ssehub_subscribers").await;
    assert!(
        answered.len() <= MAX as usize,
        "{} h2 streams answered with max-concurrent-streams {MAX}",
        answered.len()
    );
    assert!(
        subscribers <= f64::from(MAX + 1),
        "{subscribers} subscribers"
    );
    if goaway.is_none() {
        // REFUSED_STREAM (7) lets the client retry them; any reset is a refusal.
        assert_eq!(
            reset.len(),
            (STREAMS - MAX) as usize,
            "streams reset: {reset:?}"
        );
    }
    eprintln!(
        "raw h2 flood: {} answered, resets {:?}, goaway {goaway:?}",
        answered.len(),
        reset.values().collect::<BTreeSet<_>>()
    );
    drop(write);
    drop(reader);
    watch.check("after a raw h2 stream flood").await;
    hub.stop().await;
}
