//! `[[sites]]` over real TLS and cleartext: SNI picks each site's
//! certificate, each host name reaches its site's upstream, unknown and
//! misdirected hosts get 421 (TLS) or 404 (cleartext) unless a default site
//! takes them, path routes pick upstreams and push settings, and pushes are
//! promised only under a site's names and fetched through its routes.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use support::*;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const CSS: &str = "body { color: #123; }\n";
const PRELOAD: &str = "</static/app.css>; rel=preload; as=style";

/// The `cert` and `key` lines of a site table, as absolute paths.
fn cert_keys(cert: &TestCert) -> String {
    format!(
        "cert = {:?}\nkey = {:?}\n",
        cert.cert_path.display().to_string(),
        cert.key_path.display().to_string()
    )
}

/// A TLS connection to the proxy's TLS listener that sends `sni` and
/// trusts only `trust`: the handshake fails unless the proxy serves it.
async fn tls_to(
    proxy: &TestProxy,
    trust: &TestCert,
    sni: &str,
    alpn: &[&[u8]],
) -> TlsStream<TcpStream> {
    let connector = TlsConnector::from(Arc::new(trust.client_config(alpn)));
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    connector
        .connect(ServerName::try_from(sni.to_owned()).unwrap(), tcp)
        .await
        .unwrap_or_else(|e| panic!("TLS handshake for {sni}: {e}"))
}

