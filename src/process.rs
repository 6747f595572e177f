//! The running process: worker threads, signals, and reloads.
//!
//! - SIGINT, SIGTERM: graceful shutdown (stop accepting, drain).
//! - SIGHUP: reload. The configuration file and every file it names are
//!   read and validated exactly as at start; a valid result becomes a new
//!   [`Generation`] that new connections get, while open connections finish
//!   on the one they started with. An invalid one is logged and changes
//!   nothing.
//!   The access log file is reopened too.
//! - SIGUSR1: reopen the access log file (for logrotate).
//! - With `tls.watch`, a change to the certificate or key files reloads as
//!   SIGHUP does.
//!
//! The main thread runs the signals, the reloads and the metrics endpoint;
//! the workers ([`server::run_worker`]) run the proxy.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::access_log;
use crate::admin::Health;
use crate::config::{Config, ConfigError, Overrides, TlsSource};
use crate::metrics::Metrics;
use crate::runtime::{Generation, Global, ServerError, SharedListener};
use crate::server::{self, Listener};

/// How often `tls.watch` looks at the certificate and key files.
pub const TLS_WATCH_PERIOD: Duration = Duration::from_secs(2);

/// How long a reload waits for every worker to take the new generation up
/// before it says so anyway.
const APPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the configuration comes from: the file (if any) and the flags.
/// Reloads read the same file and apply the same flags over it.
#[derive(Clone, Default)]
pub struct Source {
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
}

impl Source {
    pub fn load(&self) -> Result<Config, ConfigError> {
        Config::load(self.path.as_deref(), &self.overrides)
    }
}

/// Everything `run` does with a configuration before it listens: loading
/// and pairing the certificate and key. `check` runs this too, so that a
/// configuration it accepts is one `run` starts with.
pub fn validate(config: &Arc<Config>) -> Result<(), ServerError> {
    Global::new(config.clone(), 1, Arc::new(Metrics::default()), None).map(|_| ())
}

/// The signals the process handles, installed before anything listens so
/// that none of them meets its default action (exit) once clients can come.
pub struct Signals {
    interrupt: Signal,
    terminate: Signal,
    hangup: Signal,
    user1: Signal,
}

impl Signals {
    pub fn install(main: &Runtime) -> anyhow::Result<Signals> {
        let _context = main.enter();
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot handle {name}"))
        };
        Ok(Signals {
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            user1: install(SignalKind::user_defined1(), "SIGUSR1")?,
        })
    }
}

