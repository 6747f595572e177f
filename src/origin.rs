//! The client toward the origin: one pool of HTTP/1.1 connections per
//! worker, on hyper's connection-level client (`hyper::client::conn::http1`).
//!
//! The pool is ours rather than hyper-util's because a reverse proxy must
//! bound what it asks of the origin, and a pooled client that only limits
//! requests until their response head arrives does not: a response body
//! that a slow client is still reading keeps its origin connection busy.
//! Here a connection is *held* from the moment a request takes it until
//! its response body has been read to the end (it then goes back to the
//! pool) or abandoned (it is closed). So:
//!
//! - a worker never has more than its share of `origin.max_concurrent_requests`
//!   connections open, idle or busy; the shares of all workers add up to
//!   the configured total;
//! - a request that finds no free connection waits its turn, for at most
//!   `timeouts.origin_response_header`, and then gets a 503;
//! - one client connection holds (or waits for) at most an eighth of a
//!   worker's connections, and never fewer than four; its further requests
//!   wait at the connection, so the pool's own queue stays short and fair;
//! - a connection whose response is a 101 (a switch of protocols) never
//!   goes back to the pool: its socket, and the slot it counts in, belong
//!   to the tunnel on it until the tunnel ends ([`crate::tunnel`]);
//! - waiting requests are served in arrival order, except that requests
//!   from client connections that held no origin connection when they
//!   arrived go first. So a few greedy or stalled clients can never keep
//!   the others waiting behind them. (Enough stalled clients can still take
//!   every connection, until `timeouts.client_write` cuts them off: a proxy
//!   that streams bodies instead of spooling them to disk keeps an origin
//!   connection per download in progress.)

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::oneshot;

use crate::config::{Config, OriginAddr};
use crate::error::{BoxError, ProxyError};
use crate::request_body::Upload;

/// The body of a request sent to the origin.
pub type OriginBody = UnsyncBoxBody<Bytes, BoxError>;

type Sender = http1::SendRequest<OriginBody>;

/// What one client connection holds of the origin, for fair sharing, and
/// who it is, for origins that are told (PROXY protocol). Cheap to clone;
/// clones count together.
#[derive(Debug, Clone)]
pub struct ClientShare(Arc<ShareCounts>);

#[derive(Debug)]
struct ShareCounts {
    /// The client connection's number, never 0.
    conn: u64,
    /// The client's address and the address it connected to.
    client: SocketAddr,
    local: SocketAddr,
    /// Requests holding an origin connection or waiting in the pool.
    admitted: AtomicUsize,
    /// Requests holding an origin connection.
    held: AtomicUsize,
    /// Signalled when an admitted request leaves.
    turn: tokio::sync::Notify,
}

impl ClientShare {
    /// The share of client connection number `conn` (not 0), from `client`
    /// to `local`.
    pub fn new(conn: u64, client: SocketAddr, local: SocketAddr) -> ClientShare {
        ClientShare(Arc::new(ShareCounts {
            conn,
            client,
            local,
            admitted: AtomicUsize::new(0),
            held: AtomicUsize::new(0),
            turn: tokio::sync::Notify::new(),
        }))
    }

    /// Origin connections this client connection holds right now.
    pub fn held(&self) -> usize {
        self.0.held.load(Ordering::Relaxed)
    }

    /// Wait until fewer than `cap` of this client's requests are admitted,
    /// then admit one more.
    async fn admit(&self, cap: usize) -> Admission {
        let counts = &self.0;
        let take = || {
            counts
                .admitted
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < cap).then_some(n + 1)
                })
                .is_ok()
        };
        loop {
            if take() {
                return Admission(self.clone());
            }
            let turn = counts.turn.notified();
            tokio::pin!(turn);
            turn.as_mut().enable();
            if take() {
                return Admission(self.clone());
            }
            turn.await;
        }
    }
}

/// One admitted request of a client; leaving makes room for the next.
struct Admission(ClientShare);

impl Drop for Admission {
    fn drop(&mut self) {
        let counts = &(self.0).0;
        counts.admitted.fetch_sub(1, Ordering::AcqRel);
        counts.turn.notify_one();
    }
}

