//! One HTTP/2 request stream: the exchange's protocol verbs (103s,
//! promises, resets), and the reply handed to [`super::body`], or, for an
//! extended CONNECT the origin accepted, the stream handed to
//! [`crate::tunnel`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::body::{send_body, SendError};
use super::tunnel::{StreamRead, StreamWrite};
use super::{push, Conn};
use crate::exchange::{self, Client, ConnMemory, Promise, Reply};
use crate::policy::push::{ClientPush, Reason as PushReason};

/// Serve one request stream.
pub(super) async fn handle(
    conn: &Arc<Conn>,
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
) {
    // An extended CONNECT's DATA frames are the tunnel's bytes, not a body
    // for the origin.
    let extended = request.method() == Method::CONNECT
        && request.extensions().get::<h2::ext::Protocol>().is_some();
    let (request, tunnel_recv) = if extended {
        let (parts, recv) = request.into_parts();
        (Request::from_parts(parts, H2Body(None)), Some(recv))
    } else {
        (request.map(|recv| H2Body(Some(recv))), None)
    };
    let mut client = Stream {
        conn,
        respond: &mut respond,
    };
    let Some(reply) = exchange::serve(&conn.worker, &conn.ctx, request, &mut client).await else {
        return;
    };
    match (reply.tunnel, tunnel_recv) {
        (Some(origin), Some(recv)) => {
            let Reply { head, record, .. } = reply;
            let worker = &conn.worker;
            match respond.send_response(Response::from_parts(head, ()), false) {
                Ok(send) => {
                    let (read, write) = (StreamRead::new(recv), StreamWrite::new(send));
                    crate::tunnel::run(worker, origin, read, write, record).await;
                }
                Err(error) => {
                    let mut record = record;
                    tracing::debug!(%error, "could not send response head");
                    record.fail("stream closed before the response head");
                    record.finish(0, &worker.metrics, worker.access_log());
                }
            }
        }
        (tunnel, _) => {
            let reply = Reply { tunnel, ..reply };
            send_reply(conn, &mut respond, reply).await;
        }
    }
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
        ..
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

/// An HTTP/2 request body as an [`http_body::Body`]. Flow-control capacity
/// is released as each chunk is handed on toward the origin, so the client
/// can send at most one window ahead of what the origin has taken.
struct H2Body(Option<RecvStream>);

impl Body for H2Body {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let Some(recv) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        match recv.poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Some(Ok(data))) => {
                let _ = recv.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(RecvStream::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}
