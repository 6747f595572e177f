//! `[upstreams.NAME]` and `[[sites]]`: which names are served, with which
//! certificate, and which upstream each path goes to.
//!
//! Without `[[sites]]`, the file describes one site, as it always has: the
//! names of `server.names` (or of the certificate), the certificate of
//! `[tls]`, every path to `origin.url`, and `[push]` and `[hints]` as
//! written. That site is the default one, so it answers every host name.
//! `origin.url`, when set, is also the upstream named `origin`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::check::{each, server_name, Checker};
use super::keys::{HintSettings, PushSettings, RawHints, RawPush, RawUpstream, UpstreamSettings};
use super::{OriginAddr, TlsConfig, TlsSource};

/// Most addresses in one upstream.
pub const MAX_SERVERS: usize = 64;

/// The upstream that `origin.url` stands for.
pub const ORIGIN_UPSTREAM: &str = "origin";

/// One `[[sites]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSite {
    names: Option<Vec<String>>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    default: Option<bool>,
    upstream: Option<String>,
    routes: Option<Vec<RawRoute>>,
    push: Option<RawPush>,
    hints: Option<RawHints>,
}

/// One `[[sites.routes]]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    path: Option<String>,
    exact: Option<String>,
    upstream: Option<String>,
    push: Option<bool>,
    hints: Option<bool>,
    learn: Option<bool>,
}

/// The keys of the hand-checked tables, for the documentation tests.
#[cfg(test)]
pub(super) const SITE_KEYS: &[(&str, &[&str])] = &[
    ("sites", &["names", "cert", "key", "default", "upstream"]),
    (
        "sites.routes",
        &["path", "exact", "upstream", "push", "hints", "learn"],
    ),
];

/// A named group of origin addresses.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    pub name: String,
    pub settings: UpstreamSettings,
}

/// One site: the host names it answers for, its certificate, its routes,
/// and its push and hint settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteConfig {
    /// Lower case; `*.example.com` covers one label. Empty for the
    /// implicit site, which answers for `server.names` or its
    /// certificate's names through [`SiteConfig::push_names`].
    pub names: Vec<String>,
    /// Its own certificate; `None`: the one of `[tls]`.
    pub cert: Option<TlsSource>,
    /// Answers requests for host names no site lists.
    pub default: bool,
    /// In order; the first that matches a path wins. The last one always
    /// matches (the site's `upstream`).
    pub routes: Vec<RouteConfig>,
    pub push: PushSettings,
    pub hints: HintSettings,
}

/// Which paths a route takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// `path = "/static"`: `/static`, `/static/…`; with a final slash,
    /// `/static/…` only. A prefix never ends inside a segment: `/static`
    /// does not take `/staticfoo`.
    Prefix(String),
    /// `exact = "/favicon.ico"`: that path, with any query.
    Exact(String),
}

impl PathMatch {
    /// Whether `path` (without its query) is taken by this route.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(exact) => path == exact,
            PathMatch::Prefix(prefix) => match path.strip_prefix(prefix.as_str()) {
                None => false,
                Some(rest) => prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'),
            },
        }
    }
}

/// A route: paths, the upstream they go to, and what linkpush does for
/// them beyond forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteConfig {
    pub path: PathMatch,
    /// Index into [`super::Config::upstreams`].
    pub upstream: usize,
    /// Push (and rewrite `rel=push`) for responses of this route.
    pub push: bool,
    /// Send 103 Early Hints: learned ones, and the origin's own.
    pub hints: bool,
    /// Learn preload links from responses of this route.
    pub learn: bool,
}

impl Checker {
    /// `[upstreams.NAME]` tables, plus `origin` for `origin.url`.
    pub(super) fn upstreams(
        &mut self,
        raw: BTreeMap<String, RawUpstream>,
        origin: Option<&OriginAddr>,
    ) -> Vec<UpstreamConfig> {
        let mut upstreams = Vec::new();
        if let Some(addr) = origin {
            upstreams.push(UpstreamConfig {
                name: ORIGIN_UPSTREAM.to_owned(),
                settings: UpstreamSettings {
                    servers: vec![addr.clone()],
                    ..UpstreamSettings::default()
                },
            });
        }
        for (name, table) in raw {
            let path = format!("upstreams.{name}");
            if name == ORIGIN_UPSTREAM {
                let message = "the name \"origin\" stands for origin.url; give this upstream \
                               another name";
                self.problem(&path, message);
                continue;
            }
            let given = table.servers.as_ref().map_or(0, Vec::len);
            let settings = table.check_over(self, &UpstreamSettings::default(), &path);
            if given == 0 {
                let message = "is required: at least one address, such as \
                               [\"http://127.0.0.1:8080\", \"unix:/run/app.sock\"]";
                self.problem(&format!("{path}.servers"), message);
                continue;
            }
            if given > MAX_SERVERS {
                let message = format!(
                    "has {given} addresses; an upstream has at most {MAX_SERVERS}, so split it"
                );
                self.problem(&format!("{path}.servers"), message);
            }
            upstreams.push(UpstreamConfig { name, settings });
        }
        upstreams
    }

