//! Event streams served without hyper. A connection whose first request is an HTTP/1.1
//! `GET /events...` is answered here by a writer that keeps no buffer between events (hyper
//! keeps an 8 KiB read and an 8 KiB write buffer per connection for its whole life, which is
//! most of an idle subscriber's memory). Routing, validation and the stream itself are the
//! same code as hyper's path; every other connection goes to hyper with its first bytes
//! replayed.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::{BodyExt, Either, Empty};
use hyper::http::response::Parts;
use hyper::{Method, Request, Version};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, ReadBuf};
use tokio::net::tcp::WriteHalf;
use tokio::net::TcpStream;

use crate::connection::Cut;
use crate::http::{self, App, ConnectionHandle};
use crate::hub::{Output, Subscription};
use crate::sse::encode::{chunk_size_line, CHUNK_SIZE_LINE};

/// Longest request head read before handing the connection to hyper (which enforces its own
/// limits).
const MAX_HEAD: usize = 16 << 10;
/// Most headers parsed here; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;

/// Reads until the first request head is complete (or is clearly not HTTP/1.1 `GET`, or reaches
/// [`MAX_HEAD`]). `None` when the client sent nothing usable within `timeout` or went away.
pub async fn read_head(stream: &mut TcpStream, timeout: Duration) -> Option<BytesMut> {
    let mut head = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read_buf(&mut head)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return None,
            Ok(Ok(_)) => {}
        }
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let partial = matches!(
            httparse::Request::new(&mut headers).parse(&head),
            Ok(httparse::Status::Partial)
        );
        if !partial || head.len() >= MAX_HEAD {
            return Some(head);
        }
    }
}

/// The request, when `head` is an HTTP/1.1 `GET /events...` without a body: the requests
/// this module serves.
pub fn event_stream_request(head: &[u8]) -> Option<Request<Empty<Bytes>>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    if !matches!(parsed.parse(head), Ok(httparse::Status::Complete(_))) {
        return None;
    }
    let path = parsed.path?;
    let events = path == "/events" || path.starts_with("/events/") || path.starts_with("/events?");
    if parsed.method? != "GET" || parsed.version? != 1 || !events {
        return None;
    }
    let mut request = Request::builder()
        .method(Method::GET)
        .uri(path)
        .version(Version::HTTP_11);
    for header in parsed.headers.iter() {
        let name = header.name;
        let has_body = (name.eq_ignore_ascii_case("content-length") && header.value != b"0")
            || name.eq_ignore_ascii_case("transfer-encoding");
        if has_body {
            return None;
        }
        request = request.header(name, header.value);
    }
    request.body(Empty::new()).ok()
}

/// Answers `request` on `stream`. A whole answer (an error, `204`) is written and the
/// connection closed; an event stream gets its head written and is returned to be run.
pub async fn respond(
    app: Arc<App>,
    mut stream: TcpStream,
    request: Request<Empty<Bytes>>,
    handle: ConnectionHandle,
) -> Option<EventStream> {
    let cut = handle.cut.clone();
    let response = tokio::select! {
        response = http::handle(app, request, &handle) => response,
        _ = cut.wait() => return None,
    };
    let (parts, body) = response.into_parts();
    match body {
        Either::Left(full) => {
            let bytes = match full.collect().await {
                Ok(collected) => collected.to_bytes(),
                Err(never) => match never {},
            };
            let mut out = encode_head(&parts, Some(bytes.len()));
            out.extend_from_slice(&bytes);
            let (_, mut writer) = stream.split();
            if write(&mut writer, &out, &cut).await {
                let _ = writer.shutdown().await;
            }
            None
        }
        Either::Right(subscription) => {
            let head = encode_head(&parts, None);
            let (_, mut writer) = stream.split();
            write(&mut writer, &head, &cut)
                .await
                .then_some(EventStream {
                    stream,
                    subscription,
                    cut,
                })
        }
    }
}

/// An open event stream on its own connection: only what it needs between events.
pub struct EventStream {
    stream: TcpStream,
    subscription: Subscription,
    cut: Cut,
}

