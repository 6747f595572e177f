//! The HTTP/1.1 frontend, on hyper's http1 server: keep-alive, chunked
//! request bodies, `Expect: 100-continue` and pipelining come from hyper.
//!
//! A request the origin answers with a 101 for an upgrade the client asked
//! for gets that 101, then hyper hands the connection over and
//! [`crate::tunnel`] splices it with the origin's; any other answer leaves
//! the connection HTTP, its next bytes parsed as the next request.
//!
//! HTTP/1.1 clients take no pushes and (through hyper's server) no 103s,
//! so the exchange runs with "HTTP/1.1 client" as a fact: every `rel=push`
//! link becomes a preload.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::access_log::Record;
use crate::conn::ConnContext;
use crate::error::BoxError;
use crate::exchange::{self, Client, ConnMemory, Promise, Reply, ReplyBody};
use crate::policy::push::{ClientPush, Reason};
use crate::runtime::Worker;
use crate::tunnel::{self, OriginSide};

/// A response body toward an HTTP/1.1 client.
pub type H1Body = Logged<ReplyBody>;

/// What every request of one HTTP/1.1 connection shares.
struct Connection {
    ctx: Arc<ConnContext>,
    worker: Arc<Worker>,
    /// The tunnel the connection became, if it switched protocols: the
    /// connection is served until the tunnel ends.
    tunnel: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// Serve one HTTP/1.1 connection.
pub async fn serve<IO>(io: IO, ctx: Arc<ConnContext>, worker: Arc<Worker>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let config = &worker.config;
    let connection = Arc::new(Connection {
        ctx,
        worker: worker.clone(),
        tunnel: Mutex::new(None),
    });
    let shared = connection.clone();
    let service = service_fn(move |mut request: Request<Incoming>| {
        let connection = connection.clone();
        async move {
            let client_upgrade = request
                .headers()
                .contains_key(header::UPGRADE)
                .then(|| hyper::upgrade::on(&mut request));
            let reply =
                exchange::serve(&connection.worker, &connection.ctx, request, &mut Http1).await;
            Ok::<_, Infallible>(match reply {
                Some(Reply {
                    head,
                    record,
                    tunnel: Some(origin),
                    ..
                }) => {
                    let worker = connection.worker.clone();
                    let task = tokio::spawn(splice(worker, client_upgrade, origin, record));
                    if let Ok(mut tunnel) = connection.tunnel.lock() {
                        *tunnel = Some(task);
                    }
                    Response::from_parts(head, Logged::empty())
                }
                Some(reply) => respond(reply, &connection.worker),
                // An HTTP/1.1 client never goes away mid-exchange without
                // taking the connection (and this future) with it.
                None => Response::new(Logged::empty()),
            })
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(config.timeouts.client_header_read)
        .max_buf_size((config.limits.max_request_header_bytes as usize).max(8192))
        .max_headers(config.limits.max_request_headers)
        .keep_alive(true);
    let connection = builder
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%error, "http/1.1 connection ended with an error");
            }
        }
        _ = worker.shutdown.cancelled() => {
            // Finish the in-flight exchange with `Connection: close`.
            connection.as_mut().graceful_shutdown();
            let grace = config.timeouts.shutdown_grace;
            if tokio::time::timeout(grace, connection.as_mut()).await.is_err() {
                tracing::debug!("shutdown grace period over; closing connection");
            }
        }
    }
    // A tunnel ends on its own: both sides closed, idle, or shutdown's
    // grace period over.
    let tunnel = shared
        .tunnel
        .lock()
        .ok()
        .and_then(|mut tunnel| tunnel.take());
    if let Some(tunnel) = tunnel {
        let _ = tunnel.await;
    }
}

/// Wait for hyper to hand the connection over once the 101 is out, then
/// splice it with the origin's.
async fn splice(
    worker: Arc<Worker>,
    client: Option<OnUpgrade>,
    origin: OriginSide,
    mut record: Record,
) {
    let Some(client) = client else {
        record.fail("client connection cannot switch protocols");
        record.finish(0, &worker.metrics, worker.access_log());
        return;
    };
    match client.await {
        Ok(io) => {
            let (read, write) = tokio::io::split(TokioIo::new(io));
            tunnel::run(&worker, origin, read, write, record).await;
        }
        Err(error) => {
            record.fail(format!("client connection not handed over: {error}"));
            record.finish(0, &worker.metrics, worker.access_log());
        }
    }
}

