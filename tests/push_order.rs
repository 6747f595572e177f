//! PUSH_PROMISE frames reach the wire in promised-stream-id order.
//!
//! RFC 9113 §5.1.1: a new stream identifier must be greater than every
//! identifier the endpoint has already opened or reserved, and a client
//! such as nghttp answers an out-of-order promise with
//! GOAWAY(PROTOCOL_ERROR). h2 0.4.20 reserves the promised id when
//! `push_request` is called but queued the frame behind its parent stream's
//! other frames, and the connection takes one frame per stream in turn: two
//! parents pushing at once put their promises on the wire interleaved, ids
//! going backwards. The vendored h2 (vendor/h2/PATCHES.md) sends promises in
//! the order their ids were reserved.
//!
//! Every scenario reads with the strict, slow client of
//! `support::push_wire`, which fails on any id going backwards and on any
//! frame on a stream it was never told about.

mod support;

/// Every link of every page in flight may be pushed at once (the default
/// caps pushes in progress per connection at 16).
const MANY_PUSHES: &str = "[push]\nmax_concurrent_pushes = 1000\n";

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use h2::server::{SendPushedResponse, SendResponse};
use h2::{Reason, RecvStream};
use http::{Request, Response};
use support::push_wire::{slow_push_settings, Ending, Pace, Stop, StrictH2};
use support::*;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

/// The longest a whole slow exchange may take.
const EXCHANGE_LIMIT: Duration = Duration::from_secs(45);
/// More frames than any scenario here produces.
const FRAME_LIMIT: usize = 50_000;

// ---------------------------------------------------------------------------
// Through the proxy

const PAGES: u32 = 10;
const LINKS_PER_PAGE: u32 = 10;
const ASSET_BYTES: usize = 3 * 1024;

/// Pages /p0 … /p9, each preloading ten stylesheets of its own (distinct
/// paths, so the per-connection de-duplication pushes every one).
fn pages() -> Routes {
    let mut routes = Routes::new();
    for page in 0..PAGES {
        let mut resp = Resp::html(&format!("<p>page {page}</p>"));
        for asset in 0..LINKS_PER_PAGE {
            let path = format!("/p{page}/a{asset}.css");
            resp = resp.link(&format!("<{path}>; rel=preload; as=style"));
            let body = vec![b'a' + (asset as u8); ASSET_BYTES];
            routes = routes.route(
                &path,
                Resp::new(200, body).header("content-type", "text/css"),
            );
        }
        routes = routes.route(&format!("/p{page}"), resp);
    }
    routes
}

#[tokio::test]
async fn h2_promised_ids_increase_with_concurrent_pushing_parents() {
    bounded(async {
        let origin = TestOrigin::routes(pages()).await;
        let proxy = TestProxy::start(&origin.url(), MANY_PUSHES).await;
        let tls = proxy.tls(&[b"h2"]).await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let authority = format!("localhost:{}", proxy.addr.port());
        let mut client = StrictH2::start(tls, &authority, &slow_push_settings(), Pace::SLOW).await;
        // All ten pages at once, on one connection.
        for page in 0..PAGES {
            client.get(2 * page + 1, &format!("/p{page}")).await;
        }
        let stop = client
            .run_until(EXCHANGE_LIMIT, FRAME_LIMIT, |c| c.all_ended())
            .await;
        assert_eq!(stop, Stop::Done, "{}", client.report());
        assert!(client.violations().is_empty(), "{}", client.report());
        assert_eq!(client.goaway(), None, "{}", client.report());
        // Every link was pushed, every page and every push ended.
        assert_eq!(
            client.promised().len(),
            (PAGES * LINKS_PER_PAGE) as usize,
            "{}",
            client.report()
        );
        for page in 0..PAGES {
            let parent = 2 * page + 1;
            assert_eq!(
                client.ending(parent),
                Some(Ending::EndStream),
                "{}",
                client.report()
            );
            assert_eq!(
                client.promised_on(parent).len(),
                LINKS_PER_PAGE as usize,
                "{}",
                client.report()
            );
        }
        assert!(client.all_ended(), "{}", client.report());
    })
    .await
}

// ---------------------------------------------------------------------------
// The h2 server alone, on plain TCP

/// The server side of a plain TCP connection, as the h2 server sees it: the
/// test can hold back what the client sent (to make h2 read a frame only
/// when the test says so), while writes pass through.
struct Gated {
    io: TcpStream,
    gate: Arc<Gate>,
}

