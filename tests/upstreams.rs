//! `[upstreams.NAME]` with several addresses: round-robin and
//! least-outstanding balancing, failover of idempotent requests when a
//! connection cannot be opened (and never of a POST), passive ejection
//! after `max_fails`, active health checks, a Unix-socket upstream, and the
//! per-address metrics that show all of it.

mod support;

use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;

/// One request an [`App`] answered (health checks aside).
#[derive(Debug, Clone)]
struct Hit {
    method: String,
    path: String,
    body: String,
}

/// What an [`App`]'s handler shares with the test.
struct AppState {
    name: &'static str,
    hits: Mutex<Vec<Hit>>,
    /// `/health` answers 200 while set, 503 otherwise.
    healthy: AtomicBool,
    health_checks: AtomicUsize,
    /// The `User-Agent` of the last health check.
    health_agent: Mutex<Option<String>>,
    /// A `/slow` request has arrived.
    slow_arrived: Notify,
    /// Each `/slow` request takes a permit before it is answered.
    slow_release: Semaphore,
}

/// An HTTP/1.1 origin on 127.0.0.1 that answers with its name, closes each
/// connection after its response (so the proxy never holds an idle
/// connection to it), and can be killed: its listener closed (connections
/// refused) and its connections dropped.
struct App {
    addr: SocketAddr,
    state: Arc<AppState>,
    tasks: Arc<Mutex<Vec<AbortHandle>>>,
}

