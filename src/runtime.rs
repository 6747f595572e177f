//! The state a proxy process shares across its workers ([`Global`]), one
//! configuration's worth of it with its listening sockets ([`Generation`]),
//! and the state each worker keeps for its own connections ([`Worker`]).
//!
//! A reload builds a new generation; workers give it to new connections,
//! while connections already open keep the [`Worker`] they started with
//! (its configuration, certificate and origin pool) until they close.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, TrustedProxies};
use crate::error::ProxyError;
use crate::metrics::Metrics;
use crate::origin::Origin;
use crate::policy::digest::Validators;
use crate::policy::hints::LearnedHints;
use crate::policy::push;
use crate::tls::{self, ServerNames, TlsError};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("a TLS listener is configured but no certificate: set tls.cert and tls.key, or tls.self_signed = true")]
    NoCertificate,
    #[error("origin: {0}")]
    Origin(#[from] ProxyError),
    #[error("metrics.listen: {0}")]
    Metrics(io::Error),
    #[error("{0}")]
    Listen(io::Error),
}

/// What every worker of one proxy process shares under one configuration:
/// the configuration, counters, learned state, the TLS acceptor and the
/// connection limit. Cheap to clone.
#[derive(Clone)]
pub struct Global {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    /// Learned early hints, when `[hints] learn` is on.
    pub learned: Option<Arc<LearnedHints>>,
    /// Validators of assets seen, when `[push] cache_digest` is on.
    pub validators: Option<Arc<Validators>>,
    pub acceptor: Option<TlsAcceptor>,
    /// The names pushes may be promised under.
    pub names: Arc<ServerNames>,
    /// Client connections open at once, over all workers.
    pub limit: Arc<Semaphore>,
    /// How many workers share the origin connection limit.
    pub workers: usize,
}

impl Global {
    /// Build the process-wide state for `workers` workers; loads (or
    /// generates) the certificate, so a bad one fails here, before anything
    /// listens. `previous`, on a reload, hands over what outlives a
    /// configuration: learned hints, validators and the connection limit,
    /// when their settings did not change.
    pub fn new(
        config: Arc<Config>,
        workers: usize,
        metrics: Arc<Metrics>,
        previous: Option<&Global>,
    ) -> Result<Global, ServerError> {
        let (acceptor, leaf) = match &config.tls.source {
            Some(source) => {
                let built = tls::acceptor(source)?;
                (Some(built.acceptor), Some(built.leaf))
            }
            None => (None, None),
        };
        let learned = config.hints.learn.then(|| {
            previous
                .filter(|old| old.config.hints == config.hints)
                .and_then(|old| old.learned.clone())
                .unwrap_or_else(|| Arc::new(LearnedHints::new(&config.hints)))
        });
        let validators = config.push.cache_digest.then(|| {
            let ttl = config.push.cache_digest_validator_ttl;
            previous
                .filter(|old| old.config.push.cache_digest_validator_ttl == ttl)
                .and_then(|old| old.validators.clone())
                .unwrap_or_else(|| Arc::new(Validators::new(ttl)))
        });
        let max = config.limits.max_connections;
        let limit = match previous.filter(|old| old.config.limits.max_connections == max) {
            Some(old) => old.limit.clone(),
            None => Arc::new(Semaphore::new(max)),
        };
        Ok(Global {
            metrics,
            learned,
            validators,
            acceptor,
            names: Arc::new(ServerNames::new(&config.server.names, leaf)),
            limit,
            workers: workers.max(1),
            config,
        })
    }
}

/// One configuration and the sockets it listens on, as handed to every
/// worker at start and on each reload.
pub struct Generation {
    /// Counts from 1, one up per successful reload.
    pub number: u64,
    pub global: Global,
    pub listeners: Vec<SharedListener>,
    /// One permit per worker that has taken this generation up: new
    /// connections get it, and removed listeners are closed.
    pub applied: Arc<Semaphore>,
}

/// A listening socket the process keeps open across reloads for as long as
/// the configuration names its address; each worker accepts on a duplicate.
#[derive(Clone)]
pub struct SharedListener {
    /// The address as configured (port 0 stays 0), which identifies the
    /// listener from one configuration to the next.
    pub configured: SocketAddr,
    /// TLS (ALPN h2 / http/1.1), or cleartext HTTP/1.1 plus h2c prior knowledge.
    pub tls: bool,
    /// The sources whose connections start with a PROXY protocol header.
    pub proxy_protocol: Option<TrustedProxies>,
    pub socket: Arc<std::net::TcpListener>,
}

