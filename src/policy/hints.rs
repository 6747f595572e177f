//! 103 Early Hints: which requests get hints, which links are worth
//! learning from a response, and the bounded store of learned hints.
//!
//! Learning: the preload-type `Link` entries of a final 200/301/302 HTML
//! response to a GET are remembered per page (authority + path, the exact
//! query when configured, or a route pattern). On the next navigation to
//! that page, the frontend hints or pushes them while the origin is still
//! working on the response.
//!
//! A hint tells one visitor a URL that the origin named in a response to
//! someone else, so the store never hints a link that may be one visitor's:
//!
//! - a link is hinted only once the origin has sent it, for the same key,
//!   to `learn_min_clients` distinct clients, counted by address (IPv4
//!   address, IPv6 /64), so a link that only one visitor gets (their
//!   statement, their avatar) stays unconfirmed;
//! - a response to a request whose query the key leaves out teaches
//!   nothing, so links echoing a query cannot reach visitors of the bare
//!   page;
//! - pages marked private (`Cache-Control: private`/`no-store`, `Vary` on
//!   `Cookie`/`Authorization`/`*`) are learned only under that counting
//!   rule, never when one client is enough;
//! - 401 and 403 answers forget the page.
//!
//! The decision about one response ([`lesson`]) is pure; the store
//! ([`LearnedHints`]) does the counting.

use std::hash::{BuildHasher, RandomState};
use std::mem::size_of;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName};
use http::Method;
use lru::LruCache;

use crate::config::HintSettings;
use crate::policy::link::{parse_field, Element};

/// Relation types a learned hint keeps.
const HINT_RELS: [&str; 4] = ["preload", "push", "modulepreload", "preconnect"];

/// Most links one entry tracks, confirmed or not. A private page names a
/// personal link for each visitor; this cap keeps them from growing an
/// entry without bound (the least recently seen unconfirmed link goes
/// first), and it also caps how many links one response can teach.
pub const MAX_LINKS_PER_ENTRY: usize = 32;

/// Whether a request is a page navigation that hints help: the browser says
/// so (`Sec-Fetch-Mode: navigate`) or asks for HTML.
pub fn wants_hints(method: &Method, headers: &HeaderMap) -> bool {
    if *method != Method::GET {
        return false;
    }
    let navigate = headers
        .get("sec-fetch-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"navigate"));
    let html = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/html"));
    navigate || html
}

/// The hint-worthy elements of a response's `Link` lines, each as its exact
/// text, in order, without repeats.
pub fn hint_links(link_lines: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in link_lines {
        for element in parse_field(line) {
            let Element::Link(link) = element else {
                continue;
            };
            let rels = link.rel_tokens();
            if rels.iter().any(|r| HINT_RELS.contains(&r.as_str())) {
                let text = link.raw().to_string();
                if !out.contains(&text) {
                    out.push(text);
                }
            }
        }
    }
    out
}

/// Whether a response is meant for one user: `Cache-Control: private` or
/// `no-store` (with or without a field-name argument), or a `Vary` on
/// `Cookie`, `Authorization` or `*`, which says the body depends on who
/// asks. Such a page may name links that belong to that user alone.
pub fn is_private(headers: &HeaderMap) -> bool {
    let cache_control = directives(headers, &header::CACHE_CONTROL)
        .any(|d| d.eq_ignore_ascii_case(b"private") || d.eq_ignore_ascii_case(b"no-store"));
    let vary = directives(headers, &header::VARY).any(|d| {
        d == b"*" || d.eq_ignore_ascii_case(b"cookie") || d.eq_ignore_ascii_case(b"authorization")
    });
    cache_control || vary
}

/// The comma-separated directive names of every `name` field, trimmed, each
/// without its `=argument`. Bytes, not text, so that no odd byte in a value
/// hides a directive.
fn directives<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a [u8]> {
    headers.get_all(name).iter().flat_map(|value| {
        value.as_bytes().split(|b| *b == b',').map(|item| {
            let name = item.split(|b| *b == b'=').next().unwrap_or(item);
            name.trim_ascii()
        })
    })
}

/// What the store should do with a final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lesson {
    /// The origin sent these links to this request's client: count them
    /// towards confirmation, and drop confirmed links the list lacks.
    Learn(Vec<String>),
    /// Forget the page: it stopped sending links, or must never be hinted.
    Forget,
    /// Not a response to learn from; leave the entry as it is.
    Ignore,
}

