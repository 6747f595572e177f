//! The small cleartext HTTP/1.1 endpoint for operators (metrics, liveness
//! and readiness), and the loop that serves it, which the demo's sample
//! origin reuses.
//!
//! - `/metrics`: the Prometheus text exposition of [`Metrics`], and of
//!   every upstream address ([`Upstreams::render`]).
//! - `/healthz`: `200 ok` whenever the process answers at all.
//! - `/readyz`: `200 ready` when the proxy's listeners are running and, for
//!   every upstream, a connection to one of its addresses opens within
//!   [`READY_CONNECT_TIMEOUT`]; else `503` with the reason on one line. No
//!   request is sent to the origin: the check must not show up in its logs
//!   or cost it a page render.

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::upstream::Upstreams;

/// How long `/readyz` waits for a connection to the origin. Short, because
/// probes have their own timeouts (Kubernetes' default is one second) and
/// an origin that takes longer than this to accept is not ready anyway.
pub const READY_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// What `/readyz` checks. The process keeps it up to date: it marks the
/// listeners running once they accept, and swaps the upstreams when a new
/// configuration takes effect. (A `Health` exists only once a
/// configuration has loaded, so "config loaded" needs no flag of its own.)
pub struct Health {
    /// The upstreams now. A lock, not an atomic: it is written on a reload
    /// and read once per probe or scrape, never on the request path.
    upstreams: RwLock<Arc<Upstreams>>,
    /// The proxy's listeners are accepting connections.
    listening: AtomicBool,
}

impl Health {
    /// Health for `upstreams`, with the listeners not yet running.
    pub fn new(upstreams: Arc<Upstreams>) -> Health {
        Health {
            upstreams: RwLock::new(upstreams),
            listening: AtomicBool::new(false),
        }
    }

    /// Check readiness against `upstreams` from now on.
    pub fn set_upstreams(&self, upstreams: Arc<Upstreams>) {
        // A poisoned lock only means a reader panicked; the value is whole.
        *self.upstreams.write().unwrap_or_else(|e| e.into_inner()) = upstreams;
    }

    fn upstreams(&self) -> Arc<Upstreams> {
        self.upstreams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether the proxy's listeners are accepting connections.
    pub fn set_listening(&self, listening: bool) {
        self.listening.store(listening, Ordering::Release);
    }

    /// `Ok` when ready; otherwise why not, in one line.
    pub async fn check(&self) -> Result<(), String> {
        if !self.listening.load(Ordering::Acquire) {
            return Err("listeners are not running".to_string());
        }
        self.upstreams().ready(READY_CONNECT_TIMEOUT).await
    }
}

/// Serve the operator endpoints on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) {
    serve_async(listener, shutdown, move |request| {
        let metrics = metrics.clone();
        let health = health.clone();
        async move {
            match request.uri().path() {
                "/metrics" => {
                    let mut page = metrics.render();
                    health.upstreams().render(&mut page);
                    let mut response = text(StatusCode::OK, page);
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("text/plain; version=0.0.4"),
                    );
                    response
                }
                "/healthz" => text(StatusCode::OK, "ok\n".to_string()),
                "/readyz" => match health.check().await {
                    Ok(()) => text(StatusCode::OK, "ready\n".to_string()),
                    Err(reason) => text(StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
                },
                _ => not_found(),
            }
        }
    })
    .await;
}

/// A plain-text response.
fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// A plain 404.
pub fn not_found() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"not found\n")));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response
}

/// Serve a small cleartext HTTP/1.1 endpoint with a synchronous handler,
/// until `shutdown`.
pub async fn serve_simple<F>(listener: TcpListener, shutdown: CancellationToken, respond: F)
where
    F: Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Clone + Send + Sync + 'static,
{
    serve_async(listener, shutdown, move |request| {
        std::future::ready(respond(&request))
    })
    .await;
}

/// Serve a small cleartext HTTP/1.1 endpoint with a handler that may wait
/// (on I/O, say), until `shutdown`.
pub async fn serve_async<F, R>(listener: TcpListener, shutdown: CancellationToken, respond: F)
where
    F: Fn(Request<Incoming>) -> R + Clone + Send + Sync + 'static,
    R: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => return,
        };
        let Ok((stream, _)) = accepted else {
            // EMFILE and friends: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let respond = respond.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| {
                let response = respond(request);
                async move { Ok::<_, Infallible>(response.await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Overrides};

    /// An address on loopback where nothing listens.
    async fn closed() -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        format!("http://{}", listener.local_addr().expect("address"))
    }

    /// The upstreams of a configuration with `extra` after `origin.url`.
    fn upstreams(origin: &str, extra: &str) -> Arc<Upstreams> {
        let text = format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n[origin]\nurl = \"{origin}\"\n{extra}"
        );
        let config = Config::from_toml_str(&text, std::path::Path::new("."), &Overrides::default())
            .expect("test config");
        Arc::new(Upstreams::new(&config, None))
    }

    #[tokio::test]
    async fn readiness_follows_listening_and_the_origin_address() {
        let live = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_url = format!("http://{}", live.local_addr().expect("address"));
        let health = Health::new(upstreams(&live_url, ""));
        let not_running = health.check().await.expect_err("not listening yet");
        assert_eq!(not_running, "listeners are not running");
        health.set_listening(true);
        assert_eq!(health.check().await, Ok(()));

        // A reload points it somewhere dead, then back.
        health.set_upstreams(upstreams(&closed().await, ""));
        let why = health.check().await.expect_err("dead origin");
        assert!(
            why.starts_with("origin ") && why.contains("unreachable"),
            "{why}"
        );
        assert!(!why.contains('\n'), "{why}");
        health.set_upstreams(upstreams(&live_url, ""));
        assert_eq!(health.check().await, Ok(()));
        health.set_listening(false);
        assert!(health.check().await.is_err());
    }

    #[tokio::test]
    async fn readiness_needs_one_reachable_address_in_every_upstream() {
        let live = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let live_url = format!("http://{}", live.local_addr().expect("address"));
        let dead = closed().await;
        let one_up = format!("[upstreams.app]\nservers = [\"{dead}\", \"{live_url}\"]\n");
        let health = Health::new(upstreams(&live_url, &one_up));
        health.set_listening(true);
        assert_eq!(health.check().await, Ok(()));
        let none_up = format!("[upstreams.app]\nservers = [\"{dead}\", \"{dead}\"]\n");
        health.set_upstreams(upstreams(&live_url, &none_up));
        let why = health.check().await.expect_err("no address of app is up");
        assert!(why.starts_with("upstream app: "), "{why}");
    }

    #[tokio::test]
    async fn readiness_connects_to_a_unix_socket_origin() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("origin.sock");
        let health = Health::new(upstreams(&format!("unix:{}", path.display()), ""));
        health.set_listening(true);
        let why = health.check().await.expect_err("no socket yet");
        assert!(why.starts_with("origin unix:"), "{why}");
        let _origin = tokio::net::UnixListener::bind(&path).expect("bind the socket");
        assert_eq!(health.check().await, Ok(()));
    }
}
