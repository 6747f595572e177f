//! The push engine over real TLS with the `h2` client: what is promised,
//! when, with which request headers, and the exact `Link` field each kind
//! of client receives.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use support::*;
use tokio::sync::Notify;

const CSS: &str = "body { color: #123; }\n";
const JS: &str = "console.log('app');\n";

fn assets(routes: Routes) -> Routes {
    routes
        .route(
            "/css/app.css",
            Resp::new(200, CSS).header("content-type", "text/css"),
        )
        .route(
            "/js/app.js",
            Resp::new(200, JS).header("content-type", "text/javascript"),
        )
        .route(
            "/img/a.png",
            Resp::new(200, vec![7u8; 3000]).header("content-type", "image/png"),
        )
        .route("/fonts/f.woff2", Resp::new(200, vec![1u8; 100]))
}

async fn proxy_for(routes: Routes, extra: &str) -> (TestOrigin, TestProxy) {
    let origin = TestOrigin::routes(assets(routes)).await;
    let proxy = TestProxy::start(&origin.url(), extra).await;
    (origin, proxy)
}

#[tokio::test]
async fn h2_preload_links_are_promised_before_the_response_headers() {
    let page = Resp::html("<p>page</p>")
        .link("</css/app.css>; rel=preload; as=style")
        .link("</js/app.js>; rel=preload; as=script");
    let (origin, proxy) = proxy_for(Routes::new().route("/", page), "").await;
    let mut client = proxy.h2(true).await;
    let exchange = client.get("/").await;
    assert_eq!(exchange.status, StatusCode::OK);
    assert_eq!(exchange.body.as_deref().unwrap(), b"<p>page</p>");
    let mut before = exchange.pushes_before_headers.clone();
    before.sort();
    assert_eq!(before, vec!["/css/app.css", "/js/app.js"]);
    assert_eq!(exchange.pushed_paths(), vec!["/css/app.css", "/js/app.js"]);
    // rel=preload is forwarded unchanged.
    assert_eq!(
        exchange.links(),
        vec![
            "</css/app.css>; rel=preload; as=style",
            "</js/app.js>; rel=preload; as=script"
        ]
    );
    for push in &exchange.pushes {
        assert_eq!(push.status, StatusCode::OK);
        assert_eq!(push.headers["x-http2-push"], "1");
        let expected = if push.path == "/css/app.css" { CSS } else { JS };
        assert_eq!(push.body.as_deref().unwrap(), expected.as_bytes());
    }
    // The origin served each pushed resource once, fetched by the proxy.
    let mut paths = origin.seen_paths();
    paths.sort();
    assert_eq!(paths, vec!["/", "/css/app.css", "/js/app.js"]);
}

#[tokio::test]
async fn h2_pushed_request_carries_only_safe_headers_and_a_derived_accept() {
    let page = Resp::html("x")
        .link("</css/app.css>; rel=preload; as=style")
        .link("</img/a.png>; rel=preload; as=image");
    let (origin, proxy) = proxy_for(Routes::new().route("/", page), "").await;
    let mut client = proxy.h2(true).await;
    let request = client
        .request("GET", "/")
        .header("user-agent", "test-agent/1")
        .header("accept-language", "de")
        .header("accept-encoding", "gzip")
        .header("cookie", "session=secret")
        .header("authorization", "Basic c2VjcmV0")
        .body(())
        .unwrap();
    let exchange = client.exchange(request, None).await;
    assert_eq!(exchange.pushes.len(), 2);
    for push in &exchange.pushes {
        let h = &push.promise_headers;
        assert_eq!(h["user-agent"], "test-agent/1");
        assert_eq!(h["accept-language"], "de");
        assert_eq!(h["accept-encoding"], "gzip");
        assert!(h.get("cookie").is_none(), "cookie leaked into a push");
        assert!(h.get("authorization").is_none());
        let accept = h["accept"].to_str().unwrap();
        if push.path == "/css/app.css" {
            assert!(accept.starts_with("text/css"), "{accept}");
        } else {
            assert!(accept.starts_with("image/"), "{accept}");
        }
    }
    // Nor did the origin fetch of a pushed resource carry credentials.
    for seen in origin.seen().iter().filter(|s| s.path != "/") {
        assert!(seen.headers.get("cookie").is_none());
        assert!(seen.headers.get("authorization").is_none());
        assert!(seen.headers.get("x-forwarded-for").is_some());
    }
}

