//! The access log: its own sink, on whatever the diagnostic level; typed
//! JSON and escaped text lines; a file that is reopened after rotation; and
//! which diagnostic filter applies. Most tests run the built binary.

mod support;

use std::sync::Arc;

use bytes::Bytes;
use linkpush::config::{LogConfig, LogFormat};
use rustls::pki_types::ServerName;
use support::binary::{read_lossy, wait_for_line, Process, BIN};
use support::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A page that pushes one stylesheet, and the stylesheet.
async fn origin_with_a_push() -> TestOrigin {
    let page = Resp::html("<p>page</p>").link("</css/app.css>; rel=preload; as=style");
    TestOrigin::routes(Routes::new().route("/", page).route(
        "/css/app.css",
        Resp::new(200, "body{}").header("content-type", "text/css"),
    ))
    .await
}

/// An HTTP/2 client over TLS to the process, with push enabled.
async fn h2_client(process: &Process) -> H2Client {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(process.cert.client_config(&[b"h2"])));
    let tcp = tokio::net::TcpStream::connect(process.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::Builder::new()
        .enable_push(true)
        .handshake::<_, Bytes>(tls)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    H2Client::from_parts(send, format!("localhost:{}", process.addr.port()))
}

/// One HTTP/1.1 request over the cleartext listener, as raw bytes; the
/// response, whole.
async fn h1_raw(process: &Process, request: &[u8]) -> String {
    let mut tcp = tokio::net::TcpStream::connect(process.plain_addr)
        .await
        .unwrap();
    tcp.write_all(request).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

async fn get_plain(process: &Process, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    h1_raw(process, request.as_bytes()).await
}

#[tokio::test]
async fn access_log_is_written_at_log_level_warn() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let process = Process::start(&origin.url(), "", &["--log-level", "warn"], &[]).await;
        let response = get_plain(&process, "/").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let line = wait_for_line(
            "access",
            || process.stdout(),
            |l| l.contains("\"GET localhost / HTTP/1.1\" 200"),
        )
        .await;
        assert!(line.contains(" tls=- alpn=- "), "{line}");
        // The level did apply to the diagnostic log.
        assert!(
            !process.stdout().contains("listening on"),
            "{}",
            process.stdout()
        );
    })
    .await;
}

#[tokio::test]
async fn no_access_log_when_access_log_is_false() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let mut process =
            Process::start(&origin.url(), "[log]\naccess_log = false\n", &[], &[]).await;
        let response = get_plain(&process, "/").await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        // Served means written, had it been on: the response is complete
        // once the client reads the end of the connection. How the process
        // exits is for tests/cli.rs.
        process.stop().await;
        let stdout = process.stdout();
        // The diagnostic log is still there, at info.
        assert!(stdout.contains("listening on"), "{stdout}");
        assert!(!stdout.contains("HTTP/1.1\" 200"), "{stdout}");
        assert!(!stdout.contains("GET"), "{stdout}");
    })
    .await;
}

#[test]
fn check_rejects_a_misspelt_level_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("proxy.toml");
    std::fs::write(
        &path,
        "[origin]\nurl = \"http://127.0.0.1:8080\"\n\n[tls]\nself_signed = true\n\n[log]\nlevel = \"infox\"\n",
    )
    .unwrap();
    let output = std::process::Command::new(BIN)
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("  - log.level: \"infox\" is not a level; expected a level"),
        "{stderr}"
    );

    let output = std::process::Command::new(BIN)
        .args(["check", "--origin", "http://127.0.0.1:1", "--self-signed"])
        .args(["--log-level", "linkpush"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("  - --log-level: \"linkpush\" is not a level"),
        "{stderr}"
    );
    assert!(stderr.contains("write \"linkpush=trace\""), "{stderr}");
}