#[derive(Default)]
struct GateState {
    holding: bool,
    /// Bytes read from the socket while holding, not yet given to h2.
    held: Vec<u8>,
    /// The reader to wake when the gate opens.
    waker: Option<Waker>,
}

struct Gate {
    state: Mutex<GateState>,
    /// Bumped whenever `held` grows.
    grew: watch::Sender<usize>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            state: Mutex::new(GateState::default()),
            grew: watch::channel(0).0,
        })
    }

    /// From now on, what the client sends is read off the socket but not
    /// handed to h2.
    fn hold(&self) {
        self.state.lock().unwrap().holding = true;
    }

    /// Hand h2 what was held, and everything after it.
    fn release(&self) {
        let waker = {
            let mut state = self.state.lock().unwrap();
            state.holding = false;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wait until the held bytes contain `bytes`.
    async fn wait_held(&self, bytes: &[u8]) {
        let mut grew = self.grew.subscribe();
        step(
            "the client's frame reaching the server",
            grew.wait_for(|_| {
                let state = self.state.lock().unwrap();
                state.held.windows(bytes.len()).any(|w| w == bytes)
            }),
        )
        .await
        .expect("gate alive");
    }
}

impl AsyncRead for Gated {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let mut state = this.gate.state.lock().unwrap();
        if state.holding {
            // Drain the socket into `held` until it would block, so the
            // socket's readiness wakes this task again.
            loop {
                let mut chunk = [0u8; 4096];
                let mut read = ReadBuf::new(&mut chunk);
                match Pin::new(&mut this.io).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => {
                        state.held.extend_from_slice(read.filled());
                        this.gate.grew.send_modify(|n| *n += 1);
                    }
                    // End of stream: seen again after the release.
                    Poll::Ready(Ok(())) | Poll::Pending => break,
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                }
            }
            state.waker = Some(cx.waker().clone());
            return Poll::Pending;
        }
        if !state.held.is_empty() {
            let n = state.held.len().min(buf.remaining());
            buf.put_slice(&state.held[..n]);
            state.held.drain(..n);
            return Poll::Ready(Ok(()));
        }
        drop(state);
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

type Accepted = (Request<RecvStream>, SendResponse<Bytes>);

/// An `h2::server` connection driven by a task of its own, which the test
/// can pause: while paused nothing polls the connection, so whatever the
/// handlers queue stays queued, as when the connection task is busy.
struct Server {
    accepted: mpsc::UnboundedReceiver<Accepted>,
    running: watch::Sender<bool>,
    gate: Arc<Gate>,
}

impl Server {
    async fn next_request(&mut self) -> Accepted {
        step("the server accepting a request", self.accepted.recv())
            .await
            .expect("server connection alive")
    }

    fn pause(&self) {
        self.running.send_replace(false);
    }

    fn resume(&self) {
        self.running.send_replace(true);
    }
}

async fn drive(
    mut conn: h2::server::Connection<Gated, Bytes>,
    mut running: watch::Receiver<bool>,
    accepted: mpsc::UnboundedSender<Accepted>,
) {
    loop {
        if running.wait_for(|run| *run).await.is_err() {
            return;
        }
        tokio::select! {
            biased;
            _ = running.wait_for(|run| !*run) => {}
            next = conn.accept() => match next {
                Some(Ok(pair)) => {
                    let _ = accepted.send(pair);
                }
                Some(Err(_)) | None => return,
            },
        }
    }
}

/// A strict slow client connected to an in-process h2 server over
/// 127.0.0.1. The client's preface and SETTINGS are written before the
/// server's handshake starts.
async fn plain_h2() -> (StrictH2<TcpStream>, Server) {
    plain_h2_with(h2::server::Builder::new()).await
}

async fn plain_h2_with(builder: h2::server::Builder) -> (StrictH2<TcpStream>, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let authority = format!("localhost:{}", addr.port());
    let client = StrictH2::start(tcp, &authority, &slow_push_settings(), Pace::SLOW).await;
    let (io, _) = step("accept", listener.accept()).await.unwrap();
    let gate = Gate::new();
    let gated = Gated {
        io,
        gate: gate.clone(),
    };
    let conn = step("h2 server handshake", builder.handshake(gated))
        .await
        .expect("h2 server handshake");
    let (running, running_rx) = watch::channel(true);
    let (accepted_tx, accepted) = mpsc::unbounded_channel();
    tokio::spawn(drive(conn, running_rx, accepted_tx));
    let server = Server {
        accepted,
        running,
        gate,
    };
    (client, server)
}

fn promise(path: &str) -> Request<()> {
    Request::get(format!("https://localhost{path}"))
        .body(())
        .unwrap()
}

/// Push `paths` on `parent`, in order.
fn push_all(parent: &mut SendResponse<Bytes>, paths: &[String]) -> Vec<SendPushedResponse<Bytes>> {
    paths
        .iter()
        .map(|path| parent.push_request(promise(path)).expect("push_request"))
        .collect()
}

/// A 200 with a body of `len` bytes on a pushed stream.
fn answer_push(pushed: &mut SendPushedResponse<Bytes>, len: usize) {
    let mut stream = pushed
        .send_response(Response::new(()), false)
        .expect("pushed response");
    stream
        .send_data(Bytes::from(vec![b'p'; len]), true)
        .expect("pushed body");
}

/// A 200 with a body of `len` bytes on a request stream.
fn answer(parent: &mut SendResponse<Bytes>, len: usize) {
    let mut stream = parent
        .send_response(Response::new(()), false)
        .expect("response");
    stream
        .send_data(Bytes::from(vec![b'r'; len]), true)
        .expect("response body");
}

fn paths(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|n| format!("{prefix}/{n}.css")).collect()
}

