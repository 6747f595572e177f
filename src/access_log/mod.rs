//! The access log: one record per exchange (and one per pushed stream),
//! built as the exchange goes and written exactly once, when the response
//! has been sent or abandoned.
//!
//! - this module: the [`Record`] and its request id;
//! - `format`: the record as a JSON or a text line;
//! - [`sink`]: where lines go ([`sink::configure`], [`sink::reopen`]).
//!
//! The access log is not a `tracing` target: only `log.access_log` turns it
//! on or off, whatever the diagnostic log's filter.

mod format;
pub mod sink;

use std::borrow::Cow;
use std::hash::{BuildHasher as _, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use http::header::{HeaderValue, REFERER, USER_AGENT};
use http::uri::{Authority, PathAndQuery};
use http::Method;

use crate::config::LogFormat;
use crate::conn::ConnContext;
use crate::metrics::Metrics;

pub use sink::{configure, reopen};

/// At most this much of a `User-Agent` or `Referer` is kept for the log.
const MAX_CAPTURED: usize = 512;

/// What one access-log line says.
#[derive(Debug)]
pub struct Record {
    ctx: Arc<ConnContext>,
    /// Unique in the process: see [`next_request_id`].
    pub request_id: u64,
    pub method: Method,
    /// Empty until the request is validated.
    pub authority: Option<Authority>,
    pub path: Option<PathAndQuery>,
    started: Instant,
    pub status: u16,
    /// Time from sending the request to the origin until its response head.
    pub origin_time: Option<Duration>,
    /// The upstream address the request was (last) sent to.
    pub upstream: Option<Arc<str>>,
    /// This response was itself pushed.
    pub pushed: bool,
    /// Paths pushed alongside this response.
    pub pushes: Vec<String>,
    /// Why the exchange did not complete normally, if it did not.
    pub error: Option<Cow<'static, str>>,
    /// For a switch of protocols: the bytes the tunnel carried, client to
    /// origin and origin to client.
    pub upgraded: Option<(u64, u64)>,
    /// The request's `User-Agent` and `Referer`, cut to [`MAX_CAPTURED`]
    /// bytes, bytes that are not UTF-8 replaced.
    pub user_agent: Option<HeaderValue>,
    pub referer: Option<HeaderValue>,
}

impl Record {
    /// The record of a request as it arrived.
    pub fn begin(ctx: &Arc<ConnContext>, parts: &http::request::Parts, started: Instant) -> Record {
        Record {
            ctx: ctx.clone(),
            request_id: next_request_id(),
            method: parts.method.clone(),
            authority: None,
            path: parts.uri.path_and_query().cloned(),
            started,
            status: 0,
            origin_time: None,
            upstream: None,
            pushed: false,
            pushes: Vec::new(),
            error: None,
            upgraded: None,
            // Shared, not copied: only a line that is written decodes them.
            user_agent: parts.headers.get(USER_AGENT).cloned(),
            referer: parts.headers.get(REFERER).cloned(),
        }
    }

    /// The record of a pushed stream.
    pub fn pushed(ctx: &Arc<ConnContext>, authority: Authority, path: PathAndQuery) -> Record {
        Record {
            ctx: ctx.clone(),
            request_id: next_request_id(),
            method: Method::GET,
            authority: Some(authority),
            path: Some(path),
            started: Instant::now(),
            status: 0,
            origin_time: None,
            upstream: None,
            pushed: true,
            pushes: Vec::new(),
            error: None,
            upgraded: None,
            user_agent: None,
            referer: None,
        }
    }

    pub fn conn(&self) -> &ConnContext {
        &self.ctx
    }

    pub fn path(&self) -> &str {
        self.path.as_ref().map_or("", PathAndQuery::as_str)
    }

    /// Note why the exchange did not complete, unless a reason is known.
    pub fn fail(&mut self, why: impl Into<Cow<'static, str>>) {
        if self.error.is_none() {
            self.error = Some(why.into());
        }
    }

    /// Count the exchange and write its line: `bytes` of body were sent.
    /// Pushed streams are logged but counted under the push metrics only,
    /// except for the origin's response time, which counts every request
    /// the origin was sent.
    pub fn finish(self, bytes: u64, metrics: &Metrics, log: bool) {
        if !self.pushed {
            metrics.request(self.ctx.protocol, self.status, bytes, self.started);
        }
        if let Some(time) = self.origin_time {
            metrics.origin_response(time);
        }
        if !log {
            return;
        }
        let duration = self.started.elapsed();
        let user_agent = self.user_agent.as_ref().map(captured);
        let referer = self.referer.as_ref().map(captured);
        sink::emit(|format, out| {
            let mut entry = self.entry(duration, bytes);
            entry.user_agent = user_agent.as_deref();
            entry.referer = referer.as_deref();
            match format {
                LogFormat::Json => format::json(&entry, out),
                LogFormat::Text => format::text(&entry, out),
            }
        });
    }

    fn entry(&self, duration: Duration, bytes: u64) -> format::Entry<'_> {
        let ctx = &*self.ctx;
        format::Entry {
            time: humantime::format_rfc3339_millis(SystemTime::now()),
            request_id: format::RequestId(self.request_id),
            conn: ctx.id,
            client: ctx.peer,
            protocol: ctx.protocol.as_str(),
            tls_version: ctx.tls_version,
            alpn: ctx.alpn,
            method: self.method.as_str(),
            authority: self.authority.as_ref().map(Authority::as_str),
            path: self.path.as_ref().map(PathAndQuery::as_str),
            status: self.status,
            bytes,
            duration_ms: format::millis(duration),
            origin_ms: self.origin_time.map(format::millis),
            upstream: self.upstream.as_deref(),
            pushed: self.pushed,
            pushes: &self.pushes,
            referer: None,
            user_agent: None,
            error: self.error.as_deref(),
            tunnel: self.upgraded.map(|(up, down)| format::Tunnel { up, down }),
        }
    }
}

/// A request id: a random 64-bit start, drawn once per process, plus a
/// counter, so ids are unique within a process and unlikely to repeat
/// across restarts, for the cost of one atomic add.
pub fn next_request_id() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // std seeds each `RandomState` from the operating system's randomness.
    let start = *START.get_or_init(|| RandomState::new().hash_one(std::process::id()));
    start.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The first [`MAX_CAPTURED`] bytes of the first `name` field, as text.
fn captured(value: &HeaderValue) -> Cow<'_, str> {
    let value = value.as_bytes();
    String::from_utf8_lossy(&value[..value.len().min(MAX_CAPTURED)])
}
