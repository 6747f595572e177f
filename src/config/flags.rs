//! The command-line flags that override the file, declared once: the
//! binary flattens [`Overrides`] into `run` and `check`, and a flag that
//! stands for one file key names it (`=> origin.url`). Such a flag replaces
//! the key's value before checking, so it is checked like the key and a
//! problem with it is reported under the flag's name.

use std::path::PathBuf;

use super::RawFile;

/// `flags!` expands each field as written (doc comment, `#[arg]`) into
/// [`Overrides`], and each `=> table.key` into a line of
/// `Overrides::replace_keys`.
macro_rules! flags {
    (
        $(#[$doc:meta])*
        pub struct $name:ident {
            $(
                $(#[$m:meta])*
                pub $field:ident: $ty:ty $(=> $table:ident . $key:ident)?,
            )*
        }
    ) => {
        $(#[$doc])*
        #[derive(Debug, Default, Clone, clap::Args)]
        pub struct $name {
            $($(#[$m])* pub $field: $ty,)*
        }

        impl $name {
            /// Copies the value of each given flag that stands for a file key
            /// into `raw`, over the file's value. Returns (file key, flag)
            /// for each, so problems with the value name the flag.
            pub(super) fn replace_keys(&self, raw: &mut RawFile) -> Vec<(&'static str, String)> {
                let mut replaced = Vec::new();
                $($(
                    if let Some(value) = &self.$field {
                        raw.$table.$key = Some(value.clone());
                        let key = concat!(stringify!($table), ".", stringify!($key));
                        replaced.push((key, flag_name(stringify!($field))));
                    }
                )?)*
                replaced
            }
        }
    };
}

flags! {
    /// Values given as command-line flags. They win over the file.
    pub struct Overrides {
        // `--listen` and `--listen-plain` replace or add to `[[listen]]`,
        // and `--cert`, `--key` and `--self-signed` replace `[tls]` as a
        // whole: see `special.rs`.
        /// TLS listen address (repeatable); replaces the file's listeners.
        #[arg(long, value_name = "ADDR")]
        pub listen: Vec<String>,
        /// Cleartext listen address for HTTP/1.1 and h2c (repeatable).
        #[arg(long, value_name = "ADDR")]
        pub listen_plain: Vec<String>,
        /// The origin: http://host:port or unix:/path/to.sock
        #[arg(long, value_name = "URL")]
        pub origin: Option<String> => origin.url,
        /// PEM certificate chain.
        #[arg(long, value_name = "FILE")]
        pub cert: Option<PathBuf>,
        /// PEM private key.
        #[arg(long, value_name = "FILE")]
        pub key: Option<PathBuf>,
        /// Generate a localhost certificate at start (development only).
        #[arg(long)]
        pub self_signed: bool,
        /// Diagnostic log filter, such as info or linkpush=debug,info. Wins
        /// over log.level, which wins over RUST_LOG. The access log is
        /// controlled by log.access_log only.
        #[arg(long, value_name = "LEVEL")]
        pub log_level: Option<String> => log.level,
        /// Log format: text or json.
        #[arg(long, value_name = "FORMAT")]
        pub log_format: Option<String> => log.format,
        /// Serve metrics (http://ADDR/metrics), /healthz and /readyz at ADDR.
        #[arg(long, value_name = "ADDR")]
        pub metrics_listen: Option<String> => metrics.listen,
        /// Worker threads (0: one per CPU).
        #[arg(long, value_name = "N")]
        pub workers: Option<i64> => server.workers,
    }
}

/// The flag for a field, as clap spells it by default: `--log-level`.
fn flag_name(field: &str) -> String {
    format!("--{}", field.replace('_', "-"))
}
