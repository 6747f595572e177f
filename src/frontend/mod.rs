//! The client-facing protocols, and the request-body plumbing they share.

pub mod h1;
pub mod h2;
mod sniff;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;

pub use sniff::PeerSettings;

/// Raised by [`CappedBody`] when the body outgrows its limit; the frontend
/// checks it after a failed origin call to answer 413 instead of 502.
#[derive(Debug, Clone, Default)]
pub struct Tripwire(Arc<AtomicBool>);

impl Tripwire {
    pub fn tripped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The request body is larger than allowed.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyTooLarge(pub u64);

pin_project_lite::pin_project! {
    /// A request body on its way to the origin, cut off (with an error, so
    /// the origin connection is closed, never reused) past the size limit.
    /// Trailers are dropped: which trailer fields are safe to forward is
    /// origin-specific, and none is needed by the origins this serves.
    pub struct CappedBody<B> {
        #[pin]
        inner: B,
        limit: u64,
        seen: u64,
        tripwire: Tripwire,
    }
}

impl<B> CappedBody<B> {
    pub fn new(inner: B, limit: u64) -> (Self, Tripwire) {
        let tripwire = Tripwire::default();
        let body = CappedBody {
            inner,
            limit,
            seen: 0,
            tripwire: tripwire.clone(),
        };
        (body, tripwire)
    }
}

impl<B> Body for CappedBody<B>
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
        let mut this = self.project();
        loop {
            return match this.inner.as_mut().poll_frame(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        *this.seen += data.len() as u64;
                        if *this.seen > *this.limit {
                            this.tripwire.0.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(BodyTooLarge(*this.limit).into())));
                        }
                        Poll::Ready(Some(Ok(Frame::data(data))))
                    }
                    // Trailers: dropped (see above).
                    Err(_) => continue,
                },
            };
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An HTTP/2 request body as an [`http_body::Body`]. Flow-control capacity
/// is released as each chunk is handed on toward the origin, so the client
/// can send at most one window ahead of what the origin has taken.
pub struct H2Body {
    recv: ::h2::RecvStream,
    length: Option<u64>,
}

impl H2Body {
    pub fn new(recv: ::h2::RecvStream, length: Option<u64>) -> Self {
        H2Body { recv, length }
    }
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = ::h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ::h2::Error>>> {
        match self.recv.poll_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error))),
            Poll::Ready(Some(Ok(data))) => {
                let _ = self.recv.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.recv.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => SizeHint::default(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A client connection whose writes must make progress: when the
    /// socket accepts no bytes for `limit` (the client stopped reading),
    /// the pending write fails with `TimedOut` and the frontend closes the
    /// connection, which releases its origin connection too. A client that
    /// reads slowly but steadily is never cut off: the clock only runs
    /// while a write is blocked, and restarts at each byte taken.
    pub struct WriteDeadline<IO> {
        #[pin]
        io: IO,
        limit: std::time::Duration,
        // Made on the first blocked write, then re-armed in place.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
        armed: bool,
    }
}

impl<IO> WriteDeadline<IO> {
    pub fn new(io: IO, limit: std::time::Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            timer: None,
            armed: false,
        }
    }

    pub fn get_ref(&self) -> &IO {
        &self.io
    }
}

/// What a blocked write sees when the clock runs out.
fn write_stalled(limit: std::time::Duration) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("client took no bytes for {limit:?}"),
    )
}

impl<IO: tokio::io::AsyncWrite> WriteDeadline<IO> {
    /// Pass a write's result through, running the clock while it blocks.
    fn watch<T>(
        this: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut IO>, &mut Context<'_>) -> Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        let this = this.project();
        match write(this.io, cx) {
            Poll::Ready(result) => {
                *this.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                let limit = *this.limit;
                let deadline = tokio::time::Instant::now() + limit;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !*this.armed {
                    timer.as_mut().reset(deadline);
                    *this.armed = true;
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(write_stalled(limit))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<IO: tokio::io::AsyncRead> tokio::io::AsyncRead for WriteDeadline<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.project().io.poll_read(cx, buf)
    }
}

impl<IO: tokio::io::AsyncWrite> tokio::io::AsyncWrite for WriteDeadline<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Self::watch(self, cx, |io, cx| io.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Self::watch(self, cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Self::watch(self, cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Self::watch(self, cx, |io, cx| io.poll_shutdown(cx))
    }
}
