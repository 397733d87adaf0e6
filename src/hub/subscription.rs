//! A subscriber's event stream as an HTTP response body: replay from its cursor, then live
//! events, heartbeats, eviction and shutdown. Dropping it (hyper does when the client goes away)
//! deregisters it from its channels and fixes the gauges.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use atomic_waker::AtomicWaker;
use bytes::{BufMut, Bytes, BytesMut};
use http_body::{Body, Frame};

use super::channel::Channel;
use super::{EvictionReason, GapReason, Hub, SubscribeError};
use crate::connection::Cut;
use crate::metrics::Metrics;
use crate::sse::cursor::write_positions;
use crate::sse::encode::control_event;
use crate::sse::{Cursor, Epoch, Event, Position};

/// Most bytes drained into one body frame; more waiting events go in the next frame.
pub const MAX_FRAME_BYTES: usize = 64 << 10;

const HEARTBEAT: u8 = 1;
const SHUTDOWN: u8 = 2;
const END: u8 = 4;

/// The part of a subscription that channels and housekeeping reach: how to wake it, how far it
/// lags, and how to cut its connection when it is too slow.
pub struct Waiter {
    id: u64,
    waker: AtomicWaker,
    signals: AtomicU8,
    /// 0, or 1 + the `EvictionReason` index once evicted.
    evicted: AtomicU8,
    /// 1 + clock ms when something became ready that the body has not been polled for; 0: none.
    pending_since: AtomicU64,
    /// Clock ms of the last frame handed to the connection.
    last_write: AtomicU64,
    /// The seq lag is measured from, per channel of the subscription: the first inline, as
    /// every notify reads it, the others in `more_lag_floors`.
    first_lag_floor: AtomicU64,
    more_lag_floors: Box<[AtomicU64]>,
    /// Set when the transport under the stream woke the task (see `transport_waker`).
    transport_woken: AtomicBool,
    /// Clock ms when the subscriber's token expires and the stream ends; 0: never.
    expires_ms: u64,
    connection: Cut,
}

impl Waiter {
    fn new(id: u64, channels: usize, connection: Cut, now_ms: u64, expires_ms: u64) -> Waiter {
        Waiter {
            id,
            waker: AtomicWaker::new(),
            signals: AtomicU8::new(0),
            evicted: AtomicU8::new(0),
            pending_since: AtomicU64::new(0),
            last_write: AtomicU64::new(now_ms),
            first_lag_floor: AtomicU64::new(0),
            more_lag_floors: (1..channels).map(|_| AtomicU64::new(0)).collect(),
            // Woken at first, so that the first poll arms the transport.
            transport_woken: AtomicBool::new(true),
            expires_ms,
            connection,
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// A new event up to `head` is in the channel at `index`: wake the body, or evict it if it
    /// fell more than `max_lag` events behind.
    pub fn notify(&self, index: usize, head: u64, max_lag: u64, now_ms: u64, metrics: &Metrics) {
        let floor = self.lag_floor(index).map_or(head, |f| f.load(Relaxed));
        if head.saturating_sub(floor) > max_lag {
            self.evict(EvictionReason::Lagged, metrics);
            return;
        }
        self.mark_pending(now_ms);
        self.waker.wake();
    }

    /// Housekeeping: evict when bytes have waited longer than `write_timeout_ms`; ask for a
    /// heartbeat when nothing was written for `heartbeat_ms`.
    /// Also ends the stream once the subscriber's token expired.
    pub fn check(&self, now_ms: u64, heartbeat_ms: u64, write_timeout_ms: u64, metrics: &Metrics) {
        if self.expires_ms != 0 && now_ms >= self.expires_ms {
            self.signal(END, now_ms);
            return;
        }
        let pending = self.pending_since.load(Relaxed);
        if pending != 0 && now_ms.saturating_sub(pending - 1) >= write_timeout_ms {
            self.evict(EvictionReason::WriteTimeout, metrics);
            return;
        }
        if now_ms.saturating_sub(self.last_write.load(Relaxed)) >= heartbeat_ms {
            self.signal(HEARTBEAT, now_ms);
        }
    }

    /// Asks the body to send its reconnect hint and end.
    pub fn shut_down(&self, now_ms: u64) {
        self.signal(SHUTDOWN, now_ms);
    }

    /// Ends the stream cleanly (the channel's history was lost): the client reconnects with its
    /// last id and is told about the gap.
    pub fn end(&self, now_ms: u64) {
        self.signal(END, now_ms);
    }

    fn signal(&self, bit: u8, now_ms: u64) {
        self.signals.fetch_or(bit, Relaxed);
        self.mark_pending(now_ms);
        self.waker.wake();
    }

    fn mark_pending(&self, now_ms: u64) {
        let _ = self
            .pending_since
            .compare_exchange(0, now_ms + 1, Relaxed, Relaxed);
    }

    /// Disconnects the subscriber (even when hyper is not polling its body), counted once.
    pub fn evict(&self, reason: EvictionReason, metrics: &Metrics) {
        if self
            .evicted
            .compare_exchange(0, reason as u8 + 1, Relaxed, Relaxed)
            .is_ok()
        {
            metrics
                .evictions
                .with_label_values(&[reason.as_str()])
                .inc();
            tracing::debug!(subscriber = self.id, reason = reason.as_str(), "evicting");
            self.connection.cut();
            self.waker.wake();
        }
    }

    fn is_evicted(&self) -> bool {
        self.evicted.load(Relaxed) != 0
    }

    fn lag_floor(&self, index: usize) -> Option<&AtomicU64> {
        match index {
            0 => Some(&self.first_lag_floor),
            _ => self.more_lag_floors.get(index - 1),
        }
    }

    fn set_lag_floor(&self, index: usize, seq: u64) {
        if let Some(floor) = self.lag_floor(index) {
            floor.store(seq, Relaxed);
        }
    }
}

/// The transport's waker: marks the wake-up and wakes the task that polled the subscription.
impl Wake for Waiter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.transport_woken.store(true, Release);
        self.waker.wake();
    }
}