#[tokio::test]
async fn json_line_is_typed_with_pushes_tls_and_client_headers_as_sent() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let process = Process::start(&origin.url(), "[log]\nformat = \"json\"\n", &[], &[]).await;
        let mut client = h2_client(&process).await;
        let user_agent = b"agent \"quoted\" \\back\\slash\t\xffend";
        let referer = "https://example.com/?q=\"}{\"status\":1";
        let request = client
            .request("GET", "/")
            .header(
                "user-agent",
                http::HeaderValue::from_bytes(user_agent).unwrap(),
            )
            .header("referer", referer)
            .body(())
            .unwrap();
        let exchange = client.exchange(request, None).await;
        assert_eq!(exchange.status, 200);
        assert_eq!(exchange.pushed_paths(), ["/css/app.css"]);

        let parsed = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok();
        let is_page = |line: &str| parsed(line).is_some_and(|v| v["path"] == "/");
        let line = wait_for_line("access", || process.stdout(), is_page).await;
        let page = parsed(&line).unwrap();
        assert_eq!(page["status"], 200);
        assert!(page["status"].is_u64() && page["bytes"].is_u64() && page["conn"].is_u64());
        assert_eq!(page["bytes"], 11);
        assert!(
            page["duration_ms"].is_f64() || page["duration_ms"].is_u64(),
            "{line}"
        );
        assert!(page["origin_ms"].is_number(), "{line}");
        assert_eq!(page["upstream"], origin.addr.to_string(), "{line}");
        assert_eq!(page["pushes"], serde_json::json!(["/css/app.css"]));
        assert_eq!(page["pushed"], false);
        assert_eq!(page["protocol"], "HTTP/2");
        assert_eq!(page["tls_version"], "TLSv1.3");
        assert_eq!(page["alpn"], "h2");
        assert_eq!(page["method"], "GET");
        assert_eq!(
            page["authority"],
            format!("localhost:{}", process.addr.port())
        );
        assert_eq!(page["error"], serde_json::Value::Null);
        assert_eq!(
            page["user_agent"],
            "agent \"quoted\" \\back\\slash\t\u{fffd}end"
        );
        assert_eq!(page["referer"], referer);
        let id = page["request_id"].as_str().unwrap();
        assert!(
            id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
            "{id}"
        );
        let time = page["time"].as_str().unwrap();
        assert!(
            humantime::parse_rfc3339(time).is_ok() && time.ends_with('Z'),
            "{time}"
        );
        assert_eq!(time.len(), "2025-06-01T12:00:00.123Z".len(), "{time}");

        let is_push = |line: &str| parsed(line).is_some_and(|v| v["path"] == "/css/app.css");
        let line = wait_for_line("push", || process.stdout(), is_push).await;
        let push = parsed(&line).unwrap();
        assert_eq!(push["pushed"], true);
        assert_eq!(push["upstream"], origin.addr.to_string(), "{line}");
        assert_eq!(push["pushes"], serde_json::json!([]));
        assert_eq!(push["conn"], page["conn"]);
        assert_ne!(push["request_id"], page["request_id"]);
    })
    .await;
}

#[tokio::test]
async fn text_line_escapes_what_a_client_sent() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let process = Process::start(&origin.url(), "", &[], &[]).await;
        let request = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
            User-Agent: x\" 200 0 \"-\" \"y \\ \xff\r\nReferer: /a\"b\r\n\r\n";
        let response = h1_raw(&process, request).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let line = wait_for_line(
            "access",
            || process.stdout(),
            |l| l.contains("\"GET localhost / HTTP/1.1\""),
        )
        .await;
        let expected = " 200 11 \"/a\\\"b\" \"x\\\" 200 0 \\\"-\\\" \\\"y \\\\ \u{fffd}\" ";
        assert!(line.contains(expected), "{line}\nwanted {expected}");
        // HTTP/1.1 has no push.
        assert!(line.contains(" pushed=false pushes=- "), "{line}");
    })
    .await;
}

#[tokio::test]
async fn access_log_file_is_reopened_on_sigusr1_and_sighup_after_rotation() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let process = Process::start(
            &origin.url(),
            "[log]\naccess_log_path = \"access.log\"\n",
            &[],
            &[],
        )
        .await;
        // Relative to the config file's directory.
        let log = process.path("access.log");
        let rotated = process.path("access.log.1");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&log).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o640 & !umask(), "{mode:o}");
        }
        get_plain(&process, "/?before").await;
        wait_for_line("access", || read_lossy(&log), |l| l.contains("/?before")).await;

        std::fs::rename(&log, &rotated).unwrap();
        process.signal("USR1");
        wait_for_line(
            "reopened",
            || process.stdout(),
            |l| l.contains("access log reopened"),
        )
        .await;
        get_plain(&process, "/?after").await;
        wait_for_line("access", || read_lossy(&log), |l| l.contains("/?after")).await;

        let old = read_lossy(&rotated);
        assert_eq!(old.lines().count(), 1, "{old}");
        assert!(old.contains("/?before"), "{old}");
        let new = read_lossy(&log);
        assert_eq!(new.lines().count(), 1, "{new}");

        // A reload (SIGHUP) opens the file afresh too.
        let second = process.path("access.log.2");
        std::fs::rename(&log, &second).unwrap();
        process.signal("HUP");
        wait_for_line(
            "reloaded",
            || process.stdout(),
            |l| l.contains("configuration reloaded"),
        )
        .await;
        get_plain(&process, "/?third").await;
        wait_for_line("access", || read_lossy(&log), |l| l.contains("/?third")).await;
        let moved = read_lossy(&second);
        assert!(
            moved.contains("/?after") && !moved.contains("/?third"),
            "{moved}"
        );
        assert_eq!(read_lossy(&log).lines().count(), 1);
        // Nothing went to standard output.
        assert!(
            !process.stdout().contains("/?before"),
            "{}",
            process.stdout()
        );
    })
    .await;
}

