//! The HTTP/2 frontend, on the `h2` crate's server directly: hyper's HTTP/2
//! server cannot send PUSH_PROMISE, and this is where pushes go out.
//!
//! One task drives the connection (accepting streams, idle timeout, graceful
//! shutdown); each request stream and each pushed stream runs in its own
//! task. Response bodies are sent with h2 flow control: capacity is reserved
//! before each DATA frame, so at most one window of a body is buffered.

use std::collections::HashSet;
use std::future::poll_fn;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::server::{SendPushedResponse, SendResponse};
use h2::{Reason, RecvStream, SendStream};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::sniff::{PeerSettings, Sniffed};
use super::{CappedBody, H2Body};
use crate::config::Timeouts;
use crate::digest::{self, CacheDigest};
use crate::error::ProxyError;
use crate::hints;
use crate::link::{parse_field, serialize_field, Element};
use crate::origin::{OriginBody, ResponseBody};
use crate::proxy::{self, AccessRecord, ConnContext, Target};
use crate::push::{self, ClientPush, Diary, Plan, ResponseState};
use crate::server::Shared;

/// The state one HTTP/2 connection shares with its stream tasks.
struct Conn {
    ctx: ConnContext,
    shared: Arc<Shared>,
    peer: Arc<PeerSettings>,
    /// URLs pushed to, or requested by, this client (per-connection memo).
    diary: Mutex<Diary>,
    /// What this browser holds, from its cache-digest cookie plus what was
    /// pushed on this connection (when `[push] cache_digest` is on).
    digest: Arc<Mutex<CacheDigest>>,
    /// Pushed streams currently open, kept under the client's
    /// SETTINGS_MAX_CONCURRENT_STREAMS.
    pushes_in_flight: Arc<AtomicU32>,
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

