//! The client toward the origin: hyper-util's pooled HTTP/1.1 client over TCP
//! or a Unix socket, wrapped in a tower stack that bounds time and concurrency.

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::AsyncWrite;
use tokio::net::{TcpStream, UnixStream};
use tower::limit::ConcurrencyLimit;
use tower::timeout::Timeout;
use tower::{Service, ServiceBuilder, ServiceExt};

use crate::config::{Config, OriginAddr};
use crate::error::{BoxError, ProxyError};

/// The body of a request sent to the origin.
pub type OriginBody = UnsyncBoxBody<Bytes, BoxError>;

type OriginCall = Pin<Box<dyn Future<Output = Result<Response<Incoming>, BoxError>> + Send>>;

type Stack = Timeout<ConcurrencyLimit<Client<OriginConnector, OriginBody>>>;

/// A handle to the origin, cheap to clone; clones share the pool and the
/// concurrency limit.
#[derive(Clone)]
pub struct Origin {
    stack: Stack,
    /// The URI authority every origin request carries (never the client's:
    /// the origin address comes from config only, so no request can make the
    /// proxy connect elsewhere).
    authority: http::uri::Authority,
    header_timeout: std::time::Duration,
}

impl Origin {
    pub fn new(config: &Config) -> Result<Origin, ProxyError> {
        let connector = OriginConnector::new(config);
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.origin.pool_idle_timeout)
            .pool_max_idle_per_host(config.origin.max_idle_per_host)
            .http1_max_buf_size(config.origin.max_response_header_bytes.max(8192))
            .http1_max_headers(200)
            // Host is written from the client's authority by the proxy.
            .set_host(false)
            .build(connector);
        let authority = match &config.origin.addr {
            OriginAddr::Tcp { host, port } => format!("{}:{port}", bracket(host)),
            OriginAddr::Unix(_) => "localhost".to_string(),
        };
        let authority = authority
            .parse()
            .map_err(|_| ProxyError::Unavailable("origin address is not a valid authority"))?;
        Ok(Origin {
            stack: stack(client, config),
            authority,
            header_timeout: config.timeouts.origin_response_header,
        })
    }

    /// The absolute URI hyper-util needs to pick a pooled connection; the
    /// request line it writes is origin-form.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        Uri::builder()
            .scheme("http")
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::BadRequest("invalid request target"))
    }

    /// Send a request and wait for the response head.
    ///
    /// The future is spelled out as `Send + 'static` so that callers in
    /// spawned tasks need no higher-ranked reasoning about the boxed errors.
    pub fn send(
        &self,
        request: Request<OriginBody>,
    ) -> impl Future<Output = Result<Response<Incoming>, ProxyError>> + Send + 'static {
        // Boxing pins down the trait-object lifetimes of the tower future
        // here, where they are concrete.
        let call: OriginCall = Box::pin(self.stack.clone().oneshot(request));
        let header_timeout = self.header_timeout;
        async move { call.await.map_err(|error| classify(error, header_timeout)) }
    }
}

fn classify(error: BoxError, header_timeout: std::time::Duration) -> ProxyError {
    if error.is::<tower::timeout::error::Elapsed>() {
        return ProxyError::OriginTimeout(header_timeout);
    }
    match error.downcast::<hyper_util::client::legacy::Error>() {
        Ok(error) if error.is_connect() => ProxyError::OriginConnect(error),
        Ok(error) => ProxyError::OriginProtocol(error),
        Err(other) => ProxyError::OriginProtocol(other),
    }
}

/// The origin stack, outermost layer first.
fn stack(client: Client<OriginConnector, OriginBody>, config: &Config) -> Stack {
    ServiceBuilder::new()
        // The origin must start answering in time, or the client gets a 504.
        .timeout(config.timeouts.origin_response_header)
        // Bound requests in flight so a client flood cannot open unbounded
        // origin connections (each cancelled HTTP/1.1 exchange costs one).
        .concurrency_limit(config.origin.max_concurrent_requests)
        .service(client)
}

fn bracket(host: &str) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// Connects to the configured origin, whatever URI the request carries.
#[derive(Clone)]
pub struct OriginConnector {
    inner: ConnectorKind,
}

#[derive(Clone)]
enum ConnectorKind {
    Tcp(HttpConnector, Uri),
    Unix(PathBuf),
}

impl OriginConnector {
    fn new(config: &Config) -> OriginConnector {
        let inner = match &config.origin.addr {
            OriginAddr::Tcp { host, port } => {
                let mut http = HttpConnector::new();
                http.set_connect_timeout(Some(config.timeouts.origin_connect));
                http.set_nodelay(true);
                http.set_keepalive(Some(std::time::Duration::from_secs(60)));
                let uri = format!("http://{}:{port}/", bracket(host))
                    .parse()
                    .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1/"));
                ConnectorKind::Tcp(http, uri)
            }
            OriginAddr::Unix(path) => ConnectorKind::Unix(path.clone()),
        };
        OriginConnector { inner }
    }
}

type ConnectFuture = Pin<Box<dyn Future<Output = Result<OriginStream, BoxError>> + Send>>;

impl Service<Uri> for OriginConnector {
    type Response = OriginStream;
    type Error = BoxError;
    type Future = ConnectFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        match &mut self.inner {
            ConnectorKind::Tcp(http, _) => http.poll_ready(cx).map_err(Into::into),
            ConnectorKind::Unix(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        match &mut self.inner {
            ConnectorKind::Tcp(http, target) => {
                let connecting = http.call(target.clone());
                Box::pin(async move {
                    let io = connecting.await?;
                    Ok(OriginStream::Tcp(io.into_inner()))
                })
            }
            ConnectorKind::Unix(path) => {
                let path = path.clone();
                Box::pin(async move {
                    let stream = UnixStream::connect(&path).await.map_err(|e| {
                        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                    })?;
                    Ok(OriginStream::Unix(stream))
                })
            }
        }
    }
}

/// A connection to the origin.
pub enum OriginStream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Connection for OriginStream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl hyper::rt::Read for OriginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Tcp(s) => Pin::new(&mut TokioIo::new(s)).poll_read(cx, buf),
            OriginStream::Unix(s) => Pin::new(&mut TokioIo::new(s)).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for OriginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            OriginStream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Tcp(s) => Pin::new(s).poll_flush(cx),
            OriginStream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            OriginStream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            OriginStream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            OriginStream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            OriginStream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            OriginStream::Tcp(s) => s.is_write_vectored(),
            OriginStream::Unix(s) => s.is_write_vectored(),
        }
    }
}