/// Decide what a final response teaches about its page.
///
/// `min_clients` is `learn_min_clients`: with 1, a single response confirms
/// its links, which is only safe for public pages, so private pages are
/// then forgotten instead of learned.
pub fn lesson(
    method: &Method,
    key: &Key,
    status: u16,
    headers: &HeaderMap,
    min_clients: usize,
) -> Lesson {
    if *method != Method::GET {
        return Lesson::Ignore;
    }
    // A hint must never leak what sits behind a login.
    if status == 401 || status == 403 {
        return Lesson::Forget;
    }
    // The links may echo the query, which the key does not hold: another
    // visitor of the page (without that query) would be hinted them. An
    // attacker could plant links that way.
    if key.query_left_out {
        return Lesson::Ignore;
    }
    if min_clients <= 1 && is_private(headers) {
        return Lesson::Forget;
    }
    if !matches!(status, 200 | 301 | 302) {
        return Lesson::Ignore;
    }
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().to_ascii_lowercase().starts_with("text/html"));
    if !html && status == 200 {
        return Lesson::Ignore;
    }
    let lines: Vec<&str> = headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let links = hint_links(&lines);
    if links.is_empty() {
        Lesson::Forget
    } else {
        Lesson::Learn(links)
    }
}

/// Whether `path` matches a route pattern: `*` matches any run of characters
/// within one segment; a final `**` segment matches any rest of the path.
/// Matching is linear in the path length, whatever the path holds.
pub fn route_matches(pattern: &str, path: &str) -> bool {
    let mut pattern_segments: Vec<&str> = pattern.split('/').collect();
    let open_ended = pattern_segments.last() == Some(&"**");
    if open_ended {
        pattern_segments.pop();
    }
    let path_segments: Vec<&str> = path.split('/').collect();
    if open_ended {
        if path_segments.len() < pattern_segments.len() {
            return false;
        }
    } else if path_segments.len() != pattern_segments.len() {
        return false;
    }
    pattern_segments
        .iter()
        .zip(&path_segments)
        .all(|(p, t)| glob(p.as_bytes(), t.as_bytes()))
}

/// Wildcard match with `*` only, by the two-pointer method: O(len × len)
/// at worst, no recursion.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<usize> = None;
    let mut mark = 0;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some(p);
            mark = t;
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some(s) = star {
            p = s + 1;
            mark += 1;
            t = mark;
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|b| *b == b'*')
}

/// Where a client's visits count: the IPv4 address itself, or the /64 an
/// IPv6 address belongs to (one host usually owns a whole /64 and rotates
/// privacy addresses within it). An IPv4-mapped IPv6 address, as a
/// dual-stack listener reports IPv4 clients, counts as the IPv4 address:
/// otherwise every IPv4 client would share the `::ffff:0:0/64` prefix.
pub fn client_scope(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !(u128::from(u64::MAX));
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
    }
}

/// The store key of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    text: String,
    /// The request has a query string that the key leaves out (the key is
    /// the path alone, or a route pattern). Its response must teach
    /// nothing, since its links may be built from that query.
    query_left_out: bool,
}

impl Key {
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn query_left_out(&self) -> bool {
        self.query_left_out
    }
}

/// A link seen for a key but not yet sent to enough distinct clients.
struct Pending {
    link: String,
    /// Keyed hashes of the client scopes that were sent the link, fewer
    /// than `min_clients` of them.
    clients: Vec<u64>,
    seen: Instant,
}

impl Pending {
    /// Bytes charged to the store: the text, the hashes and the record.
    fn bytes(&self) -> usize {
        size_of::<Pending>() + self.link.len() + self.clients.capacity() * size_of::<u64>()
    }
}

struct Entry {
    /// Links sent to at least `min_clients` distinct clients, in the order
    /// of the latest response: what lookups hint.
    confirmed: Arc<[String]>,
    /// Links on their way to confirmation, most recently seen first.
    pending: Vec<Pending>,
    bytes: usize,
    learned: Instant,
}

impl Entry {
    fn new(now: Instant) -> Entry {
        Entry {
            confirmed: Arc::from(Vec::new()),
            pending: Vec::new(),
            bytes: 0,
            learned: now,
        }
    }