    /// What the push policy needs to know about the client right now.
    fn client_push(&self) -> ClientPush {
        if !self.peer.push_enabled() || self.shared.shutdown.is_cancelled() {
            ClientPush::Disabled
        } else {
            // The client's own stream limit, and ours: each push in
            // progress may hold its response in memory.
            let ours =
                u32::try_from(self.shared.config.push.max_concurrent_pushes).unwrap_or(u32::MAX);
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
}

/// Counts a stream as active while it lives.
struct ActiveGuard<'a>(&'a Conn, &'a AtomicUsize);

impl Drop for ActiveGuard<'_> {
    fn drop(&mut self) {
        self.1.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

/// Serve one HTTP/2 connection until it closes, the client idles out, or the
/// proxy shuts down and the grace period ends.
pub async fn serve<IO>(io: IO, ctx: ConnContext, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let peer = Arc::new(PeerSettings::default());
    let io = Sniffed::new(io, peer.clone());
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(config.limits.max_concurrent_streams)
        .max_header_list_size(config.limits.max_request_header_bytes)
        .initial_window_size(256 * 1024)
        .initial_connection_window_size(1024 * 1024)
        .max_send_buffer_size(128 * 1024);
    let handshake = builder.handshake::<_, Bytes>(io);
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
        diary: Mutex::new(Diary::new(config.push.diary_size)),
        digest: Arc::new(Mutex::new(CacheDigest::new())),
        ctx,
        shared: shared.clone(),
        peer,
        pushes_in_flight: Arc::new(AtomicU32::new(0)),
        active: AtomicUsize::new(0),
        last_activity_ms: AtomicU64::new(0),
        born: Instant::now(),
    });
    let idle_limit = config.timeouts.client_idle;
    let grace = config.timeouts.shutdown_grace;
    let mut draining: Option<tokio::time::Instant> = None;
    let mut flood_handled = false;
    let peer = conn.peer.clone();
    loop {
        let idle_check = tokio::time::sleep(idle_limit / 4 + Duration::from_millis(10));
        tokio::select! {
            next = connection.accept() => match next {
                Some(Ok((request, respond))) => {
                    conn.active.fetch_add(1, Ordering::Relaxed);
                    conn.touch();
                    let conn = conn.clone();
                    let span = tracing::debug_span!("stream", id = %respond.stream_id().as_u32());
                    tokio::spawn(
                        async move {
                            let _guard = ActiveGuard(&conn, &conn.active);
                            handle_request(&conn, request, respond).await;
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
            _ = peer.reset_flood(), if !flood_handled => {
                tracing::warn!(client = %conn.ctx.peer, "client resets streams faster than allowed; closing with ENHANCE_YOUR_CALM");
                shared.metrics.reset_flood();
                connection.abrupt_shutdown(Reason::ENHANCE_YOUR_CALM);
                flood_handled = true;
                draining = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
            _ = shared.shutdown.cancelled(), if draining.is_none() => {
                connection.graceful_shutdown();
                draining = Some(tokio::time::Instant::now() + grace);
            }
            _ = sleep_until_opt(draining) => {
                tracing::debug!("shutdown grace period over; closing connection");
                connection.abrupt_shutdown(Reason::NO_ERROR);
                // Give h2 a moment to flush the GOAWAY, then drop.
                let _ = tokio::time::timeout(Duration::from_millis(100), poll_fn(|cx| connection.poll_closed(cx))).await;
                break;
            }
            _ = idle_check => {
                if conn.active.load(Ordering::Relaxed) == 0
                    && conn.pushes_in_flight.load(Ordering::Relaxed) == 0
                    && conn.idle_for() >= idle_limit
                    && draining.is_none()
                {
                    tracing::debug!("client idle; closing connection");
                    connection.graceful_shutdown();
                    draining = Some(tokio::time::Instant::now() + grace.min(Duration::from_secs(5)));
                }
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

/// Why sending a body stopped early.
#[derive(Debug)]
enum SendError {
    /// The client reset the stream.
    ClientReset(Reason),
    /// The origin's body failed mid-way (truncated, reset, malformed).
    Origin(crate::error::BoxError),
    /// The stream could not be written (connection gone).
    Stream(h2::Error),
    /// The client stopped reading (no flow-control credit in time).
    Stalled,
    /// The push byte budget for the parent response ran out.
    Budget,
    /// The origin sent no body bytes for `timeouts.origin_read`.
    OriginStalled,
}

impl SendError {
    fn describe(&self) -> String {
        match self {
            SendError::ClientReset(reason) => format!("client reset the stream ({reason})"),
            SendError::Origin(error) => format!("origin body failed: {error}"),
            SendError::Stream(error) => format!("stream write failed: {error}"),
            SendError::Stalled => "client granted no flow-control window in time".to_string(),
            SendError::Budget => "push byte budget exhausted".to_string(),
            SendError::OriginStalled => "origin body stalled".to_string(),
        }
    }
}

/// A shared count of bytes pushed for one parent response.
struct Budget {
    left: AtomicU64,
}

impl Budget {
    fn take(&self, bytes: u64) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(bytes)
            })
            .is_ok()
    }

    fn left(&self) -> u64 {
        self.left.load(Ordering::Relaxed)
    }
}

/// Stream a body with flow control, watching for client resets.
async fn send_body<B>(
    send: &mut SendStream<Bytes>,
    mut body: B,
    limits: &Timeouts,
    budget: Option<&Budget>,
) -> Result<u64, SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<crate::error::BoxError>,
{
    let stall_limit = limits.client_write;
    let mut sent = 0u64;
    loop {
        let frame = tokio::select! {
            frame = tokio::time::timeout(limits.origin_read, body.frame()) => match frame {
                Ok(frame) => frame,
                Err(_) => {
                    send.send_reset(Reason::INTERNAL_ERROR);
                    return Err(SendError::OriginStalled);
                }
            },
            reason = poll_fn(|cx| send.poll_reset(cx)) => {
                return Err(match reason {
                    Ok(reason) => SendError::ClientReset(reason),
                    Err(error) => SendError::Stream(error),
                });
            }
        };
        let mut data = match frame {
            None => {
                send.send_data(Bytes::new(), true)
                    .map_err(SendError::Stream)?;
                return Ok(sent);
            }
            Some(Err(error)) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return Err(SendError::Origin(error.into()));
            }
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                // Origin trailers are not forwarded.
                Err(_) => continue,
            },
        };
        if let Some(budget) = budget {
            if !budget.take(data.len() as u64) {
                send.send_reset(Reason::CANCEL);
                return Err(SendError::Budget);
            }
        }
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted =
                tokio::time::timeout(stall_limit, poll_fn(|cx| send.poll_capacity(cx))).await;
            let n = match granted {
                Ok(Some(Ok(n))) => n,
                Ok(Some(Err(error))) => return Err(SendError::Stream(error)),
                Ok(None) => return Err(SendError::Stream(h2::Error::from(Reason::STREAM_CLOSED))),
                Err(_) => {
                    send.send_reset(Reason::CANCEL);
                    return Err(SendError::Stalled);
                }
            };
            if n == 0 {
                continue;
            }
            let chunk = data.split_to(n.min(data.len()));
            sent += chunk.len() as u64;
            let last = data.is_empty() && body.is_end_stream();
            send.send_data(chunk, last).map_err(SendError::Stream)?;
            if last {
                return Ok(sent);
            }
        }
    }
}

/// Send an error response on a stream that has not answered yet.
fn send_error(respond: &mut SendResponse<Bytes>, error: &ProxyError, head_only: bool) -> u64 {
    let (parts, body) = proxy::error_parts(error);
    let len = body.len() as u64;
    match respond.send_response(Response::from_parts(parts, ()), head_only) {
        Ok(mut stream) if !head_only => {
            let _ = stream.send_data(body, true);
            len
        }
        _ => 0,
    }
}

/// The facts of one request that its access-log line needs.
struct RequestLog<'a> {
    conn: &'a Conn,
    method: &'a Method,
    authority: &'a str,
    path: &'a str,
    started: Instant,
}

impl RequestLog<'_> {
    /// Count the request and write its access-log line.
    fn write(
        &self,
        status: u16,
        bytes: u64,
        origin_time: Option<Duration>,
        pushes: &[String],
        error: Option<&str>,
    ) {
        let shared = &self.conn.shared;
        shared
            .metrics
            .request(&self.conn.ctx, status, bytes, self.started);
        AccessRecord {
            ctx: &self.conn.ctx,
            method: self.method.as_str(),
            authority: self.authority,
            path: self.path,
            status,
            bytes,
            started: self.started,
            origin_time,
            pushed: false,
            pushes,
            error,
        }
        .emit(shared.config.log.access_log);
    }
}

/// Answer a request that cannot be forwarded with an error response.
fn reject(
    respond: &mut SendResponse<Bytes>,
    error: &ProxyError,
    log: &RequestLog<'_>,
    origin_time: Option<Duration>,
) {
    proxy::log_error(error, &log.conn.ctx, log.path);
    let bytes = send_error(respond, error, *log.method == Method::HEAD);
    log.write(
        error.status().as_u16(),
        bytes,
        origin_time,
        &[],
        Some(&error.chain()),
    );
}

/// Most 103 responses from the origin acted upon per request; beyond this
/// an origin's 103s are ignored, so a flood of them costs nothing.
const MAX_EARLY_HINTS: usize = 8;

/// Queue the origin's 103 responses for the stream task. The callback runs
/// inside hyper's response parser, so it only copies the headers out.
fn watch_informational(request: &mut Request<OriginBody>) -> mpsc::Receiver<HeaderMap> {
    let (sender, receiver) = mpsc::channel(MAX_EARLY_HINTS);
    hyper::ext::on_informational(request, move |response| {
        if response.status() == StatusCode::EARLY_HINTS {
            let _ = sender.try_send(response.headers().clone());
        }
    });
    receiver
}

async fn handle_request(
    conn: &Conn,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let started = Instant::now();
    let shared = &conn.shared;
    let config = &shared.config;
    let (parts, recv) = request.into_parts();
    let target = match proxy::validate(&parts, &conn.ctx, config) {
        Ok(target) => target,
        Err(error) => {
            let path = parts.uri.path_and_query().map_or("", |pq| pq.as_str());
            let log = RequestLog {
                conn,
                method: &parts.method,
                authority: "",
                path,
                started,
            };
            reject(&mut respond, &error, &log, None);
            return;
        }
    };
    let log = RequestLog {
        conn,
        method: &target.method,
        authority: &target.authority,
        path: &target.path_and_query,
        started,
    };
    if let Ok(mut diary) = conn.diary.lock() {
        diary.record_requested(&target.authority, &target.path_and_query);
    }
    if config.push.cache_digest {
        let cookie = &config.push.cache_digest_cookie;
        if let Some(sent) = digest::from_cookies(&parts.headers, cookie) {
            if let Ok(mut held) = conn.digest.lock() {
                held.merge(&sent);
            }
        }
    }
    let mut session = PushSession::new(conn, &target, &parts.headers);

    // Learned hints go out before the origin has even seen the request.
    let learn_key = shared
        .learned
        .as_ref()
        .map(|learned| learned.key(&target.authority, &target.path_and_query));
    if let (Some(learned), Some(key)) = (&shared.learned, &learn_key) {
        if hints::wants_hints(&target.method, &parts.headers) {
            if let Some(links) = learned.lookup(key) {
                session.early(&links, Source::Learned, &mut respond);
            }
        }
    }

    let body_is_empty = recv.is_end_stream();
    let (body, tripwire) = CappedBody::new(
        H2Body::new(recv, target.content_length),
        config.limits.max_request_body_bytes,
    );
    let mut origin_request = match proxy::origin_request(
        &parts,
        &target,
        body.boxed_unsync(),
        body_is_empty,
        &conn.ctx,
        config,
        &shared.origin,
    ) {
        Ok(request) => request,
        Err(error) => {
            reject(&mut respond, &error, &log, None);
            return;
        }
    };
    let mut early_hints = watch_informational(&mut origin_request);
    let forward = proxy::forward(&shared.origin, origin_request, &conn.ctx);
    tokio::pin!(forward);
    let outcome = loop {
        tokio::select! {
            // 103s first: one that arrived in the same read as the final
            // response is still acted on before it.
            biased;
            Some(headers) = early_hints.recv() => {
                let lines = proxy::link_lines(&headers);
                session.early(&lines, Source::Origin, &mut respond);
            }
            outcome = &mut forward => break Some(outcome),
            _ = poll_fn(|cx| respond.poll_reset(cx)) => break None,
        }
    };
    // hyper hands every 103 to the watcher while it parses the response,
    // so all that came before the final head are queued by now.
    while let Ok(headers) = early_hints.try_recv() {
        let lines = proxy::link_lines(&headers);
        session.early(&lines, Source::Origin, &mut respond);
    }
    let Some((result, origin_time)) = outcome else {
        // Dropping the origin future closes its connection: the origin sees
        // the request abort.
        tracing::debug!(path = %target.path_and_query, "client reset the stream before the response");
        shared.metrics.client_reset();
        log.write(
            499,
            0,
            None,
            &session.pushed,
            Some("client reset the stream"),
        );
        return;
    };
    let response = result.and_then(|response| {
        let (mut head, body) = response.into_parts();
        proxy::clean_response(&mut head)?;
        Ok((head, body))
    });
    let (mut head, body) = match response {
        Ok(response) => response,
        Err(error) => {
            let error = if tripwire.tripped() {
                ProxyError::BodyTooLarge {
                    limit: config.limits.max_request_body_bytes,
                }
            } else {
                error
            };
            shared.metrics.origin_error(&error);
            reject(&mut respond, &error, &log, Some(origin_time));
            return;
        }
    };
    proxy::record_validator(shared.validators.as_deref(), &target, &head);
    // Learn from the origin's own Link field, before it is rewritten.
    if let (Some(learned), Some(key)) = (&shared.learned, learn_key) {
        let status = head.status.as_u16();
        let lesson = hints::lesson(
            &target.method,
            &key,
            status,
            &head.headers,
            learned.min_clients(),
        );
        learned.apply(key, conn.ctx.peer, lesson);
    }
    session.finish(&mut head, &mut respond);

    let status = head.status.as_u16();
    let end_stream = body.is_end_stream();
    let mut send = match respond.send_response(Response::from_parts(head, ()), end_stream) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%error, "could not send response head");
            let why = "stream closed before the response head";
            log.write(status, 0, Some(origin_time), &session.pushed, Some(why));
            return;
        }
    };
    let (bytes, error) = if end_stream {
        (0, None)
    } else {
        match send_body(&mut send, body, &config.timeouts, None).await {
            Ok(bytes) => (bytes, None),
            Err(error) => {
                if let SendError::Origin(_) | SendError::OriginStalled = error {
                    tracing::warn!(conn = conn.ctx.id, path = %target.path_and_query, cause = %error.describe(), "origin body failed; stream reset");
                    shared.metrics.origin_body_error();
                }
                (0, Some(error.describe()))
            }
        }
    };
    log.write(
        status,
        bytes,
        Some(origin_time),
        &session.pushed,
        error.as_deref(),
    );
}

