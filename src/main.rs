//! The `linkpush` command: `run` (the default), `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use linkpush::config::{Config, ConfigError, LogFormat, OriginAddr, Overrides};
use linkpush::{run, Listener};
use tokio::net::TcpListener;
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
    Run(RunArgs),
    /// Validate a configuration file and exit: 0 when valid, 1 otherwise.
    Check {
        #[arg(long, short, value_name = "FILE", default_value = "proxy.toml")]
        config: PathBuf,
    },
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
    /// TLS listen address (repeatable); replaces the file's listeners.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<String>,
    /// Cleartext listen address for HTTP/1.1 and h2c (repeatable).
    #[arg(long, value_name = "ADDR")]
    listen_plain: Vec<String>,
    /// The origin: http://host:port or unix:/path/to.sock
    #[arg(long, value_name = "URL")]
    origin: Option<String>,
    /// PEM certificate chain.
    #[arg(long, value_name = "FILE")]
    cert: Option<PathBuf>,
    /// PEM private key.
    #[arg(long, value_name = "FILE")]
    key: Option<PathBuf>,
    /// Generate a localhost certificate at start (development only).
    #[arg(long)]
    self_signed: bool,
    /// Log filter, such as info or linkpush=debug.
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
}

impl RunArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            listen_plain: self.listen_plain.clone(),
            origin: self.origin.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            self_signed: self.self_signed,
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            metrics_listen: self.metrics_listen.clone(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Check { config }) => return check(&config),
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

fn check(path: &std::path::Path) -> ExitCode {
    match Config::load(Some(path), &Overrides::default()) {
        Ok(config) => {
            let origin = match &config.origin.addr {
                OriginAddr::Tcp { host, port } if host.contains(':') => {
                    format!("http://[{host}]:{port}")
                }
                OriginAddr::Tcp { host, port } => format!("http://{host}:{port}"),
                OriginAddr::Unix(path) => format!("unix:{}", path.display()),
            };
            println!(
                "{}: valid ({} listener(s), origin {origin})",
                path.display(),
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
    Config::load(args.config.as_deref(), &args.overrides()).map_err(|error| {
        report_config_error(&error);
        anyhow::anyhow!("not starting")
    })
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run_proxy(args: &RunArgs) -> anyhow::Result<()> {
    let config = Arc::new(load(args)?);
    init_logging(&config);
    runtime()?.block_on(async move {
        let listeners = Listener::bind_all(&config).await?;
        run(config, listeners, shutdown_signal()).await?;
        Ok(())
    })
}

fn demo(listen: String) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
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
        let config = Arc::new(config);
        init_logging(&config);
        let stop_origin = CancellationToken::new();
        tokio::spawn(linkpush::demo::serve_sample_origin(
            origin,
            stop_origin.clone(),
        ));
        let listeners = Listener::bind_all(&config).await?;
        let address = listeners
            .first()
            .and_then(|l| l.tcp.local_addr().ok())
            .context("no listener")?;
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
        run(config, listeners, shutdown_signal()).await?;
        stop_origin.cancel();
        Ok(())
    })
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
