//! 103 Early Hints: pushes and hints that go out while the origin is still
//! thinking, from the origin's own 103s and from hints learned earlier.

mod support;

use std::future::poll_fn;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const CSS: &str = "a { color: red }";
const JS: &str = "let x = 1;";

/// A raw HTTP/1.1 origin (hyper's server cannot send a 103). For `/` it
/// writes a 103 with `early` Link lines, then waits for a permit from
/// `gate` before the final 200 with `final_links`. Assets answer at once.
struct EarlyOrigin {
    addr: SocketAddr,
    gate: Arc<Semaphore>,
    paths: Arc<Mutex<Vec<String>>>,
}

impl EarlyOrigin {
    async fn start(early: Vec<Vec<&'static str>>, final_links: Vec<&'static str>) -> EarlyOrigin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Arc::new(Semaphore::new(0));
        let paths = Arc::new(Mutex::new(Vec::new()));
        let (g, p) = (gate.clone(), paths.clone());
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let (gate, paths) = (g.clone(), p.clone());
                let (early, final_links) = (early.clone(), final_links.clone());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    loop {
                        // Read one request head (these requests have no body).
                        let end = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                break end + 4;
                            }
                            let mut chunk = [0u8; 4096];
                            match stream.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                            assert!(buf.len() < 65536);
                        };
                        let head = String::from_utf8_lossy(&buf[..end]).to_string();
                        buf.drain(..end);
                        let path = head.split(' ').nth(1).unwrap_or("").to_string();
                        paths.lock().unwrap().push(path.clone());
                        let response = match path.as_str() {
                            "/" => {
                                for links in &early {
                                    let mut hint = String::from("HTTP/1.1 103 Early Hints\r\n");
                                    for link in links {
                                        hint.push_str(&format!("Link: {link}\r\n"));
                                    }
                                    hint.push_str("X-Early-Only: yes\r\n\r\n");
                                    if stream.write_all(hint.as_bytes()).await.is_err() {
                                        return;
                                    }
                                }
                                // Think until the test says so.
                                gate.acquire().await.unwrap().forget();
                                let mut out =
                                    String::from("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n");
                                for link in &final_links {
                                    out.push_str(&format!("Link: {link}\r\n"));
                                }
                                out.push_str("Content-Length: 4\r\n\r\npage");
                                out
                            }
                            "/a.css" => format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{CSS}",
                                CSS.len()
                            ),
                            "/b.js" => format!(
                                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{JS}",
                                JS.len()
                            ),
                            _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_string(),
                        };
                        if stream.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        EarlyOrigin { addr, gate, paths }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn release(&self) {
        self.gate.add_permits(1);
    }
}

#[tokio::test]
async fn origin_103_links_are_pushed_while_the_origin_is_still_thinking() {
    let origin = EarlyOrigin::start(
        vec![vec![
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=push; as=script",
        ]],
        vec!["</a.css>; rel=preload; as=style"],
    )
    .await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let client = proxy.h2(true).await;
    let request = client.request("GET", "/").body(()).unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    let mut promises = response.push_promises();
    // Both promises arrive while the origin still holds the page: the
    // final response cannot exist yet.
    let first = bounded(promises.push_promise()).await.unwrap().unwrap();
    let second = bounded(promises.push_promise()).await.unwrap().unwrap();
    let mut promised = vec![
        first.request().uri().path().to_string(),
        second.request().uri().path().to_string(),
    ];
    promised.sort();
    assert_eq!(promised, vec!["/a.css", "/b.js"]);
    // The push-capable client got pushes, not a 103.
    origin.release();
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(response.headers().get("x-early-only").is_none());
    // The final response repeats a.css: it is not promised a second time.
    assert!(bounded(promises.push_promise()).await.is_none());
    for promise in [first, second] {
        let (request, pushed) = promise.into_parts();
        let pushed = bounded(pushed).await.unwrap();
        let body = read_body(pushed.into_body()).await.unwrap();
        let expected = if request.uri().path() == "/a.css" {
            CSS
        } else {
            JS
        };
        assert_eq!(body, Bytes::from(expected));
    }
    let paths = origin.paths.lock().unwrap().clone();
    assert_eq!(paths.iter().filter(|p| *p == "/a.css").count(), 1);
}