#[tokio::test]
async fn forward_headers_config_copies_cookies_into_pushes() {
    let page = Resp::html("x").link("</css/app.css>; rel=preload; as=style");
    let (origin, proxy) = proxy_for(
        Routes::new().route("/", page),
        "[push]\nforward_headers = [\"cookie\"]\n",
    )
    .await;
    let mut client = proxy.h2(true).await;
    let request = client
        .request("GET", "/")
        .header("cookie", "session=abc")
        .body(())
        .unwrap();
    let exchange = client.exchange(request, None).await;
    assert_eq!(exchange.pushes.len(), 1);
    assert_eq!(exchange.pushes[0].promise_headers["cookie"], "session=abc");
    let css = origin
        .seen()
        .into_iter()
        .find(|s| s.path == "/css/app.css")
        .unwrap();
    assert_eq!(css.headers["cookie"], "session=abc");
}

/// The `Link` field each kind of client receives, for the same origin page.
mod link_field {
    use super::*;

    const LINKS: [&str; 4] = [
        "</css/app.css>; rel=push; as=style",
        "</js/app.js>; rel=preload; as=script; nopush",
        "<https://cdn.example.net/x.js>; rel=push; as=script",
        "</fonts/f.woff2>; rel=push; as=font; type=\"font/woff2\"; crossorigin",
    ];

    fn page() -> Routes {
        let mut resp = Resp::html("page");
        for link in LINKS {
            resp = resp.link(link);
        }
        Routes::new().route("/", resp)
    }

    #[tokio::test]
    async fn push_capable_client_gets_rel_push_removed_for_what_was_pushed() {
        let (_origin, proxy) = proxy_for(page(), "").await;
        let exchange = proxy.h2(true).await.get("/").await;
        assert_eq!(exchange.pushed_paths(), vec!["/css/app.css"]);
        assert_eq!(
            exchange.links(),
            vec![
                // pushed rel=push: gone (the line is omitted)
                "</js/app.js>; rel=preload; as=script; nopush",
                // cross-origin: never pushed, rewritten so the browser preloads it
                "<https://cdn.example.net/x.js>; rel=preload; as=script",
                // credentialed destination: downgraded, every other param kept
                "</fonts/f.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
            ]
        );
    }

    #[tokio::test]
    async fn client_with_push_disabled_gets_every_rel_push_as_preload() {
        let (origin, proxy) = proxy_for(page(), "").await;
        let exchange = proxy.h2(false).await.get("/").await;
        assert!(exchange.pushes.is_empty());
        assert_eq!(
            exchange.links(),
            vec![
                "</css/app.css>; rel=preload; as=style",
                "</js/app.js>; rel=preload; as=script; nopush",
                "<https://cdn.example.net/x.js>; rel=preload; as=script",
                "</fonts/f.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
            ]
        );
        assert_eq!(origin.seen_paths(), vec!["/"]);
    }

    #[tokio::test]
    async fn http1_client_gets_every_rel_push_as_preload() {
        let (origin, proxy) = proxy_for(page(), "[push]\nexplain = true\n").await;
        let response = proxy.h1().await.get("/").await;
        assert_eq!(
            response.links(),
            vec![
                "</css/app.css>; rel=preload; as=style",
                "</js/app.js>; rel=preload; as=script; nopush",
                "<https://cdn.example.net/x.js>; rel=preload; as=script",
                "</fonts/f.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
            ]
        );
        let explain = response.headers["x-push-decision"].to_str().unwrap();
        assert!(
            explain.contains("</css/app.css>; preload; reason=http1-client"),
            "{explain}"
        );
        assert!(explain.contains("reason=nopush"), "{explain}");
        assert_eq!(origin.seen_paths(), vec!["/"]);
    }
}

