//! The rustls acceptor: ALPN `h2` and `http/1.1`, TLS 1.2 and 1.3, a
//! certificate per site chosen by SNI (from PEM files, or generated for
//! local development).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::config::TlsSource;

/// ALPN protocol ids, in server preference order.
pub const ALPN_H2: &[u8] = b"h2";
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// A negotiated TLS version as logs name it.
pub fn version_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        // The acceptor offers no other version.
        _ => "other",
    }
}

/// A negotiated ALPN protocol id as logs name it: the acceptor only ever
/// agrees to one of its own.
pub fn alpn_name(alpn: &[u8]) -> &'static str {
    match alpn {
        ALPN_H2 => "h2",
        ALPN_HTTP11 => "http/1.1",
        _ => "other",
    }
}

/// Start-up errors: each names the table the files came from (`tls`, or a
/// site's, `sites[1]`), the file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{table}.cert: cannot read certificate file {path}: {source}")]
    ReadCert {
        table: String,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error(
        "{table}.cert: {path} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"
    )]
    NoCert { table: String, path: PathBuf },
    #[error(
        "{table}.key: cannot read a PEM private key (PKCS#8, PKCS#1 or SEC1) from {path}: {source}"
    )]
    ReadKey {
        table: String,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{table}.key: the key in {key} does not match the certificate in {cert}")]
    KeyMismatch {
        table: String,
        cert: PathBuf,
        key: PathBuf,
    },
    #[error("tls: the certificate or key is not usable: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("tls.self_signed: cannot generate a development certificate: {0}")]
    Generate(#[from] rcgen::Error),
}

/// A certificate chain and its key, as loaded or generated.
pub struct CertifiedPair {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Load a PEM chain and key from disk.
/// Load a PEM chain and key from disk; errors name `table` (`tls`,
/// `sites[1]`) as the keys' table.
pub fn load_pair(table: &str, cert: &Path, key: &Path) -> Result<CertifiedPair, TlsError> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsError::ReadCert {
            table: table.to_owned(),
            path: cert.to_owned(),
            source,
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCert {
            table: table.to_owned(),
            path: cert.to_owned(),
        });
    }
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|source| TlsError::ReadKey {
        table: table.to_owned(),
        path: key.to_owned(),
        source,
    })?;
    Ok(CertifiedPair {
        chain,
        key: key_der,
    })
}

/// A certificate for `localhost`, `127.0.0.1` and `::1`, valid for browsers
/// that are told to trust it. Development only: the key is thrown away on exit.
pub fn self_signed() -> Result<(CertifiedPair, String), TlsError> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let generated = rcgen::generate_simple_self_signed(names)?;
    let pem = generated.cert.pem();
    let chain = vec![generated.cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
    Ok((CertifiedPair { chain, key }, pem))
}

/// The host names this proxy answers for, which are the only authorities
/// it promises pushes under (a client can send any `:authority`, and a
/// push under a name the proxy does not serve would let it plant content
/// for another site in the client's push cache).
#[derive(Debug, Clone, Default)]
pub struct ServerNames {
    /// Configured names, lower case; `*.example.com` covers one label.
    configured: Vec<String>,
    /// The leaf certificate, when no names are configured.
    cert: Option<CertificateDer<'static>>,
}

impl ServerNames {
    /// `configured` names when there are any, else those of `cert`.
    pub fn new(configured: &[String], cert: Option<CertificateDer<'static>>) -> ServerNames {
        ServerNames {
            configured: configured.to_vec(),
            cert: if configured.is_empty() { cert } else { None },
        }
    }

    /// Whether `authority` (`host`, `host:port`, `[v6]:port`) names this
    /// proxy.
    pub fn serves(&self, authority: &str) -> bool {
        let Some(host) = host_of(authority) else {
            return false;
        };
        if !self.configured.is_empty() {
            return self.configured.iter().any(|name| name_matches(name, &host));
        }
        let Some(der) = &self.cert else {
            return false;
        };
        let (Ok(cert), Ok(name)) = (
            webpki::EndEntityCert::try_from(der),
            ServerName::try_from(host.as_str()),
        ) else {
            return false;
        };
        cert.verify_is_valid_for_subject_name(&name).is_ok()
    }
}

/// The lower-case host of an authority, without port or brackets.
fn host_of(authority: &str) -> Option<String> {
    let authority: http::uri::Authority = authority.parse().ok()?;
    let host = authority.host();
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Some(host.trim_end_matches('.').to_ascii_lowercase())
}

/// A configured name against a lower-case host: exact, or `*.suffix`
/// covering exactly one more label.
fn name_matches(name: &str, host: &str) -> bool {
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
        None => name == host,
    }
}

