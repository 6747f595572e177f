//! Listeners, the accept loop, the TLS handshake, ALPN dispatch, the
//! connection limit, and graceful shutdown.

use std::collections::HashMap;
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
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin::Health;
use crate::config::{Config, ListenerConfig, TrustedProxies};
use crate::conn::{ConnContext, Protocol};
use crate::frontend::{self, WriteDeadline};
use crate::metrics::{Metrics, ProxyRejection};
use crate::proxy_protocol::{self, Header, ReadError};
use crate::runtime::Worker;
pub use crate::runtime::{Generation, Global, ServerError, SharedListener};
use crate::tls;

/// A bound listening socket and how to speak on it.
pub struct Listener {
    pub tcp: TcpListener,
    /// TLS (ALPN h2 / http/1.1), or cleartext HTTP/1.1 plus h2c prior knowledge.
    pub tls: bool,
    /// The sources that must, and alone may, start their connections with
    /// a PROXY protocol header; `None`: no PROXY protocol.
    pub proxy_protocol: Option<TrustedProxies>,
}

impl Listener {
    /// Serve `tcp` as `config` says (its address aside: `tcp` is bound).
    pub fn new(tcp: TcpListener, config: &ListenerConfig) -> Listener {
        Listener {
            tcp,
            tls: config.tls,
            proxy_protocol: config.proxy_protocol.clone(),
        }
    }

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
            listeners.push(Listener::new(tcp, listener));
        }
        Ok(listeners)
    }
}

/// Run the proxy on already-bound listeners until `shutdown` completes, then
/// drain: stop accepting, let in-flight requests finish within
/// `timeouts.shutdown_grace`, and close what is left. Everything runs on
/// the current tokio runtime, with one worker and no reloads; the binary's
/// process ([`crate::process`]) adds worker threads, signals and reloads.
pub async fn run(
    config: Arc<Config>,
    listeners: Vec<Listener>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let global = Global::new(config.clone(), 1, Arc::new(Metrics::default()), None)?;
    let mut shared = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let socket = listener.tcp.into_std().map_err(ServerError::Listen)?;
        shared.push(SharedListener {
            configured: socket.local_addr().map_err(ServerError::Listen)?,
            tls: listener.tls,
            proxy_protocol: listener.proxy_protocol,
            socket: Arc::new(socket),
        });
    }
    check_certificate(&global, &shared)?;
    let token = CancellationToken::new();
    let admin = match config.metrics.listen {
        Some(address) => {
            let listener = TcpListener::bind(address)
                .await
                .map_err(ServerError::Metrics)?;
            tracing::info!(%address, "metrics on http://{address}/metrics");
            let health = Arc::new(Health::new(global.upstreams.clone()));
            // The listeners are bound; the worker below accepts on them.
            health.set_listening(true);
            Some(tokio::spawn(crate::admin::serve(
                listener,
                global.metrics.clone(),
                health,
                token.child_token(),
            )))
        }
        None => None,
    };
    let generation = Arc::new(Generation {
        number: 1,
        global,
        listeners: shared,
        applied: Arc::new(tokio::sync::Semaphore::new(0)),
    });
    let (_keep, generations) = watch::channel(generation);
    let worker = run_worker(generations, token.clone());
    tokio::pin!(worker);
    let result = tokio::select! {
        result = &mut worker => result,
        () = shutdown => {
            token.cancel();
            worker.await
        }
    };
    token.cancel();
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    result
}

/// Refuse a generation whose TLS listeners have no certificate.
pub fn check_certificate(global: &Global, listeners: &[SharedListener]) -> Result<(), ServerError> {
    if listeners.iter().any(|l| l.tls) && global.acceptor.is_none() {
        return Err(ServerError::NoCertificate);
    }
    Ok(())
}