impl App {
    async fn start(name: &'static str) -> App {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind app");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(AppState {
            name,
            hits: Mutex::new(Vec::new()),
            healthy: AtomicBool::new(true),
            health_checks: AtomicUsize::new(0),
            health_agent: Mutex::new(None),
            slow_arrived: Notify::new(),
            slow_release: Semaphore::new(0),
        });
        let tasks = Arc::new(Mutex::new(Vec::new()));
        let accept = {
            let (state, tasks) = (state.clone(), tasks.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let state = state.clone();
                    let service = service_fn(move |request| respond(state.clone(), request));
                    let connection = tokio::spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                    tasks.lock().unwrap().push(connection.abort_handle());
                }
            })
        };
        tasks.lock().unwrap().push(accept.abort_handle());
        App { addr, state, tasks }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Close the listener and every connection: from now on connections
    /// to its address are refused.
    async fn kill(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        // The listener is closed once the aborted accept task is dropped.
        bounded(async {
            while TcpStream::connect(self.addr).await.is_ok() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    fn hits(&self) -> Vec<Hit> {
        self.state.hits.lock().unwrap().clone()
    }

    fn count(&self, method: &str) -> usize {
        self.hits().iter().filter(|h| h.method == method).count()
    }

    fn post_bodies(&self) -> Vec<String> {
        self.hits()
            .into_iter()
            .filter(|h| h.method == "POST")
            .map(|h| h.body)
            .collect()
    }

    fn set_healthy(&self, healthy: bool) {
        self.state.healthy.store(healthy, Ordering::SeqCst);
    }
}

impl Drop for App {
    fn drop(&mut self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn respond(
    state: Arc<AppState>,
    request: Request<Incoming>,
) -> Result<Response<OriginBody>, Infallible> {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let reply = |status: u16, text: String| {
        let mut response = Response::new(full(text));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        response
            .headers_mut()
            .insert("connection", "close".parse().unwrap());
        Ok(response)
    };
    if path == "/health" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let agent = request.headers().get("user-agent");
        *state.health_agent.lock().unwrap() =
            agent.map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        // Healthy is 204 here, so the check's expected status is taken
        // from health_check_status, not assumed.
        let status = if state.healthy.load(Ordering::SeqCst) {
            204
        } else {
            503
        };
        return reply(status, "health\n".into());
    }
    let body = request.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body).into_owned();
    state.hits.lock().unwrap().push(Hit {
        method,
        path: path.clone(),
        body,
    });
    if path == "/slow" {
        state.slow_arrived.notify_one();
        let permit = state.slow_release.acquire().await.unwrap();
        permit.forget();
    }
    reply(200, state.name.to_owned())
}

/// Labels of one address of one upstream.
fn labels(upstream: &str, address: &str) -> String {
    format!("{{upstream=\"{upstream}\",address=\"{address}\"}}")
}

fn series(name: &str, upstream: &str, address: impl std::fmt::Display) -> String {
    format!(
        "linkpush_upstream_{name}{}",
        labels(upstream, &address.to_string())
    )
}

fn failures(upstream: &str, address: impl std::fmt::Display, kind: &str) -> String {
    format!(
        "linkpush_upstream_failures_total{{upstream=\"{upstream}\",address=\"{address}\",kind=\"{kind}\"}}"
    )
}

fn retries(upstream: &str) -> String {
    format!("linkpush_upstream_retries_total{{upstream=\"{upstream}\"}}")
}

/// Scrape until `series` has the value `want`.
async fn wait_for_sample(port: u16, series: &str, want: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics_text(port).await;
        if metric_value(&text, series) == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never became {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `[metrics]` on `port`, the upstream `app` over `servers` with
/// `settings`, and a default site sending everything to it.
fn app_config(port: u16, servers: &[String], settings: &str) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("{s:?}")).collect();
    format!(
        "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
         [upstreams.app]\nservers = [{}]\n{settings}\n\
         [[sites]]\ndefault = true\nupstream = \"app\"\n",
        servers.join(", ")
    )
}

/// An origin.url for the proxy that no site uses.
async fn unused_origin() -> TestOrigin {
    TestOrigin::routes(Routes::new()).await
}

async fn get(client: &mut H2Client, path: &str) -> (StatusCode, String) {
    let reply = client.get(path).await;
    let body = reply.body.expect("a whole body");
    (reply.status, String::from_utf8_lossy(&body).into_owned())
}

async fn post(client: &mut H2Client, path: &str, body: &str) -> (StatusCode, String) {
    let request = client.request("POST", path).body(()).unwrap();
    let reply = client
        .exchange(request, Some(Bytes::from(body.to_owned())))
        .await;
    let body = reply.body.expect("a whole body");
    (reply.status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn round_robin_spreads_requests_evenly_over_the_addresses() {
    bounded(async {
        let (a, b) = (App::start("a").await, App::start("b").await);
        let unused = unused_origin().await;
        let port = free_port();
        let extra = app_config(port, &[a.url(), b.url()], "balance = \"round_robin\"\n");
        let proxy = TestProxy::start(&unused.url(), &extra).await;
        let mut client = proxy.h2(false).await;
        let mut answers = Vec::new();
        for _ in 0..10 {
            let (status, name) = get(&mut client, "/").await;
            assert_eq!(status, StatusCode::OK);
            answers.push(name);
        }
        assert_eq!((a.count("GET"), b.count("GET")), (5, 5), "{answers:?}");
        // In turn: no address is picked twice in a row.
        assert!(
            answers.windows(2).all(|pair| pair[0] != pair[1]),
            "{answers:?}"
        );
        assert!(unused.seen_paths().is_empty());
    })
    .await
}

#[tokio::test]
async fn least_outstanding_prefers_the_idle_address_over_one_with_a_slow_request() {
    bounded(async {
        let (a, b) = (App::start("a").await, App::start("b").await);
        let unused = unused_origin().await;
        let port = free_port();
        let extra = app_config(
            port,
            &[a.url(), b.url()],
            "balance = \"least_outstanding\"\n",
        );
        let proxy = TestProxy::start(&unused.url(), &extra).await;

        // A slow request holds one address.
        let mut slow_client = proxy.h2(false).await;
        let slow = tokio::spawn(async move { get(&mut slow_client, "/slow").await });
        let busy = tokio::select! {
            () = a.state.slow_arrived.notified() => &a,
            () = b.state.slow_arrived.notified() => &b,
        };
        let idle = if std::ptr::eq(busy, &a) { &b } else { &a };

        // Every request meanwhile goes to the other one (round robin would
        // send every second one to the busy address).
        let mut client = proxy.h2(false).await;
        for _ in 0..6 {
            let (status, name) = get(&mut client, "/").await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(name, idle.state.name, "sent to the busy address");
        }
        assert_eq!(idle.count("GET"), 6);
        let busy_hits = busy.hits();
        assert_eq!(busy_hits.len(), 1, "{busy_hits:?}");
        assert_eq!(busy_hits[0].path, "/slow");

        // Its in-flight gauge shows why.
        let metrics = metrics_text(port).await;
        let in_flight = |app: &App| metric_value(&metrics, &series("in_flight", "app", app.addr));
        assert_eq!((in_flight(busy), in_flight(idle)), (1.0, 0.0));

        busy.state.slow_release.add_permits(1);
        let (status, name) = slow.await.unwrap();
        assert_eq!((status, name.as_str()), (StatusCode::OK, busy.state.name));
    })
    .await
}

#[tokio::test]
async fn failover_retries_gets_on_another_address_but_never_a_post() {
    bounded(async {
        let (a, b) = (App::start("a").await, App::start("b").await);
        let unused = unused_origin().await;
        let port = free_port();
        // Never taken out of rotation: every request that picks the dead
        // address tries to connect there.
        let extra = app_config(port, &[a.url(), b.url()], "max_fails = 1000\n");
        let proxy = TestProxy::start(&unused.url(), &extra).await;
        let mut client = proxy.h2(false).await;

        let mut sent_posts = 0;
        let mut next_post = || {
            sent_posts += 1;
            format!("post-{sent_posts}")
        };
        let mut posts_ok = Vec::new();
        // Both alive.
        for _ in 0..2 {
            assert_eq!(get(&mut client, "/").await.0, StatusCode::OK);
            let body = next_post();
            assert_eq!(post(&mut client, "/submit", &body).await.0, StatusCode::OK);
            posts_ok.push(body);
        }
        assert_eq!((a.hits().len(), b.hits().len()), (2, 2));
        let b_gets = b.count("GET");

        a.kill().await;
        // GET, GET, POST, POST: of two requests in a row one is sent to
        // the dead address first, whatever the rotation's phase.
        let mut posts_failed = Vec::new();
        for _ in 0..4 {
            for _ in 0..2 {
                let (status, name) = get(&mut client, "/").await;
                assert_eq!(status, StatusCode::OK, "a GET failed: {name}");
                assert_eq!(name, "b");
            }
            for _ in 0..2 {
                let body = next_post();
                let (status, name) = post(&mut client, "/submit", &body).await;
                match status {
                    StatusCode::OK => {
                        assert_eq!(name, "b");
                        posts_ok.push(body);
                    }
                    StatusCode::BAD_GATEWAY => posts_failed.push(body),
                    other => panic!("POST {body}: unexpected {other}"),
                }
            }
        }
        assert!(
            !posts_failed.is_empty(),
            "no POST was sent to the dead address"
        );

        // Each POST reached at most one origin, once: those that got 502
        // reached none, the others exactly one.
        let mut seen: Vec<String> = a.post_bodies();
        seen.extend(b.post_bodies());
        let unique: BTreeSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "a POST was duplicated: {seen:?}");
        assert_eq!(
            unique,
            posts_ok.iter().collect::<BTreeSet<_>>(),
            "origins saw other POSTs than those answered 200"
        );
        assert_eq!(b.count("GET"), b_gets + 8);

        let metrics = metrics_text(port).await;
        let retried = metric_value(&metrics, &retries("app"));
        let refused = metric_value(&metrics, &failures("app", a.addr, "connect"));
        assert!(retried >= 1.0, "no GET was retried:\n{metrics}");
        // Every connect failure was a GET sent on or a POST answered 502.
        assert_eq!(refused, retried + posts_failed.len() as f64, "{metrics}");
        assert_eq!(
            metric_value(&metrics, &failures("app", b.addr, "connect")),
            0.0
        );
        assert_eq!(
            metric_value(&metrics, &series("ejections_total", "app", a.addr)),
            0.0
        );
        assert_eq!(metric_value(&metrics, &series("up", "app", a.addr)), 1.0);
    })
    .await
}

#[tokio::test]
async fn max_fails_takes_a_refusing_address_out_for_fail_timeout() {
    bounded(async {
        let live = App::start("live").await;
        let dead = refused_origin_url().await;
        let dead_addr = dead.strip_prefix("http://").unwrap().to_owned();
        let unused = unused_origin().await;
        let port = free_port();
        let fail_timeout = Duration::from_secs(1);
        let extra = app_config(
            port,
            &[dead.clone(), live.url()],
            "max_fails = 1\nfail_timeout = \"1s\"\n",
        );
        let proxy = TestProxy::start(&unused.url(), &extra).await;
        let mut client = proxy.h2(false).await;

        // One of the first two GETs picks the dead address, fails to
        // connect, takes it out and is sent on; after that nothing goes
        // there, POSTs included.
        let started = Instant::now();
        for _ in 0..2 {
            assert_eq!(get(&mut client, "/").await, (StatusCode::OK, "live".into()));
        }
        for i in 0..4 {
            assert_eq!(get(&mut client, "/").await, (StatusCode::OK, "live".into()));
            let body = format!("post-{i}");
            assert_eq!(
                post(&mut client, "/submit", &body).await,
                (StatusCode::OK, "live".into()),
                "a POST was sent to the address taken out"
            );
        }
        let metrics = metrics_text(port).await;
        assert!(
            started.elapsed() < fail_timeout,
            "too slow to tell: the address may be back already"
        );
        assert_eq!(live.count("GET"), 6);
        assert_eq!(live.count("POST"), 4);
        assert_eq!(
            metric_value(&metrics, &failures("app", &dead_addr, "connect")),
            1.0
        );
        assert_eq!(
            metric_value(&metrics, &series("requests_total", "app", &dead_addr)),
            1.0
        );
        assert_eq!(
            metric_value(&metrics, &series("ejections_total", "app", &dead_addr)),
            1.0
        );
        assert_eq!(
            metric_value(&metrics, &series("up", "app", &dead_addr)),
            0.0
        );
        assert_eq!(metric_value(&metrics, &series("up", "app", live.addr)), 1.0);
        assert_eq!(metric_value(&metrics, &retries("app")), 1.0);

        // After fail_timeout it is back in rotation, and tried again.
        tokio::time::sleep(fail_timeout.saturating_sub(started.elapsed())).await;
        wait_for_sample(port, &series("up", "app", &dead_addr), 1.0).await;
        for _ in 0..2 {
            assert_eq!(get(&mut client, "/").await, (StatusCode::OK, "live".into()));
        }
        let metrics = metrics_text(port).await;
        assert_eq!(
            metric_value(&metrics, &failures("app", &dead_addr, "connect")),
            2.0
        );
        assert_eq!(
            metric_value(&metrics, &series("ejections_total", "app", &dead_addr)),
            2.0
        );
    })
    .await
}

#[tokio::test]
async fn active_health_checks_keep_a_failing_address_out_until_it_passes() {
    bounded(async {
        let (a, b) = (App::start("a").await, App::start("b").await);
        a.set_healthy(false);
        let unused = unused_origin().await;
        let port = free_port();
        let extra = app_config(
            port,
            &[a.url(), b.url()],
            "health_check_path = \"/health\"\nhealth_check_interval = \"100ms\"\n\
             health_check_timeout = \"1s\"\nhealth_check_status = 204\n",
        );
        let proxy = TestProxy::start(&unused.url(), &extra).await;
        let up_a = series("up", "app", a.addr);
        wait_for_sample(port, &up_a, 0.0).await;
        assert_eq!(
            metric_value(&metrics_text(port).await, &series("up", "app", b.addr)),
            1.0
        );

        let mut client = proxy.h2(false).await;
        for _ in 0..6 {
            assert_eq!(get(&mut client, "/").await, (StatusCode::OK, "b".into()));
        }
        assert!(a.hits().is_empty(), "{:?}", a.hits());

        // Healthy again: back in rotation at a later check.
        let checks_before = a.state.health_checks.load(Ordering::SeqCst);
        a.set_healthy(true);
        wait_for_sample(port, &up_a, 1.0).await;
        assert!(a.state.health_checks.load(Ordering::SeqCst) > checks_before);
        let agent = a.state.health_agent.lock().unwrap().clone();
        assert_eq!(agent.as_deref(), Some("linkpush-health-check"));
        for _ in 0..6 {
            assert_eq!(get(&mut client, "/").await.0, StatusCode::OK);
        }
        assert_eq!((a.count("GET"), b.count("GET")), (3, 9));
        // The checks count as no request of the address.
        let metrics = metrics_text(port).await;
        assert_eq!(
            metric_value(&metrics, &series("requests_total", "app", a.addr)),
            3.0
        );
    })
    .await
}

#[tokio::test]
async fn a_route_reaches_a_unix_socket_upstream() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("app.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let text = format!("unix socket: {}", request.uri().path());
                        Ok::<_, Infallible>(Response::new(full(text)))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let tcp = TestOrigin::routes(Routes::new().route("/", Resp::html("tcp home"))).await;
        let port = free_port();
        let unix = format!("unix:{}", socket.display());
        let extra = format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [upstreams.sock]\nservers = [{unix:?}]\n\n\
             [[sites]]\ndefault = true\n\n\
             [[sites.routes]]\npath = \"/unix\"\nupstream = \"sock\"\n"
        );
        // The site's own upstream is origin.url's.
        let proxy = TestProxy::start(&tcp.url(), &extra).await;
        let mut client = proxy.h2(false).await;
        assert_eq!(
            get(&mut client, "/unix/hello").await,
            (StatusCode::OK, "unix socket: /unix/hello".into())
        );
        assert_eq!(
            get(&mut client, "/unix").await,
            (StatusCode::OK, "unix socket: /unix".into())
        );
        assert_eq!(
            get(&mut client, "/").await,
            (StatusCode::OK, "tcp home".into())
        );
        assert_eq!(tcp.seen_paths(), vec!["/"]);
        let metrics = metrics_text(port).await;
        assert_eq!(
            metric_value(&metrics, &series("requests_total", "sock", &unix)),
            2.0
        );
        assert_eq!(
            metric_value(&metrics, &series("requests_total", "origin", tcp.addr)),
            1.0
        );
        server.abort();
    })
    .await
}

