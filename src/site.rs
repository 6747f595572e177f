//! Sites at run time: which site a request's host name picks, which route
//! its path takes, and each site's push and hint state.
//!
//! A site is found by the request's host (`:authority` or `Host`): an
//! exact name, then a `*.suffix` name, then the default site. A request no
//! site answers for gets 421 on TLS and 404 in cleartext. On TLS, a request
//! for a site other than the one the handshake's SNI picked also gets 421
//! unless both sites share a certificate (RFC 9110 §15.5.20): a browser
//! that reused the connection for another name then connects afresh.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::HeaderName;
use rustls::sign::CertifiedKey;

use crate::config::{
    Config, HintSettings, PreloadMode, PushSettings, RouteConfig, SiteConfig, TlsSource,
};
use crate::error::ProxyError;
use crate::policy::digest::Validators;
use crate::policy::hints::LearnedHints;
use crate::policy::push;
use crate::tls::{self, ServerNames, SiteCerts, TlsError};

/// Every site of one configuration.
pub struct Sites {
    sites: Vec<Site>,
    /// Lower-case exact names.
    exact: HashMap<String, usize>,
    /// `*.suffix` names, by suffix.
    wildcard: Vec<(String, usize)>,
    default: Option<usize>,
    /// The certificates by SNI name; empty without TLS.
    certs: Arc<SiteCerts>,
}

/// One site.
pub struct Site {
    /// Its first name, or `default`, for logs.
    pub label: String,
    /// Its names as configured.
    configured: Vec<String>,
    /// The names pushes may be promised under.
    pub names: ServerNames,
    pub routes: Vec<RouteConfig>,
    pub push: PushSettings,
    pub hints: HintSettings,
    /// The push rules' view of `push`, and the same with push off, for
    /// routes that turn it off.
    policy: push::Policy,
    no_push: push::Policy,
    /// `push.forward_headers`, as header names.
    pub forward_headers: Vec<HeaderName>,
    /// Learned early hints, when `hints.learn` is on.
    pub learned: Option<Arc<LearnedHints>>,
    /// Validators of assets seen, when `push.cache_digest` is on.
    pub validators: Option<Arc<Validators>>,
    /// The certificate this site is served with, if any.
    cert: Option<Arc<CertifiedKey>>,
}

