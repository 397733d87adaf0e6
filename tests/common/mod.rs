//! Shared helpers for ssehub's integration tests.
//!
//! - [`Hub`]: a hub on an ephemeral loopback port, stopped with [`Hub::stop`].
//! - [`request`], [`publish`], [`publish_raw`]: one-shot HTTP/1.1 requests over raw TCP.
//! - [`SseClient`]: reads an event stream over raw TCP as a browser would, built on the pure
//!   [`ChunkedDecoder`] and [`SseParser`] (WHATWG "interpreting an event stream").
//! - [`metric`], [`wait_until`], [`raw_connect`], [`send_signal`]: small conveniences.
//!
//! Every wait is bounded and panics with a message saying what did not happen.
#![allow(dead_code)]

pub mod browser;
pub mod node;
pub mod redis_server;
pub mod tls;

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Bound on one [`request`] (connect, send, read the whole response).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on [`Hub::stop`] after shutdown is triggered.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest response head accepted by the raw clients.
const MAX_HEAD: usize = 64 * 1024;

/// Sends `signal` (`TERM`, `KILL`, `STOP`, `CONT`...) to process `pid` with the `kill` command.
/// `pid` is what `Child::id` gives: `None` once the process was reaped, which panics.
pub async fn send_signal(pid: Option<u32>, signal: &str) {
    let pid = pid.expect("the process is still running").to_string();
    let status = tokio::process::Command::new("kill")
        .args([format!("-{signal}"), pid])
        .status()
        .await
        .expect("run kill");
    assert!(status.success(), "kill -{signal} failed: {status}");
}

// ---------------------------------------------------------------------------------------------
// Hub

/// A running hub on `127.0.0.1:<ephemeral>`. Dropping it without [`Hub::stop`] aborts its task.
pub struct Hub {
    /// Address the hub listens on.
    pub addr: SocketAddr,
    /// The configuration the hub was started with (`listen` is `addr`).
    pub config: ssehub::Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ssehub::server::ServerError>>>,
}

impl Hub {
    /// Starts a hub with the default configuration.
    pub async fn start() -> Hub {
        Hub::start_with(|_| {}).await
    }

    /// Starts a hub with the default configuration changed by `f`.
    pub async fn start_with(f: impl FnOnce(&mut ssehub::Config)) -> Hub {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind test listener on 127.0.0.1:0");
        let addr = listener.local_addr().expect("local_addr of test listener");
        let mut config = ssehub::Config::default();
        f(&mut config);
        config.listen = addr;
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            // A dropped sender also means "shut down".
            let _ = rx.await;
        };
        let task = tokio::spawn(ssehub::server::run(config.clone(), listener, shutdown));
        Hub {
            addr,
            config,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Triggers shutdown without waiting for it (to observe the drain); [`Hub::stop`] then awaits it.
    pub fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for `run` to return; panics if it takes over
    /// [`STOP_TIMEOUT`], panics or returns an error.
    pub async fn stop(mut self) {
        self.shutdown();
        let mut task = self.task.take().expect("hub task present until stop");
        match tokio::time::timeout(STOP_TIMEOUT, &mut task).await {
            Err(_) => {
                task.abort();
                panic!(
                    "hub on {} did not stop within {STOP_TIMEOUT:?} after shutdown was triggered",
                    self.addr
                );
            }
            Ok(Err(join)) => panic!("hub task on {} failed: {join}", self.addr),
            Ok(Ok(Err(e))) => panic!("ssehub::server::run on {} returned {e:?}", self.addr),
            Ok(Ok(Ok(()))) => {}
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Plain HTTP/1.1 requests

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers in received order, names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// Body after transfer decoding.
    pub body: Vec<u8>,
}

impl Response {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Body as text (lossy UTF-8).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Body as JSON; panics with the status and body text if it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "response body is not JSON ({e}); status {}, body: {:?}",
                self.status,
                self.text()
            )
        })
    }
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Sends one request with `Connection: close` and reads the whole response, all within
/// [`REQUEST_TIMEOUT`]. Adds `Host`, and `Content-Length` when `body` is non-empty or the
/// method is POST, unless `headers` already has them. Panics on I/O or framing errors.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    request_within(REQUEST_TIMEOUT, addr, method, path, headers, body).await
}

