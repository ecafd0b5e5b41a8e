//! The spool: the in-process feed's messages on disk, so that a consumer that falls
//! behind, stops, or dies with the process reads them later instead of losing them.
//!
//! Segment files `spool/<n>.seg` hold frames: `len u32 | crc32 u32 | seq u64 | payload`
//! (little-endian; the CRC covers `seq` and the payload, the message's JSON as the feed's
//! other backends carry it). Every byte of a frame is handed to the kernel by one `write`
//! before the exchange's last byte goes to its client, so `kill -9` loses nothing that
//! was answered; `fsync` says when it is on the platter as well. Each durable consumer
//! acknowledges a [`Cursor`] (`spool/cursors/<name>`) once what it read is durable where
//! it put it; segments every live consumer is past are deleted. The total size is
//! bounded: beyond it a frame is refused and the caller counts it.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::traffic::TrafficMessage;

/// Bytes of a frame's head: length, CRC, sequence number.
const HEAD: usize = 16;

/// The most a frame made whole in the writer's buffer holds; larger bodies are written
/// from where they are.
const BUF_KEPT: usize = 256 << 10;

/// A message whose bodies hold more than this is written with them raw ([`RAW_FORMAT`]).
const RAW_BODIES_FROM: usize = 512;

/// The first byte of a payload written as a JSON head and raw bodies (a JSON payload
/// begins with `{`).
const RAW_FORMAT: u8 = 2;

fn body_bytes(msg: &TrafficMessage) -> usize {
    msg.request.body.as_ref().map_or(0, |b| b.bytes.len())
        + msg
            .response
            .as_ref()
            .and_then(|r| r.body.as_ref())
            .map_or(0, |b| b.bytes.len())
}

fn frame_head(len: u32, crc: u32, seq: u64) -> [u8; HEAD] {
    let mut head = [0u8; HEAD];
    head[0..4].copy_from_slice(&len.to_le_bytes());
    head[4..8].copy_from_slice(&crc.to_le_bytes());
    head[8..16].copy_from_slice(&seq.to_le_bytes());
    head
}

/// The largest payload a frame may declare (a reader refuses more as corrupt).
const MAX_FRAME: u32 = 1 << 30;

/// When the spool's writes reach the disk itself (not only the kernel's cache).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    /// When the kernel writes back: survives the process dying, not the machine.
    Never,
    /// Every [`BATCH_INTERVAL`], by a thread of its own: the machine dying loses at most
    /// that much.
    #[default]
    Batch,
    /// After every frame, on the proxy path: nothing acknowledged is lost, at the disk's
    /// latency per exchange.
    Always,
}

/// What a full spool does with a new exchange.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnFull {
    /// Takes it; its messages are lost, counted.
    #[default]
    Drop,
    /// Holds it until the recorder has made room: the client waits instead.
    Wait,
}

/// How often `fsync: batch` syncs.
pub const BATCH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(200);

/// What the spool is told at startup.
#[derive(Debug, Clone, PartialEq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    /// Bytes all segments may hold together.
    pub max_bytes: u64,
    /// Bytes after which a segment is closed and the next begun.
    pub segment_bytes: u64,
    pub fsync: Fsync,
    pub on_full: OnFull,
}

impl SpoolConfig {
    pub const DEFAULT_MAX_BYTES: u64 = 1 << 30;
    pub const DEFAULT_SEGMENT_BYTES: u64 = 16 << 20;

    pub fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            max_bytes: Self::DEFAULT_MAX_BYTES,
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            fsync: Fsync::default(),
            on_full: OnFull::default(),
        }
    }
}

/// A place in the spool: the segment and the byte offset in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// How far a consumer got: the next frame to read (`pos`) and the sequence number of the
/// next message it wants (`seq`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    pub pos: Pos,
    pub seq: u64,
}

