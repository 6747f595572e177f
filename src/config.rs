//! `proxy.toml` -> validated [`Config`].
//!
//! Loading takes three steps:
//!
//! 1. The TOML text is deserialized into a loose mirror of the file
//!    (`RawFile` and friends). Every table rejects unknown keys, so a typo is
//!    reported by toml with its line. Values that need a semantic check
//!    (durations, sizes, addresses, URLs) are kept as strings or integers.
//! 2. Command-line [`Overrides`] replace the values they name.
//! 3. A `Checker` turns each value into its typed form. It never stops at the
//!    first bad value: every problem is collected, each naming the file key
//!    (`timeouts.origin_connect`, `listen[1].address`) or the flag (`--origin`)
//!    it came from, so one `linkpush check` run shows everything to fix.

use std::fmt;
use std::fs;
use std::io;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// The whole validated configuration. Every field has a default, so an empty
/// file plus `--listen/--origin/--self-signed` flags is a complete config.
#[derive(Debug, Clone)]
pub struct Config {
    pub listeners: Vec<ListenerConfig>,
    pub tls: TlsConfig,
    pub origin: OriginConfig,
    pub timeouts: Timeouts,
    pub limits: Limits,
    pub forwarding: Forwarding,
    pub log: LogConfig,
    pub metrics: MetricsConfig,
    pub push: PushSettings,
    pub hints: HintSettings,
    pub server: ServerSettings,
}

/// How the process runs.
#[derive(Debug, Clone, Default)]
pub struct ServerSettings {
    /// Worker threads, each with its own event loop, accepting on every
    /// listener. `0`: one per CPU this process may run on.
    pub workers: usize,
    /// Host names this proxy answers for (lower case; `*.example.com`
    /// covers one label). Pushes are only promised under these names, or,
    /// when the list is empty, under the certificate's names.
    pub names: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// false: cleartext HTTP/1.1 + h2c prior knowledge.
    pub tls: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    Files { cert: PathBuf, key: PathBuf },
    SelfSigned,
}

#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// None only when no listener uses TLS.
    pub source: Option<TlsSource>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginAddr {
    /// `http://host:port`; host may be a name or an IP.
    Tcp { host: String, port: u16 },
    /// `unix:/path/to.sock`
    Unix(PathBuf),
}

#[derive(Debug, Clone)]
pub struct OriginConfig {
    pub addr: OriginAddr,
    /// Origin connections open at once over all workers (one request each).
    pub max_concurrent_requests: usize,
    pub max_idle_per_host: usize,
    pub pool_idle_timeout: Duration,
    /// hyper's http1_max_buf_size for origin responses.
    pub max_response_header_bytes: usize,
}

#[derive(Debug, Clone)]
pub struct Timeouts {
    pub origin_connect: Duration,
    pub origin_response_header: Duration,
    /// Longest wait for the next bytes of an origin's response body.
    pub origin_read: Duration,
    pub client_idle: Duration,
    /// Longest wait for a client to take more response bytes: an HTTP/1.1
    /// socket that accepts no writes, or an HTTP/2 stream without
    /// flow-control credit.
    pub client_write: Duration,
    /// Longest wait for the next bytes of a request body the client is
    /// sending; past it the client gets a 408 and the origin request ends.
    pub client_body_read: Duration,
    pub client_header_read: Duration,
    pub tls_handshake: Duration,
    pub shutdown_grace: Duration,
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_concurrent_streams: u32,
    pub max_request_header_bytes: u32,
    pub max_request_headers: usize,
    pub max_request_body_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Forwarding {
    /// Keep (and append to) incoming X-Forwarded-For / Forwarded instead of overwriting.
    pub trust_incoming: bool,
    /// Add `Via` to requests toward the origin.
    pub via: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A tracing EnvFilter directive such as `info` or `linkpush=debug`.
    pub level: String,
    pub format: LogFormat,
    pub access_log: bool,
}

#[derive(Debug, Clone)]
pub struct MetricsConfig {
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreloadMode {
    Push,
    HintOnly,
}

#[derive(Debug, Clone)]
pub struct PushSettings {
    pub enabled: bool,
    pub preload: PreloadMode,
    pub max_pushes_per_response: usize,
    pub max_pushed_bytes_per_response: u64,
    pub diary_size: usize,
    pub allow_credentialed: bool,
    /// Lower-case header names copied from the parent in addition to the fixed set.
    pub forward_headers: Vec<String>,
    pub explain: bool,
    pub dry_run: bool,
    /// Cancel a push whose response is `Cache-Control: private` or
    /// `no-store` (a browser may still use such a push for the page it
    /// belongs to, RFC 9113 §8.4, so the default is to push it).
    pub cancel_uncacheable: bool,
    /// Pushed streams in progress at once on one connection; each holds at
    /// most `max_pushed_bytes_per_response` in memory.
    pub max_concurrent_pushes: usize,
    /// Remember what each browser was pushed in a cookie, and skip it next time.
    pub cache_digest: bool,
    /// The name of that cookie.
    pub cache_digest_cookie: String,
    /// How long an asset's last seen validator is trusted when checking
    /// the digest before a push.
    pub cache_digest_validator_ttl: Duration,
}

#[derive(Debug, Clone)]
pub struct HintSettings {
    pub forward_origin_103: bool,
    /// Learn each page's preload links and hint or push them before the
    /// origin answers the next request for that page.
    pub learn: bool,
    pub learn_max_entries: usize,
    pub learn_max_bytes: u64,
    pub learn_ttl: Duration,
    /// Distinct clients (IPv4 address, IPv6 /64) that must have been sent a
    /// link for a page before it is hinted to anyone: below that, the link
    /// may be one visitor's own. With 1, private pages are not learned.
    pub learn_min_clients: usize,
    /// Key learned pages by path and exact query, not by path alone.
    pub learn_query: bool,
    /// Path patterns (`*` matches within one segment, `**` anything) whose
    /// matching pages share one learned entry.
    pub learn_routes: Vec<String>,
}

// ---------------------------------------------------------------------------
// Defaults. The `Default` impls are the single place where default values
// live; the loader starts from them and `proxy.toml` documents them.

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// The listener used when neither the file nor the flags name one.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

/// hyper refuses read buffers smaller than this, so header size limits that
/// feed its `max_buf_size` may not go below it.
const MIN_HEADER_BUFFER: u64 = 8 * KIB;

const ORIGIN_MAX_CONCURRENT_REQUESTS: usize = 256;
const ORIGIN_MAX_IDLE_PER_HOST: usize = 256;
const ORIGIN_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const ORIGIN_MAX_RESPONSE_HEADER_BYTES: usize = 64 * 1024;

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            origin_connect: Duration::from_secs(5),
            origin_response_header: Duration::from_secs(60),
            origin_read: Duration::from_secs(60),
            client_idle: Duration::from_secs(180),
            client_write: Duration::from_secs(60),
            client_body_read: Duration::from_secs(60),
            client_header_read: Duration::from_secs(30),
            tls_handshake: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 10_000,
            max_concurrent_streams: 100,
            max_request_header_bytes: 64 * 1024,
            max_request_headers: 100,
            max_request_body_bytes: GIB,
        }
    }
}

impl Default for Forwarding {
    fn default() -> Self {
        Forwarding {
            trust_incoming: false,
            via: true,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings {
            enabled: true,
            preload: PreloadMode::Push,
            max_pushes_per_response: 10,
            max_pushed_bytes_per_response: MIB,
            diary_size: 1024,
            allow_credentialed: false,
            forward_headers: Vec::new(),
            explain: false,
            dry_run: false,
            cancel_uncacheable: false,
            max_concurrent_pushes: 16,
            cache_digest: false,
            cache_digest_cookie: "lp_digest".to_string(),
            cache_digest_validator_ttl: Duration::from_secs(60),
        }
    }
}

impl Default for HintSettings {
    fn default() -> Self {
        HintSettings {
            forward_origin_103: true,
            learn: false,
            learn_max_entries: 10_000,
            learn_max_bytes: 8 * MIB,
            learn_ttl: Duration::from_secs(3600),
            learn_min_clients: 3,
            learn_query: false,
            learn_routes: Vec::new(),
        }
    }
}

// ---------------------------------------------------------------------------
// Errors

/// One bad value: where it came from and what is expected instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file key (`timeouts.origin_connect`, `listen[1].address`) or the
    /// command-line flag (`--origin`) that holds the bad value.
    pub key: String,
    /// What is wrong and what is expected.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file is not valid TOML, has an unknown key, or a value of the
    /// wrong type. `message` is toml's own, with the line and the key.
    #[error("cannot parse {}: {message}", describe_source(.path.as_deref()))]
    Parse {
        /// None when the text did not come from a file.
        path: Option<PathBuf>,
        message: String,
    },
    /// The file parsed, but some values are unusable. Lists every one.
    #[error("invalid configuration:{}", list_problems(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// The semantic problems, if this is [`ConfigError::Invalid`].
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid(problems) => problems,
            ConfigError::Read { .. } | ConfigError::Parse { .. } => &[],
        }
    }
}