/// The process's umask, which the file's 0640 is subject to.
#[cfg(unix)]
fn umask() -> u32 {
    let output = std::process::Command::new("sh")
        .args(["-c", "umask"])
        .output()
        .unwrap();
    u32::from_str_radix(String::from_utf8_lossy(&output.stdout).trim(), 8).unwrap()
}

/// One request, served and logged: by then the process has written its
/// start-up lines.
async fn serve_one(process: &Process) {
    let response = get_plain(process, "/").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let logged = |line: &str| line.contains("\"GET localhost / HTTP/1.1\" 200");
    wait_for_line("access", || process.stdout(), logged).await;
}

#[tokio::test]
async fn bad_rust_log_warns_and_logs_at_info() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let process = Process::start(&origin.url(), "", &[], &[("RUST_LOG", "infox")]).await;
        serve_one(&process).await;
        let stderr = process.stderr();
        assert!(
            stderr.contains("ignoring RUST_LOG: \"infox\" is not a level"),
            "{stderr}"
        );
        assert!(
            process.stdout().contains("listening on"),
            "{}",
            process.stdout()
        );
    })
    .await;
}

#[tokio::test]
async fn rust_log_applies_only_when_no_level_is_configured() {
    bounded(async {
        let origin = origin_with_a_push().await;
        // RUST_LOG=warn alone: no info lines.
        let quiet = Process::start(&origin.url(), "", &[], &[("RUST_LOG", "warn")]).await;
        serve_one(&quiet).await;
        assert!(
            !quiet.stdout().contains("listening on"),
            "{}",
            quiet.stdout()
        );
        // The file's level beats it.
        let loud = Process::start(
            &origin.url(),
            "[log]\nlevel = \"info\"\n",
            &[],
            &[("RUST_LOG", "warn")],
        )
        .await;
        serve_one(&loud).await;
        assert!(loud.stdout().contains("listening on"), "{}", loud.stdout());
    })
    .await;
}

/// In-process, as a program embedding `linkpush::run` would do it:
/// `configure` to a file, `reopen` after a rename, and a failed
/// `configure` that keeps the file in use. The only test here that
/// touches this process's sink.
#[tokio::test]
async fn reopen_moves_new_lines_to_a_new_file_and_a_failed_configure_keeps_the_old_sink() {
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let settings = LogConfig {
            access_log_path: Some(log.clone()),
            format: LogFormat::Json,
            ..LogConfig::default()
        };
        linkpush::access_log::configure(&settings).unwrap();
        let origin = origin_with_a_push().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut client = proxy.h2(false).await;
        // Routes match the query too: a 404, logged like any response.
        assert_eq!(client.get("/?one").await.status, 404);
        wait_for_line("access", || read_lossy(&log), |l| l.contains("/?one")).await;

        let rotated = dir.path().join("access.log.1");
        std::fs::rename(&log, &rotated).unwrap();
        linkpush::access_log::reopen().unwrap();
        assert_eq!(client.get("/?two").await.status, 404);
        wait_for_line("access", || read_lossy(&log), |l| l.contains("/?two")).await;

        let missing = dir.path().join("no/such/dir/access.log");
        let failed = LogConfig {
            access_log_path: Some(missing.clone()),
            ..settings.clone()
        };
        let error = linkpush::access_log::configure(&failed).unwrap_err();
        assert!(
            error.to_string().contains(&missing.display().to_string()),
            "{error}"
        );
        assert_eq!(client.get("/?three").await.status, 404);
        wait_for_line("access", || read_lossy(&log), |l| l.contains("/?three")).await;

        assert_eq!(read_lossy(&rotated).lines().count(), 1);
        let new = read_lossy(&log);
        assert_eq!(new.lines().count(), 2, "{new}");
        for line in new.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("a JSON line");
        }
    })
    .await;
}

#[test]
fn request_ids_are_unique() {
    let ids: std::collections::HashSet<u64> = (0..10_000)
        .map(|_| linkpush::access_log::next_request_id())
        .collect();
    assert_eq!(ids.len(), 10_000);
}

