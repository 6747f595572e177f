//! Interop with real clients and a real origin: `nghttp`, `curl` and `h2load`
//! talk to linkpush, which sits in front of `php -S` serving the pages in
//! `tests/fixtures/php`; and a differential run with `nghttpx` in front of the
//! same origin.
//!
//! The pages:
//!
//! - `preload.php`: three `rel=preload` links (css, js, image) and one
//!   `rel=preload; nopush`.
//! - `push.php`: two `rel=push` links and one `rel=preload`.
//! - `cross.php`: a cross-origin preload, a font preload with `crossorigin`,
//!   and one same-origin preload.
//!
//! Where linkpush and nghttpx (checked against nghttpx 1.52) behave
//! differently on purpose, the differential test asserts the difference:
//!
//! | origin `Link`                                  | nghttpx                                | linkpush                               |
//! |------------------------------------------------|----------------------------------------|----------------------------------------|
//! | `</a>; rel=preload`                            | pushed, field forwarded unchanged      | pushed, field forwarded unchanged      |
//! | `</a>; rel=preload; nopush`                    | not pushed                             | not pushed                             |
//! | `<https://cdn.example.com/a>; rel=preload`     | pushed with `:authority` cdn.example.com, fetched from the same backend (a 404 here) | not pushed (`cross-origin`) |
//! | `</f.woff2>; rel=preload; as=font; crossorigin`| pushed                                 | not pushed (`credentialed-destination`)|
//! | `</a>; rel=push`, client takes pushes          | not pushed, forwarded unchanged        | pushed, removed from the field         |
//! | `</a>; rel=push`, client refuses pushes        | forwarded unchanged                    | forwarded as `rel=preload`             |
//! | pushed response                                | `x-http2-push: 1`                      | `x-http2-push: 1`                      |
//!
//! The external programs come from Debian packages: `nghttp2-client`
//! (`nghttp`, `h2load`), `nghttp2-proxy` (`nghttpx`), `curl` and `php-cli`.
//! A test whose program is missing is skipped with a note, unless `CI=true`,
//! where it fails and names the package to install.

mod support;

/// Every link of every page in flight may be pushed at once (the default
/// caps pushes in progress per connection at 16).
const MANY_PUSHES: &str = "[push]\nmax_concurrent_pushes = 1000\n";

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long one client run (nghttp, curl, h2load) may take.
const RUN_LIMIT: Duration = Duration::from_secs(20);
/// How long a server program gets to start listening.
const START_LIMIT: Duration = Duration::from_secs(10);

/// The proxy configuration of every test: decisions are explained in
/// `x-push-decision`.
const EXPLAIN: &str = "[push]\nexplain = true\n";

const PRELOAD_LINKS: [&str; 4] = [
    "</assets/style.css>; rel=preload; as=style",
    "</assets/app.js>; rel=preload; as=script",
    "</assets/logo.png>; rel=preload; as=image",
    "</assets/late.js>; rel=preload; as=script; nopush",
];

const PRELOAD_DECISIONS: &str = "</assets/style.css>; push; reason=pushed, \
     </assets/app.js>; push; reason=pushed, \
     </assets/logo.png>; push; reason=pushed, \
     </assets/late.js>; preload; reason=nopush";

const PUSH_LINKS: [&str; 3] = [
    "</assets/style.css>; rel=push; as=style; type=\"text/css\"",
    "</assets/app.js>; rel=push; as=script",
    "</assets/logo.png>; rel=preload; as=image",
];

/// `PUSH_LINKS` as a client that cannot take pushes must see them.
const PUSH_LINKS_AS_PRELOAD: [&str; 3] = [
    "</assets/style.css>; rel=preload; as=style; type=\"text/css\"",
    "</assets/app.js>; rel=preload; as=script",
    "</assets/logo.png>; rel=preload; as=image",
];

const CROSS_LINKS: [&str; 3] = [
    "<https://cdn.example.com/lib.js>; rel=preload; as=script",
    "</assets/font.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
    "</assets/style.css>; rel=preload; as=style",
];

const CROSS_DECISIONS: &str = "<https://cdn.example.com/lib.js>; preload; reason=cross-origin, \
     </assets/font.woff2>; preload; reason=credentialed-destination, \
     </assets/style.css>; push; reason=pushed";

// ---------------------------------------------------------------------------
// Programs

/// Where a program is, looking in `PATH` and then in the sbin directories
/// (`nghttpx` lives in /usr/sbin, which a plain user's `PATH` may lack).
fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
}

/// The program, or `None` (with a note) when it is missing outside CI. In CI
/// a missing program fails the test.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    match find_program(name) {
        Some(path) => Some(path),
        None if require_programs() => panic!(
            "`{name}` is required (CI=true) but was not found: install the Debian package `{package}`"
        ),
        None => {
            eprintln!("note: skipping: `{name}` not found (Debian package `{package}`)");
            None
        }
    }
}

/// `let php = need!("php", "php-cli");` returns from the test when missing.
macro_rules! need {
    ($name:literal, $package:literal) => {
        match tool($name, $package) {
            Some(path) => path,
            None => return,
        }
    };
}

/// A server program started by a test; killed (by PID) and reaped on drop.
struct Running {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Running {
    fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> Running {
        let out = File::create(&log).expect("create log file");
        let err = out.try_clone().expect("clone log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Running { name, child, log }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics (with the program's log) if it has exited.
    fn assert_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited early ({status}); its log:\n{}",
                self.name,
                self.log_text()
            );
        }
    }

