//! SIGHUP reloads of the real binary: requests in flight finish, new
//! connections get the new certificate and settings, an invalid file
//! changes nothing, listeners come and go without closing the others,
//! `tls.watch` needs no signal, and reloads under load lose no request.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::{CertificateDer, ServerName};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const BIN: &str = env!("CARGO_BIN_EXE_linkpush");

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A certificate for `localhost` with its own serial number.
struct Pem {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

fn certificate(serial: u64) -> Pem {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.serial_number = Some(rcgen::SerialNumber::from(serial));
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    Pem {
        cert: cert.pem(),
        key: key.serialize_pem(),
        der: cert.der().clone(),
    }
}

/// The running binary, its log, and its files.
struct Proxy {
    child: Child,
    log: Arc<Mutex<String>>,
    dir: tempfile::TempDir,
}

impl Proxy {
    fn config_path(&self) -> PathBuf {
        self.dir.path().join("proxy.toml")
    }

    fn write(&self, name: &str, text: &str) {
        // Written to a temporary name and renamed, as editors and certbot
        // do, so a reload never reads half a file.
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, self.dir.path().join(name)).unwrap();
    }

    fn install(&self, pem: &Pem) {
        self.write("cert.pem", &pem.cert);
        self.write("key.pem", &pem.key);
    }

    /// Start the binary with `config` (cert.pem/key.pem are next to it).
    async fn start(config: &str, pem: &Pem, wait_for: SocketAddr) -> Proxy {
        Proxy::start_with_flags(config, pem, wait_for, &[]).await
    }

