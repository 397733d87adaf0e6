//! Event ids and resume cursors: `EPOCH-SEQ` for one channel, such positions joined by `.` for a
//! connection reading several channels, and `earliest` for all retained history.

use std::fmt;

use bytes::{BufMut, BytesMut};

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const EPOCH_LEN: usize = 6;
const EPOCH_SPACE: u64 = 62u64.pow(EPOCH_LEN as u32);
/// Longest cursor accepted; longer ones are treated as invalid, not parsed.
pub const MAX_CURSOR_LEN: usize = 4096;
/// The cursor that asks for all retained history.
pub const EARLIEST: &str = "earliest";

/// A channel's history generation: new whenever the history it numbers is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Epoch(u64);

impl Epoch {
    pub fn random() -> Epoch {
        Epoch(rand::random::<u64>() % EPOCH_SPACE)
    }

    pub fn from_raw(raw: u64) -> Epoch {
        Epoch(raw % EPOCH_SPACE)
    }

    fn write_to(self, buf: &mut BytesMut) {
        let mut digits = [0u8; EPOCH_LEN];
        let mut n = self.0;
        for digit in digits.iter_mut().rev() {
            *digit = ALPHABET[(n % 62) as usize];
            n /= 62;
        }
        buf.put_slice(&digits);
    }

    pub fn parse(text: &str) -> Option<Epoch> {
        if text.len() != EPOCH_LEN {
            return None;
        }
        text.bytes()
            .try_fold(0u64, |acc, b| {
                let digit = ALPHABET.iter().position(|&a| a == b)?;
                Some(acc * 62 + digit as u64)
            })
            .map(Epoch)
    }
}

impl fmt::Display for Epoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = BytesMut::with_capacity(EPOCH_LEN);
        self.write_to(&mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// A place in one channel: the event `seq` of `epoch` was the last one seen (`seq` 0: none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub epoch: Epoch,
    pub seq: u64,
}

impl Position {
    pub fn write_to(self, buf: &mut BytesMut) {
        self.epoch.write_to(buf);
        buf.put_u8(b'-');
        buf.put_slice(itoa::Buffer::new().format(self.seq).as_bytes());
    }

    fn parse(text: &str) -> Option<Position> {
        let (epoch, seq) = text.split_once('-')?;
        if seq.is_empty() || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(Position {
            epoch: Epoch::parse(epoch)?,
            seq: seq.parse().ok()?,
        })
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = BytesMut::with_capacity(24);
        self.write_to(&mut buf);
        f.write_str(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

/// Writes the id of a connection at `positions`, one per channel in the connection's order.
pub fn write_positions(buf: &mut BytesMut, positions: impl IntoIterator<Item = Position>) {
    for (i, position) in positions.into_iter().enumerate() {
        if i > 0 {
            buf.put_u8(b'.');
        }
        position.write_to(buf);
    }
}

/// Where a subscriber asks to resume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    /// All retained history.
    Earliest,
    /// After these positions, one per channel of the connection, in the connection's order.
    After(Vec<Position>),
}

/// Why a cursor cannot be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor is not a valid event id")]
    Malformed,
    #[error("cursor names {found} channels but the connection reads {expected}")]
    WrongArity { found: usize, expected: usize },
}

impl Cursor {
    /// Parses `text` for a connection reading `channels` channels.
    pub fn parse(text: &str, channels: usize) -> Result<Cursor, CursorError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case(EARLIEST) {
            return Ok(Cursor::Earliest);
        }
        if text.len() > MAX_CURSOR_LEN {
            return Err(CursorError::Malformed);
        }
        let positions = text
            .split('.')
            .map(Position::parse)
            .collect::<Option<Vec<_>>>()
            .ok_or(CursorError::Malformed)?;
        if positions.len() != channels {
            return Err(CursorError::WrongArity {
                found: positions.len(),
                expected: channels,
            });
        }
        Ok(Cursor::After(positions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(positions: &[Position]) -> String {
        let mut buf = BytesMut::new();
        write_positions(&mut buf, positions.iter().copied());
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn round_trips_single_and_composite() {
        let a = Position {
            epoch: Epoch::random(),
            seq: 42,
        };
        let b = Position {
            epoch: Epoch::from_raw(EPOCH_SPACE - 1),
            seq: u64::MAX,
        };
        assert_eq!(Cursor::parse(&text(&[a]), 1), Ok(Cursor::After(vec![a])));
        assert_eq!(
            Cursor::parse(&text(&[a, b]), 2),
            Ok(Cursor::After(vec![a, b]))
        );
        assert_eq!(text(&[b]), "zzzzzz-18446744073709551615");
        assert!(text(&[a]).len() < 32);
    }

    #[test]
    fn earliest_is_recognised() {
        assert_eq!(Cursor::parse("earliest", 3), Ok(Cursor::Earliest));
        assert_eq!(Cursor::parse(" EARLIEST ", 1), Ok(Cursor::Earliest));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "-",
            "abc",
            "000000-",
            "000000--1",
            "000000-+1",
            "00000-1",
            "0000000-1",
            "00000!-1",
            "000000-18446744073709551616",
            "000000-1.",
            "000000-1..000000-2",
        ] {
            assert!(Cursor::parse(bad, 1).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            Cursor::parse("000000-1.000000-2", 1),
            Err(CursorError::WrongArity {
                found: 2,
                expected: 1
            })
        );
        assert!(Cursor::parse(&"0".repeat(MAX_CURSOR_LEN + 1), 1).is_err());
    }
}
