//! linkpush: a TLS reverse proxy that lets legacy web apps use HTTP/2 server
//! push and 103 Early Hints by setting nothing but `Link` response headers.
//!
//! # Layout
//!
//! The modules follow a request from the client to the origin and back:
//!
//! - [`config`]: `proxy.toml` and command-line flags -> a validated [`Config`].
//! - [`tls`]: the rustls acceptor (ALPN `h2` and `http/1.1`, certificates).
//! - [`server`]: listeners, the accept loop, ALPN dispatch, connection limits
//!   and graceful shutdown.
//! - [`frontend`]: the client-facing protocols. `h2` speaks HTTP/2 through the
//!   `h2` crate directly, because only it can send PUSH_PROMISE and 103s;
//!   `h1` speaks HTTP/1.1 through hyper.
//! - [`proxy`]: the per-request path both frontends share: request
//!   validation, header translation, the origin call, the access log.
//! - [`origin`]: the bounded pool of HTTP/1.1 connections toward the
//!   origin, one per worker.
//! - [`link`] and [`push`]: pure policy. `link` parses RFC 8288 `Link` fields,
//!   `push` decides per link whether to push, keep, or rewrite it.
//! - [`hints`]: which requests get 103 Early Hints, and the bounded store of
//!   hints learned from earlier responses.
//! - [`digest`]: the cookie digest of what a browser was pushed before.
//! - [`metrics`]: counters and the Prometheus text endpoint.
//! - [`demo`]: the sample origin behind `linkpush demo`.
//! - [`error`]: the one error type of the request path and its HTTP mapping.
//!
//! # Request flow
//!
//! A client request is validated and translated by [`proxy`], sent to the
//! origin by [`origin`], and the origin's response head is handed to
//! [`push`]. For an HTTP/2 client that accepts pushes, the frontend sends a
//! PUSH_PROMISE for each link the policy picked, starts fetching each promised
//! resource from the origin, and only then sends the parent's HEADERS with the
//! rewritten `Link` field. HTTP/1.1 clients and clients that disabled push get
//! the same decisions with every push turned into a preload. Links known
//! before the final response (an origin 103, or learned hints) are pushed,
//! or hinted in a 103, while the origin is still working.
//!
//! # Threads
//!
//! [`run`] serves on the current tokio runtime. The binary runs one
//! single-threaded runtime per CPU ([`server::run_worker`]), all accepting on
//! the same listeners and sharing one [`server::Global`].

#![forbid(unsafe_code)]

pub mod config;
pub mod demo;
pub mod digest;
pub mod error;
pub mod frontend;
pub mod hints;
pub mod link;
pub mod metrics;
pub mod origin;
pub mod proxy;
pub mod push;
pub mod server;
pub mod tls;

pub use config::Config;
pub use server::{run, Listener};