fn describe_source(path: Option<&Path>) -> String {
    path.map_or_else(|| "configuration".to_owned(), |p| p.display().to_string())
}

fn list_problems(problems: &[Problem]) -> String {
    problems.iter().map(|p| format!("\n  - {p}")).collect()
}

// ---------------------------------------------------------------------------
// Command-line overrides

/// Values given as command-line flags. They win over the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    /// `--listen`: replaces all listeners with TLS listeners at these addresses.
    pub listen: Vec<String>,
    /// `--listen-plain`: adds cleartext listeners (HTTP/1.1 + h2c).
    pub listen_plain: Vec<String>,
    /// `--origin`
    pub origin: Option<String>,
    /// `--cert`; with `--key` or `--self-signed` replaces the file's `[tls]`.
    pub cert: Option<PathBuf>,
    /// `--key`
    pub key: Option<PathBuf>,
    /// `--self-signed`
    pub self_signed: bool,
    /// `--log-level`
    pub log_level: Option<String>,
    /// `--log-format`
    pub log_format: Option<String>,
    /// `--metrics-listen`
    pub metrics_listen: Option<String>,
    /// `--workers`: worker threads (0 = one per CPU).
    pub workers: Option<i64>,
}

impl Config {
    /// Load `path` (if any), apply overrides, validate. With no file, defaults + overrides.
    ///
    /// Relative `tls.cert` and `tls.key` paths are resolved against the
    /// directory that holds the file; `--cert` and `--key` are used as given.
    pub fn load(path: Option<&Path>, overrides: &Overrides) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return build(RawFile::default(), Path::new("."), overrides);
        };
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let raw = parse(&text, Some(path))?;
        let base_dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        build(raw, base_dir, overrides)
    }

    /// Parse from a string (base_dir resolves relative paths), apply overrides, validate.
    pub fn from_toml_str(
        text: &str,
        base_dir: &Path,
        overrides: &Overrides,
    ) -> Result<Config, ConfigError> {
        build(parse(text, None)?, base_dir, overrides)
    }
}

// ---------------------------------------------------------------------------
// The raw mirror of the file

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// None when the key is absent (use the default listener); `Some([])`
    /// when the file explicitly declares no listener.
    listen: Option<Vec<RawListen>>,
    #[serde(default)]
    tls: RawTls,
    #[serde(default)]
    origin: RawOrigin,
    #[serde(default)]
    timeouts: RawTimeouts,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    forwarding: RawForwarding,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    metrics: RawMetrics,
    #[serde(default)]
    push: RawPush,
    #[serde(default)]
    hints: RawHints,
    #[serde(default)]
    server: RawServer,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    workers: Option<i64>,
    names: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Option<String>,
    tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrigin {
    url: Option<String>,
    max_concurrent_requests: Option<i64>,
    max_idle_connections: Option<i64>,
    pool_idle_timeout: Option<Loose>,
    max_response_header_size: Option<Loose>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTimeouts {
    origin_connect: Option<Loose>,
    origin_response_header: Option<Loose>,
    origin_read: Option<Loose>,
    client_idle: Option<Loose>,
    client_write: Option<Loose>,
    client_body_read: Option<Loose>,
    client_header_read: Option<Loose>,
    tls_handshake: Option<Loose>,
    shutdown_grace: Option<Loose>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    max_connections: Option<i64>,
    max_concurrent_streams: Option<i64>,
    max_request_header_size: Option<Loose>,
    max_request_headers: Option<i64>,
    max_request_body_size: Option<Loose>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawForwarding {
    trust_incoming: Option<bool>,
    via: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLog {
    level: Option<String>,
    format: Option<String>,
    access_log: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPush {
    enabled: Option<bool>,
    preload: Option<String>,
    max_pushes_per_response: Option<i64>,
    max_pushed_bytes_per_response: Option<Loose>,
    diary_size: Option<i64>,
    allow_credentialed: Option<bool>,
    forward_headers: Option<Vec<String>>,
    explain: Option<bool>,
    dry_run: Option<bool>,
    cancel_uncacheable: Option<bool>,
    max_concurrent_pushes: Option<i64>,
    cache_digest: Option<bool>,
    cache_digest_cookie: Option<String>,
    cache_digest_validator_ttl: Option<Loose>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHints {
    forward_origin_103: Option<bool>,
    learn: Option<bool>,
    learn_max_entries: Option<i64>,
    learn_max_bytes: Option<Loose>,
    learn_ttl: Option<Loose>,
    learn_min_clients: Option<i64>,
    learn_query: Option<bool>,
    learn_routes: Option<Vec<String>>,
}

/// A duration or size as written: a string (`"30s"`, `"64KiB"`) or a bare
/// integer. Both are accepted by the parser so that the checker, not toml,
/// explains what is wrong with them.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Loose {
    Int(i64),
    Text(String),
}

impl fmt::Display for Loose {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Loose::Int(n) => write!(f, "{n}"),
            Loose::Text(s) => write!(f, "{s:?}"),
        }
    }
}

impl<'de> Deserialize<'de> for Loose {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LooseVisitor;

        impl Visitor<'_> for LooseVisitor {
            type Value = Loose;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string with a unit, such as \"30s\" or \"64KiB\"")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Loose, E> {
                Ok(Loose::Int(n))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<Loose, E> {
                Ok(Loose::Text(s.to_owned()))
            }
        }

        deserializer.deserialize_any(LooseVisitor)
    }
}

