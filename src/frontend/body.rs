//! The request body on its way to the origin.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::error::BoxError;

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
        // The validated Content-Length, when the request declared one.
        length: Option<u64>,
        tripwire: Tripwire,
    }
}

impl<B> CappedBody<B> {
    pub fn new(inner: B, limit: u64, length: Option<u64>) -> (Self, Tripwire) {
        let tripwire = Tripwire::default();
        let body = CappedBody {
            inner,
            limit,
            seen: 0,
            length,
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
        match self.length {
            Some(length) => SizeHint::with_exact(length),
            None => self.inner.size_hint(),
        }
    }
}
