//! Per-request budget of the proxy's hot path, in process.
//!
//! `cargo bench --bench budget -- [--h1] [--requests N] [--json]`
//!
//! Runs the real proxy (`linkpush::run`) on a thread of its own with a
//! single-threaded tokio runtime, in front of a small hyper origin that
//! answers every request with 100 bytes of `text/plain`, and drives plain
//! GETs through it over TLS from a client on another thread: HTTP/2 with
//! the `h2` crate (10 connections x 10 concurrent streams, as
//! `h2load -c 10 -m 10`), or with `--h1` HTTP/1.1 keep-alive with hyper's
//! client (10 connections, one request at a time each).
//!
//! A counting global allocator counts allocations, reallocations and bytes
//! on the proxy's thread only (a thread-local flag; the origin and the
//! client allocate uncounted). Connections are opened and warmed up with
//! a tenth of the requests first; the counters, the proxy thread's CPU time
//! and the runtime's park count are read on the proxy thread before and
//! after the measured requests, and the difference is divided by the
//! number of requests.
//!
//! See bench/README.md, "Per-request budget".

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use linkpush::config::{Config, Overrides};
use linkpush::{run, Listener};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinSet;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

// ------------------------------------------------------------------------
// Counting allocator

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static REALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Connections the origin accepted: a check that the proxy reuses them.
static ORIGIN_ACCEPTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Set on the proxy's thread only. `const` and without a destructor,
    /// so reading it never allocates (which would recurse into the
    /// allocator) and it is readable until the thread is gone.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

/// Count one allocation (or reallocation) of `bytes` if this thread opted in.
#[inline]
fn count(counter: &AtomicU64, bytes: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        counter.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// `System`, counting what the opted-in thread allocates. A reallocation
/// counts as a reallocation (not an allocation) and adds its new size to
/// the bytes, as if the block had been allocated anew.
struct Counting;

// SAFETY: every method forwards its arguments unchanged to `System`, which
// upholds the `GlobalAlloc` contract; the counting around it only touches
// atomics and a const thread-local `Cell`, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATIONS, layout.size());
        // SAFETY: our caller's guarantees for `layout` are the ones
        // `System.alloc` needs.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(&ALLOCATIONS, layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through us) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(&REALLOCATIONS, new_size);
        // SAFETY: `ptr` was allocated by `System` (through us) with
        // `layout`; our caller vouches for `new_size`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

// ------------------------------------------------------------------------
// Snapshots, taken on the proxy's thread

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    allocations: u64,
    reallocations: u64,
    bytes: u64,
    /// CPU time of the proxy's thread, nanoseconds.
    cpu_ns: u64,
    /// Times the runtime parked (waited for I/O or timers with nothing to run).
    parks: u64,
    alive_tasks: usize,
    origin_accepts: u64,
}

/// Where the thread CPU time comes from.
static CPU_SOURCE: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// CPU time of the calling thread in nanoseconds: the first field of
/// /proc/thread-self/schedstat (time on CPU, ns) when the kernel has it,
/// else utime + stime of /proc/thread-self/stat in clock ticks (assumed to
/// be 100 Hz, USER_HZ on Linux), i.e. 10 ms resolution.
fn thread_cpu_ns() -> u64 {
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/schedstat") {
        if let Some(ns) = text.split_whitespace().next().and_then(|f| f.parse().ok()) {
            CPU_SOURCE.get_or_init(|| "schedstat");
            return ns;
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/thread-self/stat") {
        // The command name may hold spaces: fields start after the last ')'.
        if let Some(rest) = text.rfind(')').map(|i| &text[i + 2..]) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of proc(5), 12 and 13 here.
            let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            if let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) {
                CPU_SOURCE.get_or_init(|| "stat (10 ms ticks)");
                return (utime + stime) * 10_000_000;
            }
        }
    }
    CPU_SOURCE.get_or_init(|| "unavailable");
    0
}

/// Read every counter. Must run on the proxy's thread, with counting off
/// (reading /proc allocates).
fn read_counters() -> Snapshot {
    let metrics = Handle::current().metrics();
    Snapshot {
        allocations: ALLOCATIONS.load(Ordering::Relaxed),
        reallocations: REALLOCATIONS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
        cpu_ns: thread_cpu_ns(),
        parks: metrics.worker_park_count(0),
        alive_tasks: metrics.num_alive_tasks(),
        origin_accepts: ORIGIN_ACCEPTS.load(Ordering::Relaxed),
    }
}