/// A handle to this worker's pool of connections to one origin address,
/// cheap to clone.
#[derive(Clone)]
pub struct Origin {
    pool: Arc<Pool>,
}

/// One origin address, as the pools of every worker share it: where it
/// is, and what is in flight there.
#[derive(Debug)]
pub struct AddressState {
    pub address: Address,
    /// Requests sent and not yet finished (response body read to the end,
    /// or abandoned), over all workers.
    pub(crate) in_flight: AtomicUsize,
    /// Requests sent, over all workers.
    requests: AtomicU64,
}

impl AddressState {
    pub fn new(address: Address) -> AddressState {
        AddressState {
            address,
            in_flight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

/// One request in flight at an address, until it is dropped.
struct InFlight(Arc<AddressState>);

impl InFlight {
    fn new(state: &Arc<AddressState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        state.requests.fetch_add(1, Ordering::Relaxed);
        InFlight(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request that could not be sent.
pub struct SendError {
    pub error: ProxyError,
    /// The request, whole, when no connection to the address could be
    /// opened: nothing of it reached the origin, so it may go elsewhere.
    pub unsent: Option<Request<OriginBody>>,
}

impl From<ProxyError> for SendError {
    fn from(error: ProxyError) -> SendError {
        SendError {
            error,
            unsent: None,
        }
    }
}

/// Where the origin listens, resolved from the config once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// An IP address: connect directly, no name lookup.
    Ip(SocketAddr),
    /// A host name, looked up at each new connection.
    Name(String, u16),
    Unix(PathBuf),
}

impl Address {
    pub fn new(addr: &OriginAddr) -> Address {
        match addr {
            OriginAddr::Tcp { host, port } => match host.parse::<std::net::IpAddr>() {
                Ok(ip) => Address::Ip(SocketAddr::new(ip, *port)),
                Err(_) => Address::Name(host.clone(), *port),
            },
            OriginAddr::Unix(path) => Address::Unix(path.clone()),
        }
    }

    /// Open a TCP or Unix-socket stream to the origin. Used by the pool for
    /// every new connection, and by the readiness check (which drops it).
    pub async fn connect(&self) -> io::Result<Socket> {
        match self {
            Address::Ip(address) => {
                let stream = TcpStream::connect(address).await?;
                stream.set_nodelay(true)?;
                Ok(Socket::Tcp(stream))
            }
            Address::Name(host, port) => {
                let stream = TcpStream::connect((host.as_str(), *port)).await?;
                stream.set_nodelay(true)?;
                Ok(Socket::Tcp(stream))
            }
            Address::Unix(path) => UnixStream::connect(path)
                .await
                .map(Socket::Unix)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Ip(address) => write!(f, "{address}"),
            Address::Name(host, port) => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

struct Pool {
    address: Arc<AddressState>,
    builder: http1::Builder,
    connect_timeout: Duration,
    header_timeout: Duration,
    idle_timeout: Duration,
    max_idle: usize,
    /// Connections this worker may have open, idle or busy.
    limit: usize,
    /// Most connections one client connection may hold or wait for.
    per_client: usize,
    /// Each connection starts with a PROXY v2 header naming its client,
    /// and carries that client connection's requests only.
    proxy_protocol: bool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Connections open or being opened.
    open: usize,
    /// Idle connections, most recently used last.
    idle: Vec<Idle>,
    /// Requests waiting for a connection, in arrival order: those of
    /// client connections that held none when they came, and the others.
    first: VecDeque<Waiter>,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
}

struct Idle {
    sender: Sender,
    since: Instant,
    /// The client connection it is kept for (PROXY protocol), or 0.
    owner: u64,
}

struct Waiter {
    id: u64,
    grant: oneshot::Sender<Grant>,
}

/// A connection handed to a request.
enum Grant {
    /// An idle keep-alive connection.
    Idle(Sender),
    /// Permission to open a new connection; the slot is already counted.
    Connect(Slot),
}

/// One counted connection slot. Dropping it gives the slot back (to a
/// waiting request, or to the pool), so a connect that fails or a grant
/// nobody took never leaks capacity.
struct Slot {
    /// `None` once the slot has been counted down by other means.
    pool: Option<Weak<Pool>>,
}

impl Slot {
    fn new(pool: &Arc<Pool>) -> Slot {
        Slot {
            pool: Some(Arc::downgrade(pool)),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take().and_then(|pool| pool.upgrade()) {
            pool.slot_freed();
        }
    }
}

/// Marks a client connection as holding one origin connection; keeps its
/// admission until the connection is given back.
struct Held {
    admission: Admission,
}

impl Held {
    fn new(admission: Admission) -> Held {
        (admission.0).0.held.fetch_add(1, Ordering::Relaxed);
        Held { admission }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        ((self.admission.0).0).held.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Origin {
    /// The pool of one worker out of `workers`: it gets an even share of
    /// `origin.max_concurrent_requests` and of `origin.max_idle_connections`.
    /// With `proxy_protocol`, every connection starts with a PROXY v2
    /// header naming the client connection it serves, and no other.
    pub fn new(
        config: &Config,
        workers: usize,
        state: Arc<AddressState>,
        proxy_protocol: bool,
    ) -> Origin {
        let workers = workers.max(1);
        let origin = &config.origin;
        let limit = origin.max_concurrent_requests.div_ceil(workers).max(1);
        let mut builder = http1::Builder::new();
        builder
            .max_buf_size(origin.max_response_header_bytes.max(8192))
            // hyper parses up to 100 fields on the stack; more costs two
            // heap arrays of that many slots on every response.
            .max_headers(100);
        let pool = Arc::new(Pool {
            address: state,
            builder,
            connect_timeout: config.timeouts.origin_connect,
            header_timeout: config.timeouts.origin_response_header,
            idle_timeout: origin.pool_idle_timeout,
            max_idle: origin.max_idle_per_host.div_ceil(workers),
            limit,
            per_client: (limit / 8).max(4).min(limit),
            proxy_protocol,
            state: Mutex::new(State::default()),
        });
        spawn_idle_sweeper(&pool);
        Origin { pool }
    }

    /// The request target the origin sees: origin-form, `/path?query`.
    pub fn uri_for(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        Uri::builder()
            .path_and_query(path_and_query)
            .build()
            .map_err(|_| ProxyError::BadRequest("invalid request target"))
    }

    /// Send a request for the client connection `share` and wait for the
    /// response head. The origin connection stays held by the response
    /// body until it is read to the end or dropped.
    ///
    /// `timeouts.origin_response_header` runs from when the request body
    /// (watched through `upload`, if there is one) has been handed over in
    /// full: a long upload is not the origin being slow to answer.
    pub fn send(
        &self,
        request: Request<OriginBody>,
        share: &ClientShare,
        upload: Option<Arc<Upload>>,
    ) -> impl Future<Output = Result<Response<ResponseBody>, SendError>> + Send + 'static {
        // The pool's own future, not one wrapped around it: each layer of
        // future costs a copy of everything inside it when it starts.
        self.pool.clone().send(request, share.clone(), upload)
    }

    /// Connections open (idle or busy) in this worker's pool.
    pub fn open_connections(&self) -> usize {
        self.pool.lock().open
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counts in a
        // state worse than a poisoned one; keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn send(
        self: Arc<Self>,
        mut request: Request<OriginBody>,
        share: ClientShare,
        upload: Option<Arc<Upload>>,
    ) -> Result<Response<ResponseBody>, SendError> {
        let in_flight = InFlight::new(&self.address);
        // A reused connection may turn out closed before the request was
        // written; the request then comes back and gets a new connection.
        for _attempt in 0..3 {
            let (grant, admission) = tokio::time::timeout(self.header_timeout, async {
                let admission = share.admit(self.per_client).await;
                let grant = self.acquire(&share).await;
                (grant, admission)
            })
            .await
            .map_err(|_| ProxyError::Unavailable("every origin connection is busy"))?;
            let grant = grant?;
            let held = Held::new(admission);
            let (mut sender, slot_reused) = match grant {
                Grant::Idle(sender) => (sender, true),
                // Opening a connection is the rare path: its large state is boxed
                // so that every request does not carry it.
                Grant::Connect(slot) => match Box::pin(self.connect(slot, &share)).await {
                    Ok(sender) => (sender, false),
                    Err(error) => {
                        return Err(SendError {
                            error,
                            unsent: Some(request),
                        })
                    }
                },
            };
            if slot_reused && !sender.is_ready() {
                // The previous response's end has not reached the
                // connection task yet; it takes one turn of its loop.
                let ready = tokio::time::timeout(self.connect_timeout, sender.ready()).await;
                if !matches!(ready, Ok(Ok(()))) {
                    continue;
                }
            }
            let sent = head_within(
                self.header_timeout,
                upload.as_deref(),
                sender.try_send_request(request),
            )
            .await;
            match sent {
                Err(_) => return Err(ProxyError::OriginTimeout(self.header_timeout).into()),
                Ok(Ok(response)) => {
                    let lease = Lease {
                        pool: Arc::downgrade(&self),
                        sender: Some(sender),
                        held: Some(held),
                        owner: if self.proxy_protocol { share.0.conn } else { 0 },
                        _in_flight: in_flight,
                    };
                    let switching = response.status() == http::StatusCode::SWITCHING_PROTOCOLS;
                    return Ok(response.map(|body| ResponseBody::new(body, lease, switching)));
                }
                Ok(Err(mut error)) => match error.take_message() {
                    Some(unsent) if slot_reused => request = unsent,
                    _ => return Err(classify(error.into_error()).into()),
                },
            }
        }
        Err(ProxyError::Unavailable(
            "origin connections kept closing before a request could be sent",
        )
        .into())
    }

    /// Take a connection (or the right to open one), waiting when none is
    /// free. The caller bounds the wait.
    async fn acquire(self: &Arc<Self>, share: &ClientShare) -> Result<Grant, ProxyError> {
        let (id, waiting) = {
            let mut state = self.lock();
            if let Some(grant) = self.try_take(&mut state, share) {
                return Ok(grant);
            }
            let (grant, waiting) = oneshot::channel();
            let id = state.next_waiter;
            state.next_waiter += 1;
            let waiter = Waiter { id, grant };
            if share.held() == 0 {
                state.first.push_back(waiter);
            } else {
                state.waiters.push_back(waiter);
            }
            (id, waiting)
        };
        // Leaves the queue if the caller gives up first.
        let mut guard = QueueGuard {
            pool: self,
            id,
            waiting: Some(waiting),
        };
        let Some(waiting) = guard.waiting.as_mut() else {
            return Err(ProxyError::Unavailable("origin pool closed"));
        };
        let grant = waiting.await;
        guard.waiting = None;
        grant.map_err(|_| ProxyError::Unavailable("origin pool closed"))
    }

    /// A free connection for `share` now, if the rules allow one.
    fn try_take(self: &Arc<Self>, state: &mut State, share: &ClientShare) -> Option<Grant> {
        loop {
            let free = self.limit.saturating_sub(state.open) + state.idle.len();
            // A client that holds nothing may take any free connection;
            // others queue behind earlier requests.
            let queued = !state.first.is_empty() || !state.waiters.is_empty();
            if free == 0 || (queued && share.held() > 0) {
                return None;
            }
            if self.proxy_protocol {
                return self.take_own(state, share);
            }
            if let Some(idle) = state.idle.pop() {
                if idle.sender.is_closed() || idle.since.elapsed() >= self.idle_timeout {
                    // Dropping the sender closes the connection; its task
                    // then frees the slot.
                    continue;
                }
                return Some(Grant::Idle(idle.sender));
            }
            state.open += 1;
            return Some(Grant::Connect(Slot::new(self)));
        }
    }

    /// [`Pool::try_take`] for connections kept for one client each: one of
    /// this client's idle ones, or a new one. When every slot is taken,
    /// the oldest idle connection of another client is closed, and its slot
    /// comes to the queue this request then joins.
    fn take_own(self: &Arc<Self>, state: &mut State, share: &ClientShare) -> Option<Grant> {
        let conn = share.0.conn;
        while let Some(at) = state.idle.iter().rposition(|idle| idle.owner == conn) {
            let idle = state.idle.remove(at);
            if !idle.sender.is_closed() && idle.since.elapsed() < self.idle_timeout {
                return Some(Grant::Idle(idle.sender));
            }
        }
        if state.open < self.limit {
            state.open += 1;
            return Some(Grant::Connect(Slot::new(self)));
        }
        if !state.idle.is_empty() {
            state.idle.remove(0);
        }
        None
    }

    /// The waiter to serve next: the earliest of a client that held no
    /// connection when it came, else the earliest.
    fn next_waiter(&self, state: &mut State) -> Option<Waiter> {
        // Requests that gave up leave the queue as they go (`QueueGuard`).
        state
            .first
            .pop_front()
            .or_else(|| state.waiters.pop_front())
    }

    /// Hand `grant` to the waiter to serve next; it comes back when no
    /// waiter may take it.
    fn offer(&self, state: &mut State, mut grant: Grant) -> Option<Grant> {
        while let Some(waiter) = self.next_waiter(state) {
            match waiter.grant.send(grant) {
                Ok(()) => return None,
                // That request gave up in the meantime: try the next one.
                Err(back) => grant = back,
            }
        }
        Some(grant)
    }

    /// A connection whose response was read to the end comes back; `owner`
    /// is the client connection it is kept for (PROXY protocol), or 0.
    fn check_in(self: &Arc<Self>, sender: Sender, owner: u64) {
        if sender.is_closed() {
            return;
        }
        let mut state = self.lock();
        if owner != 0 {
            // Kept for its own client; a request of another waiting for a
            // connection gets this one's slot once it has closed.
            if state.first.is_empty()
                && state.waiters.is_empty()
                && state.idle.len() < self.max_idle
            {
                state.idle.push(Idle {
                    sender,
                    since: Instant::now(),
                    owner,
                });
            }
            return;
        }
        let unused = self.offer(&mut state, Grant::Idle(sender));
        if let Some(Grant::Idle(sender)) = unused {
            if state.idle.len() < self.max_idle {
                state.idle.push(Idle {
                    sender,
                    since: Instant::now(),
                    owner: 0,
                });
            }
            // Otherwise the sender drops here and the connection closes;
            // its task frees the slot later, outside this lock.
        }
    }

    /// A connection closed (or was never opened): hand its slot to a
    /// waiting request, or count it as free.
    fn slot_freed(self: &Arc<Self>) {
        let mut state = self.lock();
        let slot = Slot::new(self);
        if let Some(Grant::Connect(mut slot)) = self.offer(&mut state, Grant::Connect(slot)) {
            state.open = state.open.saturating_sub(1);
            // Counted down just above; its drop must not count it again.
            slot.pool = None;
        }
    }

    /// Open a new connection in `slot` for the client of `share`.
    async fn connect(&self, slot: Slot, share: &ClientShare) -> Result<Sender, ProxyError> {
        let connect = async {
            let mut stream = self.address.address.connect().await?;
            if self.proxy_protocol {
                let header = crate::proxy_protocol::v2_header(share.0.client, share.0.local);
                tokio::io::AsyncWriteExt::write_all(&mut stream, &header).await?;
            }
            Ok::<_, io::Error>(stream)
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| {
                ProxyError::OriginConnect(
                    format!("no connection within {:?}", self.connect_timeout).into(),
                )
            })?
            .map_err(|error| ProxyError::OriginConnect(error.into()))?;
        // The slot lives as long as the socket: in the connection's task,
        // or, after a switch of protocols, in the tunnel that took the
        // socket over.
        let stream = OriginStream {
            socket: stream,
            _slot: slot,
        };
        let (sender, connection) = self
            .builder
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|error| ProxyError::OriginConnect(error.into()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "origin connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// Close idle connections that have been idle too long.
    fn sweep(&self) {
        let mut state = self.lock();
        let timeout = self.idle_timeout;
        state
            .idle
            .retain(|idle| !idle.sender.is_closed() && idle.since.elapsed() < timeout);
    }
}

/// Takes a waiting request out of the pool's queue when it gives up, and
/// passes on a connection that was handed to it in the meantime.
struct QueueGuard<'a> {
    pool: &'a Arc<Pool>,
    id: u64,
    waiting: Option<oneshot::Receiver<Grant>>,
}

impl Drop for QueueGuard<'_> {
    fn drop(&mut self) {
        let Some(mut waiting) = self.waiting.take() else {
            return;
        };
        let id = self.id;
        let mut state = self.pool.lock();
        state.first.retain(|w| w.id != id);
        state.waiters.retain(|w| w.id != id);
        drop(state);
        match waiting.try_recv() {
            // Only shared connections are handed from one request to another.
            Ok(Grant::Idle(sender)) => self.pool.check_in(sender, 0),
            // The slot frees itself (outside the lock) as it drops.
            Ok(Grant::Connect(slot)) => drop(slot),
            Err(_) => {}
        }
    }
}

/// Close idle connections past `pool_idle_timeout` even when no request
/// comes to notice them; stops when the pool is gone.
fn spawn_idle_sweeper(pool: &Arc<Pool>) {
    let period = (pool.idle_timeout / 2).max(Duration::from_millis(100));
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(pool) => pool.sweep(),
                None => return,
            }
        }
    });
}

/// `call` (sending a request and waiting for its response head) within
/// `limit`, counted from when `upload` has been handed over in full.
async fn head_within<F: Future>(
    limit: Duration,
    upload: Option<&Upload>,
    call: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::pin!(call);
    if let Some(upload) = upload.filter(|upload| !upload.done()) {
        // The upload has its own bound: the client's body stalls are cut
        // off after `timeouts.client_body_read`.
        let finished = upload.finished();
        tokio::pin!(finished);
        tokio::select! {
            biased;
            output = &mut call => return Ok(output),
            () = &mut finished => {}
        }
    }
    tokio::time::timeout(limit, call).await
}

fn classify(error: hyper::Error) -> ProxyError {
    ProxyError::OriginProtocol(error.into())
}

/// A connection in use by one exchange.
struct Lease {
    pool: Weak<Pool>,
    sender: Option<Sender>,
    held: Option<Held>,
    /// The client connection this origin connection is kept for (PROXY
    /// protocol), or 0.
    owner: u64,
    _in_flight: InFlight,
}

impl Lease {
    /// The response was read to the end: the connection may be reused.
    fn finish(mut self) {
        // No longer held by this client before it is offered around, so
        // this client's own waiting requests may take it.
        self.held = None;
        if let (Some(sender), Some(pool)) = (self.sender.take(), self.pool.upgrade()) {
            pool.check_in(sender, self.owner);
        }
    }
}

pin_project_lite::pin_project! {
    /// An origin response body. It holds the origin connection until it is
    /// read to the end, then hands it back to the pool at once; dropped
    /// early, it closes the connection (HTTP/1.1 cannot abandon a response
    /// and keep the connection).
    pub struct ResponseBody {
        #[pin]
        inner: Incoming,
        lease: Option<Lease>,
    }
}

/// An origin connection that switched protocols, held out of the pool
/// for as long as the tunnel on it lasts. Dropping it lets the connection
/// go; the pool slot comes free once its socket closes too.
pub struct Hold {
    _lease: Option<Lease>,
}

impl ResponseBody {
    /// `switching`: the head is a 101, whose connection never goes back to
    /// the pool.
    fn new(inner: Incoming, lease: Lease, switching: bool) -> ResponseBody {
        let lease = if inner.is_end_stream() && !switching {
            lease.finish();
            None
        } else {
            Some(lease)
        };
        ResponseBody { inner, lease }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        // The connection goes back as soon as its last byte is read, not
        // when the client has taken it: a slow client holds a buffer, never
        // an origin connection it no longer needs.
        let ended = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            _ => false,
        };
        if ended {
            if let Some(lease) = this.lease.take() {
                lease.finish();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ResponseBody {
    /// The hold on the connection of a 101 response, for the tunnel that
    /// takes the connection over.
    pub fn into_hold(self) -> Hold {
        Hold { _lease: self.lease }
    }
}

/// A connection to the origin, holding its pool slot.
struct OriginStream {
    socket: Socket,
    _slot: Slot,
}

/// The socket of a connection to the origin.
pub enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl tokio::io::AsyncRead for OriginStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for OriginStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }
}

impl tokio::io::AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl tokio::io::AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Socket::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_flush(cx),
            Socket::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Socket::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Socket::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Socket::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Socket::Tcp(s) => s.is_write_vectored(),
            Socket::Unix(s) => s.is_write_vectored(),
        }
    }
}