    /// Count a response's links as sent to `client`.
    fn teach(&mut self, links: Vec<String>, client: u64, rules: &Rules, now: Instant) {
        let mut confirmed: Vec<String> = Vec::new();
        let mut pending_now: Vec<Pending> = Vec::new();
        let mut old = std::mem::take(&mut self.pending);
        // A link not seen within the TTL starts its count again.
        old.retain(|p| now.saturating_duration_since(p.seen) <= rules.ttl);
        for link in links.into_iter().take(MAX_LINKS_PER_ENTRY) {
            if self.confirmed.contains(&link) {
                confirmed.push(link);
                continue;
            }
            let mut candidate = match old.iter().position(|p| p.link == link) {
                Some(i) => old.swap_remove(i),
                None => Pending {
                    link,
                    clients: Vec::new(),
                    seen: now,
                },
            };
            if !candidate.clients.contains(&client) {
                candidate.clients.push(client);
            }
            if candidate.clients.len() >= rules.min_clients {
                confirmed.push(candidate.link);
            } else {
                candidate.seen = now;
                pending_now.push(candidate);
            }
        }
        // A confirmed link this response lacks is dropped, since the page
        // changed. Unconfirmed links of other responses stay (each visitor's
        // page may differ) until they age out or newer ones crowd them out.
        old.sort_by_key(|p| std::cmp::Reverse(p.seen));
        let room = MAX_LINKS_PER_ENTRY.saturating_sub(confirmed.len() + pending_now.len());
        old.truncate(room);
        pending_now.extend(old);
        if *self.confirmed != *confirmed {
            self.confirmed = confirmed.into();
        }
        self.pending = pending_now;
        self.learned = now;
    }

    fn measure(&mut self, key: &str) {
        self.bytes = key.len()
            + self.confirmed.iter().map(String::len).sum::<usize>()
            + self.pending.iter().map(Pending::bytes).sum::<usize>();
    }
}

struct Store {
    entries: LruCache<String, Entry>,
    bytes: usize,
}

/// The settings the counting needs.
struct Rules {
    min_clients: usize,
    ttl: Duration,
}

/// Learned hints, bounded by entry count, total bytes and age.
pub struct LearnedHints {
    store: Mutex<Store>,
    max_entries: usize,
    max_bytes: usize,
    rules: Rules,
    with_query: bool,
    routes: Vec<String>,
    /// Keys the client hashes: SipHash with random keys drawn for this
    /// process, so the table holds no address, and a hash cannot be
    /// matched to an address by trying all 2^32 of them.
    salt: RandomState,
}

impl LearnedHints {
    pub fn new(settings: &HintSettings) -> LearnedHints {
        LearnedHints {
            store: Mutex::new(Store {
                entries: LruCache::unbounded(),
                bytes: 0,
            }),
            max_entries: settings.learn_max_entries.max(1),
            max_bytes: usize::try_from(settings.learn_max_bytes).unwrap_or(usize::MAX),
            rules: Rules {
                min_clients: settings.learn_min_clients.max(1),
                ttl: settings.learn_ttl,
            },
            with_query: settings.learn_query,
            routes: settings.learn_routes.clone(),
            salt: RandomState::new(),
        }
    }

    /// `learn_min_clients`, for [`lesson`].
    pub fn min_clients(&self) -> usize {
        self.rules.min_clients
    }

    /// The store key for a request: the authority plus the matching route
    /// pattern, or else the path (with the exact query only when
    /// configured).
    pub fn key(&self, authority: &str, path_and_query: &str) -> Key {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if let Some(route) = self.routes.iter().find(|r| route_matches(r, path)) {
            return Key {
                text: format!("{authority} route {route}"),
                query_left_out: query.is_some(),
            };
        }
        match query {
            Some(query) if self.with_query => Key {
                text: format!("{authority} {path}?{query}"),
                query_left_out: false,
            },
            _ => Key {
                text: format!("{authority} {path}"),
                query_left_out: query.is_some(),
            },
        }
    }

    /// The confirmed links for `key`, if any and still fresh.
    pub fn lookup(&self, key: &Key) -> Option<Arc<[String]>> {
        let mut store = self.store.lock().ok()?;
        let fresh = store
            .entries
            .get(key.as_str())
            .map(|e| e.learned.elapsed() <= self.rules.ttl)?;
        if !fresh {
            store.remove(key.as_str());
            return None;
        }
        store
            .entries
            .get(key.as_str())
            .map(|e| e.confirmed.clone())
            .filter(|links| !links.is_empty())
    }