/// Where links seen before the final response came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// Learned from earlier responses for this page.
    Learned,
    /// A 103 from the origin.
    Origin,
}

/// One request stream's pushes and hints, across a learned hint, the
/// origin's 103s and the final response: a URL is promised at most once,
/// and a link is hinted at most once.
struct PushSession<'a> {
    conn: &'a Conn,
    target: &'a Target,
    request_headers: &'a HeaderMap,
    state: ResponseState,
    /// Pushed DATA bytes left for this response; made at the first push,
    /// since most responses push nothing.
    budget: Option<Arc<Budget>>,
    /// Paths promised, for the access log.
    pushed: Vec<String>,
    /// Link elements already sent to the client in a 103.
    hinted: HashSet<String>,
    /// Paths promised from learned hints, to tell confirmed from wasted.
    learned_pushes: Vec<String>,
    early_responses: usize,
}

impl<'a> PushSession<'a> {
    fn new(conn: &'a Conn, target: &'a Target, request_headers: &'a HeaderMap) -> Self {
        PushSession {
            conn,
            target,
            request_headers,
            state: ResponseState::default(),
            budget: None,
            pushed: Vec::new(),
            hinted: HashSet::new(),
            learned_pushes: Vec::new(),
            early_responses: 0,
        }
    }

    /// Links known before the final response: push what the policy picks
    /// at once, and hint the rest in a 103 (all of it, for a client that
    /// takes no pushes).
    fn early(&mut self, lines: &[String], source: Source, respond: &mut SendResponse<Bytes>) {
        if self.early_responses >= MAX_EARLY_HINTS {
            return;
        }
        self.early_responses += 1;
        let before = self.pushed.len();
        let Some(plan) = self.promise(lines, StatusCode::EARLY_HINTS.as_u16(), respond) else {
            return;
        };
        let metrics = &self.conn.shared.metrics;
        if source == Source::Learned {
            let learned = &self.pushed[before..];
            metrics.learned_pushes(learned.len() as u64);
            self.learned_pushes.extend_from_slice(learned);
        }
        let forward = match source {
            Source::Learned => true,
            Source::Origin => self.conn.shared.config.hints.forward_origin_103,
        };
        if forward {
            self.send_hints(&plan, respond);
        }
    }