    /// Wait until `addr` accepts TCP connections.
    async fn wait_listening(&mut self, addr: SocketAddr) {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            self.assert_alive();
            if TcpStream::connect(addr).await.is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not listen on {addr} within {START_LIMIT:?}; its log:\n{}",
                self.name,
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago.
fn free_port() -> u16 {
    let listener = StdTcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/php")
}

fn fixture(path: &str) -> Vec<u8> {
    let file = fixtures().join(path.trim_start_matches('/'));
    std::fs::read(&file).unwrap_or_else(|e| panic!("read {}: {e}", file.display()))
}

/// `php -S` on a port it picks itself, serving the fixtures. Single process
/// (no `PHP_CLI_SERVER_WORKERS`), so killing the PID stops it all.
async fn start_php(php: &Path, dir: &Path) -> (Running, SocketAddr) {
    let mut server = Running::spawn(
        "php -S",
        Command::new(php)
            .arg("-n")
            .arg("-S")
            .arg("127.0.0.1:0")
            .arg("-t")
            .arg(fixtures())
            .env_remove("PHP_CLI_SERVER_WORKERS"),
        dir.join("php.log"),
    );
    // "... Development Server (http://127.0.0.1:PORT) started"
    let deadline = Instant::now() + START_LIMIT;
    let addr = loop {
        server.assert_alive();
        let log = server.log_text();
        let found = log.split("(http://").nth(1).and_then(|rest| {
            let (addr, tail) = rest.split_once(')')?;
            tail.trim_start()
                .starts_with("started")
                .then(|| addr.parse::<SocketAddr>().ok())?
        });
        if let Some(addr) = found {
            break addr;
        }
        assert!(
            Instant::now() < deadline,
            "php -S did not report its address; its log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    server.wait_listening(addr).await;
    (server, addr)
}

/// nghttpx with TLS on the frontend (the proxy's certificate), the php
/// origin as an HTTP/1.1 backend, one worker, in one process.
async fn start_nghttpx(
    nghttpx: &Path,
    cert: &TestCert,
    backend: SocketAddr,
    dir: &Path,
) -> (Running, SocketAddr) {
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let mut server = Running::spawn(
        "nghttpx",
        Command::new(nghttpx)
            .arg("--conf=/dev/null")
            .arg(format!("--frontend={},{}", addr.ip(), addr.port()))
            .arg(format!(
                "--backend={},{};;proto=http/1.1",
                backend.ip(),
                backend.port()
            ))
            .arg("--no-ocsp")
            .arg("--workers=1")
            .arg("--single-process")
            .arg(format!(
                "--errorlog-file={}",
                dir.join("nghttpx-error.log").display()
            ))
            .arg(format!(
                "--accesslog-file={}",
                dir.join("nghttpx-access.log").display()
            ))
            .arg(&cert.key_path)
            .arg(&cert.cert_path),
        dir.join("nghttpx.log"),
    );
    server.wait_listening(addr).await;
    (server, addr)
}

/// What a client run left behind.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
    /// The command line, for messages.
    line: String,
}

impl Output {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn assert_success(&self) -> &Output {
        assert!(
            self.status.success(),
            "`{}` failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.line,
            self.status,
            self.text(),
            self.stderr
        );
        self
    }
}

/// Run a client to completion within `RUN_LIMIT` (killed by PID after it),
/// on a blocking thread so the in-process proxy keeps running.
async fn run(program: &Path, args: &[String]) -> Output {
    let program = program.to_path_buf();
    let args = args.to_vec();
    tokio::task::spawn_blocking(move || {
        let line = format!("{} {}", program.display(), args.join(" "));
        let dir = tempfile::tempdir().expect("tempdir");
        let (out_path, err_path) = (dir.path().join("stdout"), dir.path().join("stderr"));
        let mut child = Command::new(&program)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).expect("stdout file"))
            .stderr(File::create(&err_path).expect("stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `{line}`: {e}"));
        let deadline = Instant::now() + RUN_LIMIT;
        let status = loop {
            match child.try_wait().expect("wait for child") {
                Some(status) => break status,
                None if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "`{line}` did not finish within {RUN_LIMIT:?}; stderr:\n{}",
                        std::fs::read_to_string(&err_path).unwrap_or_default()
                    );
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        Output {
            status,
            stdout: std::fs::read(&out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
            line,
        }
    })
    .await
    .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

/// GET `path` from the origin directly (HTTP/1.0, the origin closes).
async fn origin_get(addr: SocketAddr, path: &str) -> (String, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).await.expect("connect to origin");
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write request");
    let mut raw = Vec::new();
    tokio::time::timeout(RUN_LIMIT, stream.read_to_end(&mut raw))
        .await
        .expect("origin answered in time")
        .expect("read response");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    (head, raw[split + 4..].to_vec())
}

// ---------------------------------------------------------------------------
// nghttp output

/// One frame from `nghttp -v`, with the header fields that came with it.
#[derive(Debug, Clone)]
struct Frame {
    recv: bool,
    kind: String,
    length: usize,
    flags: u8,
    stream: u32,
    /// Received: the fields printed before the frame line (for PUSH_PROMISE,
    /// the promised request). Sent: the fields printed after it.
    headers: Vec<(String, String)>,
    /// The indented lines after the frame line that are not fields.
    details: Vec<String>,
}

impl Frame {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    fn end_stream(&self) -> bool {
        self.flags & 0x01 != 0
    }

    fn promised_stream(&self) -> Option<u32> {
        self.details.iter().find_map(|d| {
            let rest = d.split("promised_stream_id=").nth(1)?;
            rest.trim_end_matches(')').parse().ok()
        })
    }

    fn is(&self, recv: bool, kind: &str) -> bool {
        self.recv == recv && self.kind == kind
    }
}

/// `[  0.076] rest` -> `rest`.
fn strip_timestamp(line: &str) -> Option<&str> {
    let rest = line.strip_prefix('[')?;
    let (time, rest) = rest.split_once("] ")?;
    time.trim().parse::<f64>().ok()?;
    Some(rest)
}

/// `recv PUSH_PROMISE frame <length=62, flags=0x04, stream_id=13>`.
fn parse_frame_line(rest: &str) -> Option<Frame> {
    let (direction, rest) = rest.split_once(' ')?;
    let recv = match direction {
        "recv" => true,
        "send" => false,
        _ => return None,
    };
    let (kind, rest) = rest.split_once(" frame <")?;
    let mut frame = Frame {
        recv,
        kind: kind.to_string(),
        length: 0,
        flags: 0,
        stream: 0,
        headers: Vec::new(),
        details: Vec::new(),
    };
    for part in rest.trim_end_matches('>').split(", ") {
        let (key, value) = part.split_once('=')?;
        match key {
            "length" => frame.length = value.parse().ok()?,
            "flags" => frame.flags = u8::from_str_radix(value.trim_start_matches("0x"), 16).ok()?,
            "stream_id" => frame.stream = value.parse().ok()?,
            _ => {}
        }
    }
    Some(frame)
}

/// `name: value`, where the name may start with `:`.
fn split_field(field: &str) -> Option<(String, String)> {
    let at = field.get(1..)?.find(": ")? + 1;
    Some((field[..at].to_string(), field[at + 2..].to_string()))
}

fn parse_frames(log: &str) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut pending = Vec::new();
    let mut continues = false;
    for line in log.lines() {
        if let Some(rest) = strip_timestamp(line) {
            continues = false;
            if let Some(field) = rest.strip_prefix("recv (stream_id=") {
                if let Some((_, field)) = field.split_once(") ") {
                    pending.extend(split_field(field));
                }
            } else if let Some(mut frame) = parse_frame_line(rest) {
                if frame.recv {
                    frame.headers = std::mem::take(&mut pending);
                }
                frames.push(frame);
                continues = true;
            }
        } else if continues && line.starts_with("          ") {
            let detail = line.trim();
            let frame = frames.last_mut().expect("a frame");
            let is_field = !frame.recv && !detail.starts_with(['(', ';', '[']);
            match split_field(detail) {
                Some(field) if is_field => frame.headers.push(field),
                _ => frame.details.push(detail.to_string()),
            }
        } else {
            continues = false;
        }
    }
    frames
}

/// A promised push, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Promise {
    authority: String,
    path: String,
    stream: u32,
}

/// One `nghttp` fetch of one page, from its `-v` log.
struct Fetch {
    frames: Vec<Frame>,
    /// The stream of the page request.
    parent: u32,
    /// The log, for failure messages.
    log: String,
}

impl Fetch {
    fn parse(log: String, path: &str) -> Fetch {
        let frames = parse_frames(&log);
        let parent = frames
            .iter()
            .find(|f| f.is(false, "HEADERS") && f.header(":path") == Some(path))
            .unwrap_or_else(|| panic!("no request for {path} in the nghttp log:\n{log}"))
            .stream;
        Fetch {
            frames,
            parent,
            log,
        }
    }