#[tokio::test]
async fn metrics_count_requests_per_upstream_address() {
    bounded(async {
        let (a, b, c) = (
            App::start("a").await,
            App::start("b").await,
            App::start("c").await,
        );
        let unused = unused_origin().await;
        let port = free_port();
        let extra = format!(
            "[metrics]\nlisten = \"127.0.0.1:{port}\"\n\n\
             [upstreams.app]\nservers = [\"{}\", \"{}\"]\n\n\
             [upstreams.other]\nservers = [\"{}\"]\n\n\
             [[sites]]\ndefault = true\nupstream = \"app\"\n\n\
             [[sites.routes]]\npath = \"/other\"\nupstream = \"other\"\n",
            a.url(),
            b.url(),
            c.url()
        );
        let proxy = TestProxy::start(&unused.url(), &extra).await;
        let mut client = proxy.h2(false).await;
        for _ in 0..6 {
            assert_eq!(get(&mut client, "/").await.0, StatusCode::OK);
        }
        for _ in 0..2 {
            assert_eq!(
                get(&mut client, "/other/x").await,
                (StatusCode::OK, "c".into())
            );
        }
        let metrics = metrics_text(port).await;
        let value = |name: &str, upstream: &str, app: &App| {
            metric_value(&metrics, &series(name, upstream, app.addr))
        };
        assert_eq!(value("requests_total", "app", &a), 3.0);
        assert_eq!(value("requests_total", "app", &b), 3.0);
        assert_eq!(value("requests_total", "other", &c), 2.0);
        assert_eq!((a.hits().len(), b.hits().len(), c.hits().len()), (3, 3, 2));
        for (upstream, app) in [("app", &a), ("app", &b), ("other", &c)] {
            assert_eq!(value("in_flight", upstream, app), 0.0);
            assert_eq!(value("up", upstream, app), 1.0);
            assert_eq!(value("ejections_total", upstream, app), 0.0);
            for kind in ["connect", "timeout", "protocol"] {
                assert_eq!(
                    metric_value(&metrics, &failures(upstream, app.addr, kind)),
                    0.0
                );
            }
        }
        assert_eq!(metric_value(&metrics, &retries("app")), 0.0);
        assert_eq!(metric_value(&metrics, &retries("other")), 0.0);
        // Only the addresses of configured upstreams are listed.
        let listed = metrics
            .lines()
            .filter(|l| l.starts_with("linkpush_upstream_requests_total{"))
            .count();
        assert_eq!(listed, 4, "app (2), other, origin:\n{metrics}");
    })
    .await
}