/// One worker: accept on the listeners of the newest generation with this
/// runtime until `shutdown`, then drain. Several workers, each on its own
/// single-threaded runtime, share the listening sockets.
///
/// A new generation changes what new connections get (configuration,
/// certificate, origin pool) and which addresses are accepted on; accept
/// loops of addresses that remain keep running, and connections already
/// open keep the state they started with.
pub async fn run_worker(
    mut generations: watch::Receiver<Arc<Generation>>,
    shutdown: CancellationToken,
) -> Result<(), ServerError> {
    let mut generation = generations.borrow_and_update().clone();
    generation.global.upstreams.start_checks();
    let first = Arc::new(Worker::new(&generation.global, shutdown.clone()));
    let (current, _) = watch::channel(first);
    let tracker = TaskTracker::new();
    // Accept loops by configured address: the listener they serve, and
    // how to stop them. A listener whose settings change gets a new loop.
    let mut running: HashMap<SocketAddr, (SharedListener, CancellationToken, JoinHandle<()>)> =
        HashMap::new();
    loop {
        let removed: Vec<SocketAddr> = running
            .iter()
            .filter(|(address, (serving, ..))| {
                !generation
                    .listeners
                    .iter()
                    .any(|l| l.configured == **address && l.same_settings(serving))
            })
            .map(|(address, _)| *address)
            .collect();
        let mut stopped = Vec::with_capacity(removed.len());
        for address in removed {
            if let Some((_, stop, task)) = running.remove(&address) {
                stop.cancel();
                stopped.push(task);
            }
        }
        for listener in &generation.listeners {
            if running.contains_key(&listener.configured) {
                continue;
            }
            let tcp = listener
                .socket
                .try_clone()
                .and_then(TcpListener::from_std)
                .map_err(ServerError::Listen)?;
            let stop = shutdown.child_token();
            let task = tracker.spawn(accept_loop(
                Listener {
                    tcp,
                    tls: listener.tls,
                    proxy_protocol: listener.proxy_protocol.clone(),
                },
                current.subscribe(),
                stop.clone(),
                tracker.clone(),
            ));
            running.insert(listener.configured, (listener.clone(), stop, task));
        }
        // Once the loops of removed listeners have let go of their sockets,
        // this worker serves the generation as a whole.
        for task in stopped {
            let _ = task.await;
        }
        generation.applied.add_permits(1);
        tokio::select! {
            changed = generations.changed() => {
                if changed.is_err() {
                    break;
                }
                generation = generations.borrow_and_update().clone();
                generation.global.upstreams.start_checks();
                current.send_replace(Arc::new(Worker::new(&generation.global, shutdown.clone())));
            }
            () = shutdown.cancelled() => break,
        }
    }
    let config = current.borrow().config.clone();
    tracing::debug!(
        grace = ?config.timeouts.shutdown_grace,
        "shutting down: no new connections, draining in-flight requests"
    );
    shutdown.cancel();
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
    mut current: watch::Receiver<Arc<Worker>>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let local = listener.tcp.local_addr().ok();
    loop {
        // Wait for a free connection slot before accepting: over the limit,
        // new clients wait in the kernel's backlog and existing ones are
        // unaffected.
        let limit = current.borrow_and_update().limit.clone();
        let permit = tokio::select! {
            permit = limit.acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            // A reload may bring another limit.
            changed = current.changed() => match changed {
                Ok(()) => continue,
                Err(_) => return,
            },
            () = stop.cancelled() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.tcp.accept() => accepted,
            () = stop.cancelled() => return,
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
        // The newest configuration, even if it came while accepting.
        let worker = current.borrow_and_update().clone();
        let proxied = match &listener.proxy_protocol {
            None => false,
            Some(trusted) if trusted.contains(peer.ip()) => true,
            Some(_) => {
                // Its PROXY header, if it sent one, would be a claim
                // anyone can make.
                tracing::debug!(%peer, "closed: not a source PROXY headers are taken from");
                worker
                    .metrics
                    .proxy_protocol_rejected(ProxyRejection::Untrusted);
                continue;
            }
        };
        let acceptor = if listener.tls {
            worker.acceptor.clone()
        } else {
            None
        };
        let span = tracing::debug_span!("conn", %peer, client = tracing::field::Empty);
        tracker.spawn(
            async move {
                let _permit = permit;
                worker.metrics.connection_opened();
                let addresses = Addresses {
                    peer,
                    local,
                    proxied,
                };
                serve_connection(stream, addresses, acceptor, &worker).await;
                worker.metrics.connection_closed();
            }
            .instrument(span),
        );
    }
}

/// Where an accepted connection is from and to, as its socket says.
struct Addresses {
    peer: SocketAddr,
    local: SocketAddr,
    /// It comes from a trusted load balancer and starts with a PROXY
    /// header, which has the client's addresses.
    proxied: bool,
}

async fn serve_connection(
    mut stream: TcpStream,
    addresses: Addresses,
    acceptor: Option<TlsAcceptor>,
    worker: &Arc<Worker>,
) {
    let timeouts = &worker.config.timeouts;
    let Addresses {
        mut peer,
        mut local,
        proxied,
    } = addresses;
    // Bytes read past the PROXY header: the start of the client's own.
    let mut after_header = Bytes::new();
    if proxied {
        let read = proxy_protocol::read_header(&mut stream);
        let rejection = match tokio::time::timeout(timeouts.client_header_read, read).await {
            Ok(Ok((header, rest))) => {
                if let Header::Proxied {
                    source,
                    destination,
                } = header
                {
                    (peer, local) = (source, destination);
                    tracing::Span::current().record("client", tracing::field::display(peer));
                }
                after_header = rest;
                None
            }
            Ok(Err(ReadError::Empty)) => {
                // A load balancer's TCP health check.
                tracing::debug!("closed before a PROXY header");
                return;
            }
            Ok(Err(error)) => {
                tracing::debug!(%error, "closed: no valid PROXY header");
                Some(ProxyRejection::Invalid)
            }
            Err(_) => {
                tracing::debug!("closed: no PROXY header in time");
                Some(ProxyRejection::Timeout)
            }
        };
        if let Some(rejection) = rejection {
            worker.metrics.proxy_protocol_rejected(rejection);
            return;
        }
    }
    let stream = WriteDeadline::new(Prefixed::new(after_header, stream), timeouts.client_write);
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
                worker.sites.for_sni(session.server_name()),
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
