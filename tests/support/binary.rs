//! The built `linkpush` binary as a child process, with a generated
//! `proxy.toml`, its standard output and error captured to files that a
//! test reads while it runs.

use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::TestCert;

pub const BIN: &str = env!("CARGO_BIN_EXE_linkpush");

/// A port free at the time of asking (the child binds it right after).
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `linkpush`, killed on drop.
pub struct Process {
    child: Child,
    /// The TLS listener.
    pub addr: SocketAddr,
    /// The cleartext listener.
    pub plain_addr: SocketAddr,
    pub cert: TestCert,
    pub dir: tempfile::TempDir,
}

impl Process {
    /// Runs `linkpush --config proxy.toml ARGS` with `env` added, where the
    /// file has a TLS and a cleartext listener, the test certificate, the
    /// origin, two workers and `extra` appended; returns once it accepts
    /// connections.
    pub async fn start(
        origin_url: &str,
        extra: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Process {
        let cert = TestCert::new();
        let dir = tempfile::tempdir().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let plain_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = format!(
            "[[listen]]\naddress = \"{addr}\"\n\n[[listen]]\naddress = \"{plain_addr}\"\ntls = false\n\n\
             [tls]\ncert = {:?}\nkey = {:?}\n\n[origin]\nurl = \"{origin_url}\"\n\n\
             [server]\nworkers = 2\n\n{extra}",
            cert.cert_path.display().to_string(),
            cert.key_path.display().to_string(),
        );
        let config_path = dir.path().join("proxy.toml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap())
            .stdin(Stdio::null())
            .spawn()
            .expect("run linkpush");
        let mut process = Process {
            child,
            addr,
            plain_addr,
            cert,
            dir,
        };
        process.wait_listening().await;
        process
    }

    async fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let tls = tokio::net::TcpStream::connect(self.addr).await.is_ok();
            if tls
                && tokio::net::TcpStream::connect(self.plain_addr)
                    .await
                    .is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("linkpush exited early: {status}\n{}", self.stderr());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "linkpush did not listen on {} and {}",
            self.addr, self.plain_addr
        );
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn stdout(&self) -> String {
        read_lossy(&self.path("stdout"))
    }

    pub fn stderr(&self) -> String {
        read_lossy(&self.path("stderr"))
    }

    /// Sends `signal` (`"USR1"`, `"TERM"`) to the process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{signal}");
    }

    /// SIGTERM, then the exit status once the process has drained.
    pub async fn stop(&mut self) -> ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// The lines of `read()` once one of them satisfies `want`: the access log
/// is written just after the client has its response, so tests wait for
/// it (up to a deadline) rather than read at once.
pub async fn wait_for_line(
    what: &str,
    read: impl Fn() -> String,
    want: impl Fn(&str) -> bool,
) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = read();
        if let Some(line) = text.lines().find(|line| want(line)) {
            return line.to_owned();
        }
        assert!(Instant::now() < deadline, "no {what} line in:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