    /// Send a 103 with the plan's links that this client has not been
    /// hinted yet, leaving out what was pushed (the client has it coming).
    /// Only `Link` fields go out: a 103's other fields are the origin's
    /// business, and none of them reaches the final response.
    fn send_hints(&mut self, plan: &Plan, respond: &mut SendResponse<Bytes>) {
        let pushed: HashSet<&str> = plan
            .decisions()
            .iter()
            .filter(|d| matches!(d.action, push::Action::Push | push::Action::AlreadyPushed))
            .map(|d| d.target.as_str())
            .collect();
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::EARLY_HINTS;
        for line in plan.link_lines() {
            let fresh: Vec<Element> = parse_field(&line)
                .into_iter()
                .filter(|element| {
                    let target = element.as_link().map(|link| link.target());
                    !target.is_some_and(|t| pushed.contains(t))
                })
                .filter(|element| self.hinted.insert(element.raw().to_string()))
                .collect();
            if fresh.is_empty() {
                continue;
            }
            if let Ok(value) = HeaderValue::from_str(&serialize_field(&fresh)) {
                response.headers_mut().append(header::LINK, value);
            }
        }
        if response.headers().is_empty() {
            return;
        }
        match respond.send_informational(response) {
            Ok(()) => self.conn.shared.metrics.hint_sent(),
            Err(error) => tracing::debug!(%error, "could not send 103"),
        }
    }