impl SharedListener {
    /// Whether connections are served the same way on both: the address
    /// aside, every setting of the listener.
    pub fn same_settings(&self, other: &SharedListener) -> bool {
        self.tls == other.tls && self.proxy_protocol == other.proxy_protocol
    }
}

/// What the connections of one worker share.
pub struct Worker {
    pub config: Arc<Config>,
    /// This worker's pool of origin connections.
    pub origin: Origin,
    pub metrics: Arc<Metrics>,
    /// Cancelled when graceful shutdown starts.
    pub shutdown: CancellationToken,
    /// The push rules' view of `[push]`.
    pub policy: push::Policy,
    pub learned: Option<Arc<LearnedHints>>,
    pub validators: Option<Arc<Validators>>,
    /// The names pushes may be promised under.
    pub names: Arc<ServerNames>,
    /// The TLS acceptor of this configuration's certificate.
    pub acceptor: Option<TlsAcceptor>,
    /// Client connections open at once, over all workers.
    pub limit: Arc<Semaphore>,
    /// `push.forward_headers`, as header names.
    pub forward_headers: Vec<http::header::HeaderName>,
}

impl Worker {
    /// A worker's state under `global`; call on the worker's own runtime
    /// (its origin pool starts a timer task there). `shutdown` is the
    /// worker's, shared by every generation it serves.
    pub fn new(global: &Global, shutdown: CancellationToken) -> Result<Worker, ServerError> {
        let config = global.config.clone();
        Ok(Worker {
            origin: Origin::new(&config, global.workers)?,
            metrics: global.metrics.clone(),
            shutdown,
            acceptor: global.acceptor.clone(),
            limit: global.limit.clone(),
            policy: policy(&config.push),
            learned: global.learned.clone(),
            validators: global.validators.clone(),
            names: global.names.clone(),
            forward_headers: config
                .push
                .forward_headers
                .iter()
                .filter_map(|name| http::header::HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            config,
        })
    }

    /// Whether access-log lines are written.
    pub fn access_log(&self) -> bool {
        self.config.log.access_log
    }
}

/// The push policy's view of the `[push]` settings.
fn policy(settings: &crate::config::PushSettings) -> push::Policy {
    push::Policy {
        enabled: settings.enabled,
        preload: match settings.preload {
            crate::config::PreloadMode::Push => push::PreloadMode::Push,
            crate::config::PreloadMode::HintOnly => push::PreloadMode::HintOnly,
        },
        max_pushes_per_response: settings.max_pushes_per_response,
        allow_credentialed: settings.allow_credentialed,
        dry_run: settings.dry_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    fn config(extra: &str) -> Arc<Config> {
        let text = format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = false\n\n\
             [origin]\nurl = \"http://127.0.0.1:1\"\n\n{extra}\n"
        );
        let config = Config::from_toml_str(&text, std::path::Path::new("."), &Overrides::default());
        Arc::new(config.expect("test config"))
    }

    /// A reload keeps learned hints, validators and connection slots while
    /// their settings stay the same, and starts them afresh when they change.
    #[test]
    fn a_reload_hands_over_what_its_settings_leave_unchanged() {
        let metrics = Arc::new(Metrics::default());
        let settings = "[hints]\nlearn = true\n[push]\ncache_digest = true\n\
                        [limits]\nmax_connections = 100\n";
        let first = Global::new(config(settings), 1, metrics.clone(), None).unwrap();
        let same = Global::new(config(settings), 1, metrics.clone(), Some(&first)).unwrap();
        let (learned, validators) = (first.learned.as_ref(), first.validators.as_ref());
        assert!(Arc::ptr_eq(
            same.learned.as_ref().unwrap(),
            learned.unwrap()
        ));
        assert!(Arc::ptr_eq(
            same.validators.as_ref().unwrap(),
            validators.unwrap()
        ));
        assert!(Arc::ptr_eq(&same.limit, &first.limit));

        let changed = "[hints]\nlearn = true\nlearn_min_clients = 5\n[push]\ncache_digest = true\n\
                       cache_digest_validator_ttl = \"2m\"\n[limits]\nmax_connections = 50\n";
        let other = Global::new(config(changed), 1, metrics, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(
            other.learned.as_ref().unwrap(),
            learned.unwrap()
        ));
        assert!(!Arc::ptr_eq(
            other.validators.as_ref().unwrap(),
            validators.unwrap()
        ));
        assert!(!Arc::ptr_eq(&other.limit, &first.limit));
    }
}