/// Where a subscription stands in one of its channels.
struct Reading {
    epoch: Epoch,
    /// Seq of the last event written (or skipped as before the cursor).
    delivered: u64,
    /// Head of the channel when the subscription opened; lag counts from here.
    start_head: u64,
    /// The channel's terminal event when the subscription opened.
    closed_at: Option<u64>,
    /// Events before the local log's start, fetched from the broker's store.
    backlog: VecDeque<Arc<Event>>,
    done: bool,
}

/// A cursor the hub could not honour for one channel.
struct Gap {
    index: usize,
    reason: GapReason,
    asked: Option<Position>,
}

/// Events after `after` up to `upto` of the channel at `index` that a subscription needs but the
/// local log does not hold.
#[derive(Debug, Clone, Copy)]
pub struct Backlog {
    pub index: usize,
    pub after: u64,
    pub upto: u64,
    /// Whether events missing at the start mean a `gap` (not so for `earliest`, or when the
    /// cursor already made one).
    strict: bool,
}

/// An open event stream.
pub struct Subscription {
    hub: Arc<Hub>,
    waiter: Arc<Waiter>,
    channels: Vec<Arc<Channel>>,
    readings: Vec<Reading>,
    gaps: Vec<Gap>,
    preamble: Option<Bytes>,
    /// The last frame reached `MAX_FRAME_BYTES`: more may be ready without a new wake-up.
    unfinished: bool,
    ended: bool,
    /// Counted in the `subscribers` gauge: from the moment its stream opens, once the broker
    /// has synced its channels, so the gauge never counts one that can still miss events.
    counted: bool,
}

/// Result of opening a subscription.
pub enum Opened {
    Stream(Subscription),
    /// Every channel already ended for this client: answer `204` so EventSource stops.
    Finished,
}

impl Subscription {
    /// Registers a new subscriber in each named channel (creating channels as needed).
    pub(super) fn register(
        hub: &Arc<Hub>,
        names: &[String],
        connection: Cut,
        valid_for: Option<Duration>,
    ) -> Result<Subscription, SubscribeError> {
        let now_ms = hub.clock.now_ms();
        let expires_ms =
            valid_for.map_or(0, |d| now_ms.saturating_add(d.as_millis() as u64).max(1));
        let waiter = Arc::new(Waiter::new(
            hub.next_subscriber_id(),
            names.len(),
            connection,
            now_ms,
            expires_ms,
        ));
        let mut subscription = Subscription {
            hub: hub.clone(),
            waiter,
            channels: Vec::with_capacity(names.len()),
            readings: Vec::with_capacity(names.len()),
            gaps: Vec::new(),
            preamble: None,
            unfinished: false,
            ended: false,
            counted: false,
        };
        for (index, name) in names.iter().enumerate() {
            let channel = loop {
                let channel = hub.registry.get_or_create(name)?;
                if channel.register(&subscription.waiter, index) {
                    break channel;
                }
            };
            subscription.channels.push(channel);
        }
        Ok(subscription)
    }