/// [`request`] with another bound, for a request whose answer waits on slow work of the peer
/// (a WebDriver session waits for Chromium to start).
pub async fn request_within(
    timeout: Duration,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    match tokio::time::timeout(timeout, request_inner(addr, method, path, headers, body)).await {
        Ok(response) => response,
        Err(_) => panic!("{method} {path} to {addr} got no complete response within {timeout:?}"),
    }
}

async fn request_inner(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let what = format!("{method} {path} to {addr}");
    let has = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    if !has("host") {
        head.push_str(&format!("Host: {addr}\r\n"));
    }
    if (!body.is_empty() || method.eq_ignore_ascii_case("POST")) && !has("content-length") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    if !has("connection") {
        head.push_str("Connection: close\r\n");
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut wire = head.into_bytes();
    wire.extend_from_slice(body);

    let mut stream = TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("{what}: connect failed: {e}"));
    // The server may answer (e.g. 413) and close before reading the whole body: still read.
    let write_error = stream.write_all(&wire).await.err();
    let (status, headers, rest) = match read_head(&mut stream).await {
        Ok(head) => head,
        Err(e) => match write_error {
            Some(w) => panic!("{what}: sending failed ({w}) and no response: {e}"),
            None => panic!("{what}: {e}"),
        },
    };
    let is_head = method.eq_ignore_ascii_case("HEAD");
    let mut framing = Framing::new(status, is_head, &headers);
    let mut body = Vec::new();
    let mut raw = rest;
    loop {
        let done = framing
            .feed(&raw, &mut body)
            .unwrap_or_else(|e| panic!("{what}: bad response body framing: {e}"));
        if done {
            break;
        }
        raw.resize(16 * 1024, 0);
        match stream.read(&mut raw).await {
            Ok(0) | Err(_) if matches!(framing, Framing::Eof) => break,
            Ok(0) => panic!(
                "{what}: connection closed before the end of the body ({} bytes so far, {})",
                body.len(),
                framing.describe()
            ),
            Ok(n) => raw.truncate(n),
            Err(e) => panic!("{what}: read failed after {} body bytes: {e}", body.len()),
        }
    }
    Response {
        status,
        headers,
        body,
    }
}

/// `POST /publish` with a JSON body.
pub async fn publish(addr: SocketAddr, body: serde_json::Value) -> Response {
    let bytes = serde_json::to_vec(&body).expect("serialize publish body");
    request(
        addr,
        "POST",
        "/publish",
        &[("Content-Type", "application/json")],
        &bytes,
    )
    .await
}

/// `POST /publish/<channel_path>` with `data` as a `text/plain` body.
pub async fn publish_raw(addr: SocketAddr, channel_path: &str, data: &str) -> Response {
    let path = format!("/publish/{}", channel_path.trim_start_matches('/'));
    request(
        addr,
        "POST",
        &path,
        &[("Content-Type", "text/plain")],
        data.as_bytes(),
    )
    .await
}

/// Opens a plain TCP connection to `addr`.
pub async fn raw_connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect to {addr} failed: {e}"))
}

