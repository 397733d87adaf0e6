//! Whatever the data and (valid) event name, the encoded frame read by a spec-compliant
//! event-stream parser is exactly one event with that name and the data (line endings as LF).
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use ssehub::names::check_event_name;
use ssehub::sse::{Epoch, Event, EventFields, Position};

fuzz_target!(|input: (String, Option<String>, Option<u32>)| {
    let (data, event, retry) = input;
    if event
        .as_deref()
        .is_some_and(|e| check_event_name(e).is_err())
    {
        return;
    }
    let fields = EventFields {
        event: event.clone(),
        data: data.clone(),
        retry,
        close: false,
    };
    let position = Position {
        epoch: Epoch::from_raw(7),
        seq: 42,
    };
    let frame = Event::encode(position, &fields, Instant::now()).frame;
    let text = std::str::from_utf8(&frame).expect("frames are UTF-8");
    let events = parse(text);
    let expected = data.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(
        events,
        vec![(
            "000007-42".to_owned(),
            event.unwrap_or_else(|| "message".into()),
            expected
        )]
    );
});

/// The WHATWG event-stream interpretation, reduced to id, event type and data.
fn parse(text: &str) -> Vec<(String, String, String)> {
    let mut events = Vec::new();
    let (mut id, mut kind, mut data) = (String::new(), String::new(), String::new());
    let normalized = text.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        if line.is_empty() {
            if !data.is_empty() {
                data.pop();
                let name = if kind.is_empty() {
                    "message".to_owned()
                } else {
                    kind.clone()
                };
                events.push((id.clone(), name, std::mem::take(&mut data)));
            }
            data.clear();
            kind.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "event" => kind = value.to_owned(),
            "data" => {
                data.push_str(value);
                data.push('\n');
            }
            "id" if !value.contains('\0') => id = value.to_owned(),
            _ => {}
        }
    }
    events
}
