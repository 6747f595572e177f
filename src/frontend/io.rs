//! I/O wrappers for client connections.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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