    /// `[[sites]]`, or the implicit site when there is none.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn sites(
        &mut self,
        raw: Option<Vec<RawSite>>,
        base_dir: &Path,
        upstreams: &[UpstreamConfig],
        tls: &TlsConfig,
        uses_tls: bool,
        push: &PushSettings,
        hints: &HintSettings,
        server_names: &[String],
    ) -> Vec<SiteConfig> {
        let Some(raw) = raw.filter(|sites| !sites.is_empty()) else {
            // Without sites, `origin.url` is required (reported there).
            let Some(origin) = upstreams.iter().position(|u| u.name == ORIGIN_UPSTREAM) else {
                return Vec::new();
            };
            return vec![SiteConfig {
                names: server_names.to_vec(),
                cert: None,
                default: true,
                routes: vec![catch_all(origin)],
                push: push.clone(),
                hints: hints.clone(),
            }];
        };
        if !server_names.is_empty() {
            let message = "applies only without [[sites]]; list each site's names in its \
                           sites[N].names instead";
            self.problem("server.names", message);
        }
        let mut sites: Vec<SiteConfig> = Vec::new();
        // (name, site index) for duplicates.
        let mut seen: Vec<(String, usize)> = Vec::new();
        for (i, site) in raw.into_iter().enumerate() {
            let at = format!("sites[{i}]");
            let names_key = format!("{at}.names");
            let names = self
                .parse(&names_key, site.names, each(server_name))
                .unwrap_or_default();
            let default = site.default.unwrap_or(false);
            if names.is_empty() && !default {
                let message = "is required: the host names this site answers for, such as \
                               [\"shop.example\", \"www.shop.example\"] (or default = true)";
                self.problem(&names_key, message);
            }
            for name in &names {
                match seen.iter().find(|(other, _)| other == name) {
                    Some((_, first)) => {
                        let message = format!("{name:?} is already a name of sites[{first}]");
                        self.problem(&names_key, message);
                    }
                    None => seen.push((name.clone(), i)),
                }
            }
            if default {
                if let Some(first) = sites.iter().position(|s| s.default) {
                    let message =
                        format!("sites[{first}] is the default site already; only one may be");
                    self.problem(&format!("{at}.default"), message);
                }
            }
            let cert = self.site_cert(&at, site.cert, site.key, base_dir);
            if cert.is_none() && tls.source.is_none() && uses_tls {
                let message = "is needed: a TLS listener serves this site, and [tls] has no \
                               certificate to fall back on; set cert and key here, or tls.cert \
                               and tls.key";
                self.problem(&format!("{at}.cert"), message);
            }
            let upstream_key = format!("{at}.upstream");
            let upstream = match site.upstream {
                Some(name) => self.upstream_named(&upstream_key, &name, upstreams),
                None => match upstreams.iter().position(|u| u.name == ORIGIN_UPSTREAM) {
                    Some(origin) => Some(origin),
                    None => {
                        let message = "is required without origin.url: the name of an \
                                       [upstreams.NAME] table, for the paths no route takes";
                        self.problem(&upstream_key, message);
                        None
                    }
                },
            };
            let mut routes = Vec::new();
            for (r, route) in site.routes.unwrap_or_default().into_iter().enumerate() {
                let at = format!("{at}.routes[{r}]");
                if let Some(route) = self.route(&at, route, upstream, upstreams) {
                    routes.push(route);
                }
            }
            routes.extend(upstream.map(catch_all));
            let push = match site.push {
                Some(raw) => {
                    let path = format!("{at}.push");
                    for (given, key) in [
                        (raw.max_concurrent_pushes.is_some(), "max_concurrent_pushes"),
                        (raw.diary_size.is_some(), "diary_size"),
                    ] {
                        if given {
                            let message = format!(
                                "is a connection's setting, and a connection may serve \
                                 several sites; set push.{key} instead"
                            );
                            self.problem(&format!("{path}.{key}"), message);
                        }
                    }
                    raw.check_over(self, push, &path)
                }
                None => push.clone(),
            };
            let hints = match site.hints {
                Some(raw) => raw.check_over(self, hints, &format!("{at}.hints")),
                None => hints.clone(),
            };
            sites.push(SiteConfig {
                names,
                cert,
                default,
                routes,
                push,
                hints,
            });
        }
        sites
    }

    fn site_cert(
        &mut self,
        at: &str,
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        base_dir: &Path,
    ) -> Option<TlsSource> {
        match (cert, key) {
            (Some(cert), Some(key)) => {
                let (cert, key) = (base_dir.join(cert), base_dir.join(key));
                self.readable_file(&format!("{at}.cert"), &cert);
                self.readable_file(&format!("{at}.key"), &key);
                Some(TlsSource::Files { cert, key })
            }
            (Some(_), None) => {
                let message = format!("{at}.cert is set but {at}.key is not; give both or neither");
                self.problem(&format!("{at}.key"), message);
                None
            }
            (None, Some(_)) => {
                let message = format!("{at}.key is set but {at}.cert is not; give both or neither");
                self.problem(&format!("{at}.cert"), message);
                None
            }
            (None, None) => None,
        }
    }

    fn upstream_named(
        &mut self,
        key: &str,
        name: &str,
        upstreams: &[UpstreamConfig],
    ) -> Option<usize> {
        let found = upstreams.iter().position(|u| u.name == name);
        if found.is_none() {
            let known: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            let message = if known.is_empty() {
                format!("{name:?} is not an upstream; declare it as [upstreams.{name}]")
            } else {
                format!(
                    "{name:?} is not an upstream; declare it as [upstreams.{name}], or use one \
                     of {known:?}"
                )
            };
            self.problem(key, message);
        }
        found
    }

    fn route(
        &mut self,
        at: &str,
        route: RawRoute,
        site_upstream: Option<usize>,
        upstreams: &[UpstreamConfig],
    ) -> Option<RouteConfig> {
        let path = match (route.path, route.exact) {
            (Some(prefix), None) => route_path(&prefix)
                .map(|()| PathMatch::Prefix(prefix))
                .map_err(|message| self.problem(&format!("{at}.path"), message))
                .ok(),
            (None, Some(exact)) => route_path(&exact)
                .map(|()| PathMatch::Exact(exact))
                .map_err(|message| self.problem(&format!("{at}.exact"), message))
                .ok(),
            (Some(_), Some(_)) => {
                let message = "give path (a prefix) or exact (one path), not both";
                self.problem(&format!("{at}.exact"), message);
                None
            }
            (None, None) => {
                let message = "is required: path = \"/prefix\", or exact = \"/one/path\"";
                self.problem(&format!("{at}.path"), message);
                None
            }
        };
        let upstream = match route.upstream {
            Some(name) => self.upstream_named(&format!("{at}.upstream"), &name, upstreams),
            None => site_upstream,
        };
        Some(RouteConfig {
            path: path?,
            upstream: upstream?,
            push: route.push.unwrap_or(true),
            hints: route.hints.unwrap_or(true),
            learn: route.learn.unwrap_or(true),
        })
    }
}