/// Take a snapshot on the proxy's thread: a task spawned onto its
/// single-threaded runtime runs there. Counting is off from the first
/// read to the hand-over, so the snapshot itself costs the proxy nothing
/// that is counted.
async fn snapshot(proxy: &Handle) -> Snapshot {
    let (tx, rx) = tokio::sync::oneshot::channel();
    proxy.spawn(async move {
        COUNTED.set(false);
        let _ = tx.send(read_counters());
        COUNTED.set(true);
    });
    rx.await.expect("the proxy's runtime stopped")
}

// ------------------------------------------------------------------------
// Options

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Proto {
    H2,
    H1,
}

struct Options {
    proto: Proto,
    requests: u64,
    connections: usize,
    streams: usize,
    json: bool,
}

const USAGE: &str = "usage: cargo bench --bench budget -- [--h1] [--requests N] [--connections C] [--streams M] [--json]
  --h1             HTTP/1.1 keep-alive over TLS (default: HTTP/2 over TLS)
  --requests N     measured requests (default 20000); a warm-up of N/10 runs first
  --connections C  client connections (default 10)
  --streams M      concurrent streams per HTTP/2 connection (default 10; HTTP/1.1: 1)
  --json           print one JSON object instead of the table";

fn options() -> Result<Options, String> {
    let mut options = Options {
        proto: Proto::H2,
        requests: 20_000,
        connections: 10,
        streams: 10,
        json: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .filter(|n| *n > 0)
                .ok_or_else(|| format!("{name} needs a positive number"))
        };
        match arg.as_str() {
            "--h1" => options.proto = Proto::H1,
            "--h2" => options.proto = Proto::H2,
            "--json" => options.json = true,
            "--requests" => options.requests = number("--requests")?,
            "--connections" => options.connections = number("--connections")? as usize,
            "--streams" => options.streams = number("--streams")? as usize,
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument: {other}")),
        }
    }
    if options.proto == Proto::H1 {
        options.streams = 1;
    }
    Ok(options)
}

// ------------------------------------------------------------------------
// Origin, certificate, proxy

/// The origin's answer to every request.
const BODY: &[u8; 100] =
    b"linkpush budget: one plain text/plain response of 100 bytes with no Link header, like /small.txt...\n";

/// An HTTP/1.1 origin on its own thread and runtime; returns its address.
fn start_origin() -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("origin".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("origin runtime");
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
                tx.send(listener.local_addr().expect("origin address"))
                    .expect("main thread gone");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    ORIGIN_ACCEPTS.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let service = service_fn(|_request: Request<Incoming>| async {
                            Ok::<_, std::convert::Infallible>(
                                Response::builder()
                                    .header(http::header::CONTENT_TYPE, "text/plain")
                                    .body(Full::new(Bytes::from_static(BODY)))
                                    .expect("static response"),
                            )
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        })
        .expect("origin thread");
    rx.recv().expect("origin did not start")
}

/// A self-signed certificate for `localhost`, on disk for the proxy.
struct Cert {
    dir: tempfile::TempDir,
    der: CertificateDer<'static>,
}

fn make_cert() -> Cert {
    let names = ["localhost", "127.0.0.1"].map(String::from).to_vec();
    let generated = rcgen::generate_simple_self_signed(names).expect("certificate");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("cert.pem"), generated.cert.pem()).expect("write cert");
    std::fs::write(
        dir.path().join("key.pem"),
        generated.signing_key.serialize_pem(),
    )
    .expect("write key");
    Cert {
        der: generated.cert.der().clone(),
        dir,
    }
}

struct Proxy {
    addr: SocketAddr,
    handle: Handle,
    stop: tokio::sync::oneshot::Sender<()>,
    done: std::sync::mpsc::Receiver<()>,
}

