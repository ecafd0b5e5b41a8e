//! An upgraded connection's tunnel, and, when it carries WebSocket and a phase captures,
//! the messages read beside it.
//!
//! The bytes go from one side to the other as they come (one buffer per direction, the
//! same as a plain copy); a [`FrameReader`] per direction looks at the bytes that passed
//! and keeps each message's payload up to the capture limit. The messages reach the
//! pipeline ([`crate::proxy::Phase::on_messages`]) in batches: every
//! [`FLUSH_EVERY`] while they come, and when the connection closes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::proxy::pipeline::{Exchange, Pipeline, Reached};
use crate::traffic::{self, BodyCapture, WebSocketMessage, WsDirection};

/// How often the messages read so far go to the pipeline while the connection is open.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// Messages listed per connection at most; those beyond are counted in the log only.
pub const MAX_MESSAGES: usize = 10_000;
/// Bytes read (and written) at a time in each direction.
const BUFFER: usize = 16 * 1024;

const OP_CONTINUATION: u8 = 0;
const OP_TEXT: u8 = 1;
const OP_BINARY: u8 = 2;
const OP_CLOSE: u8 = 8;

/// Reads RFC 6455 frames from the bytes one direction carried, in pieces of any size,
/// and assembles messages: text and binary (from their fragments) and close frames.
/// Pings and pongs are skipped. A frame it cannot read ends its reading (the bytes still
/// pass: the tunnel never depends on it).
pub struct FrameReader {
    direction: WsDirection,
    /// Payload bytes each message keeps at most.
    limit: usize,
    head: Vec<u8>,
    /// Payload bytes of the current frame still to come.
    remaining: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes of the current frame seen so far (where the mask is).
    offset: u64,
    frame_opcode: u8,
    fin: bool,
    /// The message being assembled: its opcode, the bytes kept, its size.
    message: Option<(u8, BytesMut, u64)>,
    /// A control frame's payload (close: code and reason), at most 125 bytes.
    control: Vec<u8>,
    broken: bool,
}

impl FrameReader {
    pub fn new(direction: WsDirection, limit: usize) -> Self {
        Self {
            direction,
            limit,
            head: Vec::with_capacity(14),
            remaining: 0,
            mask: None,
            offset: 0,
            frame_opcode: 0,
            fin: false,
            message: None,
            control: Vec::new(),
            broken: false,
        }
    }

    /// Reads `bytes` (what just passed), adding the messages they complete to `out`.
    pub fn feed(&mut self, mut bytes: &[u8], out: &mut Vec<WebSocketMessage>) {
        while !bytes.is_empty() && !self.broken {
            if self.remaining == 0 && !self.in_payload() {
                let taken = self.read_head(bytes);
                bytes = &bytes[taken..];
                if self.in_payload() && self.remaining == 0 {
                    self.end_frame(out);
                }
                continue;
            }
            let n = bytes
                .len()
                .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
            self.payload(&bytes[..n]);
            bytes = &bytes[n..];
            self.remaining -= n as u64;
            if self.remaining == 0 {
                self.end_frame(out);
            }
        }
    }

    /// A head has been read whole and its payload is being read.
    fn in_payload(&self) -> bool {
        self.head.len() >= 2 && self.head.len() == head_len(&self.head)
    }

    /// Takes head bytes; returns how many it took.
    fn read_head(&mut self, bytes: &[u8]) -> usize {
        let mut taken = 0;
        while taken < bytes.len() {
            if self.head.len() >= 2 && self.head.len() == head_len(&self.head) {
                break;
            }
            self.head.push(bytes[taken]);
            taken += 1;
        }
        if !self.in_payload() {
            return taken;
        }
        let h = &self.head;
        self.fin = h[0] & 0x80 != 0;
        self.frame_opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let (len, at) = match h[1] & 0x7f {
            126 => (u64::from(u16::from_be_bytes([h[2], h[3]])), 4),
            127 => (
                u64::from_be_bytes([h[2], h[3], h[4], h[5], h[6], h[7], h[8], h[9]]),
                10,
            ),
            n => (u64::from(n), 2),
        };
        self.mask = masked.then(|| [h[at], h[at + 1], h[at + 2], h[at + 3]]);
        self.remaining = len;
        self.offset = 0;
        let control = self.frame_opcode >= OP_CLOSE;
        match self.frame_opcode {
            _ if control && (len > 125 || !self.fin) => self.broken = true,
            OP_TEXT | OP_BINARY => {
                let capacity = usize::try_from(len).unwrap_or(usize::MAX).min(self.limit);
                self.message = Some((self.frame_opcode, BytesMut::with_capacity(capacity), 0));
            }
            OP_CONTINUATION if self.message.is_none() => self.broken = true,
            OP_CONTINUATION => {}
            _ if control => self.control.clear(),
            _ => self.broken = true,
        }
        taken
    }

