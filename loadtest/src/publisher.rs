//! The publisher: events on a fixed schedule, over keep-alive HTTP/1.1 connections on a thread
//! of its own, so subscriber work cannot delay the schedule.
//!
//! Event `i` goes to channel `i % C` with sequence number `first_seq + i / C` and is scheduled at
//! `start + i / rate`. The schedule never waits for the server: a late request still carries its
//! scheduled time, so a slow server shows up in latency instead of hiding in a slower schedule.
//! Each channel always goes through the same connection, which keeps a channel's events in order.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::http::{self, BodyDecoder};
use crate::latency::{new_histogram, Summary};
use crate::payload::{self, Stamp};
use crate::target::Target;

/// How an event is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Style {
    /// The payload is the request body (`POST /publish/<channel>`, Nchan's publisher).
    Raw,
    /// `{"channel": ..., "data": ...}` as JSON (`POST /publish`).
    Json,
}

/// What to publish.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Publisher URLs; channel `c` goes to `targets[c % targets.len()]`.
    pub targets: Vec<Target>,
    pub style: Style,
    /// Channel names.
    pub channels: Vec<String>,
    /// Events per second over all channels; `0` sends as fast as the server answers.
    pub rate: f64,
    /// Events in total.
    pub events: u64,
    /// Sequence number of each channel's first event.
    pub first_seq: u64,
    /// Payload size in bytes.
    pub payload_bytes: usize,
    /// Connections per target.
    pub connections: usize,
    /// Longest wait for one answer.
    pub timeout: Duration,
}

/// What was published.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Published {
    /// Events the server accepted (2xx).
    pub accepted: u64,
    /// Events refused or unanswered.
    pub failed: u64,
    /// `(channel index, seq)` of each failed event, so they are not expected.
    pub failed_events: Vec<(usize, u64)>,
    /// The first few errors, for the report.
    pub errors: Vec<String>,
    /// How late requests went out against their schedule.
    pub send_lag: Summary,
    /// When the schedule started, UNIX µs.
    pub start_us: u64,
    /// When the last answer came, UNIX µs.
    pub end_us: u64,
    /// Events scheduled per channel (the last seq is `first_seq + per_channel - 1`).
    pub per_channel: Vec<u64>,
}

/// Starts publishing `plan`: a scheduling thread that sleeps precisely until each event's time
/// (tokio's timer has millisecond steps, which would add up to a millisecond of fake latency),
/// and an I/O thread with the connections. The answer comes when every event was sent and
/// answered.
pub fn start(plan: Plan) -> oneshot::Receiver<Published> {
    let (done, result) = oneshot::channel();
    let channels = plan.channels.len().max(1);
    let targets = plan.targets.len().max(1);
    let workers = (targets * plan.connections.max(1)).min(channels.max(targets));
    let mut queues = Vec::with_capacity(workers);
    let mut receivers = Vec::with_capacity(workers);
    for _ in 0..workers {
        let (queue, jobs) = mpsc::unbounded_channel();
        queues.push(queue);
        receivers.push(jobs);
    }
    let lead = Duration::from_millis(20);
    let start = std::time::Instant::now() + lead;
    let start_us = payload::now_us() + lead.as_micros() as u64;
    let mut per_channel = vec![0u64; channels];
    for i in 0..plan.events {
        per_channel[(i % channels as u64) as usize] += 1;
    }
    let published = Published {
        start_us,
        per_channel,
        ..Published::default()
    };
    let schedule = plan.clone();
    std::thread::spawn(move || dispatch(&schedule, start, start_us, queues));
    std::thread::spawn(move || {
        let published = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(publish(plan, receivers, published)),
            Err(err) => Published {
                errors: vec![format!("publisher runtime: {err}")],
                ..published
            },
        };
        let _ = done.send(published);
    });
    result
}

/// Hands each event to its connection at its scheduled time, never waiting for answers.
fn dispatch(
    plan: &Plan,
    start: std::time::Instant,
    start_us: u64,
    queues: Vec<mpsc::UnboundedSender<Job>>,
) {
    let channels = plan.channels.len().max(1) as u64;
    for i in 0..plan.events {
        let offset_us = if plan.rate > 0.0 {
            (i as f64 * 1e6 / plan.rate) as u64
        } else {
            0
        };
        let due = start + Duration::from_micros(offset_us);
        let now = std::time::Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let channel = (i % channels) as usize;
        let job = Job {
            channel,
            seq: plan.first_seq + i / channels,
            scheduled_us: start_us + offset_us,
        };
        // Channel c always uses connection c % connections, which keeps its events in order.
        let _ = queues[channel % queues.len()].send(job);
    }
}

struct Job {
    channel: usize,
    seq: u64,
    scheduled_us: u64,
}

struct Answer {
    channel: usize,
    seq: u64,
    lag_us: u64,
    error: Option<String>,
}