    fn position(&self, want: impl Fn(&Frame) -> bool) -> Option<usize> {
        self.frames.iter().position(want)
    }

    /// Index of the page's response HEADERS (the first final one).
    fn response_index(&self) -> usize {
        self.position(|f| {
            f.is(true, "HEADERS")
                && f.stream == self.parent
                && f.header(":status").is_some_and(|s| !s.starts_with('1'))
        })
        .unwrap_or_else(|| panic!("no response HEADERS for the page:\n{}", self.log))
    }

    fn response(&self) -> &Frame {
        &self.frames[self.response_index()]
    }

    fn links(&self) -> Vec<String> {
        self.response().all("link")
    }

    fn promise_indices(&self) -> Vec<usize> {
        (0..self.frames.len())
            .filter(|&i| self.frames[i].is(true, "PUSH_PROMISE"))
            .collect()
    }

    fn promises(&self) -> Vec<Promise> {
        self.promise_indices()
            .into_iter()
            .map(|i| {
                let frame = &self.frames[i];
                Promise {
                    authority: frame.header(":authority").unwrap_or_default().to_string(),
                    path: frame.header(":path").unwrap_or_default().to_string(),
                    stream: frame
                        .promised_stream()
                        .unwrap_or_else(|| panic!("promise without a stream: {frame:?}")),
                }
            })
            .collect()
    }

    fn promised_paths(&self) -> BTreeSet<String> {
        self.promises().into_iter().map(|p| p.path).collect()
    }

    /// The response HEADERS on `stream`.
    fn head_of(&self, stream: u32) -> Option<&Frame> {
        self.frames
            .iter()
            .find(|f| f.is(true, "HEADERS") && f.stream == stream)
    }

    /// Body bytes received on `stream`, and whether it ended cleanly
    /// (END_STREAM seen, no RST_STREAM).
    fn body_of(&self, stream: u32) -> (usize, bool) {
        let mut len = 0;
        let mut ended = false;
        for f in self.frames.iter().filter(|f| f.recv && f.stream == stream) {
            match f.kind.as_str() {
                "DATA" => {
                    len += f.length;
                    ended |= f.end_stream();
                }
                "HEADERS" => ended |= f.end_stream(),
                "RST_STREAM" => return (len, false),
                _ => {}
            }
        }
        (len, ended)
    }
}

/// The length of the log line (and its indented continuation lines) that
/// starts `bytes`, if one does.
fn log_block_len(bytes: &[u8]) -> Option<usize> {
    let line_end = |from: usize| {
        bytes[from..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| from + i + 1)
    };
    let first = if bytes.starts_with(b"The negotiated protocol: ") {
        line_end(0)?
    } else {
        if bytes.first() != Some(&b'[') {
            return None;
        }
        let close = bytes.iter().take(16).position(|&b| b == b']')?;
        if bytes.get(close + 1) != Some(&b' ') {
            return None;
        }
        let time = std::str::from_utf8(&bytes[1..close]).ok()?;
        time.trim().parse::<f64>().ok()?;
        line_end(0)?
    };
    let mut end = first;
    while bytes[end..].starts_with(b"          ") {
        end = line_end(end)?;
    }
    Some(end)
}

/// Split the stdout of `nghttp -v` (bodies not discarded) into the log and
/// the body of each stream. nghttp writes each DATA payload just before the
/// log line of its frame, so the payload bytes, taken in order, are cut by
/// the DATA frame lengths in log order.
fn split_bodies(stdout: &[u8]) -> (String, BTreeMap<u32, Vec<u8>>) {
    let mut log = Vec::new();
    let mut data = Vec::new();
    let mut at = 0;
    while at < stdout.len() {
        match log_block_len(&stdout[at..]) {
            Some(n) => {
                log.extend_from_slice(&stdout[at..at + n]);
                at += n;
            }
            None => {
                data.push(stdout[at]);
                at += 1;
            }
        }
    }
    let log = String::from_utf8_lossy(&log).into_owned();
    let mut bodies: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
    let mut cursor = 0;
    for frame in parse_frames(&log).iter().filter(|f| f.is(true, "DATA")) {
        let end = cursor + frame.length;
        assert!(
            end <= data.len(),
            "nghttp output holds fewer body bytes than its DATA frames announce"
        );
        bodies
            .entry(frame.stream)
            .or_default()
            .extend_from_slice(&data[cursor..end]);
        cursor = end;
    }
    assert_eq!(
        cursor,
        data.len(),
        "nghttp output holds body bytes no DATA frame accounts for"
    );
    (log, bodies)
}

/// One row of the `nghttp -s` statistics table.
#[derive(Debug, Clone)]
struct Stat {
    pushed: bool,
    code: u16,
    path: String,
}

fn parse_stats(text: &str) -> Vec<Stat> {
    text.lines()
        .skip_while(|line| !line.starts_with("id "))
        .skip(1)
        .filter_map(|line| {
            let tokens: Vec<&str> = line.split_whitespace().collect();
            if tokens.len() < 7 || tokens[0].parse::<u32>().is_err() {
                return None;
            }
            let n = tokens.len();
            Some(Stat {
                pushed: tokens[2] == "*",
                code: tokens[n - 3].parse().ok()?,
                path: tokens[n - 1].to_string(),
            })
        })
        .collect()
}

fn pushed_in_stats(stats: &[Stat]) -> BTreeSet<String> {
    stats
        .iter()
        .filter(|s| s.pushed)
        .map(|s| s.path.clone())
        .collect()
}

async fn nghttp_nv(nghttp: &Path, base: &str, path: &str, extra: &[&str]) -> Fetch {
    let mut list = args(&["-nv"]);
    list.extend(args(extra));
    list.push(format!("{base}{path}"));
    let output = run(nghttp, &list).await;
    Fetch::parse(output.text(), path)
}

async fn nghttp_ans(nghttp: &Path, base: &str, path: &str) -> Vec<Stat> {
    let output = run(nghttp, &[String::from("-ans"), format!("{base}{path}")]).await;
    let stats = parse_stats(&output.text());
    assert!(
        !stats.is_empty(),
        "no statistics from `{}`:\n{}\n{}",
        output.line,
        output.text(),
        output.stderr
    );
    stats
}

fn set(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| p.to_string()).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------
// curl output

/// A `curl -D -` header dump: status code and fields (lower-case names).
struct Dump {
    status_lines: Vec<String>,
    headers: Vec<(String, String)>,
}

impl Dump {
    fn parse(text: &str) -> Dump {
        let mut dump = Dump {
            status_lines: Vec::new(),
            headers: Vec::new(),
        };
        for line in text.lines().map(|l| l.trim_end_matches('\r')) {
            if line.starts_with("HTTP/") {
                dump.status_lines.push(line.to_string());
            } else if let Some((name, value)) = line.split_once(':') {
                dump.headers
                    .push((name.to_ascii_lowercase(), value.trim().to_string()));
            }
        }
        dump
    }