    fn payload(&mut self, data: &[u8]) {
        let unmasked: std::borrow::Cow<'_, [u8]> = match self.mask {
            None => data.into(),
            Some(mask) => data
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[((self.offset + i as u64) % 4) as usize])
                .collect::<Vec<u8>>()
                .into(),
        };
        self.offset += data.len() as u64;
        if self.frame_opcode >= OP_CLOSE {
            self.control.extend_from_slice(&unmasked);
        } else if let Some((_, kept, size)) = self.message.as_mut() {
            *size += data.len() as u64;
            let room = self.limit.saturating_sub(kept.len());
            kept.extend_from_slice(&unmasked[..unmasked.len().min(room)]);
        }
    }

    fn end_frame(&mut self, out: &mut Vec<WebSocketMessage>) {
        self.head.clear();
        let now = traffic::timestamp(chrono::Utc::now());
        if self.frame_opcode == OP_CLOSE {
            let code = (self.control.len() >= 2)
                .then(|| u16::from_be_bytes([self.control[0], self.control[1]]));
            let reason = self.control.get(2..).unwrap_or_default();
            let kept = &reason[..reason.len().min(self.limit)];
            out.push(WebSocketMessage {
                direction: self.direction,
                time: now,
                opcode: OP_CLOSE,
                data: BodyCapture::from_bytes(kept, reason.len() as u64),
                close_code: code,
            });
        } else if self.frame_opcode < OP_CLOSE && self.fin {
            if let Some((opcode, kept, size)) = self.message.take() {
                out.push(WebSocketMessage {
                    direction: self.direction,
                    time: now,
                    opcode,
                    data: BodyCapture::new(kept.freeze(), size),
                    close_code: None,
                });
            }
        }
    }
}

/// How long a frame head is, from its first two bytes (2 until they are known).
fn head_len(head: &[u8]) -> usize {
    if head.len() < 2 {
        return 2;
    }
    let ext = match head[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if head[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// The messages read and not yet handed on, shared by both directions.
#[derive(Default)]
struct Collected {
    messages: Vec<WebSocketMessage>,
    listed: usize,
    unlisted: u64,
    /// Bytes of data the connection's messages may still keep.
    allowance: usize,
}

impl Collected {
    fn add(&mut self, found: &mut Vec<WebSocketMessage>) {
        for mut m in found.drain(..) {
            if self.listed >= MAX_MESSAGES {
                self.unlisted += 1;
                continue;
            }
            self.listed += 1;
            m.data.cut(self.allowance);
            self.allowance -= m.data.bytes.len();
            self.messages.push(m);
        }
    }

    /// The messages read since the last take.
    fn take(&mut self) -> Vec<WebSocketMessage> {
        std::mem::take(&mut self.messages)
    }
}

/// Copies one direction until its reader ends, then closes the writing side; shows what
/// passed to `frames` when there is one.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    mut frames: Option<FrameReader>,
    collected: Arc<Mutex<Collected>>,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut found = Vec::new();
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            return to.shutdown().await;
        }
        to.write_all(&buf[..n]).await?;
        if let Some(reader) = frames.as_mut() {
            reader.feed(&buf[..n], &mut found);
            if !found.is_empty() {
                collected
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .add(&mut found);
            }
        }
    }
}

/// What the pipeline needs to hear of an upgraded exchange's messages: the exchange,
/// completed, and the phases that saw it.
pub struct Upgraded {
    pub pipeline: Arc<Pipeline>,
    pub reached: Reached,
    pub ex: Exchange,
}