/// Why a frame was not appended.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the spool holds its bound of {max} bytes")]
    Full { max: u64 },
    #[error("cannot write to the spool: {0}")]
    Io(#[from] io::Error),
    #[error("cannot encode the message: {0}")]
    Encode(#[from] serde_json::Error),
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:020}.seg"))
}

fn cursor_dir(dir: &Path) -> PathBuf {
    dir.join("cursors")
}

/// The segments in `dir`, by number, with their sizes.
fn list_segments(dir: &Path) -> io::Result<BTreeMap<u64, u64>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(n) = name
            .to_str()
            .and_then(|s| s.strip_suffix(".seg"))
            .and_then(|s| s.parse::<u64>().ok())
        else {
            continue;
        };
        out.insert(n, entry.metadata()?.len());
    }
    Ok(out)
}

/// A segment to write at offsets (the writer keeps its length).
fn open_segment(path: &Path) -> io::Result<File> {
    // Never truncated: an existing segment is read through and cut at its last whole
    // frame by `Writer::open`.
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .read(true)
        .mode(0o600)
        .open(path)
}

/// A frame read back.
pub struct Frame {
    pub seq: u64,
    /// Where the next frame begins.
    pub end: Pos,
    pub payload: Vec<u8>,
}

/// What reading at a position found.
pub enum Read {
    Frame(Frame),
    /// Nothing complete there (yet).
    End,
    /// The bytes there are not a frame: the rest of that segment cannot be read.
    Corrupt(String),
}

/// Reads the frame at `offset` of `file`.
fn read_frame(file: &File, segment: u64, offset: u64) -> io::Result<Read> {
    let mut head = [0u8; HEAD];
    match file.read_exact_at(&mut head, offset) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Read::End),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(head[0..4].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(head[4..8].try_into().unwrap_or_default());
    let seq = u64::from_le_bytes(head[8..16].try_into().unwrap_or_default());
    if len > MAX_FRAME {
        return Ok(Read::Corrupt(format!("a frame of {len} bytes at {offset}")));
    }
    let mut payload = vec![0u8; len as usize];
    match file.read_exact_at(&mut payload, offset + HEAD as u64) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Read::End),
        Err(e) => return Err(e),
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&head[8..16]);
    hasher.update(&payload);
    if hasher.finalize() != crc {
        return Ok(Read::Corrupt(format!("a bad checksum at {offset}")));
    }
    Ok(Read::Frame(Frame {
        seq,
        end: Pos {
            segment,
            offset: offset + HEAD as u64 + u64::from(len),
        },
        payload,
    }))
}

/// The appending side. Its owner serializes calls (the bus holds it under its lock, so
/// that frames are in sequence order).
pub struct Writer {
    config: SpoolConfig,
    file: File,
    segment: u64,
    len: u64,
    /// Every segment on disk with its size, the one being written included.
    segments: BTreeMap<u64, u64>,
    total: u64,
    buf: Vec<u8>,
    /// Written since the last sync.
    dirty: bool,
}

/// What [`Writer::open`] found.
pub struct Opened {
    pub writer: Writer,
    /// The sequence number after the last frame on disk (0 for a new spool).
    pub next_seq: u64,
    /// The latest start of a transaction among the last frames written: a recording
    /// that a crash cut off ran at least until then.
    pub last_started: Option<DateTime<Utc>>,
}

/// What reading a segment through found.
#[derive(Default)]
struct Scan {
    /// Where its last whole frame ends.
    end: u64,
    last_seq: Option<u64>,
    last_started: Option<DateTime<Utc>>,
    /// Why it ends before the file does, if it does.
    torn: Option<String>,
}

fn scan(file: &File, segment: u64) -> io::Result<Scan> {
    let mut out = Scan::default();
    loop {
        match read_frame(file, segment, out.end)? {
            Read::Frame(f) => {
                out.last_seq = Some(f.seq);
                out.end = f.end.offset;
                let started = decode(f.payload).ok().and_then(|m| m.started_at());
                out.last_started = out.last_started.max(started);
            }
            Read::End => return Ok(out),
            Read::Corrupt(why) => {
                out.torn = Some(why);
                return Ok(out);
            }
        }
    }
}

