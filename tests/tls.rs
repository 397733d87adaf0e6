//! HTTPS with `--tls-cert`/`--tls-key`: HTTP/2 by ALPN with many event streams on one
//! connection, HTTP/1.1 for clients that ask for it (or offer no ALPN), and refusals of bad files.

mod common;

use std::path::PathBuf;

use bytes::Bytes;
use common::tls::{connect, make_certificates, Certificates};
use common::{Hub, SseEvent, SseParser, REQUEST_TIMEOUT};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Streams opened at once on one HTTP/2 connection.
const STREAMS: usize = 100;

fn temp_dir(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("ssehub-tls-{}-{name}", std::process::id()))
}

async fn https_hub(certs: &Certificates) -> Hub {
    let (cert, key) = (certs.cert.clone(), certs.key.clone());
    Hub::start_with(|config| {
        config.tls_cert = Some(cert);
        config.tls_key = Some(key);
    })
    .await
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("https://127.0.0.1{path}"))
        .body(Full::new(Bytes::new()))
        .expect("request")
}

fn post(path: &str, body: &str) -> Request<Full<Bytes>> {
    Request::post(format!("https://127.0.0.1{path}"))
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request")
}

/// Reads `body` until `parser` has completed at least one event; returns those events.
async fn next_events(body: &mut Incoming, parser: &mut SseParser, what: &str) -> Vec<SseEvent> {
    loop {
        let frame = tokio::time::timeout(REQUEST_TIMEOUT, body.frame())
            .await
            .unwrap_or_else(|_| panic!("{what}: no event within {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|| panic!("{what}: stream ended"))
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        if let Ok(data) = frame.into_data() {
            let events = parser.feed(&data);
            if !events.is_empty() {
                return events;
            }
        }
    }
}

async fn whole_body(response: Response<Incoming>) -> String {
    let body = tokio::time::timeout(REQUEST_TIMEOUT, response.into_body().collect())
        .await
        .expect("body within the timeout")
        .expect("body");
    String::from_utf8_lossy(&body.to_bytes()).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_event_streams_share_one_http2_connection() {
    let certs = make_certificates(&temp_dir("h2"));
    let hub = https_hub(&certs).await;
    let tls = connect(hub.addr, &certs.ca, &[b"h2", b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);

    let opening = (0..STREAMS).map(|i| send.send_request(get(&format!("/events/tls-{i}"))));
    let responses = tokio::time::timeout(REQUEST_TIMEOUT, futures_util::future::join_all(opening))
        .await
        .expect("all streams answered");
    let mut streams = Vec::new();
    for (i, response) in responses.into_iter().enumerate() {
        let response = response.unwrap_or_else(|err| panic!("stream {i}: {err}"));
        assert_eq!(response.status(), 200, "stream {i}");
        assert_eq!(response.version(), Version::HTTP_2, "stream {i}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        streams.push((response.into_body(), SseParser::default()));
    }

    let metrics = send.send_request(get("/metrics")).await.expect("metrics");
    let exposition = whole_body(metrics).await;
    assert_eq!(
        common::parse_metric(&exposition, "ssehub_subscribers"),
        Some(STREAMS as f64),
        "every stream of the connection is a subscriber"
    );

    for i in 0..STREAMS {
        let answer = send
            .send_request(post(&format!("/publish/tls-{i}"), &format!("event {i}")))
            .await
            .expect("publish");
        assert_eq!(answer.status(), 200, "{}", whole_body(answer).await);
    }
    for (i, (body, parser)) in streams.iter_mut().enumerate() {
        let events = next_events(body, parser, &format!("stream {i}")).await;
        assert_eq!(events.len(), 1, "stream {i}: {events:?}");
        assert_eq!(
            events[0].data,
            format!("event {i}"),
            "stream {i} got another channel's event"
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http1_over_tls_when_asked_or_when_no_alpn_is_offered() {
    let certs = make_certificates(&temp_dir("h1"));
    let hub = https_hub(&certs).await;

    let tls = connect(hub.addr, &certs.ca, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut subscriber, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .expect("http1 handshake");
    tokio::spawn(conn);
    let request = Request::get("/events/plain-tls")
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let response = subscriber.send_request(request).await.expect("subscribe");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), Version::HTTP_11);
    let mut body = response.into_body();
    let mut parser = SseParser::default();

    // A client that offers no ALPN at all (curl --http1.1, old libraries) speaks HTTP/1.1.
    let mut raw = connect(hub.addr, &certs.ca, &[]).await;
    assert_eq!(raw.get_ref().1.alpn_protocol(), None);
    let publish = "POST /publish/plain-tls HTTP/1.1\r\nhost: 127.0.0.1\r\n\
        content-type: text/plain\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    raw.write_all(publish.as_bytes())
        .await
        .expect("send publish");
    let mut answer = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, raw.read_to_end(&mut answer))
        .await
        .expect("answer within the timeout")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer}");

    let events = next_events(&mut body, &mut parser, "HTTP/1.1 stream").await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].data, "hello");
    assert_eq!(parser.comments(), 1, "the `:ok` preamble came first");
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_on_the_tls_port_gets_no_http_answer_and_the_hub_goes_on() {
    let certs = make_certificates(&temp_dir("plain"));
    let hub = https_hub(&certs).await;
    let mut plain = common::raw_connect(hub.addr).await;
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n")
        .await
        .expect("send");
    let mut answer = Vec::new();
    tokio::time::timeout(REQUEST_TIMEOUT, plain.read_to_end(&mut answer))
        .await
        .expect("the hub closes a connection that is not TLS")
        .ok();
    assert!(
        !answer.starts_with(b"HTTP/"),
        "plain HTTP answered on a TLS port: {:?}",
        String::from_utf8_lossy(&answer)
    );

    let tls = connect(hub.addr, &certs.ca, &[b"h2"]).await;
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let health = send.send_request(get("/healthz")).await.expect("healthz");
    assert_eq!(health.status(), 200);
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unusable_certificate_or_key_stops_the_start() {
    let first = make_certificates(&temp_dir("bad-1"));
    let second = make_certificates(&temp_dir("bad-2"));
    let path = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();
    let missing = temp_dir("bad-1").join("missing.pem");
    let cases = [
        (path(&missing), path(&first.key), "cannot read certificates"),
        (path(&first.key), path(&first.key), "no certificate"),
        (
            path(&first.cert),
            path(&first.cert),
            "cannot read a private key",
        ),
        (path(&first.cert), path(&second.key), "do not go together"),
    ];
    for (cert, key, expected) in cases {
        let output = common::node::run(
            &[
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
                "--listen",
                "127.0.0.1:0",
            ],
            &[],
        )
        .await;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{cert} {key}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{cert} {key}: expected {expected:?} in {stderr}"
        );
    }
    let output = common::node::run(&["--tls-cert", &path(&first.cert)], &[]).await;
    assert_eq!(
        output.status.code(),
        Some(2),
        "a certificate without a key is refused"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn health_probe_speaks_tls_and_trusts_only_the_configured_certificate() {
    let certs = make_certificates(&temp_dir("health"));
    let other = make_certificates(&temp_dir("health-other"));
    let hub = https_hub(&certs).await;
    let listen = hub.addr.to_string();
    let path = |p: &PathBuf| p.to_str().expect("utf-8 path").to_owned();
    let probe = |cert: String, key: String| {
        let listen = listen.clone();
        async move {
            let args = [
                "health",
                "--listen",
                &listen,
                "--tls-cert",
                &cert,
                "--tls-key",
                &key,
            ];
            common::node::run(&args, &[]).await
        }
    };
    let ok = probe(path(&certs.cert), path(&certs.key)).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let impostor = probe(path(&other.cert), path(&other.key)).await;
    assert_eq!(impostor.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&impostor.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    let plain = common::node::run(&["health", "--listen", &listen], &[]).await;
    assert_eq!(
        plain.status.code(),
        Some(1),
        "plain HTTP to a TLS port is unhealthy"
    );
    hub.stop().await;
}