/// Relays an upgraded WebSocket connection until both directions end (or one fails),
/// reading its messages beside it: each keeps `limit` bytes at most, and the
/// connection's messages together keep `limit` bytes of data at most (the rest are
/// listed with their sizes).
pub async fn relay<C, U>(client: C, upstream: U, limit: usize, mut upgraded: Option<Upgraded>)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let collected = Arc::new(Mutex::new(Collected {
        allowance: limit,
        ..Collected::default()
    }));
    let reading = upgraded.is_some();
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = pump(
        client_read,
        upstream_write,
        reading.then(|| FrameReader::new(WsDirection::Send, limit)),
        collected.clone(),
    );
    let down = pump(
        upstream_read,
        client_write,
        reading.then(|| FrameReader::new(WsDirection::Receive, limit)),
        collected.clone(),
    );
    let both = async { tokio::try_join!(up, down) };
    tokio::pin!(both);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + FLUSH_EVERY, FLUSH_EVERY);
    loop {
        tokio::select! {
            ended = &mut both => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "upgraded connection ended");
                }
                break;
            }
            _ = tick.tick() => flush(&collected, upgraded.as_mut()),
        }
    }
    flush(&collected, upgraded.as_mut());
    let unlisted = collected.lock().unwrap_or_else(|p| p.into_inner()).unlisted;
    if unlisted > 0 {
        tracing::info!(
            unlisted,
            listed = MAX_MESSAGES,
            "a WebSocket connection carried more messages than a recording lists"
        );
    }
}

fn flush(collected: &Mutex<Collected>, upgraded: Option<&mut Upgraded>) {
    let batch = collected.lock().unwrap_or_else(|p| p.into_inner()).take();
    if let (false, Some(u)) = (batch.is_empty(), upgraded) {
        u.pipeline.clone().messages(u.reached, &mut u.ex, &batch);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// The bytes kept of a message.
    fn data_of(m: &WebSocketMessage) -> Bytes {
        m.data.bytes.clone()
    }

    /// A frame as a client (masked) or a server (not) writes it.
    fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        let m = if mask.is_some() { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(m | n as u8),
            n if n <= 0xffff => {
                out.push(m | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(m | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        match mask {
            None => out.extend_from_slice(payload),
            Some(k) => {
                out.extend_from_slice(&k);
                out.extend(payload.iter().enumerate().map(|(i, b)| b ^ k[i % 4]));
            }
        }
        out
    }

    #[test]
    fn messages_are_read_whatever_the_pieces_the_bytes_come_in() {
        let mut wire = frame(true, OP_TEXT, b"hello", Some([1, 2, 3, 4]));
        wire.extend(frame(false, OP_BINARY, &[0, 1, 2], Some([9, 9, 9, 9])));
        wire.extend(frame(true, 9, b"ping", Some([5, 5, 5, 5]))); // a ping between fragments
        wire.extend(frame(true, OP_CONTINUATION, &[3; 300], Some([7, 0, 7, 0])));
        let mut close = 1000u16.to_be_bytes().to_vec();
        close.extend_from_slice(b"bye");
        wire.extend(frame(true, OP_CLOSE, &close, Some([1, 1, 1, 1])));
        for piece in [1, 2, 3, 7, 64, wire.len()] {
            let mut reader = FrameReader::new(WsDirection::Send, 100);
            let mut out = Vec::new();
            for chunk in wire.chunks(piece) {
                reader.feed(chunk, &mut out);
            }
            assert_eq!(out.len(), 3, "pieces of {piece}");
            assert_eq!(
                (out[0].opcode, data_of(&out[0])),
                (OP_TEXT, Bytes::from("hello"))
            );
            assert_eq!(out[1].opcode, OP_BINARY);
            assert_eq!(out[1].data.size, 303);
            assert!(out[1].data.truncated, "kept the first 100 bytes only");
            assert_eq!(&data_of(&out[1])[..4], &[0, 1, 2, 3]);
            assert_eq!((out[2].opcode, out[2].close_code), (OP_CLOSE, Some(1000)));
            assert_eq!(data_of(&out[2]), Bytes::from("bye"));
        }
    }

    #[test]
    fn a_long_unmasked_frame_and_a_broken_stream() {
        let big = vec![b'a'; 70_000];
        let mut reader = FrameReader::new(WsDirection::Receive, 10);
        let mut out = Vec::new();
        reader.feed(&frame(true, OP_TEXT, &big, None), &mut out);
        assert_eq!((out[0].data.size, out[0].data.bytes.len()), (70_000, 10));
        // A continuation with no message before it: reading stops, nothing panics.
        reader.feed(&frame(true, OP_CONTINUATION, b"x", None), &mut out);
        reader.feed(&frame(true, OP_TEXT, b"after", None), &mut out);
        assert_eq!(out.len(), 1);
    }
}
