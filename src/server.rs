//! Listeners, the accept loop, the TLS handshake, ALPN dispatch, the
//! connection limit, and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::convert::Infallible;

use bytes::{Buf, Bytes};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::error::ProxyError;
use crate::frontend::{self, WriteDeadline};
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::proxy::{ConnContext, Protocol};
use crate::push;
use crate::tls::{self, ServerNames, TlsError};

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

/// Start-up failures of [`run`].
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("a TLS listener is configured but no certificate: set tls.cert and tls.key, or tls.self_signed = true")]
    NoCertificate,
    #[error("origin: {0}")]
    Origin(#[from] ProxyError),
    #[error("metrics.listen: {0}")]
    Metrics(io::Error),
}

/// What every worker of one proxy process shares: configuration, counters,
/// learned state, the TLS acceptor and the connection limit. Cheap to clone.
#[derive(Clone)]
pub struct Global {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Learned early hints, when `[hints] learn` is on.
    pub learned: Option<Arc<crate::hints::LearnedHints>>,
    /// Validators of assets seen, when `[push] cache_digest` is on.
    pub validators: Option<Arc<crate::digest::Validators>>,
    acceptor: Option<TlsAcceptor>,
    /// The names pushes may be promised under.
    names: Arc<ServerNames>,
    /// Client connections open at once, over all workers.
    limit: Arc<Semaphore>,
    policy: push::Policy,
    /// How many workers share the origin connection limit.
    workers: usize,
}

impl Global {
    /// Build the process-wide state; loads (or generates) the certificate,
    /// so a bad one fails here, before anything listens.
    pub fn new(config: Arc<Config>, workers: usize) -> Result<Global, ServerError> {
        let (acceptor, leaf) = match &config.tls.source {
            Some(source) => {
                let built = tls::acceptor(source)?;
                (Some(built.acceptor), Some(built.leaf))
            }
            None => (None, None),
        };
        let names = Arc::new(ServerNames::new(&config.server.names, leaf));
        Ok(Global {
            metrics: Arc::new(Metrics::default()),
            learned: config
                .hints
                .learn
                .then(|| Arc::new(crate::hints::LearnedHints::new(&config.hints))),
            validators: config.push.cache_digest.then(|| {
                Arc::new(crate::digest::Validators::new(
                    config.push.cache_digest_validator_ttl,
                ))
            }),
            acceptor,
            names,
            limit: Arc::new(Semaphore::new(config.limits.max_connections)),
            policy: policy(&config.push),
            workers: workers.max(1),
            config,
        })
    }
}

/// What every connection of one worker shares.
pub struct Shared {
    pub config: Arc<Config>,
    /// This worker's pool of origin connections.
    pub origin: Origin,
    pub metrics: Arc<Metrics>,
    /// Cancelled when graceful shutdown starts.
    pub shutdown: CancellationToken,
    pub policy: push::Policy,
    pub learned: Option<Arc<crate::hints::LearnedHints>>,
    pub validators: Option<Arc<crate::digest::Validators>>,
    /// The names pushes may be promised under.
    pub names: Arc<ServerNames>,
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
    let shared = Arc::new(Shared {
        origin: Origin::new(&config, global.workers)?,
        names: global.names.clone(),
        policy: global.policy.clone(),
        learned: global.learned.clone(),
        validators: global.validators.clone(),
        metrics: global.metrics.clone(),
        shutdown: CancellationToken::new(),
        config: config.clone(),
    });
    let tracker = TaskTracker::new();
    if let (Some(address), true) = (config.metrics.listen, serve_metrics) {
        let listener = TcpListener::bind(address)
            .await
            .map_err(ServerError::Metrics)?;
        tracing::info!(%address, "metrics on http://{address}/metrics");
        tracker.spawn(crate::metrics::serve(
            listener,
            global.metrics.clone(),
            shared.shutdown.clone(),
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
            shared.clone(),
            global.limit.clone(),
            tracker.clone(),
        ));
    }
    shutdown.await;
    tracing::debug!(
        grace = ?config.timeouts.shutdown_grace,
        "shutting down: no new connections, draining in-flight requests"
    );
    shared.shutdown.cancel();
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

/// The push policy's view of the `[push]` settings.
fn policy(settings: &crate::config::PushSettings) -> push::Policy {
    push::Policy {
        enabled: settings.enabled,
        preload: match settings.preload {
            crate::config::PreloadMode::Push => push::PreloadMode::Push,
            crate::config::PreloadMode::HintOnly => push::PreloadMode::HintOnly,
        },
        max_pushes_per_response: settings.max_pushes_per_response,
        allow_credentialed: settings.allow_credentialed,
        dry_run: settings.dry_run,
    }
}

async fn accept_loop(
    listener: Listener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
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
            _ = shared.shutdown.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            _ = shared.shutdown.cancelled() => return,
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
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        let span = tracing::debug_span!("conn", %peer);
        tracker.spawn(
            async move {
                let _permit = permit;
                shared.metrics.connection_opened();
                serve_connection(stream, peer, local, acceptor, &shared).await;
                shared.metrics.connection_closed();
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
    shared: &Arc<Shared>,
) {
    let timeouts = &shared.config.timeouts;
    let stream = WriteDeadline::new(stream, timeouts.client_write);
    match acceptor {
        Some(acceptor) => {
            let tls =
                match tokio::time::timeout(timeouts.tls_handshake, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(error)) => {
                        tracing::debug!(%error, "TLS handshake failed");
                        shared.metrics.tls_failure();
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        shared.metrics.tls_failure();
                        return;
                    }
                };
            let h2 = tls.get_ref().1.alpn_protocol() == Some(tls::ALPN_H2);
            if h2 {
                let ctx = ConnContext::new(peer, local, true, Protocol::Http2);
                frontend::h2::serve(tls, ctx, shared.clone()).await;
            } else {
                let ctx = ConnContext::new(peer, local, true, Protocol::Http1);
                frontend::h1::serve(tls, ctx, shared.clone()).await;
            }
        }
        None => {
            let detected =
                tokio::time::timeout(timeouts.client_header_read, sniff_preface(stream)).await;
            match detected {
                Ok(Ok((stream, true))) => {
                    let ctx = ConnContext::new(peer, local, false, Protocol::Http2);
                    frontend::h2::serve(stream, ctx, shared.clone()).await;
                }
                Ok(Ok((stream, false))) => {
                    let ctx = ConnContext::new(peer, local, false, Protocol::Http1);
                    frontend::h1::serve(stream, ctx, shared.clone()).await;
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

/// Serve a small cleartext HTTP/1.1 endpoint (the metrics page, the demo's
/// sample origin) with a synchronous handler, until `shutdown`.
pub async fn serve_simple<F>(listener: TcpListener, shutdown: CancellationToken, respond: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