impl Writer {
    /// Opens (making it, owner-only) the spool directory; the last segment is read
    /// through, and what follows its last whole frame (a write cut short when the machine
    /// went down) is cut off.
    pub fn open(mut config: SpoolConfig) -> io::Result<Opened> {
        use std::os::unix::fs::DirBuilderExt;
        // Room is made a segment at a time: a bound of at least 16 segments frees it in
        // steps small enough for `nearly_full` to clear.
        config.segment_bytes = config.segment_bytes.min(config.max_bytes / 16).max(1);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(cursor_dir(&config.dir))?;
        let mut segments = list_segments(&config.dir)?;
        let segment = segments.keys().next_back().copied().unwrap_or(1);
        let path = segment_path(&config.dir, segment);
        let file = open_segment(&path)?;
        let mut found = scan(&file, segment)?;
        if found.end != file.metadata()?.len() {
            tracing::warn!(segment = %path.display(), why = ?found.torn, "the spool's last segment ends in a torn write; cutting it off there");
            file.set_len(found.end)?;
            file.sync_all()?;
        }
        let end = found.end;
        if found.last_seq.is_none() {
            // An empty last segment: the one before it was written last.
            if let Some((&n, _)) = segments.range(..segment).next_back() {
                found = scan(&File::open(segment_path(&config.dir, n))?, n)?;
            }
        }
        segments.insert(segment, end);
        let total = segments.values().sum();
        // Sequence numbers count every message published, most never spooled: a consumer
        // may have acknowledged past the last frame. Numbering goes on after the furthest
        // of them, so that no new message looks read already.
        let acknowledged = std::fs::read_dir(cursor_dir(&config.dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(str::to_owned))
            .filter(|name| !name.starts_with('.'))
            .filter_map(|name| load_cursor(&config.dir, &name))
            .map(|c| c.seq)
            .max()
            .unwrap_or(0);
        let next_seq = found.last_seq.map_or(0, |s| s + 1).max(acknowledged);
        Ok(Opened {
            writer: Self {
                config,
                file,
                segment,
                len: end,
                segments,
                total,
                buf: Vec::with_capacity(4096),
                dirty: false,
            },
            next_seq,
            last_started: found.last_started,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    pub fn fsync(&self) -> Fsync {
        self.config.fsync
    }

    pub fn on_full(&self) -> OnFull {
        self.config.on_full
    }

    /// Whether a new exchange should wait (`on_full: wait`): the spool is within an
    /// eighth of its bound, the room left for the exchanges already in flight.
    pub fn nearly_full(&self) -> bool {
        self.total > self.config.max_bytes - self.config.max_bytes / 8
    }

    /// Where the next frame will be written.
    pub fn head(&self) -> Pos {
        Pos {
            segment: self.segment,
            offset: self.len,
        }
    }

    /// Bytes on disk, all segments.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Appends one message as frame `seq`; returns where the next frame begins.
    pub fn append(&mut self, seq: u64, msg: &TrafficMessage) -> Result<Pos, Refused> {
        let written = if body_bytes(msg) > RAW_BODIES_FROM {
            self.raw(seq, msg)
        } else {
            self.json(seq, msg)
        };
        let frame = match written {
            Ok(frame) => frame,
            Err(e) => {
                // What part of the frame went in is cut off again, so the segment stays
                // readable; if even that fails, a reader stops at the torn frame.
                let _ = self.file.set_len(self.len);
                return Err(e);
            }
        };
        if self.config.fsync == Fsync::Always {
            self.file.sync_data()?;
        } else {
            self.dirty = true;
        }
        self.len += frame;
        self.total += frame;
        self.segments.insert(self.segment, self.len);
        Ok(self.head())
    }

    /// A message with little or no body: its JSON, made whole in the buffer and written
    /// with one call.
    fn json(&mut self, seq: u64, msg: &TrafficMessage) -> Result<u64, Refused> {
        if self.buf.capacity() > BUF_KEPT {
            self.buf = Vec::with_capacity(4096);
        }
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; HEAD]);
        serde_json::to_writer(&mut self.buf, msg)?;
        let len = self.buf.len() - HEAD;
        let frame = (HEAD + len) as u64;
        self.make_room(frame)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq.to_le_bytes());
        hasher.update(&self.buf[HEAD..]);
        self.buf[0..HEAD].copy_from_slice(&frame_head(len as u32, hasher.finalize(), seq));
        self.file.write_all_at(&self.buf, self.len)?;
        Ok(frame)
    }

    /// A message with bodies: its JSON without them, then each body's bytes as they were
    /// captured (no base64, no copy into a buffer when they are large).
    fn raw(&mut self, seq: u64, msg: &TrafficMessage) -> Result<u64, Refused> {
        self.buf.clear();
        self.buf.extend_from_slice(&[0u8; HEAD]);
        self.buf.push(RAW_FORMAT);
        self.buf.extend_from_slice(&[0u8; 4]);
        serde_json::to_writer(&mut self.buf, &msg.without_bodies())?;
        let head_len = (self.buf.len() - HEAD - 5) as u32;
        self.buf[HEAD + 1..HEAD + 5].copy_from_slice(&head_len.to_le_bytes());
        let bodies = [
            msg.request.body.as_ref(),
            msg.response.as_ref().and_then(|r| r.body.as_ref()),
        ];
        // Each body: present, size, truncated, length, then the bytes.
        let mut parts: [[u8; 14]; 2] = [[0; 14]; 2];
        for (part, body) in parts.iter_mut().zip(bodies) {
            if let Some(b) = body {
                part[0] = 1;
                part[1..9].copy_from_slice(&b.size.to_le_bytes());
                part[9] = u8::from(b.truncated);
                part[10..14].copy_from_slice(&(b.bytes.len() as u32).to_le_bytes());
            }
        }
        let pieces: [&[u8]; 4] = [
            &parts[0],
            bodies[0].map_or(&[][..], |b| &b.bytes[..]),
            &parts[1],
            bodies[1].map_or(&[][..], |b| &b.bytes[..]),
        ];
        let len = self.buf.len() - HEAD + pieces.iter().map(|p| p.len()).sum::<usize>();
        let len = u32::try_from(len)
            .ok()
            .filter(|&l| l <= MAX_FRAME)
            .ok_or_else(|| io::Error::other("a message larger than a frame may be"))?;
        let frame = HEAD as u64 + u64::from(len);
        self.make_room(frame)?;
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq.to_le_bytes());
        hasher.update(&self.buf[HEAD..]);
        for p in pieces {
            hasher.update(p);
        }
        self.buf[0..HEAD].copy_from_slice(&frame_head(len, hasher.finalize(), seq));
        // Small bodies go out with the head in one call; large ones from where they are.
        if self.buf.len() + pieces.iter().map(|p| p.len()).sum::<usize>() <= BUF_KEPT {
            for p in pieces {
                self.buf.extend_from_slice(p);
            }
            self.file.write_all_at(&self.buf, self.len)?;
        } else {
            let mut at = self.len;
            for p in std::iter::once(&self.buf[..]).chain(pieces) {
                self.file.write_all_at(p, at)?;
                at += p.len() as u64;
            }
        }
        Ok(frame)
    }

