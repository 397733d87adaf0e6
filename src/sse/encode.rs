//! Encodes an event once into the `Bytes` every subscriber shares.

use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};

use super::cursor::{Epoch, Position};

/// What a publisher says about one event, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFields {
    pub event: Option<String>,
    pub data: String,
    pub retry: Option<u32>,
    pub close: bool,
}

/// One published event of one channel, encoded once and shared by the history and every subscriber.
#[derive(Debug)]
pub struct Event {
    pub epoch: Epoch,
    pub seq: u64,
    /// The whole frame: `id:` line, `event:`, `retry:`, `data:` lines, blank line.
    pub frame: Bytes,
    /// The same frame as one HTTP/1.1 chunk (size line, frame, CRLF), sharing its bytes:
    /// streams over HTTP/1.1 send it as is, with no copy per subscriber.
    pub chunk: Bytes,
    /// Length of the leading `id:` line, so multi-channel streams can write their own id instead.
    pub id_line_len: usize,
    pub published_at: Instant,
    /// A terminal event: streams of its channel end after it.
    pub close: bool,
}

impl Event {
    /// Encodes `fields` as the event at `position` of its channel.
    pub fn encode(position: Position, fields: &EventFields, published_at: Instant) -> Event {
        let mut buf = BytesMut::with_capacity(CHUNK_SIZE_LINE + fields.data.len() + 48);
        // Room for the chunk size line, written once the frame's length is known.
        buf.put_bytes(0, CHUNK_SIZE_LINE);
        buf.put_slice(b"id: ");
        position.write_to(&mut buf);
        buf.put_u8(b'\n');
        let id_line_len = buf.len() - CHUNK_SIZE_LINE;
        if let Some(name) = &fields.event {
            buf.put_slice(b"event: ");
            buf.put_slice(name.as_bytes());
            buf.put_u8(b'\n');
        }
        if let Some(retry) = fields.retry {
            buf.put_slice(format!("retry: {retry}\n").as_bytes());
        }
        put_data(&mut buf, &fields.data);
        buf.put_u8(b'\n');
        let frame_end = buf.len();
        buf.put_slice(b"\r\n");
        let mut size = [0u8; CHUNK_SIZE_LINE];
        let size = chunk_size_line(&mut size, frame_end - CHUNK_SIZE_LINE);
        let chunk_start = CHUNK_SIZE_LINE - size.len();
        buf[chunk_start..CHUNK_SIZE_LINE].copy_from_slice(size);
        let encoded = buf.freeze();
        Event {
            epoch: position.epoch,
            seq: position.seq,
            frame: encoded.slice(CHUNK_SIZE_LINE..frame_end),
            chunk: encoded.slice(chunk_start..),
            id_line_len,
            published_at,
            close: fields.close,
        }
    }

    pub fn position(&self) -> Position {
        Position {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The frame without its `id:` line.
    pub fn without_id(&self) -> Bytes {
        self.frame.slice(self.id_line_len..)
    }
}

/// Longest HTTP/1.1 chunk size line: 16 hex digits and CRLF.
pub const CHUNK_SIZE_LINE: usize = 18;

/// Writes the HTTP/1.1 chunk size line for `len` (hex, CRLF) at the end of `buf`; returns it.
pub fn chunk_size_line(buf: &mut [u8; CHUNK_SIZE_LINE], len: usize) -> &[u8] {
    buf[CHUNK_SIZE_LINE - 2..].copy_from_slice(b"\r\n");
    let mut start = CHUNK_SIZE_LINE - 2;
    let mut rest = len;
    loop {
        start -= 1;
        buf[start] = b"0123456789abcdef"[rest % 16];
        rest /= 16;
        if rest == 0 {
            break;
        }
    }
    &buf[start..]
}

/// Writes `data` as one `data:` line per line, splitting at CRLF, CR and LF so nothing in the
/// data can start a new field or event.
pub fn put_data(buf: &mut BytesMut, data: &str) {
    let mut rest = data;
    loop {
        let end = memchr::memchr2(b'\r', b'\n', rest.as_bytes()).unwrap_or(rest.len());
        buf.put_slice(b"data: ");
        buf.put_slice(&rest.as_bytes()[..end]);
        buf.put_u8(b'\n');
        if end == rest.len() {
            return;
        }
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
    }
}

/// A hub-generated named event (such as `gap`) with the given id line.
pub fn control_event(id: &str, name: &str, data: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(id.len() + name.len() + data.len() + 32);
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_slice(b"\nevent: ");
    buf.put_slice(name.as_bytes());
    buf.put_u8(b'\n');
    put_data(&mut buf, data);
    buf.put_u8(b'\n');
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(event: Option<&str>, data: &str) -> Event {
        let fields = EventFields {
            event: event.map(str::to_owned),
            data: data.to_owned(),
            retry: None,
            close: false,
        };
        let position = Position {
            epoch: Epoch::from_raw(0),
            seq: 7,
        };
        Event::encode(position, &fields, Instant::now())
    }

    fn encode(event: Option<&str>, data: &str) -> String {
        String::from_utf8(encoded(event, data).frame.to_vec()).unwrap()
    }

    #[test]
    fn frames_named_event() {
        assert_eq!(
            encode(Some("update"), "hi"),
            "id: 000000-7\nevent: update\ndata: hi\n\n"
        );
    }

    #[test]
    fn splits_every_line_ending() {
        assert_eq!(
            encode(None, "a\r\nb\rc\nd"),
            "id: 000000-7\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        );
        assert_eq!(
            encode(None, "\n\nid: 9\r\n"),
            "id: 000000-7\ndata: \ndata: \ndata: id: 9\ndata: \n\n"
        );
    }

    #[test]
    fn empty_data_still_dispatches() {
        assert_eq!(encode(None, ""), "id: 000000-7\ndata: \n\n");
    }

    #[test]
    fn chunks_carry_their_size_in_hex() {
        let mut buf = [0u8; CHUNK_SIZE_LINE];
        assert_eq!(chunk_size_line(&mut buf, 5), b"5\r\n");
        assert_eq!(chunk_size_line(&mut buf, 0), b"0\r\n");
        assert_eq!(chunk_size_line(&mut buf, 0x1a2b), b"1a2b\r\n");
        assert_eq!(
            chunk_size_line(&mut buf, usize::MAX),
            b"ffffffffffffffff\r\n"
        );
    }

    #[test]
    fn the_chunk_is_the_frame_framed_for_http11() {
        let event = encoded(Some("update"), &"x".repeat(300));
        let expected = [
            format!("{:x}\r\n", event.frame.len()).as_bytes(),
            &event.frame[..],
            b"\r\n",
        ]
        .concat();
        assert_eq!(event.frame.len(), 13 + 14 + 6 + 300 + 2);
        assert_eq!(&event.chunk[..], &expected[..]);
    }

    #[test]
    fn without_id_drops_only_the_id_line() {
        let fields = EventFields {
            event: None,
            data: "x".into(),
            retry: Some(500),
            close: true,
        };
        let position = Position {
            epoch: Epoch::from_raw(1),
            seq: 1,
        };
        let event = Event::encode(position, &fields, Instant::now());
        assert_eq!(&event.without_id()[..], b"retry: 500\ndata: x\n\n");
        assert!(event.close);
    }
}
