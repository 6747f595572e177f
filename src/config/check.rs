//! The `Checker`, which collects a [`Problem`] for every bad value, and the
//! value parsers the key declarations in `keys.rs` name. Each parser says
//! what is wrong and what is expected instead.

use std::fmt;
use std::net::{Ipv6Addr, SocketAddr};
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use tracing_subscriber::EnvFilter;

use super::{Balance, LogFormat, OriginAddr, PreloadMode, Problem};

pub(super) const KIB: u64 = 1 << 10;
pub(super) const MIB: u64 = 1 << 20;
pub(super) const GIB: u64 = 1 << 30;

/// hyper refuses read buffers smaller than this, so header size limits that
/// feed its `max_buf_size` may not go below it.
pub(super) const MIN_HEADER_BUFFER: u64 = 8 * KIB;

/// Collects a [`Problem`] for each bad value. A bad value leaves the default
/// in place, so checking goes on; the result is discarded in the end anyway.
pub(super) struct Checker {
    problems: Vec<Problem>,
    /// (file key, flag) for each key whose value came from a flag: problems
    /// with that value are reported under the flag.
    from_flags: Vec<(&'static str, String)>,
}

impl Checker {
    pub(super) fn new(from_flags: Vec<(&'static str, String)>) -> Checker {
        Checker {
            problems: Vec::new(),
            from_flags,
        }
    }

    pub(super) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = self
            .from_flags
            .iter()
            .find(|(file_key, _)| *file_key == key)
            .map_or(key, |(_, flag)| flag.as_str());
        self.problems.push(Problem {
            key: key.to_owned(),
            message: message.into(),
        });
    }

    /// How many problems have been found so far.
    pub(super) fn count(&self) -> usize {
        self.problems.len()
    }

    pub(super) fn into_problems(self) -> Vec<Problem> {
        self.problems
    }

    /// The value, or `None` after recording the error under `key`.
    pub(super) fn ok<T>(&mut self, key: &str, result: Result<T, String>) -> Option<T> {
        result.map_err(|message| self.problem(key, message)).ok()
    }

    /// `raw` checked by `parse`; `None` when it is absent or bad.
    pub(super) fn parse<R, T>(
        &mut self,
        key: &str,
        raw: Option<R>,
        parse: impl Parse<R, T>,
    ) -> Option<T> {
        parse.parse(self, key, raw?)
    }
}

/// Turns a key's raw value into its typed value, recording a problem under
/// `key` for what is wrong with it.
pub(super) trait Parse<R, T> {
    fn parse(self, check: &mut Checker, key: &str, raw: R) -> Option<T>;
}

/// A plain parser: one value, one problem at most.
impl<R, T, F: FnOnce(R) -> Result<T, String>> Parse<R, T> for F {
    fn parse(self, check: &mut Checker, key: &str, raw: R) -> Option<T> {
        check.ok(key, self(raw))
    }
}

/// A list whose elements are checked one by one; see [`each`].
pub(super) struct Each<F>(F);

/// Checks every element of a list with `parse`, reporting a bad one under
/// `key[i]`.
pub(super) fn each<F>(parse: F) -> Each<F> {
    Each(parse)
}

impl<R, T, F: FnMut(R) -> Result<T, String>> Parse<Vec<R>, Vec<T>> for Each<F> {
    fn parse(mut self, check: &mut Checker, key: &str, raw: Vec<R>) -> Option<Vec<T>> {
        let mut values = Vec::with_capacity(raw.len());
        for (i, element) in raw.into_iter().enumerate() {
            values.extend(check.ok(&format!("{key}[{i}]"), (self.0)(element)));
        }
        Some(values)
    }
}

/// A duration or size as written: a string (`"30s"`, `"64KiB"`) or a bare
/// integer. Both are accepted by the parser so that the checker, not toml,
/// explains what is wrong with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Loose {
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

// ---------------------------------------------------------------------------
// Value parsers: each returns what is wrong and what is expected.

/// Any value toml accepts for the key's type.
pub(super) fn as_is<T>(value: T) -> Result<T, String> {
    Ok(value)
}

pub(super) fn socket_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "{text:?} is not a socket address; expected an IP address and a port in host:port \
             form, such as \"127.0.0.1:8443\", \"0.0.0.0:8443\" or \"[::1]:8443\""
        )
    })
}

/// An optional address: given means used.
pub(super) fn some_socket_addr(text: String) -> Result<Option<SocketAddr>, String> {
    socket_addr(&text).map(Some)
}

/// An origin address: `http://host:port` or `unix:/path/to.sock`.
pub(super) fn origin_addr(text: String) -> Result<OriginAddr, String> {
    parse_origin(&text)
}

/// How an upstream spreads requests over its addresses.
pub(super) fn balance(text: String) -> Result<Balance, String> {
    match text.as_str() {
        "round_robin" => Ok(Balance::RoundRobin),
        "least_outstanding" => Ok(Balance::LeastOutstanding),
        _ => Err(format!(
            "{text:?} is not a balancing method; expected \"round_robin\" or \"least_outstanding\""
        )),
    }
}