    /// Checks the bound, and begins the next segment when this one is full.
    fn make_room(&mut self, frame: u64) -> Result<(), Refused> {
        if self.total + frame > self.config.max_bytes {
            return Err(Refused::Full {
                max: self.config.max_bytes,
            });
        }
        if self.len > 0 && self.len + frame > self.config.segment_bytes {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        if self.config.fsync != Fsync::Never {
            self.file.sync_data()?;
        }
        let next = self.segment + 1;
        self.file = open_segment(&segment_path(&self.config.dir, next))?;
        self.segment = next;
        self.len = 0;
        self.segments.insert(next, 0);
        self.dirty = false;
        Ok(())
    }

    /// For `fsync: batch`: a handle to sync outside the lock, when there is something
    /// to sync.
    pub fn take_dirty(&mut self) -> Option<File> {
        if !std::mem::take(&mut self.dirty) {
            return None;
        }
        self.file.try_clone().ok()
    }

    /// Deletes the segments wholly before `pos` (never the one being written). Returns
    /// the bytes freed.
    pub fn delete_before(&mut self, pos: Pos) -> u64 {
        let old: Vec<u64> = self
            .segments
            .range(..pos.segment.min(self.segment))
            .map(|(&n, _)| n)
            .collect();
        let mut freed = 0;
        for n in old {
            let path = segment_path(&self.config.dir, n);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e, "cannot delete a spool segment every consumer has read");
                    continue;
                }
            }
            if let Some(bytes) = self.segments.remove(&n) {
                freed += bytes;
                self.total -= bytes;
            }
        }
        freed
    }

    /// The first position on disk (where a consumer with no cursor begins).
    pub fn first(&self) -> Pos {
        Pos {
            segment: self.segments.keys().next().copied().unwrap_or(self.segment),
            offset: 0,
        }
    }
}

