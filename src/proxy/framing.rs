//! How a client framed its HTTP/1 requests on the wire, seen before hyper parses them.
//!
//! hyper drops the `Content-Length` of a request that also has `Transfer-Encoding` and
//! frames it by the encoding (RFC 9112 §6.3), so the service never learns the request
//! had both: the framing request smuggling uses, which the proxy refuses (400). The
//! scanner follows the connection's messages (heads, then bodies by length or by chunks)
//! and marks the requests that declared both.
//!
//! It follows hyper's framing strictly (CRLF-terminated chunk and trailer lines, as
//! hyper's decoder wants them); where it cannot follow (a head it cannot parse, a bare
//! LF, HTTP/2's preface, the bytes of an upgraded connection) it stops, and the requests
//! after are served as hyper frames them (which, for both framings, is unambiguous to the
//! upstream, and closes the connection after). An `Upgrade` header does not stop it: only
//! a 101 hands the connection over, and after one the service is never called again.

use std::sync::atomic::{AtomicU64, Ordering};

/// Headers a head may have, as hyper allows.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size line followed: hyper takes 16 KiB of chunk extensions.
const MAX_CHUNK_LINE: usize = 16 * 1024 + 64;

/// What the scanner found, read by the service of the same connection.
#[derive(Debug, Default)]
pub struct WireMarks {
    /// 1 + the index of the first request that had both `Content-Length` and
    /// `Transfer-Encoding` (0: none). hyper closes the connection after that request,
    /// so there is never a second.
    ambiguous: AtomicU64,
    /// Requests the service has taken.
    served: AtomicU64,
}

impl WireMarks {
    /// For the service, once per request in order: whether this request declared both
    /// framings.
    pub fn next_is_ambiguous(&self) -> bool {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        self.ambiguous.load(Ordering::Acquire) == index + 1
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    ChunkLine,
    ChunkData(u64),
    /// The CRLF after a chunk's data: how many of its two bytes are still to come.
    ChunkEnd(u8),
    Trailers,
    /// Not following any more.
    Off,
}

/// Follows the bytes a client sent on one connection.
pub struct Scanner {
    state: State,
    /// The head (or line) so far.
    buf: Vec<u8>,
    max_head: usize,
    heads: u64,
    marks: std::sync::Arc<WireMarks>,
}

impl Scanner {
    pub fn new(max_head: usize, marks: std::sync::Arc<WireMarks>) -> Self {
        Self {
            state: State::Head,
            buf: Vec::new(),
            max_head,
            heads: 0,
            marks,
        }
    }

    /// Takes the next bytes the client sent.
    pub fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() && self.state != State::Off {
            let used = self.step(data);
            data = &data[used..];
        }
    }

    fn off(&mut self) {
        self.state = State::Off;
        self.buf = Vec::new();
    }

    /// Consumes a prefix of `data` (at least a byte, unless the scanner stops).
    fn step(&mut self, data: &[u8]) -> usize {
        match self.state {
            State::Off => data.len(),
            State::Head => self.head(data),
            State::Body(n) => {
                let take = skip(n, data);
                self.state = if n == take as u64 {
                    State::Head
                } else {
                    State::Body(n - take as u64)
                };
                take
            }
            State::ChunkData(n) => {
                let take = skip(n, data);
                self.state = if n == take as u64 {
                    State::ChunkEnd(2)
                } else {
                    State::ChunkData(n - take as u64)
                };
                take
            }
            State::ChunkEnd(k) => {
                let expected: &[u8] = if k == 2 { b"\r\n" } else { b"\n" };
                let take = expected.len().min(data.len());
                if data[..take] != expected[..take] {
                    self.off();
                    return data.len();
                }
                self.state = if take == expected.len() {
                    State::ChunkLine
                } else {
                    State::ChunkEnd(1)
                };
                take
            }
            State::ChunkLine | State::Trailers => self.line(data),
        }
    }

    fn head(&mut self, data: &[u8]) -> usize {
        let before = self.buf.len();
        // A head longer than hyper takes is refused by hyper; nothing more to follow.
        let room = (self.max_head + 4).saturating_sub(before);
        if room == 0 {
            self.off();
            return data.len();
        }
        let take = data.len().min(room);
        self.buf.extend_from_slice(&data[..take]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&self.buf) {
            Ok(httparse::Status::Partial) => take,
            Ok(httparse::Status::Complete(len)) => {
                let next = self.framing(&req);
                self.heads += 1;
                // A large head's buffer is not kept for the connection's life.
                if self.buf.capacity() > 4096 {
                    self.buf = Vec::new();
                } else {
                    self.buf.clear();
                }
                self.state = next;
                len - before
            }
            Err(_) => {
                self.off();
                data.len()
            }
        }
    }

