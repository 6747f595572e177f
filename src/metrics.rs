//! Counters, and their Prometheus text exposition (served by [`crate::admin`]).
//!
//! Every counter is a relaxed atomic: the hot path never takes a lock.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::conn::Protocol;
use crate::error::{ErrorSide, ProxyError};
use crate::policy::push::{Plan, Reason};

mod process;

/// Upper bounds of the request-duration histogram, in seconds.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds of the origin response-time histogram, in seconds: from a
/// cached page on loopback (a millisecond) to a slow report that runs into
/// the default `timeouts.origin_response_header` (30 s).
const ORIGIN_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

const PROTOCOLS: [Protocol; 2] = [Protocol::Http1, Protocol::Http2];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a connection on a PROXY protocol listener was closed unserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRejection {
    /// It came from a source not in `proxy_protocol_from`.
    Untrusted,
    /// It did not start with a valid PROXY header.
    Invalid,
    /// Its PROXY header did not arrive within `client_header_read`.
    Timeout,
}

impl ProxyRejection {
    const ALL: [ProxyRejection; 3] = [
        ProxyRejection::Untrusted,
        ProxyRejection::Invalid,
        ProxyRejection::Timeout,
    ];

    fn label(self) -> &'static str {
        match self {
            ProxyRejection::Untrusted => "untrusted",
            ProxyRejection::Invalid => "invalid",
            ProxyRejection::Timeout => "timeout",
        }
    }
}

/// The proxy's counters.
#[derive(Default)]
pub struct Metrics {
    connections_total: AtomicU64,
    connections_open: AtomicI64,
    tls_failures: AtomicU64,
    /// In `ProxyRejection::ALL` order.
    proxy_rejections: [AtomicU64; ProxyRejection::ALL.len()],
    /// [protocol][status class]
    requests: [[AtomicU64; 5]; 2],
    response_bytes: AtomicU64,
    duration: Histogram<{ BUCKETS.len() }>,
    /// Request sent to the origin until its response head (or failure).
    origin_response: Histogram<{ ORIGIN_BUCKETS.len() }>,
    origin_connect_errors: AtomicU64,
    origin_timeouts: AtomicU64,
    origin_protocol_errors: AtomicU64,
    origin_body_errors: AtomicU64,
    client_errors: AtomicU64,
    client_resets: AtomicU64,
    push_promises: AtomicU64,
    pushed_bytes: AtomicU64,
    pushes_cancelled: AtomicU64,
    /// Per push decision reason, in `Reason::ALL` order.
    push_decisions: [AtomicU64; Reason::ALL.len()],
    hints_sent: AtomicU64,
    reset_floods: AtomicU64,
    learned_pushes: AtomicU64,
    learned_confirmed: AtomicU64,
    learned_wasted: AtomicU64,
    /// [ok, error]
    config_reloads: [AtomicU64; 2],
}