/// The proxy as bench/templates/linkpush.toml configures it, served by
/// `linkpush::run` on a thread of its own whose allocations are counted.
fn start_proxy(origin: SocketAddr, cert: &Cert) -> Proxy {
    let text = format!(
        r#"[[listen]]
address = "127.0.0.1:0"
tls = true

[tls]
cert = "cert.pem"
key = "key.pem"

[origin]
url = "http://{origin}"

[log]
level = "warn"
access_log = false

[server]
workers = 1

[push]
enabled = true
preload = "push"
"#
    );
    let config = Config::from_toml_str(&text, cert.dir.path(), &Overrides::default())
        .unwrap_or_else(|e| panic!("bench config invalid: {e}\n{text}"));
    // As the binary does for `[log] level = "warn"`, so that the request
    // path's spans and events cost what they cost there.
    let (level, _) = linkpush::logging::diagnostic_filter(config.log.level.as_deref(), None);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(level))
        .with_writer(std::io::stderr)
        .try_init();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (done_tx, done) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("linkpush-proxy".into())
        .spawn(move || {
            COUNTED.set(true);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("proxy runtime");
            runtime.block_on(async move {
                let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
                let addr = tcp.local_addr().expect("proxy address");
                ready_tx
                    .send((addr, Handle::current()))
                    .expect("main thread gone");
                let listeners = vec![Listener {
                    tcp,
                    tls: true,
                    proxy_protocol: None,
                }];
                if let Err(error) = run(Arc::new(config), listeners, async move {
                    let _ = stopped.await;
                })
                .await
                {
                    eprintln!("budget: proxy failed: {error}");
                }
            });
            COUNTED.set(false);
            let _ = done_tx.send(());
        })
        .expect("proxy thread");
    let (addr, handle) = ready_rx.recv().expect("proxy did not start");
    Proxy {
        addr,
        handle,
        stop,
        done,
    }
}

// ------------------------------------------------------------------------
// Clients

type BoxError = Box<dyn std::error::Error + Send + Sync>;

async fn tls_connect(
    addr: SocketAddr,
    cert: &CertificateDer<'static>,
    alpn: &[u8],
) -> Result<TlsStream<TcpStream>, BoxError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.clone())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost")?, tcp)
        .await?;
    if tls.get_ref().1.alpn_protocol() != Some(alpn) {
        return Err(format!("ALPN {} not agreed", String::from_utf8_lossy(alpn)).into());
    }
    Ok(tls)
}

