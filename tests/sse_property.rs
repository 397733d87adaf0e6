//! Property (issue 5): whatever data and event name a publisher sends, a spec-compliant
//! event-stream parser (WHATWG, [`common::SseParser`]) subscribed before reads exactly the one
//! event that was published (data with line endings normalised to LF, the event type, the id),
//! and no extra event or field; or the publish is refused with a 4xx, because the event name
//! breaks the README's rule (1 to 64 bytes without control characters, not `gap`).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{publish, request, Hub, Response, SseClient};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::json;

/// Cases per property: a few seconds in a debug build.
const CASES: u32 = 200;
/// Bound on every wait of one case.
const T: Duration = Duration::from_secs(5);

/// Pieces that look like the wire format, line ends of every kind, and odd characters.
fn tricky_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\r".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\n\n".to_string()),
        Just("\r\r".to_string()),
        Just("data:".to_string()),
        Just("data: x".to_string()),
        Just("event:".to_string()),
        Just("event: gap".to_string()),
        Just("id:".to_string()),
        Just("id: 7".to_string()),
        Just("retry:".to_string()),
        Just("retry: 1".to_string()),
        Just(":".to_string()),
        Just(": comment".to_string()),
        Just("\0".to_string()),
        Just(" ".to_string()),
        Just("\u{FEFF}".to_string()),
        Just("\u{2028}".to_string()),
        Just("\u{85}".to_string()),
        "[a-z ]{0,6}",
        any::<char>().prop_map(String::from),
    ]
}

fn data_strategy() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(tricky_piece(), 0..24).prop_map(|pieces| pieces.concat()),
        1 => any::<String>(),
    ]
}

/// Any string up to 80 characters, biased towards names that are valid or nearly so.
fn event_strategy() -> impl Strategy<Value = Option<String>> {
    let up_to_80 = |s: String| s.chars().take(80).collect::<String>();
    prop_oneof![
        1 => Just(None),
        3 => "[a-zA-Z][a-zA-Z0-9 _:.-]{0,20}".prop_map(Some),
        1 => "[a-z]{60,70}".prop_map(Some),
        3 => prop::collection::vec(tricky_piece(), 0..8)
            .prop_map(move |pieces| Some(up_to_80(pieces.concat()))),
        2 => prop::collection::vec(any::<char>(), 0..=80)
            .prop_map(|chars| Some(chars.into_iter().collect())),
    ]
}

/// The README's rule for event names.
fn valid_event_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && !name.chars().any(char::is_control) && name != "gap"
}

/// What a parser must read for `data`: CRLF, CR and LF all end a line.
fn normalised(data: &str) -> String {
    data.replace("\r\n", "\n").replace('\r', "\n")
}

#[derive(Debug, Clone, Copy)]
enum Style {
    /// `POST /publish` with a JSON body.
    Json,
    /// `POST /publish/<channel>?event=` with the data as the raw body.
    Raw,
}

async fn publish_case(
    addr: SocketAddr,
    style: Style,
    channel: &str,
    data: &str,
    event: Option<&str>,
) -> Response {
    match style {
        Style::Json => {
            let mut body = json!({"channel": channel, "data": data});
            if let Some(event) = event {
                body["event"] = json!(event);
            }
            publish(addr, body).await
        }
        Style::Raw => {
            let query = event
                .map(|e| {
                    format!(
                        "?event={}",
                        form_urlencoded::byte_serialize(e.as_bytes()).collect::<String>()
                    )
                })
                .unwrap_or_default();
            request(
                addr,
                "POST",
                &format!("/publish/{channel}{query}"),
                &[("Content-Type", "text/plain")],
                data.as_bytes(),
            )
            .await
        }
    }
}

/// One case on a fresh channel: subscribe, publish, publish a marker, and read up to the marker.
async fn check_case(
    addr: SocketAddr,
    style: Style,
    n: usize,
    data: String,
    event: Option<String>,
) -> Result<(), TestCaseError> {
    let channel = format!("prop{n}");
    let mut client = SseClient::connect(addr, &format!("/events/{channel}"), &[]).await;
    prop_assert_eq!(client.status, 200);
    let response = publish_case(addr, style, &channel, &data, event.as_deref()).await;
    let valid = event.as_deref().is_none_or(valid_event_name);
    let receipt_id = if response.status == 200 {
        prop_assert!(
            valid,
            "event name {:?} breaks the naming rule but was accepted",
            event
        );
        let receipt = response.json();
        prop_assert_eq!(receipt["channel"].as_str(), Some(channel.as_str()));
        Some(receipt["id"].as_str().unwrap_or_default().to_string())
    } else {
        prop_assert!(
            (400..500).contains(&response.status),
            "status {} body {}",
            response.status,
            response.text()
        );
        prop_assert!(
            !valid,
            "valid event name {:?} refused: {} {}",
            event,
            response.status,
            response.text()
        );
        prop_assert!(
            response.json()["error"].is_string(),
            "refusal without a JSON error: {}",
            response.text()
        );
        None
    };

    let end = format!("end of case {n}");
    let marker = publish(
        addr,
        json!({"channel": channel, "event": "marker", "data": end}),
    )
    .await;
    prop_assert_eq!(marker.status, 200, "marker: {}", marker.text());
    let marker_id = marker.json()["id"].as_str().unwrap_or_default().to_string();

    let mut events = Vec::new();
    loop {
        let event = client.next_event(T).await;
        let Some(event) = event else {
            return Err(TestCaseError::fail(format!(
                "stream ended before the marker; events {events:?}"
            )));
        };
        if event.event == "marker" && event.data == end {
            prop_assert_eq!(&event.id, &marker_id, "marker id");
            break;
        }
        events.push(event);
        prop_assert!(events.len() <= 16, "runaway events: {:?}", events);
    }
    match receipt_id {
        Some(id) => {
            prop_assert_eq!(events.len(), 1, "events read: {:?}", events);
            let got = &events[0];
            prop_assert_eq!(&got.data, &normalised(&data));
            prop_assert_eq!(got.event.as_str(), event.as_deref().unwrap_or("message"));
            prop_assert_eq!(&got.id, &id);
        }
        None => prop_assert!(events.is_empty(), "refused publish delivered {:?}", events),
    }
    // No field was injected: the only retry is the hub's own, the only comment its `:ok`.
    prop_assert_eq!(
        (client.comments(), client.retry()),
        (1, Some(3000)),
        "comments and retry after the case"
    );
    Ok(())
}

fn run_property(style: Style) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    // One hub for the whole run; no heartbeat comment during it.
    let hub = runtime.block_on(Hub::start_with(|c| c.heartbeat = Duration::from_secs(3600)));
    let addr = hub.addr;
    let counter = AtomicUsize::new(0);
    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let result = runner.run(&(data_strategy(), event_strategy()), |(data, event)| {
        let n = counter.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(check_case(addr, style, n, data, event))
    });
    runtime.block_on(hub.stop());
    if let Err(failure) = result {
        panic!("{style:?} publishing: {failure}");
    }
}

#[test]
fn json_publish_reads_back_exactly_or_is_refused() {
    run_property(Style::Json);
}

#[test]
fn raw_publish_reads_back_exactly_or_is_refused() {
    run_property(Style::Raw);
}