/// The route that takes every path to `upstream`.
fn catch_all(upstream: usize) -> RouteConfig {
    RouteConfig {
        path: PathMatch::Prefix("/".to_owned()),
        upstream,
        push: true,
        hints: true,
        learn: true,
    }
}

/// A route's path: absolute, without query, space or control bytes.
fn route_path(path: &str) -> Result<(), String> {
    let usable = path.starts_with('/')
        && !path
            .bytes()
            .any(|b| b == b'?' || b == b'#' || b == b' ' || b.is_ascii_control());
    if usable {
        Ok(())
    } else {
        Err(format!(
            "{path:?} is not a path; expected one starting with '/', without a query, such as \
             \"/static\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::PathMatch;

    #[test]
    fn prefixes_end_at_a_segment_boundary_and_exact_paths_match_alone() {
        let table = [
            (PathMatch::Prefix("/static".into()), "/static", true),
            (PathMatch::Prefix("/static".into()), "/static/app.css", true),
            (PathMatch::Prefix("/static".into()), "/staticfoo", false),
            (PathMatch::Prefix("/static".into()), "/stati", false),
            (PathMatch::Prefix("/static/".into()), "/static", false),
            (PathMatch::Prefix("/static/".into()), "/static/a", true),
            (PathMatch::Prefix("/".into()), "/anything", true),
            (PathMatch::Prefix("/".into()), "/", true),
            (
                PathMatch::Exact("/favicon.ico".into()),
                "/favicon.ico",
                true,
            ),
            (
                PathMatch::Exact("/favicon.ico".into()),
                "/favicon.ico/x",
                false,
            ),
            (PathMatch::Exact("/a".into()), "/", false),
        ];
        for (route, path, want) in table {
            assert_eq!(route.matches(path), want, "{route:?} against {path}");
        }
    }
}