fn parse(text: &str, path: Option<&Path>) -> Result<RawFile, ConfigError> {
    toml::from_str(text).map_err(|err: toml::de::Error| ConfigError::Parse {
        path: path.map(Path::to_path_buf),
        message: err.to_string().trim_end().to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Raw + overrides -> typed

fn build(raw: RawFile, base_dir: &Path, ov: &Overrides) -> Result<Config, ConfigError> {
    let mut check = Checker::default();

    // `set!(table.key => target, parse)` checks `raw.table.key` with `parse`
    // and stores the result in `target`. The problem key is spelled from the
    // same tokens as the raw field, so it always matches the key in the file.
    macro_rules! set {
        ($table:ident . $key:ident => $target:expr, $parse:expr) => {
            check.set(
                concat!(stringify!($table), ".", stringify!($key)),
                raw.$table.$key,
                &mut $target,
                $parse,
            )
        };
    }

    let listeners = check.listeners(raw.listen, ov);
    let tls = check.tls(raw.tls, base_dir, ov, &listeners);

    let (key, url) = pick(ov.origin.clone(), "--origin", raw.origin.url, "origin.url");
    let origin_addr = match url {
        Some(url) => check.ok(&key, parse_origin(&url)),
        None => {
            let message = "is required; set it to \"http://host:port\" or \"unix:/path/to.sock\", \
                           or pass --origin URL";
            check.problem("origin.url", message);
            None
        }
    };
    let mut max_concurrent_requests = ORIGIN_MAX_CONCURRENT_REQUESTS;
    let mut max_idle_per_host = ORIGIN_MAX_IDLE_PER_HOST;
    let mut pool_idle_timeout = ORIGIN_POOL_IDLE_TIMEOUT;
    let mut max_response_header_bytes = ORIGIN_MAX_RESPONSE_HEADER_BYTES;
    set!(origin.max_concurrent_requests => max_concurrent_requests, count(1..=i64::MAX));
    set!(origin.max_idle_connections => max_idle_per_host, count(0..=i64::MAX));
    set!(origin.pool_idle_timeout => pool_idle_timeout, positive_duration);
    set!(origin.max_response_header_size => max_response_header_bytes,
        size(MIN_HEADER_BUFFER..=u64::MAX));

    let mut timeouts = Timeouts::default();
    set!(timeouts.origin_connect => timeouts.origin_connect, positive_duration);
    set!(timeouts.origin_response_header => timeouts.origin_response_header, positive_duration);
    set!(timeouts.origin_read => timeouts.origin_read, positive_duration);
    set!(timeouts.client_idle => timeouts.client_idle, positive_duration);
    set!(timeouts.client_write => timeouts.client_write, positive_duration);
    set!(timeouts.client_body_read => timeouts.client_body_read, positive_duration);
    set!(timeouts.client_header_read => timeouts.client_header_read, positive_duration);
    set!(timeouts.tls_handshake => timeouts.tls_handshake, positive_duration);
    // Zero is allowed here: close connections at once on shutdown.
    set!(timeouts.shutdown_grace => timeouts.shutdown_grace, duration);

    let mut limits = Limits::default();
    set!(limits.max_connections => limits.max_connections, count(1..=i64::MAX));
    set!(limits.max_concurrent_streams => limits.max_concurrent_streams,
        count(1..=i64::from(u32::MAX)));
    set!(limits.max_request_header_size => limits.max_request_header_bytes,
        size(MIN_HEADER_BUFFER..=u64::from(u32::MAX)));
    set!(limits.max_request_headers => limits.max_request_headers, count(1..=i64::MAX));
    set!(limits.max_request_body_size => limits.max_request_body_bytes, size(1..=u64::MAX));

    let mut forwarding = Forwarding::default();
    set!(forwarding.trust_incoming => forwarding.trust_incoming, Ok);
    set!(forwarding.via => forwarding.via, Ok);

    let mut log = LogConfig::default();
    let (key, level) = pick(
        ov.log_level.clone(),
        "--log-level",
        raw.log.level,
        "log.level",
    );
    check.set(&key, level, &mut log.level, log_level);
    let (key, format) = pick(
        ov.log_format.clone(),
        "--log-format",
        raw.log.format,
        "log.format",
    );
    check.set(&key, format, &mut log.format, log_format);
    set!(log.access_log => log.access_log, Ok);

    let (key, listen) = pick(
        ov.metrics_listen.clone(),
        "--metrics-listen",
        raw.metrics.listen,
        "metrics.listen",
    );
    let metrics = MetricsConfig {
        listen: listen.and_then(|text| check.ok(&key, socket_addr(&text))),
    };
    let clash = listeners
        .iter()
        .find(|l| Some(l.config.address) == metrics.listen && l.config.address.port() != 0);
    if let Some(clash) = clash {
        let message = format!(
            "{} is already used by {}; the metrics endpoint needs an address of its own",
            clash.config.address, clash.key
        );
        check.problem(&key, message);
    }

    let mut push = PushSettings::default();
    set!(push.enabled => push.enabled, Ok);
    set!(push.preload => push.preload, preload_mode);
    set!(push.max_pushes_per_response => push.max_pushes_per_response, count(1..=i64::MAX));
    set!(push.max_pushed_bytes_per_response => push.max_pushed_bytes_per_response,
        size(1..=u64::MAX));
    set!(push.diary_size => push.diary_size, count(1..=i64::MAX));
    set!(push.allow_credentialed => push.allow_credentialed, Ok);
    set!(push.explain => push.explain, Ok);
    set!(push.dry_run => push.dry_run, Ok);
    set!(push.cancel_uncacheable => push.cancel_uncacheable, Ok);
    set!(push.max_concurrent_pushes => push.max_concurrent_pushes, count(1..=65_535));
    set!(push.cache_digest => push.cache_digest, Ok);
    set!(push.cache_digest_cookie => push.cache_digest_cookie, cookie_name);
    set!(push.cache_digest_validator_ttl => push.cache_digest_validator_ttl, duration);
    for (i, name) in raw.push.forward_headers.into_iter().flatten().enumerate() {
        let key = format!("push.forward_headers[{i}]");
        push.forward_headers
            .extend(check.ok(&key, header_name(name)));
    }

    let mut hints = HintSettings::default();
    set!(hints.forward_origin_103 => hints.forward_origin_103, Ok);
    set!(hints.learn => hints.learn, Ok);
    set!(hints.learn_max_entries => hints.learn_max_entries, count(1..=i64::MAX));
    set!(hints.learn_max_bytes => hints.learn_max_bytes, size(1..=u64::MAX));
    set!(hints.learn_ttl => hints.learn_ttl, positive_duration);
    set!(hints.learn_min_clients => hints.learn_min_clients, count(1..=64));
    set!(hints.learn_query => hints.learn_query, Ok);
    for (i, route) in raw.hints.learn_routes.into_iter().flatten().enumerate() {
        let key = format!("hints.learn_routes[{i}]");
        hints
            .learn_routes
            .extend(check.ok(&key, route_pattern(route)));
    }

    let mut server = ServerSettings::default();
    let (key, workers) = pick(
        ov.workers,
        "--workers",
        raw.server.workers,
        "server.workers",
    );
    check.set(&key, workers, &mut server.workers, count(0..=1024));
    for (i, name) in raw.server.names.into_iter().flatten().enumerate() {
        let key = format!("server.names[{i}]");
        server.names.extend(check.ok(&key, server_name(name)));
    }

    match origin_addr {
        Some(addr) if check.problems.is_empty() => Ok(Config {
            listeners: listeners.into_iter().map(|l| l.config).collect(),
            tls,
            origin: OriginConfig {
                addr,
                max_concurrent_requests,
                max_idle_per_host,
                pool_idle_timeout,
                max_response_header_bytes,
            },
            timeouts,
            limits,
            forwarding,
            log,
            metrics,
            push,
            hints,
            server,
        }),
        _ => Err(ConfigError::Invalid(check.problems)),
    }
}

/// A value from a flag when given, else from the file, with the name that
/// problems about it carry.
fn pick<T>(flag: Option<T>, flag_name: &str, file: Option<T>, key: &str) -> (String, Option<T>) {
    match flag {
        Some(value) => (flag_name.to_owned(), Some(value)),
        None => (key.to_owned(), file),
    }
}

/// A listener together with the key or flag it came from.
struct Listener {
    key: String,
    config: ListenerConfig,
}

/// Collects a [`Problem`] for each bad value. A bad value leaves the default
/// in place, so checking goes on; the result is discarded in the end anyway.
#[derive(Default)]
struct Checker {
    problems: Vec<Problem>,
}

impl Checker {
    fn problem(&mut self, key: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// The value, or `None` after recording the error under `key`.
    fn ok<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.problem(key, message)).ok()
    }

    /// Parses `raw`, if given, into `target`.
    fn set<R, T>(
        &mut self,
        key: &str,
        raw: Option<R>,
        target: &mut T,
        parse: impl FnOnce(R) -> Result<T, String>,
    ) {
        if let Some(value) = raw.and_then(|raw| self.ok(key, parse(raw))) {
            *target = value;
        }
    }

    fn listeners(&mut self, file: Option<Vec<RawListen>>, ov: &Overrides) -> Vec<Listener> {
        let declared = ov.listen.len() + ov.listen_plain.len() + file.as_ref().map_or(0, Vec::len);
        if declared == 0 {
            if file.is_some() {
                let message =
                    "no listener is configured; add a [[listen]] table or pass --listen ADDR";
                self.problem("listen", message);
                return Vec::new();
            }
            let config = ListenerConfig {
                address: DEFAULT_LISTEN,
                tls: true,
            };
            let key = "the default listener".to_owned();
            return vec![Listener { key, config }];
        }

        // (key, address as written, tls)
        let mut specs: Vec<(String, String, bool)> = Vec::new();
        if ov.listen.is_empty() {
            for (i, entry) in file.into_iter().flatten().enumerate() {
                let key = format!("listen[{i}].address");
                match entry.address {
                    Some(address) => specs.push((key, address, entry.tls.unwrap_or(true))),
                    None => self.problem(
                        &key,
                        "is required in every [[listen]] table; expected \"host:port\", \
                         such as \"0.0.0.0:8443\"",
                    ),
                }
            }
        }
        let tls = ov
            .listen
            .iter()
            .map(|a| ("--listen".to_owned(), a.clone(), true));
        let plain = ov.listen_plain.iter();
        let plain = plain.map(|a| ("--listen-plain".to_owned(), a.clone(), false));
        specs.extend(tls.chain(plain));

        let mut listeners: Vec<Listener> = Vec::new();
        for (key, text, tls) in specs {
            let Some(address) = self.ok(&key, socket_addr(&text)) else {
                continue;
            };
            // Port 0 asks the kernel for a fresh port each time: never a clash.
            let clash = listeners
                .iter()
                .find(|l| l.config.address == address && address.port() != 0);
            match clash {
                Some(first) => {
                    let message = format!("{address} is already used by {}", first.key);
                    self.problem(&key, message);
                }
                None => listeners.push(Listener {
                    key,
                    config: ListenerConfig { address, tls },
                }),
            }
        }
        listeners
    }

    fn tls(
        &mut self,
        raw: RawTls,
        base_dir: &Path,
        ov: &Overrides,
        listeners: &[Listener],
    ) -> TlsConfig {
        // Any TLS flag replaces the file's [tls] choice as a whole, so that
        // `--self-signed` works with a file that names certificate files.
        let from_flags = ov.cert.is_some() || ov.key.is_some() || ov.self_signed;
        let (cert, key, self_signed, [cert_key, key_key, self_signed_key]) = if from_flags {
            let names = ["--cert", "--key", "--self-signed"];
            (ov.cert.clone(), ov.key.clone(), ov.self_signed, names)
        } else {
            let names = ["tls.cert", "tls.key", "tls.self_signed"];
            let resolve = |path: PathBuf| base_dir.join(path);
            let self_signed = raw.self_signed.unwrap_or(false);
            (
                raw.cert.map(resolve),
                raw.key.map(resolve),
                self_signed,
                names,
            )
        };

        let before = self.problems.len();
        let files = match (cert, key) {
            (Some(cert), Some(key)) => {
                self.readable_file(cert_key, &cert);
                self.readable_file(key_key, &key);
                Some(TlsSource::Files { cert, key })
            }
            (Some(_), None) => {
                let message =
                    format!("{cert_key} is set but {key_key} is not; give both or neither");
                self.problem(key_key, message);
                None
            }
            (None, Some(_)) => {
                let message =
                    format!("{key_key} is set but {cert_key} is not; give both or neither");
                self.problem(cert_key, message);
                None
            }
            (None, None) => None,
        };
        let source = match (files, self_signed) {
            (Some(_), true) => {
                let message = format!(
                    "cannot be combined with {cert_key} and {key_key}; \
                     use either certificate files or a self-signed certificate"
                );
                self.problem(self_signed_key, message);
                None
            }
            (files, false) => files,
            (None, true) => Some(TlsSource::SelfSigned),
        };

        let Some(first) = listeners.iter().find(|l| l.config.tls) else {
            return TlsConfig { source: None };
        };
        if source.is_none() && self.problems.len() == before {
            let message = format!(
                "{} ({}) uses TLS, so a certificate is needed; set tls.cert and tls.key, or \
                 tls.self_signed = true for development \
                 (flags: --cert FILE --key FILE, or --self-signed)",
                first.key, first.config.address
            );
            self.problem("tls", message);
        }
        TlsConfig { source }
    }

    fn readable_file(&mut self, key: &str, path: &Path) {
        let result = fs::File::open(path).and_then(|file| file.metadata());
        match result {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => self.problem(key, format!("{} is not a regular file", path.display())),
            Err(err) => self.problem(key, format!("cannot read {}: {err}", path.display())),
        }
    }
}

// ---------------------------------------------------------------------------
// Value parsers: each returns what is wrong and what is expected.

fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not a socket address; expected an IP address and a port in host:port \
             form, such as \"127.0.0.1:8443\", \"0.0.0.0:8443\" or \"[::1]:8443\""
        )
    })
}

