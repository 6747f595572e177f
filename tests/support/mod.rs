//! Test builders: a real origin on loopback, the real proxy in-process, and
//! real TLS clients (the `h2` crate for HTTP/2, hyper for HTTP/1.1).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use linkpush::config::{Config, Overrides};
use linkpush::{run, Listener};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio_rustls::TlsConnector;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type OriginBody = UnsyncBoxBody<Bytes, BoxError>;
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<OriginBody>> + Send>>
        + Send
        + Sync,
>;

/// Every test runs under this bound, so a hang fails instead of stalling CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn bounded<F: Future>(future: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, future)
        .await
        .expect("test exceeded its time bound")
}

pub fn full(bytes: impl Into<Bytes>) -> OriginBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// What the origin saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    /// The body, when the handler asked for it to be read (see `Routes`).
    pub body_len: u64,
}

/// Events the origin reports as they happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginEvent {
    Request(String),
    ConnectionClosed,
}

/// A real HTTP/1.1 origin on 127.0.0.1:0.
pub struct TestOrigin {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub events: mpsc::UnboundedReceiver<OriginEvent>,
    /// Connections open right now, and the most ever open at once.
    pub connections: Arc<ConnectionCount>,
    stop: Option<oneshot::Sender<()>>,
}

/// The origin's own count of its open connections.
#[derive(Debug, Default)]
pub struct ConnectionCount {
    open: std::sync::atomic::AtomicUsize,
    peak: std::sync::atomic::AtomicUsize,
    accepted: std::sync::atomic::AtomicUsize,
}

