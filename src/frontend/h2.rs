//! The HTTP/2 frontend, on the `h2` crate's server directly: hyper's HTTP/2
//! server cannot send PUSH_PROMISE, and this is where pushes go out.
//!
//! One task drives the connection (accepting streams, idle timeout, graceful
//! shutdown); each request stream and each pushed stream runs in its own
//! task. Response bodies are sent with h2 flow control: capacity is reserved
//! before each DATA frame, so at most one window of a body is buffered.

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
use hyper::body::Incoming;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::Instrument;

use super::sniff::{PeerSettings, Sniffed};
use super::{CappedBody, H2Body};
use crate::error::ProxyError;
use crate::proxy::{self, AccessRecord, ConnContext, Target};
use crate::push::{self, ClientPush, Diary, ResponseState};
use crate::server::Shared;

/// The state one HTTP/2 connection shares with its stream tasks.
struct Conn {
    ctx: ConnContext,
    shared: Arc<Shared>,
    peer: Arc<PeerSettings>,
    /// URLs pushed to, or requested by, this client (per-connection memo).
    diary: Mutex<Diary>,
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
            ClientPush::Enabled {
                max_concurrent_streams: self.peer.max_concurrent_streams(),
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
    Origin(hyper::Error),
    /// The stream could not be written (connection gone).
    Stream(h2::Error),
    /// The client stopped reading (no flow-control credit in time).
    Stalled,
    /// The push byte budget for the parent response ran out.
    Budget,
}

impl SendError {
    fn describe(&self) -> String {
        match self {
            SendError::ClientReset(reason) => format!("client reset the stream ({reason})"),
            SendError::Origin(error) => format!("origin body failed: {error}"),
            SendError::Stream(error) => format!("stream write failed: {error}"),
            SendError::Stalled => "client granted no flow-control window in time".to_string(),
            SendError::Budget => "push byte budget exhausted".to_string(),
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
async fn send_body(
    send: &mut SendStream<Bytes>,
    mut body: Incoming,
    stall_limit: Duration,
    budget: Option<&Budget>,
) -> Result<u64, SendError> {
    let mut sent = 0u64;
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
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
                return Err(SendError::Origin(error));
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

async fn handle_request(
    conn: &Conn,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let started = Instant::now();
    let shared = &conn.shared;
    let config = &shared.config;
    let (parts, recv) = request.into_parts();
    let path_for_log = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str().to_string())
        .unwrap_or_default();
    let target = match proxy::validate(&parts, &conn.ctx, config) {
        Ok(target) => target,
        Err(error) => {
            proxy::log_error(&error, &conn.ctx, &path_for_log);
            let bytes = send_error(&mut respond, &error, parts.method == Method::HEAD);
            shared
                .metrics
                .request(&conn.ctx, error.status().as_u16(), bytes, started);
            access(
                conn,
                &parts.method,
                "",
                &path_for_log,
                error.status().as_u16(),
                bytes,
                started,
                None,
                &[],
                Some(&error.chain()),
            );
            return;
        }
    };
    if let Ok(mut diary) = conn.diary.lock() {
        diary.record_requested(&target.authority, &target.path_and_query);
    }
    let body_is_empty = recv.is_end_stream();
    let (body, tripwire) = CappedBody::new(
        H2Body::new(recv, target.content_length),
        config.limits.max_request_body_bytes,
    );
    let body = body.boxed_unsync();
    let outcome = match proxy::origin_request(
        &parts,
        &target,
        body,
        body_is_empty,
        &conn.ctx,
        config,
        &shared.origin,
    ) {
        Ok(origin_request) => {
            tokio::select! {
                outcome = proxy::forward(&shared.origin, origin_request) => Some(outcome),
                _ = poll_fn(|cx| respond.poll_reset(cx)) => None,
            }
        }
        Err(error) => Some((Err(error), Duration::ZERO)),
    };
    let Some((result, origin_time)) = outcome else {
        // Dropping the origin future closes its connection: the origin sees
        // the request abort.
        tracing::debug!(path = %target.path_and_query, "client reset the stream before the response");
        shared.metrics.client_reset();
        access(
            conn,
            &target.method,
            &target.authority,
            &target.path_and_query,
            499,
            0,
            started,
            None,
            &[],
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
            proxy::log_error(&error, &conn.ctx, &target.path_and_query);
            shared.metrics.origin_error(&error);
            let bytes = send_error(&mut respond, &error, target.method == Method::HEAD);
            shared
                .metrics
                .request(&conn.ctx, error.status().as_u16(), bytes, started);
            access(
                conn,
                &target.method,
                &target.authority,
                &target.path_and_query,
                error.status().as_u16(),
                bytes,
                started,
                Some(origin_time),
                &[],
                Some(&error.chain()),
            );
            return;
        }
    };

    let pushed = promise_links(conn, &target, &parts.headers, &mut head, &mut respond);

    let status = head.status.as_u16();
    let end_stream = body.is_end_stream();
    let mut send = match respond.send_response(Response::from_parts(head, ()), end_stream) {
        Ok(send) => send,
        Err(error) => {
            tracing::debug!(%error, "could not send response head");
            access(
                conn,
                &target.method,
                &target.authority,
                &target.path_and_query,
                status,
                0,
                started,
                Some(origin_time),
                &pushed,
                Some("stream closed before the response head"),
            );
            return;
        }
    };
    let (bytes, error) = if end_stream {
        (0, None)
    } else {
        match send_body(&mut send, body, config.timeouts.client_idle, None).await {
            Ok(bytes) => (bytes, None),
            Err(error) => {
                if let SendError::Origin(_) = error {
                    tracing::warn!(conn = conn.ctx.id, path = %target.path_and_query, cause = %error.describe(), "origin body failed; stream reset");
                    shared.metrics.origin_body_error();
                }
                (0, Some(error.describe()))
            }
        }
    };
    shared.metrics.request(&conn.ctx, status, bytes, started);
    access(
        conn,
        &target.method,
        &target.authority,
        &target.path_and_query,
        status,
        bytes,
        started,
        Some(origin_time),
        &pushed,
        error.as_deref(),
    );
}

#[allow(clippy::too_many_arguments)]
fn access(
    conn: &Conn,
    method: &Method,
    authority: &str,
    path: &str,
    status: u16,
    bytes: u64,
    started: Instant,
    origin_time: Option<Duration>,
    pushes: &[String],
    error: Option<&str>,
) {
    AccessRecord {
        ctx: &conn.ctx,
        method: method.as_str(),
        authority,
        path,
        status,
        bytes,
        started,
        origin_time,
        pushed: false,
        pushes,
        error,
    }
    .emit(conn.shared.config.log.access_log);
}

/// Run the push policy over the response's Link fields, send a PUSH_PROMISE
/// for each link it picks (before the response HEADERS, which the caller sends
/// next), start each promised fetch, and rewrite the Link field for the
/// client. Returns the pushed paths.
fn promise_links(
    conn: &Conn,
    target: &Target,
    request_headers: &HeaderMap,
    head: &mut http::response::Parts,
    respond: &mut SendResponse<Bytes>,
) -> Vec<String> {
    let lines = proxy::link_lines(&head.headers);
    if lines.is_empty() {
        return Vec::new();
    }
    let shared = &conn.shared;
    let facts = push::Facts {
        method: &target.method,
        scheme: conn.ctx.scheme(),
        authority: &target.authority,
        path_and_query: &target.path_and_query,
        status: head.status.as_u16(),
        client: conn.client_push(),
    };
    let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let mut state = ResponseState::default();
    let mut plan = match conn.diary.lock() {
        Ok(mut diary) => push::decide(&shared.policy, &facts, &line_refs, &mut diary, &mut state),
        Err(_) => return Vec::new(),
    };
    let budget = Arc::new(Budget {
        left: AtomicU64::new(shared.config.push.max_pushed_bytes_per_response),
    });
    let mut pushed = Vec::new();
    let mut refused = Vec::new();
    let planned: Vec<(usize, usize, String, Option<String>)> = plan
        .pushes()
        .filter_map(|d| Some((d.line, d.element, d.path.clone()?, d.destination.clone())))
        .collect();
    for (line, element, path, destination) in planned {
        let promised =
            match promised_request(conn, target, request_headers, &path, destination.as_deref()) {
                Some(promised) => promised,
                None => {
                    refused.push((line, element, push::Reason::CrossOrigin));
                    continue;
                }
            };
        let headers = promised.headers().clone();
        match respond.push_request(promised) {
            Ok(stream) => {
                shared.metrics.push_promised();
                conn.pushes_in_flight.fetch_add(1, Ordering::Relaxed);
                let slot = PushSlot(conn.pushes_in_flight.clone());
                pushed.push(path.clone());
                let conn_ctx = conn.ctx.clone();
                let shared = shared.clone();
                let budget = budget.clone();
                let authority = target.authority.clone();
                let span = tracing::debug_span!("push", path = %path);
                tokio::spawn(
                    async move {
                        let _slot = slot;
                        run_push(
                            &shared, &conn_ctx, stream, authority, path, headers, &budget,
                        )
                        .await;
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
                plan.downgrade(line, element, reason, &mut diary, &mut state);
            }
        }
    }
    shared.metrics.push_decisions(&plan);
    proxy::apply_plan(&mut head.headers, &plan, shared.config.push.explain);
    pushed
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

/// Fetch a promised resource from the origin and stream it on the pushed
/// stream. Any failure resets that stream only; the parent never notices.
async fn run_push(
    shared: &Arc<Shared>,
    ctx: &ConnContext,
    mut stream: SendPushedResponse<Bytes>,
    authority: String,
    path: String,
    headers: HeaderMap,
    budget: &Budget,
) {
    let started = Instant::now();
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
        outcome = proxy::forward(&shared.origin, request) => Some(outcome),
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
    if let Err(reason) = pushable(&head)
        .and_then(|()| proxy::clean_response(&mut head).map_err(|_| "invalid origin response"))
    {
        stream.send_reset(Reason::CANCEL);
        shared.metrics.push_cancelled();
        log(head.status.as_u16(), 0, Some(origin_time), Some(reason));
        return;
    }
    if let Some(length) = declared_length(&head.headers) {
        if length > budget.left() {
            stream.send_reset(Reason::CANCEL);
            shared.metrics.push_cancelled();
            log(
                head.status.as_u16(),
                0,
                Some(origin_time),
                Some("push byte budget exhausted"),
            );
            return;
        }
    }
    head.headers
        .insert("x-http2-push", HeaderValue::from_static("1"));
    let status = head.status.as_u16();
    let end_stream = body.is_end_stream();
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
    match send_body(
        &mut send,
        body,
        shared.config.timeouts.client_idle,
        Some(budget),
    )
    .await
    {
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

/// A pushed response is only worth sending when a browser could use it from
/// its push cache: a success, not private, not varying on credentials
/// (RFC 9113 §8.4 and §10.4).
fn pushable(head: &http::response::Parts) -> Result<(), &'static str> {
    if head.status.as_u16() >= 400 || head.status == StatusCode::NOT_MODIFIED {
        return Err("origin status not pushable");
    }
    if head.headers.contains_key(header::SET_COOKIE) {
        return Err("origin response sets a cookie");
    }
    let has_token = |name: HeaderName, tokens: &[&str]| {
        head.headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    tokens
                        .iter()
                        .any(|token| t.trim().eq_ignore_ascii_case(token))
                })
            })
        })
    };
    if has_token(header::CACHE_CONTROL, &["private", "no-store"]) {
        return Err("origin response is private");
    }
    if has_token(header::VARY, &["cookie", "authorization", "*"]) {
        return Err("origin response varies on credentials");
    }
    Ok(())
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}
