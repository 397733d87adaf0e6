//! The example clients in `examples/clients/` (Node with fetch and `sse-stream.mjs`, Python
//! with `http.client`) run as real `node` and `python3` processes against a real hub: they print
//! exactly what was published, resume from `--last-event-id`, print `gap` events, survive their
//! node being killed and replaced, stop on `204` after a terminal event, send `--token`, and
//! give up on refusals. Also runs the parser checks `tests/js/parser-check.mjs` and
//! `tests/py/parser_check.py`, which cut streams at every byte.

mod common;

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::node::Server;
use common::redis_server::RedisServer;
use common::{metric, publish, request, wait_until, Hub, Response};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// Bound on every single wait in this file.
const T: Duration = Duration::from_secs(20);
/// Reconnect delay the hubs advertise, so the clients come back quickly.
const RETRY: Duration = Duration::from_millis(200);
/// [`RETRY`] as a command-line value.
const RETRY_ARG: &str = "200ms";
const DIR: &str = env!("CARGO_MANIFEST_DIR");
/// The hub's HS256 secret in the token test (at least 32 bytes).
const SECRET: &str = "clients-test-secret-0123456789abcdefghij";

/// Which example client.
#[derive(Clone, Copy, Debug)]
enum Lang {
    Node,
    Python,
}

impl Lang {
    fn program(self) -> &'static str {
        match self {
            Lang::Node => "node",
            Lang::Python => "python3",
        }
    }

    /// The Debian package tests/run.sh installs for it.
    fn package(self) -> &'static str {
        match self {
            Lang::Node => "nodejs",
            Lang::Python => "python3",
        }
    }

    fn script(self) -> String {
        match self {
            Lang::Node => format!("{DIR}/examples/clients/node-client.mjs"),
            Lang::Python => format!("{DIR}/examples/clients/python_client.py"),
        }
    }
}

/// Panics unless `node` (18 or later: global fetch and TextDecoderStream) or `python3` runs.
async fn require(lang: Lang) {
    let output = common::run_program(lang.program(), lang.package(), &["--version"], T).await;
    let version = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{} --version: {version}",
        lang.program()
    );
    if let Lang::Node = lang {
        let major: u32 = version
            .trim()
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|major| major.parse().ok())
            .unwrap_or_else(|| panic!("unexpected `node --version`: {version:?}"));
        assert!(
            major >= 18,
            "node {version} is too old: fetch needs 18 or later"
        );
    }
}

/// An example client process; killed when dropped.
struct Client {
    lang: Lang,
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
    stderr: Arc<Mutex<String>>,
}

impl Client {
    /// Starts `lang`'s client on `url` with extra command-line `args`.
    async fn start(lang: Lang, url: &str, args: &[&str]) -> Client {
        require(lang).await;
        let mut child = Command::new(lang.program())
            .arg(lang.script())
            .arg(url)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {} client: {e}", lang.program()));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr_pipe.read(&mut buf).await {
                let text = String::from_utf8_lossy(&buf[..n]);
                sink.lock().expect("stderr buffer").push_str(&text);
            }
        });
        Client {
            lang,
            child,
            lines: BufReader::new(stdout).lines(),
            stderr,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// The next printed event, within [`T`].
    async fn line(&mut self) -> Value {
        let line = match tokio::time::timeout(T, self.lines.next_line()).await {
            Ok(Ok(Some(line))) => line,
            Ok(Ok(None)) => panic!(
                "{:?} client exited before the next event; stderr:\n{}",
                self.lang,
                self.stderr()
            ),
            Ok(Err(e)) => panic!("{:?} client stdout: {e}", self.lang),
            Err(_) => panic!(
                "{:?} client printed no event within {T:?}; stderr:\n{}",
                self.lang,
                self.stderr()
            ),
        };
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{:?} client printed {line:?}, not JSON: {e}", self.lang))
    }

    /// The next `n` printed events.
    async fn events(&mut self, n: usize) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        for _ in 0..n {
            events.push(self.line().await);
        }
        events
    }

    /// Waits (within [`T`]) for the client to exit by itself; panics if it prints more first.
    async fn exit(&mut self) -> ExitStatus {
        let rest = tokio::time::timeout(T, self.lines.next_line()).await;
        match rest {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(line))) => panic!("{:?} client printed {line} after the end", self.lang),
            Ok(Err(e)) => panic!("{:?} client stdout: {e}", self.lang),
            Err(_) => panic!(
                "{:?} client did not exit within {T:?}; stderr:\n{}",
                self.lang,
                self.stderr()
            ),
        }
        match tokio::time::timeout(T, self.child.wait()).await {
            Ok(status) => status.expect("wait for the client"),
            Err(_) => panic!("{:?} client closed stdout but did not exit", self.lang),
        }
    }

    /// Waits for a clean exit (status 0) by itself.
    async fn exit_ok(&mut self) {
        let status = self.exit().await;
        assert!(
            status.success(),
            "{:?} client exited with {status}; stderr:\n{}",
            self.lang,
            self.stderr()
        );
    }
}

