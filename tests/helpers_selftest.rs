//! Unit tests of the pure parsers in `tests/common` (no server needed).

mod common;

use common::{parse_metric, ChunkedDecoder, SseEvent, SseParser};

fn ev(id: &str, event: &str, data: &str) -> SseEvent {
    SseEvent {
        id: id.into(),
        event: event.into(),
        data: data.into(),
    }
}

/// Feeds each piece in turn and collects all events.
fn parse(pieces: &[&[u8]]) -> (SseParser, Vec<SseEvent>) {
    let mut parser = SseParser::default();
    let events = pieces.iter().flat_map(|p| parser.feed(p)).collect();
    (parser, events)
}

#[test]
fn sse_line_endings() {
    for stream in [
        &b"data: a\n\ndata: b\n\n"[..],
        b"data: a\r\n\r\ndata: b\r\n\r\n",
        b"data: a\r\rdata: b\r\r",
        b"data: a\r\n\rdata: b\n\r\n",
    ] {
        let (_, events) = parse(&[stream]);
        assert_eq!(
            events,
            vec![ev("", "message", "a"), ev("", "message", "b")],
            "{stream:?}"
        );
    }
}

#[test]
fn sse_cr_split_across_feeds() {
    // CR ends the line; the LF in the next feed belongs to it and is not a blank line.
    let (_, events) = parse(&[b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"]);
    assert_eq!(events, vec![ev("", "message", "a\nb")]);
    // Every single-byte split gives the same result.
    let stream =
        b"\xEF\xBB\xBFid: 1\r\nevent: x\r\ndata: a\r\ndata: b\r\n\r\n: c\r\rdata: z\r\n\r\n";
    let whole = parse(&[stream]).1;
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    assert_eq!(parse(&bytes).1, whole);
    assert_eq!(whole, vec![ev("1", "x", "a\nb"), ev("1", "message", "z")]);
}

#[test]
fn sse_bom_only_at_start() {
    let (_, events) = parse(&[b"\xEF\xBB", b"\xBFdata: x\n\n\xEF\xBB\xBFdata: y\n\n"]);
    assert_eq!(
        events,
        vec![ev("", "message", "x")],
        "second BOM makes an unknown field"
    );
}

#[test]
fn sse_id_persists_and_nul_ignored() {
    let (parser, events) =
        parse(&[b"id: 1\ndata: a\n\ndata: b\n\nid: 2\0x\ndata: c\n\nid\ndata: d\n\n"]);
    assert_eq!(
        events,
        vec![
            ev("1", "message", "a"),
            ev("1", "message", "b"),
            ev("1", "message", "c"),
            ev("", "message", "d"),
        ]
    );
    assert_eq!(parser.last_event_id(), "");
    // The last event ID string updates on a blank line even without data.
    let (parser, events) = parse(&[b"id: 7\n\n"]);
    assert!(events.is_empty());
    assert_eq!(parser.last_event_id(), "7");
}

#[test]
fn sse_comments_counted() {
    let (parser, events) = parse(&[b":hb\n: hb\r\n:\rdata: x\n:mid\n\n"]);
    assert_eq!(parser.comments(), 4);
    assert_eq!(events, vec![ev("", "message", "x")]);
}

#[test]
fn sse_retry() {
    let (parser, _) = parse(&[b"retry: 3000\n\n"]);
    assert_eq!((parser.retry(), parser.retries()), (Some(3000), 1));
    let (parser, _) = parse(&[b"retry: 100\nretry: 1x\nretry: -5\nretry:\nretry:  7\n"]);
    assert_eq!((parser.retry(), parser.retries()), (Some(100), 1));
    let (parser, _) = parse(&[b"retry:250\n"]);
    assert_eq!(parser.retry(), Some(250));
}

#[test]
fn sse_empty_data_not_dispatched() {
    let (_, events) = parse(&[b"event: x\n\ndata: y\n\n"]);
    assert_eq!(
        events,
        vec![ev("", "message", "y")],
        "event type reset by the blank line"
    );
    // `data` with an empty value does dispatch, with empty data.
    let (_, events) = parse(&[b"data\n\ndata:\ndata:\n\n"]);
    assert_eq!(events, vec![ev("", "message", ""), ev("", "message", "\n")]);
    // An unfinished event at the end of the stream is never dispatched.
    let (_, events) = parse(&[b"data: x\n"]);
    assert!(events.is_empty());
}

#[test]
fn sse_field_parsing() {
    let (_, events) = parse(&[
        b"data:no space\ndata:  two spaces\ndata: a:b: c\nevent:e\nunknown: z\nDATA: q\n\n",
    ]);
    assert_eq!(events, vec![ev("", "e", "no space\n two spaces\na:b: c")]);
    let (_, events) = parse(&["data: h\u{e9}llo \u{1F600}\n\n".as_bytes()]);
    assert_eq!(events, vec![ev("", "message", "h\u{e9}llo \u{1F600}")]);
}

#[test]
fn chunked_split_anywhere() {
    let wire = b"5\r\nhello\r\n7;name=\"v\";x\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\n";
    for split in 0..=wire.len() {
        let mut decoder = ChunkedDecoder::default();
        let mut out = decoder.feed(&wire[..split]).expect("first part");
        assert_eq!(decoder.finished(), split == wire.len());
        out.extend(decoder.feed(&wire[split..]).expect("second part"));
        assert_eq!(out, b"hello, world", "split at {split}");
        assert!(decoder.finished());
    }
    let mut decoder = ChunkedDecoder::default();
    let out: Vec<u8> = wire
        .chunks(1)
        .flat_map(|b| decoder.feed(b).expect("byte"))
        .collect();
    assert_eq!(out, b"hello, world");
    assert!(decoder.finished());
}

#[test]
fn chunked_final_chunk() {
    let mut decoder = ChunkedDecoder::default();
    assert_eq!(
        decoder.feed(b"A\r\n0123456789\r\n").expect("chunk"),
        b"0123456789"
    );
    assert!(!decoder.finished());
    assert_eq!(decoder.feed(b"0\r\n").expect("last chunk"), b"");
    assert!(!decoder.finished(), "trailer section not ended yet");
    decoder.feed(b"\r\n").expect("end");
    assert!(decoder.finished());
    assert!(decoder.feed(b"x").is_err(), "bytes after the final chunk");
}

#[test]
fn chunked_errors() {
    for bad in [
        &b"zz\r\n"[..],
        b"\r\n",
        b"3\r\nabcX",
        b"ffffffffffffffffff\r\n",
    ] {
        assert!(ChunkedDecoder::default().feed(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn metric_lines() {
    let text = "# HELP a x\n# TYPE a counter\nssehub_connections 3\nssehub_connections_total 9\n\
                ssehub_evictions_total{reason=\"lagged\"} 2\nssehub_evictions_total{reason=\"slow\"} 1e0\n";
    assert_eq!(parse_metric(text, "ssehub_connections"), Some(3.0));
    assert_eq!(parse_metric(text, "ssehub_connections_total"), Some(9.0));
    assert_eq!(
        parse_metric(text, "ssehub_evictions_total{reason=\"lagged\"}"),
        Some(2.0)
    );
    assert_eq!(
        parse_metric(text, "ssehub_evictions_total{reason=\"slow\"}"),
        Some(1.0)
    );
    assert_eq!(parse_metric(text, "ssehub_evictions_total"), None);
}