/// The reading side: one per consumer, reading frames in order across segments.
pub struct Reader {
    dir: PathBuf,
    open: Option<(u64, File)>,
}

impl Reader {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            open: None,
        }
    }

    /// The frame at `pos`, moving on to the next segment when `pos` is at the end of a
    /// segment before `head` (the writer's position). Corrupt bytes skip the rest of their
    /// segment and are reported (the caller counts and logs them) with where reading
    /// goes on.
    pub fn read(&mut self, pos: &mut Pos, head: Pos) -> io::Result<Read> {
        loop {
            if *pos >= head {
                return Ok(Read::End);
            }
            let file = match &self.open {
                Some((n, file)) if *n == pos.segment => file,
                _ => match File::open(segment_path(&self.dir, pos.segment)) {
                    Ok(file) => &self.open.insert((pos.segment, file)).1,
                    // Deleted (no consumer needed it) or never made: on to the next.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        *pos = Pos {
                            segment: pos.segment + 1,
                            offset: 0,
                        };
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            };
            match read_frame(file, pos.segment, pos.offset)? {
                Read::End if pos.segment < head.segment => {
                    *pos = Pos {
                        segment: pos.segment + 1,
                        offset: 0,
                    };
                }
                Read::Corrupt(why) => {
                    let why = format!("segment {}: {why}", pos.segment);
                    *pos = Pos {
                        segment: pos.segment + 1,
                        offset: 0,
                    };
                    return Ok(Read::Corrupt(why));
                }
                other => return Ok(other),
            }
        }
    }
}

/// The frames from `pos` to `head` and their bytes, counted from their heads.
pub fn count(dir: &Path, mut pos: Pos, head: Pos) -> io::Result<(u64, u64)> {
    let (mut frames, mut bytes) = (0, 0);
    let mut open: Option<(u64, File)> = None;
    while pos < head {
        let file = match &open {
            Some((n, file)) if *n == pos.segment => file,
            _ => match File::open(segment_path(dir, pos.segment)) {
                Ok(file) => &open.insert((pos.segment, file)).1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    pos = Pos {
                        segment: pos.segment + 1,
                        offset: 0,
                    };
                    continue;
                }
                Err(e) => return Err(e),
            },
        };
        let mut head_bytes = [0u8; HEAD];
        match file.read_exact_at(&mut head_bytes, pos.offset) {
            Ok(()) => {
                let len = u32::from_le_bytes(head_bytes[0..4].try_into().unwrap_or_default());
                let size = HEAD as u64 + u64::from(len);
                frames += 1;
                bytes += size;
                pos.offset += size;
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                pos = Pos {
                    segment: pos.segment + 1,
                    offset: 0,
                };
            }
            Err(e) => return Err(e),
        }
    }
    Ok((frames, bytes))
}