/// Serve on `listeners` (bound from `config`) with `config.server.workers`
/// threads until SIGINT or SIGTERM, reloading on SIGHUP; then drain and
/// return.
pub fn serve(
    main: &Runtime,
    mut signals: Signals,
    source: Source,
    config: Arc<Config>,
    listeners: Vec<Listener>,
) -> anyhow::Result<()> {
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let metrics = Arc::new(Metrics::default());
    // Taken before the certificate is read: a renewal that lands while it
    // is being read is seen at the next look.
    let watched = Fingerprint::of(&config);
    let global = Global::new(config.clone(), workers, metrics.clone(), None)?;
    let mut sockets = HashMap::with_capacity(listeners.len());
    for (listener, configured) in listeners.into_iter().zip(&config.listeners) {
        sockets.insert(configured.address, share(listener.tcp, listener.tls)?);
    }
    let shared = shared_listeners(&config, &sockets);
    server::check_certificate(&global, &shared)?;
    let generation = Arc::new(Generation {
        number: 1,
        global,
        listeners: shared,
        applied: Arc::new(Semaphore::new(0)),
    });
    let (generations, _) = watch::channel(generation.clone());
    let shutdown = CancellationToken::new();
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        let receiver = generations.subscribe();
        let shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("linkpush-worker-{index}"))
            .spawn(move || {
                let result = worker(receiver, shutdown.clone());
                if result.is_err() {
                    // One worker failing stops the others.
                    shutdown.cancel();
                }
                result
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    let health = Arc::new(Health::new(generation.global.upstreams.clone()));
    let mut process = Process {
        source,
        workers,
        metrics,
        current: generation,
        sockets,
        generations,
        admin: None,
        health,
        watched,
    };
    process.health.set_listening(true);
    main.block_on(async {
        let outcome = match process.serve_admin(None).await {
            Ok(()) => process.signals(&mut signals, &shutdown).await,
            Err(error) => Err(error),
        };
        // Draining: not ready for new clients, still answering the
        // metrics endpoint until the workers are done.
        process.health.set_listening(false);
        shutdown.cancel();
        let joined = tokio::task::spawn_blocking(move || {
            let mut failure = None;
            for thread in threads {
                let result = thread
                    .join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")));
                if let Err(error) = result {
                    failure.get_or_insert(error);
                }
            }
            failure
        })
        .await;
        let failure = match joined {
            Ok(failure) => failure,
            Err(_) => Some(anyhow::anyhow!("a worker thread could not be joined")),
        };
        match (outcome, failure) {
            (Err(error), _) | (Ok(()), Some(error)) => Err(error),
            (Ok(()), None) => Ok(()),
        }
    })
}

/// One worker thread: a single-threaded runtime serving every listener.
fn worker(
    generations: watch::Receiver<Arc<Generation>>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a worker's event loop")?;
    runtime.block_on(server::run_worker(generations, shutdown))?;
    Ok(())
}

/// The main thread's view of the process.
struct Process {
    source: Source,
    workers: usize,
    metrics: Arc<Metrics>,
    current: Arc<Generation>,
    /// Listening sockets by configured address.
    sockets: HashMap<SocketAddr, Arc<std::net::TcpListener>>,
    generations: watch::Sender<Arc<Generation>>,
    /// The metrics endpoint: its address, and how to stop it.
    admin: Option<(SocketAddr, CancellationToken, JoinHandle<()>)>,
    /// What `/readyz` checks.
    health: Arc<Health>,
    /// The certificate files as they were when last read.
    watched: Fingerprint,
}

impl Process {
    /// Wait for signals until shutdown, reloading on SIGHUP.
    async fn signals(
        &mut self,
        signals: &mut Signals,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let mut watch = tokio::time::interval(TLS_WATCH_PERIOD);
        watch.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = signals.interrupt.recv() => break,
                _ = signals.terminate.recv() => break,
                () = shutdown.cancelled() => return Ok(()),
                _ = signals.hangup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    self.reload().await;
                }
                _ = signals.user1.recv() => match access_log::reopen() {
                    Ok(()) => tracing::info!("access log reopened"),
                    Err(error) => {
                        tracing::warn!(%error, "access log not reopened; still writing to the old file");
                    }
                },
                _ = watch.tick(), if self.current.global.config.tls.watch => {
                    let now = Fingerprint::of(&self.current.global.config);
                    if now != self.watched {
                        // Once per change, even if this reload fails.
                        self.watched = now;
                        tracing::info!("the certificate or key file changed: reloading");
                        self.reload().await;
                    }
                }
            }
        }
        tracing::info!(
            grace = ?self.current.global.config.timeouts.shutdown_grace,
            "shutting down: no new connections, draining in-flight requests"
        );
        Ok(())
    }

    /// Load, validate and publish a new generation, or log why not and keep
    /// the running one.
    async fn reload(&mut self) {
        let started = Instant::now();
        match self.next_generation().await {
            Ok(generation) => {
                self.metrics.config_reload(true);
                self.health
                    .set_upstreams(generation.global.upstreams.clone());
                let number = generation.number;
                self.current = generation.clone();
                self.generations.send_replace(generation.clone());
                // Reloaded means every worker gives new connections the
                // new generation, and removed listeners are closed.
                let workers = u32::try_from(self.workers).unwrap_or(u32::MAX);
                let applied = generation.applied.acquire_many(workers);
                if tokio::time::timeout(APPLY_TIMEOUT, applied).await.is_err() {
                    tracing::warn!(
                        generation = number,
                        "a worker is slow to take up the new configuration"
                    );
                }
                tracing::info!(
                    generation = number,
                    elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
                    "configuration reloaded; new connections use it"
                );
            }
            Err(error) => {
                self.metrics.config_reload(false);
                tracing::error!(
                    generation = self.current.number,
                    "reload failed, still serving the previous configuration: {error:#}"
                );
            }
        }
    }

    async fn next_generation(&mut self) -> anyhow::Result<Arc<Generation>> {
        let config = Arc::new(self.source.load()?);
        self.watched = Fingerprint::of(&config);
        if config.server.workers != self.current.global.config.server.workers {
            tracing::warn!("server.workers changed; the number of workers changes on restart only");
        }
        let global = Global::new(
            config.clone(),
            self.workers,
            self.metrics.clone(),
            Some(&self.current.global),
        )?;
        let mut sockets = HashMap::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let socket = match self.sockets.get(&listener.address) {
                Some(socket) => socket.clone(),
                None => {
                    let tcp = TcpListener::bind(listener.address)
                        .await
                        .with_context(|| format!("cannot listen on {}", listener.address))?;
                    share(tcp, listener.tls)?
                }
            };
            sockets.insert(listener.address, socket);
        }
        let listeners = shared_listeners(&config, &sockets);
        server::check_certificate(&global, &listeners)?;
        // Opens the new access log file (or the same one afresh, after a
        // rotation); on failure the old sink stays.
        access_log::configure(&config.log)?;
        self.serve_admin(Some(&config)).await?;
        for (address, _) in self.sockets.iter() {
            if !sockets.contains_key(address) {
                tracing::info!(%address, "no longer listening on {address}");
            }
        }
        self.sockets = sockets;
        Ok(Arc::new(Generation {
            number: self.current.number + 1,
            global,
            listeners,
            applied: Arc::new(Semaphore::new(0)),
        }))
    }

    /// Serve the metrics endpoint where `config` (or the current
    /// configuration) says, moving it if the address changed.
    async fn serve_admin(&mut self, config: Option<&Config>) -> anyhow::Result<()> {
        let wanted = config.unwrap_or(&self.current.global.config).metrics.listen;
        if self.admin.as_ref().map(|(address, ..)| *address) == wanted {
            return Ok(());
        }
        let listener = match wanted {
            Some(address) => Some(
                TcpListener::bind(address)
                    .await
                    .map_err(ServerError::Metrics)?,
            ),
            None => None,
        };
        if let Some((_, stop, task)) = self.admin.take() {
            stop.cancel();
            let _ = task.await;
        }
        if let (Some(listener), Some(address)) = (listener, wanted) {
            tracing::info!(%address, "metrics on http://{address}/metrics");
            let stop = CancellationToken::new();
            let task = tokio::spawn(crate::admin::serve(
                listener,
                self.metrics.clone(),
                self.health.clone(),
                stop.clone(),
            ));
            self.admin = Some((address, stop, task));
        }
        Ok(())
    }
}