#[tokio::test]
async fn links_over_the_per_response_limit_are_not_pushed_and_rel_push_is_downgraded() {
    let mut page = Resp::html("many");
    let mut routes = Routes::new();
    for i in 0..4 {
        page = page.link(&format!("</a{i}.js>; rel=push; as=script"));
        routes = routes.route(&format!("/a{i}.js"), Resp::new(200, format!("a{i}")));
    }
    let (_origin, proxy) = proxy_for(
        routes.route("/", page),
        "[push]\nmax_pushes_per_response = 2\nexplain = true\n",
    )
    .await;
    let exchange = proxy.h2(true).await.get("/").await;
    assert_eq!(exchange.pushed_paths(), vec!["/a0.js", "/a1.js"]);
    assert_eq!(
        exchange.links(),
        vec![
            "</a2.js>; rel=preload; as=script",
            "</a3.js>; rel=preload; as=script"
        ]
    );
    let explain = exchange.headers["x-push-decision"].to_str().unwrap();
    assert!(
        explain.contains("</a3.js>; preload; reason=limit"),
        "{explain}"
    );
    for push in &exchange.pushes {
        assert_eq!(push.body.as_deref().unwrap(), &push.path.as_bytes()[1..3]);
    }
}

#[tokio::test]
async fn a_url_is_pushed_once_per_connection_and_never_after_the_client_fetched_it() {
    let page = |n: &str| {
        Resp::html(n)
            .link("</css/app.css>; rel=preload; as=style")
            .link("</js/app.js>; rel=preload; as=script")
    };
    let (_origin, proxy) = proxy_for(
        Routes::new()
            .route("/one", page("1"))
            .route("/two", page("2")),
        "",
    )
    .await;
    let mut client = proxy.h2(true).await;
    // The client fetches the script itself first.
    let js = client.get("/js/app.js").await;
    assert_eq!(js.body.as_deref().unwrap(), JS.as_bytes());
    let first = client.get("/one").await;
    assert_eq!(first.pushed_paths(), vec!["/css/app.css"]);
    let second = client.get("/two").await;
    assert!(
        second.pushes.is_empty(),
        "pushed again: {:?}",
        second.pushed_paths()
    );
    // A new connection starts with an empty diary.
    let fresh = proxy.h2(true).await.get("/two").await;
    assert_eq!(fresh.pushed_paths(), vec!["/css/app.css", "/js/app.js"]);
}

#[tokio::test]
async fn origin_404_for_a_pushed_resource_resets_only_that_stream() {
    let page = Resp::html("parent body")
        .link("</missing.css>; rel=preload; as=style")
        .link("</css/app.css>; rel=preload; as=style");
    let (_origin, proxy) = proxy_for(Routes::new().route("/", page), "").await;
    let exchange = proxy.h2(true).await.get("/").await;
    assert_eq!(exchange.status, StatusCode::OK);
    assert_eq!(exchange.body.as_deref().unwrap(), b"parent body");
    let missing = exchange
        .pushes
        .iter()
        .find(|p| p.path == "/missing.css")
        .unwrap();
    assert!(
        // h2 renders RST_STREAM(CANCEL) as "stream no longer needed".
        missing
            .body
            .as_ref()
            .is_err_and(|e| e.contains("no longer needed")),
        "404 push was not reset: {missing:?}"
    );
    let css = exchange
        .pushes
        .iter()
        .find(|p| p.path == "/css/app.css")
        .unwrap();
    assert_eq!(css.body.as_deref().unwrap(), CSS.as_bytes());
}

