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
use crate::metrics::Metrics;
use crate::site::Sites;
use crate::tls::{self, TlsError};
use crate::upstream::{UpstreamClient, Upstreams};

/// Start-up failures.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("a TLS listener is configured but no certificate: set tls.cert and tls.key, or tls.self_signed = true")]
    NoCertificate,
    #[error("metrics.listen: {0}")]
    Metrics(io::Error),
    #[error("{0}")]
    Listen(io::Error),
}

/// What every worker of one proxy process shares under one configuration:
/// the configuration, counters, the sites (with their learned state and
/// certificates), the upstreams (with the health of each address), the
/// TLS acceptor and the connection limit. Cheap to clone.
#[derive(Clone)]
pub struct Global {
    pub config: Arc<Config>,
    pub metrics: Arc<Metrics>,
    pub sites: Arc<Sites>,
    pub upstreams: Arc<Upstreams>,
    pub acceptor: Option<TlsAcceptor>,
    /// Client connections open at once, over all workers.
    pub limit: Arc<Semaphore>,
    /// How many workers share the origin connection limit.
    pub workers: usize,
}

impl Global {
    /// Build the process-wide state for `workers` workers; loads (or
    /// generates) the certificates, so a bad one fails here, before
    /// anything listens. `previous`, on a reload, hands over what outlives
    /// a configuration: learned hints, validators, the health and counters
    /// of upstream addresses, and the connection limit, when their settings
    /// did not change.
    pub fn new(
        config: Arc<Config>,
        workers: usize,
        metrics: Arc<Metrics>,
        previous: Option<&Global>,
    ) -> Result<Global, ServerError> {
        let sites = Sites::new(&config, previous.map(|old| &*old.sites))?;
        let acceptor = match sites.certs() {
            Some(certs) if config.uses_tls() => Some(tls::acceptor(certs)?),
            _ => None,
        };
        let upstreams = Upstreams::new(&config, previous.map(|old| &*old.upstreams));
        let max = config.limits.max_connections;
        let limit = match previous.filter(|old| old.config.limits.max_connections == max) {
            Some(old) => old.limit.clone(),
            None => Arc::new(Semaphore::new(max)),
        };
        Ok(Global {
            metrics,
            sites: Arc::new(sites),
            upstreams: Arc::new(upstreams),
            acceptor,
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
    pub metrics: Arc<Metrics>,
    /// Cancelled when graceful shutdown starts.
    pub shutdown: CancellationToken,
    pub sites: Arc<Sites>,
    /// This worker's pools, per upstream in [`Config::upstreams`] order.
    pub upstreams: Vec<UpstreamClient>,
    /// The TLS acceptor of this configuration's certificates.
    pub acceptor: Option<TlsAcceptor>,
    /// Client connections open at once, over all workers.
    pub limit: Arc<Semaphore>,
}

impl Worker {
    /// A worker's state under `global`; call on the worker's own runtime
    /// (its origin pools start timer tasks there). `shutdown` is the
    /// worker's, shared by every generation it serves.
    pub fn new(global: &Global, shutdown: CancellationToken) -> Worker {
        let config = global.config.clone();
        let upstreams = global
            .upstreams
            .groups()
            .iter()
            .map(|group| UpstreamClient::new(group, &config, global.workers))
            .collect();
        Worker {
            upstreams,
            metrics: global.metrics.clone(),
            shutdown,
            acceptor: global.acceptor.clone(),
            limit: global.limit.clone(),
            sites: global.sites.clone(),
            config,
        }
    }

    /// Whether access-log lines are written.
    pub fn access_log(&self) -> bool {
        self.config.log.access_log
    }

    /// Origin connections open (idle or busy) in this worker's pools.
    pub fn open_origin_connections(&self) -> usize {
        self.upstreams
            .iter()
            .map(UpstreamClient::open_connections)
            .sum()
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
        let site = |global: &Global| {
            let site = global.sites.get(0).expect("the implicit site");
            (
                site.learned.clone().unwrap(),
                site.validators.clone().unwrap(),
            )
        };
        let (learned, validators) = site(&first);
        assert!(Arc::ptr_eq(&site(&same).0, &learned));
        assert!(Arc::ptr_eq(&site(&same).1, &validators));
        assert!(Arc::ptr_eq(
            &same.upstreams.groups()[0],
            &first.upstreams.groups()[0]
        ));
        assert!(Arc::ptr_eq(&same.limit, &first.limit));

        let changed = "[hints]\nlearn = true\nlearn_min_clients = 5\n[push]\ncache_digest = true\n\
                       cache_digest_validator_ttl = \"2m\"\n[limits]\nmax_connections = 50\n";
        let other = Global::new(config(changed), 1, metrics, Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&site(&other).0, &learned));
        assert!(!Arc::ptr_eq(&site(&other).1, &validators));
        assert!(!Arc::ptr_eq(&other.limit, &first.limit));
    }
}
