//! Cache-aware push across connections: a cookie digest of what a browser
//! was pushed, so returning visitors are not pushed what they hold.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use linkpush::policy::digest::CacheDigest;
use support::*;

/// The current ETag of each asset, changeable by the test.
type Etags = Arc<Mutex<Vec<(&'static str, String)>>>;

/// An origin with a page naming two assets whose ETags the test controls.
async fn origin(etags: Etags) -> TestOrigin {
    TestOrigin::start(Arc::new(move |request| {
        let etags = etags.clone();
        Box::pin(async move {
            let path = request.uri().path().to_string();
            if path == "/" {
                return Resp::html("page")
                    .link("</a.css>; rel=push; as=style")
                    .link("</b.js>; rel=preload; as=script")
                    .into_response();
            }
            let etag = etags
                .lock()
                .unwrap()
                .iter()
                .find(|(p, _)| *p == path)
                .map(|(_, e)| e.clone());
            match etag {
                Some(etag) => {
                    let mut response = Response::new(full(format!("body of {path} {etag}")));
                    response.headers_mut().insert("etag", etag.parse().unwrap());
                    response
                }
                None => Resp::new(404, "").into_response(),
            }
        })
    }))
    .await
}

fn etags() -> Etags {
    Arc::new(Mutex::new(vec![
        ("/a.css", "\"a1\"".to_string()),
        ("/b.js", "\"b1\"".to_string()),
    ]))
}

const DIGEST: &str = "[push]\ncache_digest = true\nexplain = true\n";

/// The cookie pair (`lp_digest=…`) holding the most entries among the
/// pushed responses' `Set-Cookie` fields, and its attributes.
fn digest_cookie(exchange: &Exchange) -> (String, String) {
    let mut best: Option<(usize, String, String)> = None;
    for push in &exchange.pushes {
        for value in push.headers.get_all("set-cookie") {
            let text = value.to_str().unwrap().to_string();
            let (pair, attributes) = text.split_once(';').unwrap();
            let digest = CacheDigest::decode(pair.trim_start_matches("lp_digest=")).unwrap();
            if best.as_ref().is_none_or(|(n, _, _)| digest.len() > *n) {
                best = Some((digest.len(), pair.to_string(), attributes.to_string()));
            }
        }
    }
    let (_, pair, attributes) = best.expect("no digest cookie on the pushes");
    (pair, attributes)
}

async fn visit(proxy: &TestProxy, cookie: Option<&str>) -> Exchange {
    let mut client = proxy.h2(true).await;
    let mut request = client.request("GET", "/");
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    client.exchange(request.body(()).unwrap(), None).await
}

#[tokio::test]
async fn a_returning_browser_is_not_pushed_what_its_digest_holds() {
    let etags = etags();
    let origin = origin(etags.clone()).await;
    let proxy = TestProxy::start(&origin.url(), DIGEST).await;

    let first = visit(&proxy, None).await;
    assert_eq!(first.pushed_paths(), vec!["/a.css", "/b.js"]);
    let (cookie, attributes) = digest_cookie(&first);
    assert!(cookie.len() < 1024);
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(attributes.contains(attribute), "{attributes}");
    }

    // Same browser, new connection: nothing pushed, the rel=push link is
    // neither pushed nor turned into a preload, and the decision says why.
    let second = visit(&proxy, Some(&format!("session=1; {cookie}"))).await;
    assert!(second.pushes.is_empty(), "{:?}", second.pushed_paths());
    assert_eq!(second.links(), vec!["</b.js>; rel=preload; as=script"]);
    let explain = second.headers["x-push-decision"].to_str().unwrap();
    assert!(
        explain.contains("</a.css>; drop; reason=cached"),
        "{explain}"
    );
    assert!(
        explain.contains("</b.js>; preload; reason=cached"),
        "{explain}"
    );

    // A deploy changes a.css. Once the proxy sees the new version (here a
    // browser revalidating it), the returning browser gets it pushed again.
    etags.lock().unwrap()[0].1 = "\"a2\"".to_string();
    let revalidate = proxy.h2(false).await.get("/a.css").await;
    assert_eq!(revalidate.headers["etag"], "\"a2\"");
    let third = visit(&proxy, Some(&cookie)).await;
    assert_eq!(third.pushed_paths(), vec!["/a.css"]);
    assert_eq!(
        third.pushes[0].body.as_deref().unwrap(),
        b"body of /a.css \"a2\""
    );
}

#[tokio::test]
async fn an_unconfirmed_validator_is_pushed_and_checked_when_the_response_arrives() {
    let etags = etags();
    let origin = origin(etags.clone()).await;
    // Validators are trusted for no time at all: every decision pushes, and
    // the pushed response itself is checked against the digest.
    let extra = format!("{DIGEST}cache_digest_validator_ttl = \"0s\"\n");
    let proxy = TestProxy::start(&origin.url(), &extra).await;
    let first = visit(&proxy, None).await;
    let (cookie, _) = digest_cookie(&first);
    etags.lock().unwrap()[1].1 = "\"b2\"".to_string();
    let second = visit(&proxy, Some(&cookie)).await;
    // a.css is unchanged: promised, then cancelled once its ETag matched.
    let a = second.pushes.iter().find(|p| p.path == "/a.css").unwrap();
    assert!(
        a.body
            .as_ref()
            .is_err_and(|e| e.contains("no longer needed")),
        "{a:?}"
    );
    // b.js changed: pushed in full.
    let b = second.pushes.iter().find(|p| p.path == "/b.js").unwrap();
    assert_eq!(b.body.as_deref().unwrap(), b"body of /b.js \"b2\"");
}

#[tokio::test]
async fn corrupted_or_oversized_digest_cookies_are_ignored() {
    let origin = origin(etags()).await;
    let proxy = TestProxy::start(&origin.url(), DIGEST).await;
    for cookie in [
        "lp_digest=%%%not-base64%%%".to_string(),
        "lp_digest=AQAAAP".to_string(),
        format!("lp_digest={}", "A".repeat(2000)),
        "lp_digest=".to_string(),
    ] {
        let exchange = visit(&proxy, Some(&cookie)).await;
        assert_eq!(exchange.status, StatusCode::OK);
        assert_eq!(exchange.pushed_paths(), vec!["/a.css", "/b.js"], "{cookie}");
        for push in &exchange.pushes {
            assert!(push.body.as_ref().is_ok_and(|b| b != &Bytes::new()));
        }
    }
}
