//! Bodies stream in both directions through both frontends, without being
//! buffered whole, and body-less responses stay body-less.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use support::*;

const HUNDRED_MB: u64 = 100 * 1024 * 1024;
/// RSS may grow by at most this much while 100 MB pass through: a fraction
/// of the body, so whole-body buffering anywhere would fail the test.
const RSS_GROWTH_LIMIT: u64 = 40 * 1024 * 1024;

/// Samples this process's RSS until stopped; reports the peak.
struct RssWatch {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl RssWatch {
    fn start() -> RssWatch {
        let peak = Arc::new(AtomicU64::new(rss_bytes()));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        RssWatch { peak, stop, task }
    }

    async fn peak(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        self.peak.load(Ordering::Relaxed)
    }
}

/// An origin that streams `/big` (100 MB, with or without a length) and
/// counts uploads on `/upload`, answering with the byte count.
async fn big_origin() -> TestOrigin {
    TestOrigin::start(Arc::new(|request| {
        Box::pin(async move {
            match request.uri().path() {
                "/big" => Response::new(RepeatBody::new(64 * 1024, HUNDRED_MB).boxed()),
                "/big-chunked" => {
                    // No length: hyper sends it chunked.
                    let body = RepeatBody::new(64 * 1024, HUNDRED_MB)
                        .with_unknown_length()
                        .boxed();
                    Response::new(body)
                }
                "/upload" => {
                    let count = count_body(request.into_body()).await;
                    let text = match count {
                        Ok(n) => n.to_string(),
                        Err(e) => format!("error: {e}"),
                    };
                    Response::new(full(text))
                }
                _ => Resp::new(404, "").into_response(),
            }
        })
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_100mb_download_streams_with_bounded_memory() {
    let origin = big_origin().await;
    let proxy = TestProxy::start(&origin.url(), "[log]\naccess_log = false\n").await;
    let mut client = proxy.h2(true).await;
    for path in ["/big", "/big-chunked"] {
        let watch = RssWatch::start();
        let before = rss_bytes();
        let request = client.request("GET", path).body(()).unwrap();
        let (response, _) = client.send.send_request(request, true).unwrap();
        let response = bounded(response).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let mut total = 0u64;
        bounded(async {
            while let Some(chunk) = body.data().await {
                let chunk = chunk.unwrap();
                total += chunk.len() as u64;
                let _ = body.flow_control().release_capacity(chunk.len());
            }
        })
        .await;
        let peak = watch.peak().await;
        assert_eq!(total, HUNDRED_MB, "{path}");
        let growth = peak.saturating_sub(before);
        assert!(growth < RSS_GROWTH_LIMIT, "{path}: RSS grew {growth} bytes");
        println!("{path}: peak RSS growth {} KiB", growth / 1024);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_100mb_upload_streams_with_bounded_memory() {
    let origin = big_origin().await;
    let proxy = TestProxy::start(&origin.url(), "[log]\naccess_log = false\n").await;
    let client = proxy.h2(true).await;
    let watch = RssWatch::start();
    let before = rss_bytes();
    let request = client
        .request("POST", "/upload")
        .header("content-length", HUNDRED_MB.to_string())
        .body(())
        .unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (response, mut stream) = send.send_request(request, false).unwrap();
    bounded(send_h2_body(&mut stream, HUNDRED_MB, 64 * 1024)).await;
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = read_body(response.into_body()).await.unwrap();
    let peak = watch.peak().await;
    assert_eq!(body, Bytes::from(HUNDRED_MB.to_string()));
    let growth = peak.saturating_sub(before);
    assert!(growth < RSS_GROWTH_LIMIT, "RSS grew {growth} bytes");
    println!("upload: peak RSS growth {} KiB", growth / 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h1_100mb_download_and_chunked_upload_stream_with_bounded_memory() {
    let origin = big_origin().await;
    let proxy = TestProxy::start(&origin.url(), "[log]\naccess_log = false\n").await;
    let mut client = proxy.h1().await;
    let watch = RssWatch::start();
    let before = rss_bytes();
    client.send.ready().await.unwrap();
    let request = client
        .request("GET", "/big-chunked")
        .body(full(Bytes::new()))
        .unwrap();
    let response = bounded(client.send.send_request(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut total = 0u64;
    bounded(async {
        while let Some(frame) = body.frame().await {
            if let Some(data) = frame.unwrap().data_ref() {
                total += data.len() as u64;
            }
        }
    })
    .await;
    assert_eq!(total, HUNDRED_MB);
    // Upload without a length: the client sends it chunked.
    client.send.ready().await.unwrap();
    let upload = RepeatBody::new(64 * 1024, HUNDRED_MB)
        .with_unknown_length()
        .boxed();
    let request = client.request("POST", "/upload").body(upload).unwrap();
    let response = bounded(client.send.send_request(request)).await.unwrap();
    let body = bounded(response.into_body().collect())
        .await
        .unwrap()
        .to_bytes();
    let peak = watch.peak().await;
    assert_eq!(body, Bytes::from(HUNDRED_MB.to_string()));
    let growth = peak.saturating_sub(before);
    assert!(growth < RSS_GROWTH_LIMIT, "RSS grew {growth} bytes");
}

#[tokio::test]
async fn h2_post_body_reaches_the_origin_and_the_answer_comes_back() {
    let origin = big_origin().await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h2(true).await;
    // With a length, and without one (the origin then gets it chunked).
    let with_length = client
        .request("POST", "/upload")
        .header("content-length", "11")
        .body(())
        .unwrap();
    let answer = client
        .exchange(with_length, Some(Bytes::from("hello world")))
        .await;
    assert_eq!(answer.body.unwrap(), Bytes::from("11"));
    let without = client.request("POST", "/upload").body(()).unwrap();
    let answer = client
        .exchange(without, Some(Bytes::from("0123456789")))
        .await;
    assert_eq!(answer.body.unwrap(), Bytes::from("10"));
    let seen = origin.seen();
    assert_eq!(seen[0].headers["content-length"], "11");
    assert!(seen[0].headers.get("transfer-encoding").is_none());
    assert_eq!(seen[1].headers["transfer-encoding"], "chunked");
    assert!(seen[1].headers.get("content-length").is_none());
}

#[tokio::test]
async fn h1_expect_100_continue_upload_is_forwarded() {
    let origin = big_origin().await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h1().await;
    let request = client
        .request("POST", "/upload")
        .header("expect", "100-continue")
        .header("content-length", "5")
        .body(full("abcde"))
        .unwrap();
    let response = client.exchange(request).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.body.unwrap(), Bytes::from("5"));
    // The proxy answered the expectation itself.
    assert!(origin.seen()[0].headers.get("expect").is_none());
}

fn bodyless_routes() -> Routes {
    Routes::new()
        .route(
            "/page",
            Resp::new(200, "twelve bytes").header("etag", "\"v1\""),
        )
        .route("/nothing", Resp::new(204, ""))
        .route("/same", Resp::new(304, "").header("etag", "\"v1\""))
}

#[tokio::test]
async fn h2_head_204_and_304_have_no_body() {
    let origin = TestOrigin::routes(bodyless_routes()).await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h2(true).await;
    let head = client.request("HEAD", "/page").body(()).unwrap();
    let head = client.exchange(head, None).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], "12");
    assert!(head.body.unwrap().is_empty());
    let nothing = client.get("/nothing").await;
    assert_eq!(nothing.status, StatusCode::NO_CONTENT);
    assert!(nothing.headers.get("content-length").is_none());
    assert!(nothing.body.unwrap().is_empty());
    let same = client.get("/same").await;
    assert_eq!(same.status, StatusCode::NOT_MODIFIED);
    assert_eq!(same.headers["etag"], "\"v1\"");
    assert!(same.body.unwrap().is_empty());
}

#[tokio::test]
async fn h1_head_204_and_304_keep_the_connection_usable() {
    let origin = TestOrigin::routes(bodyless_routes()).await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h1().await;
    let head = client
        .request("HEAD", "/page")
        .body(full(Bytes::new()))
        .unwrap();
    let head = client.exchange(head).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.headers["content-length"], "12");
    assert!(head.body.unwrap().is_empty());
    assert_eq!(client.get("/nothing").await.status, StatusCode::NO_CONTENT);
    assert_eq!(client.get("/same").await.status, StatusCode::NOT_MODIFIED);
    // Same connection, still in sync.
    let page = client.get("/page").await;
    assert_eq!(page.body.unwrap(), Bytes::from("twelve bytes"));
}

#[tokio::test]
async fn h2_client_reset_mid_download_closes_the_origin_connection() {
    let mut origin = big_origin().await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let client = proxy.h2(true).await;
    let request = client.request("GET", "/big").body(()).unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    let response = bounded(response).await.unwrap();
    let mut body = response.into_body();
    let first = bounded(body.data()).await.unwrap().unwrap();
    assert!(!first.is_empty());
    origin.wait_for(&OriginEvent::Request("/big".into())).await;
    // Dropping the body resets the stream (RST_STREAM CANCEL).
    drop(body);
    origin.wait_for(&OriginEvent::ConnectionClosed).await;
}

#[tokio::test]
async fn h2_client_reset_while_the_origin_thinks_closes_the_origin_connection() {
    let release = Arc::new(tokio::sync::Notify::new());
    let gate = release.clone();
    let mut origin = TestOrigin::start(Arc::new(move |_request| {
        let gate = gate.clone();
        Box::pin(async move {
            gate.notified().await;
            Resp::new(200, "late").into_response()
        })
    }))
    .await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let client = proxy.h2(true).await;
    let request = client.request("GET", "/slow").body(()).unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (response, _) = send.send_request(request, true).unwrap();
    origin.wait_for(&OriginEvent::Request("/slow".into())).await;
    drop(response);
    origin.wait_for(&OriginEvent::ConnectionClosed).await;
    release.notify_waiters();
}
