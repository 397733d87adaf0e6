//! One lightweight SSE subscriber: a raw tokio TCP connection, an HTTP/1.1 `GET`, then the body
//! decoded (chunked or not) and parsed as a browser would, each event checked and timed.
//!
//! A subscriber keeps only its parser state and a bitset of sequence numbers (a few KB): reads
//! go through one buffer per thread, used only between two awaits.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

use crate::http::{self, BodyDecoder};
use crate::latency::Recorder;
use crate::payload;
use crate::sse::{Item, Parser};
use crate::tracker::{Delivery, Tracker};

/// Size of the per-thread read buffer.
const READ_BUFFER: usize = 64 * 1024;

thread_local! {
    static READ: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUFFER]);
}

/// State shared by all subscribers of a run.
pub struct Shared {
    /// Latencies from the scheduled send time.
    pub recorder: Recorder,
    /// Whether deliveries are timed now (off while replaying old events).
    pub timing: std::sync::atomic::AtomicBool,
    /// Streams open right now (response head received).
    pub open: AtomicUsize,
    /// Subscribers that reached their `complete_at` count.
    pub completed: AtomicUsize,
    /// New (first-time) deliveries so far, over all subscribers.
    pub deliveries: AtomicU64,
    /// When the latest delivery arrived, UNIX µs.
    pub last_delivery_us: AtomicU64,
    /// Limits connection attempts in flight, so a burst does not overflow the listen backlog.
    pub connecting: Semaphore,
    /// Flips to `true` when every subscriber must close.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    /// Shared state for a run with `targets` targets and at most `concurrency` connects in
    /// flight; returns it with the sender that stops every subscriber.
    pub fn new(targets: usize, concurrency: usize) -> (Arc<Shared>, watch::Sender<bool>) {
        let (stop_tx, stop) = watch::channel(false);
        let shared = Shared {
            recorder: Recorder::new(targets),
            timing: std::sync::atomic::AtomicBool::new(true),
            open: AtomicUsize::new(0),
            completed: AtomicUsize::new(0),
            deliveries: AtomicU64::new(0),
            last_delivery_us: AtomicU64::new(0),
            connecting: Semaphore::new(concurrency.max(1)),
            stop,
        };
        (Arc::new(shared), stop_tx)
    }
}

/// What one subscriber is asked to do.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Its number (picks a latency shard).
    pub index: usize,
    /// Which target (sub URL) it uses.
    pub target: usize,
    pub addr: SocketAddr,
    /// `Host` header value.
    pub host: Arc<str>,
    /// Request path, channel filled in.
    pub path: String,
    /// `Last-Event-ID` to resume from.
    pub last_event_id: Option<Arc<str>>,
    /// Counts as complete (once) after this many distinct tool events.
    pub complete_at: Option<u64>,
    /// Closes by itself after this long (churn).
    pub lifetime: Option<Duration>,
    /// Gives up connecting after this long.
    pub connect_timeout: Duration,
    /// Connection attempts before giving up.
    pub attempts: u32,
}

/// What one subscriber saw.
#[derive(Debug, Default)]
pub struct Outcome {
    pub index: usize,
    pub target: usize,
    pub tracker: Tracker,
    /// Events without a tool payload.
    pub foreign: u64,
    /// `gap` events.
    pub gaps: u64,
    /// Heartbeats and other comments.
    pub comments: u64,
    /// Why it never got a stream, if it did not.
    pub connect_error: Option<String>,
    /// Why the stream ended before it was told to stop, if it did.
    pub broken: Option<String>,
    /// From starting to connect to the response head, µs.
    pub connect_us: Option<u64>,
    /// From starting to connect to reaching `complete_at`, µs.
    pub complete_us: Option<u64>,
    /// The last event id seen (what a browser would resume from).
    pub last_id: Vec<u8>,
}