    /// The final response: push what is new in its Link field and rewrite
    /// the field for the client.
    fn finish(&mut self, head: &mut http::response::Parts, respond: &mut SendResponse<Bytes>) {
        let lines = proxy::link_lines(&head.headers);
        let plan = self.promise(&lines, head.status.as_u16(), respond);
        let metrics = &self.conn.shared.metrics;
        for path in &self.learned_pushes {
            let named = plan.as_ref().is_some_and(|plan| {
                plan.decisions()
                    .iter()
                    .any(|d| d.path.as_deref() == Some(path.as_str()))
            });
            metrics.learned_push_outcome(named);
        }
        if let Some(plan) = plan {
            proxy::apply_plan(
                &mut head.headers,
                &plan,
                self.conn.shared.config.push.explain,
            );
        }
    }

    /// Run the push policy over `lines`, send a PUSH_PROMISE for each link
    /// it picks (before the response HEADERS, which go out later), start
    /// each promised fetch, and turn refused promises into preloads.
    fn promise(
        &mut self,
        lines: &[String],
        status: u16,
        respond: &mut SendResponse<Bytes>,
    ) -> Option<Plan> {
        if lines.is_empty() {
            return None;
        }
        let conn = self.conn;
        let shared = &conn.shared;
        let target = self.target;
        // What the client's cache digest says it holds, by the validators
        // last seen for each asset.
        let held = match &shared.validators {
            Some(_) => conn.digest.lock().ok().map(|d| d.clone()),
            None => None,
        };
        let holds = |path: &str| {
            let (Some(validators), Some(held)) = (&shared.validators, &held) else {
                return false;
            };
            validators
                .fresh(&target.authority, path)
                .is_some_and(|v| held.contains(digest::key(&target.authority, path, &v)))
        };
        let facts = push::Facts {
            method: &target.method,
            scheme: conn.ctx.scheme(),
            authority: &target.authority,
            path_and_query: &target.path_and_query,
            status,
            authority_served: shared.names.serves(&target.authority),
            client: conn.client_push(),
            cached: held.as_ref().map(|_| push::CachedCheck(&holds)),
        };
        let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let mut plan = {
            let mut diary = conn.diary.lock().ok()?;
            push::decide(
                &shared.policy,
                &facts,
                &line_refs,
                &mut diary,
                &mut self.state,
            )
        };
        let planned: Vec<(usize, usize, String, Option<String>)> = plan
            .pushes()
            .filter_map(|d| Some((d.line, d.element, d.path.clone()?, d.destination.clone())))
            .collect();
        let mut refused = Vec::new();
        for (line, element, path, destination) in planned {
            let Some(promised) = promised_request(
                conn,
                target,
                self.request_headers,
                &path,
                destination.as_deref(),
            ) else {
                refused.push((line, element, push::Reason::CrossOrigin));
                continue;
            };
            let headers = promised.headers().clone();
            match respond.push_request(promised) {
                Ok(stream) => {
                    shared.metrics.push_promised();
                    conn.pushes_in_flight.fetch_add(1, Ordering::Relaxed);
                    let slot = PushSlot(conn.pushes_in_flight.clone());
                    self.pushed.push(path.clone());
                    let ctx = conn.ctx.clone();
                    let shared = shared.clone();
                    let budget = self
                        .budget
                        .get_or_insert_with(|| {
                            Arc::new(Budget {
                                left: AtomicU64::new(
                                    shared.config.push.max_pushed_bytes_per_response,
                                ),
                            })
                        })
                        .clone();
                    let digest = conn.digest.clone();
                    let authority = target.authority.clone();
                    let span = tracing::debug_span!("push", path = %path);
                    tokio::spawn(
                        async move {
                            let _slot = slot;
                            let push = Push {
                                stream,
                                authority,
                                path,
                                headers,
                            };
                            run_push(&shared, &ctx, push, &budget, &digest).await;
                        }
                        .instrument(span),
                    );
                }
                Err(error) => {
                    tracing::debug!(%error, %path, "push refused by h2");
                    let reason = if conn.peer.push_enabled() {
                        push::Reason::Limit
                    } else {
                        push::Reason::ClientDisabled
                    };
                    refused.push((line, element, reason));
                }
            }
        }
        if !refused.is_empty() {
            if let Ok(mut diary) = conn.diary.lock() {
                for (line, element, reason) in refused {
                    plan.downgrade(line, element, reason, &mut diary, &mut self.state);
                }
            }
        }
        shared.metrics.push_decisions(&plan);
        Some(plan)
    }
}

