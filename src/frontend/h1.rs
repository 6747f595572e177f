//! The HTTP/1.1 frontend, on hyper's http1 server: keep-alive, chunked
//! request bodies, `Expect: 100-continue` and pipelining come from hyper.
//!
//! HTTP/1.1 clients cannot take pushes, so the push policy runs with
//! "HTTP/1.1 client" as a fact: every `rel=push` link becomes a preload.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{BodyExt, Either, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use super::CappedBody;
use crate::error::{BoxError, ProxyError};
use crate::hints;
use crate::origin::ResponseBody;
use crate::proxy::{self, AccessRecord, ConnContext};
use crate::push::{self, ClientPush, ResponseState};
use crate::server::Shared;

/// A response body toward an HTTP/1.1 client.
pub type H1Body = Logged<Either<ResponseBody, Full<Bytes>>>;

/// Serve one HTTP/1.1 connection.
pub async fn serve<IO>(io: IO, ctx: ConnContext, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &shared.config;
    let state = Arc::new((ctx, shared.clone()));
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state.0, &state.1, request).await) }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.client_header_read)
        .max_buf_size((config.limits.max_request_header_bytes as usize).max(8192))
        .max_headers(config.limits.max_request_headers)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "http/1.1 connection ended with an error");
            }
        }
        _ = shared.shutdown.cancelled() => {
            // Finish the in-flight exchange with `Connection: close`.
            connection.as_mut().graceful_shutdown();
            let grace = config.timeouts.shutdown_grace;
            if tokio::time::timeout(grace, connection.as_mut()).await.is_err() {
                tracing::debug!("shutdown grace period over; closing connection");
            }
        }
    }
}

async fn handle(
    ctx: &ConnContext,
    shared: &Arc<Shared>,
    request: Request<Incoming>,
) -> Response<H1Body> {
    let started = Instant::now();
    let config = &shared.config;
    let (parts, body) = request.into_parts();
    let mut log = OwnedAccess {
        ctx: ctx.clone(),
        shared: shared.clone(),
        method: parts.method.to_string(),
        authority: String::new(),
        path: parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str().to_string())
            .unwrap_or_default(),
        status: 0,
        started,
        origin_time: None,
        error: None,
    };
    let target = match proxy::validate(&parts, ctx, config) {
        Ok(target) => target,
        Err(error) => return fail(log, &error),
    };
    log.authority = target.authority.clone();
    let body_is_empty = body.is_end_stream();
    let (body, tripwire) = CappedBody::new(body, config.limits.max_request_body_bytes);
    let origin_request = match proxy::origin_request(
        &parts,
        &target,
        body.boxed_unsync(),
        body_is_empty,
        ctx,
        config,
        &shared.origin,
    ) {
        Ok(request) => request,
        Err(error) => return fail(log, &error),
    };
    let (result, origin_time) = proxy::forward(&shared.origin, origin_request, ctx).await;
    log.origin_time = Some(origin_time);
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
            return fail(log, &error);
        }
    };
    proxy::record_validator(shared.validators.as_deref(), &target, &head);
    if let Some(learned) = &shared.learned {
        let key = learned.key(&target.authority, &target.path_and_query);
        let status = head.status.as_u16();
        let lesson = hints::lesson(
            &target.method,
            &key,
            status,
            &head.headers,
            learned.min_clients(),
        );
        learned.apply(key, ctx.peer, lesson);
    }
    let lines = proxy::link_lines(&head.headers);
    if !lines.is_empty() {
        let facts = push::Facts {
            method: &target.method,
            scheme: ctx.scheme(),
            authority: &target.authority,
            path_and_query: &target.path_and_query,
            status: head.status.as_u16(),
            authority_served: shared.names.serves(&target.authority),
            client: ClientPush::Http1,
            cached: None,
        };
        let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        // HTTP/1.1 never pushes, so a throwaway diary is enough.
        let mut diary = push::Diary::new(1);
        let plan = push::decide(
            &shared.policy,
            &facts,
            &line_refs,
            &mut diary,
            &mut ResponseState::default(),
        );
        shared.metrics.push_decisions(&plan);
        proxy::apply_plan(&mut head.headers, &plan, config.push.explain);
    }
    log.status = head.status.as_u16();
    Response::from_parts(head, Logged::new(Either::Left(body), log))
}

fn fail(mut log: OwnedAccess, error: &ProxyError) -> Response<H1Body> {
    proxy::log_error(error, &log.ctx, &log.path);
    log.status = error.status().as_u16();
    log.error = Some(error.chain());
    let response = proxy::error_response(error);
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, Logged::new(Either::Right(body), log))
}

/// The access-log fields of an HTTP/1.1 exchange, written once its body
/// has been sent (or abandoned).
struct OwnedAccess {
    ctx: ConnContext,
    shared: Arc<Shared>,
    method: String,
    authority: String,
    path: String,
    status: u16,
    started: Instant,
    origin_time: Option<Duration>,
    error: Option<String>,
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes and writes the access-log
    /// line when it ends, fails, or is dropped half-sent.
    pub struct Logged<B> {
        #[pin]
        inner: B,
        bytes: u64,
        ended: bool,
        log: Option<OwnedAccess>,
        // Runs only while the origin owes the next bytes, so a slow client
        // (which simply polls late) never trips it.
        read_timeout: Duration,
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
    }

    impl<B> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(mut log) = this.log.take() {
                if log.error.is_none() && !*this.ended {
                    log.error = Some("client went away before the body was sent".to_string());
                }
                emit(&log, *this.bytes);
            }
        }
    }
}

impl<B: Body> Logged<B> {
    fn new(inner: B, log: OwnedAccess) -> Self {
        Logged {
            ended: inner.is_end_stream(),
            read_timeout: log.shared.config.timeouts.origin_read,
            inner,
            bytes: 0,
            log: Some(log),
            stall: None,
        }
    }
}

/// The origin sent no body bytes for `timeouts.origin_read`.
#[derive(Debug, thiserror::Error)]
#[error("origin body stalled for {0:?}")]
pub struct OriginStalled(Duration);

fn emit(log: &OwnedAccess, bytes: u64) {
    log.shared
        .metrics
        .request(&log.ctx, log.status, bytes, log.started);
    AccessRecord {
        ctx: &log.ctx,
        method: &log.method,
        authority: &log.authority,
        path: &log.path,
        status: log.status,
        bytes,
        started: log.started,
        origin_time: log.origin_time,
        pushed: false,
        pushes: &[],
        error: log.error.as_deref(),
    }
    .emit(log.shared.config.log.access_log);
}

impl<B> Body for Logged<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.project();
        let polled = match this.inner.poll_frame(cx) {
            Poll::Pending => {
                let timeout = *this.read_timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.stall = None;
                Poll::Ready(Some(Err(OriginStalled(timeout).into())))
            }
            Poll::Ready(ready) => {
                *this.stall = None;
                Poll::Ready(ready.map(|frame| frame.map_err(Into::into)))
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(log) = this.log.as_mut() {
                    tracing::warn!(conn = log.ctx.id, path = %log.path, %error, "origin body failed; closing connection");
                    log.shared.metrics.origin_body_error();
                    log.error = Some(format!("origin body failed: {error}"));
                }
            }
            Poll::Ready(None) => {
                *this.ended = true;
                if let Some(log) = this.log.take() {
                    emit(&log, *this.bytes);
                }
            }
            Poll::Pending => {}
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