/// An address that takes the connection and then fails the request: the
/// request is not sent anywhere else (it may have reached the origin), the
/// failure counts by its kind, and `max_fails` decides whether the address
/// goes out of rotation. `0` keeps it in whatever happens.
#[tokio::test]
async fn failures_after_connecting_are_never_resent_and_count_by_kind() {
    bounded(async {
        // Reads a request head, then closes without an answer.
        let closer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closer_addr = closer.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = closer.accept().await {
                tokio::spawn(async move {
                    use tokio::io::AsyncReadExt;
                    let mut head = [0u8; 4096];
                    let _ = stream.read(&mut head).await;
                });
            }
        });
        // Reads a request head and never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let silent_addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let b = App::start("b").await;
        let unused = unused_origin().await;
        let port = free_port();
        let extra = format!(
            "{}[upstreams.quiet]\nservers = [\"http://{silent_addr}\"]\nmax_fails = 0\n\
             [[sites.routes]]\npath = \"/quiet\"\nupstream = \"quiet\"\n\
             [timeouts]\norigin_response_header = \"300ms\"\n",
            app_config(
                port,
                &[format!("http://{closer_addr}"), b.url()],
                "max_fails = 1\nfail_timeout = \"10s\"\n",
            )
        );
        let proxy = TestProxy::start(&unused.url(), &extra).await;
        let mut client = proxy.h2(false).await;

        // The rotation starts at the closing address: 502, and the other
        // address is not asked instead.
        assert_eq!(get(&mut client, "/").await.0, StatusCode::BAD_GATEWAY);
        assert!(b.hits().is_empty(), "{:?}", b.hits());
        let metrics = metrics_text(port).await;
        assert_eq!(
            metric_value(&metrics, &failures("app", closer_addr, "protocol")),
            1.0
        );
        assert_eq!(
            metric_value(&metrics, &series("ejections_total", "app", closer_addr)),
            1.0
        );
        assert_eq!(metric_value(&metrics, &retries("app")), 0.0);
        // Out of rotation (max_fails = 1): the rest go to b.
        for _ in 0..4 {
            assert_eq!(get(&mut client, "/").await, (StatusCode::OK, "b".into()));
        }

        // No response head in time: 504, a timeout failure; with
        // max_fails = 0 the address stays in rotation.
        for _ in 0..2 {
            assert_eq!(
                get(&mut client, "/quiet").await.0,
                StatusCode::GATEWAY_TIMEOUT
            );
        }
        let metrics = metrics_text(port).await;
        assert_eq!(
            metric_value(&metrics, &failures("quiet", silent_addr, "timeout")),
            2.0
        );
        assert_eq!(
            metric_value(&metrics, &series("ejections_total", "quiet", silent_addr)),
            0.0
        );
        assert_eq!(
            metric_value(&metrics, &series("up", "quiet", silent_addr)),
            1.0
        );
    })
    .await
}

