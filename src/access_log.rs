//! The access-log record: one per exchange (and one per pushed stream),
//! built as the exchange goes and written exactly once, when the response
//! has been sent or abandoned.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, PathAndQuery};
use http::Method;

use crate::conn::ConnContext;
use crate::metrics::Metrics;

/// What one access-log line says.
#[derive(Debug)]
pub struct Record {
    ctx: Arc<ConnContext>,
    pub method: Method,
    /// Empty until the request is validated.
    pub authority: Option<Authority>,
    pub path: Option<PathAndQuery>,
    started: Instant,
    pub status: u16,
    /// Time from sending the request to the origin until its response head.
    pub origin_time: Option<Duration>,
    /// This response was itself pushed.
    pub pushed: bool,
    /// Paths pushed alongside this response.
    pub pushes: Vec<String>,
    /// Why the exchange did not complete normally, if it did not.
    pub error: Option<Cow<'static, str>>,
    /// For a switch of protocols: the bytes the tunnel carried, client to
    /// origin and origin to client.
    pub upgraded: Option<(u64, u64)>,
}

impl Record {
    /// The record of a request as it arrived.
    pub fn begin(ctx: &Arc<ConnContext>, parts: &http::request::Parts, started: Instant) -> Record {
        Record {
            ctx: ctx.clone(),
            method: parts.method.clone(),
            authority: None,
            path: parts.uri.path_and_query().cloned(),
            started,
            status: 0,
            origin_time: None,
            pushed: false,
            pushes: Vec::new(),
            error: None,
            upgraded: None,
        }
    }

    /// The record of a pushed stream.
    pub fn pushed(ctx: &Arc<ConnContext>, authority: Authority, path: PathAndQuery) -> Record {
        Record {
            ctx: ctx.clone(),
            method: Method::GET,
            authority: Some(authority),
            path: Some(path),
            started: Instant::now(),
            status: 0,
            origin_time: None,
            pushed: true,
            pushes: Vec::new(),
            error: None,
            upgraded: None,
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
    /// Pushed streams are logged but counted under the push metrics only.
    pub fn finish(self, bytes: u64, metrics: &Metrics, log: bool) {
        if !self.pushed {
            metrics.request(self.ctx.protocol, self.status, bytes, self.started);
        }
        if !log {
            return;
        }
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let origin_ms = self.origin_time.map(|d| d.as_secs_f64() * 1000.0);
        let authority = self.authority.as_ref().map_or("", Authority::as_str);
        tracing::info!(
            target: "linkpush::access",
            conn = self.ctx.id,
            client = %self.ctx.peer,
            protocol = self.ctx.protocol.as_str(),
            method = self.method.as_str(),
            authority,
            path = self.path(),
            status = self.status,
            bytes,
            duration_ms = format_args!("{duration_ms:.3}"),
            origin_ms = origin_ms.map(|ms| format!("{ms:.3}")).unwrap_or_else(|| "-".to_string()),
            pushed = self.pushed,
            pushes = %self.pushes.join(" "),
            error = self.error.as_deref().unwrap_or(""),
            upgraded = self
                .upgraded
                .map(|(up, down)| format!("{up}/{down}"))
                .unwrap_or_default(),
            "request"
        );
    }
}
