//! Real Chromium (headless, over WebDriver) against the hub: the browser's own EventSource
//! across origins with CORS, reconnects with Last-Event-ID through node restarts in Redis mode,
//! terminal events, fetch streaming with an incremental parser, the six-connection limit of
//! HTTP/1.1 and HTTP/2 over TLS that lifts it, and the demo page at `/` (with a screenshot kept under
//! `target/browser-artifacts/`).

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::browser::{encode_base64, Browser, PageServer};
use common::node::Server;
use common::redis_server::RedisServer;
use common::{assert_error, metric, publish, request, seq, wait_until, Hub};
use serde_json::{json, Value};
use ssehub::auth::{mint, Permissions};
use ssehub::config::KeySpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Bound on anything the browser should see.
const WAIT: Duration = Duration::from_secs(20);
/// Reconnect delay the hubs advertise, so reconnects happen quickly.
const RETRY: Duration = Duration::from_millis(200);

/// `a=b&c=d`, form-encoded (so `src=/events?channel=a&channel=b` survives as one value).
fn query(pairs: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

/// An in-process hub that lets `pages` in with CORS and advertises [`RETRY`].
async fn hub_for(pages: &PageServer, f: impl FnOnce(&mut ssehub::Config)) -> Hub {
    let origin = pages.origin();
    Hub::start_with(move |c| {
        c.cors_origins = vec![origin];
        c.retry = RETRY;
        f(c);
    })
    .await
}

/// Publishes `body` as JSON and returns the answer, which must be 200.
async fn publish_ok(hub: SocketAddr, body: Value) -> Value {
    let response = publish(hub, body.clone()).await;
    assert_eq!(response.status, 200, "publish {body}: {}", response.text());
    response.json()
}

/// Publishes `n` events `event <k>` to `channel`, numbered on from `expected`, and appends
/// what the page must record for them.
async fn publish_numbered(hub: SocketAddr, channel: &str, n: usize, expected: &mut Vec<Value>) {
    for _ in 0..n {
        let data = format!("event {}", expected.len() + 1);
        let answer = publish_ok(hub, json!({"channel": channel, "data": data})).await;
        expected.push(page_event("message", &data, &answer["id"]));
    }
}

/// The event a page records: `{type, data, id}`.
fn page_event(event: &str, data: &str, id: &Value) -> Value {
    json!({"type": event, "data": data, "id": id})
}

/// Asserts two event lists are equal, pointing at the first difference (events can be large).
fn assert_same_events(actual: &Value, expected: &[Value], what: &str) {
    let actual = actual
        .as_array()
        .unwrap_or_else(|| panic!("{what}: not a list: {actual}"));
    let shorten = |v: &Value| {
        let text = v.to_string();
        match text.char_indices().nth(300) {
            Some((cut, _)) => format!("{}... ({} bytes)", &text[..cut], text.len()),
            None => text,
        }
    };
    for (i, (got, want)) in actual.iter().zip(expected).enumerate() {
        assert!(
            got == want,
            "{what}: event {i} differs:\n  got  {}\n  want {}",
            shorten(got),
            shorten(want)
        );
    }
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} events, expected {}; extra or missing: {}",
        actual.len(),
        expected.len(),
        shorten(&json!(if actual.len() > expected.len() {
            &actual[expected.len()..]
        } else {
            &expected[actual.len()..]
        }))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn eventsource_receives_every_kind_of_event_exactly_across_origins() {
    let pages = PageServer::start().await;
    let hub = hub_for(&pages, |_| {}).await;
    let hub_url = format!("http://{}", hub.addr);
    let browser = Browser::start().await;
    let page = pages.url(
        "eventsource.html",
        &query(&[
            ("hub", &hub_url),
            ("src", "/events/feed"),
            ("events", "greeting,progress"),
        ]),
    );
    browser.navigate(&page).await;
    browser
        .wait_for(
            "return window.report[0].opens === 1 || window.report",
            WAIT,
            "the cross-origin EventSource opened",
        )
        .await;

    // (event name, data published, data the browser must see: SSE data lines cannot hold CR,
    // so CRLF and a lone CR arrive as LF).
    let cases: [(Option<&str>, Value, &str); 8] = [
        (None, json!("hello"), "hello"),
        (Some("greeting"), json!("hi there"), "hi there"),
        (
            Some("progress"),
            json!({"a": 1, "b": [true, null, "x"], "c": {"d": "é"}}),
            r#"{"a":1,"b":[true,null,"x"],"c":{"d":"é"}}"#,
        ),
        (
            None,
            json!("line 1\nline 2\n\nline 4\n"),
            "line 1\nline 2\n\nline 4\n",
        ),
        (
            None,
            json!("crlf 1\r\ncrlf 2\rcr 3"),
            "crlf 1\ncrlf 2\ncr 3",
        ),
        (
            None,
            json!("héllo wörld — 日本語 🎉 עברית e\u{301}"),
            "héllo wörld — 日本語 🎉 עברית e\u{301}",
        ),
        (None, json!("  two leading spaces"), "  two leading spaces"),
        (None, json!(""), ""),
    ];
    let mut expected = Vec::new();
    for (event, data, seen) in cases {
        let mut body = json!({"channel": "feed", "data": data});
        if let Some(name) = event {
            body["event"] = json!(name);
        }
        let answer = publish_ok(hub.addr, body).await;
        expected.push(page_event(event.unwrap_or("message"), seen, &answer["id"]));
    }
    // One more published by the page itself: a cross-origin POST with a JSON body, so the
    // browser sends a CORS preflight first.
    let answer = browser
        .execute_async(
            "const [hub, body, done] = arguments;
             fetch(hub + '/publish', {method: 'POST', headers: {'content-type': 'application/json'},
                                      body: JSON.stringify(body)})
               .then((r) => r.json().then((json) => done({status: r.status, json})))
               .catch((e) => done({error: String(e)}));",
            json!([hub_url, {"channel": "feed", "event": "greeting", "data": "from the page"}]),
        )
        .await;
    assert_eq!(answer["status"], 200, "publish from the page: {answer}");
    expected.push(page_event(
        "greeting",
        "from the page",
        &answer["json"]["id"],
    ));

    browser
        .wait_for(
            &format!(
                "return window.report[0].events.length >= {} || window.report",
                expected.len()
            ),
            WAIT,
            "the page received every published event",
        )
        .await;
    // Anything extra (a duplicate, say) would show within QUIET.
    tokio::time::sleep(common::QUIET).await;
    let report = browser.execute("return window.report[0]", json!([])).await;
    assert_same_events(&report["events"], &expected, "EventSource events");
    assert_eq!(report["opens"], 1, "one connection: {report}");
    assert_eq!(report["errors"], json!([]), "no errors: {report}");
    for (i, event) in expected.iter().enumerate() {
        assert_eq!(seq(event["id"].as_str().unwrap()), i as u64 + 1);
    }
    browser.quit().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn eventsource_resumes_by_itself_when_its_redis_node_restarts() {
    let redis = RedisServer::start().await;
    let pages = PageServer::start().await;
    let (redis_url, origin, retry) = (
        redis.url(),
        pages.origin(),
        format!("{}ms", RETRY.as_millis()),
    );
    let args = [
        "--redis-url",
        redis_url.as_str(),
        "--retry",
        retry.as_str(),
        "--cors-origin",
        origin.as_str(),
    ];
    let mut a = Server::start("browser-a", &args, &[], false).await;
    let b = Server::start("browser-b", &args, &[], false).await;
    let browser = Browser::start().await;
    let hub_url = format!("http://{}", a.addr);
    browser
        .navigate(&pages.url(
            "eventsource.html",
            &query(&[("hub", &hub_url), ("src", "/events/relay")]),
        ))
        .await;
    browser
        .wait_for(
            "return window.report[0].opens === 1 || window.report",
            WAIT,
            "the EventSource opened through node A",
        )
        .await;

    let mut expected = Vec::new();
    publish_numbered(b.addr, "relay", 3, &mut expected).await;
    let wait_events = |n: usize, opens: u32| {
        format!(
            "const r = window.report[0];
             return (r.events.length >= {n} && r.opens === {opens}) || r"
        )
    };
    browser
        .wait_for(&wait_events(3, 1), WAIT, "3 events arrived through node A")
        .await;

    // SIGTERM (the node sends a short retry and ends streams), then SIGKILL: each time, events
    // are published through B while A is down, and A comes back on the same address.
    for (round, signal) in ["TERM", "KILL"].into_iter().enumerate() {
        a.signal(signal).await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let status = a.exit_by(deadline, &format!("after SIG{signal}")).await;
        assert!(
            signal == "KILL" || status.success(),
            "SIGTERM: exit {status}"
        );
        publish_numbered(b.addr, "relay", 3, &mut expected).await;
        a = Server::start_at(a.addr, "browser-a", &args, &[], false).await;
        publish_numbered(b.addr, "relay", 1, &mut expected).await;
        let opens = round as u32 + 2;
        browser
            .wait_for(
                &wait_events(expected.len(), opens),
                WAIT,
                &format!("the browser reconnected to node A after SIG{signal} and resumed"),
            )
            .await;
    }
    tokio::time::sleep(common::QUIET).await;
    let report = browser.execute("return window.report[0]", json!([])).await;
    assert_same_events(
        &report["events"],
        &expected,
        "events across two restarts of node A",
    );
    assert_eq!(report["opens"], 3, "one open per connection to A: {report}");
    browser.quit().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn terminal_event_stops_eventsource_after_one_reconnect() {
    let pages = PageServer::start().await;
    let hub = hub_for(&pages, |_| {}).await;
    let browser = Browser::start().await;
    browser
        .navigate(&pages.url(
            "eventsource.html",
            &query(&[
                ("hub", &format!("http://{}", hub.addr)),
                ("src", "/events/job"),
                ("events", "progress,done"),
            ]),
        ))
        .await;
    browser
        .wait_for(
            "return window.report[0].opens === 1 || window.report",
            WAIT,
            "the EventSource opened",
        )
        .await;
    let progress = publish_ok(
        hub.addr,
        json!({"channel": "job", "event": "progress", "data": "50%"}),
    )
    .await;
    let done = publish_ok(
        hub.addr,
        json!({"channel": "job", "event": "done", "data": "ok", "close": true}),
    )
    .await;
    browser
        .wait_for(
            "return window.sources[0].readyState === EventSource.CLOSED || window.report",
            WAIT,
            "the EventSource gave up after the terminal event",
        )
        .await;
    // Time for a reconnect loop to show (several RETRY periods), if there were one.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let report = browser.execute("return window.report[0]", json!([])).await;
    assert_same_events(
        &report["events"],
        &[
            page_event("progress", "50%", &progress["id"]),
            page_event("done", "ok", &done["id"]),
        ],
        "events before the end",
    );
    assert_eq!(report["opens"], 1, "{report}");
    // One error when the stream ended (CONNECTING: it will reconnect), one when the reconnect
    // got 204 (CLOSED: it gave up). Nothing after.
    assert_eq!(report["errors"], json!([0, 2]), "{report}");
    let requests = |status: &'static str| {
        let addr = hub.addr;
        async move {
            metric(
                addr,
                &format!("ssehub_http_requests_total{{route=\"events\",status=\"{status}\"}}"),
            )
            .await
        }
    };
    assert_eq!(requests("200").await, 1.0, "one stream was served");
    assert_eq!(
        requests("204").await,
        1.0,
        "exactly one reconnect, answered 204"
    );
    browser.quit().await;
    hub.stop().await;
}

/// A TCP relay to `upstream` that passes answers on in pieces of [`SlowRelay::PIECE`] bytes
/// with a pause after each, as a slow network would: the browser then reads event-stream
/// chunks that end anywhere, inside events, lines and UTF-8 characters.
struct SlowRelay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for SlowRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SlowRelay {
    /// An odd size, so piece ends drift across the stream's structure.
    const PIECE: usize = 997;
    const PAUSE: Duration = Duration::from_millis(1);

    async fn start(upstream: SocketAddr) -> SlowRelay {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the relay on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr of the relay");
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                connections.spawn(async move {
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (mut client_in, mut client_out) = client.into_split();
                    let (mut server_in, mut server_out) = server.into_split();
                    let requests = async {
                        let _ = tokio::io::copy(&mut client_in, &mut server_out).await;
                        let _ = server_out.shutdown().await;
                    };
                    let answers = async {
                        let mut piece = [0u8; SlowRelay::PIECE];
                        while let Ok(n @ 1..) = server_in.read(&mut piece).await {
                            if client_out.write_all(&piece[..n]).await.is_err() {
                                break;
                            }
                            tokio::time::sleep(SlowRelay::PAUSE).await;
                        }
                        let _ = client_out.shutdown().await;
                    };
                    tokio::join!(requests, answers);
                });
            }
        });
        SlowRelay { addr, task }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_streaming_parses_events_split_across_chunks() {
    const KEY: &str = "browser-test-secret-of-32-bytes-or-more";
    let pages = PageServer::start().await;
    let hub = hub_for(&pages, |c| {
        c.jwt_key = Some(KeySpec(KEY.into()));
        c.max_event_bytes = 1 << 20;
        c.max_body_bytes = 4 << 20;
    })
    .await;
    let lifetime = Duration::from_secs(3600);
    let reader = mint(
        KEY,
        Permissions {
            subscribe: vec!["stream".into()],
            ..Permissions::default()
        },
        lifetime,
    )
    .expect("mint a subscriber token");
    let writer = mint(
        KEY,
        Permissions {
            publish: vec!["stream".into()],
            ..Permissions::default()
        },
        lifetime,
    )
    .expect("mint a publisher token");
    let bearer = format!("Bearer {writer}");
    let publish_json = |body: Value| {
        let (addr, bearer) = (hub.addr, bearer.clone());
        async move {
            let bytes = serde_json::to_vec(&body).expect("serialize");
            let response = request(
                addr,
                "POST",
                "/publish",
                &[
                    ("Content-Type", "application/json"),
                    ("Authorization", &bearer),
                ],
                &bytes,
            )
            .await;
            assert_eq!(response.status, 200, "publish: {}", response.text());
            response.json()
        }
    };
    // What the page's parser yields.
    let event = |event: &str, data: &str, id: &Value| {
        let id = id.clone();
        json!({"type": event, "data": data, "lastEventId": id})
    };

    let first = publish_json(json!({"channel": "stream", "data": "before 1"})).await;
    let second = publish_json(json!({"channel": "stream", "data": "before 2"})).await;
    let mut expected = vec![event("message", "before 2", &second["id"])];

    // The page reads through a relay that cuts the stream into small pieces.
    let relay = SlowRelay::start(hub.addr).await;
    let browser = Browser::start().await;
    browser
        .navigate(&pages.url(
            "fetch.html",
            &query(&[
                ("hub", &format!("http://{}", relay.addr)),
                ("src", "/events/stream"),
                ("token", &reader),
                ("last", first["id"].as_str().unwrap()),
            ]),
        ))
        .await;
    browser
        .wait_for(
            "const r = window.report;
             return (r.read.length === 1 && r.followed.length === 1) || r",
            WAIT,
            "both fetch readers resumed after the first event (Last-Event-ID on the first request)",
        )
        .await;

    // One 200 KB event of 1- to 4-byte UTF-8 characters, a multi-line one, 300 small ones in a
    // single batch, then the terminal event.
    let big: String = "ünïcödé € 𝄞 plain ascii "
        .chars()
        .cycle()
        .take(150_000)
        .collect();
    assert!(big.len() > 200_000);
    let answer = publish_json(json!({"channel": "stream", "event": "big", "data": big})).await;
    expected.push(event("big", &big, &answer["id"]));
    let answer =
        publish_json(json!({"channel": "stream", "data": "crlf a\r\ncrlf b\rcr c\n\nlast"})).await;
    expected.push(event(
        "message",
        "crlf a\ncrlf b\ncr c\n\nlast",
        &answer["id"],
    ));
    let ticks: Vec<Value> = (1..=300)
        .map(|i| json!({"channel": "stream", "event": "tick", "data": format!("tick {i}")}))
        .collect();
    let answers = publish_json(json!({ "events": ticks })).await;
    for (i, answer) in answers
        .as_array()
        .expect("a batch answers a list")
        .iter()
        .enumerate()
    {
        expected.push(event("tick", &format!("tick {}", i + 1), &answer["id"]));
    }
    let answer =
        publish_json(json!({"channel": "stream", "event": "done", "data": "bye", "close": true}))
            .await;
    expected.push(event("done", "bye", &answer["id"]));

    browser
        .wait_for(
            "const r = window.report;
             return (r.readDone && r.followResult === 'closed') || {...r, read: r.read.length,
               followed: r.followed.length, naive: r.naive.length}",
            WAIT,
            "both readers reached the end of the stream and follow() stopped on 204",
        )
        .await;
    let report = browser.execute("return window.report", json!([])).await;
    assert_eq!(report["error"], Value::Null);
    assert_same_events(&report["read"], &expected, "readEvents over one fetch");
    assert_same_events(&report["followed"], &expected, "follow()");
    assert_eq!(report["followOpens"], 1, "follow: one stream, then 204");

    // The network really cut events apart, and the naive per-chunk split got them wrong.
    let pieces = report["pieces"].as_u64().unwrap();
    let mid_line = report["midLinePieces"].as_u64().unwrap();
    assert!(
        mid_line > 0,
        "no network piece ended inside a data line ({pieces} pieces): nothing was split"
    );
    let unsplit: Vec<Value> = expected
        .iter()
        .flat_map(|e| {
            e["data"]
                .as_str()
                .unwrap()
                .split('\n')
                .map(|line| json!(line))
        })
        .collect();
    let naive = report["naive"].as_array().unwrap();
    let intact = naive.iter().filter(|line| unsplit.contains(line)).count();
    eprintln!(
        "fetch: {pieces} pieces, {mid_line} ended inside a data line; the naive parser found \
         {} data lines ({intact} intact) of {}",
        naive.len(),
        unsplit.len()
    );
    assert!(
        *naive != unsplit,
        "the naive parser should have broken the lines cut by the {mid_line} mid-line pieces"
    );
    browser.quit().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_streams_fit_one_multi_channel_eventsource_not_ten_over_http1() {
    let pages = PageServer::start().await;
    let hub = hub_for(&pages, |_| {}).await;
    let hub_url = format!("http://{}", hub.addr);
    let browser = Browser::start().await;
    let channels: Vec<String> = (1..=10).map(|i| format!("t{i}")).collect();

    // One EventSource for ten channels: every channel's events arrive, with composite ids.
    let src = format!(
        "/events?{}",
        channels
            .iter()
            .map(|c| format!("channel={c}"))
            .collect::<Vec<_>>()
            .join("&")
    );
    browser
        .navigate(&pages.url(
            "eventsource.html",
            &query(&[("hub", &hub_url), ("src", &src)]),
        ))
        .await;
    browser
        .wait_for(
            "return window.report[0].opens === 1 || window.report",
            WAIT,
            "the multi-channel EventSource opened",
        )
        .await;
    let mut published = Vec::new();
    for round in ["started", "done"] {
        for (i, channel) in channels.iter().enumerate() {
            let data = format!("{channel} {round}");
            let answer = publish_ok(hub.addr, json!({"channel": channel, "data": data})).await;
            published.push((i, data, answer["id"].as_str().unwrap().to_owned()));
        }
    }
    browser
        .wait_for(
            "return window.report[0].events.length >= 20 || window.report",
            WAIT,
            "20 events of 10 channels arrived on one connection",
        )
        .await;
    tokio::time::sleep(common::QUIET).await;
    let report = browser.execute("return window.report[0]", json!([])).await;
    let events = report["events"].as_array().unwrap();
    assert_eq!(events.len(), 20, "{report}");
    for (event, (i, data, id)) in events.iter().zip(&published) {
        assert_eq!(event["type"], "message");
        assert_eq!(event["data"], json!(data));
        let composite: Vec<&str> = event["id"].as_str().unwrap().split('.').collect();
        assert_eq!(composite.len(), 10, "one position per channel: {event}");
        assert_eq!(
            composite[*i],
            id,
            "channel t{}'s position in {event}",
            i + 1
        );
    }

    // Ten EventSources to the same HTTP/1.1 origin: Chromium opens six connections and queues
    // the rest, which stay CONNECTING and get nothing. This is what the line above avoids.
    let srcs: Vec<(&str, String)> = (1..=10).map(|i| ("src", format!("/events/s{i}"))).collect();
    let mut pairs = vec![("hub", hub_url.as_str())];
    pairs.extend(srcs.iter().map(|(k, v)| (*k, v.as_str())));
    browser
        .navigate(&pages.url("eventsource.html", &query(&pairs)))
        .await;
    let states = "return window.sources.map((s) => s.readyState)";
    browser
        .wait_for(
            "return window.sources.filter((s) => s.readyState === 1).length === 6
                || window.sources.map((s) => s.readyState)",
            WAIT,
            "six EventSources opened",
        )
        .await;
    wait_until(WAIT, "the hub sees exactly six subscribers", || async {
        metric(hub.addr, "ssehub_subscribers").await == 6.0
    })
    .await;
    let mut news = Vec::new();
    for i in 1..=10 {
        let data = format!("s{i} news");
        let answer = publish_ok(hub.addr, json!({"channel": format!("s{i}"), "data": data})).await;
        news.push(page_event("message", &data, &answer["id"]));
    }
    // Long enough for a seventh connection or the queued sources' events to show, if they could.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ready: Vec<u64> = serde_json::from_value(browser.execute(states, json!([])).await).unwrap();
    assert_eq!(
        ready.iter().filter(|&&s| s == 1).count(),
        6,
        "open: {ready:?}"
    );
    assert_eq!(
        ready.iter().filter(|&&s| s == 0).count(),
        4,
        "still connecting: {ready:?}"
    );
    let report = browser.execute("return window.report", json!([])).await;
    for (i, entry) in report.as_array().unwrap().iter().enumerate() {
        let expected = if ready[i] == 1 {
            json!([news[i]])
        } else {
            json!([])
        };
        assert_eq!(
            entry["events"], expected,
            "source {i} (readyState {})",
            ready[i]
        );
    }
    // Closing one open source lets a queued one connect: still six at most.
    let closed = ready.iter().position(|&s| s == 1).unwrap();
    browser
        .execute("window.sources[arguments[0]].close()", json!([closed]))
        .await;
    browser
        .wait_for(
            "return window.report.filter((r) => r.opens === 1).length === 7
                || window.sources.map((s) => s.readyState)",
            WAIT,
            "a queued EventSource connected once a connection was freed",
        )
        .await;
    let ready: Vec<u64> = serde_json::from_value(browser.execute(states, json!([])).await).unwrap();
    assert_eq!(
        ready.iter().filter(|&&s| s == 1).count(),
        6,
        "open: {ready:?}"
    );
    browser.quit().await;
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ten_eventsources_share_one_http2_connection_over_tls() {
    let pages = PageServer::start().await;
    let dir = std::env::temp_dir().join(format!("ssehub-browser-h2-{}", std::process::id()));
    let certs = common::tls::make_certificates(&dir);
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    let hub = hub_for(&pages, move |c| {
        c.tls_cert = Some(cert);
        c.tls_key = Some(key);
    })
    .await;
    let gauge = |series: &'static str| {
        let ca = certs.ca.clone();
        async move {
            let (status, body) =
                common::tls::request(hub.addr, &ca, "GET", "/metrics", &[], b"").await;
            assert_eq!(status, 200, "{body}");
            common::parse_metric(&body, series).unwrap_or(0.0)
        }
    };
    let browser = Browser::start().await;
    let hub_url = format!("https://127.0.0.1:{}", hub.addr.port());
    let mut pairs = vec![("hub", hub_url.as_str())];
    let srcs: Vec<String> = (1..=10).map(|i| format!("/events/h{i}")).collect();
    pairs.extend(srcs.iter().map(|src| ("src", src.as_str())));
    browser
        .navigate(&pages.url("eventsource.html", &query(&pairs)))
        .await;
    browser
        .wait_for(
            "return window.sources.every((s) => s.readyState === 1)
                || window.sources.map((s) => s.readyState)",
            WAIT,
            "all ten EventSources open over HTTP/2",
        )
        .await;
    // Ten subscribers on one browser connection (the other connection is this request's own).
    wait_until(WAIT, "ten subscribers on one connection", || async {
        gauge("ssehub_subscribers").await == 10.0 && gauge("ssehub_connections").await == 2.0
    })
    .await;
    let mut expected = Vec::new();
    for i in 1..=10 {
        let data = format!("h{i} over h2");
        let body = json!({"channel": format!("h{i}"), "data": data}).to_string();
        let headers = [("content-type", "application/json")];
        let (status, answer) = common::tls::request(
            hub.addr,
            &certs.ca,
            "POST",
            "/publish",
            &headers,
            body.as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        let answer: Value = serde_json::from_str(&answer).expect("publish answer");
        expected.push(page_event("message", &data, &answer["id"]));
    }
    browser
        .wait_for(
            "return window.report.every((r) => r.events.length === 1)
                || window.report.map((r) => r.events.length)",
            WAIT,
            "each EventSource got its channel's event",
        )
        .await;
    tokio::time::sleep(common::QUIET).await;
    let report = browser.execute("return window.report", json!([])).await;
    for (i, entry) in report.as_array().expect("report").iter().enumerate() {
        assert_eq!(entry["events"], json!([expected[i]]), "source {i}");
        assert_eq!(entry["opens"], 1, "source {i}");
    }
    browser.quit().await;
    hub.stop().await;
}

/// Where test screenshots go: `<target dir>/browser-artifacts/`.
fn artifacts_dir() -> PathBuf {
    let bin = std::path::Path::new(common::node::BIN);
    let target = bin
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the ssehub binary lies in <target>/<profile>/");
    let dir = target.join("browser-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/browser-artifacts");
    dir
}

/// Sets the demo page's input `id` to `value` (a bool for checkboxes).
async fn fill(browser: &Browser, id: &str, value: Value) {
    browser
        .execute(
            "const [id, value] = arguments; const input = document.getElementById(id);
             if (typeof value === 'boolean') input.checked = value; else input.value = value;",
            json!([id, value]),
        )
        .await;
}

async fn click(browser: &Browser, id: &str) {
    browser
        .execute("document.getElementById(arguments[0]).click()", json!([id]))
        .await;
}

/// The demo page's event rows, oldest first, as `{id, event, data}`.
async fn demo_rows(browser: &Browser) -> Vec<Value> {
    let rows = browser
        .execute(
            "return [...document.querySelectorAll('#events tr:not(.note)')].reverse().map((tr) =>
               ({id: tr.cells[1].textContent, event: tr.cells[2].textContent,
                 data: tr.cells[3].textContent}))",
            json!([]),
        )
        .await;
    serde_json::from_value(rows).expect("rows are a list")
}

async fn wait_demo_rows(browser: &Browser, n: usize, what: &str) -> Vec<Value> {
    browser
        .wait_for(
            &format!(
                "return document.querySelectorAll('#events tr:not(.note)').length >= {n}
                   || document.querySelector('main').innerText"
            ),
            WAIT,
            what,
        )
        .await;
    demo_rows(browser).await
}

/// Publishes through the demo page's form and waits for its answer.
async fn demo_publish(browser: &Browser, channel: &str, event: &str, data: &str) {
    fill(browser, "pub-channel", json!(channel)).await;
    fill(browser, "pub-event", json!(event)).await;
    fill(browser, "pub-data", json!(data)).await;
    browser
        .execute(
            "document.getElementById('result').textContent = ''",
            json!([]),
        )
        .await;
    click(browser, "publish").await;
    browser
        .wait_for(
            "const r = document.getElementById('result').textContent;
             return r.startsWith('published ') || r",
            WAIT,
            "the demo page published",
        )
        .await;
}

async fn demo_text(browser: &Browser, id: &str) -> String {
    let text = browser
        .execute(
            "return document.getElementById(arguments[0]).textContent",
            json!([id]),
        )
        .await;
    text.as_str().expect("text").to_owned()
}

/// Clicks the demo's Subscribe button and waits until its state says `open`.
async fn demo_subscribe(browser: &Browser, what: &str) {
    click(browser, "subscribe").await;
    browser
        .wait_for(
            "return document.getElementById('state').textContent === 'open'
                || document.getElementById('state').textContent",
            WAIT,
            what,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_page_subscribes_publishes_and_resumes() {
    let hub = Hub::start().await;
    let browser = Browser::start().await;
    browser.navigate(&format!("http://{}/", hub.addr)).await;
    fill(&browser, "channels", json!("demo/news")).await;
    demo_subscribe(&browser, "the demo page subscribed").await;

    demo_publish(&browser, "demo/news", "greeting", "hello, browser").await;
    demo_publish(&browser, "demo/news", "", "{\"progress\": 50}").await;
    let rows = wait_demo_rows(&browser, 2, "the two published events are listed").await;
    let id = |row: &Value| row["id"].as_str().unwrap().to_owned();
    let epoch = id(&rows[0]).rsplit_once('-').unwrap().0.to_owned();
    let row = |n: u64, event: &str, data: &str| {
        let id = format!("{epoch}-{n}");
        json!({"id": id, "event": event, "data": data})
    };
    assert_eq!(
        rows,
        [
            row(1, "greeting", "hello, browser"),
            row(2, "message", "{\"progress\": 50}")
        ]
    );
    assert_eq!(demo_text(&browser, "last-id").await, format!("{epoch}-2"));

    // Drop the connection, publish while it is down, resume: the missed events arrive once.
    click(&browser, "drop").await;
    assert!(demo_text(&browser, "state").await.starts_with("dropped"));
    for data in ["missed 1", "missed 2"] {
        publish_ok(hub.addr, json!({"channel": "demo/news", "data": data})).await;
    }
    tokio::time::sleep(common::QUIET).await;
    assert_eq!(
        demo_rows(&browser).await.len(),
        2,
        "an event reached a dropped connection"
    );
    click(&browser, "drop").await;
    let rows = wait_demo_rows(&browser, 4, "the missed events arrived after resuming").await;
    assert_eq!(
        rows,
        [
            row(1, "greeting", "hello, browser"),
            row(2, "message", "{\"progress\": 50}"),
            row(3, "message", "missed 1"),
            row(4, "message", "missed 2"),
        ]
    );
    assert_eq!(demo_text(&browser, "opens").await, "2");
    assert_eq!(demo_text(&browser, "gaps").await, "0");
    assert_eq!(demo_text(&browser, "state").await, "open");

    let png = browser.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "the screenshot is a PNG"
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(
        width >= 1000 && height >= 600,
        "screenshot is {width}x{height}"
    );
    assert!(
        png.len() > 20_000,
        "a blank page compresses to less: {} bytes",
        png.len()
    );
    let path = artifacts_dir().join("demo.png");
    std::fs::write(&path, &png).expect("write the demo screenshot");
    eprintln!("demo page screenshot: {}", path.display());
    hub.stop().await;

    // On a hub that requires tokens, the token field is used: `?access_token=` for
    // EventSource, a Bearer header for publishing.
    const KEY: &str = "demo-page-secret-of-32-bytes-or-more";
    let secure = Hub::start_with(|c| c.jwt_key = Some(KeySpec(KEY.into()))).await;
    let patterns = vec!["secure/*".to_owned()];
    let permissions = Permissions {
        publish: patterns.clone(),
        subscribe: patterns,
    };
    let token = mint(KEY, permissions, Duration::from_secs(3600)).expect("mint a token");
    browser.navigate(&format!("http://{}/", secure.addr)).await;
    fill(&browser, "channels", json!("secure/room")).await;
    fill(&browser, "token", json!(token)).await;
    demo_subscribe(&browser, "the demo page subscribed with a token").await;
    demo_publish(&browser, "secure/room", "", "with a token").await;
    let rows = wait_demo_rows(&browser, 1, "the event published with a token is listed").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["data"], "with a token");
    assert_eq!(seq(rows[0]["id"].as_str().unwrap()), 1);
    browser.quit().await;
    secure.stop().await;
}

/// The text between the first `open` and the next `close` in `page`.
fn between<'a>(page: &'a str, open: &str, close: &str) -> &'a str {
    let start = page
        .find(open)
        .unwrap_or_else(|| panic!("no {open} in the page"))
        + open.len();
    let end = page[start..]
        .find(close)
        .unwrap_or_else(|| panic!("no {close} in the page"));
    &page[start..start + end]
}

/// SHA-256 of `bytes`, from the `ring` provider the hub's rustls already carries.
fn sha256(bytes: &[u8]) -> Vec<u8> {
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .expect("a TLS 1.3 suite");
    suite.common.hash_provider.hash(bytes).as_ref().to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn demo_page_is_one_static_file_under_a_strict_policy_and_off_with_no_demo() {
    let hub = Hub::start().await;
    let response = request(hub.addr, "GET", "/", &[], b"").await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert_eq!(response.header("cache-control"), Some("no-cache"));
    let page = response.text();
    assert!(page.contains("<title>ssehub demo</title>"), "{page}");
    assert_eq!(
        page.matches("<script").count(),
        1,
        "one inline script, nothing loaded"
    );
    assert_eq!(page.matches("<style").count(), 1, "one inline style block");
    let script = between(&page, "<script>", "</script>");
    let markup = page.replace(script, "");
    let inline_handler = markup.split(" on").skip(1).any(|rest| {
        let name = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_lowercase())
                .len();
        name > 0 && rest[name..].starts_with('=')
    });
    assert!(
        !markup.contains(" style=") && !inline_handler,
        "no inline style or event handler attributes: the policy blocks them"
    );
    let policy = response
        .header("content-security-policy")
        .expect("a Content-Security-Policy header");
    let directives: Vec<&str> = policy.split(';').map(str::trim).collect();
    for (name, tag) in [("script-src", "script"), ("style-src", "style")] {
        let text = between(&page, &format!("<{tag}>"), &format!("</{tag}>"));
        let wanted = format!(
            "{name} 'sha256-{}'",
            encode_base64(&sha256(text.as_bytes()))
        );
        assert!(
            directives.contains(&wanted.as_str()),
            "the page's <{tag}> changed: put `{wanted}` in src/http/demo.rs (policy: {policy})"
        );
    }
    for directive in [
        "default-src 'none'",
        "connect-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(directives.contains(&directive), "{directive} in {policy}");
    }
    hub.stop().await;

    // The binary serves it by default; --no-demo and SSEHUB_NO_DEMO turn it off.
    let on = Server::start("demo-on", &[], &[], false).await;
    assert_eq!(request(on.addr, "GET", "/", &[], b"").await.status, 200);
    let off = Server::start("demo-off", &["--no-demo"], &[], false).await;
    assert_error(
        &request(off.addr, "GET", "/", &[], b"").await,
        404,
        "GET / with --no-demo",
    );
    let env_off = Server::start("demo-env-off", &[], &[("SSEHUB_NO_DEMO", "true")], false).await;
    assert_error(
        &request(env_off.addr, "GET", "/", &[], b"").await,
        404,
        "GET / with SSEHUB_NO_DEMO=true",
    );
}
