//! One HTTP/2 request stream: the exchange's protocol verbs (103s,
//! promises, resets), and the response sent with flow control.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream, SendStream};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::{push, Conn};
use crate::config::Timeouts;
use crate::error::BoxError;
use crate::exchange::{self, Client, ConnMemory, Promise, Reply};
use crate::policy::push::{ClientPush, Reason as PushReason};

/// Serve one request stream.
pub(super) async fn handle(
    conn: &Arc<Conn>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    let request = request.map(H2Body);
    let mut client = Stream {
        conn,
        respond: &mut respond,
    };
    let Some(reply) = exchange::serve(&conn.worker, &conn.ctx, request, &mut client).await else {
        return;
    };
    send_reply(conn, &mut respond, reply).await;
}

/// The exchange's view of a request stream.
struct Stream<'a> {
    conn: &'a Arc<Conn>,
    respond: &'a mut SendResponse<Bytes>,
}

impl Client for Stream<'_> {
    fn push_state(&self) -> ClientPush {
        self.conn.client_push()
    }

    fn memory(&self) -> Option<&ConnMemory> {
        Some(&self.conn.memory)
    }

    fn takes_informational(&self) -> bool {
        true
    }

    fn hint(&mut self, links: HeaderMap) -> bool {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::EARLY_HINTS;
        *response.headers_mut() = links;
        match self.respond.send_informational(response) {
            Ok(()) => true,
            Err(error) => {
                tracing::debug!(%error, "could not send 103");
                false
            }
        }
    }

    fn promise(&mut self, promise: Promise) -> Result<(), PushReason> {
        let uri = http::Uri::builder()
            .scheme(self.conn.ctx.scheme())
            .authority(promise.authority.clone())
            .path_and_query(promise.path.clone())
            .build()
            .map_err(|_| PushReason::CrossOrigin)?;
        let mut request = Request::new(());
        *request.method_mut() = Method::GET;
        *request.uri_mut() = uri;
        *request.headers_mut() = promise.headers.clone();
        match self.respond.push_request(request) {
            Ok(stream) => {
                push::start(self.conn, stream, promise);
                Ok(())
            }
            Err(error) => {
                tracing::debug!(%error, path = %promise.path, "push refused by h2");
                Err(if self.conn.peer.push_enabled() {
                    PushReason::Limit
                } else {
                    PushReason::ClientDisabled
                })
            }
        }
    }

    fn poll_gone(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.respond.poll_reset(cx).map(|_| ())
    }
}

/// Send a reply on its stream, then finish its record.
async fn send_reply(conn: &Conn, respond: &mut SendResponse<Bytes>, reply: Reply) {
    let Reply {
        head,
        body,
        mut record,
    } = reply;
    let worker = &conn.worker;
    let end_stream = body.is_end_stream();
    let bytes = match respond.send_response(Response::from_parts(head, ()), end_stream) {
        Err(error) => {
            tracing::debug!(%error, "could not send response head");
            record.fail("stream closed before the response head");
            0
        }
        Ok(_) if end_stream => 0,
        Ok(mut send) => match send_body(&mut send, body, &worker.config.timeouts).await {
            Ok(bytes) => bytes,
            Err(error) => {
                if let SendError::Origin(_) | SendError::OriginStalled = error {
                    tracing::warn!(conn = conn.ctx.id, path = record.path(), cause = %error.describe(), "origin body failed; stream reset");
                    worker.metrics.origin_body_error();
                }
                record.fail(error.describe());
                0
            }
        },
    };
    record.finish(bytes, &worker.metrics, worker.access_log());
}

/// Why sending a body stopped early.
#[derive(Debug)]
pub(super) enum SendError {
    /// The client reset the stream.
    ClientReset(Reason),
    /// The origin's body failed mid-way (truncated, reset, malformed).
    Origin(BoxError),
    /// The stream could not be written (connection gone).
    Stream(h2::Error),
    /// The client stopped reading (no flow-control credit in time).
    Stalled,
    /// The origin sent no body bytes for `timeouts.origin_read`.
    OriginStalled,
}

