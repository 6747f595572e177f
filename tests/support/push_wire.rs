//! A strict, slow HTTP/2 client for server-push tests.
//!
//! It speaks the wire protocol by hand over any byte stream (TLS to the
//! proxy, or plain TCP to an in-process `h2` server), reads in small chunks
//! with a pause between reads, and grants flow-control credit only for what
//! it has consumed. It does not decode response header blocks: it records
//! every frame header and checks, frame by frame, what RFC 9113 asks of a
//! server that pushes:
//!
//! - a promised stream id is even and greater than every server-initiated id
//!   seen before it (§5.1.1);
//! - a PUSH_PROMISE arrives on a stream the client opened and the server has
//!   not yet ended (§6.6);
//! - HEADERS, DATA and RST_STREAM arrive only on streams that were opened by
//!   the client or promised, and HEADERS/DATA not after the stream ended
//!   (§5.1: anything else is a connection error at a real client);
//! - a header block is followed only by its CONTINUATION frames (§6.10);
//! - DATA stays within the flow-control windows the client granted (§6.9).
//!
//! A GOAWAY is recorded and ends the exchange.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::wire::{h2frame, h2setting, hpack_literals, request_fields, H2_PREFACE};

/// The stream window the client announces: small, so the server keeps
/// frames queued while the client reads.
pub const SLOW_STREAM_WINDOW: u32 = 1024;

/// RFC 9113 §6.9.2: the connection window starts at 65,535 and only
/// WINDOW_UPDATE changes it.
const CONNECTION_WINDOW: i64 = 65_535;

/// How fast the client reads.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// The most bytes taken from the connection by one read.
    pub chunk: usize,
    /// The pause before each read (a slow reader, not synchronisation).
    pub pause: Duration,
}

impl Pace {
    /// A slow reader: 1 KiB every 2 ms at most.
    pub const SLOW: Pace = Pace {
        chunk: 1024,
        pause: Duration::from_millis(2),
    };
}

/// SETTINGS of a push-capable slow reader: push enabled, a small stream
/// window and room for many concurrent pushed streams.
pub fn slow_push_settings() -> Vec<(u16, u32)> {
    vec![
        (h2setting::ENABLE_PUSH, 1),
        (h2setting::INITIAL_WINDOW_SIZE, SLOW_STREAM_WINDOW),
        (h2setting::MAX_CONCURRENT_STREAMS, 1000),
    ]
}

/// One frame header as it came off the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub len: usize,
    /// The promised stream id of a PUSH_PROMISE.
    pub promised: Option<u32>,
}

/// How a stream ended, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    EndStream,
    Reset(u32),
}

/// A GOAWAY from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoAway {
    pub last_stream_id: u32,
    pub code: u32,
    pub debug: String,
}

/// Why [`StrictH2::run_until`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The condition held.
    Done,
    GoAway(GoAway),
    /// The server closed the connection (or it failed).
    Closed,
    TimedOut,
    /// More frames than the bound allows arrived.
    TooManyFrames,
}