    fn status(&self) -> u16 {
        self.status_lines
            .last()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|c| c.parse().ok())
            .expect("a status line")
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

/// `curl -sS -D - -o FILE` through the proxy, trusting only its certificate.
async fn curl(curl: &Path, proxy: &TestProxy, version: &str, path: &str) -> (Dump, Vec<u8>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let body = dir.path().join("body");
    let port = proxy.addr.port();
    let output = run(
        curl,
        &[
            "-sS".into(),
            version.into(),
            "--max-time".into(),
            "15".into(),
            "--cacert".into(),
            proxy.cert.cert_path.display().to_string(),
            "--resolve".into(),
            format!("localhost:{port}:127.0.0.1"),
            "-D".into(),
            "-".into(),
            "-o".into(),
            body.display().to_string(),
            format!("https://localhost:{port}{path}"),
        ],
    )
    .await;
    output.assert_success();
    (
        Dump::parse(&output.text()),
        std::fs::read(&body).expect("curl body file"),
    )
}

// ---------------------------------------------------------------------------
// Scenarios

#[tokio::test]
async fn nghttp_gets_preload_pushes_before_the_page_with_complete_bodies() {
    let php = need!("php", "php-cli");
    let nghttp = need!("nghttp", "nghttp2-client");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_php, origin) = start_php(&php, dir.path()).await;
        let proxy = TestProxy::start(&format!("http://{origin}"), EXPLAIN).await;
        let authority = format!("127.0.0.1:{}", proxy.addr.port());
        let base = format!("https://{authority}");
        let pushed = set(&["/assets/app.js", "/assets/logo.png", "/assets/style.css"]);

        // Frames: every promise before the page's HEADERS, every push a
        // complete 200.
        let fetch = nghttp_nv(&nghttp, &base, "/preload.php", &[]).await;
        let log = &fetch.log;
        assert_eq!(fetch.promised_paths(), pushed, "{log}");
        let response_at = fetch.response_index();
        for at in fetch.promise_indices() {
            let promise = &fetch.frames[at];
            assert_eq!(promise.stream, fetch.parent, "{log}");
            assert!(
                at < response_at,
                "PUSH_PROMISE for {:?} after the page's HEADERS:\n{log}",
                promise.header(":path")
            );
            assert_eq!(promise.header(":method"), Some("GET"), "{log}");
            assert_eq!(promise.header(":scheme"), Some("https"), "{log}");
            assert_eq!(promise.header(":authority"), Some(authority.as_str()));
        }
        let response = fetch.response();
        assert_eq!(response.header(":status"), Some("200"), "{log}");
        assert_eq!(fetch.links(), strings(&PRELOAD_LINKS), "{log}");
        assert_eq!(
            response.header("x-push-decision"),
            Some(PRELOAD_DECISIONS),
            "{log}"
        );
        for promise in fetch.promises() {
            let head = fetch
                .head_of(promise.stream)
                .unwrap_or_else(|| panic!("no response for {promise:?}:\n{log}"));
            assert_eq!(head.header(":status"), Some("200"), "{promise:?}\n{log}");
            assert_eq!(head.header("x-http2-push"), Some("1"), "{promise:?}\n{log}");
            let (len, ended) = fetch.body_of(promise.stream);
            assert!(ended, "push {promise:?} did not complete:\n{log}");
            assert_eq!(len, fixture(&promise.path).len(), "{promise:?}\n{log}");
        }
        let (page_len, page_ended) = fetch.body_of(fetch.parent);
        assert!(page_ended && page_len > 0, "{log}");

        // Bytes: the same exchange with bodies kept, each compared with the
        // file (or, for the page, with what the origin serves directly).
        let output = run(&nghttp, &["-v".into(), format!("{base}/preload.php")]).await;
        output.assert_success();
        let (log, bodies) = split_bodies(&output.stdout);
        let fetch = Fetch::parse(log, "/preload.php");
        assert_eq!(fetch.promised_paths(), pushed, "{}", fetch.log);
        for promise in fetch.promises() {
            let body = bodies.get(&promise.stream).cloned().unwrap_or_default();
            assert!(
                body == fixture(&promise.path),
                "pushed {} differs from the fixture ({} bytes, want {})",
                promise.path,
                body.len(),
                fixture(&promise.path).len()
            );
        }
        let (_, page) = origin_get(origin, "/preload.php").await;
        assert_eq!(bodies.get(&fetch.parent), Some(&page));