/// The leaf certificate the proxy served on `tls`.
fn served(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

/// An HTTP/2 client on `tls` whose requests carry `authority`.
async fn h2_on(tls: TlsStream<TcpStream>, authority: &str, push: bool) -> H2Client {
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (send, connection) = h2::client::Builder::new()
        .enable_push(push)
        .handshake::<_, Bytes>(tls)
        .await
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    H2Client::from_parts(send, authority.to_owned())
}

/// An HTTP/2 connection sending `sni`, trusting `trust`, for `authority`;
/// checks that the proxy served exactly that certificate.
async fn h2_site(
    proxy: &TestProxy,
    trust: &TestCert,
    sni: &str,
    authority: &str,
    push: bool,
) -> H2Client {
    let tls = tls_to(proxy, trust, sni, &[b"h2"]).await;
    assert!(
        served(&tls) == trust.der,
        "SNI {sni} was not served its site's certificate"
    );
    h2_on(tls, authority, push).await
}

/// GET `path` with `authority` on an existing HTTP/2 connection.
async fn h2_get_for(client: &mut H2Client, authority: &str, path: &str) -> Exchange {
    let request = Request::get(format!("https://{authority}{path}"))
        .body(())
        .unwrap();
    client.exchange(request, None).await
}

/// One HTTP/1.1 request with `host` over `io`; the status and body.
async fn h1_get<IO>(io: IO, host: &str, path: &str) -> (StatusCode, Bytes)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("h1 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = Request::get(path)
        .header("host", host)
        .body(full(Bytes::new()))
        .unwrap();
    let response = bounded(send.send_request(request))
        .await
        .expect("response head");
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

/// HTTP/1.1 over TLS sending `sni` (trusting `trust`), with `host`.
async fn h1_tls_get(
    proxy: &TestProxy,
    trust: &TestCert,
    sni: &str,
    host: &str,
    path: &str,
) -> (StatusCode, Bytes) {
    let tls = tls_to(proxy, trust, sni, &[b"http/1.1"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert!(served(&tls) == trust.der, "SNI {sni}: wrong certificate");
    h1_get(tls, host, path).await
}

/// HTTP/1.1 in cleartext with `host`.
async fn plain_get(proxy: &TestProxy, host: &str, path: &str) -> (StatusCode, Bytes) {
    let tcp = TcpStream::connect(proxy.plain_addr.expect("a cleartext listener"))
        .await
        .unwrap();
    h1_get(tcp, host, path).await
}

fn body(exchange: &Exchange) -> &[u8] {
    exchange.body.as_deref().expect("a whole body")
}

fn home(text: &str) -> Routes {
    Routes::new().route("/", Resp::html(text))
}

#[tokio::test]
async fn sni_picks_each_sites_certificate_and_each_host_reaches_its_sites_upstream() {
    bounded(async {
        let shop = TestOrigin::routes(home("shop home")).await;
        let blog = TestOrigin::routes(home("blog home")).await;
        // origin.url: no site uses it, so nothing may reach it.
        let stray = TestOrigin::routes(home("stray")).await;
        let shop_cert = TestCert::for_names(&["shop.example"]);
        let blog_cert = TestCert::for_names(&["blog.example", "*.blog.example"]);
        let extra = format!(
            "[upstreams.shop]\nservers = [\"{shop}\"]\n\n[upstreams.blog]\nservers = [\"{blog}\"]\n\n\
             [[sites]]\nnames = [\"shop.example\"]\n{shop_keys}upstream = \"shop\"\n\n\
             [[sites]]\nnames = [\"blog.example\", \"*.blog.example\"]\n{blog_keys}upstream = \"blog\"\n",
            shop = shop.url(),
            blog = blog.url(),
            shop_keys = cert_keys(&shop_cert),
            blog_keys = cert_keys(&blog_cert),
        );
        let proxy = TestProxy::start(&stray.url(), &extra).await;

        // Site A over HTTP/2: its certificate, its upstream.
        let mut a = h2_site(&proxy, &shop_cert, "shop.example", "shop.example", false).await;
        let reply = a.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(body(&reply), b"shop home");
        // Site B's name on site A's connection (another certificate): 421.
        let misdirected = h2_get_for(&mut a, "blog.example", "/").await;
        assert_eq!(misdirected.status, StatusCode::MISDIRECTED_REQUEST);
        // A name no site has, on site A's connection: 421.
        let unknown = h2_get_for(&mut a, "unknown.example", "/").await;
        assert_eq!(unknown.status, StatusCode::MISDIRECTED_REQUEST);
        // The connection still serves its own site.
        let again = a.get("/").await;
        assert_eq!(again.status, StatusCode::OK);
        assert_eq!(body(&again), b"shop home");

        // Site B, by a wildcard name: its certificate, its upstream; its
        // exact name on the same connection is the same site.
        let mut b = h2_site(
            &proxy,
            &blog_cert,
            "www.blog.example",
            "www.blog.example",
            false,
        )
        .await;
        let reply = b.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(body(&reply), b"blog home");
        let exact = h2_get_for(&mut b, "blog.example", "/").await;
        assert_eq!(exact.status, StatusCode::OK);
        assert_eq!(body(&exact), b"blog home");
        let misdirected = h2_get_for(&mut b, "shop.example", "/").await;
        assert_eq!(misdirected.status, StatusCode::MISDIRECTED_REQUEST);

        // HTTP/1.1: the Host of site B on site A's connection gets 421; its
        // own host is served.
        let (status, _) =
            h1_tls_get(&proxy, &shop_cert, "shop.example", "blog.example", "/").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
        let (status, text) =
            h1_tls_get(&proxy, &shop_cert, "shop.example", "shop.example", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "shop home");

        // An SNI name no site has gets [tls]'s certificate, and then its
        // requests get 421, over HTTP/2 and HTTP/1.1.
        let localhost = format!("localhost:{}", proxy.addr.port());
        let mut unknown = h2_site(&proxy, &proxy.cert, "localhost", &localhost, false).await;
        let reply = unknown.get("/").await;
        assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
        let (status, _) = h1_tls_get(&proxy, &proxy.cert, "localhost", &localhost, "/").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

        assert_eq!(shop.seen_paths(), vec!["/", "/", "/"]);
        assert_eq!(blog.seen_paths(), vec!["/", "/"]);
        assert!(stray.seen_paths().is_empty(), "{:?}", stray.seen_paths());
    })
    .await
}

/// A TLS and a cleartext listener.
const BOTH_LISTENERS: &str = "[[listen]]\naddress = \"127.0.0.1:0\"\n\
                              [[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n";

#[tokio::test]
async fn cleartext_unknown_host_gets_404_unless_a_default_site_takes_it() {
    bounded(async {
        let shop = TestOrigin::routes(home("shop home")).await;
        let fallback = TestOrigin::routes(home("fallback home")).await;
        let stray = TestOrigin::routes(home("stray")).await;
        let shop_site = format!(
            "[upstreams.shop]\nservers = [\"{}\"]\n\n[upstreams.fallback]\nservers = [\"{}\"]\n\n\
             [[sites]]\nnames = [\"shop.example\"]\nupstream = \"shop\"\n",
            shop.url(),
            fallback.url()
        );

        // Without a default site.
        let proxy = TestProxy::start_listening(&stray.url(), BOTH_LISTENERS, &shop_site).await;
        let (status, text) = plain_get(&proxy, "shop.example", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "shop home");
        let (status, _) = plain_get(&proxy, "other.example", "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        // h2c with prior knowledge, likewise.
        let tcp = TcpStream::connect(proxy.plain_addr.unwrap()).await.unwrap();
        let (send, connection) = h2::client::handshake(tcp).await.expect("h2c handshake");
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut h2c = H2Client::from_parts(send, "other.example".to_owned());
        let request = Request::get("http://other.example/").body(()).unwrap();
        let reply = h2c.exchange(request, None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND);
        drop(proxy);
        assert_eq!(shop.seen_paths(), vec!["/"]);
        assert!(fallback.seen_paths().is_empty());

        // With a default site: every host no site lists goes to it, in
        // cleartext and over TLS (where it is no longer a 421).
        let with_default =
            format!("{shop_site}\n[[sites]]\ndefault = true\nupstream = \"fallback\"\n");
        let proxy = TestProxy::start_listening(&stray.url(), BOTH_LISTENERS, &with_default).await;
        let (status, text) = plain_get(&proxy, "other.example", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "fallback home");
        let (status, text) = plain_get(&proxy, "shop.example", "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(text, "shop home");
        let mut tls = proxy.h2(false).await;
        let reply = tls.get("/").await;
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(body(&reply), b"fallback home");
        assert_eq!(fallback.seen_paths(), vec!["/", "/"]);
        assert_eq!(shop.seen_paths(), vec!["/", "/"]);
        assert!(stray.seen_paths().is_empty(), "{:?}", stray.seen_paths());
    })
    .await
}

/// An app origin (pages linking `/static/app.css`) and a static one.
async fn app_and_static() -> (TestOrigin, TestOrigin) {
    let page = || Resp::html("<p>page</p>").link(PRELOAD);
    let app = TestOrigin::routes(
        Routes::new()
            .route("/page", page())
            .route("/legacy/page", page())
            .route("/staticfoo", Resp::html("app staticfoo"))
            // Served from here only if a route were ignored.
            .route(
                "/static/app.css",
                Resp::new(200, "wrong upstream").header("content-type", "text/css"),
            ),
    )
    .await;
    let statics = TestOrigin::routes(
        Routes::new()
            .route("/static", Resp::html("static index"))
            .route(
                "/static/app.css",
                Resp::new(200, CSS).header("content-type", "text/css"),
            )
            .route("/favicon.ico", Resp::new(200, "icon"))
            .route("/favicon.ico?v=2", Resp::new(200, "icon v2")),
    )
    .await;
    (app, statics)
}

fn app_and_static_upstreams(app: &TestOrigin, statics: &TestOrigin) -> String {
    format!(
        "[upstreams.app]\nservers = [\"{}\"]\n\n[upstreams.static]\nservers = [\"{}\"]\n\n",
        app.url(),
        statics.url()
    )
}

#[tokio::test]
async fn path_routes_pick_the_upstream_and_push_follows_the_route_and_the_site() {
    bounded(async {
        let (app, statics) = app_and_static().await;
        let stray = TestOrigin::routes(home("stray")).await;
        // Both sites are served with [tls]'s certificate (localhost,
        // 127.0.0.1), so one connection may carry requests for both.
        let extra = format!(
            "{upstreams}\
             [[sites]]\nnames = [\"localhost\"]\nupstream = \"app\"\n\n\
             [[sites.routes]]\npath = \"/static\"\nupstream = \"static\"\n\n\
             [[sites.routes]]\nexact = \"/favicon.ico\"\nupstream = \"static\"\n\n\
             [[sites.routes]]\npath = \"/legacy\"\npush = false\n\n\
             [[sites]]\nnames = [\"127.0.0.1\"]\nupstream = \"app\"\n\n\
             [sites.push]\nenabled = false\n",
            upstreams = app_and_static_upstreams(&app, &statics),
        );
        let proxy = TestProxy::start(&stray.url(), &extra).await;

        let mut client = proxy.h2(false).await;
        for (path, want) in [
            ("/static", "static index"),
            ("/static/app.css", CSS),
            ("/favicon.ico", "icon"),
            ("/favicon.ico?v=2", "icon v2"),
            ("/staticfoo", "app staticfoo"),
        ] {
            let reply = client.get(path).await;
            assert_eq!(reply.status, StatusCode::OK, "{path}");
            assert_eq!(body(&reply), want.as_bytes(), "{path}");
        }
        assert_eq!(
            statics.seen_paths(),
            vec![
                "/static",
                "/static/app.css",
                "/favicon.ico",
                "/favicon.ico?v=2"
            ]
        );
        assert_eq!(app.seen_paths(), vec!["/staticfoo"]);

        // A route with push = false: no promise, the Link passed on.
        let mut client = proxy.h2(true).await;
        let legacy = client.get("/legacy/page").await;
        assert_eq!(legacy.status, StatusCode::OK);
        assert!(legacy.pushes.is_empty(), "{:?}", legacy.pushed_paths());
        assert_eq!(legacy.links(), vec![PRELOAD]);

        // The same page under the site's default route is pushed.
        let mut client = proxy.h2(true).await;
        let pushed = client.get("/page").await;
        assert_eq!(pushed.status, StatusCode::OK);
        assert_eq!(pushed.pushed_paths(), vec!["/static/app.css"]);
        assert_eq!(pushed.pushes[0].status, StatusCode::OK);
        assert_eq!(pushed.links(), vec![PRELOAD]);

        // The other site, [sites.push] enabled = false: nothing promised
        // for the same page there, the Link passed on.
        let mut client = proxy.h2(true).await;
        client.authority = format!("127.0.0.1:{}", proxy.addr.port());
        let unpushed = client.get("/page").await;
        assert_eq!(unpushed.status, StatusCode::OK);
        assert_eq!(body(&unpushed), b"<p>page</p>");
        assert!(unpushed.pushes.is_empty(), "{:?}", unpushed.pushed_paths());
        assert_eq!(unpushed.links(), vec![PRELOAD]);

        // ... while the first site, on the same connection, still pushes.
        client.authority = format!("localhost:{}", proxy.addr.port());
        let pushed = client.get("/page").await;
        assert_eq!(pushed.pushed_paths(), vec!["/static/app.css"]);
        assert!(stray.seen_paths().is_empty(), "{:?}", stray.seen_paths());
    })
    .await
}

#[tokio::test]
async fn pushes_are_promised_only_under_the_sites_names_and_fetched_through_its_routes() {
    bounded(async {
        let (app, statics) = app_and_static().await;
        let stray = TestOrigin::routes(home("stray")).await;
        let shop_cert = TestCert::for_names(&["shop.example", "*.shop.example"]);
        // The shop has its own names and certificate, and a static route;
        // the default site has no names (it pushes under its certificate's,
        // [tls]'s: localhost) and no routes.
        let extra = format!(
            "{upstreams}\
             [[sites]]\nnames = [\"shop.example\", \"*.shop.example\"]\n{keys}upstream = \"app\"\n\n\
             [[sites.routes]]\npath = \"/static\"\nupstream = \"static\"\n\n\
             [[sites]]\ndefault = true\nupstream = \"app\"\n",
            upstreams = app_and_static_upstreams(&app, &statics),
            keys = cert_keys(&shop_cert),
        );
        let proxy = TestProxy::start(&stray.url(), &extra).await;

        // The shop, under a wildcard name: the page is pushed its
        // stylesheet, fetched through the shop's static route.
        let mut shop = h2_site(
            &proxy,
            &shop_cert,
            "www.shop.example",
            "www.shop.example",
            true,
        )
        .await;
        let page = shop.get("/page").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.pushed_paths(), vec!["/static/app.css"]);
        let push = &page.pushes[0];
        assert_eq!(push.status, StatusCode::OK);
        assert_eq!(push.body.as_deref().unwrap(), CSS.as_bytes());
        assert_eq!(statics.seen_paths(), vec!["/static/app.css"]);
        assert_eq!(app.seen_paths(), vec!["/page"]);

        // The default site, under a name its certificate covers: pushed,
        // through its own routes (no static route: the app upstream).
        let localhost = format!("localhost:{}", proxy.addr.port());
        let mut default = h2_site(&proxy, &proxy.cert, "localhost", &localhost, true).await;
        let page = default.get("/page").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(page.pushed_paths(), vec!["/static/app.css"]);
        assert_eq!(
            page.pushes[0].body.as_deref().unwrap(),
            b"wrong upstream",
            "the default site has no static route"
        );
        assert_eq!(app.seen_paths(), vec!["/page", "/page", "/static/app.css"]);
        assert_eq!(statics.seen_paths().len(), 1);

        // The default site answers a name it does not have, but promises
        // nothing under it: the Link is passed on instead.
        let mut elsewhere =
            h2_site(&proxy, &proxy.cert, "localhost", "elsewhere.example", true).await;
        let page = elsewhere.get("/page").await;
        assert_eq!(page.status, StatusCode::OK);
        assert_eq!(body(&page), b"<p>page</p>");
        assert!(page.pushes.is_empty(), "{:?}", page.pushed_paths());
        assert_eq!(page.links(), vec![PRELOAD]);
        assert_eq!(
            app.seen_paths(),
            vec!["/page", "/page", "/static/app.css", "/page"]
        );
        assert!(stray.seen_paths().is_empty(), "{:?}", stray.seen_paths());
    })
    .await
}
