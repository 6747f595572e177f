//! One HTTP/2 request stream: the exchange's protocol verbs (103s,
//! promises, resets), and the reply handed to [`super::body`].

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use super::body::{send_body, SendError};
use super::{push, Conn};
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
