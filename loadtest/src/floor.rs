//! A write-only reference server: what a delivery costs here when a server does nothing else. One thread
//! reads publishes and writes each event to every subscriber's socket with one `write`; there is
//! no history, no resume, no limit, no heartbeat and no metric. Its CPU per delivery and its
//! latency show the floor this machine's kernel and cores set, so a hub's figures can be read
//! against it. It is an instrument, not a hub: never expose it.
//!
//! Coalescing mode is the floor of a hub that coalesces: the publish is answered at once, and
//! subscribers are written in rounds, each write carrying every event the subscriber has not had.
//! Where one write per event cannot keep up, this can.

use std::collections::{HashMap, VecDeque};
use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

const LISTENER: Token = Token(usize::MAX);
/// Unsent bytes a subscriber may hold before it is dropped.
const MAX_PENDING: usize = 1 << 20;
/// Longest request (head and body) accepted.
const MAX_REQUEST: usize = 64 << 10;
const MAX_HEADERS: usize = 32;
/// Bytes taken from a socket per read.
const READ_BUFFER: usize = 16 << 10;
/// Frames a coalescing floor keeps per channel; a subscriber further behind is dropped.
const FRAMES_KEPT: usize = 4096;
/// Subscribers a coalescing floor writes before it looks for new requests again.
const SLICE: usize = 64;

const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
cache-control: no-cache\r\nconnection: close\r\n\r\n";
const ACCEPTED: &[u8] = b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\n\r\n";
const NOT_FOUND: &[u8] =
    b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

/// Serves `listener` until the process ends: `GET /sub/<channel>` (or `/events/<channel>`) opens
/// a stream, `POST /pub/<channel>` (or `/publish/<channel>`) sends its body as one event;
/// `coalesce` picks coalescing mode.
pub fn serve(listener: std::net::TcpListener, coalesce: bool) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let mut listener = TcpListener::from_std(listener);
    let mut poll = Poll::new()?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut server = Server::new(coalesce);
    let mut events = Events::with_capacity(1024);
    loop {
        let timeout = (!server.dirty.is_empty()).then_some(Duration::ZERO);
        if let Err(err) = poll.poll(&mut events, timeout) {
            if err.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                server.accept(&listener, &poll)?;
                continue;
            }
            let token = event.token().0;
            if event.is_writable() {
                server.flush(token);
            }
            if event.is_readable() || event.is_read_closed() || event.is_error() {
                server.read(token);
            }
        }
        server.write_slice();
    }
}

struct Server {
    connections: Vec<Option<Connection>>,
    /// Where reads land, allocated once: zeroing a fresh buffer per read cost more user-space
    /// instructions than the rest of an event.
    scratch: Vec<u8>,
    free: Vec<usize>,
    channels: Vec<Channel>,
    by_name: HashMap<Vec<u8>, usize>,
    coalesce: bool,
    /// Channels with a round of writes to do (coalescing only).
    dirty: VecDeque<usize>,
    /// Where a subscriber's waiting frames are joined, allocated once.
    batch: Vec<u8>,
}

struct Connection {
    stream: TcpStream,
    /// The channel it streams, once it asked for one.
    subscribed: Option<usize>,
    input: Vec<u8>,
    unsent: Vec<u8>,
    /// The last seq written to it (coalescing only).
    sent: u64,
}

#[derive(Default)]
struct Channel {
    subscribers: Vec<usize>,
    seq: u64,
    /// The last frames, the newest at the back (coalescing only).
    frames: VecDeque<Vec<u8>>,
    /// The next subscriber of the running round.
    cursor: usize,
    /// `seq` when the running round started; another round follows if it moved.
    round_seq: u64,
    dirty: bool,
}

/// A complete request found at the start of a connection's input.
enum Request {
    Subscribe(Vec<u8>),
    Publish { channel: Vec<u8>, body: Vec<u8> },
    Unknown,
}

impl Server {
    fn new(coalesce: bool) -> Server {
        Server {
            connections: Vec::new(),
            scratch: vec![0; READ_BUFFER],
            free: Vec::new(),
            channels: Vec::new(),
            by_name: HashMap::new(),
            coalesce,
            dirty: VecDeque::new(),
            batch: Vec::new(),
        }
    }

    fn accept(&mut self, listener: &TcpListener, poll: &Poll) -> std::io::Result<()> {
        loop {
            // Nothing more to accept, or out of descriptors: keep serving who is here.
            let Ok((mut stream, _)) = listener.accept() else {
                return Ok(());
            };
            let _ = stream.set_nodelay(true);
            let token = self.free.pop().unwrap_or(self.connections.len());
            poll.registry().register(
                &mut stream,
                Token(token),
                Interest::READABLE | Interest::WRITABLE,
            )?;
            let connection = Connection {
                stream,
                subscribed: None,
                input: Vec::new(),
                unsent: Vec::new(),
                sent: 0,
            };
            if token == self.connections.len() {
                self.connections.push(Some(connection));
            } else {
                self.connections[token] = Some(connection);
            }
        }
    }