async fn publish(
    plan: Plan,
    receivers: Vec<mpsc::UnboundedReceiver<Job>>,
    mut published: Published,
) -> Published {
    let targets = plan.targets.len().max(1);
    let (answers_tx, mut answers) = mpsc::unbounded_channel();
    for (worker, jobs) in receivers.into_iter().enumerate() {
        let target = plan.targets[worker % targets].clone();
        tokio::spawn(connection(target, plan.clone(), jobs, answers_tx.clone()));
    }
    drop(answers_tx);
    let mut lag = new_histogram();
    while let Some(answer) = answers.recv().await {
        lag.saturating_record(answer.lag_us.max(1));
        match answer.error {
            None => published.accepted += 1,
            Some(err) => {
                published.failed += 1;
                published.failed_events.push((answer.channel, answer.seq));
                if published.errors.len() < 5 {
                    published.errors.push(err);
                }
            }
        }
    }
    published.end_us = payload::now_us();
    published.send_lag = Summary::of(&lag);
    published
}

/// One keep-alive publishing connection: sends its jobs in order, reconnecting when needed.
async fn connection(
    target: Target,
    plan: Plan,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    answers: mpsc::UnboundedSender<Answer>,
) {
    let mut stream: Option<TcpStream> = None;
    let mut buffer = Vec::with_capacity(4096);
    while let Some(job) = jobs.recv().await {
        let lag_us = payload::now_us().saturating_sub(job.scheduled_us);
        let request = request(&target, &plan, &job);
        let mut error = None;
        // One retry on a fresh connection when a kept-alive one turned out closed before it
        // answered anything (never after, which could publish the event twice).
        for _ in 0..2 {
            let reused = stream.is_some();
            let sent = tokio::time::timeout(
                plan.timeout,
                exchange(&mut stream, &target, &request, &mut buffer),
            )
            .await
            .unwrap_or_else(|_| Err((format!("no answer within {:?}", plan.timeout), false)));
            match sent {
                Ok(()) => {
                    error = None;
                    break;
                }
                Err((err, silent)) => {
                    stream = None;
                    error = Some(err);
                    if !(reused && silent) {
                        break;
                    }
                }
            }
        }
        let _ = answers.send(Answer {
            channel: job.channel,
            seq: job.seq,
            lag_us,
            error,
        });
    }
}

fn request(target: &Target, plan: &Plan, job: &Job) -> Vec<u8> {
    let channel = plan.channels[job.channel].as_str();
    let data = payload::encode(
        Stamp {
            seq: job.seq,
            scheduled_us: job.scheduled_us,
        },
        plan.payload_bytes,
    );
    let (content_type, body) = match plan.style {
        Style::Raw => ("text/plain", data),
        Style::Json => (
            "application/json",
            serde_json::json!({ "channel": channel, "data": data }).to_string(),
        ),
    };
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\r\n",
        target.path_for(channel),
        target.host,
        content_type,
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body.as_bytes());
    request
}

/// Sends one request and reads its whole answer; `Err` unless it was a 2xx, with `true` when
/// the connection ended before a single byte of answer (a kept-alive connection the server
/// had closed).
async fn exchange(
    stream: &mut Option<TcpStream>,
    target: &Target,
    request: &[u8],
    buffer: &mut Vec<u8>,
) -> Result<(), (String, bool)> {
    let fail = |err: String| (err, false);
    if stream.is_none() {
        let opened = TcpStream::connect(target.addr)
            .await
            .map_err(|err| fail(format!("connect {}: {err}", target.addr)))?;
        let _ = opened.set_nodelay(true);
        *stream = Some(opened);
    }
    let Some(socket) = stream.as_mut() else {
        return Err(fail("no connection".into()));
    };
    socket
        .write_all(request)
        .await
        .map_err(|err| (format!("send: {err}"), true))?;
    buffer.clear();
    let mut chunk = [0u8; 4096];
    let (head, used) = loop {
        let n = match socket.read(&mut chunk).await {
            Ok(n) => n,
            Err(err) => return Err((format!("read: {err}"), buffer.is_empty())),
        };
        if n == 0 {
            return Err((
                "connection closed before the answer".into(),
                buffer.is_empty(),
            ));
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(parsed) = http::parse_head(buffer).map_err(fail)? {
            break parsed;
        }
    };
    let mut body = Vec::new();
    let mut decoder = BodyDecoder::new(head.framing);
    decoder
        .feed(&buffer[used..], &mut |bytes| keep_some(&mut body, bytes))
        .map_err(fail)?;
    while !decoder.is_done() {
        let n = socket
            .read(&mut chunk)
            .await
            .map_err(|err| fail(format!("read: {err}")))?;
        if n == 0 {
            break;
        }
        decoder
            .feed(&chunk[..n], &mut |bytes| keep_some(&mut body, bytes))
            .map_err(fail)?;
    }
    if head.close || !decoder.is_done() {
        *stream = None;
    }
    if (200..300).contains(&head.status) {
        Ok(())
    } else {
        Err(fail(format!(
            "HTTP {}: {}",
            head.status,
            String::from_utf8_lossy(&body).trim()
        )))
    }
}

/// Keeps the start of an answer body, for error messages.
fn keep_some(body: &mut Vec<u8>, bytes: &[u8]) {
    let room = 300usize.saturating_sub(body.len());
    body.extend_from_slice(&bytes[..bytes.len().min(room)]);
}