    /// A waker for the transport under the stream (the client's socket), so that one task waits
    /// on both without a second allocation: its wake-ups reach the task that last polled
    /// [`Self::poll_output`], and [`Self::take_transport_wake`] reports each of them once.
    pub fn transport_waker(&self) -> Waker {
        Waker::from(self.waiter.clone())
    }

    /// Whether the transport woke the task since the last call (`true` the first time, so the
    /// first poll arms it).
    pub fn take_transport_wake(&self) -> bool {
        self.waiter.transport_woken.swap(false, Acquire)
    }

    pub(super) fn channels(&self) -> &[Arc<Channel>] {
        &self.channels
    }

    /// Places the subscription after `cursor` in each channel. Returns the ranges the local
    /// logs cannot serve, which a mirror fetches from the broker's store; an owner's log is
    /// the whole history, so it never asks.
    pub(super) fn place(&mut self, cursor: Option<&str>, mirror: bool) -> Vec<Backlog> {
        let cursor = cursor.map(|text| Cursor::parse(text, self.channels.len()));
        let mut backlogs = Vec::new();
        for (index, channel) in self.channels.iter().enumerate() {
            let log = channel.log();
            let (head, epoch) = (log.head(), log.epoch());
            let local_start = log.first_available() - 1;
            // Without a local copy, history starts at the store's beginning.
            let from_start = if mirror { 0 } else { local_start };
            let asked = match &cursor {
                Some(Ok(Cursor::After(positions))) => Some(positions[index]),
                _ => None,
            };
            let (delivered, gap) = match (&cursor, asked) {
                (None, _) => (head, None),
                (Some(Err(_)), _) => (from_start, Some(GapReason::InvalidCursor)),
                (_, Some(asked)) if asked.epoch != epoch => {
                    (from_start, Some(GapReason::EpochChanged))
                }
                (_, Some(asked)) if asked.seq > head => (from_start, Some(GapReason::CursorAhead)),
                (_, Some(asked)) if asked.seq < from_start => {
                    (from_start, Some(GapReason::Trimmed))
                }
                (_, Some(asked)) => (asked.seq, None),
                (Some(Ok(_)), None) => (from_start, None),
            };
            if let Some(reason) = gap {
                self.gaps.push(Gap {
                    index,
                    reason,
                    asked,
                });
            }
            if delivered < local_start {
                backlogs.push(Backlog {
                    index,
                    after: delivered,
                    upto: local_start,
                    strict: gap.is_none() && asked.is_some(),
                });
            }
            self.waiter.set_lag_floor(index, head);
            self.readings.push(Reading {
                epoch,
                delivered,
                start_head: head,
                closed_at: log.closed_at(),
                backlog: VecDeque::new(),
                done: false,
            });
        }
        backlogs
    }

    /// Hands over the stored events of `backlog`, oldest first. Missing leading events (trimmed
    /// or expired in the store) make a `trimmed` gap unless the cursor already made one.
    pub(super) fn fill(&mut self, backlog: &Backlog, events: Vec<Arc<Event>>) {
        let reading = &mut self.readings[backlog.index];
        let first = events.first().map_or(backlog.upto + 1, |e| e.seq);
        if first > backlog.after + 1 {
            if backlog.strict {
                self.gaps.push(Gap {
                    index: backlog.index,
                    reason: GapReason::Trimmed,
                    asked: Some(Position {
                        epoch: reading.epoch,
                        seq: backlog.after,
                    }),
                });
            }
            reading.delivered = first - 1;
        }
        reading.backlog = events.into();
    }

    /// The stream, or `Finished` when every channel already ended for this client.
    pub(super) fn finish(mut self) -> Opened {
        for reading in &mut self.readings {
            reading.done = reading.backlog.is_empty()
                && reading.closed_at.is_some_and(|c| c <= reading.delivered);
        }
        if self.gaps.is_empty() && self.readings.iter().all(|r| r.done) {
            return Opened::Finished;
        }
        if self.readings.iter().any(|r| r.delivered < r.start_head) {
            self.hub.metrics.replays.inc();
        }
        self.preamble = Some(self.preamble());
        self.hub.metrics.subscribers.inc();
        self.counted = true;
        Opened::Stream(self)
    }

