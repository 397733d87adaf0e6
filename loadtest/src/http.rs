//! The little HTTP/1.1 a raw-socket client needs: parse a response head, then decode its body
//! (chunked, `Content-Length` or until close) incrementally, without copying.

/// Longest response head accepted.
pub const MAX_HEAD: usize = 16 * 1024;

/// The parts of a response head the tool acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The status code.
    pub status: u16,
    /// How the body is framed.
    pub framing: Framing,
    /// The server said `Connection: close` (or spoke HTTP/1.0 without keep-alive).
    pub close: bool,
    /// The `Content-Type` value, lower-cased.
    pub content_type: String,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// `Content-Length: N`.
    Length(u64),
    /// Neither: the body runs until the server closes.
    UntilClose,
}

/// Finds the end of a head in `buf`: `Ok(Some((head, consumed)))` once complete, `Ok(None)` when
/// more bytes are needed, `Err` for a malformed or oversized head.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, String> {
    let Some(end) = find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err("response head too long".into());
        }
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&buf[..end]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 response: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    let mut head = Head {
        status,
        framing: Framing::UntilClose,
        close: version == "HTTP/1.0",
        content_type: String::new(),
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim().to_ascii_lowercase();
        match name.trim().to_ascii_lowercase().as_str() {
            "transfer-encoding" if value.contains("chunked") => head.framing = Framing::Chunked,
            "content-length" if head.framing != Framing::Chunked => {
                let length = value
                    .parse()
                    .map_err(|_| format!("bad content-length {value:?}"))?;
                head.framing = Framing::Length(length);
            }
            "connection" if value.contains("close") => head.close = true,
            "connection" if value.contains("keep-alive") => head.close = false,
            "content-type" => head.content_type = value,
            _ => {}
        }
    }
    Ok(Some((head, end + 4)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Decodes a body as it arrives, handing its payload bytes on as slices of the input.
#[derive(Debug)]
pub struct BodyDecoder {
    state: State,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a chunk-size line; the value so far and whether an extension started.
    Size {
        size: u64,
        digits: u8,
        extension: bool,
    },
    /// Inside a chunk, this many bytes to go.
    Data(u64),
    /// After a chunk's data, expecting its CRLF (`true` once the CR was seen).
    DataEnd(bool),
    /// After the last chunk: trailer lines; `true` while the current line is empty so far.
    Trailer { line_empty: bool },
    /// A body with a known length, this many bytes to go.
    Length(u64),
    /// A body that runs until close.
    UntilClose,
    /// The body ended.
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`.
    pub fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Chunked => State::Size {
                size: 0,
                digits: 0,
                extension: false,
            },
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::UntilClose => State::UntilClose,
        };
        BodyDecoder { state }
    }

    /// The body is complete (the last chunk or all `Content-Length` bytes were read).
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, passing body bytes to `out`; returns how many input bytes were used
    /// (less than `input.len()` only once the body is done: the rest is the next response).
    pub fn feed(&mut self, input: &[u8], out: &mut dyn FnMut(&[u8])) -> Result<usize, String> {
        let mut at = 0;
        while at < input.len() {
            match self.state {
                State::Done => return Ok(at),
                State::UntilClose => {
                    out(&input[at..]);
                    at = input.len();
                }
                State::Length(left) | State::Data(left) => {
                    let take = left.min((input.len() - at) as u64) as usize;
                    out(&input[at..at + take]);
                    at += take;
                    let left = left - take as u64;
                    self.state = match self.state {
                        State::Length(_) if left == 0 => State::Done,
                        State::Length(_) => State::Length(left),
                        _ if left == 0 => State::DataEnd(false),
                        _ => State::Data(left),
                    };
                }
                State::DataEnd(seen_cr) => {
                    let byte = input[at];
                    at += 1;
                    self.state = match (seen_cr, byte) {
                        (false, b'\r') => State::DataEnd(true),
                        (_, b'\n') => State::Size {
                            size: 0,
                            digits: 0,
                            extension: false,
                        },
                        _ => return Err("missing CRLF after a chunk".into()),
                    };
                }
                State::Size {
                    size,
                    digits,
                    extension,
                } => {
                    let byte = input[at];
                    at += 1;
                    self.state = match byte {
                        b'\n' if digits == 0 => return Err("empty chunk size".into()),
                        b'\n' if size == 0 => State::Trailer { line_empty: true },
                        b'\n' => State::Data(size),
                        b'\r' => self.state,
                        _ if extension => self.state,
                        b';' | b' ' | b'\t' => State::Size {
                            size,
                            digits,
                            extension: true,
                        },
                        _ => {
                            let digit = (byte as char)
                                .to_digit(16)
                                .ok_or_else(|| format!("bad chunk size byte {byte:#04x}"))?;
                            if digits >= 15 {
                                return Err("chunk size too large".into());
                            }
                            State::Size {
                                size: size * 16 + u64::from(digit),
                                digits: digits + 1,
                                extension,
                            }
                        }
                    };
                }
                State::Trailer { line_empty } => {
                    let byte = input[at];
                    at += 1;
                    self.state = match byte {
                        b'\n' if line_empty => State::Done,
                        b'\n' => State::Trailer { line_empty: true },
                        b'\r' => State::Trailer { line_empty },
                        _ => State::Trailer { line_empty: false },
                    };
                }
            }
        }
        Ok(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(framing: Framing, input: &[u8], piece: usize) -> (Vec<u8>, bool, usize) {
        let mut decoder = BodyDecoder::new(framing);
        let mut body = Vec::new();
        let mut used = 0;
        for chunk in input.chunks(piece) {
            used += decoder
                .feed(chunk, &mut |bytes| body.extend_from_slice(bytes))
                .expect("valid body");
        }
        (body, decoder.is_done(), used)
    }

    #[test]
    fn head_with_chunked_body() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\nrest";
        let (head, used) = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Chunked);
        assert_eq!(head.content_type, "text/event-stream");
        assert!(!head.close);
        assert_eq!(&raw[used..], b"rest");
        assert_eq!(parse_head(&raw[..20]), Ok(None));
    }

    #[test]
    fn head_with_length_and_close() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-length: 12\r\nconnection: close\r\n\r\n";
        let (head, _) = parse_head(raw).expect("valid").expect("complete");
        assert_eq!(
            (head.status, head.framing, head.close),
            (201, Framing::Length(12), true)
        );
        assert!(parse_head(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn chunked_body_in_any_pieces() {
        let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        for piece in 1..input.len() {
            let (body, done, used) = decode(Framing::Chunked, input, piece);
            assert_eq!(body, b"hello, world");
            assert!(done);
            assert_eq!(used, input.len() - 4, "piece {piece}");
        }
    }

    #[test]
    fn length_and_until_close_bodies() {
        let (body, done, used) = decode(Framing::Length(3), b"abcdef", 2);
        assert_eq!((body.as_slice(), done, used), (&b"abc"[..], true, 3));
        let (body, done, _) = decode(Framing::UntilClose, b"abcdef", 4);
        assert_eq!((body.as_slice(), done), (&b"abcdef"[..], false));
    }

    #[test]
    fn bad_chunk_size_is_an_error() {
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        assert!(decoder.feed(b"zz\r\n", &mut |_| {}).is_err());
    }
}