#[tokio::test]
async fn h2_promised_ids_increase_when_handlers_push_interleaved() {
    bounded(async {
        let (mut client, mut server) = plain_h2().await;
        client.get(1, "/a").await;
        client.get(3, "/b").await;
        let (_, a) = server.next_request().await;
        let (_, b) = server.next_request().await;

        // The connection task is busy: the handlers' promises queue up.
        server.pause();
        let (a_turn, mut a_wait) = mpsc::unbounded_channel::<()>();
        let (b_turn, mut b_wait) = mpsc::unbounded_channel::<()>();
        let handler_a = tokio::spawn(async move {
            let mut a = a;
            let mut pushed = push_all(&mut a, &paths("/a", 0..3));
            b_turn.send(()).unwrap();
            a_wait.recv().await.unwrap();
            pushed.extend(push_all(&mut a, &paths("/a", 3..6)));
            for push in &mut pushed {
                answer_push(push, 2048);
            }
            answer(&mut a, 1500);
            (a, pushed)
        });
        let handler_b = tokio::spawn(async move {
            let mut b = b;
            b_wait.recv().await.unwrap();
            let mut pushed = push_all(&mut b, &paths("/b", 0..3));
            tokio::task::yield_now().await;
            a_turn.send(()).unwrap();
            for push in &mut pushed {
                answer_push(push, 2048);
            }
            answer(&mut b, 1500);
            (b, pushed)
        });
        let kept_a = step("handler A", handler_a).await.unwrap();
        let kept_b = step("handler B", handler_b).await.unwrap();
        server.resume();

        let stop = client
            .run_until(EXCHANGE_LIMIT, FRAME_LIMIT, |c| c.all_ended())
            .await;
        assert_eq!(stop, Stop::Done, "{}", client.report());
        assert!(client.violations().is_empty(), "{}", client.report());
        // Reservation order: A 2 4 6, B 8 10 12, A 14 16 18.
        assert_eq!(
            client.promised(),
            &[2, 4, 6, 8, 10, 12, 14, 16, 18],
            "{}",
            client.report()
        );
        assert_eq!(client.promised_on(1), vec![2, 4, 6, 14, 16, 18]);
        assert_eq!(client.promised_on(3), vec![8, 10, 12]);
        for id in [1, 3, 2, 4, 6, 8, 10, 12, 14, 16, 18] {
            assert_eq!(
                client.ending(id),
                Some(Ending::EndStream),
                "stream {id}\n{}",
                client.report()
            );
        }
        drop((kept_a, kept_b));
    })
    .await
}