/// The path an active health check requests: origin-form, no spaces.
pub(super) fn health_path(path: String) -> Result<Option<String>, String> {
    let usable = path.starts_with('/')
        && http::uri::PathAndQuery::from_maybe_shared(path.clone()).is_ok()
        && !path.bytes().any(|b| b == b' ' || b.is_ascii_control());
    if usable {
        Ok(Some(path))
    } else {
        Err(format!(
            "{path:?} is not a request path; expected a path starting with '/', such as \"/health\""
        ))
    }
}

/// A cookie name: an RFC 9110 token.
pub(super) fn cookie_name(name: String) -> Result<String, String> {
    let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    if !name.is_empty() && name.bytes().all(token) {
        Ok(name)
    } else {
        Err(format!(
            "{name:?} is not a cookie name; expected letters, digits and - _ . only, such as \"lp_digest\""
        ))
    }
}

/// A path pattern: `*` matches within one segment, a final `**` the rest.
pub(super) fn route_pattern(route: String) -> Result<String, String> {
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

/// A duration with a unit (`"30s"`, `"500ms"`, `"3m"`); zero is allowed.
pub(super) fn duration(raw: Loose) -> Result<Duration, String> {
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

pub(super) fn positive_duration(raw: Loose) -> Result<Duration, String> {
    let shown = raw.to_string();
    match duration(raw)? {
        Duration::ZERO => Err(format!(
            "{shown} is zero; expected a duration greater than zero, such as \"5s\""
        )),
        d => Ok(d),
    }
}

/// An integer within `range`, converted to the typed field's width.
pub(super) fn count<T: TryFrom<i64>>(
    range: RangeInclusive<i64>,
) -> impl FnOnce(i64) -> Result<T, String> {
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
pub(super) fn size<T: TryFrom<u64>>(
    range: RangeInclusive<u64>,
) -> impl FnOnce(Loose) -> Result<T, String> {
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

/// A diagnostic log filter that tracing accepts, and that does not turn the
/// log off by a typo (see [`parse_filter`]).
pub(super) fn log_level(level: String) -> Result<Option<String>, String> {
    parse_filter(&level).map(|_| Some(level))
}

/// A file to append to, named as a path.
pub(super) fn log_path(path: String) -> Result<Option<PathBuf>, String> {
    if path.trim().is_empty() {
        Err(
            "must not be empty; expected a file path such as \"/var/log/linkpush/access.log\", \
             or no key for standard output"
                .to_owned(),
        )
    } else {
        Ok(Some(PathBuf::from(path)))
    }
}

pub(super) fn log_format(format: String) -> Result<LogFormat, String> {
    match format.as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!(
            "{format:?} is not a log format; expected \"text\" or \"json\""
        )),
    }
}

pub(super) fn preload_mode(mode: String) -> Result<PreloadMode, String> {
    match mode.as_str() {
        "push" => Ok(PreloadMode::Push),
        "hint-only" => Ok(PreloadMode::HintOnly),
        _ => Err(format!(
            "{mode:?} is not a preload mode; expected \"push\" or \"hint-only\""
        )),
    }
}

/// Parses an origin URL: `http://host[:port][/]` or `unix:/abs/path`.
pub(super) fn parse_origin(text: &str) -> Result<OriginAddr, String> {
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
pub(super) fn parse_size(raw: &Loose) -> Result<u64, String> {
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

/// A host name (`example.com`), a wildcard covering one label
/// (`*.example.com`), or an IP address.
pub(super) fn server_name(name: String) -> Result<String, String> {
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

/// Forwarded header names must be lower-case RFC 9110 tokens, not pseudo-headers.
pub(super) fn header_name(name: String) -> Result<String, String> {
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

/// `text` as a tracing `EnvFilter`, or what is wrong with it.
///
/// Stricter than `EnvFilter` itself in one way: a directive without `=`
/// must be a level. `EnvFilter` reads any other bare word as a target to
/// log at every level, so a misspelt level such as `infox` would turn the
/// whole log off; the same thing is still written `target=trace`.
pub fn parse_filter(text: &str) -> Result<EnvFilter, String> {
    const EXPECTED: &str = "expected a level (off, error, warn, info, debug, trace) or \
                            comma-separated directives such as \"linkpush=debug,info\"";
    if text.trim().is_empty() {
        return Err(format!("must not be empty; {EXPECTED}"));
    }
    if text.chars().any(char::is_whitespace) {
        return Err(format!(
            "{text:?} contains whitespace; separate directives with commas, \
             such as \"linkpush=debug,info\""
        ));
    }
    for directive in text.split(',').filter(|d| !d.is_empty()) {
        let bare = !directive.contains(['=', '[']);
        if bare
            && directive
                .parse::<tracing::level_filters::LevelFilter>()
                .is_err()
        {
            return Err(format!(
                "{directive:?} is not a level; {EXPECTED} (to log every level of a \
                 target, write \"{directive}=trace\")"
            ));
        }
    }
    EnvFilter::builder()
        .parse(text)
        .map_err(|error| format!("{text:?} is not a tracing filter ({error}); {EXPECTED}"))
}
