//! Promised streams: each runs on its own task, from the promise to the
//! last DATA frame (or a reset), and never fails its parent.
//!
//! A pushed stream goes promised → fetching (the exchange reads the whole
//! resource from the origin, within the parent's byte budget) → sending
//! (flow-controlled, like any response) → done; or cancelled with
//! `RST_STREAM(CANCEL)` at any step.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendPushedResponse;
use h2::Reason;
use http::Response;
use http_body_util::Full;
use tracing::Instrument;

use super::body::send_body;
use super::Conn;
use crate::access_log::Record;
use crate::exchange::{self, Promise};

/// Holds one of the connection's push slots until the push task ends.
struct PushSlot(Arc<Conn>);

impl Drop for PushSlot {
    fn drop(&mut self) {
        self.0.pushes_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Start the task that fetches and sends a promised resource.
pub(super) fn start(conn: &Arc<Conn>, stream: SendPushedResponse<Bytes>, promise: Promise) {
    conn.pushes_in_flight.fetch_add(1, Ordering::Relaxed);
    let slot = PushSlot(conn.clone());
    let span = tracing::debug_span!("push", path = %promise.path);
    tokio::spawn(
        async move {
            run(&slot.0, stream, promise).await;
            drop(slot);
        }
        .instrument(span),
    );
}

async fn run(conn: &Conn, mut stream: SendPushedResponse<Bytes>, promise: Promise) {
    let worker = &conn.worker;
    let mut record = Record::pushed(&conn.ctx, promise.authority.clone(), promise.path.clone());
    let mut client_reset = false;
    let fetched = exchange::fetch_push(
        worker,
        &conn.ctx,
        &conn.memory,
        &promise,
        &mut record,
        |cx| {
            let reset = stream.poll_reset(cx).map(|_| ());
            client_reset |= reset.is_ready();
            reset
        },
    )
    .await;
    let Some(pushed) = fetched else {
        if !client_reset {
            stream.send_reset(Reason::CANCEL);
        }
        record.finish(0, &worker.metrics, worker.access_log());
        return;
    };
    let end_stream = pushed.body.is_empty();
    let bytes = match stream.send_response(Response::from_parts(pushed.head, ()), end_stream) {
        Err(error) => {
            record.fail(error.to_string());
            0
        }
        Ok(_) if end_stream => 0,
        Ok(mut send) => {
            match send_body(&mut send, Full::new(pushed.body), &worker.config.timeouts).await {
                Ok(bytes) => {
                    worker.metrics.pushed_bytes(bytes);
                    bytes
                }
                Err(error) => {
                    worker.metrics.push_cancelled();
                    record.fail(error.describe());
                    0
                }
            }
        }
    };
    record.finish(bytes, &worker.metrics, worker.access_log());
}
