//! The `linkpush` command: `run` (the default), `check` and `demo`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use linkpush::config::{Config, ConfigError, OriginAddr, Overrides};
use linkpush::process::{self, Signals, Source};
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
    let config = match source(args).load() {
        Ok(config) => Arc::new(config),
        Err(error) => {
            report_config_error(&error);
            return ExitCode::FAILURE;
        }
    };
    // What `run` does next, short of listening: load and pair the
    // certificate and key.
    if let Err(error) = process::validate(&config) {
        eprintln!("linkpush: {error}");
        return ExitCode::FAILURE;
    }
    let upstreams: Vec<String> = config
        .upstreams
        .iter()
        .map(|upstream| {
            let servers: Vec<String> = upstream.settings.servers.iter().map(origin_url).collect();
            format!("{} {}", upstream.name, servers.join(" "))
        })
        .collect();
    let source = args.config.as_deref().map_or_else(
        || "flags and defaults".to_owned(),
        |path| path.display().to_string(),
    );
    println!(
        "{source}: valid ({} listener(s), {} site(s); upstreams: {})",
        config.listeners.len(),
        config.sites.len(),
        upstreams.join(", "),
    );
    ExitCode::SUCCESS
}

fn source(args: &RunArgs) -> Source {
    Source {
        path: args.config.clone(),
        overrides: args.overrides.clone(),
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
    // Before anything listens, so that no signal meets its default action.
    let signals = Signals::install(&main)?;
    let listeners = main.block_on(Listener::bind_all(&config))?;
    process::serve(&main, signals, source(args), config, listeners)
}

fn demo(listen: String) -> anyhow::Result<()> {
    let main = main_runtime()?;
    let signals = Signals::install(&main)?;
    let (config, listeners, address, origin_addr, source) = main.block_on(async move {
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
        let source = Source {
            path: None,
            overrides,
        };
        let mut config = source.load().map_err(|error| {
            report_config_error(&error);
            anyhow::anyhow!("not starting")
        })?;
        // Every site's push settings were taken from [push] as loaded.
        config.push.explain = true;
        for site in &mut config.sites {
            site.push.explain = true;
        }
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
        anyhow::Ok((Arc::new(config), listeners, address, origin_addr, source))
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
    // A reload rebuilds the demo's configuration from the same flags
    // (without `push.explain`, which only the demo sets).
    process::serve(&main, signals, source, config, listeners)
}

/// An origin address as `origin.url` spells it.
fn origin_url(addr: &OriginAddr) -> String {
    match addr {
        OriginAddr::Tcp { host, port } if host.contains(':') => format!("http://[{host}]:{port}"),
        OriginAddr::Tcp { host, port } => format!("http://{host}:{port}"),
        OriginAddr::Unix(path) => format!("unix:{}", path.display()),
    }
}
