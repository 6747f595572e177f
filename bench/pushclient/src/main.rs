//! pushclient: the HTTP/2 client of the linkpush benchmarks.
//!
//! * `push`: N connections with SETTINGS_ENABLE_PUSH=1 each fetch a page M
//!   times, accept every PUSH_PROMISE and read every pushed body.
//! * `page-load`: fetches a page and its subresources as a browser would, on
//!   a fresh connection each time, and times connect start to last byte.
//! * `idle`: opens N connections (TLS + h2 + one request) and holds them.
//! * `reset`: N connections keep streams in flight and cancel a random
//!   fraction of them with RST_STREAM(CANCEL) at a random point.
//!
//! Every mode prints one JSON object on stdout.

mod links;
mod net;
mod reset;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use h2::client::{PushPromise, PushPromises};
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use net::{Fetched, Result, Target};

#[derive(Parser)]
#[command(name = "pushclient", version, about = "HTTP/2 server-push load client")]
struct Cli {
    /// Runtime worker threads (1 = single-threaded runtime)
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand)]
enum Mode {
    /// Fetch a page repeatedly on N push-enabled connections, reading every push
    Push {
        #[command(flatten)]
        target: Target,
        /// Connections open at the same time (one page fetch in flight on each)
        #[arg(short = 'c', long, default_value_t = 10)]
        connections: usize,
        /// Page fetches per connection before it is closed and a new one
        /// opened (0: keep each connection for the whole run)
        #[arg(short = 'm', long, default_value_t = 0)]
        per_connection: u64,
        /// Page fetches in total, over all connections
        #[arg(short = 'n', long, default_value_t = 10_000)]
        pages: u64,
        /// Stop issuing new fetches after this many seconds
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
    },
    /// Load a page and its subresources like a browser, each time on a new connection
    PageLoad {
        #[command(flatten)]
        target: Target,
        /// Page loads (sequential, one connection each)
        #[arg(short = 'n', long, default_value_t = 5)]
        loads: usize,
        /// Advertise SETTINGS_ENABLE_PUSH=0
        #[arg(long)]
        no_push: bool,
        /// Give up on one page load after this many seconds
        #[arg(long, default_value_t = 20.0)]
        timeout: f64,
    },
    /// Open N connections (TLS + h2 + one request) and hold them idle
    Idle {
        #[command(flatten)]
        target: Target,
        /// Connections to open
        #[arg(short = 'c', long, default_value_t = 1000)]
        connections: usize,
        /// Connections being set up at the same time
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        /// Seconds to hold the connections once all are open
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
        /// File written (JSON) when every connection is open
        #[arg(long)]
        ready_file: Option<PathBuf>,
        /// Give up opening connections after this many seconds
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Keep streams in flight on N connections and cancel a random fraction of them
    Reset {
        #[command(flatten)]
        target: Target,
        /// Connections open at the same time
        #[arg(short = 'c', long, default_value_t = 10)]
        connections: usize,
        /// Streams in flight on each connection
        #[arg(short = 'm', long, default_value_t = 10)]
        streams: usize,
        /// Share of streams cancelled with RST_STREAM(CANCEL), 0 to 1
        #[arg(long, default_value_t = 0.5)]
        reset_fraction: f64,
        /// Most resets per second on one connection (0: no cap)
        #[arg(long, default_value_t = 30.0)]
        max_resets_per_s: f64,
        /// Stop starting new streams after this many seconds
        #[arg(long, default_value_t = 10.0)]
        duration: f64,
        /// Streams in total, over all connections
        #[arg(short = 'n', long, default_value_t = 10_000_000)]
        requests: u64,
        /// Seed of the random choices
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    let rt = if cli.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cli.threads)
            .enable_all()
            .build()
    }
    .expect("tokio runtime");
    let result = rt.block_on(async move {
        match cli.mode {
            Mode::Push {
                target,
                connections,
                per_connection,
                pages,
                duration,
            } => push_mode(target, connections, per_connection, pages, duration).await,
            Mode::PageLoad {
                target,
                loads,
                no_push,
                timeout,
            } => page_load_mode(target, loads, !no_push, timeout).await,
            Mode::Idle {
                target,
                connections,
                parallel,
                hold,
                ready_file,
                timeout,
            } => idle_mode(target, connections, parallel, hold, ready_file, timeout).await,
            Mode::Reset {
                target,
                connections,
                streams,
                reset_fraction,
                max_resets_per_s,
                duration,
                requests,
                seed,
            } => {
                let plan = reset::Plan {
                    connections,
                    streams: streams.max(1),
                    fraction: reset_fraction.clamp(0.0, 1.0),
                    resets_per_s: max_resets_per_s.max(0.0),
                    duration,
                    requests,
                    seed,
                };
                reset::run(target, plan).await
            }
        }
    });
    match result {
        Ok(v) => println!("{v}"),
        Err(e) => {
            println!("{}", json!({ "fatal": e.to_string() }));
            std::process::exit(1);
        }
    }
    // Do not wait for connection tasks still open at exit.
    rt.shutdown_timeout(Duration::from_millis(100));
}