/// Runs one subscriber until the run stops, its lifetime ends or the stream breaks.
pub async fn run(spec: Spec, shared: Arc<Shared>) -> Outcome {
    let mut outcome = Outcome {
        index: spec.index,
        target: spec.target,
        ..Outcome::default()
    };
    let started = Instant::now();
    let mut stop = shared.stop.clone();
    let connected = {
        let _permit = shared.connecting.acquire().await;
        connect(&spec, &mut stop).await
    };
    let (stream, head_bytes, rest) = match connected {
        Ok(Some(connected)) => connected,
        Ok(None) => return outcome,
        Err(err) => {
            outcome.connect_error = Some(err);
            return outcome;
        }
    };
    outcome.connect_us = Some(started.elapsed().as_micros() as u64);
    shared.open.fetch_add(1, Relaxed);
    let mut state = State {
        decoder: BodyDecoder::new(head_bytes.framing),
        parser: match &spec.last_event_id {
            Some(id) => Parser::with_last_id(id.as_bytes()),
            None => Parser::new(),
        },
        outcome,
        complete_at: spec.complete_at,
        started,
    };
    if let Err(err) = state.process(&rest, &shared) {
        state.outcome.broken = Some(err);
    }
    let deadline = spec.lifetime.map(|lifetime| started + lifetime);
    // Made once, not per read: a fresh `changed()` future per read would join and leave the
    // watch's waiter list under its lock every time.
    let mut stopped = pin!(stopped(stop.clone()));
    let mut expired = pin!(sleep_until(deadline));
    // Readiness first (`biased`): the stop flag is checked before every read instead.
    while state.outcome.broken.is_none() && !*stop.borrow() {
        tokio::select! {
            biased;
            ready = poll_fn(|cx| stream.poll_read_ready(cx)) => if let Err(err) = ready {
                state.outcome.broken = Some(err.to_string());
                break;
            },
            _ = &mut stopped => break,
            _ = &mut expired => break,
        }
        if let Err(err) = read_once(&stream, &mut state, &shared) {
            state.outcome.broken = Some(err);
        }
    }
    shared.open.fetch_sub(1, Relaxed);
    if state.outcome.broken.is_some() && *stop.borrow() {
        // The run was ending anyway: a close now is not a fault.
        state.outcome.broken = None;
    }
    state.outcome.last_id = state.parser.last_id().to_vec();
    state.outcome
}

/// One `recv` and what it brought processed. A short read emptied the socket, so it also clears
/// the socket's readiness (by answering `WouldBlock` to `try_io`): otherwise learning that would
/// cost a second `recv` per wake-up, half of the tool's `recv` calls.
fn read_once(stream: &TcpStream, state: &mut State, shared: &Shared) -> Result<(), String> {
    let mut processed = Ok(());
    let read = stream.try_io(Interest::READABLE, || {
        READ.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            let n = stream.try_read(&mut buffer)?;
            processed = match n {
                0 => Err("stream closed by the server".to_string()),
                n => state.process(&buffer[..n], shared),
            };
            if n > 0 && n < buffer.len() {
                return Err(ErrorKind::WouldBlock.into());
            }
            Ok(())
        })
    });
    match read {
        Ok(()) => processed,
        Err(err) if err.kind() == ErrorKind::WouldBlock => processed,
        Err(err) => Err(err.to_string()),
    }
}

/// Resolves once the run is told to stop (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Connects and reads the response head; `Ok(None)` when the run stopped meanwhile.
async fn connect(
    spec: &Spec,
    stop: &mut watch::Receiver<bool>,
) -> Result<Option<(TcpStream, http::Head, Vec<u8>)>, String> {
    let mut last_error = String::from("no attempt");
    for attempt in 0..spec.attempts.max(1) {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt.min(4))).await;
        }
        if *stop.borrow() {
            return Ok(None);
        }
        let attempt = tokio::time::timeout(spec.connect_timeout, open_stream(spec));
        tokio::select! {
            result = attempt => match result {
                Ok(Ok(connected)) => return Ok(Some(connected)),
                Ok(Err(Refusal::Status(err))) => return Err(err),
                Ok(Err(Refusal::Io(err))) => last_error = err,
                Err(_) => last_error = format!("no response within {:?}", spec.connect_timeout),
            },
            _ = stop.changed() => return Ok(None),
        }
    }
    Err(last_error)
}

enum Refusal {
    /// The server answered, but not with an event stream: retrying will not help.
    Status(String),
    /// The connection failed: worth another try.
    Io(String),
}