/// The line a client prints for an event.
fn printed(id: &str, event: &str, data: &str) -> Value {
    json!({"id": id, "event": event, "data": data})
}

/// The id the hub answered a single publish with.
fn id_of(response: &Response) -> String {
    assert_eq!(response.status, 200, "publish: {}", response.text());
    response.json()["id"]
        .as_str()
        .unwrap_or_else(|| panic!("publish answer without id: {}", response.text()))
        .to_string()
}

/// Publishes `body` on `addr` (with `channel` added) and returns the event's id.
async fn send(addr: SocketAddr, channel: &str, mut body: Value) -> String {
    body["channel"] = json!(channel);
    id_of(&publish(addr, body).await)
}

fn events_url(addr: SocketAddr, channel: &str) -> String {
    format!("http://{addr}/events/{channel}")
}

async fn subscribers(addr: SocketAddr) -> f64 {
    metric(addr, "ssehub_subscribers").await
}

async fn wait_subscribed(addr: SocketAddr, n: f64) {
    wait_until(T, &format!("{n} subscriber(s) on {addr}"), || async move {
        subscribers(addr).await == n
    })
    .await;
}

/// Publishes one event of each kind the clients must carry unchanged; returns what a client
/// prints for each, in order. The last one is the terminal event.
async fn publish_every_kind(addr: SocketAddr, channel: &str) -> Vec<Value> {
    let structured = json!({"list": [1, true, null], "quote": "say \"hi\"", "x": 1.5});
    let cases: Vec<(Value, &str, String)> = vec![
        (json!({"data": "hello"}), "message", "hello".into()),
        (
            json!({"event": "update", "data": "named"}),
            "update",
            "named".into(),
        ),
        (
            json!({"data": structured}),
            "message",
            structured.to_string(),
        ),
        (
            json!({"data": "first\nsecond\n\nfourth"}),
            "message",
            "first\nsecond\n\nfourth".into(),
        ),
        // SSE has no CR in data: CRLF and CR end lines like LF.
        (json!({"data": "a\r\nb\rc"}), "message", "a\nb\nc".into()),
        (
            json!({"data": "trailing\n"}),
            "message",
            "trailing\n".into(),
        ),
        (
            json!({"data": " leading space: kept"}),
            "message",
            " leading space: kept".into(),
        ),
        (
            json!({"event": "unicode", "data": "héllo wörld — 日本語 ∑ 🎉"}),
            "unicode",
            "héllo wörld — 日本語 ∑ 🎉".into(),
        ),
        (json!({"data": ""}), "message", String::new()),
        (
            json!({"event": "done", "data": {"ok": true}, "close": true}),
            "done",
            r#"{"ok":true}"#.into(),
        ),
    ];
    let mut expected = Vec::new();
    for (body, event, data) in cases {
        let id = send(addr, channel, body).await;
        expected.push(printed(&id, event, &data));
    }
    expected
}

async fn hub() -> Hub {
    Hub::start_with(|c| c.retry = RETRY).await
}

// ---------------------------------------------------------------------------------------------

async fn prints_exactly_what_was_published_and_stops_on_close(lang: Lang) {
    let hub = hub().await;
    let channel = "clients/exact";
    let mut client = Client::start(lang, &events_url(hub.addr, channel), &[]).await;
    wait_subscribed(hub.addr, 1.0).await;

    let expected = publish_every_kind(hub.addr, channel).await;
    let got = client.events(expected.len()).await;
    assert_eq!(got, expected, "{lang:?} client output");

    // The stream ended after the terminal event; the reconnect got 204 and the client quit.
    client.exit_ok().await;
    let no_content = r#"ssehub_http_requests_total{route="events",status="204"}"#;
    assert_eq!(metric(hub.addr, no_content).await, 1.0, "one 204 answer");
}

