//! Sending a response body on an HTTP/2 stream, for replies and pushes
//! alike: within flow control, the origin's read timeout and the client's
//! write timeout.

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use h2::{Reason, SendStream};
use http_body::Body;

use crate::config::Timeouts;
use crate::error::BoxError;

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