/// A duration with a unit (`"30s"`, `"500ms"`, `"3m"`); zero is allowed.
fn cookie_name(name: String) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.is_empty() && name.bytes().all(token) {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a cookie name; expected letters, digits and - _ . only, such as \"lp_digest\""
        ))
    }
}

fn route_pattern(route: String) -> Result<String, String> {
    let double_star_inside = route
        .split('/')
        .rev()
        .skip(1)
        .any(|segment| segment.contains("**"));
    if route.starts_with('/')
        && !double_star_inside
        && !route
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'?')
    {
        Ok(route)
    } else {
        Err(format!(
            "{route:?} is not a path pattern; expected a path starting with '/', where * matches \
             within one segment and a final ** matches the rest, such as \"/products/*\""
        ))
    }
}

fn duration(raw: Loose) -> Result<Duration, String> {
    match raw {
        Loose::Int(0) => Ok(Duration::ZERO),
        Loose::Int(n) => Err(format!(
            "{n} has no unit; expected a string with a unit, such as \"{n}s\" or \"{n}ms\""
        )),
        Loose::Text(text) => humantime::parse_duration(text.trim()).map_err(|_| {
            format!(
                "{text:?} is not a duration; expected a number with a unit, \
                 such as \"5s\", \"500ms\" or \"3m\""
            )
        }),
    }
}

fn positive_duration(raw: Loose) -> Result<Duration, String> {
    let shown = raw.to_string();
    match duration(raw)? {
        Duration::ZERO => Err(format!(
            "{shown} is zero; expected a duration greater than zero, such as \"5s\""
        )),
        d => Ok(d),
    }
}

/// An integer within `range`, converted to the typed field's width.
fn count<T: TryFrom<i64>>(range: RangeInclusive<i64>) -> impl FnOnce(i64) -> Result<T, String> {
    move |n| {
        if n < *range.start() {
            return Err(format!(
                "{n} is too small; expected at least {}",
                range.start()
            ));
        }
        let too_large = || format!("{n} is too large; expected at most {}", range.end());
        if n > *range.end() {
            return Err(too_large());
        }
        T::try_from(n).map_err(|_| too_large())
    }
}

/// A byte size within `range`, converted to the typed field's width.
fn size<T: TryFrom<u64>>(range: RangeInclusive<u64>) -> impl FnOnce(Loose) -> Result<T, String> {
    move |raw| {
        let bytes = parse_size(&raw)?;
        let too_large = || {
            format!(
                "{raw} is too large; expected at most {}",
                human_bytes(*range.end())
            )
        };
        if bytes == 0 {
            Err(format!("{raw} is zero; expected a size greater than zero"))
        } else if bytes < *range.start() {
            Err(format!(
                "{raw} is too small; expected at least {}",
                human_bytes(*range.start())
            ))
        } else if bytes > *range.end() {
            Err(too_large())
        } else {
            T::try_from(bytes).map_err(|_| too_large())
        }
    }
}

fn log_level(level: String) -> Result<String, String> {
    if level.trim().is_empty() {
        let expected = "a tracing filter such as \"info\" or \"linkpush=debug,info\"";
        Err(format!("must not be empty; expected {expected}"))
    } else if level.chars().any(char::is_whitespace) {
        Err(format!(
            "{level:?} contains whitespace; separate directives with commas, \
             such as \"linkpush=debug,info\""
        ))
    } else {
        Ok(level)
    }
}

fn log_format(format: String) -> Result<LogFormat, String> {
    match format.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "{format:?} is not a log format; expected \"text\" or \"json\""
        )),
    }
}

fn preload_mode(mode: String) -> Result<PreloadMode, String> {
    match mode.as_str() {
        "push" => Ok(PreloadMode::Push),
        "hint-only" => Ok(PreloadMode::HintOnly),
        _ => Err(format!(
            "{mode:?} is not a preload mode; expected \"push\" or \"hint-only\""
        )),
    }
}