impl SendError {
    pub(super) fn describe(&self) -> String {
        match self {
            SendError::ClientReset(reason) => format!("client reset the stream ({reason})"),
            SendError::Origin(error) => format!("origin body failed: {error}"),
            SendError::Stream(error) => format!("stream write failed: {error}"),
            SendError::Stalled => "client granted no flow-control window in time".to_string(),
            SendError::OriginStalled => "origin body stalled".to_string(),
        }
    }
}

/// Stream a body with flow control: capacity is reserved before each DATA
/// frame, so at most one window of it is buffered. One timer serves the
/// whole body and runs only while waiting, on the origin
/// (`timeouts.origin_read`) or on the client (`timeouts.client_write`): a
/// body whose bytes and window are at hand never touches the timer wheel.
pub(super) async fn send_body<B>(
    send: &mut SendStream<Bytes>,
    body: B,
    timeouts: &Timeouts,
) -> Result<u64, SendError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut body = body;
    let timer = tokio::time::sleep_until(tokio::time::Instant::now());
    tokio::pin!(timer);
    let mut armed = false;
    let mut sent = 0u64;
    loop {
        let frame = poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Ok(frame));
            }
            if let Poll::Ready(reset) = send.poll_reset(cx) {
                return Poll::Ready(Err(match reset {
                    Ok(reason) => SendError::ClientReset(reason),
                    Err(error) => SendError::Stream(error),
                }));
            }
            wait(&mut timer, &mut armed, timeouts.origin_read, cx)
                .map(|()| Err(SendError::OriginStalled))
        })
        .await;
        armed = false;
        let mut data = match frame {
            Err(error) => {
                if let SendError::OriginStalled = error {
                    send.send_reset(Reason::INTERNAL_ERROR);
                }
                return Err(error);
            }
            Ok(None) => {
                send.send_data(Bytes::new(), true)
                    .map_err(SendError::Stream)?;
                return Ok(sent);
            }
            Ok(Some(Err(error))) => {
                send.send_reset(Reason::INTERNAL_ERROR);
                return Err(SendError::Origin(error.into()));
            }
            Ok(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => data,
                // Origin trailers are not forwarded.
                Err(_) => continue,
            },
        };
        while !data.is_empty() {
            send.reserve_capacity(data.len());
            let granted = poll_fn(|cx| {
                loop {
                    match send.poll_capacity(cx) {
                        Poll::Ready(Some(Ok(0))) => continue,
                        Poll::Ready(Some(Ok(n))) => return Poll::Ready(Ok(n)),
                        Poll::Ready(Some(Err(error))) => {
                            return Poll::Ready(Err(SendError::Stream(error)))
                        }
                        Poll::Ready(None) => {
                            return Poll::Ready(Err(SendError::Stream(h2::Error::from(
                                Reason::STREAM_CLOSED,
                            ))))
                        }
                        Poll::Pending => break,
                    }
                }
                wait(&mut timer, &mut armed, timeouts.client_write, cx)
                    .map(|()| Err(SendError::Stalled))
            })
            .await;
            armed = false;
            let n = match granted {
                Ok(n) => n,
                Err(error) => {
                    if let SendError::Stalled = error {
                        send.send_reset(Reason::CANCEL);
                    }
                    return Err(error);
                }
            };
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

/// Run the stream's timer while it waits: armed at the first wait, for
/// `limit`; ready when the wait has lasted that long.
fn wait(
    timer: &mut Pin<&mut tokio::time::Sleep>,
    armed: &mut bool,
    limit: std::time::Duration,
    cx: &mut Context<'_>,
) -> Poll<()> {
    if !*armed {
        timer.as_mut().reset(tokio::time::Instant::now() + limit);
        *armed = true;
    }
    timer.as_mut().poll(cx)
}

/// An HTTP/2 request body as an [`http_body::Body`]. Flow-control capacity
/// is released as each chunk is handed on toward the origin, so the client
/// can send at most one window ahead of what the origin has taken.
struct H2Body(RecvStream);

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        match self.0.poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Some(Ok(data))) => {
                let _ = self.0.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
