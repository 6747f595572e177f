//! Every key of the plain tables, declared once: its doc comment, typed
//! field, default, the type toml reads it as, and its check. See
//! `declare.rs` for what an entry expands to. `[[listen]]`, `[tls]` and
//! `origin.url` are checked by hand in `special.rs`, `[[sites]]` in
//! `sites.rs`. `[upstreams]` declares the keys of each `[upstreams.NAME]`.
//!
//! A new key is one entry here, plus its row in docs/configuration.md and
//! its line in proxy.toml (a test fails until both are there).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::check::{
    as_is, balance, cookie_name, count, duration, each, header_name, health_path, log_format,
    log_level, log_path, origin_addr, positive_duration, preload_mode, route_pattern, server_name,
    size, some_socket_addr, Checker, Loose, GIB, MIB, MIN_HEADER_BUFFER,
};
use super::{Balance, LogFormat, OriginAddr, PreloadMode};

sections! {
    /// Where requests go, and how origin connections are pooled.
    [origin] OriginConfig, RawOrigin {
        /// `http://host:port` or `unix:/path/to.sock`: the upstream named
        /// `origin`. Required without `[[sites]]`, so it has no default.
        by hand addr: Option<OriginAddr>, from url: String;
        /// Origin connections open at once over all workers (one request each).
        max_concurrent_requests: usize = 256,
            from i64, check count(1..=i64::MAX);
        /// Idle keep-alive connections kept open to the origin, over all
        /// workers; `0` opens a new connection for each request.
        max_idle_connections => max_idle_per_host: usize = 256,
            from i64, check count(0..=i64::MAX);
        /// How long an idle origin connection is kept.
        pool_idle_timeout: Duration = Duration::from_secs(30),
            from Loose, check positive_duration;
        /// hyper's http1_max_buf_size for origin responses.
        max_response_header_size => max_response_header_bytes: usize = 64 * 1024,
            from Loose, check size(MIN_HEADER_BUFFER..=u64::MAX);
    }

    /// One named group of origin addresses (`[upstreams.NAME]`), and how
    /// requests are spread over them and kept away from failing ones.
    [upstreams] UpstreamSettings, RawUpstream {
        /// The addresses, `http://host:port` or `unix:/path/to.sock`; at
        /// least one (checked in `sites.rs`).
        servers: Vec<OriginAddr> = Vec::new(),
            from Vec<String>, check each(origin_addr);
        /// How an address is picked for each request.
        balance: Balance = Balance::RoundRobin,
            from String, check balance;
        /// Consecutive failures (connect errors, timeouts, broken responses)
        /// that take an address out of rotation; `0`: never.
        max_fails: u32 = 3,
            from i64, check count(0..=1_000_000);
        /// How long an address stays out after `max_fails`.
        fail_timeout: Duration = Duration::from_secs(10),
            from Loose, check positive_duration;
        /// Request this path on every address, every
        /// `health_check_interval`, and keep an address out of rotation
        /// while the answer is not `health_check_status`. None: no checks.
        health_check_path: Option<String> = None,
            from String, check health_path;
        /// Time between two active checks of one address.
        health_check_interval: Duration = Duration::from_secs(5),
            from Loose, check positive_duration;
        /// How long one active check may take.
        health_check_timeout: Duration = Duration::from_secs(2),
            from Loose, check positive_duration;
        /// The status a healthy address answers with.
        health_check_status: u16 = 200,
            from i64, check count(100..=599);
        /// Start each connection with a PROXY protocol v2 header naming the
        /// client; such a connection only ever carries requests of the
        /// client connection it was opened for.
        proxy_protocol: bool = false,
            from bool, check as_is;
    }

    /// How long each side may take.
    [timeouts] Timeouts, RawTimeouts {
        /// Time allowed to connect to the origin.
        origin_connect: Duration = Duration::from_secs(5),
            from Loose, check positive_duration;
        /// From sending a request to the origin until its response head
        /// arrives.
        origin_response_header: Duration = Duration::from_secs(60),
            from Loose, check positive_duration;
        /// Longest wait for the next bytes of an origin's response body.
        origin_read: Duration = Duration::from_secs(60),
            from Loose, check positive_duration;
        /// An HTTP/2 connection with nothing in flight is closed after this.
        client_idle: Duration = Duration::from_secs(180),
            from Loose, check positive_duration;
        /// Longest wait for a client to take more response bytes: an HTTP/1.1
        /// socket that accepts no writes, or an HTTP/2 stream without
        /// flow-control credit.
        client_write: Duration = Duration::from_secs(60),
            from Loose, check positive_duration;
        /// Longest wait for the next bytes of a request body the client is
        /// sending; past it the client gets a 408 and the origin request ends.
        client_body_read: Duration = Duration::from_secs(60),
            from Loose, check positive_duration;
        /// Time for a client to send a complete request head.
        client_header_read: Duration = Duration::from_secs(30),
            from Loose, check positive_duration;
        /// Time for a client to complete the TLS handshake.
        tls_handshake: Duration = Duration::from_secs(10),
            from Loose, check positive_duration;
        /// A tunnel (WebSocket or other upgrade) that carries no bytes either
        /// way for this long is closed.
        tunnel_idle: Duration = Duration::from_secs(300),
            from Loose, check positive_duration;
        /// How long requests in flight may finish on shutdown. Zero is
        /// allowed: close connections at once.
        shutdown_grace: Duration = Duration::from_secs(30),
            from Loose, check duration;
    }

    /// What clients may open and send.
    [limits] Limits, RawLimits {
        /// Client connections open at once, over all listeners.
        max_connections: usize = 10_000,
            from i64, check count(1..=i64::MAX);
        /// HTTP/2 streams open at once on one client connection.
        max_concurrent_streams: u32 = 100,
            from i64, check count(1..=i64::from(u32::MAX));
        /// Largest request head a client may send; hyper's max_buf_size.
        max_request_header_size => max_request_header_bytes: u32 = 64 * 1024,
            from Loose, check size(MIN_HEADER_BUFFER..=u64::from(u32::MAX));
        /// Most header fields in one request.
        max_request_headers: usize = 100,
            from i64, check count(1..=i64::MAX);
        /// Largest request body a client may send.
        max_request_body_size => max_request_body_bytes: u64 = GIB,
            from Loose, check size(1..=u64::MAX);
    }

    /// What the origin is told about the client.
    [forwarding] Forwarding, RawForwarding {
        /// Keep (and append to) incoming X-Forwarded-For / Forwarded instead of overwriting.
        trust_incoming: bool = false,
            from bool, check as_is;
        /// Add `Via` to requests toward the origin.
        via: bool = true,
            from bool, check as_is;
    }

    /// What is logged, and how.
    [log] LogConfig, RawLog {
        /// The diagnostic log's filter, a tracing EnvFilter directive such
        /// as `info` or `linkpush=debug,info`. `None` when neither the file
        /// nor `--log-level` sets it: then `RUST_LOG` applies, else `info`
        /// (see `logging`). It never affects the access log.
        level: Option<String> = None,
            from String, check log_level;
        /// Text for people, JSON for log collectors.
        format: LogFormat = LogFormat::Text,
            from String, check log_format;
        /// One access-log line per request.
        access_log: bool = true,
            from bool, check as_is;
        /// The file access-log lines are appended to; standard output when
        /// `None`. Relative to the config file's directory.
        access_log_path: Option<PathBuf> = None,
            from String, check log_path;
    }

    /// The Prometheus endpoint.
    [metrics] MetricsConfig, RawMetrics {
        /// Where Prometheus metrics are served; none when `None`.
        listen: Option<SocketAddr> = None,
            from String, check some_socket_addr;
    }

    /// When and what to push.
    [push] PushSettings, RawPush {
        /// Turn Link headers from the origin into pushes.
        enabled: bool = true,
            from bool, check as_is;
        /// What `rel=preload` links get.
        preload: PreloadMode = PreloadMode::Push,
            from String, check preload_mode;
        /// Most resources pushed for one response.
        max_pushes_per_response: usize = 10,
            from i64, check count(1..=i64::MAX);
        /// Most bytes pushed for one response.
        max_pushed_bytes_per_response: u64 = MIB,
            from Loose, check size(1..=u64::MAX);
        /// Resources remembered per connection, so that none is pushed twice.
        diary_size: usize = 1024,
            from i64, check count(1..=i64::MAX);
        /// Also push what browsers fetch in CORS mode.
        allow_credentialed: bool = false,
            from bool, check as_is;
        /// Lower-case header names copied from the parent in addition to the fixed set.
        forward_headers: Vec<String> = Vec::new(),
            from Vec<String>, check each(header_name);
        /// Add an `x-push-decision` response header.
        explain: bool = false,
            from bool, check as_is;
        /// Decide and explain pushes without sending them.
        dry_run: bool = false,
            from bool, check as_is;
        /// Cancel a push whose response is `Cache-Control: private` or
        /// `no-store` (a browser may still use such a push for the page it
        /// belongs to, RFC 9113 §8.4, so the default is to push it).
        cancel_uncacheable: bool = false,
            from bool, check as_is;
        /// Pushed streams in progress at once on one connection; each holds at
        /// most `max_pushed_bytes_per_response` in memory.
        max_concurrent_pushes: usize = 16,
            from i64, check count(1..=65_535);
        /// Remember what each browser was pushed in a cookie, and skip it next time.
        cache_digest: bool = false,
            from bool, check as_is;
        /// The name of that cookie.
        cache_digest_cookie: String = "lp_digest".to_owned(),
            from String, check cookie_name;
        /// How long an asset's last seen validator is trusted when checking
        /// the digest before a push.
        cache_digest_validator_ttl: Duration = Duration::from_secs(60),
            from Loose, check duration;
    }

    /// 103 Early Hints, passed on from the origin or learned.
    [hints] HintSettings, RawHints {
        /// Pass 103 Early Hints from the origin on to HTTP/2 clients.
        forward_origin_103: bool = true,
            from bool, check as_is;
        /// Learn each page's preload links and hint or push them before the
        /// origin answers the next request for that page.
        learn: bool = false,
            from bool, check as_is;
        /// Most pages remembered.
        learn_max_entries: usize = 10_000,
            from i64, check count(1..=i64::MAX);
        /// Most bytes remembered.
        learn_max_bytes: u64 = 8 * MIB,
            from Loose, check size(1..=u64::MAX);
        /// How long a learned entry is used without the origin confirming it.
        learn_ttl: Duration = Duration::from_secs(3600),
            from Loose, check positive_duration;
        /// Distinct clients (IPv4 address, IPv6 /64) that must have been sent a
        /// link for a page before it is hinted to anyone: below that, the link
        /// may be one visitor's own. With 1, private pages are not learned.
        learn_min_clients: usize = 3,
            from i64, check count(1..=64);
        /// Key learned pages by path and exact query, not by path alone.
        learn_query: bool = false,
            from bool, check as_is;
        /// Path patterns (`*` matches within one segment, `**` anything) whose
        /// matching pages share one learned entry.
        learn_routes: Vec<String> = Vec::new(),
            from Vec<String>, check each(route_pattern);
    }

    /// How the process runs.
    [server] ServerSettings, RawServer {
        /// Worker threads, each with its own event loop, accepting on every
        /// listener. `0`: one per CPU this process may run on.
        workers: usize = 0,
            from i64, check count(0..=1024);
        /// Host names this proxy answers for (lower case; `*.example.com`
        /// covers one label). Pushes are only promised under these names, or,
        /// when the list is empty, under the certificate's names.
        names: Vec<String> = Vec::new(),
            from Vec<String>, check each(server_name);
    }
}