/// Parses an origin URL: `http://host[:port][/]` or `unix:/abs/path`.
fn parse_origin(text: &str) -> Result<OriginAddr, String> {
    const EXPECTED: &str = "expected \"http://host:port\" or \"unix:/path/to.sock\"";
    let text = text.trim();
    if let Some(rest) = strip_prefix_ignore_case(text, "unix:") {
        // Accept `unix:///run/app.sock` as well as `unix:/run/app.sock`.
        let path = rest.strip_prefix("//").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err(format!(
                "{text:?} does not name an absolute socket path; expected \"unix:/path/to.sock\""
            ));
        }
        return Ok(OriginAddr::Unix(PathBuf::from(path)));
    }

    let Some((scheme, rest)) = text.split_once("://") else {
        return Err(format!("{text:?} is not an origin URL; {EXPECTED}"));
    };
    if scheme.eq_ignore_ascii_case("https") {
        return Err(format!(
            "{text:?} uses https, but the proxy speaks cleartext HTTP/1.1 to its origin; \
             use \"http://host:port\" (TLS ends at this proxy)"
        ));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(format!(
            "{text:?} has the unsupported scheme {scheme:?}; {EXPECTED}"
        ));
    }
    let (authority, tail) = rest
        .find(['/', '?', '#'])
        .map_or((rest, ""), |i| rest.split_at(i));
    if !(tail.is_empty() || tail == "/") {
        return Err(format!(
            "{text:?} has a path, query or fragment ({tail:?}); the origin URL names only a host \
             and a port, such as \"http://127.0.0.1:8080\""
        ));
    }
    if authority.contains('@') {
        return Err(format!(
            "{text:?} contains user information, which is not supported; {EXPECTED}"
        ));
    }

    let (host, port) = match authority.strip_prefix('[') {
        Some(bracketed) => {
            let (ip, port) = match bracketed.split_once(']') {
                Some((ip, "")) => (ip, None),
                Some((ip, after)) => (ip, Some(after.strip_prefix(':').unwrap_or(after))),
                None => {
                    return Err(format!(
                        "{text:?} has an unclosed '[' in its host; {EXPECTED}"
                    ))
                }
            };
            if ip.parse::<Ipv6Addr>().is_err() {
                return Err(format!(
                    "{text:?} has {ip:?} in brackets, which is not an IPv6 address"
                ));
            }
            (ip, port)
        }
        None => {
            let (host, port) = authority
                .rsplit_once(':')
                .map_or((authority, None), |(host, port)| (host, Some(port)));
            if host.contains(':') {
                return Err(format!(
                    "{text:?} has an IPv6 address without brackets; \
                     write it as in \"http://[::1]:8080\""
                ));
            }
            let name_char = |b: u8| b.is_ascii_alphanumeric() || b"-._".contains(&b);
            if host.is_empty() || !host.bytes().all(name_char) {
                return Err(format!("{text:?} does not have a valid host; {EXPECTED}"));
            }
            (host, port)
        }
    };
    let port = match port {
        None => 80,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port != 0 => port,
            _ => {
                return Err(format!(
                    "{text:?} has the invalid port {port:?}; expected a number from 1 to 65535"
                ))
            }
        },
    };
    Ok(OriginAddr::Tcp {
        host: host.to_owned(),
        port,
    })
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

/// Parses `1048576`, `"1048576"`, `"64KiB"`, `"1 MiB"` or `"100MB"` to bytes.
fn parse_size(raw: &Loose) -> Result<u64, String> {
    const EXPECTED: &str = "expected a number of bytes or a number with a unit \
        (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), such as \"64KiB\" or \"1MiB\"";
    let text = match raw {
        Loose::Int(n) => {
            return u64::try_from(*n).map_err(|_| format!("{n} is negative; {EXPECTED}"));
        }
        Loose::Text(text) => text.trim(),
    };
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(digits_end);
    let multiplier = match unit.trim_start().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        "kib" => KIB,
        "mib" => MIB,
        "gib" => GIB,
        "tib" => GIB * KIB,
        _ => return Err(format!("{text:?} is not a size; {EXPECTED}")),
    };
    let Ok(number) = digits.parse::<u64>() else {
        return Err(format!("{text:?} is not a size; {EXPECTED}"));
    };
    number
        .checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// `65536` -> `"64KiB (65536 bytes)"`, `4294967295` -> `"4294967295 bytes"`.
fn human_bytes(bytes: u64) -> String {
    let units = [(GIB, "GiB"), (MIB, "MiB"), (KIB, "KiB")];
    match units
        .iter()
        .find(|(size, _)| bytes >= *size && bytes % size == 0)
    {
        Some((size, unit)) => format!("{}{unit} ({bytes} bytes)", bytes / size),
        None => format!("{bytes} bytes"),
    }
}

/// Forwarded header names must be lower-case RFC 9110 tokens, not pseudo-headers.
/// A host name (`example.com`), a wildcard covering one label
/// (`*.example.com`), or an IP address.
fn server_name(name: String) -> Result<String, String> {
    const EXPECTED: &str =
        "expected a host name such as \"example.com\", \"*.example.com\" or an IP address";
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(name);
    }
    let host = name.strip_prefix("*.").unwrap_or(&name);
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    if host.is_empty() || host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("{name:?} is not a host name; {EXPECTED}"));
    }
    Ok(name.to_ascii_lowercase())
}