    /// First bytes of the stream: a comment, the reconnect delay, and any `gap` events.
    fn preamble(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64);
        buf.put_slice(b":ok\nretry: ");
        buf.put_slice(
            itoa::Buffer::new()
                .format(self.hub.settings.retry_ms)
                .as_bytes(),
        );
        buf.put_slice(b"\n\n");
        for gap in &self.gaps {
            self.hub
                .metrics
                .gaps
                .with_label_values(&[gap.reason.as_str()])
                .inc();
            let reading = &self.readings[gap.index];
            let first_id = (reading.delivered < reading.start_head).then(|| {
                Position {
                    epoch: reading.epoch,
                    seq: reading.delivered + 1,
                }
                .to_string()
            });
            let data = serde_json::json!({
                "channel": self.channels[gap.index].name(),
                "reason": gap.reason.as_str(),
                "last_event_id": gap.asked.map(|p| p.to_string()),
                "first_id": first_id,
            });
            let id = self.current_id();
            buf.extend_from_slice(&control_event(&id, "gap", &data.to_string()));
        }
        buf.freeze()
    }

    /// The id that resumes this connection where it stands now.
    fn current_id(&self) -> String {
        let mut buf = BytesMut::with_capacity(24 * self.readings.len());
        write_positions(&mut buf, positions(&self.readings));
        String::from_utf8_lossy(&buf).into_owned()
    }

    /// Moves every ready event into `out`; `Err` when the subscriber fell behind the history.
    fn drain(&mut self, out: &mut Out) -> Result<Drained, EvictionReason> {
        let multi = self.readings.len() > 1;
        let mut drained = Drained::default();
        for index in 0..self.readings.len() {
            while let Some(event) = self.readings[index].backlog.pop_front() {
                emit(&mut self.readings, index, multi, &event, out, &mut drained);
                if out.len() >= MAX_FRAME_BYTES {
                    return Ok(drained);
                }
            }
            if self.readings[index].done {
                continue;
            }
            let log = self.channels[index].log();
            let from = self.readings[index].delivered;
            if from >= log.head() {
                continue;
            }
            if log.first_available() > from + 1 {
                return Err(EvictionReason::Lagged);
            }
            for event in log.history().after(from) {
                if out.len() >= MAX_FRAME_BYTES || self.readings[index].done {
                    break;
                }
                emit(&mut self.readings, index, multi, event, out, &mut drained);
            }
            drop(log);
            let reading = &self.readings[index];
            self.waiter
                .set_lag_floor(index, reading.delivered.max(reading.start_head));
        }
        Ok(drained)
    }

    fn shutdown_frame(&self) -> Bytes {
        let retry_ms: u64 = rand::random_range(100..=2000);
        Bytes::from(format!("retry: {retry_ms}\n\n"))
    }
}

/// Writes `event` of the channel at `index` and moves that channel's position past it.
fn emit(
    readings: &mut [Reading],
    index: usize,
    multi: bool,
    event: &Arc<Event>,
    out: &mut Out,
    drained: &mut Drained,
) {
    readings[index].delivered = event.seq;
    if multi {
        let buf = out.buf();
        buf.put_slice(b"id: ");
        write_positions(buf, positions(readings));
        buf.put_u8(b'\n');
        buf.put_slice(&event.without_id());
    } else {
        out.push_event(event);
    }
    drained.events += 1;
    if event.seq <= readings[index].start_head {
        drained.replayed += 1;
    }
    if event.close {
        readings[index].done = true;
    }
}

fn positions(readings: &[Reading]) -> impl Iterator<Item = Position> + '_ {
    readings.iter().map(|r| Position {
        epoch: r.epoch,
        seq: r.delivered,
    })
}

