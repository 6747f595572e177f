//! The HTTP/2 frontend, on the `h2` crate's server directly: hyper's HTTP/2
//! server cannot send PUSH_PROMISE, and this is where pushes go out.
//!
//! - this module: the connection loop (accepting streams, idle timeout,
//!   graceful shutdown, flood cut-off);
//! - [`stream`]: one request stream, driven through [`crate::exchange`];
//! - [`push`]: promised streams, fetched and sent on their own tasks;
//! - [`body`]: flow-controlled body sending, for both;
//! - [`tunnel`]: a stream as bytes, for an extended CONNECT (RFC 8441)
//!   whose WebSocket handshake the origin accepted;
//! - [`settings`]: the client's SETTINGS, read off the wire because h2 has
//!   no getter for them.

mod body;
mod push;
mod settings;
mod stream;
mod tunnel;

use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use crate::conn::ConnContext;
use crate::exchange::ConnMemory;
use crate::policy::push::ClientPush;
use crate::runtime::Worker;

pub use settings::PeerSettings;
use settings::Sniffed;

/// The state one HTTP/2 connection shares with its stream tasks.
struct Conn {
    ctx: Arc<ConnContext>,
    worker: Arc<Worker>,
    peer: Arc<PeerSettings>,
    /// What was pushed to, requested by, and is held by this client.
    memory: ConnMemory,
    /// Pushed streams currently open, kept under the client's
    /// SETTINGS_MAX_CONCURRENT_STREAMS and `push.max_concurrent_pushes`.
    pushes_in_flight: AtomicU32,
    /// Request streams in flight, for the idle timeout.
    active: AtomicUsize,
    /// Last time a stream started or finished, in ms since `born`.
    last_activity_ms: AtomicU64,
    born: Instant,
}

impl Conn {
    fn touch(&self) {
        let ms = self.born.elapsed().as_millis() as u64;
        self.last_activity_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = self.last_activity_ms.load(Ordering::Relaxed);
        self.born
            .elapsed()
            .saturating_sub(Duration::from_millis(last))
    }

    fn idle(&self) -> bool {
        self.active.load(Ordering::Relaxed) == 0
            && self.pushes_in_flight.load(Ordering::Relaxed) == 0
    }

    /// What the push policy needs to know about the client right now.
    fn client_push(&self) -> ClientPush {
        if !self.peer.push_enabled() || self.worker.shutdown.is_cancelled() {
            return ClientPush::Disabled;
        }
        // The client's own stream limit, and ours: each push in progress
        // may hold its response in memory.
        let ours = u32::try_from(self.worker.config.push.max_concurrent_pushes).unwrap_or(u32::MAX);
        let limit = self
            .peer
            .max_concurrent_streams()
            .map_or(ours, |theirs| theirs.min(ours));
        ClientPush::Enabled {
            max_concurrent_streams: Some(limit),
            pushes_in_flight: self.pushes_in_flight.load(Ordering::Relaxed),
        }
    }
}

/// Counts a request stream as active while it lives.
struct Active(Arc<Conn>);

impl Active {
    fn new(conn: &Arc<Conn>) -> Active {
        conn.active.fetch_add(1, Ordering::Relaxed);
        conn.touch();
        Active(conn.clone())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Serve one HTTP/2 connection until it closes, the client idles out, or the
/// proxy shuts down and the grace period ends.
pub async fn serve<IO>(io: IO, ctx: Arc<ConnContext>, worker: Arc<Worker>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &worker.config;
    let peer = Arc::new(PeerSettings::default());
    let io = Sniffed::new(io, peer.clone());
    let mut builder = h2::server::Builder::new();
    builder
        // The limits the security checklist asks for: h2's defaults are
        // unlimited streams and a 16 MiB header list.
        .max_concurrent_streams(config.limits.max_concurrent_streams)
        .max_header_list_size(config.limits.max_request_header_bytes)
        // Windows big enough for uploads at speed, small enough that a
        // connection buffers at most a few hundred KiB.
        .initial_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_send_buffer_size(128 * 1024)
        // RFC 8441: WebSocket over HTTP/2, by extended CONNECT.
        .enable_connect_protocol();
    // The handshake's state is boxed: it lives a moment, and inline it would
    // make the connection's task as large as the handshake and the
    // connection together for as long as the connection stays open.
    let handshake = Box::pin(builder.handshake::<_, Bytes>(io));
    let mut connection =
        match tokio::time::timeout(config.timeouts.client_header_read, handshake).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                tracing::debug!(%error, "h2 handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!("h2 preface not received in time");
                return;
            }
        };
    let conn = Arc::new(Conn {
        memory: ConnMemory::new(config.push.diary_size),
        ctx,
        worker: worker.clone(),
        peer: peer.clone(),
        pushes_in_flight: AtomicU32::new(0),
        active: AtomicUsize::new(0),
        last_activity_ms: AtomicU64::new(0),
        born: Instant::now(),
    });
    let idle_limit = config.timeouts.client_idle;
    let grace = config.timeouts.shutdown_grace;
    // The futures the loop waits on besides the next stream live across
    // turns, so a turn registers nothing new: one timer, one flood signal,
    // one shutdown signal for the connection's whole life.
    let idle_check = tokio::time::sleep(idle_limit / 4 + Duration::from_millis(10));
    let flood = peer.reset_flood();
    let shutdown = worker.shutdown.cancelled();
    tokio::pin!(idle_check, flood, shutdown);
    let mut draining: Option<tokio::time::Instant> = None;
    let mut flood_handled = false;
    let mut shutdown_seen = false;
    loop {
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    let active = Active::new(&conn);
                    let span = tracing::debug_span!("stream", id = %respond.stream_id().as_u32());
                    tokio::spawn(
                        async move {
                            let conn = active.0.clone();
                            stream::handle(&conn, request, respond).await;
                            drop(active);
                        }
                        .instrument(span),
                    );
                }
                Some(Err(error)) => {
                    tracing::debug!(%error, "h2 connection error");
                    break;
                }
                None => break,
            },
            () = &mut flood, if !flood_handled => {
                tracing::warn!(client = %conn.ctx.peer, "client resets streams faster than allowed; closing with ENHANCE_YOUR_CALM");
                worker.metrics.reset_flood();
                connection.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                flood_handled = true;
                draining = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
            () = &mut shutdown, if !shutdown_seen => {
                shutdown_seen = true;
                if draining.is_none() {
                    connection.graceful_shutdown();
                    draining = Some(tokio::time::Instant::now() + grace);
                }
            }
            () = sleep_until_opt(draining) => {
                tracing::debug!("shutdown grace period over; closing connection");
                connection.abrupt_shutdown(Reason::NO_ERROR);
                // Give h2 a moment to flush the GOAWAY, then drop.
                let _ = tokio::time::timeout(Duration::from_millis(100), poll_fn(|cx| connection.poll_closed(cx))).await;
                break;
            }
            () = &mut idle_check => {
                if conn.idle() && conn.idle_for() >= idle_limit && draining.is_none() {
                    tracing::debug!("client idle; closing connection");
                    connection.graceful_shutdown();
                    draining = Some(tokio::time::Instant::now() + grace.min(Duration::from_secs(5)));
                }
                idle_check
                    .as_mut()
                    .reset(tokio::time::Instant::now() + idle_limit / 4 + Duration::from_millis(10));
            }
        }
    }
}

async fn sleep_until_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