/// Holds one of the connection's push slots until the push task ends.
struct PushSlot(Arc<AtomicU32>);

impl Drop for PushSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The request a PUSH_PROMISE carries: GET on the parent's scheme and
/// authority, with the few request fields a browser would send for the
/// subresource. Credentials are never copied unless configured.
fn promised_request(
    conn: &Conn,
    target: &Target,
    parent: &HeaderMap,
    path: &str,
    destination: Option<&str>,
) -> Option<Request<()>> {
    let uri = http::Uri::builder()
        .scheme(conn.ctx.scheme())
        .authority(target.authority.as_str())
        .path_and_query(path)
        .build()
        .ok()?;
    let mut request = Request::new(());
    *request.method_mut() = Method::GET;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for name in COPIED_TO_PUSH {
        for value in parent.get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    for name in &conn.shared.config.push.forward_headers {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            for value in parent.get_all(&name) {
                headers.append(name.clone(), value.clone());
            }
        }
    }
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static(push::accept_for_destination(destination)),
    );
    Some(request)
}

/// Request fields copied from the parent into every pushed request.
const COPIED_TO_PUSH: [HeaderName; 4] = [
    header::USER_AGENT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
    header::CACHE_CONTROL,
];

/// One promised resource, handed to its push task.
struct Push {
    stream: SendPushedResponse<Bytes>,
    authority: String,
    path: String,
    /// The promised request's header fields.
    headers: HeaderMap,
}