fn header_name(name: String) -> Result<String, String> {
    const EXPECTED: &str = "expected a lower-case header name such as \"cookie\"";
    if name.is_empty() {
        return Err(format!("is empty; {EXPECTED}"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "{name:?} is a pseudo-header, which cannot be forwarded; {EXPECTED}"
        ));
    }
    let is_tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.bytes().all(is_tchar) {
        return Err(format!("{name:?} is not a valid header name; {EXPECTED}"));
    }
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!(
            "{name:?} is not lower case; write {:?}",
            name.to_ascii_lowercase()
        ));
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEV_ORIGIN: &str = "http://127.0.0.1:8080";

    /// Flags that complete an empty file: an origin and a certificate.
    fn dev_flags() -> Overrides {
        Overrides {
            origin: Some(DEV_ORIGIN.to_owned()),
            self_signed: true,
            ..Overrides::default()
        }
    }

    fn load_str(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
        Config::from_toml_str(text, Path::new("/nonexistent"), overrides)
    }

    fn problems(text: &str, overrides: &Overrides) -> Vec<Problem> {
        match load_str(text, overrides) {
            Err(ConfigError::Invalid(problems)) => problems,
            other => panic!("expected Invalid for {text:?}, got {other:?}"),
        }
    }

    /// Asserts exactly one problem, under `key`, whose message contains `needle`.
    fn assert_problem(text: &str, overrides: &Overrides, key: &str, needle: &str) {
        let found = problems(text, overrides);
        assert_eq!(found.len(), 1, "{text:?}: {found:#?}");
        assert_eq!(found[0].key, key, "{text:?}: {found:#?}");
        assert!(
            found[0].message.contains(needle),
            "{text:?}: {:?} does not contain {needle:?}",
            found[0].message
        );
    }

    fn parse_message(text: &str) -> String {
        match load_str(text, &dev_flags()) {
            Err(ConfigError::Parse {
                message,
                path: None,
            }) => message,
            other => panic!("expected Parse for {text:?}, got {other:?}"),
        }
    }

    /// A directory holding empty `cert.pem` and `key.pem` files.
    fn cert_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("temporary directory");
        for name in ["cert.pem", "key.pem"] {
            fs::write(dir.path().join(name), "").expect("write test file");
        }
        dir
    }

    #[test]
    fn empty_file_with_flags_gives_every_default() {
        let config = load_str("", &dev_flags()).expect("valid");
        assert_eq!(
            config.listeners,
            [ListenerConfig {
                address: "127.0.0.1:8443".parse().expect("address"),
                tls: true
            }]
        );
        assert_eq!(config.tls.source, Some(TlsSource::SelfSigned));
        let origin = &config.origin;
        let host = "127.0.0.1".to_owned();
        assert_eq!(origin.addr, OriginAddr::Tcp { host, port: 8080 });
        assert_eq!(origin.max_concurrent_requests, 256);
        assert_eq!(origin.max_idle_per_host, 256);
        assert_eq!(origin.pool_idle_timeout, Duration::from_secs(30));
        assert_eq!(origin.max_response_header_bytes, 65536);
        let t = &config.timeouts;
        assert_eq!(t.origin_connect, Duration::from_secs(5));
        assert_eq!(t.origin_response_header, Duration::from_secs(60));
        assert_eq!(t.client_idle, Duration::from_secs(180));
        assert_eq!(t.client_header_read, Duration::from_secs(30));
        assert_eq!(t.tls_handshake, Duration::from_secs(10));
        assert_eq!(t.shutdown_grace, Duration::from_secs(30));
        let l = &config.limits;
        assert_eq!(l.max_connections, 10_000);
        assert_eq!(l.max_concurrent_streams, 100);
        assert_eq!(l.max_request_header_bytes, 65536);
        assert_eq!(l.max_request_headers, 100);
        assert_eq!(l.max_request_body_bytes, 1 << 30);
        assert!(!config.forwarding.trust_incoming);
        assert!(config.forwarding.via);
        assert_eq!(config.log.level, "info");
        assert_eq!(config.log.format, LogFormat::Text);
        assert!(config.log.access_log);
        assert_eq!(config.metrics.listen, None);
        let p = &config.push;
        assert!(p.enabled);
        assert_eq!(p.preload, PreloadMode::Push);
        assert_eq!(p.max_pushes_per_response, 10);
        assert_eq!(p.max_pushed_bytes_per_response, 1 << 20);
        assert_eq!(p.diary_size, 1024);
        assert!(!p.allow_credentialed);
        assert!(p.forward_headers.is_empty());
        assert!(!p.explain);
        assert!(!p.dry_run);
        assert!(config.hints.forward_origin_103);
        assert!(!config.hints.learn);
        assert_eq!(config.hints.learn_min_clients, 3);
        assert!(!config.hints.learn_query);
    }

    #[test]
    fn load_without_a_file_uses_defaults_and_flags() {
        let config = Config::load(None, &dev_flags()).expect("valid");
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.timeouts.client_idle, Duration::from_secs(180));
    }

    #[test]
    fn empty_file_without_flags_lists_origin_and_certificate() {
        let found = problems("", &Overrides::default());
        let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["tls", "origin.url"]);
        assert!(found[0]
            .message
            .contains("the default listener (127.0.0.1:8443) uses TLS"));
        assert!(found[1].message.contains("is required"));
        assert!(found[1].message.contains("--origin URL"));
    }

    #[test]
    fn full_file_sets_every_key() {
        let dir = cert_dir();
        let text = r#"
            [[listen]]
            address = "0.0.0.0:443"

            [[listen]]
            address = "[::1]:8080"
            tls = false

            [tls]
            cert = "cert.pem"
            key = "key.pem"
            self_signed = false

            [origin]
            url = "http://app.internal:3000"
            max_concurrent_requests = 32
            max_idle_connections = 0
            pool_idle_timeout = "90s"
            max_response_header_size = 16384

            [timeouts]
            origin_connect = "500ms"
            origin_response_header = "2m"
            client_idle = "1h"
            client_header_read = "15s"
            tls_handshake = "3s"
            shutdown_grace = "0s"

            [limits]
            max_connections = 50
            max_concurrent_streams = 250
            max_request_header_size = "32KiB"
            max_request_headers = 64
            max_request_body_size = "100MB"

            [forwarding]
            trust_incoming = true
            via = false

            [log]
            level = "linkpush=debug,info"
            format = "json"
            access_log = false

            [metrics]
            listen = "127.0.0.1:9090"

            [push]
            enabled = false
            preload = "hint-only"
            max_pushes_per_response = 4
            max_pushed_bytes_per_response = "512KiB"
            diary_size = 16
            allow_credentialed = true
            forward_headers = ["cookie", "x-tenant"]
            explain = true
            dry_run = true

            [hints]
            forward_origin_103 = false
            learn = true
            learn_min_clients = 5
            learn_query = true
        "#;
        let config = Config::from_toml_str(text, dir.path(), &Overrides::default()).expect("valid");
        let listen = |address: &str, tls| ListenerConfig {
            address: address.parse().expect("address"),
            tls,
        };
        assert_eq!(
            config.listeners,
            [listen("0.0.0.0:443", true), listen("[::1]:8080", false)]
        );
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        assert_eq!(config.tls.source, Some(TlsSource::Files { cert, key }));
        let origin = &config.origin;
        let host = "app.internal".to_owned();
        assert_eq!(origin.addr, OriginAddr::Tcp { host, port: 3000 });
        assert_eq!(origin.max_concurrent_requests, 32);
        assert_eq!(origin.max_idle_per_host, 0);
        assert_eq!(origin.pool_idle_timeout, Duration::from_secs(90));
        assert_eq!(origin.max_response_header_bytes, 16384);
        let t = &config.timeouts;
        assert_eq!(t.origin_connect, Duration::from_millis(500));
        assert_eq!(t.origin_response_header, Duration::from_secs(120));
        assert_eq!(t.client_idle, Duration::from_secs(3600));
        assert_eq!(t.client_header_read, Duration::from_secs(15));
        assert_eq!(t.tls_handshake, Duration::from_secs(3));
        assert_eq!(t.shutdown_grace, Duration::ZERO);
        let l = &config.limits;
        assert_eq!(l.max_connections, 50);
        assert_eq!(l.max_concurrent_streams, 250);
        assert_eq!(l.max_request_header_bytes, 32 * 1024);
        assert_eq!(l.max_request_headers, 64);
        assert_eq!(l.max_request_body_bytes, 100_000_000);
        assert!(config.forwarding.trust_incoming);
        assert!(!config.forwarding.via);
        assert_eq!(config.log.level, "linkpush=debug,info");
        assert_eq!(config.log.format, LogFormat::Json);
        assert!(!config.log.access_log);
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9090".parse().expect("address"))
        );
        let p = &config.push;
        assert!(!p.enabled);
        assert_eq!(p.preload, PreloadMode::HintOnly);
        assert_eq!(p.max_pushes_per_response, 4);
        assert_eq!(p.max_pushed_bytes_per_response, 512 * 1024);
        assert_eq!(p.diary_size, 16);
        assert!(p.allow_credentialed);
        assert_eq!(p.forward_headers, ["cookie", "x-tenant"]);
        assert!(p.explain);
        assert!(p.dry_run);
        assert!(!config.hints.forward_origin_103);
        assert!(config.hints.learn);
        assert_eq!(config.hints.learn_min_clients, 5);
        assert!(config.hints.learn_query);
    }

    #[test]
    fn shipped_reference_config_is_valid_and_runnable() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
        let config = Config::load(Some(&path), &Overrides::default()).expect("valid");
        assert_eq!(config.listeners.len(), 1);
        assert_eq!(config.listeners[0].address.to_string(), "127.0.0.1:8443");
        assert!(config.listeners[0].tls);
        assert_eq!(config.tls.source, Some(TlsSource::SelfSigned));
        let host = "127.0.0.1".to_owned();
        assert_eq!(config.origin.addr, OriginAddr::Tcp { host, port: 8080 });
    }

    #[test]
    fn documented_examples_are_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
        let doc = fs::read_to_string(path).expect("docs/configuration.md");
        let blocks: Vec<&str> = doc
            .split("```toml\n")
            .skip(1)
            .filter_map(|rest| rest.split("```").next())
            .collect();
        assert!(blocks.len() >= 2, "no TOML examples found");
        // --self-signed stands in for certificate files that exist only in production.
        let flags = Overrides {
            self_signed: true,
            ..Overrides::default()
        };
        for block in blocks {
            if let Err(err) = load_str(block, &flags) {
                panic!("documented example is invalid: {err}\n{block}");
            }
        }
    }

    #[test]
    fn each_bad_value_is_explained() {
        let flags = dev_flags();
        let cases = [
            (
                "[[listen]]\naddress = \"localhost:8443\"",
                "listen[0].address",
                "\"localhost:8443\" is not a socket address; expected an IP address and a port in host:port form",
            ),
            ("[[listen]]\ntls = true", "listen[0].address", "is required"),
            ("listen = []", "listen", "no listener is configured"),
            (
                "[[listen]]\naddress = \"0.0.0.0:8443\"\n[[listen]]\naddress = \"0.0.0.0:8443\"\ntls = false",
                "listen[1].address",
                "0.0.0.0:8443 is already used by listen[0].address",
            ),
            (
                "[timeouts]\norigin_connect = \"five seconds\"",
                "timeouts.origin_connect",
                "\"five seconds\" is not a duration; expected a number with a unit, such as \"5s\"",
            ),
            ("[timeouts]\nclient_idle = \"0s\"", "timeouts.client_idle", "is zero"),
            ("[timeouts]\ntls_handshake = 10", "timeouts.tls_handshake", "10 has no unit"),
            ("[timeouts]\norigin_response_header = \"\"", "timeouts.origin_response_header", "is not a duration"),
            ("[timeouts]\nclient_header_read = \"-1s\"", "timeouts.client_header_read", "is not a duration"),
            ("[origin]\npool_idle_timeout = \"0ms\"", "origin.pool_idle_timeout", "is zero"),
            ("[origin]\nmax_concurrent_requests = 0", "origin.max_concurrent_requests", "0 is too small; expected at least 1"),
            ("[origin]\nmax_idle_connections = -1", "origin.max_idle_connections", "expected at least 0"),
            (
                "[origin]\nmax_response_header_size = \"4KiB\"",
                "origin.max_response_header_size",
                "\"4KiB\" is too small; expected at least 8KiB (8192 bytes)",
            ),
            (
                "[origin]\nmax_response_header_size = \"64 kilobytes\"",
                "origin.max_response_header_size",
                "\"64 kilobytes\" is not a size; expected a number of bytes or a number with a unit",
            ),
            ("[limits]\nmax_connections = 0", "limits.max_connections", "expected at least 1"),
            ("[limits]\nmax_concurrent_streams = 0", "limits.max_concurrent_streams", "expected at least 1"),
            (
                "[limits]\nmax_concurrent_streams = 5000000000",
                "limits.max_concurrent_streams",
                "5000000000 is too large; expected at most 4294967295",
            ),
            (
                "[limits]\nmax_request_header_size = \"4GiB\"",
                "limits.max_request_header_size",
                "\"4GiB\" is too large; expected at most 4294967295 bytes",
            ),
            ("[limits]\nmax_request_headers = 0", "limits.max_request_headers", "expected at least 1"),
            ("[limits]\nmax_request_body_size = 0", "limits.max_request_body_size", "0 is zero"),
            ("[limits]\nmax_request_body_size = -5", "limits.max_request_body_size", "-5 is negative"),
            ("[limits]\nmax_request_body_size = \"1.5GiB\"", "limits.max_request_body_size", "is not a size"),
            ("[limits]\nmax_request_body_size = \"99999999TiB\"", "limits.max_request_body_size", "is too large"),
            ("[log]\nlevel = \"\"", "log.level", "must not be empty"),
            ("[log]\nlevel = \"info debug\"", "log.level", "contains whitespace"),
            ("[log]\nformat = \"pretty\"", "log.format", "\"pretty\" is not a log format; expected \"text\" or \"json\""),
            ("[metrics]\nlisten = \"9090\"", "metrics.listen", "is not a socket address"),
            (
                "[metrics]\nlisten = \"127.0.0.1:8443\"",
                "metrics.listen",
                "127.0.0.1:8443 is already used by the default listener",
            ),
            ("[push]\npreload = \"always\"", "push.preload", "expected \"push\" or \"hint-only\""),
            ("[push]\nmax_pushes_per_response = 0", "push.max_pushes_per_response", "expected at least 1"),
            ("[push]\nmax_pushed_bytes_per_response = \"0KiB\"", "push.max_pushed_bytes_per_response", "is zero"),
            ("[push]\ndiary_size = 0", "push.diary_size", "expected at least 1"),
            ("[push]\nforward_headers = [\"Cookie\"]", "push.forward_headers[0]", "not lower case; write \"cookie\""),
            ("[push]\nforward_headers = [\"x-a\", \":path\"]", "push.forward_headers[1]", "is a pseudo-header"),
            ("[push]\nforward_headers = [\"x y\"]", "push.forward_headers[0]", "is not a valid header name"),
            ("[push]\nforward_headers = [\"\"]", "push.forward_headers[0]", "is empty"),
            ("[hints]\nlearn_min_clients = 0", "hints.learn_min_clients", "0 is too small; expected at least 1"),
            ("[hints]\nlearn_min_clients = 65", "hints.learn_min_clients", "65 is too large; expected at most 64"),
            ("[hints]\nlearn_max_entries = 0", "hints.learn_max_entries", "expected at least 1"),
        ];
        for (text, key, needle) in cases {
            assert_problem(text, &flags, key, needle);
        }
    }

    #[test]
    fn bad_origin_urls_are_explained() {
        let flags = Overrides {
            self_signed: true,
            ..Overrides::default()
        };
        let cases = [
            ("https://app:8443", "cleartext HTTP/1.1"),
            (
                "http://127.0.0.1:8080/app",
                "has a path, query or fragment (\"/app\")",
            ),
            (
                "http://127.0.0.1:8080/?a=1",
                "has a path, query or fragment",
            ),
            (
                "127.0.0.1:8080",
                "is not an origin URL; expected \"http://host:port\" or \"unix:/path/to.sock\"",
            ),
            ("ftp://files", "unsupported scheme \"ftp\""),
            ("http://app:0", "invalid port \"0\""),
            ("http://app:99999", "invalid port \"99999\""),
            ("http://app:", "invalid port \"\""),
            ("http://", "does not have a valid host"),
            ("http://::1:8080", "IPv6 address without brackets"),
            ("http://[::1:8080", "unclosed '['"),
            ("http://[zz]:80", "not an IPv6 address"),
            ("http://user:pw@app", "user information"),
            ("unix:run/puma.sock", "absolute socket path"),
            ("unix:", "absolute socket path"),
            ("unix://run/puma.sock", "absolute socket path"),
        ];
        for (url, needle) in cases {
            let text = format!("[origin]\nurl = {url:?}");
            assert_problem(&text, &flags, "origin.url", needle);
        }
    }

    #[test]
    fn origin_urls_parse() {
        let tcp = |host: &str, port| OriginAddr::Tcp {
            host: host.to_owned(),
            port,
        };
        let unix = |path: &str| OriginAddr::Unix(PathBuf::from(path));
        let cases = [
            ("http://127.0.0.1:8080", tcp("127.0.0.1", 8080)),
            ("http://app.internal", tcp("app.internal", 80)),
            ("http://localhost:3000/", tcp("localhost", 3000)),
            ("HTTP://[::1]:9000", tcp("::1", 9000)),
            ("http://[::1]", tcp("::1", 80)),
            ("unix:/run/puma.sock", unix("/run/puma.sock")),
            ("unix:///run/puma.sock", unix("/run/puma.sock")),
        ];
        for (url, expected) in cases {
            assert_eq!(parse_origin(url), Ok(expected), "{url}");
        }
    }

    #[test]
    fn unix_socket_origin_from_the_file() {
        let text = "[origin]\nurl = \"unix:/run/puma.sock\"\n[tls]\nself_signed = true";
        let config = load_str(text, &Overrides::default()).expect("valid");
        assert_eq!(
            config.origin.addr,
            OriginAddr::Unix(PathBuf::from("/run/puma.sock"))
        );
    }

    #[test]
    fn sizes_parse_with_and_without_units() {
        let text = |s: &str| Loose::Text(s.to_owned());
        let cases = [
            (Loose::Int(1024), 1024),
            (text("1024"), 1024),
            (text("64KiB"), 64 * 1024),
            (text("1 MiB"), 1 << 20),
            (text("1gib"), 1 << 30),
            (text("2TiB"), 2 << 40),
            (text("100MB"), 100_000_000),
            (text("5kb"), 5_000),
            (text("7B"), 7),
        ];
        for (raw, bytes) in cases {
            assert_eq!(parse_size(&raw), Ok(bytes), "{raw}");
        }
        for bad in ["", "KiB", "1.5MiB", "12 parsecs", "-1KiB"] {
            assert!(parse_size(&text(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_problem_is_reported_in_one_call() {
        let text = r#"
            [[listen]]
            address = "0.0.0.0"

            [origin]
            url = "https://app"

            [timeouts]
            origin_connect = "soon"

            [limits]
            max_concurrent_streams = 0

            [log]
            format = "xml"
        "#;
        let err = load_str(text, &Overrides::default()).expect_err("invalid");
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "listen[0].address",
                "origin.url",
                "timeouts.origin_connect",
                "limits.max_concurrent_streams",
                "log.format",
            ]
        );
        let shown = err.to_string();
        let mut lines = shown.lines();
        assert_eq!(lines.next(), Some("invalid configuration:"));
        assert!(lines.all(|line| line.starts_with("  - ")), "{shown}");
        assert!(
            shown.contains("\n  - log.format: \"xml\" is not a log format"),
            "{shown}"
        );
    }

    #[test]
    fn unknown_keys_are_parse_errors_naming_the_key_and_line() {
        let top = parse_message("origin_url = \"http://a\"");
        assert!(top.contains("unknown field `origin_url`"), "{top}");
        assert!(top.contains("line 1"), "{top}");

        let nested = parse_message("[timeouts]\norigin_connect = \"5s\"\norigin_conect = \"5s\"");
        assert!(nested.contains("unknown field `origin_conect`"), "{nested}");
        assert!(nested.contains("line 3"), "{nested}");
        assert!(nested.contains("origin_connect"), "{nested}");

        let in_array = parse_message("[[listen]]\naddress = \"0.0.0.0:1\"\nport = 1");
        assert!(in_array.contains("unknown field `port`"), "{in_array}");

        let table = parse_message("[pushes]\nenabled = true");
        assert!(table.contains("unknown field `pushes`"), "{table}");
    }

    #[test]
    fn wrong_types_are_parse_errors() {
        let message = parse_message("[push]\nenabled = \"yes\"");
        assert!(message.contains("expected a boolean"), "{message}");
        let message = parse_message("[timeouts]\nclient_idle = 1.5");
        assert!(
            message.contains("expected a string with a unit"),
            "{message}"
        );
    }

    #[test]
    fn tls_needs_exactly_one_certificate_source() {
        let origin = Overrides {
            origin: Some(DEV_ORIGIN.to_owned()),
            ..Overrides::default()
        };
        assert_problem("", &origin, "tls", "uses TLS, so a certificate is needed");
        assert_problem(
            "[tls]\ncert = \"cert.pem\"",
            &origin,
            "tls.key",
            "tls.cert is set but tls.key is not",
        );
        assert_problem(
            "[tls]\nkey = \"key.pem\"",
            &origin,
            "tls.cert",
            "tls.key is set but tls.cert is not",
        );

        let dir = cert_dir();
        let both = "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nself_signed = true";
        let err = Config::from_toml_str(both, dir.path(), &origin).expect_err("invalid");
        assert_eq!(err.problems().len(), 1);
        assert_eq!(err.problems()[0].key, "tls.self_signed");
        assert!(err.problems()[0]
            .message
            .contains("cannot be combined with tls.cert and tls.key"));
    }

    #[test]
    fn certificate_files_must_be_readable() {
        let dir = cert_dir();
        let origin = Overrides {
            origin: Some(DEV_ORIGIN.to_owned()),
            ..Overrides::default()
        };
        let text = "[tls]\ncert = \"missing.pem\"\nkey = \".\"";
        let err = Config::from_toml_str(text, dir.path(), &origin).expect_err("invalid");
        let found = err.problems();
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].key, "tls.cert");
        let missing = dir.path().join("missing.pem");
        assert!(found[0]
            .message
            .contains(&format!("cannot read {}", missing.display())));
        assert_eq!(found[1].key, "tls.key");
        assert!(found[1].message.contains("is not a regular file"));
    }

    #[test]
    fn relative_certificate_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let conf = dir.path().join("conf");
        fs::create_dir_all(conf.join("certs")).expect("create dirs");
        fs::write(conf.join("certs/site.pem"), "").expect("write");
        fs::write(conf.join("certs/site.key"), "").expect("write");
        let absolute_key = conf.join("certs/site.key");
        let text = format!(
            "[origin]\nurl = \"http://127.0.0.1:8080\"\n[tls]\ncert = \"certs/site.pem\"\nkey = {:?}\n",
            absolute_key.display().to_string()
        );
        let path = conf.join("proxy.toml");
        fs::write(&path, text).expect("write");

        let config = Config::load(Some(&path), &Overrides::default()).expect("valid");
        let expected = TlsSource::Files {
            cert: conf.join("certs/site.pem"),
            key: absolute_key,
        };
        assert_eq!(config.tls.source, Some(expected));
    }

    #[test]
    fn missing_config_file_is_a_read_error() {
        let path = Path::new("/nonexistent/linkpush/proxy.toml");
        let err = Config::load(Some(path), &Overrides::default()).expect_err("missing");
        assert!(
            matches!(&err, ConfigError::Read { path: p, .. } if p == path),
            "{err:?}"
        );
        assert!(err
            .to_string()
            .starts_with("cannot read config file /nonexistent/linkpush/proxy.toml: "));
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = cert_dir();
        let text = r#"
            [[listen]]
            address = "0.0.0.0:443"

            [tls]
            self_signed = true

            [origin]
            url = "http://127.0.0.1:8080"

            [log]
            level = "warn"
            format = "text"

            [metrics]
            listen = "127.0.0.1:9090"
        "#;
        let flags = Overrides {
            listen: vec!["127.0.0.1:9443".to_owned()],
            listen_plain: vec!["127.0.0.1:9080".to_owned()],
            origin: Some("unix:/run/app.sock".to_owned()),
            cert: Some(dir.path().join("cert.pem")),
            key: Some(dir.path().join("key.pem")),
            self_signed: false,
            log_level: Some("debug".to_owned()),
            log_format: Some("json".to_owned()),
            metrics_listen: Some("127.0.0.1:9191".to_owned()),
            workers: Some(3),
        };
        let config = Config::from_toml_str(text, dir.path(), &flags).expect("valid");
        let addresses: Vec<(String, bool)> = config
            .listeners
            .iter()
            .map(|l| (l.address.to_string(), l.tls))
            .collect();
        assert_eq!(
            addresses,
            [
                ("127.0.0.1:9443".to_owned(), true),
                ("127.0.0.1:9080".to_owned(), false)
            ]
        );
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        assert_eq!(config.tls.source, Some(TlsSource::Files { cert, key }));
        assert_eq!(
            config.origin.addr,
            OriginAddr::Unix(PathBuf::from("/run/app.sock"))
        );
        assert_eq!(config.log.level, "debug");
        assert_eq!(config.log.format, LogFormat::Json);
        assert_eq!(
            config.metrics.listen,
            Some("127.0.0.1:9191".parse().expect("address"))
        );
        assert_eq!(config.server.workers, 3);
    }

    #[test]
    fn self_signed_flag_replaces_certificate_files_from_the_file() {
        let text = "[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"";
        let config = load_str(text, &dev_flags()).expect("valid");
        assert_eq!(config.tls.source, Some(TlsSource::SelfSigned));
    }

    #[test]
    fn listen_plain_alone_needs_no_certificate() {
        let flags = Overrides {
            origin: Some(DEV_ORIGIN.to_owned()),
            listen_plain: vec!["0.0.0.0:8080".to_owned()],
            ..Overrides::default()
        };
        let config = load_str("", &flags).expect("valid");
        assert_eq!(
            config.listeners,
            [ListenerConfig {
                address: "0.0.0.0:8080".parse().expect("address"),
                tls: false
            }]
        );
        assert_eq!(config.tls.source, None);
    }

    #[test]
    fn listen_plain_adds_to_the_file_listeners() {
        let flags = Overrides {
            listen_plain: vec!["127.0.0.1:8080".to_owned()],
            ..dev_flags()
        };
        let config = load_str("[[listen]]\naddress = \"127.0.0.1:8443\"", &flags).expect("valid");
        let tls: Vec<bool> = config.listeners.iter().map(|l| l.tls).collect();
        assert_eq!(tls, [true, false]);
    }

    #[test]
    fn flag_problems_name_the_flag() {
        let dir = cert_dir();
        let flags = Overrides {
            listen: vec!["127.0.0.1:1".to_owned(), "nowhere".to_owned()],
            listen_plain: vec!["127.0.0.1:1".to_owned()],
            origin: Some("https://app".to_owned()),
            cert: Some(dir.path().join("cert.pem")),
            key: None,
            self_signed: false,
            log_level: Some(String::new()),
            log_format: Some("xml".to_owned()),
            metrics_listen: Some("localhost:9090".to_owned()),
            workers: Some(5000),
        };
        let text = "[origin]\nurl = \"http://127.0.0.1:8080\"\n[log]\nformat = \"text\"";
        let err = Config::from_toml_str(text, dir.path(), &flags).expect_err("invalid");
        let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "--listen",
                "--listen-plain",
                "--key",
                "--origin",
                "--log-level",
                "--log-format",
                "--metrics-listen",
                "--workers",
            ]
        );
        let shown = err.to_string();
        assert!(
            shown.contains("  - --listen: \"nowhere\" is not a socket address"),
            "{shown}"
        );
        assert!(
            shown.contains("  - --listen-plain: 127.0.0.1:1 is already used by --listen"),
            "{shown}"
        );
        assert!(
            shown.contains("  - --key: --cert is set but --key is not"),
            "{shown}"
        );
    }

    #[test]
    fn cert_and_self_signed_flags_conflict() {
        let dir = cert_dir();
        let flags = Overrides {
            cert: Some(dir.path().join("cert.pem")),
            key: Some(dir.path().join("key.pem")),
            ..dev_flags()
        };
        assert_problem(
            "",
            &flags,
            "--self-signed",
            "cannot be combined with --cert and --key",
        );
    }

    #[test]
    fn parse_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("proxy.toml");
        fs::write(&path, "[log]\nlevel = \"info\"\ncolour = true\n").expect("write");
        let err = Config::load(Some(&path), &dev_flags()).expect_err("invalid");
        let shown = err.to_string();
        assert!(
            shown.starts_with(&format!("cannot parse {}: ", path.display())),
            "{shown}"
        );
        assert!(shown.contains("unknown field `colour`"), "{shown}");
    }
}