    fn read(&mut self, token: usize) {
        let Some(Some(connection)) = self.connections.get_mut(token) else {
            return;
        };
        let buf = &mut self.scratch;
        loop {
            match connection.stream.read(buf) {
                Ok(0) => return self.close(token),
                Ok(n) if connection.subscribed.is_none() => {
                    connection.input.extend_from_slice(&buf[..n]);
                }
                // A subscriber's bytes are ignored.
                Ok(_) => {}
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => {}
                Err(_) => return self.close(token),
            }
        }
        self.handle_requests(token);
    }

    /// Answers every complete request waiting on the connection.
    fn handle_requests(&mut self, token: usize) {
        loop {
            let Some(Some(connection)) = self.connections.get_mut(token) else {
                return;
            };
            if connection.subscribed.is_some() {
                return;
            }
            let (request, used) = match parse(&connection.input) {
                Ok(Some(parsed)) => parsed,
                Ok(None) if connection.input.len() < MAX_REQUEST => return,
                Ok(None) | Err(()) => (Request::Unknown, 0),
            };
            connection.input.drain(..used);
            match request {
                Request::Subscribe(name) => {
                    let channel = self.channel(name);
                    self.channels[channel].subscribers.push(token);
                    let seq = self.channels[channel].seq;
                    if let Some(Some(connection)) = self.connections.get_mut(token) {
                        connection.subscribed = Some(channel);
                        connection.sent = seq;
                    }
                    self.send(token, STREAM_HEAD);
                }
                Request::Publish { channel, body } => {
                    let channel = self.channel(channel);
                    self.publish(channel, &body);
                    self.send(token, ACCEPTED);
                }
                Request::Unknown => {
                    self.send(token, NOT_FOUND);
                    return self.close(token);
                }
            }
        }
    }

    fn channel(&mut self, name: Vec<u8>) -> usize {
        let next = self.channels.len();
        let index = *self.by_name.entry(name).or_insert(next);
        if index == next {
            self.channels.push(Channel::default());
        }
        index
    }

    /// Encodes the event once and writes it to every subscriber of `channel` (coalescing: keeps
    /// it for the next round).
    fn publish(&mut self, index: usize, body: &[u8]) {
        let channel = &mut self.channels[index];
        channel.seq += 1;
        let mut frame = format!("id: {}\n", channel.seq).into_bytes();
        for line in body.split(|&b| b == b'\n') {
            frame.extend_from_slice(b"data: ");
            frame.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            frame.push(b'\n');
        }
        frame.push(b'\n');
        if self.coalesce {
            if channel.frames.len() == FRAMES_KEPT {
                channel.frames.pop_front();
            }
            channel.frames.push_back(frame);
            if !channel.dirty {
                channel.dirty = true;
                channel.cursor = 0;
                channel.round_seq = channel.seq;
                self.dirty.push_back(index);
            }
            return;
        }
        let mut dead = Vec::new();
        for &token in &channel.subscribers {
            if let Some(Some(connection)) = self.connections.get_mut(token) {
                if !connection.send(&frame) {
                    dead.push(token);
                }
            }
        }
        for token in dead {
            self.close(token);
        }
    }

    /// Writes up to [`SLICE`] subscribers of the dirty channels, each everything it has not had.
    fn write_slice(&mut self) {
        let mut budget = SLICE;
        let mut dead = Vec::new();
        while budget > 0 {
            let Some(&index) = self.dirty.front() else {
                break;
            };
            let channel = &mut self.channels[index];
            while budget > 0 && channel.cursor < channel.subscribers.len() {
                let token = channel.subscribers[channel.cursor];
                channel.cursor += 1;
                budget -= 1;
                let Some(Some(connection)) = self.connections.get_mut(token) else {
                    continue;
                };
                let behind = (channel.seq - connection.sent) as usize;
                if behind == 0 {
                    continue;
                }
                if behind > channel.frames.len() {
                    dead.push(token);
                    continue;
                }
                let frames = &channel.frames;
                let sent = if behind == 1 {
                    connection.send(&frames[frames.len() - 1])
                } else {
                    self.batch.clear();
                    for frame in frames.range(frames.len() - behind..) {
                        self.batch.extend_from_slice(frame);
                    }
                    connection.send(&self.batch)
                };
                connection.sent = channel.seq;
                if !sent {
                    dead.push(token);
                }
            }
            if channel.cursor == channel.subscribers.len() {
                channel.cursor = 0;
                if channel.round_seq == channel.seq {
                    channel.dirty = false;
                    self.dirty.pop_front();
                } else {
                    channel.round_seq = channel.seq;
                    self.dirty.rotate_left(1);
                }
            }
        }
        for token in dead {
            self.close(token);
        }
    }