        // Statistics: the pushes (marked `*`) succeed; the nopush script is
        // fetched by the client itself as an asset of the page.
        let stats = nghttp_ans(&nghttp, &base, "/preload.php").await;
        assert_eq!(pushed_in_stats(&stats), pushed, "{stats:#?}");
        assert!(stats.iter().all(|s| s.code == 200), "{stats:#?}");
        let late = stats.iter().find(|s| s.path == "/assets/late.js");
        assert!(late.is_some_and(|s| !s.pushed), "{stats:#?}");
    })
    .await;
}

#[tokio::test]
async fn nghttp_no_push_sees_rel_push_rewritten_to_preload() {
    let php = need!("php", "php-cli");
    let nghttp = need!("nghttp", "nghttp2-client");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_php, origin) = start_php(&php, dir.path()).await;
        let (head, _) = origin_get(origin, "/push.php").await;
        for link in PUSH_LINKS {
            assert!(head.contains(&format!("Link: {link}")), "origin: {head}");
        }
        let proxy = TestProxy::start(&format!("http://{origin}"), EXPLAIN).await;
        let base = format!("https://127.0.0.1:{}", proxy.addr.port());

        let fetch = nghttp_nv(&nghttp, &base, "/push.php", &["--no-push"]).await;
        let log = &fetch.log;
        let settings = fetch
            .frames
            .iter()
            .find(|f| f.is(false, "SETTINGS") && !f.details.is_empty())
            .expect("client SETTINGS");
        assert!(
            settings
                .details
                .iter()
                .any(|d| d == "[SETTINGS_ENABLE_PUSH(0x02):0]"),
            "{log}"
        );
        assert!(
            fetch.promise_indices().is_empty(),
            "a push was promised:\n{log}"
        );
        let response = fetch.response();
        assert_eq!(response.header(":status"), Some("200"), "{log}");
        assert_eq!(fetch.links(), strings(&PUSH_LINKS_AS_PRELOAD), "{log}");
        assert_eq!(
            response.header("x-push-decision"),
            Some(
                "</assets/style.css>; preload; reason=client-disabled, \
                 </assets/app.js>; preload; reason=client-disabled, \
                 </assets/logo.png>; preload; reason=client-disabled"
            ),
            "{log}"
        );
        let (len, ended) = fetch.body_of(fetch.parent);
        assert!(ended && len > 0, "{log}");
    })
    .await;
}

/// Pages /p0 … /p{pages-1} on an in-process origin, each with ten
/// `rel=preload` links to stylesheets of its own (3 KiB each).
fn pushing_pages(pages: u32) -> Routes {
    let mut routes = Routes::new();
    for page in 0..pages {
        let mut resp = Resp::html(&format!("<p>page {page}</p>"));
        for asset in 0..10 {
            let path = format!("/p{page}/a{asset}.css");
            resp = resp.link(&format!("<{path}>; rel=preload; as=style"));
            routes = routes.route(
                &path,
                Resp::new(200, vec![b'c'; 3 * 1024]).header("content-type", "text/css"),
            );
        }
        routes = routes.route(&format!("/p{page}"), resp);
    }
    routes
}

#[tokio::test]
async fn nghttp_three_pages_pushing_at_once_get_promised_ids_in_increasing_order() {
    let nghttp = need!("nghttp", "nghttp2-client");
    bounded(async {
        let origin = TestOrigin::routes(pushing_pages(3)).await;
        let proxy = TestProxy::start(&origin.url(), MANY_PUSHES).await;
        let base = format!("https://127.0.0.1:{}", proxy.addr.port());

        // One connection, three requests at once: their pushes are queued
        // together.
        let mut list = args(&["-nv"]);
        list.extend((0..3).map(|page| format!("{base}/p{page}")));
        let output = run(&nghttp, &list).await;
        output.assert_success();
        let log = output.text();
        // nghttp answers a promised id going backwards with
        // GOAWAY(PROTOCOL_ERROR, "invalid promised_stream_id").
        assert!(!log.contains("PROTOCOL_ERROR"), "{log}");
        let frames = parse_frames(&log);
        for goaway in frames.iter().filter(|f| f.kind == "GOAWAY") {
            assert!(
                goaway
                    .details
                    .iter()
                    .all(|d| !d.contains("error_code=") || d.contains("error_code=NO_ERROR")),
                "{goaway:?}\n{log}"
            );
        }

        let promised: Vec<u32> = frames
            .iter()
            .filter(|f| f.is(true, "PUSH_PROMISE"))
            .map(|f| {
                f.promised_stream()
                    .unwrap_or_else(|| panic!("promise without a stream: {f:?}"))
            })
            .collect();
        assert_eq!(promised.len(), 30, "{log}");
        assert!(
            promised.windows(2).all(|w| w[0] < w[1]),
            "promised ids not increasing: {promised:?}\n{log}"
        );
        for page in 0..3 {
            let fetch = Fetch::parse(log.clone(), &format!("/p{page}"));
            let on_parent = frames
                .iter()
                .filter(|f| f.is(true, "PUSH_PROMISE") && f.stream == fetch.parent)
                .count();
            assert_eq!(on_parent, 10, "page {page}\n{log}");
            assert!(fetch.body_of(fetch.parent).1, "page {page}\n{log}");
        }
        let fetch = Fetch::parse(log.clone(), "/p0");
        for id in promised {
            assert_eq!(fetch.body_of(id), (3 * 1024, true), "push {id}\n{log}");
        }
    })
    .await;
}

#[tokio::test]
async fn curl_http2_gets_exact_bytes_and_policy_links_without_pushes() {
    let php = need!("php", "php-cli");
    let curl_bin = need!("curl", "curl");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_php, origin) = start_php(&php, dir.path()).await;
        let proxy = TestProxy::start(&format!("http://{origin}"), EXPLAIN).await;

        // curl sends SETTINGS_ENABLE_PUSH=0: preload links pass unchanged,
        // nothing is pushed, and only the page comes back.
        let (dump, body) = curl(&curl_bin, &proxy, "--http2", "/preload.php").await;
        assert_eq!(dump.status_lines.len(), 1, "{:?}", dump.status_lines);
        assert!(dump.status_lines[0].starts_with("HTTP/2 200"));
        assert_eq!(dump.all("link"), strings(&PRELOAD_LINKS));
        assert_eq!(
            dump.all("x-push-decision"),
            vec![
                "</assets/style.css>; preload; reason=client-disabled, \
                  </assets/app.js>; preload; reason=client-disabled, \
                  </assets/logo.png>; preload; reason=client-disabled, \
                  </assets/late.js>; preload; reason=nopush"
            ]
        );
        assert_eq!(body, origin_get(origin, "/preload.php").await.1);

        let (dump, body) = curl(&curl_bin, &proxy, "--http2", "/push.php").await;
        assert_eq!(dump.status(), 200);
        assert_eq!(dump.all("link"), strings(&PUSH_LINKS_AS_PRELOAD));
        assert_eq!(body, origin_get(origin, "/push.php").await.1);

        for asset in ["/assets/app.js", "/assets/logo.png"] {
            let (dump, body) = curl(&curl_bin, &proxy, "--http2", asset).await;
            assert_eq!(dump.status(), 200, "{asset}");
            assert!(dump.all("x-http2-push").is_empty(), "{asset}");
            assert!(body == fixture(asset), "{asset}: body differs");
        }
    })
    .await;
}

