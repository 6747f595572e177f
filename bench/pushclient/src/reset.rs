//! `reset` mode: connections that keep streams in flight and cancel a random
//! fraction of them with RST_STREAM(CANCEL), at a random point of the
//! exchange. It stands for clients that abandon requests (navigations,
//! scrolled-away images, impatient users) alongside ordinary load.
//!
//! Each stream is planned when it starts: complete it, or reset it
//!
//! * `headers`: right after the request HEADERS, before any answer;
//! * `waiting`: after a random 0–5 ms, unless the response head came first
//!   (then it counts as `head`);
//! * `head`: once the response head has arrived, before any body;
//! * `body`: after the first DATA of the body has been read.
//!
//! Resets are paced per connection (`--max-resets-per-s`, a token bucket
//! with one second of burst) so that a run measures the proxy under
//! sustained cancellation rather than its flood cut-off; `0` removes the
//! cap. A connection the server closes (GOAWAY, error) is replaced until
//! the run ends, and counted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::client::SendRequest;
use h2::Reason;
use serde_json::json;
use tokio::task::JoinSet;

use crate::net::{self, Result, Target};

/// What one reset-mode run is asked to do.
pub struct Plan {
    pub connections: usize,
    pub streams: usize,
    pub fraction: f64,
    pub resets_per_s: f64,
    pub duration: f64,
    pub requests: u64,
    pub seed: u64,
}

/// Where in the exchange a stream is reset.
#[derive(Debug, Clone, Copy)]
enum Point {
    Headers,
    Waiting(Duration),
    Head,
    Body,
}

/// How one stream ended.
#[derive(Debug)]
enum Outcome {
    /// Read to its end with a 2xx status.
    Complete(u64),
    /// Ended with a status other than 2xx (read to its end).
    Status(u16),
    /// Reset by us at this point (`"headers"`, `"waiting"`, `"head"`, `"body"`).
    Reset(&'static str),
    /// The response ended before the planned reset point came.
    ResetTooLate,
    /// Failed without our doing: stream or connection error.
    Error(String, bool),
}

/// SplitMix64: a small, seedable generator (no dependency needed).
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Per-connection pacing of resets.
struct Bucket {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64) -> Bucket {
        Bucket {
            rate,
            tokens: rate,
            at: Instant::now(),
        }
    }

    /// Wait until one reset may be made, and take it.
    async fn take(&mut self) {
        if self.rate <= 0.0 {
            return;
        }
        loop {
            let now = Instant::now();
            self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.rate)
                .min(self.rate);
            self.at = now;
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                return;
            }
            let wait = (1.0 - self.tokens) / self.rate;
            tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        }
    }
}

#[derive(Default)]
struct Totals {
    connections: u64,
    server_closed: u64,
    goaway_enhance_your_calm: u64,
    started: u64,
    completed: u64,
    bytes: u64,
    non_2xx: u64,
    reset_headers: u64,
    reset_waiting: u64,
    reset_head: u64,
    reset_body: u64,
    reset_too_late: u64,
    errors: u64,
    samples: Vec<String>,
}

impl Totals {
    fn error(&mut self, e: String) {
        self.errors += 1;
        if self.samples.len() < 5 {
            self.samples.push(e);
        }
    }

    fn count(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Complete(bytes) => {
                self.completed += 1;
                self.bytes += bytes;
            }
            Outcome::Status(status) => {
                self.non_2xx += 1;
                if self.samples.len() < 5 {
                    self.samples.push(format!("status {status}"));
                }
            }
            Outcome::Reset("headers") => self.reset_headers += 1,
            Outcome::Reset("waiting") => self.reset_waiting += 1,
            Outcome::Reset("head") => self.reset_head += 1,
            Outcome::Reset(_) => self.reset_body += 1,
            Outcome::ResetTooLate => self.reset_too_late += 1,
            Outcome::Error(e, calm) => {
                if calm {
                    self.goaway_enhance_your_calm += 1;
                }
                self.error(e);
            }
        }
    }

    fn add(&mut self, other: Totals) {
        self.connections += other.connections;
        self.server_closed += other.server_closed;
        self.goaway_enhance_your_calm += other.goaway_enhance_your_calm;
        self.started += other.started;
        self.completed += other.completed;
        self.bytes += other.bytes;
        self.non_2xx += other.non_2xx;
        self.reset_headers += other.reset_headers;
        self.reset_waiting += other.reset_waiting;
        self.reset_head += other.reset_head;
        self.reset_body += other.reset_body;
        self.reset_too_late += other.reset_too_late;
        self.errors += other.errors;
        for s in other.samples {
            if self.samples.len() < 5 {
                self.samples.push(s);
            }
        }
    }
}

fn describe(e: &h2::Error) -> (String, bool) {
    let calm = e.reason() == Some(Reason::ENHANCE_YOUR_CALM);
    (e.to_string(), calm)
}