/// A histogram's counters: per bucket (not cumulative; the exposition adds
/// them up), the count, and the sum in microseconds.
struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64; N], seconds: f64) {
        if let Some(bucket) = bounds.iter().position(|bound| seconds <= *bound) {
            inc(&self.buckets[bucket]);
        }
        inc(&self.count);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Metrics {
    pub fn connection_opened(&self) {
        inc(&self.connections_total);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    pub fn tls_failure(&self) {
        inc(&self.tls_failures);
    }

    pub fn proxy_protocol_rejected(&self, why: ProxyRejection) {
        inc(&self.proxy_rejections[why as usize]);
    }

    /// A finished request: its status, body bytes sent, and duration.
    pub fn request(&self, protocol: Protocol, status: u16, bytes: u64, started: Instant) {
        let protocol = match protocol {
            Protocol::Http1 => 0,
            Protocol::Http2 => 1,
        };
        let class = (usize::from(status / 100)).clamp(1, 5) - 1;
        inc(&self.requests[protocol][class]);
        self.response_bytes.fetch_add(bytes, Ordering::Relaxed);
        self.duration
            .observe(&BUCKETS, started.elapsed().as_secs_f64());
    }

    /// How long the origin took to answer one request (or to fail).
    pub fn origin_response(&self, time: Duration) {
        self.origin_response
            .observe(&ORIGIN_BUCKETS, time.as_secs_f64());
    }

    /// A configuration reload was applied (`ok`) or rejected.
    pub fn config_reload(&self, ok: bool) {
        inc(&self.config_reloads[usize::from(!ok)]);
    }

    pub fn origin_error(&self, error: &ProxyError) {
        match error {
            ProxyError::OriginConnect(_) => inc(&self.origin_connect_errors),
            ProxyError::OriginTimeout(_) => inc(&self.origin_timeouts),
            ProxyError::OriginProtocol(_) => inc(&self.origin_protocol_errors),
            other if other.side() == ErrorSide::Client => inc(&self.client_errors),
            _ => {}
        }
    }

    pub fn origin_body_error(&self) {
        inc(&self.origin_body_errors);
    }

    pub fn client_reset(&self) {
        inc(&self.client_resets);
    }

    pub fn push_promised(&self) {
        inc(&self.push_promises);
    }

    pub fn pushed_bytes(&self, bytes: u64) {
        self.pushed_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub fn push_cancelled(&self) {
        inc(&self.pushes_cancelled);
    }

    /// A connection was closed for resetting streams too fast.
    pub fn reset_flood(&self) {
        inc(&self.reset_floods);
    }

    /// A 103 Early Hints response went to a client.
    pub fn hint_sent(&self) {
        inc(&self.hints_sent);
    }

    /// Pushes started from learned hints.
    pub fn learned_pushes(&self, count: u64) {
        self.learned_pushes.fetch_add(count, Ordering::Relaxed);
    }

    /// A learned push that the final response named too (confirmed), or
    /// did not (wasted).
    pub fn learned_push_outcome(&self, confirmed: bool) {
        inc(if confirmed {
            &self.learned_confirmed
        } else {
            &self.learned_wasted
        });
    }

    /// Count every decision of a plan under its reason code.
    pub fn push_decisions(&self, plan: &Plan) {
        for decision in plan.decisions() {
            if let Some(counter) = self.push_decisions.get(decision.reason.index()) {
                inc(counter);
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn render(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = Exposition(String::with_capacity(8192));
        out.family(
            "linkpush_build_info",
            "gauge",
            "Always 1; the version label says which build is running.",
        );
        out.sample(
            "linkpush_build_info",
            concat!("version=\"", env!("CARGO_PKG_VERSION"), "\""),
            1,
        );
        out.family(
            "linkpush_connections_total",
            "counter",
            "Client connections accepted.",
        );
        out.sample(
            "linkpush_connections_total",
            "",
            get(&self.connections_total),
        );
        out.family(
            "linkpush_connections_open",
            "gauge",
            "Client connections open now.",
        );
        let open = self.connections_open.load(Ordering::Relaxed).max(0) as u64;
        out.sample("linkpush_connections_open", "", open);
        out.family(
            "linkpush_tls_handshake_failures_total",
            "counter",
            "TLS handshakes that failed or timed out.",
        );
        out.sample(
            "linkpush_tls_handshake_failures_total",
            "",
            get(&self.tls_failures),
        );
        out.family(
            "linkpush_proxy_protocol_rejections_total",
            "counter",
            "Connections on PROXY protocol listeners closed unserved, by reason.",
        );
        for (why, value) in ProxyRejection::ALL.iter().zip(&self.proxy_rejections) {
            let labels = format!("reason=\"{}\"", why.label());
            out.sample(
                "linkpush_proxy_protocol_rejections_total",
                &labels,
                get(value),
            );
        }
        out.family(
            "linkpush_requests_total",
            "counter",
            "Requests answered, by client protocol and status class.",
        );
        for (p, protocol) in PROTOCOLS.iter().enumerate() {
            for (c, class) in CLASSES.iter().enumerate() {
                let labels = format!("protocol=\"{}\",class=\"{class}\"", protocol.as_str());
                out.sample(
                    "linkpush_requests_total",
                    &labels,
                    get(&self.requests[p][c]),
                );
            }
        }
        out.family(
            "linkpush_response_bytes_total",
            "counter",
            "Response body bytes sent to clients (pushes excluded).",
        );
        out.sample(
            "linkpush_response_bytes_total",
            "",
            get(&self.response_bytes),
        );
        out.histogram(
            "linkpush_request_duration_seconds",
            "Time from request to the end of the response.",
            &BUCKETS,
            &self.duration,
        );
        out.histogram(
            "linkpush_origin_response_seconds",
            "Time from sending a request to the origin until its response head (or the failure).",
            &ORIGIN_BUCKETS,
            &self.origin_response,
        );
        out.family(
            "linkpush_origin_errors_total",
            "counter",
            "Origin failures, by kind.",
        );
        for (kind, value) in [
            ("connect", &self.origin_connect_errors),
            ("timeout", &self.origin_timeouts),
            ("protocol", &self.origin_protocol_errors),
            ("body", &self.origin_body_errors),
        ] {
            let labels = format!("kind=\"{kind}\"");
            out.sample("linkpush_origin_errors_total", &labels, get(value));
        }
        for (name, help, value) in [
            (
                "linkpush_client_errors_total",
                "Requests rejected as invalid.",
                &self.client_errors,
            ),
            (
                "linkpush_client_resets_total",
                "Streams the client reset before the response.",
                &self.client_resets,
            ),
            (
                "linkpush_push_promises_total",
                "PUSH_PROMISE frames sent.",
                &self.push_promises,
            ),
            (
                "linkpush_pushed_bytes_total",
                "Body bytes sent on pushed streams.",
                &self.pushed_bytes,
            ),
            (
                "linkpush_pushes_cancelled_total",
                "Pushed streams reset (origin error, client cancel, budget, cache digest).",
                &self.pushes_cancelled,
            ),
            (
                "linkpush_reset_floods_total",
                "Connections closed (ENHANCE_YOUR_CALM) for resetting streams too fast.",
                &self.reset_floods,
            ),
            (
                "linkpush_early_hints_sent_total",
                "103 Early Hints responses sent.",
                &self.hints_sent,
            ),
            (
                "linkpush_learned_pushes_total",
                "Pushes started from learned hints.",
                &self.learned_pushes,
            ),
        ] {
            out.family(name, "counter", help);
            out.sample(name, "", get(value));
        }
        out.family(
            "linkpush_push_decisions_total",
            "counter",
            "Link decisions, by reason code.",
        );
        for (reason, value) in Reason::ALL.iter().zip(&self.push_decisions) {
            let labels = format!("reason=\"{}\"", reason.code());
            out.sample("linkpush_push_decisions_total", &labels, get(value));
        }
        out.family(
            "linkpush_learned_push_outcomes_total",
            "counter",
            "Learned pushes the final response named (confirmed) or not (wasted).",
        );
        for (outcome, value) in [
            ("confirmed", &self.learned_confirmed),
            ("wasted", &self.learned_wasted),
        ] {
            let labels = format!("outcome=\"{outcome}\"");
            out.sample("linkpush_learned_push_outcomes_total", &labels, get(value));
        }
        out.family(
            "linkpush_config_reloads_total",
            "counter",
            "Configuration reloads, applied (ok) or rejected (error).",
        );
        for (result, value) in ["ok", "error"].iter().zip(&self.config_reloads) {
            let labels = format!("result=\"{result}\"");
            out.sample("linkpush_config_reloads_total", &labels, get(value));
        }
        if let Some(process) = process::read() {
            process.render(&mut out);
        }
        out.0
    }
}

/// Writes the Prometheus text format.
struct Exposition(String);

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn histogram<const N: usize>(
        &mut self,
        name: &str,
        help: &str,
        bounds: &[f64; N],
        histogram: &Histogram<N>,
    ) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        let mut cumulative = 0;
        for (bound, counter) in bounds.iter().zip(&histogram.buckets) {
            cumulative += counter.load(Ordering::Relaxed);
            self.sample(&bucket, &format!("le=\"{bound}\""), cumulative);
        }
        // Read after the buckets: an observation in between then shows in
        // the count and not in a bucket, never the other way round, so the
        // +Inf bucket stays at least the sum of the others.
        let count = histogram.count.load(Ordering::Relaxed).max(cumulative);
        self.sample(&bucket, "le=\"+Inf\"", count);
        let sum = histogram.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(self.0, "{name}_sum {sum}");
        self.sample(&format!("{name}_count"), "", count);
    }

    fn sample_f64(&mut self, name: &str, value: f64) {
        let _ = writeln!(self.0, "{name} {value}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: u64) {
        if labels.is_empty() {
            let _ = writeln!(self.0, "{name} {value}");
        } else {
            let _ = writeln!(self.0, "{name}{{{labels}}} {value}");
        }
    }
}