/// Take one request from the shared count; false when none is left.
fn take(remaining: &AtomicU64) -> bool {
    remaining
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

fn check(status: StatusCode, len: usize) -> Result<(), BoxError> {
    if status != StatusCode::OK || len != BODY.len() {
        return Err(format!("unexpected response: {status}, {len} bytes").into());
    }
    Ok(())
}

enum Client {
    H2 {
        senders: Vec<h2::client::SendRequest<Bytes>>,
        streams: usize,
        uri: http::Uri,
    },
    H1 {
        senders: Vec<hyper::client::conn::http1::SendRequest<Empty<Bytes>>>,
        host: String,
    },
}

impl Client {
    async fn connect(
        proto: Proto,
        addr: SocketAddr,
        cert: &CertificateDer<'static>,
        connections: usize,
        streams: usize,
    ) -> Result<Client, BoxError> {
        let authority = format!("localhost:{}", addr.port());
        match proto {
            Proto::H2 => {
                let mut senders = Vec::with_capacity(connections);
                for _ in 0..connections {
                    let tls = tls_connect(addr, cert, b"h2").await?;
                    // h2load does not accept pushes either.
                    let (send, connection) = h2::client::Builder::new()
                        .enable_push(false)
                        .handshake::<_, Bytes>(tls)
                        .await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    senders.push(send);
                }
                Ok(Client::H2 {
                    senders,
                    streams,
                    uri: format!("https://{authority}/small.txt").parse()?,
                })
            }
            Proto::H1 => {
                let mut senders = Vec::with_capacity(connections);
                for _ in 0..connections {
                    let tls = tls_connect(addr, cert, b"http/1.1").await?;
                    let (send, connection) =
                        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    senders.push(send);
                }
                Ok(Client::H1 {
                    senders,
                    host: authority,
                })
            }
        }
    }

    /// Send `total` requests, as many at once as the client allows; returns
    /// how long they took.
    async fn drive(&mut self, total: u64) -> Result<Duration, BoxError> {
        let remaining = Arc::new(AtomicU64::new(total));
        let start = Instant::now();
        let mut tasks: JoinSet<Result<(), BoxError>> = JoinSet::new();
        match self {
            Client::H2 {
                senders,
                streams,
                uri,
            } => {
                for send in senders.iter() {
                    for _ in 0..*streams {
                        let send = send.clone();
                        let uri = uri.clone();
                        let remaining = remaining.clone();
                        tasks.spawn(async move {
                            while take(&remaining) {
                                let mut send = send.clone().ready().await?;
                                let request = Request::get(uri.clone())
                                    .header("user-agent", "linkpush-budget")
                                    .header("accept-encoding", "gzip, deflate")
                                    .body(())?;
                                let (response, _) = send.send_request(request, true)?;
                                let response = response.await?;
                                let status = response.status();
                                let mut body = response.into_body();
                                let mut len = 0;
                                while let Some(chunk) = body.data().await {
                                    let chunk = chunk?;
                                    len += chunk.len();
                                    let _ = body.flow_control().release_capacity(chunk.len());
                                }
                                check(status, len)?;
                            }
                            Ok(())
                        });
                    }
                }
            }
            Client::H1 { senders, host } => {
                // Each connection goes back into the client when its task ends.
                let (back_tx, mut back_rx) = tokio::sync::mpsc::unbounded_channel();
                for mut send in senders.drain(..) {
                    let host = host.clone();
                    let remaining = remaining.clone();
                    let back = back_tx.clone();
                    tasks.spawn(async move {
                        let result = async {
                            while take(&remaining) {
                                send.ready().await?;
                                let request = Request::get("/small.txt")
                                    .header(http::header::HOST, host.as_str())
                                    .header("user-agent", "linkpush-budget")
                                    .header("accept-encoding", "gzip, deflate")
                                    .body(Empty::<Bytes>::new())?;
                                let response = send.send_request(request).await?;
                                let status = response.status();
                                let body = response.into_body().collect().await?.to_bytes();
                                check(status, body.len())?;
                            }
                            Ok::<(), BoxError>(())
                        }
                        .await;
                        let _ = back.send(send);
                        result
                    });
                }
                drop(back_tx);
                let result = join_all(&mut tasks).await;
                while let Some(send) = back_rx.recv().await {
                    senders.push(send);
                }
                result?;
                return Ok(start.elapsed());
            }
        }
        join_all(&mut tasks).await?;
        Ok(start.elapsed())
    }
}

async fn join_all(tasks: &mut JoinSet<Result<(), BoxError>>) -> Result<(), BoxError> {
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(BoxError::from).and_then(|r| r);
        if let Err(error) = result {
            first_error.get_or_insert(error);
        }
    }
    first_error.map_or(Ok(()), Err)
}

// ------------------------------------------------------------------------
// Main

struct Measured {
    before: Snapshot,
    after: Snapshot,
    elapsed: Duration,
}

/// Any phase taking longer than this is a hang.
const PHASE_LIMIT: Duration = Duration::from_secs(600);

async fn measure(options: &Options, proxy: &Proxy, cert: &Cert) -> Result<Measured, BoxError> {
    let mut client = tokio::time::timeout(
        PHASE_LIMIT,
        Client::connect(
            options.proto,
            proxy.addr,
            &cert.der,
            options.connections,
            options.streams,
        ),
    )
    .await??;
    let warm_up = (options.requests / 10).max(1);
    tokio::time::timeout(PHASE_LIMIT, client.drive(warm_up)).await??;
    let before = snapshot(&proxy.handle).await;
    let elapsed = tokio::time::timeout(PHASE_LIMIT, client.drive(options.requests)).await??;
    let after = snapshot(&proxy.handle).await;
    Ok(Measured {
        before,
        after,
        elapsed,
    })
}

