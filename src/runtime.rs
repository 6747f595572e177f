//! The state a proxy process shares across its workers ([`Global`]) and
//! the state each worker keeps for its own connections ([`Worker`]).

use std::io;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
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
}

/// What every worker of one proxy process shares: configuration, counters,
/// learned state, the TLS acceptor and the connection limit. Cheap to clone.
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
    /// listens.
    pub fn new(config: Arc<Config>, workers: usize) -> Result<Global, ServerError> {
        let (acceptor, leaf) = match &config.tls.source {
            Some(source) => {
                let built = tls::acceptor(source)?;
                (Some(built.acceptor), Some(built.leaf))
            }
            None => (None, None),
        };
        Ok(Global {
            metrics: Arc::new(Metrics::default()),
            learned: config
                .hints
                .learn
                .then(|| Arc::new(LearnedHints::new(&config.hints))),
            validators: config
                .push
                .cache_digest
                .then(|| Arc::new(Validators::new(config.push.cache_digest_validator_ttl))),
            acceptor,
            names: Arc::new(ServerNames::new(&config.server.names, leaf)),
            limit: Arc::new(Semaphore::new(config.limits.max_connections)),
            workers: workers.max(1),
            config,
        })
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
    /// `push.forward_headers`, as header names.
    pub forward_headers: Vec<http::header::HeaderName>,
}

impl Worker {
    /// A worker's state; call on the worker's own runtime (its origin pool
    /// starts a timer task there).
    pub fn new(global: &Global) -> Result<Worker, ServerError> {
        let config = global.config.clone();
        Ok(Worker {
            origin: Origin::new(&config, global.workers)?,
            metrics: global.metrics.clone(),
            shutdown: CancellationToken::new(),
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