/// `[origin]`'s connection limit applies to each address of an upstream:
/// with a limit of one, each of two addresses holds one slow request at
/// once, and a third request waits for its address's only connection.
#[tokio::test]
async fn each_address_has_the_origin_connection_limit_of_its_own() {
    bounded(async {
        let (a, b) = (App::start("a").await, App::start("b").await);
        let unused = unused_origin().await;
        let port = free_port();
        // Keys before any table header belong to the test config's
        // `[origin]`, which comes last in its head.
        let extra = format!(
            "max_concurrent_requests = 1\n{}",
            app_config(port, &[a.url(), b.url()], "")
        );
        let proxy = TestProxy::start(&unused.url(), &extra).await;

        // One slow request per address, at once: a limit shared by the
        // upstream would hold the second back.
        let mut slow = Vec::new();
        for _ in 0..2 {
            let mut client = proxy.h2(false).await;
            slow.push(tokio::spawn(async move { get(&mut client, "/slow").await }));
        }
        a.state.slow_arrived.notified().await;
        b.state.slow_arrived.notified().await;

        // The next one is a's turn, and a's one connection is taken: it
        // waits, and reaches a once the slow answer is out.
        let mut client = proxy.h2(false).await;
        let third = tokio::spawn(async move { get(&mut client, "/").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(a.hits().len(), 1, "{:?}", a.hits());
        assert!(!third.is_finished());
        a.state.slow_release.add_permits(1);
        assert_eq!(third.await.unwrap(), (StatusCode::OK, "a".into()));
        b.state.slow_release.add_permits(1);
        for task in slow {
            assert_eq!(task.await.unwrap().0, StatusCode::OK);
        }
    })
    .await
}
