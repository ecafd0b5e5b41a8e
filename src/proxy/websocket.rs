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

use crate::proxy::body::{CaptureBudget, Reservation};
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
/// pass: the tunnel never depends on it). Messages compressed with permessage-deflate
/// (RFC 7692) are inflated when the upgrade negotiated it.
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
    /// The message being assembled.
    message: Option<Assembling>,
    /// A control frame's payload (close: code and reason), at most 125 bytes.
    control: Vec<u8>,
    /// Unmasked bytes, reused.
    scratch: Vec<u8>,
    /// permessage-deflate's decompressor for this direction (its window carries over
    /// from message to message), when the upgrade negotiated it.
    inflater: Option<Inflater>,
    broken: bool,
}

struct Assembling {
    opcode: u8,
    kept: BytesMut,
    /// Payload bytes on the wire.
    wire: u64,
    /// Sent compressed (RSV1).
    compressed: bool,
    /// Bytes inflated from it so far.
    inflated: u64,
}

/// A direction's permessage-deflate stream, inflated beside the tunnel.
struct Inflater {
    stream: flate2::Decompress,
    /// Gave up (a message inflated past the bound, or bytes that do not inflate): its
    /// messages are listed with their sizes from then on.
    failed: bool,
    /// The message ended its deflate stream with a final block (RFC 7692 7.2.3 allows
    /// it): the next message starts a stream of its own.
    ended: bool,
}

/// Each message inflates to at most this many times the capture limit (and 1 MiB at
/// least); beyond, it is no message a peer means (a bomb), and inflating stops.
const INFLATE_RATIO: u64 = 64;

impl FrameReader {
    pub fn new(direction: WsDirection, limit: usize, deflate: bool) -> Self {
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
            scratch: Vec::new(),
            inflater: deflate.then(|| Inflater {
                stream: flate2::Decompress::new(false),
                failed: false,
                ended: false,
            }),
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
        let rsv1 = h[0] & 0x40 != 0;
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
                // The buffer grows as the payload comes, not as the head announces.
                self.message = Some(Assembling {
                    opcode: self.frame_opcode,
                    kept: BytesMut::new(),
                    wire: 0,
                    compressed: rsv1,
                    inflated: 0,
                });
            }
            OP_CONTINUATION if self.message.is_none() => self.broken = true,
            OP_CONTINUATION => {}
            _ if control => self.control.clear(),
            _ => self.broken = true,
        }
        taken
    }

    fn payload(&mut self, data: &[u8]) {
        let offset = self.offset;
        self.offset += data.len() as u64;
        if self.frame_opcode >= OP_CLOSE {
            unmask(self.mask, offset, data, &mut self.scratch);
            self.control.extend_from_slice(&self.scratch);
            return;
        }
        let Some(m) = self.message.as_mut() else {
            return;
        };
        m.wire += data.len() as u64;
        match (m.compressed, self.inflater.as_mut()) {
            (false, _) => {
                // Only what is kept is unmasked.
                let room = self.limit.saturating_sub(m.kept.len());
                let take = &data[..data.len().min(room)];
                unmask(self.mask, offset, take, &mut self.scratch);
                m.kept.extend_from_slice(&self.scratch);
            }
            (true, Some(inflater)) if !inflater.failed => {
                unmask(self.mask, offset, data, &mut self.scratch);
                inflate(inflater, &self.scratch, m, self.limit);
            }
            (true, _) => {}
        }
    }

    fn end_frame(&mut self, out: &mut Vec<WebSocketMessage>) {
        self.head.clear();
        let now = traffic::timestamp(chrono::Utc::now());
        if self.frame_opcode == OP_CLOSE {
            let code = (self.control.len() >= 2)
                .then(|| u16::from_be_bytes([self.control[0], self.control[1]]));
            let reason = self.control.get(2..).unwrap_or_default();
            let mut data = BodyCapture::from_bytes(reason, reason.len() as u64);
            data.cut(self.limit);
            out.push(WebSocketMessage {
                direction: self.direction,
                time: now,
                opcode: OP_CLOSE,
                data,
                close_code: code,
                compressed: false,
            });
            return;
        }
        if self.frame_opcode >= OP_CLOSE || !self.fin {
            return;
        }
        let Some(mut m) = self.message.take() else {
            return;
        };
        let mut decoded = !m.compressed;
        if let (true, Some(inflater)) = (m.compressed, self.inflater.as_mut()) {
            if !inflater.failed && !inflater.ended {
                // The end of a message's deflate block, which the sender leaves off.
                inflate(inflater, &[0, 0, 0xff, 0xff], &mut m, self.limit);
            }
            if inflater.ended {
                inflater.stream.reset(false);
                inflater.ended = false;
            }
            decoded = !inflater.failed;
        }
        let data = if decoded {
            let size = if m.compressed { m.inflated } else { m.wire };
            let mut data = BodyCapture::new(m.kept.freeze(), size);
            if data.truncated && m.opcode == OP_TEXT {
                // A cut inside a character would make the text no text.
                let valid = match std::str::from_utf8(&data.bytes) {
                    Ok(_) => data.bytes.len(),
                    Err(e) if e.error_len().is_none() => e.valid_up_to(),
                    Err(_) => data.bytes.len(),
                };
                data.bytes.truncate(valid);
            }
            data
        } else {
            // Not inflated: its size on the wire, and no bytes (they would be noise).
            BodyCapture::new(bytes::Bytes::new(), m.wire)
        };
        out.push(WebSocketMessage {
            direction: self.direction,
            time: now,
            opcode: m.opcode,
            data,
            close_code: None,
            compressed: m.compressed,
        });
    }
}

