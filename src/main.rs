//! The `linkpush` command: `run` (the default), `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use linkpush::config::{Config, ConfigError, OriginAddr, Overrides};
use linkpush::server::{run_worker, Global};
use linkpush::Listener;
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

/// A TLS reverse proxy that turns the Link headers of a legacy app into
/// HTTP/2 server push and 103 Early Hints.
#[derive(Parser)]
#[command(name = "linkpush", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy (the default).
    Run(Box<RunArgs>),
    /// Validate the configuration as `run` would load it, from the same file
    /// and flags, and exit: 0 when valid, 1 otherwise.
    Check(Box<RunArgs>),
    /// Run the proxy in front of a bundled sample site, with a self-signed
    /// certificate, and print commands to try it.
    Demo {
        /// Where the proxy listens.
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: String,
    },
}

#[derive(Args, Default)]
struct RunArgs {
    /// The configuration file. Without one, flags and defaults are the config.
    #[arg(long, short, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(flatten)]
    overrides: Overrides,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check(args)) => return check(&args),
        Some(Command::Demo { listen }) => demo(listen),
        Some(Command::Run(args)) => run_proxy(&args),
        None => run_proxy(&cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("linkpush: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(args: &RunArgs) -> ExitCode {
    match Config::load(args.config.as_deref(), &args.overrides) {
        Ok(config) => {
            let origin = match &config.origin.addr {
                OriginAddr::Tcp { host, port } if host.contains(':') => {
                    format!("http://[{host}]:{port}")
                }
                OriginAddr::Tcp { host, port } => format!("http://{host}:{port}"),
                OriginAddr::Unix(path) => format!("unix:{}", path.display()),
            };
            let source = args.config.as_deref().map_or_else(
                || "flags and defaults".to_owned(),
                |path| path.display().to_string(),
            );
            println!(
                "{source}: valid ({} listener(s), origin {origin})",
                config.listeners.len(),
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            report_config_error(&error);
            ExitCode::FAILURE
        }
    }
}

fn report_config_error(error: &ConfigError) {
    eprintln!("linkpush: {error}");
}

fn load(args: &RunArgs) -> anyhow::Result<Config> {
    Config::load(args.config.as_deref(), &args.overrides).map_err(|error| {
        report_config_error(&error);
        anyhow::anyhow!("not starting")
    })
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    linkpush::logging::init(config).context("not starting")
}

/// The main thread's runtime: it binds the listeners, waits for signals,
/// and runs the demo's sample origin. The proxy itself runs on workers.
fn main_runtime() -> anyhow::Result<Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_proxy(args: &RunArgs) -> anyhow::Result<()> {
    let config = Arc::new(load(args)?);
    init_logging(&config)?;
    let main = main_runtime()?;
    #[cfg(unix)]
    reopen_access_log_on_sigusr1(&main)?;
    let listeners = main.block_on(Listener::bind_all(&config))?;
    serve(&main, config, listeners)
}

/// Run the proxy on `config.server.workers` threads, each with its own
/// single-threaded event loop accepting on every listener (thread per
/// core: no work stealing, no cross-thread wake-ups on the request path),
/// until SIGINT or SIGTERM; then drain and return.
fn serve(main: &Runtime, config: Arc<Config>, listeners: Vec<Listener>) -> anyhow::Result<()> {
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let global = Global::new(config.clone(), workers)?;
    let mut sockets = Vec::with_capacity(listeners.len());
    for listener in listeners {
        let address = listener.tcp.local_addr()?;
        let scheme = if listener.tls { "https" } else { "http" };
        tracing::info!(%address, workers, "listening on {scheme}://{address}");
        sockets.push((listener.tcp.into_std()?, listener.tls));
    }
    let shutdown = CancellationToken::new();
    let mut threads = Vec::with_capacity(workers);
    for index in 0..workers {
        let mut mine = Vec::with_capacity(sockets.len());
        for (socket, tls) in &sockets {
            mine.push((socket.try_clone()?, *tls));
        }
        let global = global.clone();
        let shutdown = shutdown.clone();
        let thread = std::thread::Builder::new()
            .name(format!("linkpush-worker-{index}"))
            .spawn(move || {
                let result = worker(global, mine, shutdown.clone(), index == 0);
                if result.is_err() {
                    // One worker failing stops the others.
                    shutdown.cancel();
                }
                result
            })
            .context("cannot start a worker thread")?;
        threads.push(thread);
    }
    main.block_on(async {
        tokio::select! {
            _ = shutdown_signal() => tracing::info!(
                grace = ?config.timeouts.shutdown_grace,
                "shutting down: no new connections, draining in-flight requests"
            ),
            _ = shutdown.cancelled() => {}
        }
    });
    shutdown.cancel();
    let mut failure = None;
    for thread in threads {
        let result = thread
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("a worker thread panicked")));
        if let Err(error) = result {
            failure.get_or_insert(error);
        }
    }
    failure.map_or(Ok(()), Err)
}