    /// [`Proxy::start`], with command-line `flags` after `--config`.
    async fn start_with_flags(
        config: &str,
        pem: &Pem,
        wait_for: SocketAddr,
        flags: &[&str],
    ) -> Proxy {
        let dir = tempfile::tempdir().unwrap();
        let mut proxy = Proxy {
            child: Command::new("true").spawn().unwrap(),
            log: Arc::default(),
            dir,
        };
        proxy.install(pem);
        proxy.write("proxy.toml", config);
        let mut child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(proxy.config_path())
            .args(flags)
            .env_remove("RUST_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let log = proxy.log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines() {
                    let Ok(line) = line else { return };
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let _ = proxy.child.wait();
        proxy.child = child;
        proxy.wait_listening(wait_for).await;
        proxy
    }

    async fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if TcpStream::connect(addr).await.is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("linkpush exited early: {status}\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("linkpush did not listen on {addr}\n{}", self.log());
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.log().matches(needle).count()
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGHUP, then wait for the outcome to be logged: `Ok` with the
    /// reload's duration as logged, or `Err` with the failure line.
    async fn reload(&self) -> Result<f64, String> {
        let ok = self.count("configuration reloaded");
        let failed = self.count("reload failed");
        self.signal("HUP");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let log = self.log();
            if log.matches("configuration reloaded").count() > ok {
                let line = log
                    .lines()
                    .rev()
                    .find(|l| l.contains("configuration reloaded"))
                    .unwrap();
                let ms = line
                    .split("elapsed_ms=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|ms| ms.parse().ok())
                    .unwrap_or_else(|| panic!("no elapsed_ms in {line}"));
                return Ok(ms);
            }
            if log.matches("reload failed").count() > failed {
                // The failure and the problems listed under it.
                let at = log.rfind("reload failed").unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Err(self.log()[at..].to_string());
            }
            assert!(Instant::now() < deadline, "no reload outcome:\n{log}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TLS client trusting each of `certs`; returns the stream and the
/// certificate the proxy presented.
async fn connect(
    addr: SocketAddr,
    certs: &[&Pem],
    alpn: &[u8],
) -> (
    tokio_rustls::client::TlsStream<TcpStream>,
    CertificateDer<'static>,
) {
    let mut roots = rustls::RootCertStore::empty();
    for pem in certs {
        roots.add(pem.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
    (tls, presented)
}

async fn h2_client(addr: SocketAddr, certs: &[&Pem]) -> (H2Client, CertificateDer<'static>) {
    let (tls, presented) = connect(addr, certs, b"h2").await;
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let client = H2Client::from_parts(send, format!("localhost:{}", addr.port()));
    (client, presented)
}

/// An origin with a page that links one stylesheet, the stylesheet, and
/// a page that takes two seconds.
async fn origin() -> TestOrigin {
    TestOrigin::start(Arc::new(|request| {
        Box::pin(async move {
            match request.uri().path() {
                "/slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Resp::new(200, vec![b's'; 100_000]).into_response()
                }
                "/page" => Resp::html("<p>page</p>")
                    .link("</a.css>; rel=preload; as=style")
                    .into_response(),
                "/a.css" => Resp::new(200, "a{}").into_response(),
                _ => Resp::new(404, "no\n").into_response(),
            }
        })
    }))
    .await
}

fn config(listen: &[(SocketAddr, bool)], origin: &str, extra: &str) -> String {
    let mut text = String::new();
    for (address, tls) in listen {
        text.push_str(&format!(
            "[[listen]]\naddress = \"{address}\"\ntls = {tls}\n\n"
        ));
    }
    text.push_str(&format!(
        "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n\n[origin]\nurl = \"{origin}\"\n\n\
         [server]\nworkers = 2\n\n{extra}\n"
    ));
    text
}

#[tokio::test]
async fn a_reload_finishes_requests_in_flight_and_gives_new_connections_the_new_certificate_and_settings(
) {
    let origin = origin().await;
    let addr = free_addr();
    let (first, second) = (certificate(1001), certificate(2002));
    let proxy = Proxy::start(
        &config(&[(addr, true)], &origin.url(), "[push]\nexplain = false\n"),
        &first,
        addr,
    )
    .await;
    let both = [&first, &second];

    let (mut old, presented) = h2_client(addr, &both).await;
    assert_eq!(presented, first.der);
    let before = old.get("/page").await;
    assert_eq!(before.status, 200);
    assert!(before.headers.get("x-push-decision").is_none());

    // A request in flight across the reload.
    let (mut slow_client, _) = h2_client(addr, &both).await;
    let slow = tokio::spawn(async move { slow_client.get("/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;

    proxy.install(&second);
    proxy.write(
        "proxy.toml",
        &config(&[(addr, true)], &origin.url(), "[push]\nexplain = true\n"),
    );
    let took = proxy.reload().await.expect("reload");
    eprintln!("reload took {took:.2} ms");

    // New connections: the new certificate and the new behaviour.
    let (mut new, presented) = h2_client(addr, &both).await;
    assert_eq!(
        presented, second.der,
        "a new connection got the old certificate"
    );
    let after = new.get("/page").await;
    assert_eq!(after.status, 200);
    assert!(
        after.headers.get("x-push-decision").is_some(),
        "the new setting (push.explain) is not in effect: {:?}",
        after.headers
    );
    assert_eq!(after.pushed_paths(), vec!["/a.css"]);

    // The established connection still works, on the settings it began with.
    let again = old.get("/page").await;
    assert_eq!(again.status, 200);
    assert!(again.headers.get("x-push-decision").is_none());

    // The request that was in flight completed, whole.
    let slow = bounded(slow).await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.body.expect("slow body").len(), 100_000);
}

#[tokio::test]
async fn an_invalid_reload_keeps_the_running_configuration_and_says_why() {
    let origin = origin().await;
    let addr = free_addr();
    let first = certificate(1);
    let good = config(&[(addr, true)], &origin.url(), "[push]\nexplain = true\n");
    let proxy = Proxy::start(&good, &first, addr).await;

    // A bad value.
    proxy.write(
        "proxy.toml",
        &config(
            &[(addr, true)],
            &origin.url(),
            "[push]\nexplain = false\n[timeouts]\norigin_connect = \"soon\"\n",
        ),
    );
    let error = proxy
        .reload()
        .await
        .expect_err("an invalid file was applied");
    assert!(error.contains("timeouts.origin_connect"), "{error}");

    // A key that does not belong to the certificate.
    proxy.write("proxy.toml", &good);
    proxy.write("key.pem", &certificate(2).key);
    let error = proxy
        .reload()
        .await
        .expect_err("a mismatched key was applied");
    assert!(error.contains("tls.key"), "{error}");

    // Still the first configuration and certificate.
    let (mut client, presented) = h2_client(addr, &[&first]).await;
    assert_eq!(presented, first.der);
    let page = client.get("/page").await;
    assert_eq!(page.status, 200);
    assert!(page.headers.get("x-push-decision").is_some());

    // And a good file after bad ones is applied.
    proxy.install(&first);
    proxy.write(
        "proxy.toml",
        &config(&[(addr, true)], &origin.url(), "[push]\nexplain = false\n"),
    );
    proxy
        .reload()
        .await
        .expect("a valid file after invalid ones");
    let (mut client, _) = h2_client(addr, &[&first]).await;
    assert!(client
        .get("/page")
        .await
        .headers
        .get("x-push-decision")
        .is_none());
}

/// GET over an already open cleartext HTTP/1.1 connection.
async fn h1_get(stream: &mut TcpStream, path: &str) -> String {
    h1_get_host(stream, "localhost", path).await
}

async fn h1_get_host(stream: &mut TcpStream, host: &str, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    bounded(async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "connection closed");
            response.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&response).into_owned()
}

#[tokio::test]
async fn listeners_come_and_go_on_reload_without_closing_the_ones_that_stay() {
    let origin = origin().await;
    let (kept, removed, added) = (free_addr(), free_addr(), free_addr());
    let pem = certificate(7);
    let proxy = Proxy::start(
        &config(&[(kept, false), (removed, false)], &origin.url(), ""),
        &pem,
        kept,
    )
    .await;
    let mut open = TcpStream::connect(kept).await.unwrap();
    assert!(h1_get(&mut open, "/page").await.starts_with("HTTP/1.1 200"));
    let mut on_removed = TcpStream::connect(removed).await.unwrap();
    assert!(h1_get(&mut on_removed, "/page")
        .await
        .starts_with("HTTP/1.1 200"));

    proxy.write(
        "proxy.toml",
        &config(&[(kept, false), (added, false)], &origin.url(), ""),
    );
    proxy.reload().await.expect("reload");

    // The connection on the kept listener goes on; new ones are accepted
    // there and on the added address; the removed one is closed.
    assert!(h1_get(&mut open, "/page").await.starts_with("HTTP/1.1 200"));
    let mut fresh = TcpStream::connect(kept).await.unwrap();
    assert!(h1_get(&mut fresh, "/page")
        .await
        .starts_with("HTTP/1.1 200"));
    let mut new = TcpStream::connect(added).await.unwrap();
    assert!(h1_get(&mut new, "/page").await.starts_with("HTTP/1.1 200"));
    let refused = TcpStream::connect(removed).await;
    assert!(refused.is_err(), "the removed listener still accepts");
    // A connection it accepted before finishes its requests.
    assert!(h1_get(&mut on_removed, "/page")
        .await
        .starts_with("HTTP/1.1 200"));

    // An address that cannot be bound fails the reload and changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_addr = taken.local_addr().unwrap();
    proxy.write(
        "proxy.toml",
        &config(&[(kept, false), (taken_addr, false)], &origin.url(), ""),
    );
    let error = proxy
        .reload()
        .await
        .expect_err("a taken address was accepted");
    assert!(
        error.contains(&format!("cannot listen on {taken_addr}")),
        "{error}"
    );
    let mut still = TcpStream::connect(added).await.unwrap();
    assert!(h1_get(&mut still, "/page")
        .await
        .starts_with("HTTP/1.1 200"));
}

#[tokio::test]
async fn a_reload_adds_sites_and_routes_and_keeps_the_counters_of_an_unchanged_upstream() {
    let origin = origin().await;
    let other = origin_b().await;
    let (plain, metrics) = (free_addr(), free_addr());
    let pem = certificate(9);
    let extra = format!("[metrics]\nlisten = \"{metrics}\"\n");
    let proxy = Proxy::start(
        &config(&[(plain, false)], &origin.url(), &extra),
        &pem,
        plain,
    )
    .await;
    let mut open = TcpStream::connect(plain).await.unwrap();
    assert!(h1_get_host(&mut open, "anything.example", "/page")
        .await
        .starts_with("HTTP/1.1 200"));
    let counted = |text: &str| {
        metric_value(
            text,
            &format!(
                "linkpush_upstream_requests_total{{upstream=\"origin\",address=\"{}\"}}",
                origin.addr
            ),
        )
    };
    assert_eq!(counted(&plain_get_soon(metrics, "/metrics").await), 1.0);

    let sites = format!(
        "{extra}[upstreams.b]\nservers = [\"{}\"]\n\
         [[sites]]\nnames = [\"shop.example\"]\n\
         [[sites.routes]]\npath = \"/b\"\nupstream = \"b\"\n",
        other.url()
    );
    proxy.write(
        "proxy.toml",
        &config(&[(plain, false)], &origin.url(), &sites),
    );
    proxy.reload().await.expect("reload");

    // New connections: the site's own paths and its route; other hosts
    // are no site's now.
    let mut fresh = TcpStream::connect(plain).await.unwrap();
    let page = h1_get_host(&mut fresh, "shop.example", "/page").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let routed = h1_get_host(&mut fresh, "shop.example", "/b/x").await;
    assert!(
        routed.starts_with("HTTP/1.1 200") && routed.ends_with("origin b"),
        "{routed}"
    );
    let mut third = TcpStream::connect(plain).await.unwrap();
    let unknown = h1_get_host(&mut third, "anything.example", "/page").await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    // `origin` kept its settings, so its counters went on.
    assert_eq!(counted(&plain_get_soon(metrics, "/metrics").await), 2.0);
}

async fn origin_b() -> TestOrigin {
    TestOrigin::start(Arc::new(|_request| {
        Box::pin(async move { Resp::new(200, "origin b").into_response() })
    }))
    .await
}

#[tokio::test]
async fn a_reload_turns_the_proxy_protocol_on_and_the_access_log_names_the_client() {
    let origin = origin().await;
    let listen = free_addr();
    let plain = config(&[(listen, false)], &origin.url(), "");
    let proxy = Proxy::start(&plain, &certificate(9), listen).await;
    let mut before = TcpStream::connect(listen).await.unwrap();
    assert!(h1_get(&mut before, "/page")
        .await
        .starts_with("HTTP/1.1 200"));

    let behind_a_balancer = plain.replace(
        "tls = false\n",
        "tls = false\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\"]\n",
    );
    proxy.write("proxy.toml", &behind_a_balancer);
    proxy.reload().await.expect("reload");
    // Once the reload is logged, every worker reads the header.
    let mut tcp = TcpStream::connect(listen).await.unwrap();
    tcp.write_all(b"PROXY TCP4 203.0.113.9 127.0.0.1 4242 80\r\n")
        .await
        .unwrap();
    let reply = h1_get(&mut tcp, "/page").await;
    assert!(
        reply.starts_with("HTTP/1.1 200"),
        "the header is not read: {reply}"
    );
    let seen = origin.seen();
    let last = seen.last().expect("a request");
    assert_eq!(last.headers["x-forwarded-for"], "203.0.113.9");
    // The connection from before the reload goes on as it began.
    assert!(h1_get(&mut before, "/page")
        .await
        .starts_with("HTTP/1.1 200"));
    // A new one without a header is closed unanswered.
    let mut bare = TcpStream::connect(listen).await.unwrap();
    bare.write_all(b"GET /page HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = bounded(bare.read_to_end(&mut reply)).await;
    assert!(reply.is_empty(), "{}", String::from_utf8_lossy(&reply));
    // The access log names the client, not the balancer.
    bounded(async {
        while proxy.count("203.0.113.9:4242 - - [") == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn tls_watch_picks_up_a_renewed_certificate_without_a_signal() {
    let origin = origin().await;
    let addr = free_addr();
    let (first, second) = (certificate(31), certificate(32));
    let proxy = Proxy::start(
        &config(&[(addr, true)], &origin.url(), "").replace("[tls]\n", "[tls]\nwatch = true\n"),
        &first,
        addr,
    )
    .await;
    let (_, presented) = connect(addr, &[&first, &second], b"h2").await;
    assert_eq!(presented, first.der);

    // As certbot renews: new files, then the link to them.
    proxy.install(&second);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (_, presented) = connect(addr, &[&first, &second], b"h2").await;
        if presented == second.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still the old certificate:\n{}",
            proxy.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(proxy.count("the certificate or key file changed") >= 1);
}

/// 50 reloads while h2load keeps four connections busy and another client
/// opens a new connection for every request: no request fails. Each reload
/// switches `push.explain`, so each is a real change; h2load's connections
/// stay on the generation they began with, the other client's meet every
/// generation as it comes.
#[tokio::test]
async fn fifty_reloads_under_load_lose_no_request() {
    if which("h2load").is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "h2load (nghttp2-client) is required in CI"
        );
        eprintln!("h2load not installed; skipping");
        return;
    }
    let origin = origin().await;
    let addr = free_addr();
    let pem = certificate(50);
    let proxy = Proxy::start(
        &config(
            &[(addr, true)],
            &origin.url(),
            "[push]\nexplain = true\n[log]\naccess_log = false\n",
        ),
        &pem,
        addr,
    )
    .await;
    let url = format!("https://localhost:{}/page", addr.port());
    let load = Command::new("h2load")
        .args(["-D", "8", "-c", "4", "-m", "8", "-t", "1", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let churn = tokio::spawn({
        let stop = stop.clone();
        let pem = certificate(0);
        let trusted = Pem {
            cert: pem.cert,
            key: pem.key,
            der: proxy_cert(&proxy),
        };
        async move {
            let mut served = 0;
            while !stop.is_cancelled() {
                let (mut client, _) = h2_client(addr, &[&trusted]).await;
                let page = client.get("/page").await;
                assert_eq!(page.status, 200, "a request on a new connection failed");
                served += 1;
            }
            served
        }
    });
    let mut durations = Vec::new();
    tokio::time::sleep(Duration::from_millis(300)).await;
    for n in 0..50 {
        let explain = if n % 2 == 0 { "false" } else { "true" };
        proxy.write(
            "proxy.toml",
            &config(
                &[(addr, true)],
                &origin.url(),
                &format!("[push]\nexplain = {explain}\n[log]\naccess_log = false\n"),
            ),
        );
        durations.push(proxy.reload().await.expect("reload"));
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    stop.cancel();
    let new_connections = bounded(churn).await.expect("new-connection client");
    let output = bounded(tokio::task::spawn_blocking(move || load.wait_with_output()))
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| panic!("no summary from h2load:\n{stdout}"));
    let field = |name: &str| -> u64 {
        line.split(',')
            .find(|part| part.trim().ends_with(name))
            .and_then(|part| part.split_whitespace().next())
            .and_then(|n| n.trim_start_matches("requests:").trim().parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {line}"))
    };
    durations.sort_by(f64::total_cmp);
    eprintln!(
        "{line}\n{new_connections} requests on new connections\n\
         reload time over 50 reloads: median {:.2} ms, max {:.2} ms",
        durations[25], durations[49]
    );
    assert!(new_connections >= 50, "{new_connections}");
    assert!(field("succeeded") > 1000, "{stdout}");
    assert_eq!(field("failed"), 0, "{stdout}");
    assert_eq!(field("errored"), 0, "{stdout}");
    assert_eq!(field("timeout"), 0, "{stdout}");
    assert_eq!(proxy.count("configuration reloaded"), 50);
}

/// The certificate the running proxy was started with.
fn proxy_cert(proxy: &Proxy) -> CertificateDer<'static> {
    let pem = std::fs::read(proxy.dir.path().join("cert.pem")).unwrap();
    rustls::pki_types::pem::PemObject::from_pem_slice(&pem).unwrap()
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|path| Path::new(path).is_file())
    })
}

/// GET `path` from a cleartext HTTP/1.1 endpoint (the metrics listener);
/// `None` when nothing listens there.
async fn plain_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: m\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut body = String::new();
    bounded(stream.read_to_string(&mut body)).await.ok()?;
    Some(body)
}

/// GET from an endpoint that may not listen yet (the metrics endpoint
/// starts just after the proxy's listeners).
async fn plain_get_soon(addr: SocketAddr, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(answer) = plain_get(addr, path).await {
            return answer;
        }
        assert!(Instant::now() < deadline, "nothing answers at {addr}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn reloads_are_counted_counters_survive_them_and_the_metrics_endpoint_moves() {
    let origin = origin().await;
    let (addr, first_metrics, second_metrics) = (free_addr(), free_addr(), free_addr());
    let pem = certificate(77);
    let with = |metrics: SocketAddr, workers: usize| {
        config(
            &[(addr, true)],
            &origin.url(),
            &format!("[metrics]\nlisten = \"{metrics}\"\n"),
        )
        .replace("workers = 2", &format!("workers = {workers}"))
    };
    let proxy = Proxy::start(&with(first_metrics, 2), &pem, addr).await;
    let (mut client, _) = h2_client(addr, &[&pem]).await;
    for _ in 0..3 {
        assert_eq!(client.get("/page").await.status, 200);
    }
    let served = r#"linkpush_requests_total{protocol="HTTP/2",class="2xx"}"#;
    let ok = r#"linkpush_config_reloads_total{result="ok"}"#;
    let error = r#"linkpush_config_reloads_total{result="error"}"#;
    let before = plain_get_soon(first_metrics, "/metrics").await;
    assert_eq!(metric_value(&before, served), 3.0);
    assert_eq!(metric_value(&before, ok), 0.0);

    proxy.write("proxy.toml", "[origin]\nurl = 5\n");
    proxy.reload().await.expect_err("invalid");
    // The metrics endpoint moves, and `server.workers` waits for a restart.
    proxy.write("proxy.toml", &with(second_metrics, 3));
    proxy.reload().await.expect("reload");
    assert!(
        proxy.count("server.workers changed") == 1,
        "{}",
        proxy.log()
    );

    assert!(
        plain_get(first_metrics, "/metrics").await.is_none(),
        "the old metrics address still answers"
    );
    let after = plain_get(second_metrics, "/metrics").await.expect("moved");
    assert_eq!(metric_value(&after, served), 3.0, "counters were reset");
    assert_eq!(metric_value(&after, ok), 1.0);
    assert_eq!(metric_value(&after, error), 1.0);
    let ready = plain_get(second_metrics, "/readyz").await.expect("readyz");
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");

    // Readiness checks the origin of the newest configuration.
    let dead = free_addr();
    proxy.write(
        "proxy.toml",
        &with(second_metrics, 2).replace(&origin.url(), &format!("http://{dead}")),
    );
    proxy.reload().await.expect("reload");
    let ready = plain_get(second_metrics, "/readyz").await.expect("readyz");
    assert!(ready.starts_with("HTTP/1.1 503"), "{ready}");
}

#[tokio::test]
async fn readiness_turns_to_503_while_sigterm_drains_requests_in_flight() {
    let origin = origin().await;
    let (addr, metrics) = (free_addr(), free_addr());
    let pem = certificate(88);
    let mut proxy = Proxy::start(
        &config(
            &[(addr, true)],
            &origin.url(),
            &format!("[metrics]\nlisten = \"{metrics}\"\n"),
        ),
        &pem,
        addr,
    )
    .await;
    let ready = plain_get_soon(metrics, "/readyz").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let (mut client, _) = h2_client(addr, &[&pem]).await;
    let slow = tokio::spawn(async move { client.get("/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let answer = plain_get(metrics, "/readyz")
            .await
            .expect("readyz while draining");
        if answer.starts_with("HTTP/1.1 503") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready while draining: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Not ready, but alive and still counting while it drains.
    for path in ["/healthz", "/metrics"] {
        let answer = plain_get(metrics, path)
            .await
            .expect("answers while draining");
        assert!(answer.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    }
    let slow = bounded(slow).await.unwrap();
    assert_eq!(slow.status, 200);
    assert_eq!(slow.body.expect("slow body").len(), 100_000);
    let status = bounded(async {
        loop {
            if let Some(status) = proxy.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(status.success(), "{status}");
}

/// A reload reads the file again and applies the command-line flags over it
/// once more: a flag still wins over what the file now says.
#[tokio::test]
async fn a_reload_applies_the_command_line_flags_over_the_new_file() {
    let (flagged, filed) = (origin().await, origin_b().await);
    let plain = free_addr();
    let pem = certificate(11);
    let flag = flagged.url();
    let proxy = Proxy::start_with_flags(
        &config(&[(plain, false)], &filed.url(), ""),
        &pem,
        plain,
        &["--origin", &flag],
    )
    .await;
    let mut first = TcpStream::connect(plain).await.unwrap();
    assert!(h1_get(&mut first, "/page")
        .await
        .starts_with("HTTP/1.1 200"));
    proxy.write(
        "proxy.toml",
        &config(&[(plain, false)], &filed.url(), "[push]\nexplain = true\n"),
    );
    proxy.reload().await.expect("reload");
    let mut fresh = TcpStream::connect(plain).await.unwrap();
    let page = h1_get(&mut fresh, "/page").await;
    // The flagged origin answers /page; the file's would say "origin b".
    assert!(
        page.starts_with("HTTP/1.1 200") && page.ends_with("<p>page</p>"),
        "{page}"
    );
    // And the reload did take the file: its new [push] setting applies.
    assert!(page.contains("x-push-decision"), "{page}");
}