impl Subscription {
    /// The next bytes of the stream once something is ready; `None` when it ended.
    pub fn poll_output(&mut self, cx: &mut Context<'_>) -> Poll<Option<Output>> {
        if self.ended || self.waiter.is_evicted() {
            return Poll::Ready(None);
        }
        self.waiter.waker.register(cx.waker());
        // Swapped, not loaded and cleared: a notify in between must not be lost, as a poll with
        // nothing pending skips the channels below.
        let pending_since = self.waiter.pending_since.swap(0, Relaxed);
        let signals = self.waiter.signals.swap(0, Relaxed);
        if signals & END != 0 {
            self.ended = true;
            return Poll::Ready(None);
        }
        if signals & SHUTDOWN != 0 || self.hub.is_shutting_down() {
            self.ended = true;
            return Poll::Ready(Some(Output::Bytes(self.shutdown_frame())));
        }
        // Nothing was announced since the last poll, which took all it could (the stream's
        // poll right after each write).
        if pending_since == 0 && signals == 0 && self.preamble.is_none() && !self.unfinished {
            return Poll::Pending;
        }
        let mut out = Out::Empty;
        if let Some(preamble) = self.preamble.take() {
            out.push(&preamble);
        }
        let drained = match self.drain(&mut out) {
            Ok(drained) => drained,
            Err(reason) => {
                self.waiter.evict(reason, &self.hub.metrics);
                self.ended = true;
                return Poll::Ready(None);
            }
        };
        self.unfinished = out.len() >= MAX_FRAME_BYTES;
        if self.readings.iter().all(|r| r.done) {
            self.ended = true;
        }
        let output = match out.into_output() {
            Some(output) => output,
            None if self.ended => return Poll::Ready(None),
            None if signals & HEARTBEAT != 0 => Output::Bytes(Bytes::from_static(b":\n\n")),
            None => return Poll::Pending,
        };
        let metrics = &self.hub.metrics;
        metrics.events_delivered.inc_by(drained.events);
        if drained.replayed > 0 {
            metrics.events_replayed.inc_by(drained.replayed);
        }
        metrics.frames_written.inc();
        metrics.bytes_written.inc_by(output.frame().len() as u64);
        // When the frame became ready stands in for when it is written: no clock read per
        // delivery, and a heartbeat can only come early, never late.
        let written_ms = match pending_since {
            0 => self.hub.clock.now_ms(),
            since => since - 1,
        };
        self.waiter.last_write.store(written_ms, Relaxed);
        Poll::Ready(Some(output))
    }
}

impl Body for Subscription {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .poll_output(cx)
            .map(|output| output.map(|output| Ok(Frame::data(output.into_frame()))))
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for channel in &self.channels {
            channel.unregister(self.waiter.id);
            self.hub.release(channel);
        }
        if self.counted {
            self.hub.metrics.subscribers.dec();
        }
    }
}

/// Events moved into one frame.
#[derive(Debug, Default)]
struct Drained {
    events: u64,
    replayed: u64,
}

/// What a stream writes next.
pub enum Output {
    /// Exactly one event: its shared encodings, the plain frame or the HTTP/1.1 chunk.
    Event(Arc<Event>),
    /// Anything else: several events, a preamble, a heartbeat.
    Bytes(Bytes),
}

impl Output {
    /// The event-stream bytes.
    pub fn frame(&self) -> &Bytes {
        match self {
            Output::Event(event) => &event.frame,
            Output::Bytes(bytes) => bytes,
        }
    }

    fn into_frame(self) -> Bytes {
        match self {
            Output::Event(event) => event.frame.clone(),
            Output::Bytes(bytes) => bytes,
        }
    }
}

/// Bytes of one body frame: a single shared event is passed on without copying.
enum Out {
    Empty,
    Event(Arc<Event>),
    One(Bytes),
    Many(BytesMut),
}

impl Out {
    fn len(&self) -> usize {
        match self {
            Out::Empty => 0,
            Out::Event(event) => event.frame.len(),
            Out::One(bytes) => bytes.len(),
            Out::Many(buf) => buf.len(),
        }
    }

    fn push(&mut self, bytes: &Bytes) {
        match self {
            Out::Empty => *self = Out::One(bytes.clone()),
            _ => self.buf().extend_from_slice(bytes),
        }
    }

    fn push_event(&mut self, event: &Arc<Event>) {
        match self {
            Out::Empty => *self = Out::Event(event.clone()),
            _ => self.buf().extend_from_slice(&event.frame),
        }
    }

    fn buf(&mut self) -> &mut BytesMut {
        if !matches!(self, Out::Many(_)) {
            let mut buf = BytesMut::with_capacity(MAX_FRAME_BYTES.min(4096));
            match self {
                Out::One(bytes) => buf.extend_from_slice(bytes),
                Out::Event(event) => buf.extend_from_slice(&event.frame),
                _ => {}
            }
            *self = Out::Many(buf);
        }
        match self {
            Out::Many(buf) => buf,
            _ => unreachable!("converted to Many above"),
        }
    }

    fn into_output(self) -> Option<Output> {
        match self {
            Out::Empty => None,
            Out::Event(event) => Some(Output::Event(event)),
            Out::One(bytes) => Some(Output::Bytes(bytes)),
            Out::Many(buf) => Some(Output::Bytes(buf.freeze())),
        }
    }
}
