//! Any text parsed as a cursor either fails cleanly or round-trips through the id writer.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use ssehub::sse::cursor::write_positions;
use ssehub::sse::Cursor;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for channels in 1..=3 {
        if let Ok(Cursor::After(positions)) = Cursor::parse(text, channels) {
            assert_eq!(positions.len(), channels);
            let mut id = BytesMut::new();
            write_positions(&mut id, positions.iter().copied());
            let id = std::str::from_utf8(&id).expect("ids are ASCII");
            assert_eq!(
                Cursor::parse(id, channels),
                Ok(Cursor::After(positions)),
                "{id}"
            );
        }
    }
});
