//! The event payload: a sequence number and the scheduled send time travel inside the data, so
//! every subscriber can check order and completeness and measure latency on its own.
//!
//! Format (ASCII, no quotes or line breaks, so it is the same in a raw body and a JSON string):
//! `lt <seq> <scheduled UNIX µs> <padding>`.

use std::time::{SystemTime, UNIX_EPOCH};

const MAGIC: &[u8] = b"lt ";

/// What a subscriber reads back from an event's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// The event's number in its channel, from 0.
    pub seq: u64,
    /// When the publisher was scheduled to send it, in UNIX microseconds.
    pub scheduled_us: u64,
}

/// Writes the payload for `stamp`, padded with `x` to `size` bytes (longer when `size` is too
/// small for the fields).
pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut text = format!("lt {} {} ", stamp.seq, stamp.scheduled_us);
    while text.len() < size {
        text.push('x');
    }
    text
}

/// Reads a payload written by [`encode`]; `None` for any other data (a `gap` event, a foreign
/// publisher).
pub fn decode(data: &[u8]) -> Option<Stamp> {
    let rest = data.strip_prefix(MAGIC)?;
    let mut fields = rest.split(|&b| b == b' ');
    let seq = number(fields.next()?)?;
    let scheduled_us = number(fields.next()?)?;
    Some(Stamp { seq, scheduled_us })
}

fn number(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    digits.iter().try_fold(0u64, |value, &b| {
        b.is_ascii_digit().then(|| value * 10 + u64::from(b - b'0'))
    })
}

/// The wall clock in UNIX microseconds: publisher and subscribers share this machine's clock,
/// so one-way latency needs no synchronisation.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_padding() {
        let stamp = Stamp {
            seq: 42,
            scheduled_us: 1_700_000_000_123_456,
        };
        let text = encode(stamp, 100);
        assert_eq!(text.len(), 100);
        assert_eq!(decode(text.as_bytes()), Some(stamp));
        assert_eq!(decode(encode(stamp, 0).as_bytes()), Some(stamp));
    }

    #[test]
    fn foreign_data_is_not_a_stamp() {
        assert_eq!(decode(b"{\"channel\":\"c\",\"reason\":\"trimmed\"}"), None);
        assert_eq!(decode(b"lt 1"), None);
        assert_eq!(decode(b"lt 1x 2 "), None);
        assert_eq!(decode(b"lt 99999999999999999999 2 "), None);
    }
}