#[tokio::test]
async fn h2_reset_parent_drops_its_unsent_promises_and_the_connection_keeps_working() {
    bounded(async {
        let (mut client, mut server) = plain_h2().await;
        client.get(1, "/gone").await;
        client.get(3, "/kept").await;
        let (_, mut gone) = server.next_request().await;
        let (_, mut kept) = server.next_request().await;

        // The client cancels /gone; the RST_STREAM reaches the server but h2
        // does not read it yet.
        server.gate.hold();
        client.reset(1, h2code::CANCEL).await;
        server
            .gate
            .wait_held(&StrictH2::<TcpStream>::rst_stream_bytes(1, h2code::CANCEL))
            .await;

        // With nothing awaited in between (the test runtime has one thread),
        // both parents queue promises and h2 is let read the reset: it
        // learns of it before it writes anything, with the promises of /gone
        // (ids 2, 4 and 10) still queued.
        let mut doomed = push_all(&mut gone, &paths("/gone", 0..2));
        let mut survivors = push_all(&mut kept, &paths("/kept", 0..2));
        doomed.extend(push_all(&mut gone, &paths("/gone", 2..3)));
        survivors.extend(push_all(&mut kept, &paths("/kept", 2..3)));
        for push in &mut doomed {
            answer_push(push, 2048);
        }
        for push in &mut survivors {
            answer_push(push, 2048);
        }
        answer(&mut kept, 1500);
        server.gate.release();

        let stop = client
            .run_until(EXCHANGE_LIMIT, FRAME_LIMIT, |c| c.all_ended())
            .await;
        assert_eq!(stop, Stop::Done, "{}", client.report());
        // Nothing was sent for the promises that never went out: a frame on
        // stream 2, 4 or 6 (never promised) is a violation.
        assert!(client.violations().is_empty(), "{}", client.report());
        // Ids 2 and 4 went to /gone, 6 and 8 to /kept, 10 to /gone, 12 to
        // /kept: only /kept's reach the wire, in order.
        assert_eq!(client.promised(), &[6, 8, 12], "{}", client.report());
        assert_eq!(client.promised_on(1), Vec::<u32>::new());
        for id in [3, 6, 8, 12] {
            assert_eq!(
                client.ending(id),
                Some(Ending::EndStream),
                "stream {id}\n{}",
                client.report()
            );
        }

        // The handles of the dropped pushes see a reset, not silence.
        for push in &mut doomed {
            let reason = step(
                "a dropped push observing its reset",
                poll_fn(|cx| push.poll_reset(cx)),
            )
            .await
            .expect("poll_reset");
            assert_eq!(reason, Reason::CANCEL);
            assert!(push.send_response(Response::new(()), true).is_err());
        }
        drop(doomed);

        // The connection keeps working, and the next promise is above every
        // id reserved before it.
        client.get(5, "/after").await;
        let (_, mut after) = server.next_request().await;
        let mut pushed = push_all(&mut after, &paths("/after", 0..1));
        answer_push(&mut pushed[0], 512);
        answer(&mut after, 512);
        let stop = client
            .run_until(EXCHANGE_LIMIT, FRAME_LIMIT, |c| c.all_ended())
            .await;
        assert_eq!(stop, Stop::Done, "{}", client.report());
        assert!(client.violations().is_empty(), "{}", client.report());
        assert_eq!(client.promised(), &[6, 8, 12, 14], "{}", client.report());
        assert_eq!(client.ending(14), Some(Ending::EndStream));
        assert_eq!(client.ending(5), Some(Ending::EndStream));
        drop((gone, kept, survivors, pushed, after));
    })
    .await
}

#[tokio::test]
async fn h2_pushes_reset_before_their_promise_is_written_are_never_announced() {
    bounded(async {
        // No locally reset stream is kept around: an abandoned push is
        // released as soon as its handle is dropped.
        let mut builder = h2::server::Builder::new();
        builder.max_concurrent_reset_streams(0);
        let (mut client, mut server) = plain_h2_with(builder).await;
        client.get(1, "/page").await;
        let (_, mut page) = server.next_request().await;

        // Three pushes queue up; before any promise is written, the first is
        // reset by the server and the second abandoned (its handle dropped).
        server.pause();
        let mut pushed = push_all(&mut page, &paths("/page", 0..3));
        pushed[0].send_reset(Reason::CANCEL);
        drop(pushed.remove(1));
        answer_push(&mut pushed[1], 2048);
        answer(&mut page, 1500);
        server.resume();

        let stop = client
            .run_until(EXCHANGE_LIMIT, FRAME_LIMIT, |c| c.all_ended())
            .await;
        assert_eq!(stop, Stop::Done, "{}", client.report());
        // Streams 2 and 4 never appear on the wire (a frame on them would be
        // a violation): only the push that is answered is promised.
        assert!(client.violations().is_empty(), "{}", client.report());
        assert_eq!(client.promised(), &[6], "{}", client.report());
        assert_eq!(client.ending(6), Some(Ending::EndStream));
        assert_eq!(client.ending(1), Some(Ending::EndStream));
        drop((page, pushed));
    })
    .await
}