/// Takes every push promise already received, without waiting.
fn drain_ready(promises: &mut PushPromises, out: &mut Vec<PushPromise>) -> Option<h2::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        let mut next = pin!(promises.push_promise());
        match next.as_mut().poll(&mut cx) {
            Poll::Ready(Some(Ok(p))) => out.push(p),
            Poll::Ready(Some(Err(e))) => return Some(e),
            Poll::Ready(None) | Poll::Pending => return None,
        }
    }
}

// ---------------------------------------------------------------- push mode

#[derive(Default)]
struct PushTotals {
    connections: u64,
    pages: u64,
    page_bytes: u64,
    pushes: u64,
    pushed_bytes: u64,
    incomplete_pushes: u64,
    errors: u64,
    samples: Vec<String>,
}

impl PushTotals {
    fn error(&mut self, e: impl ToString) {
        self.errors += 1;
        if self.samples.len() < 5 {
            self.samples.push(e.to_string());
        }
    }
}

async fn push_mode(
    target: Target,
    connections: usize,
    per_connection: u64,
    pages: u64,
    duration: f64,
) -> Result<serde_json::Value> {
    let tls = net::tls_connector(&target)?;
    let target = Arc::new(target);
    let budget = Arc::new(std::sync::atomic::AtomicU64::new(pages));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(duration);
    // Takes one page from the shared budget, unless it or the time is used up.
    let take = move |budget: &std::sync::atomic::AtomicU64| {
        Instant::now() < deadline
            && budget
                .fetch_update(
                    std::sync::atomic::Ordering::Relaxed,
                    std::sync::atomic::Ordering::Relaxed,
                    |b| b.checked_sub(1),
                )
                .is_ok()
    };
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, tls, budget) = (target.clone(), tls.clone(), budget.clone());
        tasks.push(tokio::spawn(async move {
            let mut t = PushTotals::default();
            'connections: while take(&budget) {
                let conn = match net::connect(&target, &tls, true).await {
                    Ok(c) => c,
                    Err(e) => {
                        t.error(format!("connect: {e}"));
                        break;
                    }
                };
                t.connections += 1;
                let mut on_this = 0u64;
                loop {
                    if let Err(e) = fetch_with_pushes(&conn.send, &target, &mut t).await {
                        t.error(e);
                        conn.driver.abort();
                        break 'connections;
                    }
                    on_this += 1;
                    if (per_connection > 0 && on_this >= per_connection) || !take(&budget) {
                        break;
                    }
                }
                conn.driver.abort();
                if per_connection == 0 {
                    break;
                }
            }
            t
        }));
    }
    let mut total = PushTotals::default();
    for task in tasks {
        let t = task.await?;
        total.connections += t.connections;
        total.pages += t.pages;
        total.page_bytes += t.page_bytes;
        total.pushes += t.pushes;
        total.pushed_bytes += t.pushed_bytes;
        total.incomplete_pushes += t.incomplete_pushes;
        total.errors += t.errors;
        for s in t.samples {
            if total.samples.len() < 5 {
                total.samples.push(s);
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    Ok(json!({
        "mode": "push",
        "concurrency": connections,
        "pages_per_connection": per_connection,
        "connections_opened": total.connections,
        "pages": total.pages,
        "elapsed_s": elapsed,
        "pages_per_s": total.pages as f64 / elapsed,
        "page_bytes": total.page_bytes,
        "pushes": total.pushes,
        "pushes_per_page": if total.pages > 0 { total.pushes as f64 / total.pages as f64 } else { 0.0 },
        "pushed_bytes": total.pushed_bytes,
        "incomplete_pushes": total.incomplete_pushes,
        "errors": total.errors,
        "error_samples": total.samples,
    }))
}

/// One page fetch: the response plus every stream the server pushed with it.
///
/// Promises are taken without waiting when the response headers arrive (a
/// server sends them before the response that refers to them) and again
/// once the page body has ended; h2 does not wake a task waiting on
/// `push_promise()` when the parent stream closes, so it is never awaited
/// while the parent is open.
async fn fetch_with_pushes(
    send: &h2::client::SendRequest<bytes::Bytes>,
    target: &Target,
    t: &mut PushTotals,
) -> Result<()> {
    let mut send = send.clone().ready().await?;
    let (mut response, _) = send.send_request(target.request(&target.path), true)?;
    let mut promises = response.push_promises();
    let mut readers: Vec<JoinHandle<Result<Fetched>>> = Vec::new();
    let take = |promises: &mut PushPromises, readers: &mut Vec<JoinHandle<Result<Fetched>>>| {
        let mut got = Vec::new();
        let err = drain_ready(promises, &mut got);
        for p in got {
            let (_, fut) = p.into_parts();
            readers.push(tokio::spawn(net::read_pushed(fut)));
        }
        err
    };
    let response = response.await?;
    let status = response.status();
    if let Some(e) = take(&mut promises, &mut readers) {
        t.error(format!("push promise: {e}"));
    }
    let (bytes, _) = net::read_body(response.into_body()).await?;
    if !status.is_success() {
        t.error(format!("page status {status}"));
    } else {
        t.pages += 1;
        t.page_bytes += bytes;
    }
    if let Some(e) = take(&mut promises, &mut readers) {
        t.error(format!("push promise: {e}"));
    }
    for r in readers {
        match r.await? {
            Ok(f) if (200..300).contains(&f.status) => {
                t.pushes += 1;
                t.pushed_bytes += f.bytes;
            }
            _ => t.incomplete_pushes += 1,
        }
    }
    Ok(())
}

// ----------------------------------------------------------- page-load mode

async fn page_load_mode(
    target: Target,
    loads: usize,
    push: bool,
    timeout: f64,
) -> Result<serde_json::Value> {
    let tls = net::tls_connector(&target)?;
    let mut results = Vec::new();
    let mut totals = Vec::new();
    let mut errors = 0u64;
    let mut samples = Vec::new();
    for _ in 0..loads {
        match tokio::time::timeout(
            Duration::from_secs_f64(timeout),
            page_load(&target, &tls, push),
        )
        .await
        {
            Ok(Ok(r)) => {
                totals.push(r["total_ms"].as_f64().unwrap_or(f64::NAN));
                results.push(r);
            }
            Ok(Err(e)) => {
                errors += 1;
                samples.push(e.to_string());
            }
            Err(_) => {
                errors += 1;
                samples.push("page load timed out".to_string());
            }
        }
    }
    let mut sorted = totals.clone();
    let med = net::median(&mut sorted);
    Ok(json!({
        "mode": "page-load",
        "push_enabled": push,
        "loads": results.len(),
        "errors": errors,
        "error_samples": samples,
        "median_total_ms": med,
        "min_total_ms": sorted.first().copied(),
        "max_total_ms": sorted.last().copied(),
        "runs": results,
    }))
}

/// One page load on a fresh connection.
async fn page_load(
    target: &Target,
    tls: &tokio_rustls::TlsConnector,
    push: bool,
) -> Result<serde_json::Value> {
    let t0 = Instant::now();
    let ms = |t: Instant| (t - t0).as_secs_f64() * 1000.0;
    let conn = net::connect(target, tls, push).await?;
    let t_connected = Instant::now();
    let mut send = conn.send.clone().ready().await?;
    let (mut response, _) = send.send_request(target.request(&target.path), true)?;
    let mut promises = if push {
        Some(response.push_promises())
    } else {
        None
    };

    // Pushed responses, by path; each is read as soon as it is promised.
    let mut pushed: HashMap<String, JoinHandle<Result<Fetched>>> = HashMap::new();
    let mut pushed_order: Vec<String> = Vec::new();
    let mut take_promises =
        |promises: &mut Option<PushPromises>,
         pushed: &mut HashMap<String, JoinHandle<Result<Fetched>>>| {
            if let Some(pp) = promises.as_mut() {
                let mut got = Vec::new();
                let _ = drain_ready(pp, &mut got);
                for p in got {
                    let (req, fut) = p.into_parts();
                    let path = req
                        .uri()
                        .path_and_query()
                        .map_or("/".to_string(), |p| p.to_string());
                    pushed_order.push(path.clone());
                    pushed.insert(path, tokio::spawn(net::read_pushed(fut)));
                }
            }
        };

    // Requests issued with ordinary GETs, by path.
    let mut requested: HashMap<String, JoinHandle<Result<Fetched>>> = HashMap::new();
    let request = |requested: &mut HashMap<String, JoinHandle<Result<Fetched>>>, path: &str| {
        let (send, target) = (conn.send.clone(), target.clone());
        let p = path.to_string();
        requested.insert(
            path.to_string(),
            tokio::spawn(async move { net::get(send, &target, &p).await }),
        );
    };

    // 103 Early Hints: fetch their preload targets at once, as a browser does.
    let mut early_hints = 0u64;
    let mut hinted: Vec<String> = Vec::new();
    let mut t_first_hint: Option<Instant> = None;
    let response = loop {
        let event = std::future::poll_fn(|cx| {
            if let Poll::Ready(Some(Ok(info))) = response.poll_informational(cx) {
                return Poll::Ready(Err(info));
            }
            Pin::new(&mut response).poll(cx).map(Ok)
        })
        .await;
        match event {
            Ok(final_response) => break final_response?,
            Err(info) => {
                if info.status().as_u16() != 103 {
                    continue;
                }
                early_hints += 1;
                t_first_hint.get_or_insert_with(Instant::now);
                take_promises(&mut promises, &mut pushed);
                let paths = links::preload_paths(
                    info.headers()
                        .get_all(http::header::LINK)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                    &target.path,
                );
                for p in paths {
                    if !pushed.contains_key(&p) && !requested.contains_key(&p) {
                        request(&mut requested, &p);
                    }
                    if !hinted.contains(&p) {
                        hinted.push(p);
                    }
                }
            }
        }
    };
    let t_headers = Instant::now();
    let status = response.status();
    if !status.is_success() {
        return Err(format!("page status {status}").into());
    }
    // Promises are sent before the response that refers to them: all are here now.
    take_promises(&mut promises, &mut pushed);
    // Link: rel=preload in the response headers: fetch what was not pushed.
    let preload = links::preload_paths(
        response
            .headers()
            .get_all(http::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        &target.path,
    );
    for p in &preload {
        if !pushed.contains_key(p) && !requested.contains_key(p) {
            request(&mut requested, p);
        }
    }

    let mut body = response.into_body();
    let mut html = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        html.extend_from_slice(&chunk);
    }
    let _ = body.trailers().await?;
    let t_page = Instant::now();
    take_promises(&mut promises, &mut pushed);

    // The parser finds the subresources; fetch any neither pushed nor requested yet.
    let subresources = links::html_subresources(&String::from_utf8_lossy(&html), &target.path);
    for p in &subresources {
        if !pushed.contains_key(p) && !requested.contains_key(p) {
            request(&mut requested, p);
        }
    }

    // Wait for every needed resource; a failed push falls back to a GET.
    let mut last = t_page;
    let mut bytes = html.len() as u64;
    let (mut pushed_used, mut push_failed, mut fetched) = (0u64, 0u64, 0u64);
    let mut needed: Vec<&String> = subresources.iter().collect();
    for p in preload.iter().chain(hinted.iter()) {
        if !needed.contains(&p) {
            needed.push(p);
        }
    }
    for p in needed {
        let res = if let Some(h) = pushed.remove(p) {
            match h.await? {
                Ok(f) if (200..300).contains(&f.status) => {
                    pushed_used += 1;
                    Ok(f)
                }
                _ => {
                    push_failed += 1;
                    net::get(conn.send.clone(), target, p).await
                }
            }
        } else {
            let h = requested.remove(p).expect("requested");
            fetched += 1;
            h.await?
        };
        let f = res?;
        if !(200..300).contains(&f.status) {
            return Err(format!("{p}: status {}", f.status).into());
        }
        bytes += f.bytes;
        last = last.max(f.done);
    }
    // Whatever else was pushed is not needed by the page.
    if let Some(pp) = promises.as_mut() {
        let mut late = Vec::new();
        let _ = drain_ready(pp, &mut late);
        for p in late {
            let (req, _) = p.into_parts();
            pushed_order.push(req.uri().path().to_string());
        }
    }
    let pushed_unused = (pushed_order.len() as u64).saturating_sub(pushed_used + push_failed);
    drop(send);
    conn.driver.abort();
    Ok(json!({
        "total_ms": ms(last),
        "connect_ms": ms(t_connected),
        "headers_ms": ms(t_headers),
        "page_ms": ms(t_page),
        "subresources": subresources.len(),
        "preload_links": preload.len(),
        "early_hints": early_hints,
        "first_hint_ms": t_first_hint.map(ms),
        "pushed_used": pushed_used,
        "pushed_unused": pushed_unused,
        "push_failed": push_failed,
        "requested": fetched,
        "bytes": bytes,
    }))
}

// ---------------------------------------------------------------- idle mode

async fn idle_mode(
    target: Target,
    connections: usize,
    parallel: usize,
    hold: f64,
    ready_file: Option<PathBuf>,
    timeout: f64,
) -> Result<serde_json::Value> {
    let tls = net::tls_connector(&target)?;
    let target = Arc::new(target);
    let gate = Arc::new(Semaphore::new(parallel.max(1)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (target, tls, gate) = (target.clone(), tls.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire().await.expect("semaphore");
            let conn = net::connect(&target, &tls, false).await?;
            let f = net::get(conn.send.clone(), &target, &target.path).await?;
            if !(200..300).contains(&f.status) {
                return Err(format!("status {}", f.status).into());
            }
            Ok::<_, net::Error>(conn)
        }));
    }
    let mut open = Vec::new();
    let mut failed = 0u64;
    let mut samples: Vec<String> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(timeout);
    for task in tasks {
        match tokio::time::timeout_at(deadline, task).await {
            Ok(Ok(Ok(conn))) => open.push(conn),
            Ok(Ok(Err(e))) => {
                failed += 1;
                if samples.len() < 5 {
                    samples.push(e.to_string());
                }
            }
            Ok(Err(e)) => {
                failed += 1;
                if samples.len() < 5 {
                    samples.push(e.to_string());
                }
            }
            Err(_) => {
                failed += 1;
                if samples.len() < 5 {
                    samples.push("timed out opening".to_string());
                }
            }
        }
    }
    let open_s = start.elapsed().as_secs_f64();
    let ready = json!({ "opened": open.len(), "failed": failed, "open_s": open_s });
    if let Some(path) = &ready_file {
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, ready.to_string()).await?;
        tokio::fs::rename(&tmp, path).await?;
    }
    tokio::time::sleep(Duration::from_secs_f64(hold)).await;
    let closed_early = open.iter().filter(|c| c.driver.is_finished()).count();
    let opened = open.len();
    for c in &open {
        c.driver.abort();
    }
    drop(open);
    Ok(json!({
        "mode": "idle",
        "requested": connections,
        "opened": opened,
        "failed": failed,
        "closed_early": closed_early,
        "open_s": open_s,
        "hold_s": hold,
        "error_samples": samples,
    }))
}