#[tokio::test]
async fn client_reset_of_a_push_aborts_the_origin_fetch() {
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let mut origin = TestOrigin::start(Arc::new(move |request| {
        let gate = gate.clone();
        Box::pin(async move {
            match request.uri().path() {
                "/" => Resp::html("page")
                    .link("</slow.css>; rel=preload; as=style")
                    .into_response(),
                _ => {
                    // Hold the pushed fetch open until the test ends.
                    gate.notified().await;
                    Resp::new(200, "late").into_response()
                }
            }
        })
    }))
    .await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h2(true).await;
    let request = client.request("GET", "/").body(()).unwrap();
    client.send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = client.send.send_request(request, true).unwrap();
    let mut promises = response.push_promises();
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let promise = bounded(promises.push_promise()).await.unwrap().unwrap();
    assert_eq!(promise.request().uri().path(), "/slow.css");
    origin
        .wait_for(&OriginEvent::Request("/slow.css".into()))
        .await;
    // Dropping the pushed response sends RST_STREAM(CANCEL).
    drop(promise);
    origin.wait_for(&OriginEvent::ConnectionClosed).await;
    release.notify_waiters();
}

#[tokio::test]
async fn dry_run_decides_and_explains_but_pushes_nothing() {
    let page = Resp::html("x")
        .link("</css/app.css>; rel=push; as=style")
        .link("</js/app.js>; rel=preload; as=script");
    let (origin, proxy) = proxy_for(
        Routes::new().route("/", page),
        "[push]\ndry_run = true\nexplain = true\n",
    )
    .await;
    let exchange = proxy.h2(true).await.get("/").await;
    assert!(exchange.pushes.is_empty());
    assert_eq!(origin.seen_paths(), vec!["/"]);
    // Nothing was pushed, so rel=push still reaches the browser as a preload.
    assert_eq!(
        exchange.links(),
        vec![
            "</css/app.css>; rel=preload; as=style",
            "</js/app.js>; rel=preload; as=script"
        ]
    );
    let explain = exchange.headers["x-push-decision"].to_str().unwrap();
    assert!(explain.contains("reason=pushed; dry-run"), "{explain}");
}

#[tokio::test]
async fn hint_only_mode_pushes_rel_push_but_not_preload() {
    let page = Resp::html("x")
        .link("</css/app.css>; rel=push; as=style")
        .link("</js/app.js>; rel=preload; as=script");
    let (_origin, proxy) = proxy_for(
        Routes::new().route("/", page),
        "[push]\npreload = \"hint-only\"\n",
    )
    .await;
    let exchange = proxy.h2(true).await.get("/").await;
    assert_eq!(exchange.pushed_paths(), vec!["/css/app.css"]);
    assert_eq!(
        exchange.links(),
        vec!["</js/app.js>; rel=preload; as=script"]
    );
}

#[tokio::test]
async fn no_push_for_non_get_parents_error_statuses_or_304() {
    let link = "</css/app.css>; rel=preload; as=style";
    let routes = Routes::new()
        .route("/form", Resp::html("posted").link(link))
        .route("/gone", Resp::new(410, "gone").link(link))
        .route("/cached", Resp::new(304, "").link(link));
    let (origin, proxy) = proxy_for(routes, "").await;
    let mut client = proxy.h2(true).await;
    let post = client.request("POST", "/form").body(()).unwrap();
    let posted = client.exchange(post, Some(Bytes::from("a=1"))).await;
    assert_eq!(posted.status, StatusCode::OK);
    assert!(posted.pushes.is_empty());
    let gone = client.get("/gone").await;
    assert_eq!(gone.status, StatusCode::GONE);
    assert!(gone.pushes.is_empty());
    let cached = client.get("/cached").await;
    assert_eq!(cached.status, StatusCode::NOT_MODIFIED);
    assert!(cached.pushes.is_empty());
    assert!(origin.seen_paths().iter().all(|p| p != "/css/app.css"));
}

#[tokio::test]
async fn client_max_concurrent_streams_bounds_open_pushes() {
    let mut page = Resp::html("x");
    let mut routes = Routes::new();
    for i in 0..5 {
        page = page.link(&format!("</s{i}.css>; rel=preload; as=style"));
        routes = routes.route(&format!("/s{i}.css"), Resp::new(200, "s"));
    }
    let (_origin, proxy) = proxy_for(routes.route("/", page), "").await;
    // A client allowing only two concurrent server-initiated streams.
    let tls = proxy.tls(&[b"h2"]).await;
    let (send, connection) = h2::client::Builder::new()
        .max_concurrent_streams(2)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = H2Client::from_parts(send, format!("localhost:{}", proxy.addr.port()));
    let exchange = client.get("/").await;
    assert_eq!(exchange.pushes.len(), 2, "{:?}", exchange.pushed_paths());
    assert_eq!(
        exchange.links().len(),
        5,
        "rel=preload links stay in the header"
    );
}

