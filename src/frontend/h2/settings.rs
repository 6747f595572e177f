//! Learns the client's HTTP/2 SETTINGS by watching the bytes `h2` reads.
//!
//! The `h2` crate applies the client's SETTINGS_ENABLE_PUSH and
//! SETTINGS_MAX_CONCURRENT_STREAMS but offers no getter for them, and the push
//! policy needs both before it decides (a `rel=push` link is rewritten to a
//! preload when the client cannot take a push). So the connection's reader
//! is wrapped, and every frame header that passes is read: SETTINGS values
//! and the client's GOAWAY are recorded in [`PeerSettings`]. The bytes
//! themselves pass through untouched.
//!
//! The same watcher meters the client's RST_STREAM frames against a token
//! bucket, the "rapid reset" defence (CVE-2023-44487): h2 frees the slot of
//! a stream the client resets at once, so a client can otherwise open and
//! cancel streams without bound, each costing an origin request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

const PREFACE_LEN: usize = 24;
const FRAME_HEADER_LEN: usize = 9;
const SETTINGS_ENTRY_LEN: usize = 6;
const TYPE_RST_STREAM: u8 = 0x3;
const TYPE_SETTINGS: u8 = 0x4;
const TYPE_GOAWAY: u8 = 0x7;
/// Client resets allowed in a burst, and refilled per second (nghttp2's
/// defaults: generous for browsers cancelling navigations, fatal to floods).
const RESET_BURST: f64 = 1000.0;
const RESETS_PER_SECOND: f64 = 33.0;
const FLAG_ACK: u8 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// What the client told us in its SETTINGS and GOAWAY frames.
#[derive(Debug)]
pub struct PeerSettings {
    /// RFC 9113 §6.5.2: push is enabled until the client says otherwise.
    enable_push: AtomicBool,
    /// `u32::MAX` until the client sets a limit (RFC: initially unlimited).
    max_concurrent_streams: AtomicU32,
    /// The client sent GOAWAY: it will not accept new streams from us.
    goaway: AtomicBool,
    /// The client reset streams faster than [`RESETS_PER_SECOND`] allows.
    flooded: AtomicBool,
    flood: Notify,
}

impl Default for PeerSettings {
    fn default() -> Self {
        PeerSettings {
            enable_push: AtomicBool::new(true),
            max_concurrent_streams: AtomicU32::new(u32::MAX),
            goaway: AtomicBool::new(false),
            flooded: AtomicBool::new(false),
            flood: Notify::new(),
        }
    }
}

impl PeerSettings {
    /// The client accepts pushes now.
    pub fn push_enabled(&self) -> bool {
        self.enable_push.load(Ordering::Relaxed) && !self.goaway.load(Ordering::Relaxed)
    }

    /// The client's SETTINGS_MAX_CONCURRENT_STREAMS, if it sent one.
    pub fn max_concurrent_streams(&self) -> Option<u32> {
        match self.max_concurrent_streams.load(Ordering::Relaxed) {
            u32::MAX => None,
            n => Some(n),
        }
    }

    pub fn goaway_received(&self) -> bool {
        self.goaway.load(Ordering::Relaxed)
    }

    /// Resolves once the client has reset streams faster than allowed.
    pub async fn reset_flood(&self) {
        loop {
            let notified = self.flood.notified();
            if self.flooded.load(Ordering::Relaxed) {
                return;
            }
            notified.await;
        }
    }

    fn apply_setting(&self, id: u16, value: u32) {
        match id {
            SETTINGS_ENABLE_PUSH => self.enable_push.store(value == 1, Ordering::Relaxed),
            SETTINGS_MAX_CONCURRENT_STREAMS => self
                .max_concurrent_streams
                .store(value.min(u32::MAX - 1), Ordering::Relaxed),
            _ => {}
        }
    }
}

/// Where the frame reader stands in the byte stream.
#[derive(Debug)]
enum State {
    /// Inside the 24-byte connection preface; this many bytes remain.
    Preface(usize),
    /// Collecting a 9-byte frame header.
    Header {
        buf: [u8; FRAME_HEADER_LEN],
        len: usize,
    },
    /// Inside a SETTINGS payload: collecting 6-byte entries.
    Settings {
        left: usize,
        entry: [u8; SETTINGS_ENTRY_LEN],
        len: usize,
    },
    /// Inside any other payload: skipping it.
    Skip(usize),
}