#[tokio::test]
async fn curl_http1_gets_exact_bytes_and_rel_push_rewritten_to_preload() {
    let php = need!("php", "php-cli");
    let curl_bin = need!("curl", "curl");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_php, origin) = start_php(&php, dir.path()).await;
        let proxy = TestProxy::start(&format!("http://{origin}"), EXPLAIN).await;

        let (dump, body) = curl(&curl_bin, &proxy, "--http1.1", "/push.php").await;
        assert_eq!(dump.status_lines.len(), 1, "{:?}", dump.status_lines);
        assert!(dump.status_lines[0].starts_with("HTTP/1.1 200"));
        assert_eq!(dump.all("link"), strings(&PUSH_LINKS_AS_PRELOAD));
        assert_eq!(
            dump.all("x-push-decision"),
            vec![
                "</assets/style.css>; preload; reason=http1-client, \
                  </assets/app.js>; preload; reason=http1-client, \
                  </assets/logo.png>; preload; reason=http1-client"
            ]
        );
        assert_eq!(body, origin_get(origin, "/push.php").await.1);

        let (dump, body) = curl(&curl_bin, &proxy, "--http1.1", "/preload.php").await;
        assert_eq!(dump.status(), 200);
        assert_eq!(dump.all("link"), strings(&PRELOAD_LINKS));
        assert_eq!(body, origin_get(origin, "/preload.php").await.1);

        for asset in ["/assets/app.js", "/assets/logo.png"] {
            let (dump, body) = curl(&curl_bin, &proxy, "--http1.1", asset).await;
            assert_eq!(dump.status(), 200, "{asset}");
            assert!(body == fixture(asset), "{asset}: body differs");
        }
    })
    .await;
}

#[tokio::test]
async fn h2load_200_requests_on_4_connections_all_succeed() {
    let php = need!("php", "php-cli");
    let h2load = need!("h2load", "nghttp2-client");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_php, origin) = start_php(&php, dir.path()).await;
        let proxy = TestProxy::start(&format!("http://{origin}"), EXPLAIN).await;
        let url = format!("https://127.0.0.1:{}/preload.php", proxy.addr.port());
        let output = run(
            &h2load,
            &args(&["-n", "200", "-c", "4", "-m", "4", url.as_str()]),
        )
        .await;
        let text = output.text();
        // requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored, 0 timeout
        let line = text
            .lines()
            .find(|l| l.starts_with("requests: "))
            .unwrap_or_else(|| panic!("no summary from h2load:\n{text}\n{}", output.stderr));
        let counts: BTreeMap<String, u64> = line["requests: ".len()..]
            .split(", ")
            .filter_map(|part| {
                let (n, what) = part.trim().split_once(' ')?;
                Some((what.to_string(), n.parse().ok()?))
            })
            .collect();
        for (what, want) in [
            ("total", 200),
            ("started", 200),
            ("done", 200),
            ("succeeded", 200),
            ("failed", 0),
            ("errored", 0),
        ] {
            assert_eq!(counts.get(what), Some(&want), "{what} in: {line}\n{text}");
        }
        assert!(
            text.contains("status codes: 200 2xx, 0 3xx, 0 4xx, 0 5xx"),
            "{text}"
        );
        output.assert_success();
    })
    .await;
}