/// An HTTP/1.1 client, as the exchange sees it: it can take neither a push
/// nor a 103, and it only goes away with its connection.
struct Http1;

impl Client for Http1 {
    fn push_state(&self) -> ClientPush {
        ClientPush::Http1
    }

    fn memory(&self) -> Option<&ConnMemory> {
        None
    }

    fn takes_informational(&self) -> bool {
        false
    }

    fn hint(&mut self, _links: HeaderMap) -> bool {
        false
    }

    fn promise(&mut self, _promise: Promise) -> Result<(), Reason> {
        Err(Reason::Http1Client)
    }

    fn poll_gone(&mut self, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

fn respond(reply: Reply, worker: &Arc<Worker>) -> Response<H1Body> {
    let Reply {
        head, body, record, ..
    } = reply;
    Response::from_parts(head, Logged::new(body, record, worker.clone()))
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes and finishes the exchange's
    /// record when it ends, fails, or is dropped half-sent.
    pub struct Logged<B> {
        #[pin]
        inner: Option<B>,
        bytes: u64,
        ended: bool,
        record: Option<(Record, Arc<Worker>)>,
        // Runs only while the origin owes the next bytes, so a slow client
        // (which simply polls late) never trips it. Made at the first wait,
        // then re-armed in place.
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
        waiting: bool,
    }

    impl<B> PinnedDrop for Logged<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some((mut record, worker)) = this.record.take() {
                if !*this.ended {
                    record.fail("client went away before the body was sent");
                }
                record.finish(*this.bytes, &worker.metrics, worker.access_log());
            }
        }
    }
}

impl<B: Body> Logged<B> {
    fn new(inner: B, record: Record, worker: Arc<Worker>) -> Self {
        Logged {
            ended: inner.is_end_stream(),
            inner: Some(inner),
            bytes: 0,
            record: Some((record, worker)),
            stall: None,
            waiting: false,
        }
    }

    fn empty() -> Self {
        Logged {
            ended: true,
            inner: None,
            bytes: 0,
            record: None,
            stall: None,
            waiting: false,
        }
    }
}

/// The origin sent no body bytes for `timeouts.origin_read`.
#[derive(Debug, thiserror::Error)]
#[error("origin body stalled for {0:?}")]
pub struct OriginStalled(Duration);

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
        let Some(mut inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(None);
        };
        let polled = match inner.as_mut().poll_frame(cx) {
            Poll::Pending => {
                let Some((_, worker)) = this.record.as_ref() else {
                    return Poll::Pending;
                };
                let timeout = worker.config.timeouts.origin_read;
                let deadline = tokio::time::Instant::now() + timeout;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !*this.waiting {
                    stall.as_mut().reset(deadline);
                    *this.waiting = true;
                }
                if stall.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *this.waiting = false;
                Poll::Ready(Some(Err(OriginStalled(timeout).into())))
            }
            Poll::Ready(ready) => {
                *this.waiting = false;
                Poll::Ready(ready.map(|frame| frame.map_err(Into::into)))
            }
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                // hyper stops polling a body of known length once it has
                // its last byte, and drops it without asking for its end:
                // that is the end too, not a client that went away.
                if inner.is_end_stream() {
                    *this.ended = true;
                    if let Some((record, worker)) = this.record.take() {
                        record.finish(*this.bytes, &worker.metrics, worker.access_log());
                    }
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some((record, worker)) = this.record.as_mut() {
                    tracing::warn!(conn = record.conn().id, path = record.path(), %error, "origin body failed; closing connection");
                    worker.metrics.origin_body_error();
                    record.fail(format!("origin body failed: {error}"));
                }
            }
            Poll::Ready(None) => {
                *this.ended = true;
                if let Some((record, worker)) = this.record.take() {
                    record.finish(*this.bytes, &worker.metrics, worker.access_log());
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Body::size_hint)
    }
}