    fn send(&mut self, token: usize, bytes: &[u8]) {
        if let Some(Some(connection)) = self.connections.get_mut(token) {
            if !connection.send(bytes) {
                self.close(token);
            }
        }
    }

    fn flush(&mut self, token: usize) {
        if let Some(Some(connection)) = self.connections.get_mut(token) {
            if !connection.flush() {
                self.close(token);
            }
        }
    }

    fn close(&mut self, token: usize) {
        let Some(connection) = self.connections.get_mut(token).and_then(Option::take) else {
            return;
        };
        if let Some(channel) = connection.subscribed {
            let channel = &mut self.channels[channel];
            if let Some(at) = channel.subscribers.iter().position(|&t| t == token) {
                channel.subscribers.swap_remove(at);
                // The last subscriber moved to `at`: a running round must not skip it.
                channel.round_seq = 0;
            }
        }
        self.free.push(token);
    }
}

impl Connection {
    /// Writes `bytes` now, or after what is already waiting; `false` when the connection failed
    /// or holds more than [`MAX_PENDING`] unsent bytes.
    fn send(&mut self, bytes: &[u8]) -> bool {
        if !self.unsent.is_empty() {
            self.unsent.extend_from_slice(bytes);
            return self.unsent.len() <= MAX_PENDING;
        }
        match write_some(&mut self.stream, bytes) {
            Some(written) => {
                self.unsent.extend_from_slice(&bytes[written..]);
                true
            }
            None => false,
        }
    }

    fn flush(&mut self) -> bool {
        if self.unsent.is_empty() {
            return true;
        }
        match write_some(&mut self.stream, &self.unsent) {
            Some(written) => {
                self.unsent.drain(..written);
                true
            }
            None => false,
        }
    }
}

/// Bytes written (0 when the socket is full); `None` when the connection failed.
fn write_some(stream: &mut TcpStream, bytes: &[u8]) -> Option<usize> {
    let mut written = 0;
    while written < bytes.len() {
        match stream.write(&bytes[written..]) {
            Ok(0) => return None,
            Ok(n) => written += n,
            Err(err) if err.kind() == ErrorKind::WouldBlock => break,
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    Some(written)
}

/// The first complete request in `input` and its length; `Ok(None)` while incomplete.
fn parse(input: &[u8]) -> Result<Option<(Request, usize)>, ()> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let head_len = match request.parse(input) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let path = request.path.unwrap_or("").as_bytes();
    let channel_of = |prefixes: [&[u8]; 2]| {
        prefixes
            .iter()
            .find_map(|prefix| path.strip_prefix(*prefix))
            .filter(|name| !name.is_empty())
            .map(<[u8]>::to_vec)
    };
    match request.method {
        Some("GET") => Ok(Some((
            channel_of([b"/sub/", b"/events/"]).map_or(Request::Unknown, Request::Subscribe),
            head_len,
        ))),
        Some("POST") => {
            let length = request
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
                .ok_or(())?;
            if head_len + length > MAX_REQUEST {
                return Err(());
            }
            if input.len() < head_len + length {
                return Ok(None);
            }
            let body = input[head_len..head_len + length].to_vec();
            let request = match channel_of([b"/pub/", b"/publish/"]) {
                Some(channel) => Request::Publish { channel, body },
                None => Request::Unknown,
            };
            Ok(Some((request, head_len + length)))
        }
        _ => Ok(Some((Request::Unknown, head_len))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_recognised_only_when_complete() {
        let sub = b"GET /sub/a HTTP/1.1\r\nHost: x\r\n\r\n";
        assert!(matches!(
            parse(sub),
            Ok(Some((Request::Subscribe(name), n))) if name == b"a" && n == sub.len()
        ));
        assert!(matches!(parse(&sub[..10]), Ok(None)));
        let head = b"POST /publish/c HTTP/1.1\r\nContent-Length: 3\r\n\r\n";
        let publish = [&head[..], b"abcPOST"].concat();
        assert!(matches!(
            parse(&publish),
            Ok(Some((Request::Publish { channel, body }, n)))
                if channel == b"c" && body == b"abc" && n == head.len() + 3
        ));
        assert!(matches!(
            parse(b"POST /pub/c HTTP/1.1\r\nContent-Length: 3\r\n\r\nab"),
            Ok(None)
        ));
        assert!(parse(b"POST /pub/c HTTP/1.1\r\n\r\n").is_err());
        assert!(matches!(
            parse(b"GET /metrics HTTP/1.1\r\n\r\n"),
            Ok(Some((Request::Unknown, _)))
        ));
    }
}