/// Fetch a promised resource from the origin and stream it on the pushed
/// stream. Any failure resets that stream only; the parent never notices.
async fn run_push(
    shared: &Arc<Shared>,
    ctx: &ConnContext,
    push: Push,
    budget: &Budget,
    held: &Mutex<CacheDigest>,
) {
    let started = Instant::now();
    let Push {
        mut stream,
        authority,
        path,
        headers,
    } = push;
    let target = Target {
        method: Method::GET,
        authority,
        path_and_query: path,
        content_length: None,
    };
    let mut parts = Request::new(()).into_parts().0;
    parts.headers = headers;
    let body = Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync();
    let log = |status: u16, bytes: u64, origin: Option<Duration>, error: Option<&str>| {
        AccessRecord {
            ctx,
            method: "GET",
            authority: &target.authority,
            path: &target.path_and_query,
            status,
            bytes,
            started,
            origin_time: origin,
            pushed: true,
            pushes: &[],
            error,
        }
        .emit(shared.config.log.access_log);
    };
    let request = match proxy::origin_request(
        &parts,
        &target,
        body,
        true,
        ctx,
        &shared.config,
        &shared.origin,
    ) {
        Ok(request) => request,
        Err(error) => {
            stream.send_reset(Reason::CANCEL);
            log(0, 0, None, Some(&error.chain()));
            return;
        }
    };
    let outcome = tokio::select! {
        outcome = proxy::forward(&shared.origin, request, ctx) => Some(outcome),
        _ = poll_fn(|cx| stream.poll_reset(cx)) => None,
    };
    let Some((result, origin_time)) = outcome else {
        shared.metrics.push_cancelled();
        log(499, 0, None, Some("client reset the pushed stream"));
        return;
    };
    let (mut head, body) = match result {
        Ok(response) => response.into_parts(),
        Err(error) => {
            stream.send_reset(Reason::CANCEL);
            shared.metrics.push_cancelled();
            log(
                error.status().as_u16(),
                0,
                Some(origin_time),
                Some(&error.chain()),
            );
            return;
        }
    };
    let push_settings = &shared.config.push;
    let checked = push::check_pushed_response(
        head.status.as_u16(),
        &head.headers,
        push_settings.cancel_uncacheable,
    )
    .map_err(push::Cancel::describe)
    .and_then(|()| proxy::clean_response(&mut head).map_err(|_| "invalid origin response"));
    if let Err(reason) = checked {
        stream.send_reset(Reason::CANCEL);
        shared.metrics.push_cancelled();
        log(head.status.as_u16(), 0, Some(origin_time), Some(reason));
        return;
    }
    let status = head.status.as_u16();
    // The whole pushed body is read before the push is answered, within
    // the byte budget: the push then hands its origin connection back at
    // once, however slowly the client takes the push.
    let collected = tokio::select! {
        collected = collect_within(body, budget, shared.config.timeouts.origin_read) => collected,
        _ = poll_fn(|cx| stream.poll_reset(cx)) => Err(SendError::ClientReset(Reason::CANCEL)),
    };
    let data = match collected {
        Ok(data) => data,
        Err(error) => {
            stream.send_reset(Reason::CANCEL);
            shared.metrics.push_cancelled();
            log(status, 0, Some(origin_time), Some(&error.describe()));
            return;
        }
    };
    proxy::record_validator(shared.validators.as_deref(), &target, &head);
    if push_settings.cache_digest {
        if let Some(cookie) = digest_cookie(shared, &target, &head.headers, held) {
            head.headers.append(header::SET_COOKIE, cookie);
        } else if digest::validator(&head.headers).is_some() {
            // The browser holds exactly this version already.
            stream.send_reset(Reason::CANCEL);
            shared.metrics.push_cancelled();
            log(
                status,
                0,
                Some(origin_time),
                Some("client holds it (cache digest)"),
            );
            return;
        }
    }
    head.headers
        .insert("x-http2-push", HeaderValue::from_static("1"));
    let end_stream = data.is_empty();
    let mut send = match stream.send_response(Response::from_parts(head, ()), end_stream) {
        Ok(send) => send,
        Err(error) => {
            log(status, 0, Some(origin_time), Some(&error.to_string()));
            return;
        }
    };
    if end_stream {
        log(status, 0, Some(origin_time), None);
        return;
    }
    let body = http_body_util::Full::new(data);
    match send_body(&mut send, body, &shared.config.timeouts, None).await {
        Ok(bytes) => {
            shared.metrics.pushed_bytes(bytes);
            log(status, bytes, Some(origin_time), None);
        }
        Err(error) => {
            shared.metrics.push_cancelled();
            log(status, 0, Some(origin_time), Some(&error.describe()));
        }
    }
}