    /// Apply what a final response to `client` taught.
    pub fn apply(&self, key: Key, client: SocketAddr, lesson: Lesson) {
        // Hash before taking the lock; the address goes no further.
        let client = self.salt.hash_one(client_scope(client.ip()));
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        match lesson {
            Lesson::Ignore => {}
            Lesson::Forget => store.remove(key.as_str()),
            Lesson::Learn(links) => {
                let now = Instant::now();
                let mut entry = match store.take(key.as_str()) {
                    Some(entry)
                        if now.saturating_duration_since(entry.learned) <= self.rules.ttl =>
                    {
                        entry
                    }
                    _ => Entry::new(now),
                };
                entry.teach(links, client, &self.rules, now);
                entry.measure(key.as_str());
                if entry.bytes > self.max_bytes {
                    return;
                }
                store.bytes += entry.bytes;
                store.entries.put(key.text, entry);
                while store.entries.len() > self.max_entries || store.bytes > self.max_bytes {
                    match store.entries.pop_lru() {
                        Some((_, evicted)) => store.bytes -= evicted.bytes,
                        None => break,
                    }
                }
            }
        }
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.store.lock().map(|s| s.entries.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held now (keys, link text, and the client hashes of links not
    /// confirmed yet).
    pub fn bytes(&self) -> usize {
        self.store.lock().map(|s| s.bytes).unwrap_or(0)
    }
}

impl Store {
    fn take(&mut self, key: &str) -> Option<Entry> {
        let entry = self.entries.pop(key)?;
        self.bytes -= entry.bytes;
        Some(entry)
    }

    fn remove(&mut self, key: &str) {
        self.take(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn settings() -> HintSettings {
        HintSettings {
            learn: true,
            ..HintSettings::default()
        }
    }

    fn with_min_clients(n: usize) -> LearnedHints {
        LearnedHints::new(&HintSettings {
            learn_min_clients: n,
            ..settings()
        })
    }

    fn addr(text: &str) -> SocketAddr {
        SocketAddr::new(text.parse().unwrap(), 443)
    }

    fn learn(links: &[&str]) -> Lesson {
        Lesson::Learn(links.iter().map(|l| l.to_string()).collect())
    }

    fn hinted(store: &LearnedHints, key: &Key) -> Vec<String> {
        store.lookup(key).map(|l| l.to_vec()).unwrap_or_default()
    }

    #[test]
    fn navigations_and_html_requests_want_hints() {
        let get = Method::GET;
        assert!(wants_hints(
            &get,
            &headers(&[("sec-fetch-mode", "navigate")])
        ));
        assert!(wants_hints(
            &get,
            &headers(&[("accept", "text/html,*/*;q=0.8")])
        ));
        assert!(!wants_hints(&get, &headers(&[("accept", "text/css")])));
        assert!(!wants_hints(&get, &headers(&[("sec-fetch-mode", "cors")])));
        assert!(!wants_hints(
            &Method::POST,
            &headers(&[("sec-fetch-mode", "navigate")])
        ));
    }

    #[test]
    fn hint_links_keep_preload_like_entries_in_order_once() {
        let lines = [
            "</a.css>; rel=preload; as=style, </x>; rel=canonical",
            "<https://cdn.example>; rel=preconnect, </a.css>; rel=preload; as=style",
            "</m.js>; rel=modulepreload, </p.js>; rel=push, <bad",
        ];
        assert_eq!(
            hint_links(&lines),
            vec![
                "</a.css>; rel=preload; as=style",
                "<https://cdn.example>; rel=preconnect",
                "</m.js>; rel=modulepreload",
                "</p.js>; rel=push",
            ]
        );
    }

    /// How a row's store keys its requests.
    #[derive(Debug, Clone, Copy)]
    enum Keying {
        Path,
        PathAndQuery,
        Route,
    }

    /// One rule: its name, the request (method, path, keying), the response
    /// (status, fields), `learn_min_clients`, and the expected lesson.
    type Row<'a> = (
        &'a str,
        &'a Method,
        &'a str,
        Keying,
        u16,
        Vec<(&'a str, &'a str)>,
        usize,
        Lesson,
    );

    #[test]
    fn lessons() {
        use Keying::*;
        const LINK: (&str, &str) = ("link", "</a.css>; rel=preload; as=style");
        const HTML: (&str, &str) = ("content-type", "text/html; charset=utf-8");
        let learned = learn(&["</a.css>; rel=preload; as=style"]);
        let (get, post) = (Method::GET, Method::POST);
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("public page", &get, "/p", Path, 200, vec![HTML, LINK], 3, learned.clone()),
            ("public page, one client is enough", &get, "/p", Path, 200, vec![HTML, LINK], 1, learned.clone()),
            ("public page without links", &get, "/p", Path, 200, vec![HTML], 3, Lesson::Forget),
            ("private page, counted", &get, "/p", Path, 200,
                vec![HTML, LINK, ("cache-control", "max-age=0, private")], 3, learned.clone()),
            ("private page, never with one client", &get, "/p", Path, 200,
                vec![HTML, LINK, ("cache-control", "max-age=0, private")], 1, Lesson::Forget),
            ("Symfony's no-cache, private", &get, "/p", Path, 200,
                vec![HTML, LINK, ("cache-control", "no-cache, private")], 1, Lesson::Forget),
            ("private with a field name", &get, "/p", Path, 200,
                vec![HTML, LINK, ("cache-control", "PRIVATE=\"set-cookie\"")], 1, Lesson::Forget),
            ("no-cache alone is not private", &get, "/p", Path, 200,
                vec![HTML, LINK, ("cache-control", "no-cache")], 1, learned.clone()),
            ("no-store, counted", &get, "/p", Path, 200,
                vec![HTML, LINK, ("cache-control", "no-store")], 3, learned.clone()),
            ("no-store, never with one client", &get, "/p", Path, 200,
                vec![HTML, LINK, ("cache-control", "no-store")], 1, Lesson::Forget),
            ("Vary: Cookie, counted", &get, "/p", Path, 200,
                vec![HTML, LINK, ("vary", "Accept-Encoding, Cookie")], 3, learned.clone()),
            ("Vary: Cookie, never with one client", &get, "/p", Path, 200,
                vec![HTML, LINK, ("vary", "Accept-Encoding, Cookie")], 1, Lesson::Forget),
            ("Vary: Authorization", &get, "/p", Path, 200,
                vec![HTML, LINK, ("vary", "accept-encoding"), ("vary", "AUTHORIZATION")], 1, Lesson::Forget),
            ("Vary: *", &get, "/p", Path, 200, vec![HTML, LINK, ("vary", "*")], 1, Lesson::Forget),
            ("Vary on something else is public", &get, "/p", Path, 200,
                vec![HTML, LINK, ("vary", "Accept-Encoding")], 1, learned.clone()),
            ("401", &get, "/p", Path, 401, vec![HTML, LINK], 3, Lesson::Forget),
            ("403", &get, "/p", Path, 403, vec![HTML, LINK], 3, Lesson::Forget),
            ("401 to a request with a query", &get, "/p?a=1", Path, 401, vec![HTML, LINK], 3, Lesson::Forget),
            ("query left out of the key (learn_query off)", &get, "/p?x=1", Path, 200,
                vec![HTML, LINK], 3, Lesson::Ignore),
            ("query left out, even for a link-less page", &get, "/p?x=1", Path, 200,
                vec![HTML], 3, Lesson::Ignore),
            ("query in the key (learn_query on)", &get, "/p?x=1", PathAndQuery, 200,
                vec![HTML, LINK], 3, learned.clone()),
            ("route key, no query", &get, "/r/1", Route, 200, vec![HTML, LINK], 3, learned.clone()),
            ("route key with a query", &get, "/r/1?x=1", Route, 200, vec![HTML, LINK], 3, Lesson::Ignore),
            ("non-HTML 200", &get, "/p", Path, 200,
                vec![LINK, ("content-type", "text/css")], 3, Lesson::Ignore),
            ("301 needs no content type", &get, "/p", Path, 301, vec![LINK], 3, learned.clone()),
            ("302 needs no content type", &get, "/p", Path, 302, vec![LINK], 3, learned.clone()),
            ("404", &get, "/p", Path, 404, vec![HTML, LINK], 3, Lesson::Ignore),
            ("private 404, one client", &get, "/p", Path, 404,
                vec![HTML, LINK, ("cache-control", "private")], 1, Lesson::Forget),
            ("POST", &post, "/p", Path, 200, vec![HTML, LINK], 3, Lesson::Ignore),
        ];
        for (rule, method, path, keying, status, fields, min_clients, expected) in rows {
            let store = LearnedHints::new(&HintSettings {
                learn_query: matches!(keying, PathAndQuery),
                learn_routes: match keying {
                    Route => vec!["/r/*".into()],
                    _ => Vec::new(),
                },
                ..settings()
            });
            let key = store.key("h", path);
            let got = lesson(method, &key, status, &headers(&fields), min_clients);
            assert_eq!(got, expected, "{rule}");
        }
    }

    #[test]
    fn route_patterns() {
        assert!(route_matches("/products/*", "/products/42"));
        assert!(!route_matches("/products/*", "/products/42/reviews"));
        assert!(route_matches("/products/**", "/products/42/reviews"));
        assert!(route_matches("/blog/*.html", "/blog/hello.html"));
        assert!(!route_matches("/blog/*.html", "/blog/hello.php"));
        assert!(route_matches("/**", "/"));
        assert!(!route_matches("/a", "/b"));
        // A hostile path costs linear time, not exponential.
        let long = format!("/{}", "a".repeat(100_000));
        assert!(!route_matches("/*a*a*a*b", &long));
    }

    #[test]
    fn keys_leave_the_query_out_unless_asked_and_group_routes() {
        let store = LearnedHints::new(&HintSettings {
            learn_routes: vec!["/p/*".into()],
            ..settings()
        });
        assert_eq!(store.key("h", "/x?a=1"), store.key("h", "/x?b=2"));
        assert_eq!(
            store.key("h", "/x?a=1").as_str(),
            store.key("h", "/x").as_str()
        );
        assert!(store.key("h", "/x?a=1").query_left_out());
        assert!(store.key("h", "/x?").query_left_out());
        assert!(!store.key("h", "/x").query_left_out());
        assert_eq!(store.key("h", "/p/1"), store.key("h", "/p/2"));
        assert!(!store.key("h", "/p/1").query_left_out());
        assert!(store.key("h", "/p/1?a=1").query_left_out());
        assert_ne!(store.key("h", "/x"), store.key("other", "/x"));
        let with_query = LearnedHints::new(&HintSettings {
            learn_query: true,
            learn_routes: vec!["/p/*".into()],
            ..settings()
        });
        let exact = with_query.key("h", "/x?a=1");
        assert_eq!(exact.as_str(), "h /x?a=1");
        assert!(!exact.query_left_out());
        assert_ne!(exact, with_query.key("h", "/x?a=2"));
        assert_ne!(exact.as_str(), with_query.key("h", "/x").as_str());
        // Routes key by path alone, so a query is still left out.
        assert!(with_query.key("h", "/p/1?a=1").query_left_out());
    }

    #[test]
    fn client_scopes() {
        let scope = |text: &str| client_scope(text.parse().unwrap()).to_string();
        assert_eq!(scope("192.0.2.7"), "192.0.2.7");
        assert_eq!(scope("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(scope("2001:db8:1:2::1"), "2001:db8:1:2::");
        // A dual-stack listener's view of an IPv4 client.
        assert_eq!(scope("::ffff:192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn a_link_is_hinted_once_n_distinct_clients_were_sent_it() {
        let store = with_min_clients(3);
        let key = store.key("h", "/");
        let css = "</a.css>; rel=preload";
        store.apply(key.clone(), addr("192.0.2.1"), learn(&[css]));
        store.apply(key.clone(), addr("192.0.2.2"), learn(&[css]));
        assert!(store.lookup(&key).is_none(), "N-1 clients are not enough");
        store.apply(key.clone(), addr("192.0.2.3"), learn(&[css]));
        assert_eq!(hinted(&store, &key), [css]);
    }

    #[test]
    fn one_client_counts_once_whatever_its_port_or_connection() {
        let store = with_min_clients(2);
        let key = store.key("h", "/");
        let css = "</a.css>; rel=preload";
        for port in [1000, 2000, 3000, 4000] {
            let client = SocketAddr::new("192.0.2.1".parse().unwrap(), port);
            store.apply(key.clone(), client, learn(&[css]));
        }
        assert!(store.lookup(&key).is_none());
        store.apply(key.clone(), addr("::ffff:192.0.2.1"), learn(&[css]));
        assert!(
            store.lookup(&key).is_none(),
            "IPv4-mapped is the same client"
        );
        store.apply(key.clone(), addr("192.0.2.2"), learn(&[css]));
        assert_eq!(hinted(&store, &key), [css]);
    }

    #[test]
    fn an_ipv6_client_counts_by_its_64() {
        let store = with_min_clients(2);
        let key = store.key("h", "/");
        let css = "</a.css>; rel=preload";
        for host in ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:ffff::9"] {
            store.apply(key.clone(), addr(host), learn(&[css]));
        }
        assert!(store.lookup(&key).is_none(), "one /64 is one client");
        store.apply(key.clone(), addr("2001:db8:1:3::1"), learn(&[css]));
        assert_eq!(hinted(&store, &key), [css], "another /64 is another client");
    }

    #[test]
    fn only_links_every_visitor_gets_are_hinted_from_a_private_page() {
        let store = with_min_clients(3);
        let key = store.key("h", "/account");
        let css = "</app.css>; rel=preload; as=style";
        for (i, visitor) in ["alice", "bob", "carol"].iter().enumerate() {
            let own = format!("</private/{visitor}.pdf>; rel=preload");
            let client = addr(&format!("192.0.2.{}", i + 1));
            store.apply(key.clone(), client, learn(&[css, &own]));
        }
        assert_eq!(hinted(&store, &key), [css]);
        // Alice, from the same address, again and again: still hers alone.
        for _ in 0..5 {
            let own = "</private/alice.pdf>; rel=preload";
            store.apply(key.clone(), addr("192.0.2.1"), learn(&[css, own]));
        }
        assert_eq!(hinted(&store, &key), [css]);
    }

    #[test]
    fn a_confirmed_link_the_page_stops_naming_is_dropped() {
        let store = with_min_clients(2);
        let key = store.key("h", "/");
        let (a, b) = ("</a.css>; rel=preload", "</b.js>; rel=preload");
        store.apply(key.clone(), addr("192.0.2.1"), learn(&[a, b]));
        store.apply(key.clone(), addr("192.0.2.2"), learn(&[a, b]));
        assert_eq!(hinted(&store, &key), [a, b]);
        store.apply(key.clone(), addr("192.0.2.3"), learn(&[b]));
        assert_eq!(hinted(&store, &key), [b]);
        // It must be confirmed afresh.
        store.apply(key.clone(), addr("192.0.2.4"), learn(&[a, b]));
        assert_eq!(hinted(&store, &key), [b]);
        store.apply(key.clone(), addr("192.0.2.5"), learn(&[b, a]));
        assert_eq!(
            hinted(&store, &key),
            [b, a],
            "in the latest response's order"
        );
    }

    #[test]
    fn one_client_is_enough_when_configured() {
        let store = with_min_clients(1);
        let key = store.key("h", "/");
        store.apply(
            key.clone(),
            addr("192.0.2.1"),
            learn(&["</a.css>; rel=preload"]),
        );
        assert_eq!(hinted(&store, &key), ["</a.css>; rel=preload"]);
        store.apply(
            key.clone(),
            addr("192.0.2.1"),
            learn(&["</b.css>; rel=preload"]),
        );
        assert_eq!(hinted(&store, &key), ["</b.css>; rel=preload"]);
        store.apply(key.clone(), addr("192.0.2.1"), Lesson::Ignore);
        assert!(store.lookup(&key).is_some());
        store.apply(key.clone(), addr("192.0.2.1"), Lesson::Forget);
        assert!(store.lookup(&key).is_none());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn forgetting_restarts_the_count() {
        let store = with_min_clients(2);
        let key = store.key("h", "/");
        let css = "</a.css>; rel=preload";
        store.apply(key.clone(), addr("192.0.2.1"), learn(&[css]));
        store.apply(key.clone(), addr("192.0.2.2"), Lesson::Forget);
        store.apply(key.clone(), addr("192.0.2.3"), learn(&[css]));
        assert!(store.lookup(&key).is_none());
    }

    #[test]
    fn an_entry_tracks_a_bounded_number_of_links() {
        let store = with_min_clients(3);
        let key = store.key("h", "/account");
        let css = "</app.css>; rel=preload";
        for i in 0..200u32 {
            let own = format!("</private/{i}.pdf>; rel=preload");
            let client = SocketAddr::new(IpAddr::from((0x0a00_0000 + i).to_be_bytes()), 443);
            store.apply(key.clone(), client, learn(&[css, &own]));
            let guard = store.store.lock().unwrap();
            let entry = guard.entries.peek(key.as_str()).unwrap();
            assert!(entry.confirmed.len() + entry.pending.len() <= MAX_LINKS_PER_ENTRY);
            assert!(entry.pending.iter().all(|p| p.clients.len() < 3));
        }
        assert_eq!(hinted(&store, &key), [css]);
        // A response naming more links than an entry holds teaches the first ones.
        let many: Vec<String> = (0..100)
            .map(|i| format!("</{i}.js>; rel=preload"))
            .collect();
        let store = with_min_clients(1);
        store.apply(key.clone(), addr("192.0.2.1"), Lesson::Learn(many.clone()));
        assert_eq!(hinted(&store, &key), many[..MAX_LINKS_PER_ENTRY]);
    }

    #[test]
    fn unconfirmed_links_age_out() {
        let rules = Rules {
            min_clients: 2,
            ttl: Duration::from_secs(60),
        };
        let start = Instant::now();
        let at = |secs| start + Duration::from_secs(secs);
        let mut entry = Entry::new(start);
        let (a, b) = ("</a.css>; rel=preload", "</b.css>; rel=preload");
        // Not named for longer than the TTL: dropped.
        entry.teach(vec![a.into()], 1, &rules, at(0));
        entry.teach(vec![b.into()], 2, &rules, at(61));
        let pending: Vec<&str> = entry.pending.iter().map(|p| p.link.as_str()).collect();
        assert_eq!(pending, [b], "a.css aged out");
        // Named again, but too late: the earlier client no longer counts.
        entry.teach(vec![b.into()], 3, &rules, at(200));
        assert!(entry.confirmed.is_empty());
        // Named within the TTL by another client: confirmed.
        entry.teach(vec![b.into()], 4, &rules, at(210));
        assert_eq!(*entry.confirmed, [b.to_string()]);
    }

    #[test]
    fn the_store_stays_within_its_entry_and_byte_bounds() {
        for min_clients in [1, 3] {
            let store = LearnedHints::new(&HintSettings {
                learn_max_entries: 10,
                learn_max_bytes: 2000,
                learn_min_clients: min_clients,
                ..settings()
            });
            for i in 0..1000 {
                let link = format!("</asset-{i}.css>; rel=preload; as=style");
                let key = store.key("h", &format!("/page/{i}"));
                for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
                    store.apply(key.clone(), addr(client), learn(&[&link]));
                    assert!(store.len() <= 10);
                    assert!(store.bytes() <= 2000);
                }
            }
            // The most recent pages survive.
            assert!(store.lookup(&store.key("h", "/page/999")).is_some());
            assert!(store.lookup(&store.key("h", "/page/0")).is_none());
            // An entry larger than the whole budget is not kept.
            let huge = "x".repeat(5000);
            let key = store.key("h", "/huge");
            for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
                store.apply(key.clone(), addr(client), learn(&[&huge]));
            }
            assert!(store.lookup(&key).is_none());
            assert!(store.bytes() <= 2000);
        }
    }

    #[test]
    fn unconfirmed_bookkeeping_counts_in_the_bytes() {
        let store = with_min_clients(3);
        let key = store.key("h", "/");
        let css = "</a.css>; rel=preload";
        store.apply(key.clone(), addr("192.0.2.1"), learn(&[css]));
        let one = store.bytes();
        assert!(one >= key.as_str().len() + css.len() + size_of::<u64>());
        store.apply(key.clone(), addr("192.0.2.2"), learn(&[css]));
        assert!(store.bytes() >= one);
        // Confirmed: only the key and the text remain.
        store.apply(key.clone(), addr("192.0.2.3"), learn(&[css]));
        assert_eq!(store.bytes(), key.as_str().len() + css.len());
    }

    #[test]
    fn entries_expire() {
        let store = LearnedHints::new(&HintSettings {
            learn_ttl: Duration::from_millis(1),
            learn_min_clients: 1,
            ..settings()
        });
        let key = store.key("h", "/");
        store.apply(
            key.clone(),
            addr("192.0.2.1"),
            learn(&["</a.css>; rel=preload"]),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.lookup(&key).is_none());
        assert_eq!(store.len(), 0);
    }
}