#[tokio::test]
async fn nghttpx_and_linkpush_push_what_their_policies_say_page_by_page() {
    let php = need!("php", "php-cli");
    let nghttp = need!("nghttp", "nghttp2-client");
    let nghttpx = need!("nghttpx", "nghttp2-proxy");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_php, origin) = start_php(&php, dir.path()).await;
        let proxy = TestProxy::start(&format!("http://{origin}"), EXPLAIN).await;
        let (_nghttpx, nghttpx_addr) =
            start_nghttpx(&nghttpx, &proxy.cert, origin, dir.path()).await;
        let linkpush = format!("https://127.0.0.1:{}", proxy.addr.port());
        let nghttpx = format!("https://{nghttpx_addr}");

        // Both see the pushed set through `-nv` (promises) and `-ans`
        // (statistics, `*` rows).
        let fetch_both = |path: &'static str| {
            let (nghttp, linkpush, nghttpx) = (nghttp.clone(), linkpush.clone(), nghttpx.clone());
            async move {
                let lp = nghttp_nv(&nghttp, &linkpush, path, &[]).await;
                let nx = nghttp_nv(&nghttp, &nghttpx, path, &[]).await;
                let lp_stats = nghttp_ans(&nghttp, &linkpush, path).await;
                let nx_stats = nghttp_ans(&nghttp, &nghttpx, path).await;
                assert_eq!(
                    pushed_in_stats(&lp_stats),
                    lp.promised_paths(),
                    "{}",
                    lp.log
                );
                assert_eq!(
                    pushed_in_stats(&nx_stats),
                    nx.promised_paths(),
                    "{}",
                    nx.log
                );
                (lp, nx, lp_stats, nx_stats)
            }
        };

        // preload.php: the same pushes, the same Link field.
        let (lp, nx, _, _) = fetch_both("/preload.php").await;
        let same = set(&["/assets/app.js", "/assets/logo.png", "/assets/style.css"]);
        assert_eq!(lp.promised_paths(), same, "{}", lp.log);
        assert_eq!(nx.promised_paths(), same, "{}", nx.log);
        assert_eq!(lp.links(), strings(&PRELOAD_LINKS), "{}", lp.log);
        assert_eq!(nx.links(), strings(&PRELOAD_LINKS), "{}", nx.log);
        for fetch in [&lp, &nx] {
            for promise in fetch.promises() {
                let head = fetch.head_of(promise.stream).expect("pushed response");
                assert_eq!(head.header(":status"), Some("200"), "{}", fetch.log);
                assert_eq!(head.header("x-http2-push"), Some("1"), "{}", fetch.log);
            }
        }

        // push.php: nghttpx does not know rel=push: it pushes only the
        // preload and forwards the field as is. linkpush pushes all three and
        // drops the rel=push links from the field.
        let (lp, nx, _, nx_stats) = fetch_both("/push.php").await;
        assert_eq!(
            lp.promised_paths(),
            set(&["/assets/app.js", "/assets/logo.png", "/assets/style.css"]),
            "{}",
            lp.log
        );
        assert_eq!(lp.links(), strings(&PUSH_LINKS[2..]), "{}", lp.log);
        assert_eq!(
            nx.promised_paths(),
            set(&["/assets/logo.png"]),
            "{}",
            nx.log
        );
        assert_eq!(nx.links(), strings(&PUSH_LINKS), "{}", nx.log);
        // (nghttp -a then fetches the two rel=push assets itself.)
        for path in ["/assets/style.css", "/assets/app.js"] {
            assert!(
                nx_stats
                    .iter()
                    .any(|s| s.path == path && !s.pushed && s.code == 200),
                "{nx_stats:#?}"
            );
        }

        // cross.php: nghttpx pushes the cross-origin URL (under the other
        // authority, fetched from its one backend, which answers 404) and the
        // credentialed font. linkpush pushes only the same-origin style.
        let (lp, nx, _, _) = fetch_both("/cross.php").await;
        assert_eq!(
            lp.promised_paths(),
            set(&["/assets/style.css"]),
            "{}",
            lp.log
        );
        assert_eq!(lp.links(), strings(&CROSS_LINKS), "{}", lp.log);
        assert_eq!(
            lp.response().header("x-push-decision"),
            Some(CROSS_DECISIONS),
            "{}",
            lp.log
        );
        assert_eq!(
            nx.promised_paths(),
            set(&["/assets/font.woff2", "/assets/style.css", "/lib.js"]),
            "{}",
            nx.log
        );
        assert_eq!(nx.links(), strings(&CROSS_LINKS), "{}", nx.log);
        let cross = nx
            .promises()
            .into_iter()
            .find(|p| p.path == "/lib.js")
            .expect("cross-origin push");
        assert_eq!(cross.authority, "cdn.example.com", "{}", nx.log);
        let head = nx
            .head_of(cross.stream)
            .expect("cross-origin pushed response");
        assert_eq!(head.header(":status"), Some("404"), "{}", nx.log);
        let font = nx
            .promises()
            .into_iter()
            .find(|p| p.path == "/assets/font.woff2")
            .expect("font push");
        assert_eq!(font.authority, nghttpx_addr.to_string());
        let head = nx.head_of(font.stream).expect("pushed font");
        assert_eq!(head.header(":status"), Some("200"), "{}", nx.log);
        assert_eq!(
            nx.body_of(font.stream),
            (fixture("/assets/font.woff2").len(), true)
        );
    })
    .await;
}

// ---------------------------------------------------------------------------
// The parsers, on captured output

#[test]
fn nghttp_log_parser_reads_promises_fields_and_order() {
    let log = "\
[  0.017] send HEADERS frame <length=47, flags=0x25, stream_id=13>
          ; END_STREAM | END_HEADERS | PRIORITY
          (padlen=0, dep_stream_id=11, weight=16, exclusive=0)
          ; Open new stream
          :method: GET
          :path: /p.php
[  0.039] recv (stream_id=13) :method: GET
[  0.039] recv (stream_id=13) :path: /a.css
[  0.039] recv (stream_id=13) :authority: h:1
[  0.039] recv PUSH_PROMISE frame <length=62, flags=0x04, stream_id=13>
          ; END_HEADERS
          (padlen=0, promised_stream_id=2)
[  0.039] recv (stream_id=13) :status: 200
[  0.039] recv (stream_id=13) link: </a.css>; rel=preload
[  0.039] recv HEADERS frame <length=217, flags=0x04, stream_id=13>
          ; END_HEADERS
[  0.040] recv (stream_id=2) :status: 200
[  0.040] recv HEADERS frame <length=3, flags=0x04, stream_id=2>
[  0.041] recv DATA frame <length=10, flags=0x00, stream_id=2>
[  0.041] recv DATA frame <length=5, flags=0x01, stream_id=2>
";
    let fetch = Fetch::parse(log.to_string(), "/p.php");
    assert_eq!(fetch.parent, 13);
    assert_eq!(
        fetch.promises(),
        vec![Promise {
            authority: "h:1".into(),
            path: "/a.css".into(),
            stream: 2
        }]
    );
    assert!(fetch.promise_indices()[0] < fetch.response_index());
    assert_eq!(fetch.links(), vec!["</a.css>; rel=preload"]);
    assert_eq!(fetch.body_of(2), (15, true));
    assert_eq!(fetch.body_of(13), (0, false));
}

#[test]
fn nghttp_stdout_with_bodies_splits_per_stream() {
    let mut out = Vec::new();
    out.extend_from_slice(b"The negotiated protocol: h2\n");
    out.extend_from_slice(b"[  0.001] recv HEADERS frame <length=3, flags=0x04, stream_id=13>\n");
    out.extend_from_slice(b"hello ");
    out.extend_from_slice(
        b"[  0.002] send WINDOW_UPDATE frame <length=4, flags=0x00, stream_id=0>\n",
    );
    out.extend_from_slice(b"          (window_size_increment=10)\n");
    out.extend_from_slice(b"world\n");
    out.extend_from_slice(b"[  0.003] recv DATA frame <length=12, flags=0x00, stream_id=13>\n");
    out.extend_from_slice(b"\x89PNG\0[x]");
    out.extend_from_slice(b"[  0.004] recv DATA frame <length=8, flags=0x01, stream_id=2>\n");
    out.extend_from_slice(b"[  0.005] recv DATA frame <length=0, flags=0x01, stream_id=13>\n");
    let (log, bodies) = split_bodies(&out);
    assert_eq!(bodies[&13], b"hello world\n");
    assert_eq!(bodies[&2], b"\x89PNG\0[x]");
    assert_eq!(parse_frames(&log).len(), 5);
}

#[test]
fn nghttp_stats_parser_marks_pushes() {
    let text = "\
sorted by 'complete'

id  responseEnd requestStart  process code size request path
 13     +3.61ms        +90us   3.52ms  200  286 /preload.php
  6     +3.68ms *    +3.52ms    161us  200  513 /assets/logo.png
  2     +1.51ms *     +900us    608us  404  539 /lib.js
";
    let stats = parse_stats(text);
    assert_eq!(stats.len(), 3);
    assert!(!stats[0].pushed && stats[0].code == 200 && stats[0].path == "/preload.php");
    assert_eq!(
        pushed_in_stats(&stats),
        set(&["/assets/logo.png", "/lib.js"])
    );
    assert_eq!(stats[2].code, 404);
}