#[tokio::test(flavor = "multi_thread")]
async fn node_prints_exactly_what_was_published_and_stops_on_close() {
    prints_exactly_what_was_published_and_stops_on_close(Lang::Node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_prints_exactly_what_was_published_and_stops_on_close() {
    prints_exactly_what_was_published_and_stops_on_close(Lang::Python).await;
}

// ---------------------------------------------------------------------------------------------

async fn resumes_from_last_event_id(lang: Lang) {
    let hub = hub().await;
    let channel = "clients/resume";
    let mut history = Vec::new();
    for i in 1..=6 {
        let data = format!("event {i}");
        let id = send(hub.addr, channel, json!({"event": "step", "data": data})).await;
        history.push(printed(&id, "step", &data));
    }
    let cursor = history[2]["id"].as_str().expect("id").to_string();
    let url = events_url(hub.addr, channel);
    let mut client = Client::start(lang, &url, &["--last-event-id", &cursor]).await;
    assert_eq!(
        client.events(3).await,
        history[3..],
        "the events after {cursor}"
    );

    let live = send(hub.addr, channel, json!({"data": "live"})).await;
    let close = send(hub.addr, channel, json!({"data": "end", "close": true})).await;
    let expected = vec![
        printed(&live, "message", "live"),
        printed(&close, "message", "end"),
    ];
    assert_eq!(client.events(2).await, expected, "then live events");
    client.exit_ok().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_resumes_from_last_event_id() {
    resumes_from_last_event_id(Lang::Node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_resumes_from_last_event_id() {
    resumes_from_last_event_id(Lang::Python).await;
}

// ---------------------------------------------------------------------------------------------

async fn prints_gap_events_and_stops_after_max_events(lang: Lang) {
    let hub = hub().await;
    let channel = "clients/gap";
    let first = send(hub.addr, channel, json!({"data": "one"})).await;
    let second = send(hub.addr, channel, json!({"data": "two"})).await;
    send(hub.addr, channel, json!({"data": "three"})).await;
    let url = events_url(hub.addr, channel);
    let args = ["--last-event-id", "not-a-cursor", "--max-events", "3"];
    let mut client = Client::start(lang, &url, &args).await;

    let gap = client.line().await;
    let epoch = first.split_once('-').expect("EPOCH-SEQ").0;
    assert_eq!(gap["event"], "gap", "{gap}");
    assert_eq!(gap["id"], format!("{epoch}-0"), "just before the history");
    let data: Value = serde_json::from_str(gap["data"].as_str().expect("data")).expect("JSON");
    assert_eq!(data["reason"], "invalid_cursor", "{data}");
    assert_eq!(data["first_id"], json!(first), "{data}");
    let rest = vec![
        printed(&first, "message", "one"),
        printed(&second, "message", "two"),
    ];
    assert_eq!(client.events(2).await, rest, "then the history");
    // The third event is retained and the channel open: only --max-events stops the client.
    client.exit_ok().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_prints_gap_events_and_stops_after_max_events() {
    prints_gap_events_and_stops_after_max_events(Lang::Node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_prints_gap_events_and_stops_after_max_events() {
    prints_gap_events_and_stops_after_max_events(Lang::Python).await;
}

// ---------------------------------------------------------------------------------------------

async fn survives_its_node_being_replaced(lang: Lang) {
    let redis = RedisServer::start().await;
    let url = redis.url();
    let args = ["--redis-url", url.as_str(), "--retry", RETRY_ARG];
    let mut node_a = Server::start("clients-a", &args, &[], false).await;
    let node_b = Server::start("clients-b", &args, &[], false).await;
    let channel = "clients/failover";
    let mut client = Client::start(lang, &events_url(node_a.addr, channel), &[]).await;
    wait_subscribed(node_a.addr, 1.0).await;

    let mut expected = Vec::new();
    let publish_on = |addr: SocketAddr, data: String| async move {
        let id = send(addr, channel, json!({"data": data})).await;
        printed(&id, "message", &data)
    };
    for i in 1..=3 {
        expected.push(publish_on(node_b.addr, format!("before {i}")).await);
    }
    assert_eq!(client.events(3).await, expected, "live through node a");

    node_a.signal("KILL").await;
    node_a
        .exit_by(tokio::time::Instant::now() + T, "after SIGKILL")
        .await;
    wait_until(T, "the client reports losing its connection", || {
        let stderr = client.stderr();
        async move { stderr.contains("reconnecting") }
    })
    .await;
    for i in 1..=3 {
        expected.push(publish_on(node_b.addr, format!("while away {i}")).await);
    }
    assert!(
        client.child.try_wait().expect("try_wait").is_none(),
        "{lang:?} client quit while its node was down; stderr:\n{}",
        client.stderr()
    );

    let node_a2 = Server::start_at(node_a.addr, "clients-a2", &args, &[], false).await;
    assert_eq!(
        client.events(3).await,
        expected[3..],
        "missed events on resume"
    );
    expected.push(publish_on(node_a2.addr, "after".into()).await);
    let close = send(node_b.addr, channel, json!({"data": "end", "close": true})).await;
    expected.push(printed(&close, "message", "end"));
    assert_eq!(
        client.events(2).await,
        expected[6..],
        "live through the new node"
    );
    client.exit_ok().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_survives_its_node_being_replaced() {
    survives_its_node_being_replaced(Lang::Node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_survives_its_node_being_replaced() {
    survives_its_node_being_replaced(Lang::Python).await;
}

// ---------------------------------------------------------------------------------------------

/// An HS256 token for `claims` under [`SECRET`], valid for an hour.
fn token(publish: &[&str], subscribe: &[&str]) -> String {
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 3600;
    let claims = json!({"exp": exp, "ssehub": {"publish": publish, "subscribe": subscribe}});
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).expect("sign a token")
}

async fn sends_its_token_and_gives_up_when_refused(lang: Lang) {
    let hub = Hub::start_with(|c| {
        c.jwt_key = Some(ssehub::config::KeySpec(SECRET.into()));
        c.retry = RETRY;
    })
    .await;
    let channel = "clients/private";
    let url = events_url(hub.addr, channel);

    // 401 is not retried (EventSource gives up too): exit 1 with the status on stderr.
    let mut refused = Client::start(lang, &url, &[]).await;
    let status = refused.exit().await;
    assert_eq!(status.code(), Some(1), "stderr:\n{}", refused.stderr());
    assert!(refused.stderr().contains("401"), "{}", refused.stderr());

    let reader = token(&[], &["clients/*"]);
    let mut client = Client::start(lang, &url, &["--token", &reader]).await;
    wait_subscribed(hub.addr, 1.0).await;
    let bearer = format!("Bearer {}", token(&[channel], &[]));
    let body = json!({"channel": channel, "data": "secret", "close": true}).to_string();
    let headers = [
        ("Content-Type", "application/json"),
        ("Authorization", bearer.as_str()),
    ];
    let response = request(hub.addr, "POST", "/publish", &headers, body.as_bytes()).await;
    let id = id_of(&response);
    assert_eq!(client.line().await, printed(&id, "message", "secret"));
    // The reconnect after the terminal event carries the token too, and gets 204.
    client.exit_ok().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_sends_its_token_and_gives_up_when_refused() {
    sends_its_token_and_gives_up_when_refused(Lang::Node).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sends_its_token_and_gives_up_when_refused() {
    sends_its_token_and_gives_up_when_refused(Lang::Python).await;
}

// ---------------------------------------------------------------------------------------------

/// Runs a parser check script with `lang`'s interpreter; returns its JSON summary line.
async fn parser_check(lang: Lang, script: &str) -> Value {
    require(lang).await;
    let script = format!("{DIR}/{script}");
    let output = common::run_program(
        lang.program(),
        lang.package(),
        &[&script],
        Duration::from_secs(120),
    )
    .await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{script} printed {stdout:?}, not a JSON summary: {e}"));
    println!("{script}: {summary}");
    summary
}

/// `sse-stream.mjs` parses streams cut at every byte (and every pair of bytes), also through
/// `readEvents` on a fetch `Response`, exactly as the whole stream; and the naive
/// `chunk.split('\n')` loses events on the hub's own kind of stream.
#[tokio::test(flavor = "multi_thread")]
async fn fetch_parser_survives_every_cut_and_the_naive_one_does_not() {
    let summary = parser_check(Lang::Node, "tests/js/parser-check.mjs").await;
    assert!(
        summary["tricky"]["betweenCrLf"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(
        summary["tricky"]["insideUtf8"].as_u64() > Some(0),
        "{summary}"
    );
    assert!(
        summary["naive"]["naiveLostEvents"].as_u64() > Some(0),
        "{summary}"
    );
}

/// The Python client's parser on the same input, cut at every byte and every pair of bytes
/// (the hub itself only sends LF, so CR, CRLF and a BOM are checked here).
#[tokio::test(flavor = "multi_thread")]
async fn python_parser_survives_every_cut() {
    let summary = parser_check(Lang::Python, "tests/py/parser_check.py").await;
    assert!(summary["betweenCrLf"].as_u64() > Some(0), "{summary}");
    assert!(summary["insideUtf8"].as_u64() > Some(0), "{summary}");
}
