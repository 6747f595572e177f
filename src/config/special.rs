//! The checks that `keys.rs` cannot declare: `[[listen]]` (an array of
//! tables that `--listen` replaces and `--listen-plain` adds to), `[tls]`
//! (certificate files or a self-signed certificate, which the TLS flags
//! replace as a whole), the required `origin.url`, and `metrics.listen`
//! against the listeners.

use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use ipnet::IpNet;

use super::check::{each, parse_origin, socket_addr, Checker};
use super::{
    ListenerConfig, MetricsConfig, OriginAddr, Overrides, TlsConfig, TlsSource, TrustedProxies,
    DEFAULT_LISTEN,
};

/// One `[[listen]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    address: Option<String>,
    tls: Option<bool>,
    proxy_protocol: Option<bool>,
    proxy_protocol_from: Option<Vec<String>>,
}

/// `[tls]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    self_signed: Option<bool>,
    watch: Option<bool>,
}

/// The keys of the hand-checked tables, for the documentation tests.
#[cfg(test)]
pub(super) const SPECIAL_KEYS: &[(&str, &[&str])] = &[
    (
        "listen",
        &["address", "tls", "proxy_protocol", "proxy_protocol_from"],
    ),
    ("tls", &["cert", "key", "self_signed", "watch"]),
];

/// A listener together with the key or flag it came from.
pub(super) struct Listener {
    pub(super) key: String,
    pub(super) config: ListenerConfig,
}

impl Checker {
    /// `origin.url` (or `--origin`): required without `[[sites]]`. `None`
    /// when it is bad or missing where required; `Some(None)` when it may
    /// be left out and is.
    pub(super) fn origin_url(
        &mut self,
        url: Option<String>,
        sites: bool,
    ) -> Option<Option<OriginAddr>> {
        let Some(url) = url else {
            if sites {
                return Some(None);
            }
            let message = "is required; set it to \"http://host:port\" or \"unix:/path/to.sock\", \
                           or pass --origin URL (or describe [[sites]] and their upstreams)";
            self.problem("origin.url", message);
            return None;
        };
        self.ok("origin.url", parse_origin(&url)).map(Some)
    }

    /// The metrics endpoint may not take a listener's address.
    pub(super) fn metrics_clash(&mut self, metrics: &MetricsConfig, listeners: &[Listener]) {
        let clash = listeners
            .iter()
            .find(|l| Some(l.config.address) == metrics.listen && l.config.address.port() != 0);
        if let Some(clash) = clash {
            let message = format!(
                "{} is already used by {}; the metrics endpoint needs an address of its own",
                clash.config.address, clash.key
            );
            self.problem("metrics.listen", message);
        }
    }

    pub(super) fn listeners(
        &mut self,
        file: Option<Vec<RawListen>>,
        ov: &Overrides,
    ) -> Vec<Listener> {
        let declared = ov.listen.len() + ov.listen_plain.len() + file.as_ref().map_or(0, Vec::len);
        if declared == 0 {
            if file.is_some() {
                let message =
                    "no listener is configured; add a [[listen]] table or pass --listen ADDR";
                self.problem("listen", message);
                return Vec::new();
            }
            let config = ListenerConfig {
                address: DEFAULT_LISTEN,
                tls: true,
                proxy_protocol: None,
            };
            let key = "the default listener".to_owned();
            return vec![Listener { key, config }];
        }

        // (key, address as written, tls, PROXY protocol sources)
        let mut specs: Vec<(String, String, bool, Option<TrustedProxies>)> = Vec::new();
        if ov.listen.is_empty() {
            for (i, entry) in file.into_iter().flatten().enumerate() {
                let proxy_protocol = self.proxy_protocol(i, &entry);
                let key = format!("listen[{i}].address");
                match entry.address {
                    Some(address) => {
                        let tls = entry.tls.unwrap_or(true);
                        specs.push((key, address, tls, proxy_protocol));
                    }
                    None => self.problem(
                        &key,
                        "is required in every [[listen]] table; expected \"host:port\", \
                         such as \"0.0.0.0:8443\"",
                    ),
                }
            }
        }
        let tls = ov
            .listen
            .iter()
            .map(|a| ("--listen".to_owned(), a.clone(), true, None));
        let plain = ov.listen_plain.iter();
        let plain = plain.map(|a| ("--listen-plain".to_owned(), a.clone(), false, None));
        specs.extend(tls.chain(plain));

        let mut listeners: Vec<Listener> = Vec::new();
        for (key, text, tls, proxy_protocol) in specs {
            let Some(address) = self.ok(&key, socket_addr(&text)) else {
                continue;
            };
            // Port 0 asks the kernel for a fresh port each time: never a clash.
            let clash = listeners
                .iter()
                .find(|l| l.config.address == address && address.port() != 0);
            match clash {
                Some(first) => {
                    let message = format!("{address} is already used by {}", first.key);
                    self.problem(&key, message);
                }
                None => listeners.push(Listener {
                    key,
                    config: ListenerConfig {
                        address,
                        tls,
                        proxy_protocol,
                    },
                }),
            }
        }
        listeners
    }

