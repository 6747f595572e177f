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
//!
//! # Layout
//!
//! - `keys.rs` declares every key of the plain tables once: doc comment,
//!   typed field, default, raw type and check. `declare.rs` holds the
//!   `sections!` macro that turns those entries into the typed structs
//!   ([`Timeouts`], [`PushSettings`], ...), their raw mirrors, their
//!   defaults and their checks.
//! - `flags.rs` declares the command-line flags ([`Overrides`]) and the key
//!   each one replaces.
//! - `special.rs` checks what does not fit one entry: `[[listen]]`, `[tls]`,
//!   the required `origin.url`, and `metrics.listen` against the listeners.
//! - `sites.rs` checks `[upstreams.NAME]` (keys declared in `keys.rs`) and
//!   `[[sites]]` with their routes, or makes the implicit site.
//! - `check.rs` holds the `Checker` and the value parsers.

#[macro_use]
mod declare;
mod check;
#[cfg(test)]
mod documented;
mod flags;
mod keys;
mod sites;
mod special;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use check::Checker;
use special::{RawListen, RawTls};

pub use check::parse_filter;
pub use flags::Overrides;
pub use keys::{
    Forwarding, HintSettings, Limits, LogConfig, MetricsConfig, OriginConfig, PushSettings,
    ServerSettings, Timeouts, UpstreamSettings,
};
pub use sites::{PathMatch, RouteConfig, SiteConfig, UpstreamConfig, MAX_SERVERS, ORIGIN_UPSTREAM};

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
    /// The named upstreams; `origin` (for `origin.url`) first when set.
    pub upstreams: Vec<UpstreamConfig>,
    /// The sites, in file order; one implicit default site without
    /// `[[sites]]`.
    pub sites: Vec<SiteConfig>,
}

impl Config {
    /// Whether any listener speaks TLS.
    pub fn uses_tls(&self) -> bool {
        self.listeners.iter().any(|l| l.tls)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    pub address: SocketAddr,
    /// false: cleartext HTTP/1.1 + h2c prior knowledge.
    pub tls: bool,
    /// `Some` when the listener sits behind a load balancer that speaks the
    /// PROXY protocol: connections from these sources must start with a
    /// PROXY header, which gives the client's address; connections from
    /// anywhere else are closed, so nobody can claim an address by sending
    /// one.
    pub proxy_protocol: Option<TrustedProxies>,
}

/// The sources whose PROXY protocol headers a listener believes
/// (`proxy_protocol_from`). Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(pub Vec<IpNet>);

impl TrustedProxies {
    /// Whether a connection from `ip` is one of the load balancer's. An
    /// IPv4 client of a dual-stack (`[::]`) listener shows as
    /// `::ffff:a.b.c.d`, which counts as `a.b.c.d` here.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
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
    /// Reload when the certificate or key file changes.
    pub watch: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginAddr {
    /// `http://host:port`; host may be a name or an IP.
    Tcp { host: String, port: u16 },
    /// `unix:/path/to.sock`
    Unix(PathBuf),
}

/// How an upstream picks an address for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    /// Each address in turn.
    RoundRobin,
    /// The address with the fewest requests in flight (over all workers).
    LeastOutstanding,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreloadMode {
    Push,
    HintOnly,
}

/// The listener used when neither the file nor the flags name one.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 8443);

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
    origin: keys::RawOrigin,
    #[serde(default)]
    timeouts: keys::RawTimeouts,
    #[serde(default)]
    limits: keys::RawLimits,
    #[serde(default)]
    forwarding: keys::RawForwarding,
    #[serde(default)]
    log: keys::RawLog,
    #[serde(default)]
    metrics: keys::RawMetrics,
    #[serde(default)]
    push: keys::RawPush,
    #[serde(default)]
    hints: keys::RawHints,
    #[serde(default)]
    server: keys::RawServer,
    #[serde(default)]
    upstreams: BTreeMap<String, keys::RawUpstream>,
    sites: Option<Vec<sites::RawSite>>,
}

fn parse(text: &str, path: Option<&Path>) -> Result<RawFile, ConfigError> {
    toml::from_str(text).map_err(|err: toml::de::Error| ConfigError::Parse {
        path: path.map(Path::to_path_buf),
        message: err.to_string().trim_end().to_owned(),
    })
}

// ---------------------------------------------------------------------------
// Raw + overrides -> typed

/// Checks every table in file order, so problems are listed in that order.
fn build(mut raw: RawFile, base_dir: &Path, ov: &Overrides) -> Result<Config, ConfigError> {
    let mut check = Checker::new(ov.replace_keys(&mut raw));
    let listeners = check.listeners(raw.listen, ov);
    let has_sites = raw.sites.as_ref().is_some_and(|sites| !sites.is_empty());
    let tls = check.tls(raw.tls, base_dir, ov, &listeners, has_sites);
    let addr = check.origin_url(raw.origin.url.take(), has_sites);
    let origin = raw.origin.check(&mut check, addr);
    let timeouts = raw.timeouts.check(&mut check);
    let limits = raw.limits.check(&mut check);
    let forwarding = raw.forwarding.check(&mut check);
    let mut log = raw.log.check(&mut check);
    // Like `tls.cert`: relative to the file, as given when there is none.
    log.access_log_path = log.access_log_path.map(|path| base_dir.join(path));
    let metrics = raw.metrics.check(&mut check);
    check.metrics_clash(&metrics, &listeners);
    let push = raw.push.check(&mut check);
    let hints = raw.hints.check(&mut check);
    let server = raw.server.check(&mut check);
    let origin_addr = origin.as_ref().and_then(|origin| origin.addr.as_ref());
    let upstreams = check.upstreams(raw.upstreams, origin_addr);
    let uses_tls = listeners.iter().any(|l| l.config.tls);
    let sites = check.sites(
        raw.sites,
        base_dir,
        &upstreams,
        &tls,
        uses_tls,
        &push,
        &hints,
        &server.names,
    );

    match origin {
        Some(origin) if check.count() == 0 => Ok(Config {
            listeners: listeners.into_iter().map(|l| l.config).collect(),
            tls,
            origin,
            timeouts,
            limits,
            forwarding,
            log,
            metrics,
            push,
            hints,
            server,
            upstreams,
            sites,
        }),
        _ => Err(ConfigError::Invalid(check.into_problems())),
    }
}