/// The client: a byte stream plus everything it has seen on it.
pub struct StrictH2<IO> {
    io: IO,
    pace: Pace,
    buf: Vec<u8>,
    authority: String,
    /// Every frame header, in wire order.
    pub frames: Vec<FrameHead>,
    /// Client streams opened with a request.
    opened: BTreeSet<u32>,
    /// Client streams the client reset: frames the server sent before it
    /// learnt of the reset may still arrive on them.
    reset_by_client: BTreeSet<u32>,
    /// Promised stream ids, in wire order.
    promised: Vec<u32>,
    ended: BTreeMap<u32, Ending>,
    highest_server_id: u32,
    /// A header block is open on this stream: CONTINUATION must follow.
    continuation_of: Option<u32>,
    /// The stream window the client announced.
    initial_window: i64,
    /// Flow-control windows the server may still use.
    stream_windows: BTreeMap<u32, i64>,
    connection_window: i64,
    violations: Vec<String>,
    goaway: Option<GoAway>,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> StrictH2<IO> {
    /// Write the connection preface and SETTINGS with `settings`.
    /// `authority` goes in every request's `:authority`.
    pub async fn start(io: IO, authority: &str, settings: &[(u16, u32)], pace: Pace) -> Self {
        let mut client = StrictH2 {
            io,
            pace,
            buf: Vec::new(),
            authority: authority.to_string(),
            frames: Vec::new(),
            opened: BTreeSet::new(),
            reset_by_client: BTreeSet::new(),
            promised: Vec::new(),
            ended: BTreeMap::new(),
            highest_server_id: 0,
            continuation_of: None,
            initial_window: settings
                .iter()
                .rev()
                .find(|(id, _)| *id == h2setting::INITIAL_WINDOW_SIZE)
                .map_or(65_535, |(_, value)| i64::from(*value)),
            stream_windows: BTreeMap::new(),
            connection_window: CONNECTION_WINDOW,
            violations: Vec::new(),
            goaway: None,
        };
        let mut payload = Vec::new();
        for (id, value) in settings {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        client.write(H2_PREFACE).await;
        client.send(h2frame::SETTINGS, 0, 0, &payload).await;
        client
    }

    /// Bytes of one frame.
    pub fn encode(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(9 + payload.len());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        out.push(kind);
        out.push(flags);
        out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// The bytes of RST_STREAM(`stream`, `code`), as [`StrictH2::reset`]
    /// writes them.
    pub fn rst_stream_bytes(stream: u32, code: u32) -> Vec<u8> {
        Self::encode(h2frame::RST_STREAM, 0, stream, &code.to_be_bytes())
    }

    async fn write(&mut self, bytes: &[u8]) {
        // A write to a connection the server closed shows up when reading.
        if self.io.write_all(bytes).await.is_ok() {
            let _ = self.io.flush().await;
        }
    }

    async fn send(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
        let bytes = Self::encode(kind, flags, stream, payload);
        self.write(&bytes).await;
    }

    /// Open `stream` with a GET for `path` (HEADERS with END_STREAM; the
    /// block is literal fields without indexing, no Huffman coding).
    pub async fn get(&mut self, stream: u32, path: &str) {
        assert!(stream % 2 == 1, "client streams are odd");
        self.opened.insert(stream);
        self.stream_windows.insert(stream, self.initial_window);
        let block = hpack_literals(&request_fields("GET", path, &self.authority));
        self.send(
            h2frame::HEADERS,
            h2frame::END_HEADERS | h2frame::END_STREAM,
            stream,
            &block,
        )
        .await;
    }

    /// Reset a stream the client opened.
    pub async fn reset(&mut self, stream: u32, code: u32) {
        self.reset_by_client.insert(stream);
        self.ended.entry(stream).or_insert(Ending::Reset(code));
        let bytes = Self::rst_stream_bytes(stream, code);
        self.write(&bytes).await;
    }

    /// Promised stream ids in wire order.
    pub fn promised(&self) -> &[u32] {
        &self.promised
    }

    /// Promised ids that arrived on `parent`, in wire order.
    pub fn promised_on(&self, parent: u32) -> Vec<u32> {
        self.frames
            .iter()
            .filter(|f| f.kind == h2frame::PUSH_PROMISE && f.stream == parent)
            .filter_map(|f| f.promised)
            .collect()
    }

    pub fn ending(&self, stream: u32) -> Option<Ending> {
        self.ended.get(&stream).copied()
    }

    /// Every stream opened or promised has ended.
    pub fn all_ended(&self) -> bool {
        self.opened
            .iter()
            .chain(self.promised.iter())
            .all(|id| self.ended.contains_key(id))
    }

    /// Streams opened or promised that have not ended.
    pub fn unfinished(&self) -> Vec<u32> {
        self.opened
            .iter()
            .chain(self.promised.iter())
            .copied()
            .filter(|id| !self.ended.contains_key(id))
            .collect()
    }

    pub fn violations(&self) -> &[String] {
        &self.violations
    }

    pub fn goaway(&self) -> Option<&GoAway> {
        self.goaway.as_ref()
    }

    /// A summary for assertion messages: violations, GOAWAY, promised ids
    /// and the last frames.
    pub fn report(&self) -> String {
        let tail: Vec<String> = self
            .frames
            .iter()
            .rev()
            .take(40)
            .rev()
            .map(|f| {
                format!(
                    "{} flags=0x{:02x} stream={} len={}{}",
                    frame_name(f.kind),
                    f.flags,
                    f.stream,
                    f.len,
                    f.promised
                        .map(|p| format!(" promised={p}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        format!(
            "violations: {:#?}\ngoaway: {:?}\npromised ids in wire order: {:?}\nunfinished: {:?}\nlast frames:\n  {}",
            self.violations,
            self.goaway,
            self.promised,
            self.unfinished(),
            tail.join("\n  ")
        )
    }

    /// Read (slowly) and check frames until `done` holds, a GOAWAY
    /// arrives, the connection closes, `wait` passes or `max_frames` more
    /// frames have arrived.
    pub async fn run_until(
        &mut self,
        wait: Duration,
        max_frames: usize,
        done: impl Fn(&Self) -> bool,
    ) -> Stop {
        let deadline = Instant::now() + wait;
        let mut frames = 0;
        loop {
            if done(self) {
                return Stop::Done;
            }
            if let Some(goaway) = &self.goaway {
                return Stop::GoAway(goaway.clone());
            }
            if frames >= max_frames {
                return Stop::TooManyFrames;
            }
            match self.next_frame(deadline).await {
                Ok((head, payload)) => {
                    frames += 1;
                    self.observe(head, &payload).await;
                }
                Err(stop) => return stop,
            }
        }
    }

    /// The next whole frame, reading at most `pace.chunk` bytes at a time.
    async fn next_frame(&mut self, deadline: Instant) -> Result<(FrameHead, Vec<u8>), Stop> {
        let mut chunk = vec![0u8; self.pace.chunk];
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let b = &self.buf;
                    let head = FrameHead {
                        kind: b[3],
                        flags: b[4],
                        stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
                        len,
                        promised: None,
                    };
                    let payload = b[9..9 + len].to_vec();
                    self.buf.drain(..9 + len);
                    return Ok((head, payload));
                }
            }
            tokio::time::sleep(self.pace.pause).await;
            match tokio::time::timeout_at(deadline, self.io.read(&mut chunk)).await {
                Err(_) => return Err(Stop::TimedOut),
                Ok(Ok(0)) | Ok(Err(_)) => return Err(Stop::Closed),
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    fn violation(&mut self, what: String) {
        self.violations.push(what);
    }

    /// Whether a HEADERS/DATA/RST_STREAM on `stream` is on a stream the
    /// client knows; records a violation when not.
    fn check_known(&mut self, kind: u8, stream: u32) -> bool {
        let known = if stream == 0 {
            false
        } else if stream % 2 == 0 {
            self.promised.contains(&stream)
        } else {
            self.opened.contains(&stream)
        };
        if !known {
            let what = if stream % 2 == 0 && stream != 0 {
                "never promised"
            } else {
                "never opened"
            };
            self.violation(format!("{} on stream {stream}, {what}", frame_name(kind)));
        }
        known
    }

    /// HEADERS or DATA after the stream ended (tolerated on streams the
    /// client reset: those frames may have been in flight).
    fn check_not_ended(&mut self, kind: u8, stream: u32) {
        if self.reset_by_client.contains(&stream) {
            return;
        }
        if let Some(ending) = self.ending(stream) {
            self.violation(format!(
                "{} on stream {stream} after it ended ({ending:?})",
                frame_name(kind)
            ));
        }
    }

    fn end(&mut self, stream: u32, ending: Ending) {
        self.ended.entry(stream).or_insert(ending);
    }

    async fn observe(&mut self, mut head: FrameHead, payload: &[u8]) {
        if head.len > 16_384 {
            self.violation(format!(
                "{} of {} bytes exceeds SETTINGS_MAX_FRAME_SIZE",
                frame_name(head.kind),
                head.len
            ));
        }
        if let Some(open) = self.continuation_of {
            if head.kind != h2frame::CONTINUATION || head.stream != open {
                self.violation(format!(
                    "{} on stream {} inside the header block of stream {open}",
                    frame_name(head.kind),
                    head.stream
                ));
            }
        }
        if head.stream % 2 == 0 && head.stream > self.highest_server_id {
            // Checked against the promises by `check_known`.
            self.highest_server_id = head.stream;
        }
        match head.kind {
            h2frame::DATA => {
                if self.check_known(head.kind, head.stream) {
                    self.check_not_ended(head.kind, head.stream);
                }
                let n = head.len as i64;
                self.connection_window -= n;
                if self.connection_window < 0 {
                    self.violation(format!(
                        "DATA on stream {} overran the connection window",
                        head.stream
                    ));
                }
                let window = self
                    .stream_windows
                    .entry(head.stream)
                    .or_insert(self.initial_window);
                *window -= n;
                if *window < 0 {
                    let stream = head.stream;
                    self.violation(format!("DATA on stream {stream} overran its window"));
                }
                if head.flags & h2frame::END_STREAM != 0 {
                    self.end(head.stream, Ending::EndStream);
                }
                // Credit exactly what was consumed, in small amounts.
                if n > 0 {
                    self.connection_window += n;
                    self.send(h2frame::WINDOW_UPDATE, 0, 0, &(n as u32).to_be_bytes())
                        .await;
                    if self.ending(head.stream).is_none() {
                        if let Some(window) = self.stream_windows.get_mut(&head.stream) {
                            *window += n;
                        }
                        self.send(
                            h2frame::WINDOW_UPDATE,
                            0,
                            head.stream,
                            &(n as u32).to_be_bytes(),
                        )
                        .await;
                    }
                }
            }
            h2frame::HEADERS => {
                if self.check_known(head.kind, head.stream) {
                    self.check_not_ended(head.kind, head.stream);
                }
                if head.flags & h2frame::END_HEADERS == 0 {
                    self.continuation_of = Some(head.stream);
                }
                if head.flags & h2frame::END_STREAM != 0 {
                    self.end(head.stream, Ending::EndStream);
                }
            }
            h2frame::CONTINUATION => {
                if self.continuation_of != Some(head.stream) {
                    self.violation(format!(
                        "CONTINUATION on stream {} without an open header block",
                        head.stream
                    ));
                }
                if head.flags & h2frame::END_HEADERS != 0 {
                    self.continuation_of = None;
                }
            }
            h2frame::PUSH_PROMISE => {
                let parent = head.stream;
                let promised = promised_id(head.flags, payload);
                head.promised = promised;
                let parent_ok = parent % 2 == 1 && self.opened.contains(&parent);
                if !parent_ok {
                    self.violation(format!(
                        "PUSH_PROMISE on stream {parent}, not a stream the client opened"
                    ));
                } else if !self.reset_by_client.contains(&parent) {
                    if let Some(ending) = self.ending(parent) {
                        self.violation(format!(
                            "PUSH_PROMISE on stream {parent} after it ended ({ending:?})"
                        ));
                    }
                }
                match promised {
                    None => self.violation(format!("malformed PUSH_PROMISE on stream {parent}")),
                    Some(id) => {
                        if id == 0 || id % 2 == 1 {
                            self.violation(format!("promised stream id {id} is not even"));
                        } else if id <= self.highest_server_id {
                            let highest = self.highest_server_id;
                            self.violation(format!(
                                "promised stream id {id} (on stream {parent}) is not greater \
                                 than {highest}, already seen"
                            ));
                        }
                        self.highest_server_id = self.highest_server_id.max(id);
                        self.promised.push(id);
                        self.stream_windows.insert(id, self.initial_window);
                    }
                }
                if head.flags & h2frame::END_HEADERS == 0 {
                    self.continuation_of = Some(parent);
                }
            }
            h2frame::RST_STREAM => {
                let code = payload
                    .get(..4)
                    .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(u32::MAX);
                if self.check_known(head.kind, head.stream) {
                    self.end(head.stream, Ending::Reset(code));
                }
            }
            h2frame::SETTINGS if head.flags & h2frame::ACK == 0 => {
                self.send(h2frame::SETTINGS, h2frame::ACK, 0, &[]).await;
            }
            h2frame::PING if head.flags & h2frame::ACK == 0 => {
                self.send(h2frame::PING, h2frame::ACK, 0, payload).await;
            }
            h2frame::GOAWAY => {
                let word = |at: usize| {
                    payload
                        .get(at..at + 4)
                        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                        .unwrap_or(u32::MAX)
                };
                self.goaway = Some(GoAway {
                    last_stream_id: word(0) & 0x7fff_ffff,
                    code: word(4),
                    debug: String::from_utf8_lossy(payload.get(8..).unwrap_or(&[])).into_owned(),
                });
            }
            _ => {}
        }
        self.frames.push(head);
    }
}

/// The promised stream id of a PUSH_PROMISE payload (after the pad length,
/// when PADDED is set).
fn promised_id(flags: u8, payload: &[u8]) -> Option<u32> {
    let at = usize::from(flags & h2frame::PADDED != 0);
    let b = payload.get(at..at + 4)?;
    Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
}

pub fn frame_name(kind: u8) -> &'static str {
    match kind {
        h2frame::DATA => "DATA",
        h2frame::HEADERS => "HEADERS",
        h2frame::PRIORITY => "PRIORITY",
        h2frame::RST_STREAM => "RST_STREAM",
        h2frame::SETTINGS => "SETTINGS",
        h2frame::PUSH_PROMISE => "PUSH_PROMISE",
        h2frame::PING => "PING",
        h2frame::GOAWAY => "GOAWAY",
        h2frame::WINDOW_UPDATE => "WINDOW_UPDATE",
        h2frame::CONTINUATION => "CONTINUATION",
        _ => "UNKNOWN",
    }
}