/// An HTTP/1.1 response sent whole is logged without an error, on a
/// keep-alive connection and with `Connection: close` alike (hyper stops
/// reading a body of known length at its last byte); a client that leaves
/// before the body has ended is logged as such.
#[tokio::test]
async fn http1_lines_say_a_whole_response_was_sent_and_a_cut_one_was_not() {
    bounded(async {
        let big = "x".repeat(4 << 20);
        let origin = TestOrigin::routes(
            Routes::new()
                .route("/", Resp::html("<p>page</p>"))
                .route("/big", Resp::new(200, big.clone())),
        )
        .await;
        let process = Process::start(&origin.url(), "[log]\nformat = \"json\"\n", &[], &[]).await;
        let parsed = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok();
        let lines_for = |path: &'static str| {
            let stdout = process.stdout();
            stdout
                .lines()
                .filter_map(&parsed)
                .filter(|v| v["path"] == path)
                .collect::<Vec<_>>()
        };

        // Two requests on one keep-alive connection, then one that closes.
        let mut tcp = tokio::net::TcpStream::connect(process.plain_addr)
            .await
            .unwrap();
        let keep = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
        let close = b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
        let mut all = Vec::new();
        tcp.write_all(&[&keep[..], &keep[..], &close[..]].concat())
            .await
            .unwrap();
        tcp.read_to_end(&mut all).await.unwrap();
        let text = String::from_utf8_lossy(&all);
        assert_eq!(text.matches("HTTP/1.1 200").count(), 3, "{text}");
        let want_three = |_: &str| lines_for("/").len() >= 3;
        wait_for_line("three lines", || process.stdout(), want_three).await;
        for line in lines_for("/") {
            assert_eq!(line["error"], serde_json::Value::Null, "{line}");
            assert_eq!(line["bytes"], 11, "{line}");
        }

        // A client that reads the head and a little, then leaves.
        let mut tcp = tokio::net::TcpStream::connect(process.plain_addr)
            .await
            .unwrap();
        tcp.write_all(b"GET /big HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .unwrap();
        let mut some = vec![0u8; 4096];
        let n = tcp.read(&mut some).await.unwrap();
        assert!(String::from_utf8_lossy(&some[..n]).starts_with("HTTP/1.1 200"));
        drop(tcp);
        let cut = |_: &str| !lines_for("/big").is_empty();
        wait_for_line("the cut line", || process.stdout(), cut).await;
        let line = &lines_for("/big")[0];
        assert!(line["bytes"].as_u64().unwrap() < big.len() as u64, "{line}");
        assert_eq!(
            line["error"], "client went away before the body was sent",
            "{line}"
        );
    })
    .await;
}

/// With `format = "json"` both logs are JSON, and a long `User-Agent` is
/// kept to its first 512 bytes.
#[tokio::test]
async fn json_applies_to_both_logs_and_client_fields_are_cut_at_512_bytes() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let process = Process::start(&origin.url(), "[log]\nformat = \"json\"\n", &[], &[]).await;
        let agent = "a".repeat(2048);
        let request = format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nUser-Agent: {agent}\r\n\r\n"
        );
        let response = h1_raw(&process, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        let parsed = |line: &str| serde_json::from_str::<serde_json::Value>(line).ok();
        let is_page = |line: &str| parsed(line).is_some_and(|v| v["path"] == "/");
        let line = wait_for_line("access", || process.stdout(), is_page).await;
        let page = parsed(&line).unwrap();
        assert_eq!(
            page["user_agent"].as_str().map(str::len),
            Some(512),
            "{line}"
        );
        // Both logs share standard output here: every line is a JSON
        // object, the diagnostic "listening on" lines included.
        let stdout = process.stdout();
        let lines: Vec<&str> = stdout.lines().filter(|l| !l.is_empty()).collect();
        assert!(lines.iter().any(|l| l.contains("listening on")), "{stdout}");
        for line in lines {
            assert!(
                parsed(line).is_some_and(|v| v.is_object()),
                "not JSON: {line}"
            );
        }
    })
    .await;
}

/// A reload moves the access log to the new `[log]` settings (its file and
/// its format), while the diagnostic log keeps its format until restart.
#[tokio::test]
async fn a_reload_moves_the_access_log_to_its_new_file_and_format() {
    bounded(async {
        let origin = origin_with_a_push().await;
        let process = Process::start(&origin.url(), "", &[], &[]).await;
        get_plain(&process, "/?before").await;
        wait_for_line(
            "text line",
            || process.stdout(),
            |l| l.contains("\"GET localhost /?before"),
        )
        .await;

        let config = process.path("proxy.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\n[log]\naccess_log_path = \"moved.log\"\nformat = \"json\"\n");
        std::fs::write(&config, text).unwrap();
        process.signal("HUP");
        let reloaded = |l: &str| l.contains("configuration reloaded");
        let line = wait_for_line("reloaded", || process.stdout(), reloaded).await;
        // The diagnostic log is still text.
        assert!(
            serde_json::from_str::<serde_json::Value>(&line).is_err(),
            "{line}"
        );

        get_plain(&process, "/?after").await;
        let moved = process.path("moved.log");
        let line = wait_for_line(
            "json line",
            || read_lossy(&moved),
            |l| l.contains("/?after"),
        )
        .await;
        let entry: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
        assert_eq!(entry["path"], "/?after");
        assert!(
            !process.stdout().contains("/?after"),
            "{}",
            process.stdout()
        );
    })
    .await;
}