/// One worker thread: a single-threaded runtime serving every listener.
fn worker(
    global: Global,
    sockets: Vec<(std::net::TcpListener, bool)>,
    shutdown: CancellationToken,
    serve_metrics: bool,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start a worker's event loop")?;
    runtime.block_on(async move {
        let mut listeners = Vec::with_capacity(sockets.len());
        for (socket, tls) in sockets {
            listeners.push(Listener {
                tcp: TcpListener::from_std(socket)?,
                tls,
            });
        }
        run_worker(global, listeners, shutdown.cancelled_owned(), serve_metrics).await?;
        Ok(())
    })
}

fn demo(listen: String) -> anyhow::Result<()> {
    let main = main_runtime()?;
    let (config, listeners, address, origin_addr) = main.block_on(async move {
        let origin = TcpListener::bind("127.0.0.1:0")
            .await
            .context("cannot bind the sample origin")?;
        let origin_addr = origin.local_addr()?;
        let overrides = Overrides {
            listen: vec![listen],
            origin: Some(format!("http://{origin_addr}")),
            self_signed: true,
            ..Overrides::default()
        };
        let mut config = Config::load(None, &overrides).map_err(|error| {
            report_config_error(&error);
            anyhow::anyhow!("not starting")
        })?;
        config.push.explain = true;
        // The sample origin runs on this thread's runtime until exit.
        tokio::spawn(linkpush::demo::serve_sample_origin(
            origin,
            CancellationToken::new(),
        ));
        let listeners = Listener::bind_all(&config).await?;
        let address = listeners
            .first()
            .and_then(|l| l.tcp.local_addr().ok())
            .context("no listener")?;
        anyhow::Ok((Arc::new(config), listeners, address, origin_addr))
    })?;
    init_logging(&config)?;
    println!();
    println!("linkpush demo: https://{address}/ -> sample origin http://{origin_addr}/");
    println!("The certificate is self-signed; clients must be told to accept it.");
    println!();
    println!("  nghttp -ans https://{address}/          # see the pushes");
    println!(
        "  nghttp -ans --no-push https://{address}/  # push refused: rel=push becomes preload"
    );
    println!("  curl -k --http2 -sv https://{address}/ -o /dev/null");
    println!("  curl -k --http1.1 -sI https://{address}/");
    println!();
    println!("Press Ctrl-C to stop.");
    serve(&main, config, listeners)
}

/// Reopens the access log file on each SIGUSR1 (logrotate's
/// `postrotate`), on the main runtime. The handler is installed before
/// this returns, so the signal never meets its default action (exit) once
/// the proxy listens.
#[cfg(unix)]
fn reopen_access_log_on_sigusr1(main: &Runtime) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let _context = main.enter();
    let mut usr1 = signal(SignalKind::user_defined1()).context("cannot handle SIGUSR1")?;
    main.spawn(async move {
        while usr1.recv().await.is_some() {
            match linkpush::access_log::reopen() {
                Ok(()) => tracing::info!("access log reopened"),
                Err(error) => {
                    tracing::warn!(%error, "access log not reopened; still writing to the old file")
                }
            }
        }
    });
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
}