#[tokio::test]
async fn uncacheable_pushes_are_sent_but_credentialed_ones_are_cancelled() {
    let page = Resp::html("<p>page</p>")
        .link("</no-store.css>; rel=preload; as=style")
        .link("</private.css>; rel=preload; as=style")
        .link("</cookie.css>; rel=preload; as=style")
        .link("</vary.css>; rel=preload; as=style");
    let routes = Routes::new()
        .route("/", page)
        .route(
            "/no-store.css",
            Resp::new(200, CSS).header("cache-control", "no-store"),
        )
        .route(
            "/private.css",
            Resp::new(200, CSS).header("cache-control", "no-cache, private"),
        )
        .route(
            "/cookie.css",
            Resp::new(200, CSS).header("set-cookie", "s=1"),
        )
        .route("/vary.css", Resp::new(200, CSS).header("vary", "Cookie"));
    let (_origin, proxy) = proxy_for(routes.clone(), "").await;
    let exchange = proxy.h2(true).await.get("/").await;
    let delivered: Vec<&str> = exchange
        .pushes
        .iter()
        .filter(|p| p.status == StatusCode::OK && p.body.is_ok())
        .map(|p| p.path.as_str())
        .collect();
    let mut delivered = delivered;
    delivered.sort();
    // Legacy apps send no-store or private on everything; a browser still
    // uses such a push for this page (RFC 9113 §8.4).
    assert_eq!(delivered, vec!["/no-store.css", "/private.css"]);

    // `push.cancel_uncacheable` restores the strict rule.
    let (_origin, proxy) = proxy_for(routes, "[push]\ncancel_uncacheable = true\n").await;
    let exchange = proxy.h2(true).await.get("/").await;
    let delivered = exchange
        .pushes
        .iter()
        .filter(|p| p.status == StatusCode::OK && p.body.is_ok())
        .count();
    assert_eq!(delivered, 0, "{:?}", exchange.pushes);
}

#[tokio::test]
async fn nothing_is_pushed_under_an_authority_the_proxy_does_not_serve() {
    let page = Resp::html("<p>page</p>")
        .link("</css/app.css>; rel=preload; as=style")
        .link("</js/app.js>; rel=push; as=script");
    let (origin, proxy) =
        proxy_for(Routes::new().route("/", page), "[push]\nexplain = true\n").await;
    let mut client = proxy.h2(true).await;
    // The certificate names localhost, 127.0.0.1 and ::1; the client asks
    // for another site on the same connection.
    client.authority = "attacker.example".to_string();
    let exchange = client.get("/").await;
    assert_eq!(exchange.status, StatusCode::OK);
    assert!(exchange.pushes.is_empty(), "{:?}", exchange.pushes);
    assert_eq!(
        exchange.links(),
        vec![
            "</css/app.css>; rel=preload; as=style",
            "</js/app.js>; rel=preload; as=script"
        ]
    );
    let explained = exchange.headers["x-push-decision"].to_str().unwrap();
    assert!(
        explained.contains("reason=foreign-authority"),
        "{explained}"
    );
    assert_eq!(origin.seen_paths(), vec!["/"]);

    // Configured names replace the certificate's.
    let (_origin, proxy) = proxy_for(
        Routes::new().route(
            "/",
            Resp::html("x").link("</css/app.css>; rel=preload; as=style"),
        ),
        "[server]\nnames = [\"*.example\"]\n",
    )
    .await;
    let mut client = proxy.h2(true).await;
    client.authority = "shop.example".to_string();
    assert_eq!(client.get("/").await.pushed_paths(), vec!["/css/app.css"]);
    client.authority = format!("localhost:{}", proxy.addr.port());
    assert!(client.get("/").await.pushes.is_empty());
}
