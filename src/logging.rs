//! The process's two logs, set up once at start:
//!
//! - the diagnostic log: `tracing` events through one `fmt` subscriber,
//!   filtered by a directive that [`diagnostic_filter`] picks;
//! - the access log: one line per exchange, written by [`access_log::sink`]
//!   and controlled only by `log.access_log`, never by the diagnostic
//!   filter.
//!
//! # Which filter applies
//!
//! `--log-level` replaces the file's `log.level` (as every flag replaces its
//! key), and either one beats `RUST_LOG`. `RUST_LOG` applies only when
//! neither sets a level; when both are absent the filter is `info`. A bad
//! `log.level` or `--log-level` is a configuration error; a bad `RUST_LOG`
//! is reported on stderr and `info` is used instead, so a typo never
//! silences the log.

use std::io::{self, IsTerminal as _};

use tracing_subscriber::EnvFilter;

use crate::access_log;
use crate::config::{parse_filter, Config, LogFormat};

/// The filter used when nothing sets one, or `RUST_LOG` is unusable.
pub const DEFAULT_FILTER: &str = "info";

/// Sets up both logs for `config`: the diagnostic subscriber (once per
/// process) and the access-log sink. Fails when the access log file cannot
/// be opened.
pub fn init(config: &Config) -> io::Result<()> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let (directives, warning) = diagnostic_filter(config.log.level.as_deref(), rust_log.as_deref());
    if let Some(warning) = warning {
        eprintln!("linkpush: {warning}");
    }
    let filter = parse_filter(&directives).unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stdout().is_terminal());
    // A second call (a test, an embedding program) keeps the first subscriber.
    let _ = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    access_log::sink::configure(&config.log)
}

/// The diagnostic filter's directives, from the configured level
/// (`--log-level` or `log.level`, already checked) and `RUST_LOG`, with a
/// warning to print when `RUST_LOG` was set but unusable.
pub fn diagnostic_filter(
    configured: Option<&str>,
    rust_log: Option<&str>,
) -> (String, Option<String>) {
    if let Some(level) = configured {
        return (level.to_owned(), None);
    }
    match rust_log.filter(|value| !value.trim().is_empty()) {
        None => (DEFAULT_FILTER.to_owned(), None),
        Some(value) => match parse_filter(value) {
            Ok(_) => (value.to_owned(), None),
            Err(problem) => (
                DEFAULT_FILTER.to_owned(),
                Some(format!(
                    "ignoring RUST_LOG: {problem}; logging at {DEFAULT_FILTER:?}"
                )),
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configured_level_beats_rust_log_which_beats_the_default() {
        let warned = |w: &Option<String>| w.is_some();
        // (configured, RUST_LOG) -> (filter, warned)
        let table: &[(Option<&str>, Option<&str>, &str, bool)] = &[
            (None, None, "info", false),
            (None, Some(""), "info", false),
            (None, Some("debug"), "debug", false),
            (
                None,
                Some("linkpush=trace,warn"),
                "linkpush=trace,warn",
                false,
            ),
            (None, Some("infox"), "info", true),
            (None, Some("linkpush=loud"), "info", true),
            (Some("warn"), None, "warn", false),
            (Some("warn"), Some("debug"), "warn", false),
            (Some("warn"), Some("infox"), "warn", false),
            (
                Some("linkpush=debug,info"),
                Some("trace"),
                "linkpush=debug,info",
                false,
            ),
        ];
        for &(configured, rust_log, filter, warns) in table {
            let (found, warning) = diagnostic_filter(configured, rust_log);
            assert_eq!(found, filter, "{configured:?} {rust_log:?}");
            assert_eq!(
                warned(&warning),
                warns,
                "{configured:?} {rust_log:?}: {warning:?}"
            );
        }
        let (_, warning) = diagnostic_filter(None, Some("infox"));
        let warning = warning.expect("a warning");
        assert!(
            warning.contains("RUST_LOG") && warning.contains("\"infox\""),
            "{warning}"
        );
    }

    #[test]
    fn filters_are_levels_or_directives_with_a_level() {
        for good in [
            "info",
            "WARN",
            "off",
            "linkpush=debug,info",
            "linkpush::access=off",
            "h2=trace",
            "linkpush[conn]=debug",
            "info,",
        ] {
            assert!(parse_filter(good).is_ok(), "{good}");
        }
        for (bad, says) in [
            ("infox", "\"infox\" is not a level"),
            ("linkpush", "write \"linkpush=trace\""),
            ("debug,infox", "\"infox\" is not a level"),
            ("linkpush=loud", "is not a tracing filter"),
            ("", "must not be empty"),
            ("info debug", "contains whitespace"),
        ] {
            let problem = parse_filter(bad).expect_err(bad);
            assert!(problem.contains(says), "{bad}: {problem}");
        }
    }
}