/// Parses frame headers out of a byte stream, one chunk at a time.
#[derive(Debug)]
pub struct FrameWatcher {
    state: State,
    /// Client resets still allowed, refilled over time.
    reset_tokens: f64,
    refilled: Instant,
}

impl FrameWatcher {
    /// A watcher at the start of a client connection (preface first).
    pub fn new() -> Self {
        FrameWatcher {
            state: State::Preface(PREFACE_LEN),
            reset_tokens: RESET_BURST,
            refilled: Instant::now(),
        }
    }

    /// Meter one client RST_STREAM; raise the flood flag when over budget.
    fn count_reset(&mut self, peer: &PeerSettings) {
        let now = Instant::now();
        let refill = now.duration_since(self.refilled).as_secs_f64() * RESETS_PER_SECOND;
        self.reset_tokens = (self.reset_tokens + refill).min(RESET_BURST);
        self.refilled = now;
        if self.reset_tokens >= 1.0 {
            self.reset_tokens -= 1.0;
        } else if !peer.flooded.swap(true, Ordering::Relaxed) {
            peer.flood.notify_one();
        }
    }

    /// Feed the next bytes the client sent.
    pub fn observe(&mut self, mut bytes: &[u8], peer: &PeerSettings) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Preface(left) => {
                    let take = (*left).min(bytes.len());
                    *left -= take;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.state = header_state();
                    }
                }
                State::Skip(left) => {
                    let take = (*left).min(bytes.len());
                    *left -= take;
                    bytes = &bytes[take..];
                    if *left == 0 {
                        self.state = header_state();
                    }
                }
                State::Header { buf, len } => {
                    let take = (FRAME_HEADER_LEN - *len).min(bytes.len());
                    buf[*len..*len + take].copy_from_slice(&bytes[..take]);
                    *len += take;
                    bytes = &bytes[take..];
                    if *len == FRAME_HEADER_LEN {
                        let header = *buf;
                        // Only the client's own streams (odd ids): refusing
                        // a push is no flood, and pushes are ours to bound.
                        if header[3] == TYPE_RST_STREAM && header[8] & 1 == 1 {
                            self.count_reset(peer);
                        }
                        self.state = after_header(&header, peer);
                    }
                }
                State::Settings { left, entry, len } => {
                    let take = (SETTINGS_ENTRY_LEN - *len).min(*left).min(bytes.len());
                    entry[*len..*len + take].copy_from_slice(&bytes[..take]);
                    *len += take;
                    *left -= take;
                    bytes = &bytes[take..];
                    if *len == SETTINGS_ENTRY_LEN {
                        let id = u16::from_be_bytes([entry[0], entry[1]]);
                        let value = u32::from_be_bytes([entry[2], entry[3], entry[4], entry[5]]);
                        peer.apply_setting(id, value);
                        *len = 0;
                    }
                    if *left == 0 {
                        self.state = header_state();
                    }
                }
            }
        }
    }
}

impl Default for FrameWatcher {
    fn default() -> Self {
        Self::new()
    }
}

fn header_state() -> State {
    State::Header {
        buf: [0; FRAME_HEADER_LEN],
        len: 0,
    }
}

fn after_header(header: &[u8; FRAME_HEADER_LEN], peer: &PeerSettings) -> State {
    let length = u32::from_be_bytes([0, header[0], header[1], header[2]]) as usize;
    let kind = header[3];
    let flags = header[4];
    let stream_zero = header[5..9] == [0, 0, 0, 0];
    if kind == TYPE_GOAWAY && stream_zero {
        peer.goaway.store(true, Ordering::Relaxed);
    }
    if length == 0 {
        return header_state();
    }
    if kind == TYPE_SETTINGS && flags & FLAG_ACK == 0 && stream_zero {
        State::Settings {
            left: length,
            entry: [0; SETTINGS_ENTRY_LEN],
            len: 0,
        }
    } else {
        State::Skip(length)
    }
}

pin_project_lite::pin_project! {
    /// An I/O object whose reads are watched by a [`FrameWatcher`].
    pub struct Sniffed<IO> {
        #[pin]
        io: IO,
        watcher: FrameWatcher,
        peer: std::sync::Arc<PeerSettings>,
    }
}

