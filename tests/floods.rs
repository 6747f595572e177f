//! HTTP/2 floods: a client that opens and cancels streams without end
//! ("rapid reset", CVE-2023-44487) is cut off, and others are still served.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::wire::{hpack_literals, RawH2};
use support::*;

const ENHANCE_YOUR_CALM: u32 = 0xb;

#[tokio::test]
async fn streams_reset_before_they_are_accepted_get_goaway_enhance_your_calm() {
    bounded(async {
        let origin = TestOrigin::routes(Routes::new().route("/", Resp::new(200, "ok"))).await;
        let metrics_port = free_port();
        let extra = format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
        let proxy = TestProxy::start(&origin.url(), &extra).await;
        let mut raw = RawH2::connect(&proxy).await;
        raw.settle().await;
        let block = hpack_literals(&raw.request("GET", "/"));
        // 3,000 requests, each cancelled at once, in a few large writes.
        for batch in 0..6u32 {
            let mut bytes = Vec::new();
            for i in 0..500u32 {
                let stream = (batch * 500 + i) * 2 + 1;
                bytes.extend(RawH2::encode_frame(0x1, 0x5, stream, &block));
                bytes.extend(RawH2::encode_frame(0x3, 0, stream, &8u32.to_be_bytes()));
            }
            if raw.try_write(&bytes).await.is_err() {
                break;
            }
        }
        let (goaways, closed) = raw.until_goaway_or_close(Duration::from_secs(10)).await;
        assert!(
            goaways.iter().any(|(_, code)| *code == ENHANCE_YOUR_CALM) || closed,
            "no GOAWAY(ENHANCE_YOUR_CALM): {goaways:?}"
        );
        // Far from every cancelled request reached the origin.
        let reached = origin.seen().len();
        assert!(
            reached < 1500,
            "{reached} of 3000 cancelled requests reached the origin"
        );
        // h2's own limit on streams reset before they are accepted fired.
        let metrics = metrics_text(metrics_port).await;
        assert!(
            metrics.contains("linkpush_client_resets_total 0"),
            "{metrics}"
        );
        // A well-behaved client on another connection is unaffected.
        let mut client = proxy.h2(false).await;
        assert_eq!(client.get("/").await.status, StatusCode::OK);
    })
    .await;
}

/// Rapid reset proper: each stream is accepted and forwarded to the origin
/// before the client cancels it, so only the proxy's own reset meter can
/// tell the flood from normal use.
#[tokio::test]
async fn streams_reset_after_they_reach_the_origin_are_metered_and_cut_off() {
    bounded(async {
        // The origin never answers: every request stays in flight until reset.
        let origin = TestOrigin::start(std::sync::Arc::new(|_request| {
            Box::pin(async {
                std::future::pending::<()>().await;
                Resp::new(200, "never").into_response()
            })
        }))
        .await;
        let metrics_port = free_port();
        let extra = format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
        let proxy = TestProxy::start(&origin.url(), &extra).await;
        let mut raw = RawH2::connect(&proxy).await;
        raw.settle().await;
        let block = hpack_literals(&raw.request("GET", "/"));
        let mut sent = 0usize;
        let mut cut_off = false;
        // Rounds of 25 streams (under the 100-stream limit, and under the
        // 32 origin connections one client connection may hold): open them,
        // wait until the origin has every one, then reset them all.
        for round in 0..60u32 {
            let streams: Vec<u32> = (0..25u32).map(|i| (round * 25 + i) * 2 + 1).collect();
            let mut bytes = Vec::new();
            for stream in &streams {
                bytes.extend(RawH2::encode_frame(0x1, 0x5, *stream, &block));
            }
            if raw.try_write(&bytes).await.is_err() {
                cut_off = true;
                break;
            }
            sent += streams.len();
            // Milliseconds normally; after a cut-off the rest never arrives.
            let deadline = std::time::Instant::now() + Duration::from_secs(2);
            while origin.seen().len() < sent {
                if std::time::Instant::now() > deadline {
                    cut_off = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if cut_off {
                break;
            }
            let mut resets = Vec::new();
            for stream in &streams {
                resets.extend(RawH2::encode_frame(0x3, 0, *stream, &8u32.to_be_bytes()));
            }
            if raw.try_write(&resets).await.is_err() {
                cut_off = true;
                break;
            }
        }
        let (goaways, closed) = raw.until_goaway_or_close(Duration::from_secs(10)).await;
        assert!(
            cut_off || closed || goaways.iter().any(|(_, code)| *code == ENHANCE_YOUR_CALM),
            "the flood was never cut off: {goaways:?}"
        );
        // The meter fired after the burst allowance (1,000), well before 1,500.
        let metrics = metrics_text(metrics_port).await;
        assert!(
            metrics.contains("linkpush_reset_floods_total 1"),
            "{metrics}"
        );
        assert!(
            sent <= 1100,
            "{sent} streams went through before the cut-off"
        );
        let client = proxy.h2(false).await;
        let request = client.request("GET", "/").body(()).unwrap();
        let mut send = client.send.clone().ready().await.unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        // The origin never answers, so a live connection is all we can see:
        // the request was accepted rather than refused.
        let waited = tokio::time::timeout(Duration::from_millis(200), response).await;
        assert!(waited.is_err(), "a new client was refused: {waited:?}");
    })
    .await;
}

#[tokio::test]
async fn a_browser_cancelling_streams_now_and_then_is_left_alone() {
    bounded(async {
        let origin = TestOrigin::routes(Routes::new().route("/", Resp::new(200, "ok"))).await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut client = proxy.h2(false).await;
        // 200 requests cancelled right after sending, five at a time, with a
        // normal request after each burst: the connection stays in service.
        for _ in 0..40 {
            for _ in 0..5 {
                let request = client.request("GET", "/").body(()).unwrap();
                client.send = client.send.clone().ready().await.unwrap();
                let (response, _) = client.send.send_request(request, true).unwrap();
                drop(response);
            }
            assert_eq!(client.get("/").await.status, StatusCode::OK);
        }
    })
    .await;
}
