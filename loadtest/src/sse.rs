//! An incremental `text/event-stream` parser that follows the WHATWG rules a browser's
//! `EventSource` applies: `\n`, `\r\n` and `\r` line ends (also split across reads), a leading
//! BOM, `:` comments, `data` lines joined by `\n`, `id` kept across events, `event` and `retry`.

/// One dispatched event, borrowed from the parser's buffers so that a delivery costs no
/// allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The last event id in force when the event was dispatched (what the browser would send
    /// back in `Last-Event-ID`).
    pub id: &'a [u8],
    /// The event type; empty means `message`.
    pub event: &'a [u8],
    /// The data lines joined by `\n`.
    pub data: &'a [u8],
}

/// What the parser reports besides events, so a caller can count heartbeats and reconnect delays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    /// A complete event.
    Event(Event<'a>),
    /// A comment line (heartbeat or greeting), without its leading `:`.
    Comment(&'a [u8]),
    /// A valid `retry:` field, in milliseconds.
    Retry(u64),
}

/// Longest line kept; a longer one is cut (a browser would grow without bound, a load tool
/// must not).
pub const MAX_LINE: usize = 1 << 20;

/// The parser's state between reads. Small when idle: its buffers only grow to the largest
/// line and event seen.
#[derive(Debug, Default)]
pub struct Parser {
    /// A line not yet ended by a line break.
    partial: Vec<u8>,
    /// The previous chunk ended with `\r`, so a `\n` at the start of the next one is part of
    /// the same line break.
    after_cr: bool,
    /// Still at the very start of the stream (a BOM may follow).
    at_start: bool,
    /// How many bytes of a possible BOM were already seen at the start.
    bom_seen: usize,
    data: Vec<u8>,
    event: Vec<u8>,
    last_id: Vec<u8>,
}

const BOM: [u8; 3] = [0xEF, 0xBB, 0xBF];

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Parser {
        Parser {
            at_start: true,
            ..Parser::default()
        }
    }

    /// A parser whose last event id starts as `id`, as after a reconnect with `Last-Event-ID`.
    pub fn with_last_id(id: &[u8]) -> Parser {
        let mut parser = Parser::new();
        parser.last_id.extend_from_slice(id);
        parser
    }

    /// The last event id seen (what a browser sends back when it reconnects).
    pub fn last_id(&self) -> &[u8] {
        &self.last_id
    }

    /// Feeds the next bytes of the body and calls `on_item` for each event, comment and retry
    /// they complete.
    pub fn feed(&mut self, mut input: &[u8], on_item: &mut dyn FnMut(Item<'_>)) {
        if self.at_start {
            while self.bom_seen < BOM.len() {
                match input.first() {
                    None => return,
                    Some(&byte) if byte == BOM[self.bom_seen] => {
                        self.bom_seen += 1;
                        input = &input[1..];
                    }
                    Some(_) => {
                        // Not a BOM: give back the bytes taken as its start.
                        let taken = BOM[..self.bom_seen].to_vec();
                        self.at_start = false;
                        self.feed_lines(&taken, on_item);
                        break;
                    }
                }
            }
            self.at_start = false;
        }
        self.feed_lines(input, on_item);
    }

    fn feed_lines(&mut self, mut input: &[u8], on_item: &mut dyn FnMut(Item<'_>)) {
        if self.after_cr {
            self.after_cr = false;
            if input.first() == Some(&b'\n') {
                input = &input[1..];
            }
        }
        while let Some(end) = input.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line_break = input[end];
            if self.partial.is_empty() {
                self.line(&input[..end], on_item);
            } else {
                let room = MAX_LINE.saturating_sub(self.partial.len());
                self.partial.extend_from_slice(&input[..end.min(room)]);
                let line = std::mem::take(&mut self.partial);
                self.line(&line, on_item);
                self.partial = line;
                self.partial.clear();
            }
            input = &input[end + 1..];
            if line_break == b'\r' {
                match input.first() {
                    Some(b'\n') => input = &input[1..],
                    Some(_) => {}
                    None => self.after_cr = true,
                }
            }
        }
        let room = MAX_LINE.saturating_sub(self.partial.len());
        self.partial
            .extend_from_slice(&input[..input.len().min(room)]);
    }

    fn line(&mut self, line: &[u8], on_item: &mut dyn FnMut(Item<'_>)) {
        if line.is_empty() {
            self.dispatch(on_item);
            return;
        }
        if line[0] == b':' {
            on_item(Item::Comment(&line[1..]));
            return;
        }
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event.clear();
                self.event.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Some(ms) = std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse().ok())
                {
                    on_item(Item::Retry(ms));
                }
            }
            _ => {}
        }
    }

    fn dispatch(&mut self, on_item: &mut dyn FnMut(Item<'_>)) {
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        self.data.pop();
        on_item(Item::Event(Event {
            id: &self.last_id,
            event: &self.event,
            data: &self.data,
        }));
        self.data.clear();
        self.event.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Owned {
        Event(String, String, String),
        Comment(String),
        Retry(u64),
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    fn parse_in_pieces(stream: &[u8], piece: usize) -> Vec<Owned> {
        let mut parser = Parser::new();
        let mut items = Vec::new();
        for chunk in stream.chunks(piece) {
            parser.feed(chunk, &mut |item| {
                items.push(match item {
                    Item::Event(e) => Owned::Event(text(e.id), text(e.event), text(e.data)),
                    Item::Comment(c) => Owned::Comment(text(c)),
                    Item::Retry(ms) => Owned::Retry(ms),
                })
            });
        }
        items
    }

    /// Every split of the stream, down to one byte at a time, gives the same items.
    fn parse(stream: &[u8]) -> Vec<Owned> {
        let whole = parse_in_pieces(stream, stream.len().max(1));
        for piece in 1..stream.len().min(8) {
            assert_eq!(parse_in_pieces(stream, piece), whole, "pieces of {piece}");
        }
        whole
    }

    fn event(id: &str, name: &str, data: &str) -> Owned {
        Owned::Event(id.into(), name.into(), data.into())
    }

    #[test]
    fn lf_crlf_and_cr_line_ends() {
        for end in ["\n", "\r\n", "\r"] {
            let stream = format!("id: 1{end}data: a{end}{end}id: 2{end}data: b{end}{end}");
            assert_eq!(
                parse(stream.as_bytes()),
                vec![event("1", "", "a"), event("2", "", "b")],
                "line end {end:?}"
            );
        }
    }

    #[test]
    fn mixed_line_ends_and_cr_at_chunk_edge() {
        let stream = b"data: a\r\rdata: b\r\n\r\ndata: c\n\r\n";
        assert_eq!(
            parse(stream),
            vec![event("", "", "a"), event("", "", "b"), event("", "", "c")]
        );
    }

    #[test]
    fn multi_line_data_names_comments_and_retry() {
        let stream = b":ok\nretry: 3000\n\nid: e-1\nevent: update\ndata: one\ndata:two\ndata\n\n";
        assert_eq!(
            parse(stream),
            vec![
                Owned::Comment("ok".into()),
                Owned::Retry(3000),
                event("e-1", "update", "one\ntwo\n"),
            ]
        );
    }

    #[test]
    fn id_persists_and_event_type_resets() {
        let stream = b"id: 7\nevent: x\ndata: a\n\ndata: b\n\nid\ndata: c\n\n";
        assert_eq!(
            parse(stream),
            vec![
                event("7", "x", "a"),
                event("7", "", "b"),
                event("", "", "c")
            ]
        );
    }

    #[test]
    fn bom_is_skipped_once_and_bad_fields_ignored() {
        let stream = b"\xEF\xBB\xBFdata: a\nretry: 1x\nid: bad\0id\nfoo: bar\n\n";
        assert_eq!(parse(stream), vec![event("", "", "a")]);
    }

    #[test]
    fn no_dispatch_without_data_or_final_blank_line() {
        let stream = b"id: 1\nevent: x\n\ndata: unfinished\n";
        assert!(parse(stream).is_empty());
    }

    #[test]
    fn value_keeps_all_but_one_leading_space() {
        assert_eq!(parse(b"data:  two\n\n"), vec![event("", "", " two")]);
    }
}