    /// `listen[i].proxy_protocol` and `proxy_protocol_from`: on, it needs
    /// the sources to trust; off, sources would be a setting that does
    /// nothing, which is more likely a mistake than meant.
    fn proxy_protocol(&mut self, i: usize, entry: &RawListen) -> Option<TrustedProxies> {
        let key = format!("listen[{i}].proxy_protocol_from");
        let written = entry.proxy_protocol_from.clone();
        let given = written.as_ref().is_some_and(|from| !from.is_empty());
        let from = self.parse(&key, written, each(ip_net));
        if !entry.proxy_protocol.unwrap_or(false) {
            if entry.proxy_protocol_from.is_some() {
                let message = format!(
                    "has no effect unless listen[{i}].proxy_protocol = true; set that too, \
                     or remove this key"
                );
                self.problem(&key, message);
            }
            return None;
        }
        if !given {
            let message = "is required when proxy_protocol = true: the addresses of the load \
                           balancers that send PROXY headers, such as [\"10.0.0.0/8\"]; \
                           connections from anywhere else are closed";
            self.problem(&key, message);
        }
        // A bad entry has been reported under its own key.
        from.filter(|from| !from.is_empty()).map(TrustedProxies)
    }

    pub(super) fn tls(
        &mut self,
        raw: RawTls,
        base_dir: &Path,
        ov: &Overrides,
        listeners: &[Listener],
        sites: bool,
    ) -> TlsConfig {
        // Any TLS flag replaces the file's [tls] choice as a whole, so that
        // `--self-signed` works with a file that names certificate files.
        let from_flags = ov.cert.is_some() || ov.key.is_some() || ov.self_signed;
        let watch = raw.watch.unwrap_or(false);
        let (cert, key, self_signed, [cert_key, key_key, self_signed_key]) = if from_flags {
            let names = ["--cert", "--key", "--self-signed"];
            (ov.cert.clone(), ov.key.clone(), ov.self_signed, names)
        } else {
            let names = ["tls.cert", "tls.key", "tls.self_signed"];
            let resolve = |path: PathBuf| base_dir.join(path);
            let self_signed = raw.self_signed.unwrap_or(false);
            (
                raw.cert.map(resolve),
                raw.key.map(resolve),
                self_signed,
                names,
            )
        };

        let before = self.count();
        let files = match (cert, key) {
            (Some(cert), Some(key)) => {
                self.readable_file(cert_key, &cert);
                self.readable_file(key_key, &key);
                Some(TlsSource::Files { cert, key })
            }
            (Some(_), None) => {
                let message =
                    format!("{cert_key} is set but {key_key} is not; give both or neither");
                self.problem(key_key, message);
                None
            }
            (None, Some(_)) => {
                let message =
                    format!("{key_key} is set but {cert_key} is not; give both or neither");
                self.problem(cert_key, message);
                None
            }
            (None, None) => None,
        };
        let source = match (files, self_signed) {
            (Some(_), true) => {
                let message = format!(
                    "cannot be combined with {cert_key} and {key_key}; \
                     use either certificate files or a self-signed certificate"
                );
                self.problem(self_signed_key, message);
                None
            }
            (files, false) => files,
            (None, true) => Some(TlsSource::SelfSigned),
        };

        let Some(first) = listeners.iter().find(|l| l.config.tls) else {
            return TlsConfig {
                source: None,
                watch,
            };
        };
        // With sites, each may have its own certificate: checked there.
        if source.is_none() && self.count() == before && !sites {
            let message = format!(
                "{} ({}) uses TLS, so a certificate is needed; set tls.cert and tls.key, or \
                 tls.self_signed = true for development \
                 (flags: --cert FILE --key FILE, or --self-signed)",
                first.key, first.config.address
            );
            self.problem("tls", message);
        }
        TlsConfig { source, watch }
    }

    pub(super) fn readable_file(&mut self, key: &str, path: &Path) {
        let result = fs::File::open(path).and_then(|file| file.metadata());
        match result {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => self.problem(key, format!("{} is not a regular file", path.display())),
            Err(err) => self.problem(key, format!("cannot read {}: {err}", path.display())),
        }
    }
}

/// A source range in CIDR notation, or a single address.
fn ip_net(text: String) -> Result<IpNet, String> {
    let net = match text.trim().parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => match text.trim().parse::<std::net::IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => {
                return Err(format!(
                    "{text:?} is not an address range; expected CIDR notation such as \
                     \"10.0.0.0/8\" or \"2001:db8::/32\", or a single address"
                ))
            }
        },
    };
    if net.trunc() != net {
        return Err(format!(
            "{text:?} has bits set past its prefix length; did you mean \"{}\"?",
            net.trunc()
        ));
    }
    Ok(net)
}