impl Sites {
    /// The sites of `config`, their certificates loaded (a bad one fails
    /// here). `previous`, on a reload, hands over each site's learned hints
    /// and validators when the site (by position and names) and those
    /// settings are unchanged.
    pub fn new(config: &Config, previous: Option<&Sites>) -> Result<Sites, TlsError> {
        let uses_tls = config.uses_tls();
        let fallback = match (&config.tls.source, uses_tls) {
            (Some(source), true) => Some(tls::certified("tls", source)?),
            _ => None,
        };
        let mut sites = Vec::with_capacity(config.sites.len());
        let mut certs = SiteCerts::default();
        let (mut exact, mut wildcard) = (HashMap::new(), Vec::new());
        // Sites naming the same files share one certificate, so a request
        // for one on a connection made for the other is not misdirected.
        let mut loaded: Vec<(&TlsSource, Arc<CertifiedKey>)> = Vec::new();
        for (index, site) in config.sites.iter().enumerate() {
            let cert = match (&site.cert, uses_tls) {
                (Some(source), true) => match loaded.iter().find(|(s, _)| *s == source) {
                    Some((_, cert)) => Some(cert.clone()),
                    None => {
                        let cert = tls::certified(&format!("sites[{index}]"), source)?;
                        loaded.push((source, cert.clone()));
                        Some(cert)
                    }
                },
                _ => fallback.clone(),
            };
            if let Some(cert) = &cert {
                certs.add(index, &site.names, cert);
            }
            for name in &site.names {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.push((suffix.to_owned(), index)),
                    None => {
                        exact.insert(name.clone(), index);
                    }
                }
            }
            let before = previous
                .and_then(|previous| previous.sites.get(index))
                .filter(|old| old.configured == site.names);
            sites.push(Site::new(site, cert, before));
        }
        let default = config.sites.iter().position(|site| site.default);
        // Names no site has get the default site's certificate, else
        // `[tls]`'s, else the first site's.
        let fallback_site = default.or(if fallback.is_none() { Some(0) } else { None });
        let fallback_cert = fallback_site
            .and_then(|i| sites.get(i))
            .and_then(|site| site.cert.clone())
            .or(fallback);
        if let Some(cert) = fallback_cert {
            certs.set_fallback(default, cert);
        }
        Ok(Sites {
            sites,
            exact,
            wildcard,
            default,
            certs: Arc::new(certs),
        })
    }

    /// The certificates, for the TLS acceptor; `None` without any.
    pub fn certs(&self) -> Option<Arc<SiteCerts>> {
        (!self.certs.is_empty()).then(|| self.certs.clone())
    }

    /// The site a handshake's SNI name picked (`None`: the default site or
    /// none).
    pub fn for_sni(&self, name: Option<&str>) -> Option<usize> {
        self.certs.lookup(name).and_then(|(site, _)| site)
    }

    pub fn get(&self, index: usize) -> Option<&Site> {
        self.sites.get(index)
    }

    /// The site for a request to `host` (an authority's host part) on a
    /// connection whose handshake picked `sni_site`; `secure` on TLS.
    pub fn find(
        &self,
        host: &str,
        secure: bool,
        sni_site: Option<usize>,
    ) -> Result<usize, ProxyError> {
        let found = if self.sites.len() == 1 && self.default == Some(0) {
            // One site that answers for everything: nothing to look up.
            Some(0)
        } else {
            self.lookup(host)
        };
        let unknown = if secure {
            ProxyError::Misdirected
        } else {
            ProxyError::UnknownSite
        };
        let Some(found) = found else {
            return Err(unknown);
        };
        if let (true, Some(picked)) = (secure, sni_site) {
            if picked != found && !self.same_cert(picked, found) {
                return Err(ProxyError::Misdirected);
            }
        }
        Ok(found)
    }

    fn lookup(&self, host: &str) -> Option<usize> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
            .trim_end_matches('.');
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(index) = self.exact.get(host) {
            return Some(*index);
        }
        if let Some((_, rest)) = host.split_once('.') {
            if let Some((_, index)) = self.wildcard.iter().find(|(suffix, _)| suffix == rest) {
                return Some(*index);
            }
        }
        self.default
    }

    fn same_cert(&self, a: usize, b: usize) -> bool {
        match (
            self.sites.get(a).and_then(|s| s.cert.as_ref()),
            self.sites.get(b).and_then(|s| s.cert.as_ref()),
        ) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl Site {
    /// The site `config` describes, served with `cert`; `before`, on a
    /// reload, is the same site as it was, whose learned hints and
    /// validators it keeps while their settings stay the same.
    fn new(config: &SiteConfig, cert: Option<Arc<CertifiedKey>>, before: Option<&Site>) -> Site {
        let learned = config.hints.learn.then(|| {
            before
                .filter(|old| old.hints == config.hints)
                .and_then(|old| old.learned.clone())
                .unwrap_or_else(|| Arc::new(LearnedHints::new(&config.hints)))
        });
        let validators = config.push.cache_digest.then(|| {
            let ttl = config.push.cache_digest_validator_ttl;
            before
                .filter(|old| old.push.cache_digest_validator_ttl == ttl)
                .and_then(|old| old.validators.clone())
                .unwrap_or_else(|| Arc::new(Validators::new(ttl)))
        });
        let leaf = cert.as_ref().and_then(|c| c.cert.first().cloned());
        let policy = policy(&config.push);
        Site {
            label: config
                .names
                .first()
                .cloned()
                .unwrap_or_else(|| "default".to_owned()),
            names: ServerNames::new(&config.names, leaf),
            configured: config.names.clone(),
            routes: config.routes.clone(),
            forward_headers: config
                .push
                .forward_headers
                .iter()
                .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
                .collect(),
            push: config.push.clone(),
            hints: config.hints.clone(),
            no_push: push::Policy {
                enabled: false,
                ..policy.clone()
            },
            policy,
            learned,
            validators,
            cert,
        }
    }

    /// The route `path` (without query) takes. A checked configuration
    /// ends every site's routes with one that takes every path.
    pub fn route(&self, path: &str) -> Option<&RouteConfig> {
        self.routes.iter().find(|route| route.path.matches(path))
    }

    /// The push rules for a response of `route`.
    pub fn policy(&self, route: &RouteConfig) -> &push::Policy {
        if route.push {
            &self.policy
        } else {
            &self.no_push
        }
    }
}

/// The push rules' view of a site's `[push]`.
fn policy(settings: &PushSettings) -> push::Policy {
    push::Policy {
        enabled: settings.enabled,
        preload: match settings.preload {
            PreloadMode::Push => push::PreloadMode::Push,
            PreloadMode::HintOnly => push::PreloadMode::HintOnly,
        },
        max_pushes_per_response: settings.max_pushes_per_response,
        allow_credentialed: settings.allow_credentialed,
        dry_run: settings.dry_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use http::StatusCode;

    fn config(tls: bool, sites: &str) -> Config {
        let text = format!(
            "[[listen]]\naddress = \"127.0.0.1:0\"\ntls = {tls}\n[tls]\nself_signed = true\n\
             [origin]\nurl = \"http://127.0.0.1:1\"\n{sites}"
        );
        Config::from_toml_str(&text, std::path::Path::new("."), &Overrides::default())
            .expect("test config")
    }

    const TWO: &str = "[[sites]]\nnames = [\"shop.example\", \"*.cdn.example\", \"::1\"]\n\
                       [[sites]]\nnames = [\"app.example\", \"img.cdn.example\"]\n";

    #[test]
    fn a_host_picks_its_site_by_exact_then_wildcard_name() {
        let sites = Sites::new(&config(false, TWO), None).expect("sites");
        let table: &[(&str, Result<usize, StatusCode>)] = &[
            ("shop.example", Ok(0)),
            ("SHOP.Example", Ok(0)),
            ("shop.example.", Ok(0)),
            ("a.cdn.example", Ok(0)),
            ("[::1]", Ok(0)),
            ("app.example", Ok(1)),
            // An exact name wins over another site's wildcard.
            ("img.cdn.example", Ok(1)),
            ("a.b.cdn.example", Err(StatusCode::NOT_FOUND)),
            ("cdn.example", Err(StatusCode::NOT_FOUND)),
            ("other.example", Err(StatusCode::NOT_FOUND)),
        ];
        for (host, want) in table {
            let found = sites.find(host, false, None).map_err(|e| e.status());
            assert_eq!(&found, want, "{host}");
        }
        // Over TLS, a host no site answers for is misdirected.
        let found = sites
            .find("other.example", true, None)
            .map_err(|e| e.status());
        assert_eq!(found, Err(StatusCode::MISDIRECTED_REQUEST));
    }

    #[test]
    fn the_default_site_takes_unknown_hosts_and_the_implicit_site_takes_all() {
        let with_default = format!("{TWO}[[sites]]\ndefault = true\n");
        let sites = Sites::new(&config(false, &with_default), None).expect("sites");
        assert_eq!(sites.find("other.example", false, None).ok(), Some(2));
        assert_eq!(sites.find("app.example", false, None).ok(), Some(1));
        let implicit = Sites::new(&config(true, ""), None).expect("sites");
        assert_eq!(implicit.find("anything", true, Some(0)).ok(), Some(0));
    }

    #[test]
    fn a_request_for_another_sites_certificate_is_misdirected() {
        let mut config = config(true, TWO);
        // Each site with a certificate of its own.
        let dir = tempfile::tempdir().expect("temporary directory");
        for (i, site) in config.sites.iter_mut().enumerate() {
            let generated = rcgen::generate_simple_self_signed(site.names.clone()).expect("cert");
            let (cert, key) = (
                dir.path().join(format!("{i}.pem")),
                dir.path().join(format!("{i}.key")),
            );
            std::fs::write(&cert, generated.cert.pem()).expect("write");
            std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write");
            site.cert = Some(TlsSource::Files { cert, key });
        }
        let sites = Sites::new(&config, None).expect("sites");
        assert_eq!(sites.for_sni(Some("shop.example")), Some(0));
        assert_eq!(sites.for_sni(Some("APP.example")), Some(1));
        assert_eq!(sites.for_sni(Some("x.cdn.example")), Some(0));
        assert_eq!(sites.for_sni(Some("unknown.example")), None);
        assert_eq!(sites.for_sni(None), None);
        let misdirected = sites
            .find("app.example", true, Some(0))
            .map_err(|e| e.status());
        assert_eq!(misdirected, Err(StatusCode::MISDIRECTED_REQUEST));
        assert_eq!(sites.find("app.example", true, Some(1)).ok(), Some(1));
        // In cleartext there is no handshake to disagree with.
        assert_eq!(sites.find("app.example", false, Some(0)).ok(), Some(1));

        // A default site with a certificate of its own: clients that name
        // no site, or one no site has, get it.
        let mut with_default = self::config(true, &format!("{TWO}[[sites]]\ndefault = true\n"));
        for (site, named) in with_default.sites.iter_mut().zip(&config.sites) {
            site.cert = named.cert.clone();
        }
        let dir_default = tempfile::tempdir().expect("temporary directory");
        let generated =
            rcgen::generate_simple_self_signed(vec!["default.example".into()]).expect("cert");
        let (cert, key) = (
            dir_default.path().join("d.pem"),
            dir_default.path().join("d.key"),
        );
        std::fs::write(&cert, generated.cert.pem()).expect("write");
        std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write");
        with_default.sites[2].cert = Some(TlsSource::Files { cert, key });
        let sites = Sites::new(&with_default, None).expect("sites");
        let default_cert = sites.get(2).and_then(|s| s.cert.clone()).expect("its own");
        for name in [None, Some("unknown.example")] {
            let (site, cert) = sites.certs.lookup(name).expect("a certificate");
            assert_eq!(site, Some(2), "{name:?}");
            assert!(Arc::ptr_eq(cert, &default_cert), "{name:?}");
        }

        // Two sites naming the same files share the certificate, and so
        // may share connections.
        let mut shared = self::config(true, TWO);
        shared.sites[1].cert = config.sites[0].cert.clone();
        shared.sites[0].cert = config.sites[0].cert.clone();
        let sites = Sites::new(&shared, None).expect("sites");
        assert_eq!(sites.find("app.example", true, Some(0)).ok(), Some(1));
    }

    #[test]
    fn routes_are_tried_in_order_and_the_site_upstream_takes_the_rest() {
        let text = "[upstreams.static]\nservers = [\"http://127.0.0.1:2\"]\n\
                    [[sites]]\ndefault = true\n\
                    [[sites.routes]]\nexact = \"/static/special\"\npush = false\n\
                    [[sites.routes]]\npath = \"/static\"\nupstream = \"static\"\n";
        let sites = Sites::new(&config(false, text), None).expect("sites");
        let site = sites.get(0).expect("the site");
        let route = |path: &str| site.route(path).map(|r| (r.upstream, r.push));
        assert_eq!(route("/static/special"), Some((0, false)));
        assert_eq!(route("/static/app.css"), Some((1, true)));
        assert_eq!(route("/staticfoo"), Some((0, true)));
        assert_eq!(route("/"), Some((0, true)));
        assert!(!site.policy(site.route("/static/special").unwrap()).enabled);
        assert!(site.policy(site.route("/").unwrap()).enabled);
    }
}