/// Puma with `--early-hints`, serving the Rack app in tests/fixtures/puma.
async fn start_puma(puma: &Path, dir: &Path) -> (Running, SocketAddr) {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let rackup = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/puma/config.ru");
    let mut server = Running::spawn(
        "puma",
        Command::new(puma)
            .arg("--early-hints")
            .arg("-b")
            .arg(format!("tcp://{addr}"))
            .args(["-t", "1:4", "-w", "0", "-e", "test"])
            .arg(rackup),
        dir.join("puma.log"),
    );
    server.wait_listening(addr).await;
    (server, addr)
}

#[tokio::test]
async fn nghttp_sees_pushes_started_from_pumas_103_before_the_page() {
    let puma = need!("puma", "puma");
    let nghttp = need!("nghttp", "nghttp2-client");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_puma, origin) = start_puma(&puma, dir.path()).await;
        let proxy = TestProxy::start(&format!("http://{origin}"), "").await;
        let base = format!("https://127.0.0.1:{}", proxy.addr.port());
        let fetch = nghttp_nv(&nghttp, &base, "/", &[]).await;
        let log = &fetch.log;
        // Both links of the 103 were promised, before the final HEADERS,
        // and the final response's repeat of a.css was not promised again.
        assert_eq!(fetch.promised_paths(), set(&["/a.css", "/b.js"]), "{log}");
        assert_eq!(fetch.promises().len(), 2, "{log}");
        let response_at = fetch.response_index();
        assert!(
            fetch.promise_indices().iter().all(|at| *at < response_at),
            "{log}"
        );
        // A push-capable client gets the pushes instead of the 103.
        assert!(
            !fetch
                .frames
                .iter()
                .any(|f| f.recv && f.header(":status") == Some("103")),
            "{log}"
        );
        for promise in fetch.promises() {
            let (len, ended) = fetch.body_of(promise.stream);
            assert!(ended && len > 0, "push {promise:?} incomplete:\n{log}");
        }
        assert_eq!(fetch.response().header(":status"), Some("200"), "{log}");
    })
    .await;
}

#[tokio::test]
async fn nghttp_no_push_sees_pumas_103_with_rel_push_as_preload() {
    let puma = need!("puma", "puma");
    let nghttp = need!("nghttp", "nghttp2-client");
    bounded(async {
        let dir = tempfile::tempdir().unwrap();
        let (_puma, origin) = start_puma(&puma, dir.path()).await;
        let proxy = TestProxy::start(&format!("http://{origin}"), "").await;
        let base = format!("https://127.0.0.1:{}", proxy.addr.port());
        let fetch = nghttp_nv(&nghttp, &base, "/", &["--no-push"]).await;
        let log = &fetch.log;
        assert!(fetch.promises().is_empty(), "{log}");
        let hints: Vec<usize> = (0..fetch.frames.len())
            .filter(|&i| {
                let f = &fetch.frames[i];
                f.is(true, "HEADERS")
                    && f.stream == fetch.parent
                    && f.header(":status") == Some("103")
            })
            .collect();
        assert!(!hints.is_empty(), "no 103 received:\n{log}");
        assert!(hints.iter().all(|at| *at < fetch.response_index()), "{log}");
        let hinted: Vec<String> = hints
            .iter()
            .flat_map(|at| fetch.frames[*at].all("link"))
            .collect();
        assert_eq!(
            hinted,
            strings(&[
                "</a.css>; rel=preload; as=style",
                "</b.js>; rel=preload; as=script"
            ]),
            "{log}"
        );
        assert_eq!(
            fetch.links(),
            strings(&["</a.css>; rel=preload; as=style"]),
            "{log}"
        );
    })
    .await;
}

/// curl, which checks the certificate against the name it asked for, gets
/// each site's own certificate by SNI and that site's origin's page; a
/// name no site has gets 421.
#[tokio::test]
async fn curl_gets_each_sites_certificate_and_page_and_421_for_another_name() {
    let curl_bin = need!("curl", "curl");
    bounded(async {
        let mut sites = String::new();
        let mut origins = Vec::new();
        let mut running = Vec::new();
        for name in ["shop.example", "app.example"] {
            let cert = TestCert::for_names(&[name]);
            let origin = TestOrigin::routes(Routes::new().route("/", Resp::html(name))).await;
            let upstream = name.replace('.', "_");
            sites.push_str(&format!(
                "[upstreams.{upstream}]\nservers = [\"{}\"]\n",
                origin.url()
            ));
            origins.push((name, cert, upstream));
            running.push(origin);
        }
        for (name, cert, upstream) in &origins {
            sites.push_str(&format!(
                "[[sites]]\nnames = [\"{name}\"]\ncert = {:?}\nkey = {:?}\nupstream = \"{upstream}\"\n",
                cert.cert_path.display().to_string(),
                cert.key_path.display().to_string()
            ));
        }
        let proxy = TestProxy::start("http://127.0.0.1:9", &sites).await;
        let port = proxy.addr.port();
        for (name, cert, _) in &origins {
            for version in ["--http2", "--http1.1"] {
                let output = run(
                    &curl_bin,
                    &[
                        "-sS".into(),
                        version.into(),
                        "--max-time".into(),
                        "15".into(),
                        "--cacert".into(),
                        cert.cert_path.display().to_string(),
                        "--resolve".into(),
                        format!("{name}:{port}:127.0.0.1"),
                        format!("https://{name}:{port}/"),
                    ],
                )
                .await;
                output.assert_success();
                assert_eq!(output.text(), *name, "{name} {version}");
            }
        }
        // A name no site has: the handshake gets a site's certificate
        // (curl is told not to check it), then the request gets 421.
        let output = run(
            &curl_bin,
            &[
                "-sS".into(),
                "-k".into(),
                "-o".into(),
                "/dev/null".into(),
                "-w".into(),
                "%{http_code}".into(),
                "--max-time".into(),
                "15".into(),
                "--resolve".into(),
                format!("other.example:{port}:127.0.0.1"),
                format!("https://other.example:{port}/"),
            ],
        )
        .await;
        assert_eq!(output.assert_success().stdout, b"421");
    })
    .await;
}