#[tokio::test]
async fn push_disabled_client_receives_the_103_before_the_final_response() {
    let origin = EarlyOrigin::start(
        vec![vec![
            "</a.css>; rel=push; as=style",
            "</b.js>; rel=preload; as=script",
        ]],
        vec![],
    )
    .await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let client = proxy.h2(false).await;
    let request = client.request("GET", "/").body(()).unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    // The 103 arrives through hyper-util's pooled origin client and the
    // proxy, while the origin is still holding its final response.
    let hint = bounded(poll_fn(|cx| response.poll_informational(cx)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hint.status(), StatusCode::EARLY_HINTS);
    let links: Vec<&str> = hint
        .headers()
        .get_all("link")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    // rel=push rewritten to preload, as for any client that takes no push.
    assert_eq!(
        links,
        vec![
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=preload; as=script"
        ]
    );
    assert!(hint.headers().get("x-early-only").is_none());
    origin.release();
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    // A 103's fields never leak into the final response.
    assert!(response.headers().get("x-early-only").is_none());
    assert!(response.headers().get("link").is_none());
    let paths = origin.paths.lock().unwrap().clone();
    assert_eq!(paths, vec!["/"], "nothing was fetched for pushes");
}

#[tokio::test]
async fn a_push_capable_client_gets_a_103_for_what_was_not_pushed() {
    // hint-only: preload links are never pushed, so they must be hinted.
    let origin = EarlyOrigin::start(
        vec![vec![
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=push; as=script",
        ]],
        vec![],
    )
    .await;
    let proxy = TestProxy::start(&origin.url(), "[push]\npreload = \"hint-only\"\n").await;
    let client = proxy.h2(true).await;
    let request = client.request("GET", "/").body(()).unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    let mut promises = response.push_promises();
    let hint = bounded(poll_fn(|cx| response.poll_informational(cx)))
        .await
        .unwrap()
        .unwrap();
    // b.js was pushed (rel=push); a.css is only hinted.
    assert_eq!(hint.headers()["link"], "</a.css>; rel=preload; as=style");
    assert_eq!(hint.headers().get_all("link").iter().count(), 1);
    let promise = bounded(promises.push_promise()).await.unwrap().unwrap();
    assert_eq!(promise.request().uri().path(), "/b.js");
    origin.release();
    assert_eq!(bounded(response).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn a_second_103_only_hints_links_not_hinted_yet() {
    let origin = EarlyOrigin::start(
        vec![
            vec!["</a.css>; rel=preload; as=style"],
            vec![
                "</a.css>; rel=preload; as=style",
                "</b.js>; rel=preload; as=script",
            ],
        ],
        vec![],
    )
    .await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let client = proxy.h2(false).await;
    let request = client.request("GET", "/").body(()).unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    let mut hinted = Vec::new();
    for _ in 0..2 {
        let hint = bounded(poll_fn(|cx| response.poll_informational(cx)))
            .await
            .unwrap()
            .unwrap();
        for value in hint.headers().get_all("link") {
            hinted.push(value.to_str().unwrap().to_string());
        }
    }
    assert_eq!(
        hinted,
        vec![
            "</a.css>; rel=preload; as=style",
            "</b.js>; rel=preload; as=script"
        ]
    );
    origin.release();
    assert_eq!(bounded(response).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn forwarding_origin_103_can_be_turned_off() {
    let origin = EarlyOrigin::start(vec![vec!["</a.css>; rel=preload; as=style"]], vec![]).await;
    let proxy = TestProxy::start(&origin.url(), "[hints]\nforward_origin_103 = false\n").await;
    let client = proxy.h2(false).await;
    let request = client.request("GET", "/").body(()).unwrap();
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    origin.release();
    // The first thing to arrive is the final response, not a 103.
    let first = bounded(poll_fn(|cx| response.poll_informational(cx))).await;
    assert!(first.is_none(), "got {first:?}");
    assert_eq!(bounded(response).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn http1_clients_get_no_103() {
    let origin = EarlyOrigin::start(vec![vec!["</a.css>; rel=push; as=style"]], vec![]).await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let mut client = proxy.h1().await;
    origin.release();
    // hyper's HTTP/1.1 client would surface a 103 as an error or skip it;
    // the response is the final 200 with no Link leaking from the 103.
    let response = client.get("/").await;
    assert_eq!(response.status, StatusCode::OK);
    assert!(response.headers.get("link").is_none());
    assert!(response.headers.get("x-early-only").is_none());
}

/// The status and header fields of the next page answer.
type NextPage = Arc<Mutex<(u16, Vec<(String, String)>)>>;

/// An origin whose pages answer only when the test lets them (one permit per
/// page response), with the Link lines the test sets for the next answer.
struct ScriptedOrigin {
    origin: TestOrigin,
    gate: Arc<Semaphore>,
    page: NextPage,
}

impl ScriptedOrigin {
    async fn start() -> ScriptedOrigin {
        let gate = Arc::new(Semaphore::new(0));
        let page: NextPage = Arc::new(Mutex::new((200, Vec::new())));
        let (g, p) = (gate.clone(), page.clone());
        let origin = TestOrigin::start(Arc::new(move |request| {
            let (gate, page) = (g.clone(), p.clone());
            Box::pin(async move {
                match request.uri().path() {
                    "/a.css" => Response::new(full(CSS)),
                    "/b.js" => Response::new(full(JS)),
                    _ => {
                        gate.acquire().await.unwrap().forget();
                        let (status, headers) = page.lock().unwrap().clone();
                        let mut resp =
                            Resp::new(status, "page").header("content-type", "text/html");
                        for (name, value) in headers {
                            resp = resp.header(&name, &value);
                        }
                        resp.into_response()
                    }
                }
            })
        }))
        .await;
        ScriptedOrigin { origin, gate, page }
    }

    fn next_page(&self, status: u16, headers: &[(&str, &str)]) {
        *self.page.lock().unwrap() = (
            status,
            headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        );
    }

    fn release(&self) {
        self.gate.add_permits(1);
    }
}

/// Learning where one client confirms a link: these tests see one page
/// from one address, and check how entries change and are forgotten.
const LEARN: &str = "[hints]\nlearn = true\nlearn_min_clients = 1\n";

/// A navigation request, as a browser sends one.
fn navigate(client: &H2Client, path: &str) -> http::Request<()> {
    client
        .request("GET", path)
        .header("sec-fetch-mode", "navigate")
        .header("accept", "text/html,*/*;q=0.8")
        .body(())
        .unwrap()
}

/// Fetch a page whose answer the origin holds until released, and return
/// the paths promised before the origin answered, then the exchange.
async fn learned_promises(scripted: &mut ScriptedOrigin, proxy: &TestProxy) -> Vec<String> {
    let client = proxy.h2(true).await;
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(navigate(&client, "/page"), true).unwrap();
    let mut promises = response.push_promises();
    // Promises from learned hints are queued before the origin call. Once
    // the origin holds the page, a marker request's answer on the same
    // connection comes after them, so everything promised has arrived.
    scripted
        .origin
        .wait_for(&OriginEvent::Request("/page".into()))
        .await;
    let marker = client.request("GET", "/b.js").body(()).unwrap();
    let (marker, _) = send.send_request(marker, true).unwrap();
    bounded(marker).await.unwrap();
    let mut promised = Vec::new();
    while let Ok(Some(Ok(promise))) =
        tokio::time::timeout(std::time::Duration::ZERO, promises.push_promise()).await
    {
        promised.push(promise.request().uri().path().to_string());
    }
    scripted.release();
    let _ = bounded(response).await.unwrap();
    promised
}

#[tokio::test]
async fn learned_hints_push_on_the_next_visit_before_the_origin_answers() {
    let mut scripted = ScriptedOrigin::start().await;
    let proxy = TestProxy::start(&scripted.origin.url(), LEARN).await;
    scripted.next_page(200, &[("link", "</a.css>; rel=preload; as=style")]);
    // First visit: nothing learned yet.
    assert!(learned_promises(&mut scripted, &proxy).await.is_empty());
    // Second visit, new connection: promised before the origin answers.
    assert_eq!(
        learned_promises(&mut scripted, &proxy).await,
        vec!["/a.css"]
    );
}

#[tokio::test]
async fn a_changed_link_set_replaces_the_learned_entry() {
    let mut scripted = ScriptedOrigin::start().await;
    let proxy = TestProxy::start(&scripted.origin.url(), LEARN).await;
    scripted.next_page(200, &[("link", "</a.css>; rel=preload; as=style")]);
    learned_promises(&mut scripted, &proxy).await;
    scripted.next_page(200, &[("link", "</b.js>; rel=preload; as=script")]);
    // Still the old set on this visit; the answer teaches the new one.
    assert_eq!(
        learned_promises(&mut scripted, &proxy).await,
        vec!["/a.css"]
    );
    scripted.next_page(200, &[]);
    assert_eq!(learned_promises(&mut scripted, &proxy).await, vec!["/b.js"]);
    // The origin stopped sending links: forgotten.
    assert!(learned_promises(&mut scripted, &proxy).await.is_empty());
}

#[tokio::test]
async fn pages_behind_auth_or_marked_private_are_never_hinted() {
    for (status, extra) in [
        (401, None),
        (403, None),
        (200, Some(("cache-control", "no-store"))),
        (200, Some(("cache-control", "private, max-age=60"))),
    ] {
        let mut scripted = ScriptedOrigin::start().await;
        let proxy = TestProxy::start(&scripted.origin.url(), LEARN).await;
        scripted.next_page(200, &[("link", "</a.css>; rel=preload; as=style")]);
        learned_promises(&mut scripted, &proxy).await;
        let mut last = vec![("link", "</a.css>; rel=preload; as=style")];
        last.extend(extra);
        scripted.next_page(status, &last);
        // This visit still uses what the 200 taught; its answer forgets it.
        assert_eq!(
            learned_promises(&mut scripted, &proxy).await,
            vec!["/a.css"]
        );
        scripted.next_page(200, &[]);
        assert!(
            learned_promises(&mut scripted, &proxy).await.is_empty(),
            "hinted after a {status} {extra:?}"
        );
    }
}

#[tokio::test]
async fn push_disabled_client_gets_learned_links_as_a_103() {
    let mut scripted = ScriptedOrigin::start().await;
    let proxy = TestProxy::start(&scripted.origin.url(), LEARN).await;
    scripted.next_page(200, &[("link", "</a.css>; rel=push; as=style")]);
    learned_promises(&mut scripted, &proxy).await;
    let client = proxy.h2(false).await;
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(navigate(&client, "/page"), true).unwrap();
    let hint = bounded(poll_fn(|cx| response.poll_informational(cx)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hint.status(), StatusCode::EARLY_HINTS);
    assert_eq!(hint.headers()["link"], "</a.css>; rel=preload; as=style");
    scripted.release();
    assert_eq!(bounded(response).await.unwrap().status(), StatusCode::OK);
    // Requests that are not navigations get no learned hints.
    let plain = client.request("GET", "/page").body(()).unwrap();
    let (mut response, _) = send.send_request(plain, true).unwrap();
    scripted.release();
    let first = bounded(poll_fn(|cx| response.poll_informational(cx))).await;
    assert!(first.is_none(), "non-navigation got {first:?}");
}

/// The default number of distinct clients that must have been sent a link
/// before it is hinted to anyone.
const MIN_CLIENTS: u8 = 3;

/// The loopback address of test visitor `n` (127.0.0.2, 127.0.0.3…).
fn visitor(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n + 1))
}

/// One navigation to `path` from `source`, by a browser that takes no
/// pushes (so every learned link arrives in a 103), with an optional
/// cookie. Returns the links of all 103s that came before the final
/// response, which must have the given status.
async fn visit(
    proxy: &TestProxy,
    source: IpAddr,
    path: &str,
    cookie: Option<&str>,
    status: u16,
) -> Vec<String> {
    let client = proxy.h2_from(source, false).await;
    let mut request = navigate(&client, path);
    if let Some(cookie) = cookie {
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
    }
    let mut send = client.send.clone().ready().await.unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    let mut hinted = Vec::new();
    // Ready(None) once the final response head is in: all 103s are read.
    while let Some(hint) = bounded(poll_fn(|cx| response.poll_informational(cx))).await {
        let hint = hint.unwrap();
        assert_eq!(hint.status(), StatusCode::EARLY_HINTS);
        for value in hint.headers().get_all("link") {
            hinted.push(value.to_str().unwrap().to_string());
        }
    }
    let response = bounded(response).await.unwrap();
    assert_eq!(response.status().as_u16(), status, "{path} from {source}");
    read_body(response.into_body()).await.unwrap();
    hinted
}

/// An account page, as Rails renders one: private, varying on the session
/// cookie, naming the shared stylesheet and the visitor's own statement.
async fn account_origin() -> TestOrigin {
    TestOrigin::start(Arc::new(|request| {
        let user = request
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("user="))
            .unwrap_or("nobody")
            .to_string();
        Box::pin(async move {
            Resp::html("account")
                .header("cache-control", "no-cache, private")
                .header("vary", "Cookie")
                .link("</app.css>; rel=preload; as=style")
                .link(&format!(
                    "</private/{user}-statement.pdf>; rel=preload; as=fetch"
                ))
                .into_response()
        })
    }))
    .await
}

#[tokio::test]
async fn learned_hints_never_reveal_one_visitors_private_link() {
    let origin = account_origin().await;
    let proxy = TestProxy::start(&origin.url(), "[hints]\nlearn = true\n").await;
    let app_css = "</app.css>; rel=preload; as=style";
    let mut every_hint = Vec::new();
    // Alice comes back over and over, from one address: one client.
    for _ in 0..4 {
        let hinted = visit(&proxy, visitor(1), "/account", Some("user=alice"), 200).await;
        assert!(hinted.is_empty(), "one client confirmed {hinted:?}");
    }
    // Fewer than MIN_CLIENTS distinct clients so far: nothing learned is
    // hinted, not even the shared stylesheet.
    for n in 2..=MIN_CLIENTS {
        let cookie = format!("user=visitor{n}");
        let hinted = visit(&proxy, visitor(n), "/account", Some(&cookie), 200).await;
        assert!(hinted.is_empty(), "visitor {n} was hinted {hinted:?}");
    }
    // MIN_CLIENTS addresses were sent app.css: a new visitor gets it early,
    // and so does Alice, but nobody gets anyone's statement.
    for (n, user) in [
        (MIN_CLIENTS + 1, "dave"),
        (1, "alice"),
        (MIN_CLIENTS + 2, "erin"),
    ] {
        let cookie = format!("user={user}");
        let hinted = visit(&proxy, visitor(n), "/account", Some(&cookie), 200).await;
        assert_eq!(hinted, vec![app_css], "{user}");
        every_hint.extend(hinted);
    }
    assert!(
        every_hint.iter().all(|link| !link.contains("/private/")),
        "{every_hint:?}"
    );
}

/// A page whose origin builds a preload link from the query string, and
/// names the shared stylesheet.
async fn echoing_origin() -> TestOrigin {
    TestOrigin::start(Arc::new(|request| {
        let query = request.uri().query().map(str::to_string);
        Box::pin(async move {
            let mut resp = Resp::html("page").link("</app.css>; rel=preload; as=style");
            if let Some(query) = query {
                resp = resp.link(&format!("</x.js?{query}>; rel=preload; as=script"));
            }
            resp.into_response()
        })
    }))
    .await
}

#[tokio::test]
async fn a_link_planted_through_the_query_never_reaches_another_visitor() {
    for learn_query in [false, true] {
        let origin = echoing_origin().await;
        let config = format!("[hints]\nlearn = true\nlearn_query = {learn_query}\n");
        let proxy = TestProxy::start(&origin.url(), &config).await;
        // The attacker, from as many addresses as confirmation takes.
        for n in 1..=MIN_CLIENTS {
            visit(&proxy, visitor(n), "/page?x=ATTACKER", None, 200).await;
        }
        // Ordinary visitors of the page teach the stylesheet.
        for n in MIN_CLIENTS + 1..=2 * MIN_CLIENTS {
            let hinted = visit(&proxy, visitor(n), "/page", None, 200).await;
            assert!(hinted.iter().all(|l| !l.contains("ATTACKER")), "{hinted:?}");
        }
        let hinted = visit(&proxy, visitor(2 * MIN_CLIENTS + 1), "/page", None, 200).await;
        assert_eq!(
            hinted,
            vec!["</app.css>; rel=preload; as=style"],
            "learn_query = {learn_query}"
        );
        // Keyed by the exact query, the attacker's URL has an entry of its
        // own: only those who open that very URL get its links early, the
        // links the origin gives that URL anyway.
        let next = visitor(2 * MIN_CLIENTS + 2);
        let hinted = visit(&proxy, next, "/page?x=ATTACKER", None, 200).await;
        let planted = hinted.iter().any(|l| l.contains("ATTACKER"));
        assert_eq!(planted, learn_query, "{hinted:?}");
    }
}

#[tokio::test]
async fn a_page_answering_401_is_never_learned() {
    let links = "</app.css>; rel=preload; as=style";
    let origin = TestOrigin::routes(
        Routes::new()
            .route(
                "/login",
                Resp::new(401, "who are you?")
                    .header("content-type", "text/html")
                    .link(links),
            )
            .route("/welcome", Resp::html("welcome").link(links)),
    )
    .await;
    let proxy = TestProxy::start(&origin.url(), "[hints]\nlearn = true\n").await;
    for n in 1..=MIN_CLIENTS + 1 {
        let hinted = visit(&proxy, visitor(n), "/login", None, 401).await;
        assert!(hinted.is_empty(), "a 401 page was hinted: {hinted:?}");
        visit(&proxy, visitor(n), "/welcome", None, 200).await;
    }
    let next = visitor(MIN_CLIENTS + 2);
    assert!(visit(&proxy, next, "/login", None, 401).await.is_empty());
    // The same links on a public page, from the same visitors, were learned.
    assert_eq!(
        visit(&proxy, next, "/welcome", None, 200).await,
        vec![links]
    );
}

/// An origin that sends its 103 and its final response in one `write()`,
/// so both arrive in the proxy's same read.
async fn hint_and_page_together() -> RawOrigin {
    RawOrigin::start(|_| {
        vec![OriginStep::write(
            "HTTP/1.1 103 Early Hints\r\n\
             Link: </hint.css>; rel=preload; as=style\r\n\r\n\
             HTTP/1.1 200 OK\r\n\
             Content-Type: text/html\r\n\
             Content-Length: 4\r\n\r\n\
             page",
        )]
    })
    .await
}

#[tokio::test]
async fn a_103_arriving_with_the_final_response_is_always_pushed() {
    let origin = hint_and_page_together().await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    for run in 0..200 {
        // A new connection each time: the per-connection diary would
        // otherwise (rightly) not push the same URL twice.
        let mut client = proxy.h2(true).await;
        let exchange = client.get("/").await;
        assert_eq!(exchange.status, StatusCode::OK, "run {run}");
        assert_eq!(
            exchange.pushes_before_headers,
            vec!["/hint.css"],
            "run {run}: the 103's link was not pushed"
        );
    }
}

#[tokio::test]
async fn a_103_arriving_with_the_final_response_is_always_forwarded() {
    let origin = hint_and_page_together().await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    let client = proxy.h2(false).await;
    for run in 0..200 {
        let request = client.request("GET", "/").body(()).unwrap();
        let mut send = client.send.clone().ready().await.unwrap();
        let (mut response, _) = send.send_request(request, true).unwrap();
        let hint = bounded(poll_fn(|cx| response.poll_informational(cx))).await;
        let hint = hint
            .unwrap_or_else(|| panic!("run {run}: no 103 forwarded"))
            .unwrap();
        assert_eq!(hint.status(), StatusCode::EARLY_HINTS, "run {run}");
        assert_eq!(
            hint.headers()["link"],
            "</hint.css>; rel=preload; as=style",
            "run {run}"
        );
        let response = bounded(response).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "run {run}");
        // Hinted once, never again in the final response's own field.
        assert!(response.headers().get("link").is_none(), "run {run}");
    }
}

/// Every page: a 103 naming `/early.css`, then a public HTML page whose
/// own Link names `/final.css`.
const HINTED_PAGE: &str = "HTTP/1.1 103 Early Hints\r\n\
                           Link: </early.css>; rel=preload; as=style\r\n\r\n\
                           HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\
                           Link: </final.css>; rel=preload; as=style\r\n\
                           Content-Length: 4\r\n\r\npage";

/// A route's `hints = false` sends no 103 at all, and `learn = false`
/// learns nothing, while the site's other routes do both.
#[tokio::test]
async fn routes_turn_early_hints_and_learning_off_for_their_paths() {
    let origin = wire::RawOrigin::start(|_| vec![wire::OriginStep::write(HINTED_PAGE)]).await;
    let routes = "[[sites]]\ndefault = true\n\
                  [[sites.routes]]\npath = \"/quiet\"\nhints = false\n\
                  [[sites.routes]]\npath = \"/forget\"\nlearn = false\n";
    let proxy = TestProxy::start(&origin.url(), &format!("{LEARN}{routes}")).await;
    let early = "</early.css>; rel=preload; as=style".to_owned();
    let learned = "</final.css>; rel=preload; as=style".to_owned();
    let me = visitor(1);

    // An ordinary route: the origin's 103 goes on, and the page's own
    // link is learned and hinted on the next visit.
    assert_eq!(
        visit(&proxy, me, "/page", None, 200).await,
        std::slice::from_ref(&early)
    );
    let again = visit(&proxy, me, "/page", None, 200).await;
    assert!(again.contains(&learned), "{again:?}");

    // hints = false: no 103, neither the origin's nor a learned one.
    assert!(visit(&proxy, me, "/quiet/page", None, 200).await.is_empty());
    assert!(visit(&proxy, me, "/quiet/page", None, 200).await.is_empty());

    // learn = false: the origin's 103 goes on, nothing is learned.
    assert_eq!(
        visit(&proxy, me, "/forget/page", None, 200).await,
        std::slice::from_ref(&early)
    );
    assert_eq!(visit(&proxy, me, "/forget/page", None, 200).await, [early]);
}
