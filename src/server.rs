//! Listeners, the accept loop, the TLS handshake, ALPN dispatch, the
//! connection limit, and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::conn::{ConnContext, Protocol};
use crate::frontend::{self, WriteDeadline};
use crate::runtime::Worker;
pub use crate::runtime::{Global, ServerError};
use crate::tls;

/// A bound listening socket and how to speak on it.
pub struct Listener {
    pub tcp: TcpListener,
    /// TLS (ALPN h2 / http/1.1), or cleartext HTTP/1.1 plus h2c prior knowledge.
    pub tls: bool,
}

impl Listener {
    /// Bind every listener of the config.
    pub async fn bind_all(config: &Config) -> io::Result<Vec<Listener>> {
        let mut listeners = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let tcp = TcpListener::bind(listener.address).await.map_err(|error| {
                io::Error::new(
                    error.kind(),
                    format!("cannot listen on {}: {error}", listener.address),
                )
            })?;
            listeners.push(Listener {
                tcp,
                tls: listener.tls,
            });
        }
        Ok(listeners)
    }
}

/// Run the proxy on already-bound listeners until `shutdown` completes, then
/// drain: stop accepting, let in-flight requests finish within
/// `timeouts.shutdown_grace`, and close what is left. Everything runs on
/// the current tokio runtime.
pub async fn run(
    config: Arc<Config>,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    run_worker(Global::new(config, 1)?, listeners, shutdown, true).await
}

/// One worker: accept on `listeners` with this runtime until `shutdown`,
/// then drain. Several workers, each on its own single-threaded runtime,
/// may share the same listening sockets and one [`Global`]; the one with
/// `serve_metrics` also serves the metrics endpoint.
pub async fn run_worker(
    global: Global,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
    serve_metrics: bool,
) -> Result<(), ServerError> {
    let config = global.config.clone();
    if listeners.iter().any(|l| l.tls) && global.acceptor.is_none() {
        return Err(ServerError::NoCertificate);
    }
    let worker = Arc::new(Worker::new(&global)?);
    let tracker = TaskTracker::new();
    if let (Some(address), true) = (config.metrics.listen, serve_metrics) {
        let listener = TcpListener::bind(address)
            .await
            .map_err(ServerError::Metrics)?;
        tracing::info!(%address, "metrics on http://{address}/metrics");
        tracker.spawn(crate::admin::serve(
            listener,
            global.metrics.clone(),
            worker.shutdown.clone(),
        ));
    }
    for listener in listeners {
        let acceptor = if listener.tls {
            global.acceptor.clone()
        } else {
            None
        };
        tracker.spawn(accept_loop(
            listener,
            acceptor,
            worker.clone(),
            global.limit.clone(),
            tracker.clone(),
        ));
    }
    shutdown.await;
    tracing::debug!(
        grace = ?config.timeouts.shutdown_grace,
        "shutting down: no new connections, draining in-flight requests"
    );
    worker.shutdown.cancel();
    tracker.close();
    let deadline = config.timeouts.shutdown_grace + Duration::from_secs(1);
    if tokio::time::timeout(deadline, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open after the grace period; closing them");
    }
    Ok(())
}

async fn accept_loop(
    listener: Listener,
    acceptor: Option<TlsAcceptor>,
    worker: Arc<Worker>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
) {
    let local = listener.tcp.local_addr().ok();
    loop {
        // Wait for a free connection slot before accepting: over the limit,
        // new clients wait in the kernel's backlog and existing ones are
        // unaffected.
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = worker.shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            _ = worker.shutdown.cancelled() => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let local = local.unwrap_or(peer);
        let worker = worker.clone();
        let acceptor = acceptor.clone();
        let span = tracing::debug_span!("conn", %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                worker.metrics.connection_opened();
                serve_connection(stream, peer, local, acceptor, &worker).await;
                worker.metrics.connection_closed();
            }
            .instrument(span),
        );
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    worker: &Arc<Worker>,
) {
    let timeouts = &worker.config.timeouts;
    let stream = WriteDeadline::new(stream, timeouts.client_write);
    match acceptor {
        Some(acceptor) => {
            let tls =
                // Boxed for the same reason as the h2 handshake.
                match tokio::time::timeout(timeouts.tls_handshake, Box::pin(acceptor.accept(stream)))
                    .await
                {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        worker.metrics.tls_failure();
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        worker.metrics.tls_failure();
                        return;
                    }
                };
            let session = tls.get_ref().1;
            let h2 = session.alpn_protocol() == Some(tls::ALPN_H2);
            let protocol = if h2 { Protocol::Http2 } else { Protocol::Http1 };
            let ctx = ConnContext::new(peer, local, true, protocol).with_tls(
                session.protocol_version().map(tls::version_name),
                session.alpn_protocol().map(tls::alpn_name),
            );
            let ctx = Arc::new(ctx);
            if h2 {
                frontend::h2::serve(tls, ctx, worker.clone()).await;
            } else {
                frontend::h1::serve(tls, ctx, worker.clone()).await;
            }
        }
        None => {
            let detected =
                tokio::time::timeout(timeouts.client_header_read, sniff_preface(stream)).await;
            match detected {
                Ok(Ok((stream, true))) => {
                    let ctx = Arc::new(ConnContext::new(peer, local, false, Protocol::Http2));
                    frontend::h2::serve(stream, ctx, worker.clone()).await;
                }
                Ok(Ok((stream, false))) => {
                    let ctx = Arc::new(ConnContext::new(peer, local, false, Protocol::Http1));
                    frontend::h1::serve(stream, ctx, worker.clone()).await;
                }
                Ok(Err(error)) => tracing::debug!(%error, "connection closed before a request"),
                Err(_) => tracing::debug!("no request bytes in time"),
            }
        }
    }
}

/// The HTTP/2 connection preface (RFC 9113 §3.4).
const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Read just enough of a cleartext connection to tell h2c prior knowledge
/// from HTTP/1.1; the bytes read are replayed to whichever frontend serves it.
async fn sniff_preface<IO: AsyncRead + Unpin>(mut stream: IO) -> io::Result<(Prefixed<IO>, bool)> {
    let mut buf = [0u8; 24];
    let mut filled = 0;
    while filled < buf.len() {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n;
        if buf[..filled] != PREFACE[..filled] {
            break;
        }
    }
    let is_h2 = filled == PREFACE.len() && &buf == PREFACE;
    Ok((
        Prefixed::new(Bytes::copy_from_slice(&buf[..filled]), stream),
        is_h2,
    ))
}

pin_project_lite::pin_project! {
    /// An I/O object that first replays bytes already read from it.
    pub struct Prefixed<IO> {
        prefix: Bytes,
        #[pin]
        io: IO,
    }
}

impl<IO> Prefixed<IO> {
    pub fn new(prefix: Bytes, io: IO) -> Self {
        Prefixed { prefix, io }
    }
}

impl<IO: AsyncRead> AsyncRead for Prefixed<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite> AsyncWrite for Prefixed<IO> {
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
