//! The request body on its way to the origin: capped in size, bounded in
//! how long it may stall, and watched so that the origin's time to answer
//! is only counted once the whole body has been handed over.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

use crate::error::BoxError;

/// What happened to a request body, for the exchange and the origin client
/// to read after the fact.
#[derive(Debug, Default)]
pub struct Upload {
    /// The body went past the size limit (the client gets a 413).
    too_large: AtomicBool,
    /// The client sent no body bytes in time (the client gets a 408).
    stalled: AtomicBool,
    /// The whole body has been handed to the origin connection.
    done: AtomicBool,
    finished: Notify,
}

impl Upload {
    pub fn too_large(&self) -> bool {
        self.too_large.load(Ordering::Relaxed)
    }

    pub fn stalled(&self) -> bool {
        self.stalled.load(Ordering::Relaxed)
    }

    pub fn done(&self) -> bool {
        self.done.load(Ordering::Acquire)
    }

    /// Resolves once the whole body has been handed over.
    pub async fn finished(&self) {
        loop {
            let notified = self.finished.notified();
            if self.done() {
                return;
            }
            notified.await;
        }
    }

    fn finish(&self) {
        if !self.done.swap(true, Ordering::AcqRel) {
            self.finished.notify_waiters();
        }
    }
}

/// The request body is larger than allowed.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client stopped sending the request body.
#[derive(Debug, thiserror::Error)]
#[error("client sent no request body bytes for {0:?}")]
pub struct BodyStalled(pub Duration);

pin_project_lite::pin_project! {
    /// A request body on its way to the origin, cut off (with an error, so
    /// the origin connection is closed, never reused) past the size limit
    /// or when the client stops sending it. Trailers are dropped: which
    /// trailer fields are safe to forward is origin-specific, and none is
    /// needed by the origins this serves.
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        limit: u64,
        seen: u64,
        // The validated Content-Length, when the request declared one.
        length: Option<u64>,
        upload: Arc<Upload>,
        stall_limit: Duration,
        // Made at the first wait for the client, then re-armed in place.
        stall: Option<Pin<Box<tokio::time::Sleep>>>,
        waiting: bool,
    }
}

impl<B: Body> RequestBody<B> {
    /// Wrap `inner`: at most `limit` bytes, `length` if the request
    /// declared one, and no wait for the client longer than `stall_limit`.
    pub fn new(
        inner: B,
        limit: u64,
        length: Option<u64>,
        stall_limit: Duration,
    ) -> (Self, Arc<Upload>) {
        let upload = Arc::new(Upload::default());
        if inner.is_end_stream() {
            upload.finish();
        }
        let body = RequestBody {
            inner,
            limit,
            seen: 0,
            length,
            upload: upload.clone(),
            stall_limit,
            stall: None,
            waiting: false,
        };
        (body, upload)
    }
}

impl<B> Body for RequestBody<B>
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
            let polled = this.inner.as_mut().poll_frame(cx);
            if polled.is_pending() {
                let deadline = tokio::time::Instant::now() + *this.stall_limit;
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
                this.upload.stalled.store(true, Ordering::Relaxed);
                return Poll::Ready(Some(Err(BodyStalled(*this.stall_limit).into())));
            }
            *this.waiting = false;
            return match polled {
                Poll::Pending => Poll::Pending,
                Poll::Ready(None) => {
                    this.upload.finish();
                    Poll::Ready(None)
                }
                Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(error.into()))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        *this.seen += data.len() as u64;
                        if *this.seen > *this.limit {
                            this.upload.too_large.store(true, Ordering::Relaxed);
                            return Poll::Ready(Some(Err(BodyTooLarge(*this.limit).into())));
                        }
                        if this.inner.is_end_stream() {
                            this.upload.finish();
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