impl<IO> Sniffed<IO> {
    pub fn new(io: IO, peer: std::sync::Arc<PeerSettings>) -> Self {
        Sniffed {
            io,
            watcher: FrameWatcher::new(),
            peer,
        }
    }
}

impl<IO: AsyncRead> AsyncRead for Sniffed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let result = this.io.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = result {
            this.watcher.observe(&buf.filled()[before..], this.peer);
        }
        result
    }
}

impl<IO: AsyncWrite> AsyncWrite for Sniffed<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn settings(entries: &[(u16, u32)]) -> Vec<u8> {
        let mut payload = Vec::new();
        for (id, value) in entries {
            payload.extend_from_slice(&id.to_be_bytes());
            payload.extend_from_slice(&value.to_be_bytes());
        }
        frame(TYPE_SETTINGS, 0, 0, &payload)
    }

    fn feed_in_chunks(bytes: &[u8], chunk: usize) -> PeerSettings {
        let peer = PeerSettings::default();
        let mut watcher = FrameWatcher::new();
        for piece in bytes.chunks(chunk) {
            watcher.observe(piece, &peer);
        }
        peer
    }

    #[test]
    fn push_is_enabled_until_the_client_says_otherwise() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(settings(&[(0x4, 65_535)]));
        let peer = feed_in_chunks(&bytes, 1000);
        assert!(peer.push_enabled());
        assert_eq!(peer.max_concurrent_streams(), None);
    }

    #[test]
    fn enable_push_zero_is_seen_whatever_the_chunking() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(0x1, 0x4, 1, &[0x82, 0x86, 0x84]));
        bytes.extend(settings(&[(0x3, 7), (0x2, 0), (0x4, 1 << 20)]));
        for chunk in 1..bytes.len() {
            let peer = feed_in_chunks(&bytes, chunk);
            assert!(!peer.push_enabled(), "chunk size {chunk}");
            assert_eq!(peer.max_concurrent_streams(), Some(7), "chunk size {chunk}");
        }
    }

    #[test]
    fn a_later_settings_frame_turns_push_back_off_and_on() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(settings(&[(0x2, 0)]));
        bytes.extend(frame(TYPE_SETTINGS, FLAG_ACK, 0, &[]));
        bytes.extend(settings(&[(0x2, 1)]));
        assert!(feed_in_chunks(&bytes, 5).push_enabled());
    }

    #[test]
    fn settings_ack_and_data_payloads_are_not_read_as_settings() {
        let mut bytes = PREFACE.to_vec();
        // A DATA frame whose payload looks like ENABLE_PUSH=0.
        bytes.extend(frame(0x0, 0, 1, &[0, 2, 0, 0, 0, 0]));
        assert!(feed_in_chunks(&bytes, 3).push_enabled());
    }

    #[test]
    fn a_burst_of_resets_is_allowed_but_a_flood_is_flagged() {
        let mut normal = PREFACE.to_vec();
        for stream in 0..900u32 {
            normal.extend(frame(TYPE_RST_STREAM, 0, stream * 2 + 1, &[0, 0, 0, 8]));
        }
        assert!(!feed_in_chunks(&normal, 4096)
            .flooded
            .load(Ordering::Relaxed));
        let mut flood = PREFACE.to_vec();
        for stream in 0..1100u32 {
            flood.extend(frame(TYPE_RST_STREAM, 0, stream * 2 + 1, &[0, 0, 0, 8]));
        }
        assert!(feed_in_chunks(&flood, 4096).flooded.load(Ordering::Relaxed));
    }

    #[test]
    fn refused_pushes_are_not_counted_as_resets() {
        let mut bytes = PREFACE.to_vec();
        for stream in 1..=5000u32 {
            bytes.extend(frame(TYPE_RST_STREAM, 0, stream * 2, &[0, 0, 0, 7]));
        }
        assert!(!feed_in_chunks(&bytes, 4096).flooded.load(Ordering::Relaxed));
    }

    #[test]
    fn goaway_stops_pushes() {
        let mut bytes = PREFACE.to_vec();
        bytes.extend(frame(TYPE_GOAWAY, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 0]));
        let peer = feed_in_chunks(&bytes, 4);
        assert!(peer.goaway_received());
        assert!(!peer.push_enabled());
    }
}