/// Announce a listener that starts accepting, and keep its socket to
/// share with the workers.
fn share(tcp: TcpListener, tls: bool) -> anyhow::Result<Arc<std::net::TcpListener>> {
    let address = tcp.local_addr()?;
    let scheme = if tls { "https" } else { "http" };
    tracing::info!(%address, "listening on {scheme}://{address}");
    Ok(Arc::new(tcp.into_std()?))
}

/// The listeners of `config`, on the sockets bound for them.
fn shared_listeners(
    config: &Config,
    sockets: &HashMap<SocketAddr, Arc<std::net::TcpListener>>,
) -> Vec<SharedListener> {
    config
        .listeners
        .iter()
        .filter_map(|listener| {
            Some(SharedListener {
                configured: listener.address,
                tls: listener.tls,
                proxy_protocol: listener.proxy_protocol.clone(),
                socket: sockets.get(&listener.address)?.clone(),
            })
        })
        .collect()
}

/// What `tls.watch` compares: for each certificate file, its identity,
/// size and modification time (following symbolic links, as certbot's
/// `live/` directory uses them).
#[derive(PartialEq, Eq, Debug)]
struct Fingerprint(Vec<Option<FileStamp>>);

/// Device, inode, size, and modification time (seconds, nanoseconds).
type FileStamp = (u64, u64, u64, i64, i64);

impl Fingerprint {
    fn of(config: &Config) -> Fingerprint {
        use std::os::unix::fs::MetadataExt;
        let sources = std::iter::once(&config.tls.source)
            .chain(config.sites.iter().map(|site| &site.cert))
            .flatten();
        let files: Vec<&std::path::PathBuf> = sources
            .flat_map(|source| match source {
                TlsSource::Files { cert, key } => vec![cert, key],
                TlsSource::SelfSigned => Vec::new(),
            })
            .collect();
        Fingerprint(
            files
                .iter()
                .map(|path| {
                    std::fs::metadata(path).ok().map(|meta| {
                        (
                            meta.dev(),
                            meta.ino(),
                            meta.len(),
                            meta.mtime(),
                            meta.mtime_nsec(),
                        )
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;

    /// `tls.watch` looks at every site's certificate files, not only
    /// `[tls]`'s.
    #[test]
    fn the_watched_files_include_every_sites_certificate() {
        let dir = tempfile::tempdir().expect("temporary directory");
        for name in ["shared", "shop"] {
            let names = vec![format!("{name}.example")];
            let generated = rcgen::generate_simple_self_signed(names).expect("certificate");
            std::fs::write(dir.path().join(format!("{name}.pem")), generated.cert.pem())
                .expect("write");
            let key = generated.signing_key.serialize_pem();
            std::fs::write(dir.path().join(format!("{name}.key")), key).expect("write");
        }
        let text = "[[listen]]\naddress = \"127.0.0.1:0\"\n\
                    [tls]\ncert = \"shared.pem\"\nkey = \"shared.key\"\nwatch = true\n\
                    [origin]\nurl = \"http://127.0.0.1:1\"\n\
                    [[sites]]\nnames = [\"shop.example\"]\ncert = \"shop.pem\"\nkey = \"shop.key\"\n";
        let config =
            Config::from_toml_str(text, dir.path(), &Overrides::default()).expect("test config");
        let before = Fingerprint::of(&config);
        assert_eq!(before.0.len(), 4);
        assert!(before.0.iter().all(Option::is_some));
        // A renewal of the site's certificate, as certbot writes it: a new
        // file renamed over the old one.
        let renewed = dir.path().join("shop.pem.new");
        std::fs::write(&renewed, "renewed").expect("write");
        std::fs::rename(&renewed, dir.path().join("shop.pem")).expect("rename");
        assert_ne!(Fingerprint::of(&config), before);
    }
}