impl ConnectionCount {
    pub fn open(&self) -> usize {
        self.open.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn peak(&self) -> usize {
        self.peak.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn opened(&self) {
        use std::sync::atomic::Ordering::SeqCst;
        self.accepted.fetch_add(1, SeqCst);
        let now = self.open.fetch_add(1, SeqCst) + 1;
        self.peak.fetch_max(now, SeqCst);
    }

    fn closed(&self) {
        self.open.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl TestOrigin {
    /// An origin answering with `handler`.
    pub async fn start(handler: Handler) -> TestOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (events_tx, events) = mpsc::unbounded_channel();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let seen_log = seen.clone();
        let connections = Arc::new(ConnectionCount::default());
        let count = connections.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                let handler = handler.clone();
                let seen = seen_log.clone();
                let events = events_tx.clone();
                let count = count.clone();
                count.opened();
                tokio::spawn(async move {
                    let events_in = events.clone();
                    let service = service_fn(move |request: Request<Incoming>| {
                        let handler = handler.clone();
                        let seen = seen.clone();
                        let events = events_in.clone();
                        async move {
                            let path = request
                                .uri()
                                .path_and_query()
                                .map(|p| p.as_str().to_string())
                                .unwrap_or_default();
                            seen.lock().unwrap().push(Seen {
                                method: request.method().to_string(),
                                path: path.clone(),
                                headers: request.headers().clone(),
                                body_len: 0,
                            });
                            let _ = events.send(OriginEvent::Request(path));
                            Ok::<_, Infallible>(handler(request).await)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    count.closed();
                    let _ = events.send(OriginEvent::ConnectionClosed);
                });
            }
        });
        TestOrigin {
            addr,
            seen,
            events,
            connections,
            stop: Some(stop),
        }
    }

    /// An origin serving fixed routes.
    pub async fn routes(routes: Routes) -> TestOrigin {
        let routes = Arc::new(routes);
        TestOrigin::start(Arc::new(move |request| {
            let routes = routes.clone();
            Box::pin(async move { routes.respond(request).await })
        }))
        .await
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn seen_paths(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.path).collect()
    }

    /// Wait for the next event matching `want`.
    pub async fn wait_for(&mut self, want: &OriginEvent) {
        bounded(async {
            loop {
                match self.events.recv().await {
                    Some(event) if &event == want => return,
                    Some(_) => continue,
                    None => panic!("origin stopped before {want:?}"),
                }
            }
        })
        .await
    }
}

impl Drop for TestOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A fixed response.
#[derive(Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Resp {
    pub fn new(status: u16, body: impl Into<Bytes>) -> Resp {
        Resp {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }

    pub fn html(body: &str) -> Resp {
        Resp::new(200, body.to_string()).header("content-type", "text/html")
    }

    pub fn header(mut self, name: &str, value: &str) -> Resp {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// A `Link` header line, as PHP's `header('Link: …', false)` sends it.
    pub fn link(self, value: &str) -> Resp {
        self.header("link", value)
    }

    pub fn into_response(self) -> Response<OriginBody> {
        let mut response = Response::new(full(self.body.clone()));
        *response.status_mut() = StatusCode::from_u16(self.status).unwrap();
        for (name, value) in &self.headers {
            response.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        response
    }
}

/// Path -> response, with a 404 for anything else.
#[derive(Clone, Default)]
pub struct Routes {
    routes: Vec<(String, Resp)>,
}

impl Routes {
    pub fn new() -> Routes {
        Routes::default()
    }

    pub fn route(mut self, path: &str, resp: Resp) -> Routes {
        self.routes.push((path.to_string(), resp));
        self
    }

    async fn respond(&self, request: Request<Incoming>) -> Response<OriginBody> {
        let path = request
            .uri()
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_default();
        // Read (and drop) the request body, as a real app would.
        let _ = request.into_body().collect().await;
        match self.routes.iter().find(|(p, _)| *p == path) {
            Some((_, resp)) => resp.clone().into_response(),
            None => Resp::new(404, "no such page\n").into_response(),
        }
    }
}

/// A certificate for `localhost` written to disk, and a client config that
/// trusts exactly it.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> TestCert {
        // The names a client may use to reach the proxy in tests; pushes
        // are only promised under names the certificate covers.
        TestCert::for_names(&["localhost", "127.0.0.1", "::1"])
    }

    /// A self-signed certificate for `names`; its `client_config` trusts
    /// exactly it.
    pub fn for_names(names: &[&str]) -> TestCert {
        let names: Vec<String> = names.iter().map(|name| name.to_string()).collect();
        let generated = rcgen::generate_simple_self_signed(names).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, generated.cert.pem()).unwrap();
        std::fs::write(&key_path, generated.signing_key.serialize_pem()).unwrap();
        TestCert {
            der: generated.cert.der().clone(),
            dir,
            cert_path,
            key_path,
        }
    }

    pub fn client_config(&self, alpn: &[&[u8]]) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

/// The real proxy, running in this test's runtime.
pub struct TestProxy {
    /// The TLS listener.
    pub addr: SocketAddr,
    /// The cleartext listener (HTTP/1.1 + h2c), when asked for.
    pub plain_addr: Option<SocketAddr>,
    pub cert: TestCert,
    stop: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<()>>,
}

impl TestProxy {
    /// Start the proxy in front of `origin_url`, with `extra` TOML appended
    /// to a minimal config (tables such as `[push]` may be given).
    pub async fn start(origin_url: &str, extra: &str) -> TestProxy {
        TestProxy::start_with(origin_url, extra, false).await
    }

    pub async fn start_with(origin_url: &str, extra: &str, plain: bool) -> TestProxy {
        let mut listen = "[[listen]]\naddress = \"127.0.0.1:0\"\n".to_owned();
        if plain {
            listen.push_str("[[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n");
        }
        TestProxy::start_listening(origin_url, &listen, extra).await
    }

    /// Start the proxy with the `[[listen]]` tables `listen`, each bound to
    /// a fresh port of 127.0.0.1 whatever its address says. `addr` is the
    /// first TLS listener, `plain_addr` the first cleartext one.
    pub async fn start_listening(origin_url: &str, listen: &str, extra: &str) -> TestProxy {
        let cert = TestCert::new();
        let text = format!(
            "{listen}\n[tls]\ncert = {cert:?}\nkey = {key:?}\n\n[origin]\nurl = \"{origin_url}\"\n\n{extra}\n",
            cert = cert.cert_path.display().to_string(),
            key = cert.key_path.display().to_string(),
        );
        let config = Config::from_toml_str(&text, cert.dir.path(), &Overrides::default())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let mut listeners = Vec::new();
        let (mut addr, mut plain_addr) = (None, None);
        for configured in &config.listeners {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let bound = tcp.local_addr().unwrap();
            let first = if configured.tls {
                &mut addr
            } else {
                &mut plain_addr
            };
            first.get_or_insert(bound);
            listeners.push(Listener::new(tcp, configured));
        }
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(async move {
            run(Arc::new(config), listeners, async move {
                let _ = stopped.await;
            })
            .await
            .expect("proxy failed");
        });
        TestProxy {
            addr: addr.expect("a TLS listener"),
            plain_addr,
            cert,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Begin graceful shutdown; returns the handle that completes when the
    /// proxy has drained.
    pub fn shutdown(&mut self) -> tokio::task::JoinHandle<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.done.take().expect("already shut down")
    }

    pub async fn tls(&self, alpn: &[&[u8]]) -> tokio_rustls::client::TlsStream<TcpStream> {
        let connector = TlsConnector::from(Arc::new(self.cert.client_config(alpn)));
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        // As browsers and curl do: small frames (WINDOW_UPDATE) go out at
        // once instead of waiting on a delayed ACK.
        tcp.set_nodelay(true).unwrap();
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the proxy")
    }

    /// An HTTP/2 client over TLS (ALPN h2).
    pub async fn h2(&self, enable_push: bool) -> H2Client {
        let tls = self.tls(&[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, connection) = h2::client::Builder::new()
            .enable_push(enable_push)
            .handshake::<_, Bytes>(tls)
            .await
            .expect("h2 handshake");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        H2Client {
            send,
            authority: format!("localhost:{}", self.addr.port()),
            _driver: driver,
        }
    }

    /// A TLS connection from the chosen `source` address (port picked by
    /// the system), so that the proxy sees a distinct client. On Linux all
    /// of 127.0.0.0/8 is loopback: 127.0.0.2, 127.0.0.3… need no setup.
    pub async fn tls_from(
        &self,
        source: IpAddr,
        alpn: &[&[u8]],
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let socket = match source {
            IpAddr::V4(_) => TcpSocket::new_v4(),
            IpAddr::V6(_) => TcpSocket::new_v6(),
        }
        .expect("client socket");
        socket
            .bind(SocketAddr::new(source, 0))
            .unwrap_or_else(|e| panic!("bind the client to {source}: {e}"));
        let tcp = socket
            .connect(self.addr)
            .await
            .expect("connect to the proxy");
        let connector = TlsConnector::from(Arc::new(self.cert.client_config(alpn)));
        connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("TLS handshake with the proxy")
    }

    /// An HTTP/2 client over TLS from the chosen `source` address.
    pub async fn h2_from(&self, source: IpAddr, enable_push: bool) -> H2Client {
        let tls = self.tls_from(source, &[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (send, connection) = h2::client::Builder::new()
            .enable_push(enable_push)
            .handshake::<_, Bytes>(tls)
            .await
            .expect("h2 handshake");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        H2Client {
            send,
            authority: format!("localhost:{}", self.addr.port()),
            _driver: driver,
        }
    }

    /// An HTTP/1.1 client over TLS (ALPN http/1.1).
    pub async fn h1(&self) -> H1Client {
        let tls = self.tls(&[b"http/1.1"]).await;
        let (send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("h1 handshake");
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        H1Client {
            send,
            host: format!("localhost:{}", self.addr.port()),
            _driver: driver,
        }
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The metrics page, over plain HTTP/1.1. The proxy binds the metrics
/// port as it starts, so a refused connection is tried again, within the
/// test's bound.
pub async fn metrics_text(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = bounded(async {
        loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => break stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    stream.read_to_string(&mut text).await.unwrap();
    text
}

/// The value of the one sample `series` (name and labels as exposed) in a
/// metrics page.
pub fn metric_value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

/// A port that was free a moment ago, for the metrics endpoint.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A pushed response as the client received it.
#[derive(Debug)]
pub struct Pushed {
    pub path: String,
    pub promise_headers: HeaderMap,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

/// A whole exchange as an HTTP/2 client saw it.
#[derive(Debug)]
pub struct Exchange {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
    /// Pushes whose PUSH_PROMISE had arrived before the response HEADERS.
    pub pushes_before_headers: Vec<String>,
    pub pushes: Vec<Pushed>,
}

impl Exchange {
    pub fn links(&self) -> Vec<String> {
        self.headers
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }

    pub fn pushed_paths(&self) -> Vec<String> {
        let mut paths: Vec<String> = self.pushes.iter().map(|p| p.path.clone()).collect();
        paths.sort();
        paths
    }
}

pub struct H2Client {
    pub send: h2::client::SendRequest<Bytes>,
    pub authority: String,
    _driver: tokio::task::JoinHandle<()>,
}

impl H2Client {
    /// A client on a connection the test set up itself.
    pub fn from_parts(send: h2::client::SendRequest<Bytes>, authority: String) -> H2Client {
        H2Client {
            send,
            authority,
            _driver: tokio::spawn(async {}),
        }
    }

    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.authority, path))
    }

    /// GET `path` and collect the response and every push.
    pub async fn get(&mut self, path: &str) -> Exchange {
        let request = self.request("GET", path).body(()).unwrap();
        self.exchange(request, None).await
    }

    /// Send a request with an optional body and collect everything.
    pub async fn exchange(&mut self, request: Request<()>, body: Option<Bytes>) -> Exchange {
        bounded(async {
            self.send = self.send.clone().ready().await.expect("connection ready");
            let (mut response, mut stream) = self
                .send
                .send_request(request, body.is_none())
                .expect("send request");
            if let Some(body) = body {
                stream.send_data(body, true).expect("send body");
            }
            let mut promises = response.push_promises();
            let response = response.await.expect("response head");
            // Promises sent before the HEADERS are already buffered: take
            // them without waiting.
            let mut pushes_before_headers = Vec::new();
            let mut buffered = Vec::new();
            while let Ok(Some(Ok(promise))) =
                tokio::time::timeout(Duration::ZERO, promises.push_promise()).await
            {
                pushes_before_headers.push(promise.request().uri().path().to_string());
                buffered.push(promise);
            }
            let (head, body) = response.into_parts();
            let body = read_body(body).await;
            // Any later promises (there should be none) after the body.
            while let Ok(Some(Ok(promise))) =
                tokio::time::timeout(Duration::from_millis(50), promises.push_promise()).await
            {
                buffered.push(promise);
            }
            let mut pushes = Vec::new();
            for promise in buffered {
                let (request, response) = promise.into_parts();
                let path = request.uri().path_and_query().unwrap().as_str().to_string();
                let promise_headers = request.headers().clone();
                match response.await {
                    Ok(response) => {
                        let (head, body) = response.into_parts();
                        pushes.push(Pushed {
                            path,
                            promise_headers,
                            status: head.status,
                            headers: head.headers,
                            body: read_body(body).await,
                        });
                    }
                    Err(error) => pushes.push(Pushed {
                        path,
                        promise_headers,
                        status: StatusCode::from_u16(599).unwrap(),
                        headers: HeaderMap::new(),
                        body: Err(error.to_string()),
                    }),
                }
            }
            Exchange {
                status: head.status,
                headers: head.headers,
                body,
                pushes_before_headers,
                pushes,
            }
        })
        .await
    }
}

/// Read an h2 body whole, releasing flow-control capacity as it goes.
pub async fn read_body(mut body: h2::RecvStream) -> Result<Bytes, String> {
    let mut out = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| e.to_string())?;
        let _ = body.flow_control().release_capacity(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

pub struct H1Client {
    pub send: hyper::client::conn::http1::SendRequest<OriginBody>,
    pub host: String,
    _driver: tokio::task::JoinHandle<()>,
}

pub struct H1Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, String>,
}

impl H1Response {
    pub fn links(&self) -> Vec<String> {
        self.headers
            .get_all("link")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    }
}

impl H1Client {
    pub fn request(&self, method: &str, path: &str) -> http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.host.clone())
    }

    pub async fn get(&mut self, path: &str) -> H1Response {
        let request = self.request("GET", path).body(full(Bytes::new())).unwrap();
        self.exchange(request).await
    }

    pub async fn exchange(&mut self, request: Request<OriginBody>) -> H1Response {
        bounded(async {
            self.send.ready().await.expect("connection ready");
            let response = self
                .send
                .send_request(request)
                .await
                .expect("response head");
            let (head, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map(|c| c.to_bytes())
                .map_err(|e| e.to_string());
            H1Response {
                status: head.status,
                headers: head.headers,
                body,
            }
        })
        .await
    }
}

/// Resident set size of this process, in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|line| line.starts_with("VmRSS:"))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// Whether interop tests must fail (rather than skip) when a program is
/// missing: in CI, always.
pub fn require_programs() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// A body of `total` bytes made of one chunk repeated, produced as it is
/// read: large transfers without a large buffer on either side.
pub struct RepeatBody {
    chunk: Bytes,
    remaining: u64,
    length_known: bool,
}

impl RepeatBody {
    pub fn new(chunk_size: usize, total: u64) -> RepeatBody {
        RepeatBody {
            chunk: Bytes::from(vec![b'x'; chunk_size]),
            remaining: total,
            length_known: true,
        }
    }

    /// Hide the length, so HTTP/1.1 sends the body chunked.
    pub fn with_unknown_length(mut self) -> RepeatBody {
        self.length_known = false;
        self
    }

    pub fn boxed(self) -> OriginBody {
        self.boxed_unsync()
    }
}

impl http_body::Body for RepeatBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = (self.chunk.len() as u64).min(self.remaining) as usize;
        self.remaining -= n as u64;
        let data = self.chunk.slice(..n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.length_known && self.remaining == 0
    }

    fn size_hint(&self) -> http_body::SizeHint {
        if self.length_known {
            http_body::SizeHint::with_exact(self.remaining)
        } else {
            http_body::SizeHint::default()
        }
    }
}

/// Drain an origin-side request body, counting its bytes.
pub async fn count_body(body: Incoming) -> Result<u64, String> {
    let mut body = body;
    let mut total = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Some(data) = frame.data_ref() {
            total += data.len() as u64;
        }
    }
    Ok(total)
}

/// Send `total` bytes on an h2 request stream with flow control.
pub async fn send_h2_body(stream: &mut h2::SendStream<Bytes>, total: u64, chunk: usize) {
    let block = Bytes::from(vec![b'u'; chunk]);
    let mut left = total;
    while left > 0 {
        let want = (chunk as u64).min(left) as usize;
        stream.reserve_capacity(want);
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .expect("stream open")
            .expect("capacity");
        let n = granted.min(want);
        if n == 0 {
            continue;
        }
        left -= n as u64;
        stream
            .send_data(block.slice(..n), left == 0)
            .expect("send data");
    }
}

// ---------------------------------------------------------------------------
// Wire-level helpers for hostile peers: hand-written HTTP/2 frames toward the
// proxy, raw HTTP/1.1 over TLS, a scripted raw HTTP/1.1 origin, and an h2
// client call that reports resets instead of panicking.

#[allow(unused_imports)]
pub use wire::*;

pub mod wire {
    use std::future::Future;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, Request, StatusCode};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::watch;
    use tokio::time::Instant;

    use super::{H2Client, TestProxy};

    /// The longest one step of a wire-level exchange may take before the
    /// test fails (much shorter than the whole-test bound).
    pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

    /// Run one step under [`STEP_TIMEOUT`].
    pub async fn step<F: Future>(what: &str, future: F) -> F::Output {
        tokio::time::timeout(STEP_TIMEOUT, future)
            .await
            .unwrap_or_else(|_| panic!("{what}: no progress within {STEP_TIMEOUT:?}"))
    }

    /// The client connection preface (RFC 9113 §3.4).
    pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    /// Frame types and flags (RFC 9113 §6).
    pub mod h2frame {
        pub const DATA: u8 = 0x0;
        pub const HEADERS: u8 = 0x1;
        pub const PRIORITY: u8 = 0x2;
        pub const RST_STREAM: u8 = 0x3;
        pub const SETTINGS: u8 = 0x4;
        pub const PUSH_PROMISE: u8 = 0x5;
        pub const PING: u8 = 0x6;
        pub const GOAWAY: u8 = 0x7;
        pub const WINDOW_UPDATE: u8 = 0x8;
        pub const CONTINUATION: u8 = 0x9;

        pub const END_STREAM: u8 = 0x1;
        pub const ACK: u8 = 0x1;
        pub const END_HEADERS: u8 = 0x4;
        pub const PADDED: u8 = 0x8;
        pub const PRIORITY_FLAG: u8 = 0x20;
    }

    /// Error codes (RFC 9113 §7).
    pub mod h2code {
        pub const NO_ERROR: u32 = 0x0;
        pub const PROTOCOL_ERROR: u32 = 0x1;
        pub const INTERNAL_ERROR: u32 = 0x2;
        pub const REFUSED_STREAM: u32 = 0x7;
        pub const CANCEL: u32 = 0x8;
        pub const COMPRESSION_ERROR: u32 = 0x9;
        pub const ENHANCE_YOUR_CALM: u32 = 0xb;
    }

    /// SETTINGS identifiers (RFC 9113 §6.5.2).
    pub mod h2setting {
        pub const HEADER_TABLE_SIZE: u16 = 0x1;
        pub const ENABLE_PUSH: u16 = 0x2;
        pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
        pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    }

    /// One header field of a hand-encoded block: raw name and value bytes.
    pub type Field = (Vec<u8>, Vec<u8>);

    pub fn field(name: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Field {
        (name.as_ref().to_vec(), value.as_ref().to_vec())
    }

    /// `:method`, `:scheme` (https), `:authority` and `:path`, in that order.
    pub fn request_fields(method: &str, path: &str, authority: &str) -> Vec<Field> {
        vec![
            field(":method", method),
            field(":scheme", "https"),
            field(":authority", authority),
            field(":path", path),
        ]
    }

    /// Encode an HPACK integer with an N-bit prefix (RFC 7541 §5.1).
    pub fn hpack_int(out: &mut Vec<u8>, value: usize, prefix_bits: u8, first_byte: u8) {
        let max = (1usize << prefix_bits) - 1;
        if value < max {
            out.push(first_byte | value as u8);
            return;
        }
        out.push(first_byte | max as u8);
        let mut rest = value - max;
        while rest >= 0x80 {
            out.push((rest & 0x7f) as u8 | 0x80);
            rest >>= 7;
        }
        out.push(rest as u8);
    }

    /// Every field as a "literal header field without indexing, new name",
    /// with raw (non-Huffman) strings (RFC 7541 §6.2.2). No byte is checked,
    /// so any malformed name or value goes out as given.
    pub fn hpack_literals(fields: &[Field]) -> Vec<u8> {
        let mut out = Vec::new();
        for (name, value) in fields {
            out.push(0x00);
            hpack_int(&mut out, name.len(), 7, 0x00);
            out.extend_from_slice(name);
            hpack_int(&mut out, value.len(), 7, 0x00);
            out.extend_from_slice(value);
        }
        out
    }

    fn hpack_read_int(bytes: &[u8], prefix_bits: u8) -> Option<(usize, usize)> {
        let max = (1usize << prefix_bits) - 1;
        let mut value = (*bytes.first()? as usize) & max;
        if value < max {
            return Some((value, 1));
        }
        let mut shift = 0;
        let mut used = 1;
        loop {
            let byte = *bytes.get(used)?;
            used += 1;
            value += ((byte & 0x7f) as usize) << shift;
            if byte & 0x80 == 0 {
                return Some((value, used));
            }
            shift += 7;
            if shift > 28 {
                return None;
            }
        }
    }

    /// Decode a Huffman string made only of the digits 0-9 (RFC 7541
    /// Appendix B: '0'-'2' are 5-bit codes 0-2, '3'-'9' are 6-bit codes
    /// 0x19-0x1f), as a `:status` value is.
    fn huffman_digits(data: &[u8]) -> Option<Vec<u8>> {
        let total = data.len() * 8;
        let bit = |n: usize| u32::from((data[n / 8] >> (7 - n % 8)) & 1);
        let read =
            |from: usize, count: usize| (0..count).fold(0u32, |acc, k| acc << 1 | bit(from + k));
        let mut pos = 0;
        let mut out = Vec::new();
        while total - pos >= 5 {
            let five = read(pos, 5);
            if five <= 2 {
                out.push(b'0' + five as u8);
                pos += 5;
                continue;
            }
            if total - pos >= 6 {
                let six = read(pos, 6);
                if (0x19..=0x1f).contains(&six) {
                    out.push(b'3' + (six - 0x19) as u8);
                    pos += 6;
                    continue;
                }
            }
            break;
        }
        // What is left must be end-of-string padding: under 8 bits, all ones.
        let rest = total - pos;
        if rest >= 8 || (0..rest).any(|k| bit(pos + k) == 0) {
            return None;
        }
        Some(out)
    }

    /// The `:status` of a response header block whose first field is the
    /// status encoded from the static table or as a literal: always so for
    /// the first response on a connection. `None` when it cannot be told.
    pub fn hpack_first_status(block: &[u8]) -> Option<u16> {
        let mut at = 0;
        // Skip dynamic table size updates.
        while block.get(at)? & 0xe0 == 0x20 {
            at += hpack_read_int(&block[at..], 5)?.1;
        }
        let first = block[at];
        if first & 0x80 != 0 {
            let (index, _) = hpack_read_int(&block[at..], 7)?;
            return match index {
                8 => Some(200),
                9 => Some(204),
                10 => Some(206),
                11 => Some(304),
                12 => Some(400),
                13 => Some(404),
                14 => Some(500),
                _ => None,
            };
        }
        let prefix = if first & 0x40 != 0 { 6 } else { 4 };
        let (name_index, used) = hpack_read_int(&block[at..], prefix)?;
        if !(8..=14).contains(&name_index) {
            return None;
        }
        at += used;
        let huffman = block.get(at)? & 0x80 != 0;
        let (len, used) = hpack_read_int(&block[at..], 7)?;
        at += used;
        let raw = block.get(at..at + len)?;
        let text = if huffman {
            huffman_digits(raw)?
        } else {
            raw.to_vec()
        };
        std::str::from_utf8(&text).ok()?.parse().ok()
    }

    /// One frame as read off the wire.
    #[derive(Debug, Clone)]
    pub struct RawFrame {
        pub kind: u8,
        pub flags: u8,
        pub stream: u32,
        pub payload: Vec<u8>,
    }

    impl RawFrame {
        fn unpadded(&self, extra_skip: usize) -> &[u8] {
            let mut body = &self.payload[..];
            let mut pad = 0;
            if self.flags & h2frame::PADDED != 0 && !body.is_empty() {
                pad = body[0] as usize;
                body = &body[1..];
            }
            let body = body.get(extra_skip..).unwrap_or(&[]);
            &body[..body.len().saturating_sub(pad)]
        }

        /// The header block fragment of a HEADERS frame.
        pub fn header_block(&self) -> &[u8] {
            let skip = if self.flags & h2frame::PRIORITY_FLAG != 0 {
                5
            } else {
                0
            };
            self.unpadded(skip)
        }

        /// The payload of a DATA frame.
        pub fn data(&self) -> &[u8] {
            self.unpadded(0)
        }

        /// The error code of a RST_STREAM or GOAWAY frame.
        pub fn error_code(&self) -> u32 {
            let at = if self.kind == h2frame::GOAWAY { 4 } else { 0 };
            self.payload
                .get(at..at + 4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                .unwrap_or(u32::MAX)
        }

        /// The last stream id of a GOAWAY frame.
        pub fn last_stream_id(&self) -> u32 {
            self.payload
                .get(..4)
                .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x7fff_ffff)
                .unwrap_or(0)
        }

        pub fn end_stream(&self) -> bool {
            matches!(self.kind, h2frame::DATA | h2frame::HEADERS)
                && self.flags & h2frame::END_STREAM != 0
        }
    }

    /// What reading from a raw connection produced.
    #[derive(Debug)]
    pub enum RawEvent {
        Frame(RawFrame),
        /// The proxy closed the connection (or it failed).
        Closed,
        TimedOut,
    }

    /// How one stream ended, as seen on the wire.
    #[derive(Debug, Default)]
    pub struct RawOutcome {
        pub stream: u32,
        /// The `:status` of each HEADERS block on the stream, when decodable.
        pub statuses: Vec<Option<u16>>,
        pub data: Vec<u8>,
        pub end_stream: bool,
        /// RST_STREAM error code.
        pub reset: Option<u32>,
        /// (last stream id, error code) of a GOAWAY.
        pub goaway: Option<(u32, u32)>,
        pub closed: bool,
        pub timed_out: bool,
    }

    impl RawOutcome {
        /// The status of the first HEADERS block.
        pub fn status(&self) -> Option<u16> {
            self.statuses.first().copied().flatten()
        }

        /// Refused the way the proxy must refuse a malformed request:
        /// RST_STREAM(PROTOCOL_ERROR), a GOAWAY that does not cover the
        /// stream or carries an error, or a 4xx status.
        pub fn rejected(&self) -> bool {
            self.reset == Some(h2code::PROTOCOL_ERROR)
                || matches!(self.goaway, Some((last, code)) if code != h2code::NO_ERROR || last < self.stream)
                || self.status().is_some_and(|s| (400..500).contains(&s))
        }
    }

    /// An HTTP/2 connection to the proxy driven frame by frame.
    pub struct RawH2 {
        io: tokio_rustls::client::TlsStream<TcpStream>,
        buf: Vec<u8>,
        /// `localhost:<port>`, the authority the proxy's certificate names.
        pub authority: String,
        /// Acknowledge SETTINGS and PING frames as they arrive.
        pub auto_ack: bool,
    }

    impl RawH2 {
        /// TLS with ALPN h2, then the preface and an empty SETTINGS frame.
        pub async fn connect(proxy: &TestProxy) -> RawH2 {
            RawH2::connect_with_settings(proxy, &[]).await
        }

        /// TLS with ALPN h2, then the preface and SETTINGS with `settings`.
        pub async fn connect_with_settings(proxy: &TestProxy, settings: &[(u16, u32)]) -> RawH2 {
            let mut raw = RawH2::without_preface(proxy).await;
            raw.write(H2_PREFACE).await;
            raw.settings(settings).await;
            raw
        }

        /// A TLS connection that negotiated h2 and has sent nothing yet.
        pub async fn without_preface(proxy: &TestProxy) -> RawH2 {
            let io = step("TLS handshake", proxy.tls(&[b"h2"])).await;
            assert_eq!(io.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            RawH2 {
                io,
                buf: Vec::new(),
                authority: format!("localhost:{}", proxy.addr.port()),
                auto_ack: true,
            }
        }

        /// The request pseudo-header fields for `path` on this connection.
        pub fn request(&self, method: &str, path: &str) -> Vec<Field> {
            request_fields(method, path, &self.authority)
        }

        /// Write bytes as they are. A write error (the proxy hung up) is
        /// returned; reading shows what happened.
        pub async fn try_write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        }

        /// Write bytes, ignoring a connection the proxy already closed.
        pub async fn write(&mut self, bytes: &[u8]) {
            let _ = self.try_write(bytes).await;
        }

        pub fn encode_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
            let mut out = Vec::with_capacity(9 + payload.len());
            out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
            out.push(kind);
            out.push(flags);
            out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(payload);
            out
        }

        pub async fn frame(&mut self, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
            let bytes = RawH2::encode_frame(kind, flags, stream, payload);
            self.write(&bytes).await;
        }

        pub async fn settings(&mut self, settings: &[(u16, u32)]) {
            let mut payload = Vec::new();
            for (id, value) in settings {
                payload.extend_from_slice(&id.to_be_bytes());
                payload.extend_from_slice(&value.to_be_bytes());
            }
            self.frame(h2frame::SETTINGS, 0, 0, &payload).await;
        }

        /// One HEADERS frame with END_HEADERS carrying `fields`.
        pub async fn headers(&mut self, stream: u32, fields: &[Field], end_stream: bool) {
            let flags = h2frame::END_HEADERS | if end_stream { h2frame::END_STREAM } else { 0 };
            self.frame(h2frame::HEADERS, flags, stream, &hpack_literals(fields))
                .await;
        }

        pub async fn data(&mut self, stream: u32, data: &[u8], end_stream: bool) {
            let flags = if end_stream { h2frame::END_STREAM } else { 0 };
            self.frame(h2frame::DATA, flags, stream, data).await;
        }

        pub async fn rst_stream(&mut self, stream: u32, code: u32) {
            self.frame(h2frame::RST_STREAM, 0, stream, &code.to_be_bytes())
                .await;
        }

        pub async fn window_update(&mut self, stream: u32, increment: u32) {
            self.frame(h2frame::WINDOW_UPDATE, 0, stream, &increment.to_be_bytes())
                .await;
        }

        /// The next frame within `wait`. SETTINGS and PING are acknowledged
        /// as they arrive (when `auto_ack`) and still returned.
        pub async fn next(&mut self, wait: Duration) -> RawEvent {
            let deadline = Instant::now() + wait;
            loop {
                if self.buf.len() >= 9 {
                    let len =
                        u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                    if self.buf.len() >= 9 + len {
                        let b = &self.buf;
                        let frame = RawFrame {
                            kind: b[3],
                            flags: b[4],
                            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
                            payload: b[9..9 + len].to_vec(),
                        };
                        self.buf.drain(..9 + len);
                        if self.auto_ack && frame.flags & h2frame::ACK == 0 {
                            if frame.kind == h2frame::SETTINGS {
                                self.frame(h2frame::SETTINGS, h2frame::ACK, 0, &[]).await;
                            } else if frame.kind == h2frame::PING {
                                let payload = frame.payload.clone();
                                self.frame(h2frame::PING, h2frame::ACK, 0, &payload).await;
                            }
                        }
                        return RawEvent::Frame(frame);
                    }
                }
                self.buf.reserve(16 * 1024);
                match tokio::time::timeout_at(deadline, self.io.read_buf(&mut self.buf)).await {
                    Err(_) => return RawEvent::TimedOut,
                    Ok(Ok(0)) | Ok(Err(_)) => return RawEvent::Closed,
                    Ok(Ok(_)) => {}
                }
            }
        }

        /// Read until the proxy's SETTINGS has arrived (and been
        /// acknowledged) and ours has been acknowledged: after this no
        /// automatic acknowledgement interrupts what the test writes.
        pub async fn settle(&mut self) {
            let (mut theirs, mut ours) = (false, false);
            while !(theirs && ours) {
                match self.next(STEP_TIMEOUT).await {
                    RawEvent::Frame(frame) if frame.kind == h2frame::SETTINGS => {
                        if frame.flags & h2frame::ACK != 0 {
                            ours = true;
                        } else {
                            theirs = true;
                        }
                    }
                    RawEvent::Frame(_) => {}
                    other => panic!("HTTP/2 handshake did not settle: {other:?}"),
                }
            }
        }

        /// Read until `stream` ends (END_STREAM or RST_STREAM) or the
        /// connection does, within [`STEP_TIMEOUT`]. DATA is acknowledged
        /// with WINDOW_UPDATEs so a long body is not stalled.
        pub async fn outcome(&mut self, stream: u32) -> RawOutcome {
            self.outcome_within(stream, STEP_TIMEOUT).await
        }

        pub async fn outcome_within(&mut self, stream: u32, wait: Duration) -> RawOutcome {
            let deadline = Instant::now() + wait;
            let mut out = RawOutcome {
                stream,
                ..RawOutcome::default()
            };
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let frame = match self.next(left).await {
                    RawEvent::Frame(frame) => frame,
                    RawEvent::Closed => {
                        out.closed = true;
                        return out;
                    }
                    RawEvent::TimedOut => {
                        out.timed_out = true;
                        return out;
                    }
                };
                match frame.kind {
                    h2frame::GOAWAY => {
                        let (last, code) = (frame.last_stream_id(), frame.error_code());
                        out.goaway = Some((last, code));
                        if code != h2code::NO_ERROR || last < stream {
                            return out;
                        }
                    }
                    h2frame::RST_STREAM if frame.stream == stream => {
                        out.reset = Some(frame.error_code());
                        return out;
                    }
                    h2frame::HEADERS if frame.stream == stream => {
                        out.statuses.push(hpack_first_status(frame.header_block()));
                        if frame.end_stream() {
                            out.end_stream = true;
                            return out;
                        }
                    }
                    h2frame::DATA if frame.stream == stream => {
                        out.data.extend_from_slice(frame.data());
                        let len = frame.payload.len() as u32;
                        if frame.end_stream() {
                            out.end_stream = true;
                            return out;
                        }
                        if len > 0 {
                            self.window_update(0, len).await;
                            self.window_update(stream, len).await;
                        }
                    }
                    _ => {}
                }
            }
        }

        /// Read until a GOAWAY arrives or the connection closes, within
        /// `wait`; returns every GOAWAY seen as (last stream id, code) and
        /// whether the connection closed.
        pub async fn until_goaway_or_close(&mut self, wait: Duration) -> (Vec<(u32, u32)>, bool) {
            let deadline = Instant::now() + wait;
            let mut goaways = Vec::new();
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                match self.next(left).await {
                    RawEvent::Frame(frame) if frame.kind == h2frame::GOAWAY => {
                        goaways.push((frame.last_stream_id(), frame.error_code()));
                        return (goaways, false);
                    }
                    RawEvent::Frame(_) => {}
                    RawEvent::Closed => return (goaways, true),
                    RawEvent::TimedOut => return (goaways, false),
                }
            }
        }
    }

    /// Send one fresh-connection request made of `fields` (plus an optional
    /// body) and report how its stream ended.
    pub async fn raw_h2_request(
        proxy: &TestProxy,
        fields: Vec<Field>,
        body: Option<&[u8]>,
    ) -> RawOutcome {
        let mut raw = RawH2::connect(proxy).await;
        raw.headers(1, &fields, body.is_none()).await;
        if let Some(body) = body {
            raw.data(1, body, true).await;
        }
        raw.outcome(1).await
    }

    /// Show bytes readably in assertion messages.
    pub fn show(bytes: &[u8]) -> String {
        bytes.escape_ascii().to_string()
    }

    // -----------------------------------------------------------------------
    // HTTP/1.1 over TLS, byte for byte.

    /// What came back on a raw HTTP/1.1 connection.
    #[derive(Debug)]
    pub struct RawReply {
        pub bytes: Vec<u8>,
        /// The proxy closed the connection (rather than the wait running out).
        pub closed: bool,
    }

    impl RawReply {
        /// The status code of the first response.
        pub fn status(&self) -> Option<u16> {
            let text = self.bytes.strip_prefix(b"HTTP/1.1 ")?;
            std::str::from_utf8(text.get(..3)?).ok()?.parse().ok()
        }

        pub fn text(&self) -> String {
            String::from_utf8_lossy(&self.bytes).into_owned()
        }
    }

    /// Write `request` over TLS with ALPN http/1.1 and read until the proxy
    /// closes the connection or `wait` passes.
    pub async fn h1_raw(proxy: &TestProxy, request: &[u8], wait: Duration) -> RawReply {
        let mut tls = step("TLS handshake", proxy.tls(&[b"http/1.1"])).await;
        let _ = tls.write_all(request).await;
        let _ = tls.flush().await;
        let deadline = Instant::now() + wait;
        let mut bytes = Vec::new();
        loop {
            bytes.reserve(16 * 1024);
            match tokio::time::timeout_at(deadline, tls.read_buf(&mut bytes)).await {
                Err(_) => {
                    return RawReply {
                        bytes,
                        closed: false,
                    }
                }
                Ok(Ok(0)) | Ok(Err(_)) => {
                    return RawReply {
                        bytes,
                        closed: true,
                    }
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    // -----------------------------------------------------------------------
    // A raw origin.

    /// What a raw origin does after reading one request.
    #[derive(Debug, Clone)]
    pub enum OriginStep {
        /// Write these bytes.
        Write(Vec<u8>),
        /// Wait (a scripted delay, not synchronisation).
        Pause(Duration),
        /// Close the connection.
        Close,
        /// Say nothing more; keep the connection open and note when the
        /// proxy closes it.
        Hang,
    }

    impl OriginStep {
        pub fn write(bytes: impl AsRef<[u8]>) -> OriginStep {
            OriginStep::Write(bytes.as_ref().to_vec())
        }
    }

    type Script = Arc<dyn Fn(usize) -> Vec<OriginStep> + Send + Sync>;

    #[derive(Default)]
    struct RawOriginState {
        accepted: AtomicUsize,
        /// Connections the proxy closed.
        closed: AtomicUsize,
        /// Request heads, in arrival order.
        heads: Mutex<Vec<Vec<u8>>>,
    }

    /// An HTTP/1.1 origin on 127.0.0.1:0 that answers with scripted bytes:
    /// the script gets the request's number (0, 1, ...) across connections.
    /// After a script without `Close` or `Hang` the connection reads the
    /// next request.
    pub struct RawOrigin {
        pub addr: SocketAddr,
        state: Arc<RawOriginState>,
        changed: watch::Sender<u64>,
        task: tokio::task::JoinHandle<()>,
    }

    impl RawOrigin {
        pub async fn start(
            script: impl Fn(usize) -> Vec<OriginStep> + Send + Sync + 'static,
        ) -> RawOrigin {
            RawOrigin::start_with(true, script).await
        }

        /// Like [`RawOrigin::start`], but the script runs as soon as the
        /// request head is in, before any request body is read (an early
        /// response to an upload).
        pub async fn start_before_body(
            script: impl Fn(usize) -> Vec<OriginStep> + Send + Sync + 'static,
        ) -> RawOrigin {
            RawOrigin::start_with(false, script).await
        }

        async fn start_with(
            read_bodies: bool,
            script: impl Fn(usize) -> Vec<OriginStep> + Send + Sync + 'static,
        ) -> RawOrigin {
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind raw origin");
            let addr = listener.local_addr().expect("raw origin addr");
            let state = Arc::new(RawOriginState::default());
            let (changed, _) = watch::channel(0u64);
            let script: Script = Arc::new(script);
            let task = {
                let state = state.clone();
                let changed = changed.clone();
                tokio::spawn(async move {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        state.accepted.fetch_add(1, Ordering::SeqCst);
                        changed.send_modify(|v| *v += 1);
                        tokio::spawn(serve_raw(
                            stream,
                            state.clone(),
                            changed.clone(),
                            script.clone(),
                            read_bodies,
                        ));
                    }
                })
            };
            RawOrigin {
                addr,
                state,
                changed,
                task,
            }
        }

        /// Answer every request with `response`, then close the connection.
        pub async fn always(response: impl AsRef<[u8]>) -> RawOrigin {
            let response = response.as_ref().to_vec();
            RawOrigin::start(move |_| vec![OriginStep::Write(response.clone()), OriginStep::Close])
                .await
        }

        pub fn url(&self) -> String {
            format!("http://{}", self.addr)
        }

        /// TCP connections accepted so far.
        pub fn accepted(&self) -> usize {
            self.state.accepted.load(Ordering::SeqCst)
        }

        /// Connections the proxy has closed so far.
        pub fn closed(&self) -> usize {
            self.state.closed.load(Ordering::SeqCst)
        }

        /// Request heads received so far (request line and fields, raw).
        pub fn heads(&self) -> Vec<Vec<u8>> {
            self.state.heads.lock().unwrap().clone()
        }

        /// The request lines received so far.
        pub fn request_lines(&self) -> Vec<Vec<u8>> {
            self.heads()
                .iter()
                .map(|head| head.split(|&b| b == b'\r').next().unwrap_or(&[]).to_vec())
                .collect()
        }

        /// Wait (within [`STEP_TIMEOUT`]) until `condition` holds.
        pub async fn wait_until(&self, what: &str, condition: impl Fn(&RawOrigin) -> bool) {
            let mut changes = self.changed.subscribe();
            step(what, changes.wait_for(|_| condition(self)))
                .await
                .expect("raw origin alive");
        }
    }

    impl Drop for RawOrigin {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
        haystack.windows(needle.len()).position(|w| w == needle)
    }

    /// A field's value in a raw head, by case-insensitive name.
    pub fn head_field(head: &[u8], name: &str) -> Vec<Vec<u8>> {
        head.split(|&b| b == b'\n')
            .skip(1)
            .filter_map(|line| {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let colon = line.iter().position(|&b| b == b':')?;
                let (n, v) = line.split_at(colon);
                n.eq_ignore_ascii_case(name.as_bytes())
                    .then(|| v[1..].trim_ascii().to_vec())
            })
            .collect()
    }

    async fn serve_raw(
        mut stream: TcpStream,
        state: Arc<RawOriginState>,
        changed: watch::Sender<u64>,
        script: Script,
        read_bodies: bool,
    ) {
        let mut buf: Vec<u8> = Vec::new();
        let peer_closed = |state: &RawOriginState| {
            state.closed.fetch_add(1, Ordering::SeqCst);
            changed.send_modify(|v| *v += 1);
        };
        loop {
            let head_end = loop {
                if let Some(at) = find(&buf, b"\r\n\r\n") {
                    break at + 4;
                }
                buf.reserve(8 * 1024);
                match stream.read_buf(&mut buf).await {
                    Ok(0) | Err(_) => return peer_closed(&state),
                    Ok(_) => {}
                }
            };
            let head: Vec<u8> = buf.drain(..head_end).collect();
            let index = {
                let mut heads = state.heads.lock().unwrap();
                heads.push(head.clone());
                heads.len() - 1
            };
            changed.send_modify(|v| *v += 1);
            // Read the request body, if it declares one.
            let length = head_field(&head, "content-length")
                .first()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<usize>().ok());
            let chunked = head_field(&head, "transfer-encoding")
                .iter()
                .any(|v| v.eq_ignore_ascii_case(b"chunked"));
            if !read_bodies {
                // Answer at once; whatever body follows is left unread.
            } else if let Some(length) = length {
                while buf.len() < length {
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return peer_closed(&state),
                        Ok(_) => {}
                    }
                }
                buf.drain(..length);
            } else if chunked {
                loop {
                    if buf.starts_with(b"0\r\n\r\n") {
                        buf.drain(..5);
                        break;
                    }
                    if let Some(at) = find(&buf, b"\r\n0\r\n\r\n") {
                        buf.drain(..at + 7);
                        break;
                    }
                    match stream.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return peer_closed(&state),
                        Ok(_) => {}
                    }
                }
            }
            for action in script(index) {
                match action {
                    OriginStep::Write(bytes) => {
                        if stream.write_all(&bytes).await.is_err() {
                            return peer_closed(&state);
                        }
                    }
                    OriginStep::Pause(duration) => tokio::time::sleep(duration).await,
                    OriginStep::Close => {
                        let _ = stream.shutdown().await;
                        return;
                    }
                    OriginStep::Hang => loop {
                        buf.reserve(8 * 1024);
                        match stream.read_buf(&mut buf).await {
                            Ok(0) | Err(_) => return peer_closed(&state),
                            Ok(_) => {}
                        }
                    },
                }
            }
        }
    }

    /// An origin URL on which nothing listens: connections are refused.
    pub async fn refused_origin_url() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        format!("http://{addr}")
    }

    // -----------------------------------------------------------------------
    // The h2 client, reporting errors.

    /// A response as an h2 client received it, with how its body ended.
    #[derive(Debug)]
    pub struct H2Reply {
        pub status: StatusCode,
        pub headers: HeaderMap,
        pub body: Bytes,
        /// Why the body stopped before END_STREAM, if it did.
        pub body_error: Option<h2::Error>,
    }

    impl H2Client {
        /// Send a request (with an optional body) and collect the response,
        /// returning a reset, GOAWAY or refused request as the error.
        pub async fn try_exchange(
            &mut self,
            request: Request<()>,
            body: Option<Bytes>,
        ) -> Result<H2Reply, h2::Error> {
            step("h2 exchange", async {
                let mut send = self.send.clone().ready().await?;
                let (response, mut stream) = send.send_request(request, body.is_none())?;
                if let Some(body) = body {
                    stream.send_data(body, true)?;
                }
                let response = response.await?;
                let (head, mut recv) = response.into_parts();
                let mut data = Vec::new();
                let mut body_error = None;
                while let Some(chunk) = recv.data().await {
                    match chunk {
                        Ok(chunk) => {
                            let _ = recv.flow_control().release_capacity(chunk.len());
                            data.extend_from_slice(&chunk);
                        }
                        Err(error) => {
                            body_error = Some(error);
                            break;
                        }
                    }
                }
                Ok(H2Reply {
                    status: head.status,
                    headers: head.headers,
                    body: Bytes::from(data),
                    body_error,
                })
            })
            .await
        }
    }

    /// Refused the way a malformed request must be: RST_STREAM
    /// (PROTOCOL_ERROR), a GOAWAY, or a 4xx status.
    pub fn h2_rejected(result: &Result<H2Reply, h2::Error>) -> bool {
        match result {
            Ok(reply) => reply.status.is_client_error(),
            Err(error) => error.is_go_away() || error.reason() == Some(h2::Reason::PROTOCOL_ERROR),
        }
    }

    /// A short description of an h2 result, for assertion messages.
    pub fn describe(result: &Result<H2Reply, h2::Error>) -> String {
        match result {
            Ok(reply) => format!(
                "status {} body {:?} body_error {:?}",
                reply.status,
                show(&reply.body),
                reply.body_error.as_ref().map(|e| e.to_string())
            ),
            Err(error) => format!("error {error} (reason {:?})", error.reason()),
        }
    }
}
pub mod binary;
pub mod push_wire;