/// One stream, carried out as planned.
async fn stream(send: SendRequest<Bytes>, target: Arc<Target>, point: Option<Point>) -> Outcome {
    let mut send = match send.ready().await {
        Ok(send) => send,
        Err(e) => {
            let (text, calm) = describe(&e);
            return Outcome::Error(format!("ready: {text}"), calm);
        }
    };
    let (response, mut request) = match send.send_request(target.request(&target.path), true) {
        Ok(pair) => pair,
        Err(e) => {
            let (text, calm) = describe(&e);
            return Outcome::Error(format!("send: {text}"), calm);
        }
    };
    let response = match point {
        Some(Point::Headers) => {
            request.send_reset(Reason::CANCEL);
            return Outcome::Reset("headers");
        }
        Some(Point::Waiting(delay)) => {
            tokio::pin!(response);
            tokio::select! {
                biased;
                head = &mut response => match head {
                    Ok(head) => {
                        if head.body().is_end_stream() {
                            return Outcome::ResetTooLate;
                        }
                        request.send_reset(Reason::CANCEL);
                        return Outcome::Reset("head");
                    }
                    Err(e) => {
                        let (text, calm) = describe(&e);
                        return Outcome::Error(format!("response: {text}"), calm);
                    }
                },
                _ = tokio::time::sleep(delay) => {
                    request.send_reset(Reason::CANCEL);
                    return Outcome::Reset("waiting");
                }
            }
        }
        _ => response.await,
    };
    let response = match response {
        Ok(response) => response,
        Err(e) => {
            let (text, calm) = describe(&e);
            return Outcome::Error(format!("response: {text}"), calm);
        }
    };
    let status = response.status().as_u16();
    match point {
        Some(Point::Head) => {
            if response.body().is_end_stream() {
                return Outcome::ResetTooLate;
            }
            request.send_reset(Reason::CANCEL);
            return Outcome::Reset("head");
        }
        Some(Point::Body) => {
            let mut body = response.into_body();
            match body.data().await {
                Some(Ok(chunk)) => {
                    let _ = body.flow_control().release_capacity(chunk.len());
                    if body.is_end_stream() {
                        return Outcome::ResetTooLate;
                    }
                    request.send_reset(Reason::CANCEL);
                    return Outcome::Reset("body");
                }
                Some(Err(e)) => {
                    let (text, calm) = describe(&e);
                    return Outcome::Error(format!("body: {text}"), calm);
                }
                None => return Outcome::ResetTooLate,
            }
        }
        _ => {}
    }
    match net::read_body(response.into_body()).await {
        Ok((bytes, _)) if (200..300).contains(&status) => Outcome::Complete(bytes),
        Ok(_) => Outcome::Status(status),
        Err(e) => {
            let (text, calm) = describe(&e);
            Outcome::Error(format!("body: {text}"), calm)
        }
    }
}

/// One client connection slot: keeps `streams` streams in flight until the
/// deadline, reconnecting when the server closes the connection.
async fn connection(
    target: Arc<Target>,
    tls: tokio_rustls::TlsConnector,
    plan: Arc<Plan>,
    budget: Arc<std::sync::atomic::AtomicU64>,
    deadline: Instant,
    seed: u64,
) -> Totals {
    let mut t = Totals::default();
    let mut rng = Rng(seed);
    let mut bucket = Bucket::new(plan.resets_per_s);
    let take = |budget: &std::sync::atomic::AtomicU64| {
        budget
            .fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |b| b.checked_sub(1),
            )
            .is_ok()
    };
    'connections: while Instant::now() < deadline {
        let conn = match net::connect(&target, &tls, false).await {
            Ok(conn) => conn,
            Err(e) => {
                t.error(format!("connect: {e}"));
                // Back off a little; the run's deadline still bounds this.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        t.connections += 1;
        let mut running: JoinSet<Outcome> = JoinSet::new();
        let mut closed = false;
        loop {
            while !closed && running.len() < plan.streams && Instant::now() < deadline {
                if conn.driver.is_finished() {
                    closed = true;
                    break;
                }
                if !take(&budget) {
                    break;
                }
                let point = if rng.unit() < plan.fraction {
                    bucket.take().await;
                    Some(match rng.below(4) {
                        0 => Point::Headers,
                        1 => Point::Waiting(Duration::from_micros(rng.below(5_000))),
                        2 => Point::Head,
                        _ => Point::Body,
                    })
                } else {
                    None
                };
                t.started += 1;
                running.spawn(stream(conn.send.clone(), target.clone(), point));
            }
            match running.join_next().await {
                Some(Ok(outcome)) => {
                    if matches!(outcome, Outcome::Error(..)) {
                        closed = closed || conn.driver.is_finished();
                    }
                    t.count(outcome);
                }
                Some(Err(e)) => t.error(format!("task: {e}")),
                None => break,
            }
        }
        let server_closed = conn.driver.is_finished();
        conn.driver.abort();
        if server_closed {
            t.server_closed += 1;
            continue 'connections;
        }
        break;
    }
    t
}

pub async fn run(target: Target, plan: Plan) -> Result<serde_json::Value> {
    let tls = net::tls_connector(&target)?;
    let target = Arc::new(target);
    let plan = Arc::new(plan);
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(plan.requests));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(plan.duration);
    let mut seeder = Rng(plan.seed);
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        tasks.push(tokio::spawn(connection(
            target.clone(),
            tls.clone(),
            plan.clone(),
            budget.clone(),
            deadline,
            seeder.next_u64(),
        )));
    }
    let mut total = Totals::default();
    for task in tasks {
        total.add(task.await?);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let resets = total.reset_headers + total.reset_waiting + total.reset_head + total.reset_body;
    Ok(json!({
        "mode": "reset",
        "connections": plan.connections,
        "streams_per_connection": plan.streams,
        "reset_fraction": plan.fraction,
        "max_resets_per_s_per_connection": plan.resets_per_s,
        "elapsed_s": elapsed,
        "connections_opened": total.connections,
        "connections_closed_by_server": total.server_closed,
        "goaway_enhance_your_calm": total.goaway_enhance_your_calm,
        "streams_started": total.started,
        "completed": total.completed,
        "completed_bytes": total.bytes,
        "non_2xx": total.non_2xx,
        "resets": resets,
        "resets_per_s": resets as f64 / elapsed,
        "reset_after_headers": total.reset_headers,
        "reset_while_waiting": total.reset_waiting,
        "reset_after_head": total.reset_head,
        "reset_mid_body": total.reset_body,
        "reset_too_late": total.reset_too_late,
        "errors": total.errors,
        "error_samples": total.samples,
    }))
}