fn main() -> ExitCode {
    let options = match options() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("budget: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(if message.is_empty() { 0 } else { 2 });
        }
    };
    let cert = make_cert();
    let origin = start_origin();
    let proxy = start_proxy(origin, &cert);
    let client = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let measured = client.block_on(measure(&options, &proxy, &cert));
    // Close the client's connections (their tasks go with the runtime),
    // then stop the proxy and give it a moment to drain.
    drop(client);
    let _ = proxy.stop.send(());
    let _ = proxy.done.recv_timeout(Duration::from_secs(10));
    let measured = match measured {
        Ok(measured) => measured,
        Err(error) => {
            eprintln!("budget: {error}");
            return ExitCode::FAILURE;
        }
    };
    report(&options, &measured);
    ExitCode::SUCCESS
}

fn report(options: &Options, m: &Measured) {
    let n = options.requests as f64;
    let (b, a) = (m.before, m.after);
    let allocations = a.allocations - b.allocations;
    let reallocations = a.reallocations - b.reallocations;
    let bytes = a.bytes - b.bytes;
    let cpu_ns = a.cpu_ns.saturating_sub(b.cpu_ns);
    let parks = a.parks - b.parks;
    let origin_connections = a.origin_accepts - b.origin_accepts;
    let rps = n / m.elapsed.as_secs_f64();
    let warm_up = (options.requests / 10).max(1);
    let cpu_source = CPU_SOURCE.get().copied().unwrap_or("unavailable");
    let (proto, shape) = match options.proto {
        Proto::H2 => (
            "h2",
            format!(
                "HTTP/2 over TLS, {} connections x {} streams",
                options.connections, options.streams
            ),
        ),
        Proto::H1 => (
            "h1",
            format!(
                "HTTP/1.1 over TLS, {} keep-alive connections, one request at a time",
                options.connections
            ),
        ),
    };
    if options.json {
        println!(
            "{{\"protocol\":\"{proto}\",\"requests\":{},\"warm_up\":{warm_up},\"connections\":{},\"streams\":{},\
\"allocations_per_request\":{:.3},\"reallocations_per_request\":{:.3},\"bytes_per_request\":{:.1},\
\"cpu_us_per_request\":{:.3},\"cpu_source\":\"{cpu_source}\",\"parks_per_request\":{:.4},\
\"requests_per_second\":{:.0},\"elapsed_s\":{:.3},\"allocations\":{allocations},\"reallocations\":{reallocations},\
\"bytes\":{bytes},\"cpu_ns\":{cpu_ns},\"parks\":{parks},\"origin_connections_opened\":{origin_connections},\
\"alive_tasks_before\":{},\"alive_tasks_after\":{}}}",
            options.requests,
            options.connections,
            options.streams,
            allocations as f64 / n,
            reallocations as f64 / n,
            bytes as f64 / n,
            cpu_ns as f64 / 1e3 / n,
            parks as f64 / n,
            rps,
            m.elapsed.as_secs_f64(),
            b.alive_tasks,
            a.alive_tasks,
        );
        return;
    }
    println!("linkpush per-request budget: {shape}");
    println!(
        "GET of a 100-byte response, {} requests measured after {warm_up} of warm-up; counted on the proxy's thread",
        options.requests
    );
    println!();
    println!("{:<28} {:>14} {:>14}", "", "total", "per request");
    let row = |name: &str, total: String, per: String| println!("{name:<28} {total:>14} {per:>14}");
    row(
        "allocations",
        allocations.to_string(),
        format!("{:.2}", allocations as f64 / n),
    );
    row(
        "reallocations",
        reallocations.to_string(),
        format!("{:.2}", reallocations as f64 / n),
    );
    row(
        "bytes allocated",
        bytes.to_string(),
        format!("{:.0}", bytes as f64 / n),
    );
    row(
        "proxy thread CPU time",
        format!("{:.3} s", cpu_ns as f64 / 1e9),
        format!("{:.2} µs", cpu_ns as f64 / 1e3 / n),
    );
    row(
        "runtime parks",
        parks.to_string(),
        format!("{:.3}", parks as f64 / n),
    );
    row(
        "requests/s (wall clock)",
        format!("{rps:.0}"),
        String::new(),
    );
    println!();
    println!(
        "CPU time from {cpu_source}; origin connections opened in the window: {origin_connections}; \
         tokio tasks alive before/after it: {}/{}",
        b.alive_tasks, a.alive_tasks
    );
}