    /// What follows a request's head; marks it when it declared both framings.
    fn framing(&self, req: &httparse::Request<'_, '_>) -> State {
        let (mut length, mut encoding) = (None, None);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                length = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                encoding = Some(h.value);
            }
        }
        if length.is_some() && encoding.is_some() {
            // Only the first counts: hyper closes the connection after it.
            let _ = self.marks.ambiguous.compare_exchange(
                0,
                self.heads + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
        match (encoding, length) {
            (Some(te), _) => {
                let last = te.rsplit(|&b| b == b',').next().unwrap_or_default();
                if last.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    State::ChunkLine
                } else {
                    State::Off
                }
            }
            (None, Some(cl)) => match std::str::from_utf8(cl)
                .ok()
                .and_then(|s| s.trim().parse().ok())
            {
                Some(0) => State::Head,
                Some(n) => State::Body(n),
                None => State::Off,
            },
            (None, None) => State::Head,
        }
    }

    /// A chunk-size line or a trailer line, up to its CRLF (a bare LF stops the scanner:
    /// hyper's decoder would not read the lines the same way).
    fn line(&mut self, data: &[u8]) -> usize {
        let max = match self.state {
            State::ChunkLine => MAX_CHUNK_LINE,
            _ => self.max_head + 4,
        };
        let Some(end) = data.iter().position(|&b| b == b'\n') else {
            if self.buf.len() + data.len() > max {
                self.off();
            } else {
                self.buf.extend_from_slice(data);
            }
            return data.len();
        };
        self.buf.extend_from_slice(&data[..end]);
        let line = std::mem::take(&mut self.buf);
        let Some(line) = line.strip_suffix(b"\r") else {
            self.off();
            return data.len();
        };
        self.state = match self.state {
            State::ChunkLine => {
                let size = line.split(|&b| b == b';').next().unwrap_or_default();
                match std::str::from_utf8(size.trim_ascii())
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                {
                    Some(0) => State::Trailers,
                    Some(n) => State::ChunkData(n),
                    None => State::Off,
                }
            }
            // An empty line ends the trailers, and the message.
            _ if line.is_empty() => State::Head,
            _ => State::Trailers,
        };
        if self.state == State::Off {
            self.buf = Vec::new();
        }
        end + 1
    }
}

/// How many of `data` a skip of `n` more bytes takes.
fn skip(n: u64, data: &[u8]) -> usize {
    usize::try_from(n).map_or(data.len(), |n| n.min(data.len()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Feeds the bytes in pieces of `piece` and returns which requests were marked.
    fn marked(wire: &[u8], requests: usize, piece: usize) -> Vec<bool> {
        let marks = Arc::new(WireMarks::default());
        let mut s = Scanner::new(16 * 1024, marks.clone());
        for chunk in wire.chunks(piece) {
            s.feed(chunk);
        }
        (0..requests).map(|_| marks.next_is_ambiguous()).collect()
    }

    #[test]
    fn the_request_with_both_framings_is_marked_whatever_their_order() {
        let wire = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
            POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
            POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n\
            POST /d HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n";
        for piece in [1, 2, 7, wire.len()] {
            assert_eq!(
                marked(wire, 4, piece),
                [false, false, false, true],
                "pieces of {piece}"
            );
        }
        let cl_first =
            b"POST /e HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(marked(cl_first, 1, 3), [true]);
    }

    #[test]
    fn bodies_that_look_like_requests_are_skipped() {
        let inner = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut wire = format!(
            "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
            inner.len()
        )
        .into_bytes();
        wire.extend_from_slice(inner);
        wire.extend_from_slice(b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        wire.extend_from_slice(format!("{:x}\r\n", inner.len()).as_bytes());
        wire.extend_from_slice(inner);
        wire.extend_from_slice(b"\r\n0\r\n\r\nGET /c HTTP/1.1\r\n\r\n");
        assert_eq!(marked(&wire, 3, 5), [false, false, false]);
    }

    #[test]
    fn an_upgrade_answered_without_101_is_followed_on() {
        let wire = b"GET / HTTP/1.1\r\nUpgrade: foo\r\nConnection: upgrade\r\n\r\n\
            CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n\
            POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(marked(wire, 3, 4), [false, false, true]);
    }

    #[test]
    fn what_it_cannot_follow_stops_it() {
        // Trailers ended by a bare LF: hyper would read what follows as trailers.
        let bare = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\n\n\
            GET /h HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(marked(bare, 2, 3), [false, false]);
        // A chunk's data not followed by CRLF.
        let unended = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n0\r\n\r\n\
            GET /h HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(marked(unended, 2, 3), [false, false]);
        // HTTP/2's preface is no HTTP/1 head.
        assert_eq!(marked(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 1, 4), [false]);
        // Garbage.
        assert_eq!(marked(&[0xff; 100], 1, 10), [false]);
    }
}