/// A consumer's cursor as last acknowledged, or `None` for one never seen.
pub fn load_cursor(dir: &Path, consumer: &str) -> Option<Cursor> {
    let path = cursor_dir(dir).join(consumer);
    let bytes = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&bytes) {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(cursor = %path.display(), error = %e, "a spool cursor cannot be read; the consumer starts from the oldest message kept");
            None
        }
    }
}

/// Writes a consumer's cursor: whole (a new file renamed over the old), synced unless
/// `fsync: never`.
pub fn save_cursor(dir: &Path, consumer: &str, cursor: &Cursor, fsync: Fsync) -> io::Result<()> {
    let dir = cursor_dir(dir);
    let tmp = dir.join(format!(".{consumer}.tmp"));
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    serde_json::to_writer(&mut file, cursor)?;
    if fsync != Fsync::Never {
        file.sync_data()?;
    }
    std::fs::rename(&tmp, dir.join(consumer))
}

/// Why a payload is not a message.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("a body runs past the end of its frame")]
    Truncated,
}

/// Decodes a frame's payload: JSON, or a JSON head with the bodies raw after it.
pub fn decode(payload: Vec<u8>) -> Result<TrafficMessage, DecodeError> {
    if payload.first() != Some(&RAW_FORMAT) {
        return Ok(serde_json::from_slice(&payload)?);
    }
    let payload = bytes::Bytes::from(payload);
    let take = |at: &mut usize, n: usize| -> Result<bytes::Bytes, DecodeError> {
        let end = at.checked_add(n).filter(|&e| e <= payload.len());
        let end = end.ok_or(DecodeError::Truncated)?;
        let out = payload.slice(*at..end);
        *at = end;
        Ok(out)
    };
    let mut at = 1;
    let head_len = take(&mut at, 4)?;
    let head_len = u32::from_le_bytes([head_len[0], head_len[1], head_len[2], head_len[3]]);
    let head = take(&mut at, head_len as usize)?;
    let mut msg: TrafficMessage = serde_json::from_slice(&head)?;
    let mut bodies = [None, None];
    for body in &mut bodies {
        let part = take(&mut at, 14)?;
        if part[0] == 0 {
            continue;
        }
        let size = u64::from_le_bytes(part[1..9].try_into().map_err(|_| DecodeError::Truncated)?);
        let len = u32::from_le_bytes(
            part[10..14]
                .try_into()
                .map_err(|_| DecodeError::Truncated)?,
        );
        *body = Some(crate::traffic::BodyCapture {
            size,
            truncated: part[9] != 0,
            // A slice of the frame's buffer: no copy.
            bytes: take(&mut at, len as usize)?,
        });
    }
    let [request_body, response_body] = bodies;
    if request_body.is_some() {
        std::sync::Arc::make_mut(&mut msg.request).body = request_body;
    }
    if let (Some(r), Some(b)) = (msg.response.as_mut(), response_body) {
        std::sync::Arc::make_mut(r).body = Some(b);
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str) -> TrafficMessage {
        TrafficMessage::sample(id, None)
    }

    fn config(dir: &Path) -> SpoolConfig {
        SpoolConfig {
            segment_bytes: 4096,
            ..SpoolConfig::new(dir.join("spool"))
        }
    }

    fn read_all(dir: &Path, mut pos: Pos, head: Pos) -> Vec<(u64, String)> {
        let mut reader = Reader::new(dir);
        let mut out = Vec::new();
        while let Read::Frame(f) = reader.read(&mut pos, head).unwrap() {
            out.push((f.seq, decode(f.payload).unwrap().transaction_id));
            pos = f.end;
        }
        out
    }

    #[test]
    fn frames_come_back_in_order_across_segments_and_after_a_reopen() {
        let tmp = tempdir();
        let Opened {
            mut writer,
            next_seq,
            ..
        } = Writer::open(config(tmp.path())).unwrap();
        assert_eq!(next_seq, 0);
        for i in 0..100 {
            writer.append(i, &msg(&i.to_string())).unwrap();
        }
        assert!(writer.segment > 2, "4 KiB segments rotate");
        let frames = read_all(writer.dir(), writer.first(), writer.head());
        assert_eq!(frames.len(), 100);
        assert_eq!(frames[99], (99, "99".to_owned()));
        drop(writer);
        let reopened = Writer::open(config(tmp.path())).unwrap();
        assert_eq!(reopened.next_seq, 100);
        assert!(reopened.last_started.is_some());
    }

    #[test]
    fn a_large_message_is_written_raw_and_reads_back_whole() {
        use crate::traffic::BodyCapture;
        let tmp = tempdir();
        let mut writer = Writer::open(config(tmp.path())).unwrap().writer;
        let bytes: Vec<u8> = (0..1_000_000u32)
            .map(|i| (i * 7 % 251) as u8 | 0x80)
            .collect();
        let big = TrafficMessage::sample("big", Some(BodyCapture::from_bytes(&bytes, 5_000_000)));
        writer.append(0, &msg("small")).unwrap();
        writer.append(1, &big).unwrap();
        writer.append(2, &msg("after")).unwrap();
        assert!(
            writer.buf.capacity() <= BUF_KEPT,
            "the buffer never held it"
        );
        let mut reader = Reader::new(writer.dir());
        let mut pos = writer.first();
        let mut got = Vec::new();
        while let Read::Frame(f) = reader.read(&mut pos, writer.head()).unwrap() {
            got.push(decode(f.payload).unwrap());
            pos = f.end;
        }
        assert_eq!(got.len(), 3);
        let body = got[1].request.body.as_ref().unwrap();
        assert_eq!((body.size, &body.bytes[..]), (5_000_000, &bytes[..]));
        assert_eq!(got[2].transaction_id, "after");
    }

    #[test]
    fn bodies_of_both_sides_read_back_as_they_were_in_either_format() {
        use crate::traffic::{BodyCapture, MultiMap, ResponseInfo};
        let tmp = tempdir();
        let mut writer = Writer::open(config(tmp.path())).unwrap().writer;
        let with = |req: &[u8], resp: &[u8]| {
            let mut m = TrafficMessage::sample("t", Some(BodyCapture::from_bytes(req, 7_000)));
            m.response = Some(std::sync::Arc::new(ResponseInfo {
                created_at: "2026-01-01T00:00:01.000000Z".into(),
                client_protocol: "HTTP/1.1".into(),
                status_code: 201,
                status_description: "Created".into(),
                headers: MultiMap::from_iter([("content-type", "text/plain")]),
                body: Some(BodyCapture::from_bytes(resp, resp.len() as u64)),
                trailers: None,
                web_socket_messages: None,
            }));
            m
        };
        let small = with(b"tiny", b"ok");
        let binary: Vec<u8> = (0..3000u32).map(|i| (i % 256) as u8).collect();
        let mixed = with(&binary, "caf\u{e9} ".repeat(200).as_bytes());
        for m in [&small, &mixed] {
            let end = writer.append(1, m).unwrap();
            let mut pos = Pos {
                segment: end.segment,
                offset: 0,
            };
            let mut reader = Reader::new(writer.dir());
            let mut last = None;
            while let Read::Frame(f) = reader.read(&mut pos, writer.head()).unwrap() {
                pos = f.end;
                last = Some(f.payload);
            }
            let payload = last.unwrap();
            let raw = payload[0] == RAW_FORMAT;
            assert_eq!(
                raw,
                std::ptr::eq(m, &mixed),
                "the format follows the bodies' size"
            );
            assert_eq!(&decode(payload).unwrap(), m);
        }
    }

    #[test]
    fn numbering_goes_on_after_what_a_consumer_acknowledged_past_the_last_frame() {
        let tmp = tempdir();
        let mut writer = Writer::open(config(tmp.path())).unwrap().writer;
        writer.append(4, &msg("a")).unwrap();
        let cursor = Cursor {
            pos: writer.head(),
            seq: 2000,
        };
        save_cursor(writer.dir(), "TrafficRecorder", &cursor, Fsync::Never).unwrap();
        drop(writer);
        assert_eq!(Writer::open(config(tmp.path())).unwrap().next_seq, 2000);
    }

    #[test]
    fn a_torn_last_frame_is_cut_off_at_open() {
        let tmp = tempdir();
        let mut writer = Writer::open(config(tmp.path())).unwrap().writer;
        let end = writer.append(0, &msg("a")).unwrap();
        writer.append(1, &msg("b")).unwrap();
        let path = segment_path(writer.dir(), end.segment);
        drop(writer);
        let len = std::fs::metadata(&path).unwrap().len();
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(len - 5).unwrap();
        let opened = Writer::open(config(tmp.path())).unwrap();
        assert_eq!(opened.next_seq, 1, "the second frame was torn");
        assert_eq!(opened.writer.head(), end);
    }

    #[test]
    fn the_bound_refuses_and_deleting_read_segments_makes_room() {
        let tmp = tempdir();
        let mut writer = Writer::open(SpoolConfig {
            max_bytes: 8192,
            ..config(tmp.path())
        })
        .unwrap()
        .writer;
        let mut seq = 0;
        let refused = loop {
            match writer.append(seq, &msg("x")) {
                Ok(_) => seq += 1,
                Err(e) => break e,
            }
        };
        assert!(matches!(refused, Refused::Full { max: 8192 }), "{refused}");
        let head = writer.head();
        assert!(writer.delete_before(head) > 0);
        assert!(writer.append(seq, &msg("x")).is_ok());
        let frames = read_all(writer.dir(), writer.first(), writer.head());
        assert_eq!(frames.last().map(|f| f.0), Some(seq));
    }

    #[test]
    fn a_corrupt_frame_skips_the_rest_of_its_segment_and_says_so() {
        let tmp = tempdir();
        let mut writer = Writer::open(config(tmp.path())).unwrap().writer;
        let end = writer.append(0, &msg("a")).unwrap();
        writer.append(1, &msg("b")).unwrap();
        let file = OpenOptions::new()
            .write(true)
            .open(segment_path(writer.dir(), end.segment))
            .unwrap();
        file.write_at(b"XX", end.offset + HEAD as u64 + 3).unwrap();
        let mut reader = Reader::new(writer.dir());
        let mut pos = writer.first();
        assert!(matches!(
            reader.read(&mut pos, writer.head()).unwrap(),
            Read::Frame(_)
        ));
        pos = end;
        assert!(matches!(
            reader.read(&mut pos, writer.head()).unwrap(),
            Read::Corrupt(_)
        ));
    }

    #[test]
    fn cursors_are_saved_whole_and_read_back() {
        let tmp = tempdir();
        let writer = Writer::open(config(tmp.path())).unwrap().writer;
        let c = Cursor {
            pos: Pos {
                segment: 3,
                offset: 99,
            },
            seq: 7,
        };
        save_cursor(writer.dir(), "TrafficRecorder", &c, Fsync::Batch).unwrap();
        assert_eq!(load_cursor(writer.dir(), "TrafficRecorder"), Some(c));
        assert_eq!(load_cursor(writer.dir(), "other"), None);
    }

    /// A directory removed when dropped.
    struct TempDir(PathBuf);
    impl TempDir {
        fn path(&self) -> &Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn tempdir() -> TempDir {
        let dir = std::env::temp_dir().join(format!("hb-spool-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}
