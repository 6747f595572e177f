//! The built binary: `check` exit codes, messages and flags, `run` with flags only,
//! SIGTERM, and `demo` serving its sample site over HTTP/2.

mod support;

use std::io::Write;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use support::*;

const BIN: &str = env!("CARGO_BIN_EXE_linkpush");

fn linkpush(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().expect("run linkpush")
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> String {
    let path = dir.path().join("proxy.toml");
    let mut file = std::fs::File::create(&path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    path.display().to_string()
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the child on drop, so a failed assertion leaves no process behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_listening(addr: SocketAddr, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("linkpush exited early: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("linkpush did not listen on {addr}");
}

#[test]
fn check_accepts_the_shipped_config() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let output = linkpush(&["check", "--config", shipped]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("valid"));
}

#[test]
fn check_without_a_file_accepts_flags_alone() {
    let output = linkpush(&["check", "--origin", "http://127.0.0.1:1", "--self-signed"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("valid"), "{stdout}");
    assert!(stdout.contains("origin http://127.0.0.1:1"), "{stdout}");
}

#[test]
fn check_lists_sites_and_upstreams_and_names_a_bad_site_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n\
                [upstreams.shop]\nservers = [\"http://127.0.0.1:1\", \"unix:/run/php.sock\"]\n\
                [[sites]]\nnames = [\"shop.example\"]\nupstream = \"shop\"\n\
                [[sites]]\nnames = [\"app.example\"]\nupstream = \"shop\"\n";
    let output = linkpush(&["check", "--config", &write_config(&dir, good)]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("2 site(s); upstreams: shop http://127.0.0.1:1 unix:/run/php.sock"),
        "{stdout}"
    );

    let bad = good.replace(
        "upstream = \"shop\"\n[[sites]]",
        "upstream = \"shopp\"\n[[sites]]",
    );
    let output = linkpush(&["check", "--config", &write_config(&dir, &bad)]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "  - sites[0].upstream: \"shopp\" is not an upstream; declare it as \
             [upstreams.shopp], or use one of [\"shop\"]"
        ),
        "{stderr}"
    );
}

#[test]
fn check_applies_flags_over_the_file_and_names_them() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml");
    let output = linkpush(&["check", "--config", shipped, "--workers", "5000"]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("  - --workers: 5000 is too large; expected at most 1024"),
        "{stderr}"
    );
}

#[test]
fn check_reports_an_unknown_key_by_name_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[origin]\nurl = \"http://127.0.0.1:8080\"\ntimeout = \"5s\"\n",
    );
    let output = linkpush(&["check", "--config", &path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown field `timeout`"), "{stderr}");
    assert!(stderr.contains("line 3"), "{stderr}");
}

#[test]
fn check_reports_every_invalid_value_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[[listen]]\naddress = \"localhost\"\n\n[origin]\nurl = \"ftp://x\"\n\n[timeouts]\norigin_connect = \"soon\"\n\n[tls]\nself_signed = true\n",
    );
    let output = linkpush(&["check", "--config", &path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for key in ["listen[0].address", "origin.url", "timeouts.origin_connect"] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
}

#[test]
fn check_names_a_missing_certificate_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        "[origin]\nurl = \"http://127.0.0.1:8080\"\n\n[tls]\ncert = \"missing.pem\"\nkey = \"missing-key.pem\"\n",
    );
    let output = linkpush(&["check", "--config", &path]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tls.cert"), "{stderr}");
    assert!(stderr.contains("missing.pem"), "{stderr}");
}

/// Two certificates of their own, written to `dir`.
fn two_certificates(dir: &tempfile::TempDir) -> [(String, String); 2] {
    [1, 2].map(|n| {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let cert = dir.path().join(format!("cert{n}.pem"));
        let key = dir.path().join(format!("key{n}.pem"));
        std::fs::write(&cert, generated.cert.pem()).unwrap();
        std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    })
}

/// `check` loads and pairs the certificate and key as `run` does: what it
/// refuses, `run` refuses with the same message, and what it accepts,
/// `run` starts with.
#[test]
fn check_refuses_what_run_refuses_a_key_of_another_certificate_or_a_key_given_as_cert() {
    let dir = tempfile::tempdir().unwrap();
    let [(cert1, key1), (_, key2)] = two_certificates(&dir);
    let origin = ["--origin", "http://127.0.0.1:1"];
    let cases = [
        (vec!["--cert", &cert1, "--key", &key2], "does not match"),
        (vec!["--cert", &key1, "--key", &key1], "tls.cert"),
    ];
    for (flags, expected) in cases {
        for command in ["check", "run"] {
            let port = free_port().to_string();
            let listen = format!("127.0.0.1:{port}");
            let mut args = vec![command, "--listen", &listen];
            args.extend(origin);
            args.extend(flags.iter().copied());
            let output = linkpush(&args);
            assert_eq!(output.status.code(), Some(1), "{command} {args:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert!(stderr.contains(expected), "{command}: {stderr}");
        }
    }
    // The matching pair passes.
    let output = linkpush(&[
        "check", "--cert", &cert1, "--key", &key1, origin[0], origin[1],
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A site's certificate is loaded and paired as `[tls]`'s is, and a problem
/// with it names the site.
#[test]
fn check_names_the_site_whose_key_does_not_match_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let [(cert1, key1), (_, key2)] = two_certificates(&dir);
    let config = |key: &str| {
        format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\n[origin]\nurl = \"http://127.0.0.1:1\"\n\
             [[sites]]\nnames = [\"localhost\"]\ncert = {cert1:?}\nkey = {key:?}\n"
        )
    };
    let output = linkpush(&["check", "--config", &write_config(&dir, &config(&key2))]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("sites[0].key: the key in") && stderr.contains("does not match"),
        "{stderr}"
    );
    let output = linkpush(&["check", "--config", &write_config(&dir, &config(&key1))]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn check_of_a_missing_file_exits_1() {
    let output = linkpush(&["check", "--config", "/nonexistent/proxy.toml"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/proxy.toml"));
}

#[test]
fn run_refuses_to_start_on_a_key_that_does_not_match_the_certificate() {
    let a = TestCert::new();
    let b = TestCert::new();
    let port = free_port();
    let output = Command::new(BIN)
        .args([
            "run",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--origin",
            "http://127.0.0.1:9",
        ])
        .args([
            "--cert",
            a.cert_path.to_str().unwrap(),
            "--key",
            b.key_path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does not match"), "{stderr}");
}

#[tokio::test]
async fn run_with_flags_only_serves_and_sigterm_shuts_it_down_cleanly() {
    let origin = TestOrigin::routes(Routes::new().route("/", Resp::html("flags"))).await;
    let cert = TestCert::new();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(BIN)
        .args(["--listen", &addr.to_string(), "--origin", &origin.url()])
        .args([
            "--cert",
            cert.cert_path.to_str().unwrap(),
            "--key",
            cert.key_path.to_str().unwrap(),
        ])
        .args(["--log-format", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    wait_listening(addr, &mut running.0).await;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(cert.client_config(&[b"h2"])));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = H2Client::from_parts(send, format!("localhost:{port}"));
    let exchange = client.get("/").await;
    assert_eq!(exchange.body.unwrap(), Bytes::from("flags"));

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    let child = std::mem::replace(&mut running.0, Command::new("true").spawn().unwrap());
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // One JSON access-log line for the request.
    let line = stdout
        .lines()
        .find(|l| l.contains("\"path\":\"/\""))
        .unwrap_or_else(|| panic!("no access line in:\n{stdout}"));
    assert!(line.contains("\"status\":200"), "{line}");
    assert!(line.contains("\"protocol\":\"HTTP/2\""), "{line}");
}

/// The demo's certificate is generated at start; this smoke test accepts it.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[tokio::test]
async fn demo_serves_its_page_over_h2_with_pushes() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(BIN)
        .args(["demo", "--listen", &addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    wait_listening(addr, &mut running.0).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let (send, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = H2Client::from_parts(send, format!("localhost:{port}"));
    let exchange = client.get("/").await;
    assert_eq!(exchange.status, 200);
    assert!(String::from_utf8_lossy(exchange.body.as_ref().unwrap()).contains("linkpush"));
    assert_eq!(
        exchange.pushed_paths(),
        vec!["/css/site.css", "/img/logo.svg", "/js/app.js"]
    );
    assert!(exchange.headers.contains_key("x-push-decision"));
}
