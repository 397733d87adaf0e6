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
    /// Length of the leading `id:` line, so multi-channel streams can write their own id instead.
    pub id_line_len: usize,
    pub published_at: Instant,
    /// A terminal event: streams of its channel end after it.
    pub close: bool,
}

impl Event {
    /// Encodes `fields` as the event at `position` of its channel.
    pub fn encode(position: Position, fields: &EventFields, published_at: Instant) -> Event {
        let mut buf = BytesMut::with_capacity(fields.data.len() + 48);
        buf.put_slice(b"id: ");
        position.write_to(&mut buf);
        buf.put_u8(b'\n');
        let id_line_len = buf.len();
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
        Event {
            epoch: position.epoch,
            seq: position.seq,
            frame: buf.freeze(),
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

/// Writes `data` as one `data:` line per line, splitting at CRLF, CR and LF so nothing in the
/// data can start a new field or event.
pub fn put_data(buf: &mut BytesMut, data: &str) {
    let mut rest = data;
    loop {
        let end = rest.find(['\r', '\n']).unwrap_or(rest.len());
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

    fn encode(event: Option<&str>, data: &str) -> String {
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
        let event = Event::encode(position, &fields, Instant::now());
        String::from_utf8(event.frame.to_vec()).unwrap()
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