impl EventStream {
    /// Writes the stream's frames as HTTP/1.1 chunks until it ends, the client leaves, or the
    /// connection is cut; then closes the connection.
    pub async fn run(mut self) {
        let cut = &self.cut;
        let (mut reader, mut writer) = self.stream.split();
        let read_waker = self.subscription.transport_waker();
        let mut probe = [0u8; 16];
        loop {
            // `None`: the client left. `Some(None)`: the stream ended (an evicted subscription
            // ends by itself; its connection is cut as well).
            let next = std::future::poll_fn(|cx| {
                if let Poll::Ready(output) = self.subscription.poll_output(cx) {
                    return Poll::Ready(Some(output));
                }
                // Read only after the socket signalled: polling it again after every write would
                // re-arm read interest, a lock in tokio's I/O driver per delivery.
                if !self.subscription.take_transport_wake() {
                    return Poll::Pending;
                }
                let mut probe = ReadBuf::new(&mut probe);
                let mut read_cx = Context::from_waker(&read_waker);
                match Pin::new(&mut reader).poll_read(&mut read_cx, &mut probe) {
                    Poll::Pending => Poll::Pending,
                    // The client left.
                    Poll::Ready(Err(_)) => Poll::Ready(None),
                    Poll::Ready(Ok(())) if probe.filled().is_empty() => Poll::Ready(None),
                    // Anything the client sends is ignored: read on.
                    Poll::Ready(Ok(())) => {
                        read_waker.wake_by_ref();
                        Poll::Pending
                    }
                }
            });
            let Some(output) = next.await else { return };
            let Some(output) = output else { break };
            let written = match &output {
                Output::Event(event) => write(&mut writer, &event.chunk, cut).await,
                Output::Bytes(frame) => write_chunk(&mut writer, frame, cut).await,
            };
            if !written {
                return;
            }
        }
        if !cut.is_cut() && write(&mut writer, b"0\r\n\r\n", cut).await {
            let _ = writer.shutdown().await;
        }
    }
}

/// Writes all of `bytes`: at once when the socket takes them (the usual case), else waiting
/// for it unless the connection is cut first. `false` when they were not written.
async fn write(writer: &mut WriteHalf<'_>, bytes: &[u8], cut: &Cut) -> bool {
    let written = match writer.try_write(bytes) {
        Ok(n) => n,
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    if written == bytes.len() {
        return true;
    }
    tokio::select! {
        biased;
        _ = cut.wait() => false,
        result = writer.write_all(&bytes[written..]) => result.is_ok(),
    }
}

/// Writes `data` as one HTTP/1.1 chunk: size line, data and CRLF in one `writev` when the
/// socket takes them (frames that are not a single event: several coalesced, heartbeats).
async fn write_chunk(writer: &mut WriteHalf<'_>, data: &[u8], cut: &Cut) -> bool {
    let mut size = [0u8; CHUNK_SIZE_LINE];
    let size = chunk_size_line(&mut size, data.len());
    let parts = [
        IoSlice::new(size),
        IoSlice::new(data),
        IoSlice::new(b"\r\n"),
    ];
    let total = size.len() + data.len() + 2;
    let written = match writer.try_write_vectored(&parts) {
        Ok(n) => n,
        Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(_) => return false,
    };
    if written == total {
        return true;
    }
    // The socket is full: finish with a copy, as slow clients are the rare case.
    let mut rest = Vec::with_capacity(total);
    rest.extend_from_slice(size);
    rest.extend_from_slice(data);
    rest.extend_from_slice(b"\r\n");
    write(writer, &rest[written..], cut).await
}

/// Status line and headers, with `content-length` for a whole body (`Some`) or chunked
/// transfer for a stream (`None`), and `connection: close`.
fn encode_head(parts: &Parts, length: Option<usize>) -> BytesMut {
    let mut head = BytesMut::with_capacity(256);
    let status = parts.status;
    head.put_slice(b"HTTP/1.1 ");
    head.put_slice(status.as_str().as_bytes());
    head.put_u8(b' ');
    head.put_slice(status.canonical_reason().unwrap_or("").as_bytes());
    head.put_slice(b"\r\n");
    for (name, value) in &parts.headers {
        head.put_slice(name.as_str().as_bytes());
        head.put_slice(b": ");
        head.put_slice(value.as_bytes());
        head.put_slice(b"\r\n");
    }
    match length {
        Some(_) if status.as_u16() == 204 || status.as_u16() == 304 => {}
        Some(length) => {
            head.put_slice(b"content-length: ");
            head.put_slice(itoa::Buffer::new().format(length).as_bytes());
            head.put_slice(b"\r\n");
        }
        None => head.put_slice(b"transfer-encoding: chunked\r\n"),
    }
    head.put_slice(b"connection: close\r\n\r\n");
    head
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http11_get_events_without_a_body_is_taken() {
        let take = |head: &str| event_stream_request(head.as_bytes()).is_some();
        assert!(take("GET /events/a HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(take("GET /events?channel=a HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /events/a HTTP/1.0\r\n\r\n"));
        assert!(!take("POST /events/a HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /eventsx HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /metrics HTTP/1.1\r\n\r\n"));
        assert!(!take("GET /events/a HTTP/1.1\r\nContent-Length: 3\r\n\r\n"));
        assert!(!take(
            "GET /events/a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        ));
        assert!(!take("GET /events/a HTTP/1.1\r\nHost: x\r\n"));
        assert!(!take("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
    }
}