/// Load (or generate) the certificate of `source`, with its key checked
/// against it; errors name `table` (`tls`, `sites[1]`).
pub fn certified(table: &str, source: &TlsSource) -> Result<Arc<CertifiedKey>, TlsError> {
    let pair = match source {
        TlsSource::Files { cert, key } => {
            let pair = load_pair(table, cert, key)?;
            check_match(table, &pair, cert, key)?;
            pair
        }
        TlsSource::SelfSigned => {
            tracing::warn!(
                "tls.self_signed: serving a freshly generated certificate for localhost; \
                 this is for development only, clients will not trust it"
            );
            self_signed()?.0
        }
    };
    let provider = rustls::crypto::ring::default_provider();
    let key = provider.key_provider.load_private_key(pair.key)?;
    Ok(Arc::new(CertifiedKey::new(pair.chain, key)))
}

/// The certificates of every site, chosen by the name a client sends in
/// its TLS handshake (SNI): a site's own, else the fallback (the default
/// site's, or `[tls]`'s). A client that sends no name, or a name no site
/// has, gets the fallback and then a 421 for a host no site serves.
#[derive(Debug, Default)]
pub struct SiteCerts {
    /// Lower-case names, exact.
    exact: HashMap<String, (usize, Arc<CertifiedKey>)>,
    /// `*.suffix` names, by suffix.
    wildcard: Vec<(String, usize, Arc<CertifiedKey>)>,
    fallback: Option<(Option<usize>, Arc<CertifiedKey>)>,
}

impl SiteCerts {
    /// Add `site`'s `names`, served with `cert`.
    pub fn add(&mut self, site: usize, names: &[String], cert: &Arc<CertifiedKey>) {
        for name in names {
            match name.strip_prefix("*.") {
                Some(suffix) => self.wildcard.push((suffix.to_owned(), site, cert.clone())),
                None => {
                    self.exact.insert(name.clone(), (site, cert.clone()));
                }
            }
        }
    }

    /// The certificate for names no site has, served for `site` if any.
    pub fn set_fallback(&mut self, site: Option<usize>, cert: Arc<CertifiedKey>) {
        self.fallback = Some((site, cert));
    }

    /// The site a client's SNI name picked, and its certificate.
    pub fn lookup(&self, name: Option<&str>) -> Option<(Option<usize>, &Arc<CertifiedKey>)> {
        if let Some(name) = name {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            if let Some((site, cert)) = self.exact.get(&name) {
                return Some((Some(*site), cert));
            }
            if let Some((_, rest)) = name.split_once('.') {
                let found = self.wildcard.iter().find(|(suffix, ..)| suffix == rest);
                if let Some((_, site, cert)) = found {
                    return Some((Some(*site), cert));
                }
            }
        }
        self.fallback.as_ref().map(|(site, cert)| (*site, cert))
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.fallback.is_none()
    }
}

impl ResolvesServerCert for SiteCerts {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.lookup(hello.server_name())
            .map(|(_, cert)| cert.clone())
    }
}

/// The acceptor serving `certs`: ALPN h2 and http/1.1, TLS 1.3 and 1.2,
/// the ring provider.
pub fn acceptor(certs: Arc<SiteCerts>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), ALPN_HTTP11.to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// rustls accepts a key that does not belong to the certificate and fails
/// every handshake later; catch that at start-up instead.
fn check_match(table: &str, pair: &CertifiedPair, cert: &Path, key: &Path) -> Result<(), TlsError> {
    let provider = rustls::crypto::ring::default_provider();
    let signing_key = provider
        .key_provider
        .load_private_key(pair.key.clone_key())?;
    let certified = rustls::sign::CertifiedKey::new(pair.chain.clone(), signing_key);
    match certified.keys_match() {
        Ok(()) => Ok(()),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            table: table.to_owned(),
            cert: cert.to_owned(),
            key: key.to_owned(),
        }),
        // The key's public half could not be extracted (some key types):
        // nothing to compare, the handshake will tell.
        Err(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_names_match_exactly_or_one_wildcard_label() {
        let names = ServerNames::new(
            &["shop.example".to_string(), "*.cdn.example".to_string()],
            None,
        );
        let table = [
            ("shop.example", true),
            ("SHOP.example:443", true),
            ("shop.example.", true),
            ("a.cdn.example", true),
            ("a.b.cdn.example", false),
            ("cdn.example", false),
            ("attacker.example", false),
            ("shop.example.attacker", false),
            ("", false),
        ];
        for (authority, want) in table {
            assert_eq!(names.serves(authority), want, "{authority}");
        }
    }

    #[test]
    fn certificate_names_are_used_when_none_are_configured() {
        let (pair, _) = self_signed().expect("generate");
        let names = ServerNames::new(&[], Some(pair.chain[0].clone()));
        assert!(names.serves("localhost:8443"));
        assert!(names.serves("127.0.0.1:8443"));
        assert!(names.serves("[::1]:8443"));
        assert!(!names.serves("attacker.example"));
        assert!(!names.serves("127.0.0.2"));
        assert!(!ServerNames::default().serves("localhost"));
    }
}