/// Reads a response head (skipping interim 1xx other than 101). Returns status, headers and
/// the bytes read past the head.
async fn read_head(
    stream: &mut TcpStream,
) -> Result<(u16, Vec<(String, String)>, Vec<u8>), String> {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            let (status, headers) = parse_head(&buf[..end])?;
            let rest = buf.split_off(end + 4);
            if (100..200).contains(&status) && status != 101 {
                buf = rest;
                continue;
            }
            return Ok((status, headers, rest));
        }
        if buf.len() > MAX_HEAD {
            return Err(format!("response head larger than {MAX_HEAD} bytes"));
        }
        let n = stream.read(&mut chunk).await.map_err(|e| {
            format!(
                "reading response head failed after {} bytes: {e}",
                buf.len()
            )
        })?;
        if n == 0 {
            return Err(format!(
                "connection closed before a complete response head; got {:?}",
                String::from_utf8_lossy(&buf)
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_head(head: &[u8]) -> Result<(u16, Vec<(String, String)>), String> {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut headers = Vec::new();
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((status, headers))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How a response body is delimited.
enum Framing {
    /// Body complete (none, or all read).
    Done,
    /// `Content-Length` bytes still to read.
    Length(usize),
    /// `Transfer-Encoding: chunked`.
    Chunked(ChunkedDecoder),
    /// Until the server closes.
    Eof,
}

impl Framing {
    fn new(status: u16, is_head: bool, headers: &[(String, String)]) -> Framing {
        let chunked = find_header(headers, "transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        if is_head || status == 204 || status == 304 || (100..200).contains(&status) {
            Framing::Done
        } else if chunked {
            Framing::Chunked(ChunkedDecoder::default())
        } else if let Some(len) = find_header(headers, "content-length") {
            match len.parse::<usize>() {
                Ok(0) => Framing::Done,
                Ok(n) => Framing::Length(n),
                Err(_) => panic!("bad Content-Length {len:?}"),
            }
        } else {
            Framing::Eof
        }
    }

    /// Decodes `raw` into `out`; returns whether the body is complete.
    fn feed(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Result<bool, String> {
        match self {
            Framing::Done => {}
            Framing::Length(left) => {
                let take = raw.len().min(*left);
                out.extend_from_slice(&raw[..take]);
                *left -= take;
                if *left == 0 {
                    *self = Framing::Done;
                }
            }
            Framing::Chunked(decoder) => {
                out.extend(decoder.feed(raw)?);
                if decoder.finished() {
                    *self = Framing::Done;
                }
            }
            Framing::Eof => out.extend_from_slice(raw),
        }
        Ok(matches!(self, Framing::Done))
    }

    fn describe(&self) -> String {
        match self {
            Framing::Done => "complete".into(),
            Framing::Length(left) => format!("{left} Content-Length bytes missing"),
            Framing::Chunked(_) => "no final chunk".into(),
            Framing::Eof => "read to EOF".into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Chunked transfer decoding

/// Incremental decoder of `Transfer-Encoding: chunked` (RFC 9112 §7.1). Chunk extensions and
/// trailers are skipped; input may be split anywhere.
#[derive(Debug, Default)]
pub struct ChunkedDecoder {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq)]
enum ChunkState {
    /// Reading a `size[;ext]` line.
    #[default]
    Size,
    /// This many data bytes left in the current chunk.
    Data(u64),
    /// Expecting the CRLF after chunk data; `true` once the CR was seen.
    DataEnd(bool),
    /// Reading trailer lines until an empty one.
    Trailers,
    /// Final chunk and trailers read.
    Done,
}

/// Longest size or trailer line accepted.
const MAX_CHUNK_LINE: usize = 8 * 1024;

impl ChunkedDecoder {
    /// Decodes `bytes`, returning the payload they complete. Errors on malformed framing or
    /// on bytes after the final chunk.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                ChunkState::Size | ChunkState::Trailers => {
                    let b = bytes[i];
                    i += 1;
                    if b != b'\n' {
                        self.line.push(b);
                        if self.line.len() > MAX_CHUNK_LINE {
                            return Err(format!("chunk line longer than {MAX_CHUNK_LINE} bytes"));
                        }
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = if self.state == ChunkState::Trailers {
                        if line.is_empty() {
                            ChunkState::Done
                        } else {
                            ChunkState::Trailers
                        }
                    } else {
                        match parse_chunk_size(line)? {
                            0 => ChunkState::Trailers,
                            n => ChunkState::Data(n),
                        }
                    };
                }
                ChunkState::Data(left) => {
                    let take = (bytes.len() - i).min(usize::try_from(left).unwrap_or(usize::MAX));
                    out.extend_from_slice(&bytes[i..i + take]);
                    i += take;
                    let left = left - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd(false)
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd(seen_cr) => {
                    let b = bytes[i];
                    i += 1;
                    self.state = match (seen_cr, b) {
                        (false, b'\r') => ChunkState::DataEnd(true),
                        (_, b'\n') => ChunkState::Size,
                        _ => {
                            return Err(format!(
                                "expected CRLF after chunk data, got byte {b:#04x}"
                            ))
                        }
                    };
                }
                ChunkState::Done => {
                    return Err(format!(
                        "{} bytes after the final chunk: {:?}",
                        bytes.len() - i,
                        String::from_utf8_lossy(&bytes[i..])
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Whether the final (zero-size) chunk and its trailers have been read.
    pub fn finished(&self) -> bool {
        self.state == ChunkState::Done
    }
}

fn parse_chunk_size(line: &[u8]) -> Result<u64, String> {
    let text = String::from_utf8_lossy(line);
    let size = text
        .split(';')
        .next()
        .unwrap_or_default()
        .trim_matches([' ', '\t']);
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!("bad chunk size line {text:?}"));
    }
    u64::from_str_radix(size, 16).map_err(|e| format!("bad chunk size {size:?}: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Event-stream parsing

/// One dispatched event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// The last-event-id buffer at dispatch (persists across events).
    pub id: String,
    /// Event type; `"message"` when unnamed.
    pub event: String,
    /// Data lines joined with LF.
    pub data: String,
}

/// Incremental event-stream parser following WHATWG HTML "interpreting an event stream":
/// CRLF/LF/CR line ends (also when split across feeds), leading BOM skipped, comments counted.
#[derive(Debug, Default)]
pub struct SseParser {
    /// Bytes of the current, unfinished line.
    line: Vec<u8>,
    /// Previous byte was a CR: an LF right after it belongs to the same line end.
    after_cr: bool,
    /// First bytes checked for a BOM.
    bom_checked: bool,
    /// Bytes held while deciding whether the stream starts with a BOM.
    bom_pending: Vec<u8>,
    data: String,
    event_type: String,
    id_buffer: String,
    last_event_id: String,
    retry: Option<u64>,
    retries: usize,
    comments: usize,
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

impl SseParser {
    /// Parses `bytes` and returns the events they dispatch.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        let mut events = Vec::new();
        let held;
        let mut bytes = bytes;
        if !self.bom_checked {
            self.bom_pending.extend_from_slice(bytes);
            let pending = &self.bom_pending;
            if pending.len() < BOM.len() && BOM.starts_with(pending) {
                return events;
            }
            self.bom_checked = true;
            held = std::mem::take(&mut self.bom_pending);
            bytes = held.strip_prefix(BOM).unwrap_or(&held);
        }
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    let line = std::mem::take(&mut self.line);
                    self.process_line(&String::from_utf8_lossy(&line), &mut events);
                }
                _ => self.line.push(b),
            }
        }
        events
    }

    fn process_line(&mut self, line: &str, events: &mut Vec<SseEvent>) {
        if line.is_empty() {
            return self.dispatch(events);
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match field {
            "event" => self.event_type = value.to_string(),
            "data" => {
                self.data.push_str(value);
                self.data.push('\n');
            }
            "id" if !value.contains('\0') => self.id_buffer = value.to_string(),
            "retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    self.retry = Some(ms);
                    self.retries += 1;
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, events: &mut Vec<SseEvent>) {
        self.last_event_id = self.id_buffer.clone();
        let mut data = std::mem::take(&mut self.data);
        let event_type = std::mem::take(&mut self.event_type);
        if data.is_empty() {
            return;
        }
        data.pop(); // the trailing LF
        events.push(SseEvent {
            id: self.id_buffer.clone(),
            event: if event_type.is_empty() {
                "message".to_string()
            } else {
                event_type
            },
            data,
        });
    }

    /// Comment lines seen so far.
    pub fn comments(&self) -> usize {
        self.comments
    }

    /// Last valid `retry:` value seen, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.retry
    }

    /// Valid `retry:` fields seen so far.
    pub fn retries(&self) -> usize {
        self.retries
    }

    /// The last event ID string, as a browser would send it in `Last-Event-ID` on reconnect.
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }
}

// ---------------------------------------------------------------------------------------------
// SSE client

/// An event-stream subscription over raw TCP (HTTP/1.1).
pub struct SseClient {
    /// Response status.
    pub status: u16,
    /// Response headers, names lowercased.
    pub headers: Vec<(String, String)>,
    addr: SocketAddr,
    path: String,
    stream: TcpStream,
    framing: Framing,
    parser: SseParser,
    queue: VecDeque<SseEvent>,
    received: usize,
    bytes_read: usize,
    end: Option<String>,
    buf: Vec<u8>,
}

impl SseClient {
    /// Sends `GET path` with `Accept: text/event-stream` and `headers`, and reads the response
    /// head (within [`REQUEST_TIMEOUT`]). The body is then read lazily: chunked, by
    /// `Content-Length` (error responses), or to EOF.
    pub async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let what = format!("SSE GET {path} to {addr}");
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, TcpStream::connect(addr))
            .await
            .unwrap_or_else(|_| panic!("{what}: no connection within {REQUEST_TIMEOUT:?}"))
            .unwrap_or_else(|e| panic!("{what}: connect failed: {e}"));
        SseClient::over(stream, path, headers).await
    }

    /// [`Self::connect`] over a connection the caller opened (with its own socket options).
    pub async fn over(mut stream: TcpStream, path: &str, headers: &[(&str, &str)]) -> SseClient {
        let addr = stream
            .peer_addr()
            .unwrap_or_else(|e| panic!("SSE GET {path}: no peer address: {e}"));
        let what = format!("SSE GET {path} to {addr}");
        let mut head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n");
        if !headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
        {
            head.push_str("Accept: text/event-stream\r\n");
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        let opened = tokio::time::timeout(REQUEST_TIMEOUT, async {
            stream
                .write_all(head.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{what}: send failed: {e}"));
            let head = read_head(&mut stream)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            (stream, head)
        })
        .await;
        let (stream, (status, headers, rest)) = opened
            .unwrap_or_else(|_| panic!("{what}: no response head within {REQUEST_TIMEOUT:?}"));
        let framing = Framing::new(status, false, &headers);
        let mut client = SseClient {
            status,
            headers,
            addr,
            path: path.to_string(),
            stream,
            framing,
            parser: SseParser::default(),
            queue: VecDeque::new(),
            received: 0,
            bytes_read: 0,
            end: None,
            buf: vec![0; 16 * 1024],
        };
        client.ingest(&rest);
        client
    }

    /// First value of response header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The next event; `None` once the stream ended. Panics if neither happens within `timeout`.
    pub async fn next_event(&mut self, timeout: Duration) -> Option<SseEvent> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.end.is_some() {
                return None;
            }
            if !self.read_more(deadline).await {
                panic!("{}: no event within {timeout:?}", self.describe());
            }
        }
    }

    /// Exactly `n` events within `timeout` overall; panics on an earlier end or on timeout.
    pub async fn events(&mut self, n: usize, timeout: Duration) -> Vec<SseEvent> {
        let deadline = Instant::now() + timeout;
        let mut events = Vec::with_capacity(n);
        while events.len() < n {
            if let Some(event) = self.queue.pop_front() {
                events.push(event);
                continue;
            }
            if self.end.is_some() {
                panic!(
                    "{}: stream ended after {} of {n} events: {events:?}",
                    self.describe(),
                    events.len()
                );
            }
            if !self.read_more(deadline).await {
                panic!(
                    "{}: only {} of {n} events within {timeout:?}: {events:?}",
                    self.describe(),
                    events.len()
                );
            }
        }
        events
    }

    /// Panics unless the stream ends within `timeout` with no further event.
    pub async fn expect_end(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self.queue.front() {
                panic!("{}: expected end of stream, got {event:?}", self.describe());
            }
            if self.end.is_some() {
                return;
            }
            if !self.read_more(deadline).await {
                panic!("{}: stream did not end within {timeout:?}", self.describe());
            }
        }
    }

    /// Waits until one more comment line than now has been read; events read meanwhile stay
    /// queued. Panics if the stream ends first or on timeout.
    pub async fn wait_comment(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let target = self.parser.comments() + 1;
        while self.parser.comments() < target {
            if self.end.is_some() {
                panic!(
                    "{}: stream ended while waiting for a comment",
                    self.describe()
                );
            }
            if !self.read_more(deadline).await {
                panic!("{}: no comment line within {timeout:?}", self.describe());
            }
        }
    }

    /// Comment lines seen so far.
    pub fn comments(&self) -> usize {
        self.parser.comments()
    }

    /// Last `retry:` value seen, in milliseconds.
    pub fn retry(&self) -> Option<u64> {
        self.parser.retry()
    }

    /// The last event ID string (what a browser would reconnect with).
    pub fn last_event_id(&self) -> &str {
        self.parser.last_event_id()
    }

    /// Body bytes read so far, after chunk decoding.
    pub fn bytes_read(&self) -> usize {
        self.bytes_read
    }

    /// Why the stream ended (`"end of body"`, `"EOF ..."`, `"read error: ..."`), if it did.
    pub fn end_reason(&self) -> Option<&str> {
        self.end.as_deref()
    }

    /// Reads once; returns `false` if `deadline` passed first.
    async fn read_more(&mut self, deadline: Instant) -> bool {
        if self.end.is_some() {
            return true;
        }
        let read = tokio::time::timeout_at(deadline, self.stream.read(&mut self.buf)).await;
        match read {
            Err(_) => return false,
            Ok(Ok(0)) => {
                self.end = Some(match &self.framing {
                    Framing::Eof => "EOF".to_string(),
                    other => format!("EOF before the end of the body ({})", other.describe()),
                })
            }
            Ok(Ok(n)) => {
                let raw = self.buf[..n].to_vec();
                self.ingest(&raw);
            }
            Ok(Err(e)) => self.end = Some(format!("read error: {e}")),
        }
        true
    }

    fn ingest(&mut self, raw: &[u8]) {
        let mut body = Vec::new();
        let done = match self.framing.feed(raw, &mut body) {
            Ok(done) => done,
            Err(e) => panic!("{}: bad body framing: {e}", self.describe()),
        };
        self.bytes_read += body.len();
        let events = self.parser.feed(&body);
        self.received += events.len();
        self.queue.extend(events);
        if done {
            self.end = Some("end of body".to_string());
        }
    }

    fn describe(&self) -> String {
        format!(
            "SSE GET {} on {} (status {}, {} events received, {} bytes, {} comments{})",
            self.path,
            self.addr,
            self.status,
            self.received,
            self.bytes_read,
            self.parser.comments(),
            match &self.end {
                Some(reason) => format!(", ended: {reason}"),
                None => String::new(),
            }
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Metrics and polling

/// Value of `series` (name plus label set exactly as exposed, e.g.
/// `ssehub_evictions_total{reason="lagged"}`) from `GET /metrics`; `0.0` when absent.
pub async fn metric(addr: SocketAddr, series: &str) -> f64 {
    let response = request(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(response.status, 200, "GET /metrics: {}", response.text());
    parse_metric(&response.text(), series).unwrap_or(0.0)
}

/// Value of `series` in a Prometheus text exposition, if present.
pub fn parse_metric(exposition: &str, series: &str) -> Option<f64> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|rest| {
            let value = rest.split_whitespace().next().unwrap_or_default();
            value
                .parse::<f64>()
                .unwrap_or_else(|e| panic!("metric {series}: bad value {value:?}: {e}"))
        })
        .next()
}

/// Polls `f` every 20 ms until it returns `true`; panics with `what` after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if f().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts `status` and a JSON body holding a string `"error"`, as every refusal has.
pub fn assert_error(response: &Response, status: u16, what: &str) {
    assert_eq!(response.status, status, "{what}: body {}", response.text());
    let body = response.json();
    assert!(
        body["error"].is_string(),
        "{what}: body has no string \"error\": {body}"
    );
}

/// Splits a one-channel id `EPOCH-SEQ`, asserting its shape (6 base62 chars, '-', decimal seq).
pub fn split_id(id: &str) -> (String, u64) {
    let (epoch, seq) = id
        .split_once('-')
        .unwrap_or_else(|| panic!("id {id:?} is not EPOCH-SEQ"));
    assert!(
        epoch.len() == 6 && epoch.bytes().all(|b| b.is_ascii_alphanumeric()),
        "epoch of id {id:?} is not 6 base62 chars"
    );
    assert!(
        !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()),
        "seq of id {id:?} is not decimal"
    );
    (epoch.to_string(), seq.parse().expect("seq fits u64"))
}

/// The SEQ of an `EPOCH-SEQ` id.
pub fn seq(id: &str) -> u64 {
    id.rsplit_once('-')
        .and_then(|(_, seq)| seq.parse().ok())
        .unwrap_or_else(|| panic!("id {id:?} is not EPOCH-SEQ"))
}

/// How long a check that nothing arrives waits.
pub const QUIET: Duration = Duration::from_millis(300);

/// Panics if `client` receives an event within [`QUIET`].
pub async fn assert_quiet(client: &mut SseClient, what: &str) {
    if let Ok(event) = tokio::time::timeout(QUIET, client.next_event(REQUEST_TIMEOUT)).await {
        panic!("{what}: expected no event, got {event:?}");
    }
}

/// An HTTP/2 prior-knowledge (h2c) client connection.
pub type H2 = hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>>;

/// Opens an h2c connection to `addr`; its driver runs on a spawned task.
pub async fn h2_connect(addr: SocketAddr) -> H2 {
    let io = hyper_util::rt::TokioIo::new(raw_connect(addr).await);
    let handshake = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io);
    let (send, conn) = tokio::time::timeout(REQUEST_TIMEOUT, handshake)
        .await
        .expect("h2 handshake timed out")
        .expect("h2 handshake failed");
    tokio::spawn(conn);
    send
}

/// `(id, data)` of each event, to compare a stream with what was published.
pub fn ids_and_data(events: &[SseEvent]) -> Vec<(&str, &str)> {
    events
        .iter()
        .map(|e| (e.id.as_str(), e.data.as_str()))
        .collect()
}

/// `POST /publish` of `data` to `channel` through `addr`; panics unless 200. Returns the id.
pub async fn publish_ok(addr: SocketAddr, channel: &str, data: &str) -> String {
    let response = publish(addr, serde_json::json!({"channel": channel, "data": data})).await;
    assert_eq!(
        response.status,
        200,
        "publish {data:?} to {channel:?} via {addr}: {}",
        response.text()
    );
    let body = response.json();
    body["id"]
        .as_str()
        .unwrap_or_else(|| panic!("publish to {channel:?} via {addr}: no id in {body}"))
        .to_string()
}

/// Runs `program args...` to completion within `timeout`, output captured; when the program is
/// missing, panics naming `package`, which tests/run.sh installs.
pub async fn run_program(
    program: &str,
    package: &str,
    args: &[&str],
    timeout: Duration,
) -> std::process::Output {
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): tests/run.sh installs {package}"));
    match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(output) => output.unwrap_or_else(|e| panic!("waiting for {program}: {e}")),
        Err(_) => panic!("{program} {args:?} did not finish within {timeout:?}"),
    }
}
