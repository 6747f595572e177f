//! An HTTP/2 stream as the client's side of a tunnel (RFC 8441): DATA
//! frames in are bytes read, bytes written are DATA frames out, within
//! flow control both ways. END_STREAM is the end of the bytes each way; a
//! reset is an error that ends the tunnel.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The bytes the client sends on the stream.
pub(super) struct StreamRead {
    recv: RecvStream,
    /// What is left of the last DATA frame.
    buffered: Bytes,
}

impl StreamRead {
    pub(super) fn new(recv: RecvStream) -> StreamRead {
        StreamRead {
            recv,
            buffered: Bytes::new(),
        }
    }
}

impl AsyncRead for StreamRead {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while this.buffered.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                Some(Ok(data)) => {
                    // One frame at most is held here, so the window opens
                    // again as soon as a frame is taken.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.buffered = data;
                }
            }
        }
        let n = buf.remaining().min(this.buffered.len());
        buf.put_slice(&this.buffered.split_to(n));
        Poll::Ready(Ok(()))
    }
}

/// The bytes sent to the client on the stream.
pub(super) struct StreamWrite {
    send: SendStream<Bytes>,
    ended: bool,
}

impl StreamWrite {
    pub(super) fn new(send: SendStream<Bytes>) -> StreamWrite {
        StreamWrite { send, ended: false }
    }
}

impl AsyncWrite for StreamWrite {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = self.get_mut();
        this.send.reserve_capacity(buf.len());
        loop {
            match ready!(this.send.poll_capacity(cx)) {
                None => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
                Some(Err(error)) => return Poll::Ready(Err(io::Error::other(error))),
                Some(Ok(0)) => continue,
                Some(Ok(granted)) => {
                    let n = granted.min(buf.len());
                    this.send
                        .send_data(Bytes::copy_from_slice(&buf[..n]), false)
                        .map_err(io::Error::other)?;
                    return Poll::Ready(Ok(n));
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes frames out as the connection task gets to them.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.ended {
            this.ended = true;
            this.send
                .send_data(Bytes::new(), true)
                .map_err(io::Error::other)?;
        }
        Poll::Ready(Ok(()))
    }
}
