//! Test builders: a real origin on loopback, the real proxy in-process, and
//! real TLS clients (the `h2` crate for HTTP/2, hyper for HTTP/1.1).
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
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
use tokio::net::{TcpListener, TcpStream};
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
    stop: Option<oneshot::Sender<()>>,
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
        tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => continue },
                    _ = &mut stopped => return,
                };
                let handler = handler.clone();
                let seen = seen_log.clone();
                let events = events_tx.clone();
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
                    let _ = events.send(OriginEvent::ConnectionClosed);
                });
            }
        });
        TestOrigin {
            addr,
            seen,
            events,
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
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
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
        let cert = TestCert::new();
        let text = format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\n{plain}\n[tls]\ncert = {cert:?}\nkey = {key:?}\n\n[origin]\nurl = \"{origin_url}\"\n\n{extra}\n",
            plain = if plain { "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n" } else { "" },
            cert = cert.cert_path.display().to_string(),
            key = cert.key_path.display().to_string(),
        );
        let config = Config::from_toml_str(&text, cert.dir.path(), &Overrides::default())
            .unwrap_or_else(|e| panic!("test config invalid: {e}\n{text}"));
        let tls_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tls_listener.local_addr().unwrap();
        let mut listeners = vec![Listener {
            tcp: tls_listener,
            tls: true,
        }];
        let mut plain_addr = None;
        if plain {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            plain_addr = Some(listener.local_addr().unwrap());
            listeners.push(Listener {
                tcp: listener,
                tls: false,
            });
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
            addr,
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