/// `data` unmasked (as it sits at `offset` of its frame's payload) into `out`.
fn unmask(mask: Option<[u8; 4]>, offset: u64, data: &[u8], out: &mut Vec<u8>) {
    out.clear();
    match mask {
        None => out.extend_from_slice(data),
        Some(mask) => out.extend(
            data.iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[((offset + i as u64) % 4) as usize]),
        ),
    }
}

/// Inflates `input` into `m`, keeping up to `limit` bytes and counting the rest. What a
/// message may inflate to is bounded by the limit and by its own size on the wire, so
/// the work is in proportion to what the peer sent.
fn inflate(inflater: &mut Inflater, mut input: &[u8], m: &mut Assembling, limit: usize) {
    let bound = (limit as u64 * INFLATE_RATIO)
        .max(1 << 20)
        .min(m.wire.saturating_mul(INFLATE_RATIO).saturating_add(1 << 20));
    let mut out = [0u8; 8192];
    loop {
        let (before_in, before_out) = (inflater.stream.total_in(), inflater.stream.total_out());
        let status = inflater
            .stream
            .decompress(input, &mut out, flate2::FlushDecompress::Sync);
        let read = (inflater.stream.total_in() - before_in) as usize;
        let made = (inflater.stream.total_out() - before_out) as usize;
        input = &input[read..];
        m.inflated += made as u64;
        let room = limit.saturating_sub(m.kept.len());
        m.kept.extend_from_slice(&out[..made.min(room)]);
        match status {
            Err(_) => {
                inflater.failed = true;
                return;
            }
            // A final block: the rest of this message is no deflate data.
            Ok(flate2::Status::StreamEnd) => {
                inflater.ended = true;
                return;
            }
            _ if m.inflated > bound => {
                tracing::debug!(
                    bound,
                    "a WebSocket message inflates past its bound: no longer read"
                );
                inflater.failed = true;
                return;
            }
            // Done when the input is used up and the output buffer was not filled.
            Ok(_) if input.is_empty() && made < out.len() => return,
            Ok(_) if read == 0 && made == 0 => return,
            Ok(_) => {}
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

/// What each message listed costs besides its data (its time, its fields), about.
const MESSAGE_COST: usize = 64;

/// The messages read and not yet handed on, shared by both directions. What they keep is
/// charged to the capture budget for as long as the connection lives (the recording's
/// copy lives as long); when the budget is spent, messages are listed without their data,
/// and when not even that is left, not listed.
struct Collected {
    messages: Vec<WebSocketMessage>,
    listed: usize,
    unlisted: u64,
    /// Bytes of data the connection's messages may still keep.
    allowance: usize,
    held: Option<Reservation>,
}

impl Collected {
    fn add(&mut self, found: &mut Vec<WebSocketMessage>) {
        for mut m in found.drain(..) {
            m.data.cut(self.allowance);
            let listed = self.listed < MAX_MESSAGES
                && self.held.as_mut().is_some_and(|held| {
                    held.try_grow(MESSAGE_COST + m.data.bytes.len()) || {
                        m.data.cut(0);
                        held.grow(MESSAGE_COST)
                    }
                });
            if !listed {
                self.unlisted += 1;
                continue;
            }
            self.listed += 1;
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
        // TLS holds what it was given until flushed: a frame must not wait for the next.
        to.flush().await?;
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

/// How a relay reads its messages.
pub struct Reading {
    /// Bytes each message keeps, and a connection's messages together.
    pub limit: usize,
    /// The upgrade negotiated permessage-deflate.
    pub deflate: bool,
    pub budget: Arc<CaptureBudget>,
    /// The exchange, sent once complete: the 101 has gone out whole before the upgrade
    /// resolves, so it is there by then (none if the exchange was cut short).
    pub exchange: tokio::sync::oneshot::Receiver<Upgraded>,
}

/// Hands the messages read so far to the pipeline, at each tick and a last time when
/// the relay ends, however it ends (the connection closes, or shutdown drops it).
struct Handing {
    collected: Arc<Mutex<Collected>>,
    upgraded: Option<Upgraded>,
}

impl Handing {
    fn flush(&mut self) {
        let batch = self
            .collected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let (false, Some(u)) = (batch.is_empty(), self.upgraded.as_mut()) {
            u.pipeline.clone().messages(u.reached, &mut u.ex, &batch);
        }
    }
}

impl Drop for Handing {
    fn drop(&mut self) {
        self.flush();
        let unlisted = self
            .collected
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unlisted;
        if unlisted > 0 {
            tracing::info!(
                unlisted,
                "a WebSocket connection carried messages its recording does not list \
                 (beyond 10,000, or with the capture budget spent)"
            );
        }
    }
}

/// Relays an upgraded WebSocket connection until both directions end (or one fails),
/// reading its messages beside it as `reading` says.
pub async fn relay<C, U>(client: C, upstream: U, reading: Reading)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let Reading {
        limit,
        deflate,
        budget,
        exchange,
    } = reading;
    let upgraded = exchange.await.ok();
    let reads = upgraded.is_some();
    let collected = Arc::new(Mutex::new(Collected {
        messages: Vec::new(),
        listed: 0,
        unlisted: 0,
        allowance: limit,
        held: budget.try_reserve(0),
    }));
    let mut handing = Handing {
        collected: collected.clone(),
        upgraded,
    };
    let (client_read, client_write) = tokio::io::split(client);
    let (upstream_read, upstream_write) = tokio::io::split(upstream);
    let up = pump(
        client_read,
        upstream_write,
        reads.then(|| FrameReader::new(WsDirection::Send, limit, deflate)),
        collected.clone(),
    );
    let down = pump(
        upstream_read,
        client_write,
        reads.then(|| FrameReader::new(WsDirection::Receive, limit, deflate)),
        collected,
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
            _ = tick.tick() => handing.flush(),
        }
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
        frame_rsv(fin, false, opcode, payload, mask)
    }

    fn frame_rsv(
        fin: bool,
        rsv1: bool,
        opcode: u8,
        payload: &[u8],
        mask: Option<[u8; 4]>,
    ) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | (if rsv1 { 0x40 } else { 0 }) | opcode];
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
            let mut reader = FrameReader::new(WsDirection::Send, 100, false);
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
        let mut reader = FrameReader::new(WsDirection::Receive, 10, false);
        let mut out = Vec::new();
        reader.feed(&frame(true, OP_TEXT, &big, None), &mut out);
        assert_eq!((out[0].data.size, out[0].data.bytes.len()), (70_000, 10));
        // A continuation with no message before it: reading stops, nothing panics.
        reader.feed(&frame(true, OP_CONTINUATION, b"x", None), &mut out);
        reader.feed(&frame(true, OP_TEXT, b"after", None), &mut out);
        assert_eq!(out.len(), 1);
    }

    /// What a permessage-deflate sender writes: one compressor for the direction (its
    /// window carried over), each message sync-flushed with the 00 00 ff ff end left off.
    fn deflate(c: &mut flate2::Compress, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(text.len() + 64);
        c.compress_vec(text, &mut out, flate2::FlushCompress::Sync)
            .unwrap();
        assert!(out.ends_with(&[0, 0, 0xff, 0xff]));
        out.truncate(out.len() - 4);
        out
    }

    #[test]
    fn compressed_messages_are_inflated_with_the_window_carried_over() {
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let first = deflate(&mut c, br#"{"token":"abc","n":1}"#);
        // The second refers back to the first: only a carried-over window reads it.
        let second = deflate(&mut c, br#"{"token":"abc","n":2}"#);
        let mut wire = frame_rsv(true, true, OP_TEXT, &first, Some([3, 1, 4, 1]));
        // Fragmented: RSV1 on the first fragment only.
        let (a, b) = second.split_at(second.len() / 2);
        wire.extend(frame_rsv(false, true, OP_TEXT, a, Some([2, 7, 1, 8])));
        wire.extend(frame(true, OP_CONTINUATION, b, Some([1, 6, 1, 8])));
        let mut reader = FrameReader::new(WsDirection::Send, 1000, true);
        let mut out = Vec::new();
        for chunk in wire.chunks(5) {
            reader.feed(chunk, &mut out);
        }
        assert_eq!(out.len(), 2);
        assert_eq!(data_of(&out[0]), Bytes::from(r#"{"token":"abc","n":1}"#));
        assert_eq!(data_of(&out[1]), Bytes::from(r#"{"token":"abc","n":2}"#));
        assert!(out[1].compressed && out[1].data.size == 21 && !out[1].data.truncated);

        // Not negotiated (or past inflating): the size on the wire, no bytes.
        let mut reader = FrameReader::new(WsDirection::Send, 1000, false);
        let mut out = Vec::new();
        reader.feed(&frame_rsv(true, true, OP_BINARY, &first, None), &mut out);
        assert_eq!(
            (out[0].data.size, out[0].data.bytes.len()),
            (first.len() as u64, 0)
        );
        assert!(out[0].compressed);
    }

    #[test]
    fn a_bomb_is_inflated_no_further_than_its_bound() {
        let mut c = flate2::Compress::new(flate2::Compression::best(), false);
        let bomb = deflate(&mut c, &vec![b'a'; 4 << 20]);
        let mut reader = FrameReader::new(WsDirection::Receive, 1000, true);
        let mut out = Vec::new();
        reader.feed(&frame_rsv(true, true, OP_TEXT, &bomb, None), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data.bytes.len(), 0, "given up: no bytes");
        assert_eq!(out[0].data.size, bomb.len() as u64);
    }

    #[test]
    fn a_cut_text_ends_on_a_character() {
        let text = "é".repeat(10); // 20 bytes, two per character
        let mut reader = FrameReader::new(WsDirection::Receive, 5, false);
        let mut out = Vec::new();
        reader.feed(&frame(true, OP_TEXT, text.as_bytes(), None), &mut out);
        assert_eq!(out[0].data.text(), Some("éé"));
        assert!(out[0].data.truncated);
    }

    #[test]
    fn a_message_ending_in_a_final_block_leaves_the_next_readable() {
        // The first message ends its deflate stream (BFINAL), which RFC 7692 allows; the
        // next starts a stream of its own.
        let mut first = Vec::with_capacity(64);
        flate2::Compress::new(flate2::Compression::default(), false)
            .compress_vec(b"one", &mut first, flate2::FlushCompress::Finish)
            .unwrap();
        let second = deflate(
            &mut flate2::Compress::new(flate2::Compression::default(), false),
            b"two",
        );
        let mut reader = FrameReader::new(WsDirection::Receive, 100, true);
        let mut out = Vec::new();
        reader.feed(&frame_rsv(true, true, OP_TEXT, &first, None), &mut out);
        reader.feed(&frame_rsv(true, true, OP_TEXT, &second, None), &mut out);
        let texts: Vec<Bytes> = out.iter().map(data_of).collect();
        assert_eq!(texts, [Bytes::from("one"), Bytes::from("two")]);
    }
}