/// Read a pushed response's body whole, taking each chunk from `budget`.
async fn collect_within(
    mut body: ResponseBody,
    budget: &Budget,
    origin_read: Duration,
) -> Result<Bytes, SendError> {
    if let Some(length) = body.size_hint().exact() {
        if length > budget.left() {
            return Err(SendError::Budget);
        }
    }
    let mut chunks: Vec<Bytes> = Vec::new();
    loop {
        let frame = match tokio::time::timeout(origin_read, body.frame()).await {
            Err(_) => return Err(SendError::OriginStalled),
            Ok(None) => break,
            Ok(Some(Err(error))) => return Err(SendError::Origin(error.into())),
            Ok(Some(Ok(frame))) => frame,
        };
        // Origin trailers are not forwarded.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !budget.take(data.len() as u64) {
            return Err(SendError::Budget);
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// Add a pushed response to the connection's cache digest and return the
/// `Set-Cookie` value that hands the grown digest to the browser; `None`
/// when the response has no validator or the digest already holds it.
fn digest_cookie(
    shared: &Shared,
    target: &Target,
    headers: &HeaderMap,
    held: &Mutex<CacheDigest>,
) -> Option<HeaderValue> {
    let validator = digest::validator(headers)?;
    let key = digest::key(&target.authority, &target.path_and_query, validator);
    let mut held = held.lock().ok()?;
    if !held.insert(key) {
        return None;
    }
    let cookie = digest::set_cookie(&shared.config.push.cache_digest_cookie, &held);
    HeaderValue::from_str(&cookie).ok()
}
