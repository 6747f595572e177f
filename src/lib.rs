//! linkpush: a TLS reverse proxy that lets legacy web apps use HTTP/2 server
//! push and 103 Early Hints by setting nothing but `Link` response headers.
//!
//! # Layout
//!
//! The modules follow a request from the client to the origin and back:
//!
//! - [`config`]: `proxy.toml` and command-line flags -> a validated [`Config`].
//! - [`runtime`]: the state shared by a process's workers, and each
//!   worker's own (its origin pools).
//! - [`server`]: listeners, the accept loop, the PROXY protocol header
//!   of a load balancer in front ([`proxy_protocol`]), the TLS handshake
//!   ([`tls`]), ALPN dispatch, connection limits and graceful shutdown.
//! - [`frontend`]: the client-facing protocols, protocol mechanics only.
//!   `h2` speaks HTTP/2 through the `h2` crate directly, because only it can
//!   send PUSH_PROMISE and 103s; `h1` speaks HTTP/1.1 through hyper.
//! - [`exchange`]: the request path both frontends drive, in named phases
//!   (validate and route, early hints, forward, 103s, clean, learn, decide,
//!   respond, log). [`site`] finds the site and route of a request. [`http_rules`] holds its pure HTTP rules, [`access_log`] its
//!   record, [`error`] the one place errors become responses.
//! - [`tunnel`]: an exchange that switched protocols (WebSocket, or an
//!   HTTP/2 extended CONNECT made a WebSocket handshake): bytes spliced
//!   both ways between the client and its own origin connection.
//! - [`upstream`]: named groups of origin addresses: balancing, passive
//!   and active health, retries of requests that never left.
//! - [`origin`]: the bounded pool of HTTP/1.1 connections toward one
//!   origin address, one per worker.
//! - [`policy`]: pure rules, no I/O: `link` parses RFC 8288 `Link` fields,
//!   `push` decides per link whether to push, keep or rewrite it, `hints`
//!   which requests get 103s and what may be learned, `digest` the cookie
//!   of what a browser was pushed before.
//! - [`logging`]: the diagnostic log's filter and subscriber, and the
//!   access log's destination ([`access_log::sink`]).
//! - [`metrics`] and [`admin`]: counters, and the endpoint that serves them.
//! - [`process`]: worker threads, signals, and reloads on SIGHUP.
//! - [`demo`]: the sample origin behind `linkpush demo`.
//!
//! # Threads
//!
//! [`run`] serves on the current tokio runtime. The binary
//! ([`process::serve`]) runs one single-threaded runtime per CPU
//! ([`server::run_worker`]), all accepting on the same listeners and
//! sharing one [`runtime::Generation`] at a time; the main thread handles
//! signals, reloads and the metrics endpoint.

#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod config;
pub mod conn;
pub mod demo;
pub mod error;
pub mod exchange;
pub mod frontend;
pub mod http_rules;
pub mod logging;
pub mod metrics;
pub mod origin;
pub mod policy;
pub mod process;
pub mod proxy_protocol;
pub mod request_body;
pub mod runtime;
pub mod server;
pub mod site;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use config::Config;
pub use server::{run, Listener};