async fn open_stream(spec: &Spec) -> Result<(TcpStream, http::Head, Vec<u8>), Refusal> {
    let io = |err: std::io::Error| Refusal::Io(err.to_string());
    let mut stream = TcpStream::connect(spec.addr).await.map_err(io)?;
    let _ = stream.set_nodelay(true);
    let mut request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n",
        spec.path, spec.host
    );
    if let Some(id) = &spec.last_event_id {
        request.push_str("Last-Event-ID: ");
        request.push_str(id);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    let mut head = Vec::new();
    loop {
        stream.readable().await.map_err(io)?;
        let read = READ.with(|buffer| {
            let mut buffer = buffer.borrow_mut();
            match stream.try_read(&mut buffer) {
                Ok(0) => Err(Refusal::Io("closed before the response head".into())),
                Ok(n) => {
                    head.extend_from_slice(&buffer[..n]);
                    Ok(())
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => Ok(()),
                Err(err) => Err(Refusal::Io(err.to_string())),
            }
        });
        read?;
        match http::parse_head(&head) {
            Ok(None) => continue,
            Err(err) => return Err(Refusal::Status(err)),
            Ok(Some((parsed, used))) => {
                if parsed.status != 200 {
                    return Err(Refusal::Status(format!("HTTP {}", parsed.status)));
                }
                if !parsed.content_type.starts_with("text/event-stream") {
                    return Err(Refusal::Status(format!(
                        "content type {:?}, not text/event-stream",
                        parsed.content_type
                    )));
                }
                let rest = head.split_off(used);
                return Ok((stream, parsed, rest));
            }
        }
    }
}

/// A subscriber's stream state between reads.
struct State {
    decoder: BodyDecoder,
    parser: Parser,
    outcome: Outcome,
    complete_at: Option<u64>,
    started: Instant,
}

impl State {
    /// Decodes and parses `bytes`, checking and timing every event in them.
    fn process(&mut self, bytes: &[u8], shared: &Shared) -> Result<(), String> {
        if bytes.is_empty() {
            return Ok(());
        }
        // Everything in one read arrived at the same moment.
        let now = payload::now_us();
        let timing = shared.timing.load(Relaxed);
        let mut fresh = 0u64;
        let outcome = &mut self.outcome;
        let parser = &mut self.parser;
        self.decoder.feed(bytes, &mut |body| {
            parser.feed(body, &mut |item| match item {
                Item::Event(event) => {
                    if event.event == b"gap" {
                        outcome.gaps += 1;
                    }
                    let Some(stamp) = payload::decode(event.data) else {
                        outcome.foreign += 1;
                        return;
                    };
                    match outcome.tracker.deliver(stamp.seq) {
                        Delivery::InOrder | Delivery::OutOfOrder => {
                            fresh += 1;
                            if timing {
                                shared.recorder.record(
                                    outcome.target,
                                    outcome.index,
                                    now.saturating_sub(stamp.scheduled_us),
                                );
                            }
                        }
                        Delivery::Duplicate => {}
                        Delivery::Foreign => outcome.foreign += 1,
                    }
                }
                Item::Comment(_) => outcome.comments += 1,
                Item::Retry(_) => {}
            })
        })?;
        if self.decoder.is_done() {
            return Err("the response body ended".into());
        }
        if fresh > 0 {
            shared.deliveries.fetch_add(fresh, Relaxed);
            shared.last_delivery_us.fetch_max(now, Relaxed);
            if let Some(target) = self.complete_at {
                if self.outcome.complete_us.is_none() && self.outcome.tracker.distinct() >= target {
                    self.outcome.complete_us = Some(self.started.elapsed().as_micros() as u64);
                    shared.completed.fetch_add(1, Relaxed);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::{encode, Stamp};
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    /// A fake server: answers one request with `head` then `body` in small writes, and closes.
    async fn serve_once(head: &'static str, body: Vec<u8>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(head.as_bytes()).await;
            for piece in body.chunks(7) {
                let _ = socket.write_all(piece).await;
            }
        });
        addr
    }

    fn spec(addr: SocketAddr) -> Spec {
        Spec {
            index: 0,
            target: 0,
            addr,
            host: Arc::from("test"),
            path: "/events/c".into(),
            last_event_id: None,
            complete_at: Some(3),
            lifetime: None,
            connect_timeout: Duration::from_secs(5),
            attempts: 1,
        }
    }

    fn event(seq: u64, end: &str) -> String {
        let data = encode(
            Stamp {
                seq,
                scheduled_us: payload::now_us(),
            },
            20,
        );
        format!("id: e-{seq}{end}data: {data}{end}{end}")
    }

    #[tokio::test]
    async fn unchunked_stream_with_cr_line_ends() {
        let body = format!(
            ":ok\r{}{}{}{}event: gap\rdata: {{}}\r\r",
            event(0, "\r"),
            event(2, "\r"),
            event(1, "\r"),
            event(2, "\r")
        );
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n";
        let addr = serve_once(head, body.into_bytes()).await;
        let (shared, _stop) = Shared::new(1, 4);
        let outcome = run(spec(addr), shared.clone()).await;
        let counts = outcome.tracker.counts(0, 3);
        assert_eq!((counts.received, counts.lost), (4, 0));
        assert_eq!((counts.duplicated, counts.out_of_order), (1, 1));
        assert_eq!((outcome.gaps, outcome.foreign, outcome.comments), (1, 1, 1));
        assert_eq!(outcome.last_id, b"e-2");
        assert!(outcome.complete_us.is_some());
        assert!(outcome.broken.is_some(), "the server closed the stream");
        assert_eq!(shared.recorder.total().len(), 3);
    }

    #[tokio::test]
    async fn chunked_stream_with_crlf_and_refused_status() {
        let events = format!("{}{}", event(0, "\r\n"), event(1, "\n"));
        let body = format!("{:x}\r\n{events}\r\n0\r\n\r\n", events.len());
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
        let addr = serve_once(head, body.into_bytes()).await;
        let (shared, _stop) = Shared::new(1, 4);
        let outcome = run(spec(addr), shared).await;
        assert_eq!(outcome.tracker.counts(0, 2).lost, 0);
        assert_eq!(outcome.broken.as_deref(), Some("the response body ended"));

        let addr = serve_once("HTTP/1.1 204 No Content\r\n\r\n", Vec::new()).await;
        let (shared, _stop) = Shared::new(1, 4);
        let outcome = run(spec(addr), shared).await;
        assert_eq!(outcome.connect_error.as_deref(), Some("HTTP 204"));
    }
}
