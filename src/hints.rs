//! 103 Early Hints: which requests get hints, which links are worth
//! learning from a response, and the bounded store of learned hints.
//!
//! Learning: the preload-type `Link` entries of a final 200/301/302 HTML
//! response to a GET are remembered per page (authority + path, or a route
//! pattern). On the next navigation to that page, the frontend hints or
//! pushes them while the origin is still working on the response. Whatever
//! the final response says then replaces the entry; a page that stops
//! sending links, turns private, or answers 401/403 is forgotten.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap};
use http::Method;
use lru::LruCache;

use crate::config::HintSettings;
use crate::link::{parse_field, Element};

/// Relation types a learned hint keeps.
const HINT_RELS: [&str; 4] = ["preload", "push", "modulepreload", "preconnect"];

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

/// What the store should do with a final response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lesson {
    /// Remember these links for the page (replacing what was there).
    Learn(Vec<String>),
    /// Forget the page: it stopped sending links, or must never be hinted.
    Forget,
    /// Not a response to learn from; leave the entry as it is.
    Ignore,
}

/// Decide what a final response teaches about its page.
pub fn lesson(method: &Method, status: u16, headers: &HeaderMap) -> Lesson {
    if *method != Method::GET {
        return Lesson::Ignore;
    }
    let cache_control = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .any(|t| t == "private" || t == "no-store");
    // A hint must never leak what sits behind a login, nor what the origin
    // says is private to one user.
    if status == 401 || status == 403 || cache_control {
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

struct Entry {
    links: Arc<[String]>,
    bytes: usize,
    learned: Instant,
}

struct Store {
    entries: LruCache<String, Entry>,
    bytes: usize,
}

/// Learned hints, bounded by entry count, total bytes and age.
pub struct LearnedHints {
    store: Mutex<Store>,
    max_entries: usize,
    max_bytes: usize,
    ttl: Duration,
    with_query: bool,
    routes: Vec<String>,
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
            ttl: settings.learn_ttl,
            with_query: settings.learn_query,
            routes: settings.learn_routes.clone(),
        }
    }

    /// The store key for a request: the authority plus the matching route
    /// pattern, or else the path (with the query only when configured).
    pub fn key(&self, authority: &str, path_and_query: &str) -> String {
        let (path, query) = match path_and_query.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (path_and_query, None),
        };
        if let Some(route) = self.routes.iter().find(|r| route_matches(r, path)) {
            return format!("{authority} route {route}");
        }
        match query {
            Some(query) if self.with_query => format!("{authority} {path}?{query}"),
            _ => format!("{authority} {path}"),
        }
    }

    /// The links learned for `key`, if any and still fresh.
    pub fn lookup(&self, key: &str) -> Option<Arc<[String]>> {
        let mut store = self.store.lock().ok()?;
        let fresh = store
            .entries
            .get(key)
            .map(|e| e.learned.elapsed() <= self.ttl)?;
        if !fresh {
            store.remove(key);
            return None;
        }
        store.entries.get(key).map(|e| e.links.clone())
    }

    /// Apply what a final response taught.
    pub fn apply(&self, key: String, lesson: Lesson) {
        let Ok(mut store) = self.store.lock() else {
            return;
        };
        match lesson {
            Lesson::Ignore => {}
            Lesson::Forget => store.remove(&key),
            Lesson::Learn(links) => {
                let bytes = key.len() + links.iter().map(String::len).sum::<usize>();
                if bytes > self.max_bytes {
                    store.remove(&key);
                    return;
                }
                let unchanged = store.entries.peek(&key).is_some_and(|e| *e.links == *links);
                if unchanged {
                    // Refresh recency and age, keep the allocation.
                    if let Some(entry) = store.entries.get_mut(&key) {
                        entry.learned = Instant::now();
                    }
                    return;
                }
                store.remove(&key);
                store.bytes += bytes;
                store.entries.put(
                    key,
                    Entry {
                        links: links.into(),
                        bytes,
                        learned: Instant::now(),
                    },
                );
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

    /// Bytes held now (keys plus link text).
    pub fn bytes(&self) -> usize {
        self.store.lock().map(|s| s.bytes).unwrap_or(0)
    }
}

impl Store {
    fn remove(&mut self, key: &str) {
        if let Some(entry) = self.entries.pop(key) {
            self.bytes -= entry.bytes;
        }
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

    #[test]
    fn lessons() {
        let html = |extra: &[(&str, &str)]| {
            let mut all = vec![("content-type", "text/html; charset=utf-8")];
            all.extend_from_slice(extra);
            headers(&all)
        };
        let link = ("link", "</a.css>; rel=preload; as=style");
        let get = Method::GET;
        let learned = Lesson::Learn(vec!["</a.css>; rel=preload; as=style".into()]);
        assert_eq!(lesson(&get, 200, &html(&[link])), learned);
        assert_eq!(lesson(&get, 302, &headers(&[link])), learned);
        assert_eq!(lesson(&get, 200, &html(&[])), Lesson::Forget);
        assert_eq!(lesson(&get, 401, &html(&[link])), Lesson::Forget);
        assert_eq!(lesson(&get, 403, &html(&[link])), Lesson::Forget);
        assert_eq!(
            lesson(
                &get,
                200,
                &html(&[link, ("cache-control", "max-age=0, private")])
            ),
            Lesson::Forget
        );
        assert_eq!(
            lesson(&get, 200, &html(&[link, ("cache-control", "no-store")])),
            Lesson::Forget
        );
        assert_eq!(lesson(&get, 404, &html(&[link])), Lesson::Ignore);
        assert_eq!(
            lesson(&get, 200, &headers(&[link, ("content-type", "text/css")])),
            Lesson::Ignore
        );
        assert_eq!(lesson(&Method::POST, 200, &html(&[link])), Lesson::Ignore);
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
    fn keys_ignore_the_query_unless_asked_and_group_routes() {
        let store = LearnedHints::new(&HintSettings {
            learn_routes: vec!["/p/*".into()],
            ..settings()
        });
        assert_eq!(store.key("h", "/x?a=1"), store.key("h", "/x?b=2"));
        assert_eq!(store.key("h", "/p/1"), store.key("h", "/p/2"));
        assert_ne!(store.key("h", "/x"), store.key("other", "/x"));
        let with_query = LearnedHints::new(&HintSettings {
            learn_query: true,
            ..settings()
        });
        assert_ne!(with_query.key("h", "/x?a=1"), with_query.key("h", "/x?b=2"));
    }

    #[test]
    fn learn_replace_forget() {
        let store = LearnedHints::new(&settings());
        let key = store.key("h", "/");
        store.apply(
            key.clone(),
            Lesson::Learn(vec!["</a.css>; rel=preload".into()]),
        );
        assert_eq!(
            &*store.lookup(&key).unwrap(),
            ["</a.css>; rel=preload".to_string()]
        );
        store.apply(
            key.clone(),
            Lesson::Learn(vec!["</b.css>; rel=preload".into()]),
        );
        assert_eq!(
            &*store.lookup(&key).unwrap(),
            ["</b.css>; rel=preload".to_string()]
        );
        store.apply(key.clone(), Lesson::Ignore);
        assert!(store.lookup(&key).is_some());
        store.apply(key.clone(), Lesson::Forget);
        assert!(store.lookup(&key).is_none());
        assert_eq!(store.bytes(), 0);
    }

    #[test]
    fn the_store_stays_within_its_entry_and_byte_bounds() {
        let store = LearnedHints::new(&HintSettings {
            learn_max_entries: 10,
            learn_max_bytes: 2000,
            ..settings()
        });
        for i in 0..1000 {
            let link = format!("</asset-{i}.css>; rel=preload; as=style");
            store.apply(
                store.key("h", &format!("/page/{i}")),
                Lesson::Learn(vec![link]),
            );
            assert!(store.len() <= 10);
            assert!(store.bytes() <= 2000);
        }
        // The most recent pages survive.
        assert!(store.lookup(&store.key("h", "/page/999")).is_some());
        assert!(store.lookup(&store.key("h", "/page/0")).is_none());
        // An entry larger than the whole budget is not kept.
        let huge = vec!["x".repeat(5000)];
        store.apply(store.key("h", "/huge"), Lesson::Learn(huge));
        assert!(store.lookup(&store.key("h", "/huge")).is_none());
        assert!(store.bytes() <= 2000);
    }

    #[test]
    fn entries_expire() {
        let store = LearnedHints::new(&HintSettings {
            learn_ttl: Duration::from_millis(1),
            ..settings()
        });
        let key = store.key("h", "/");
        store.apply(
            key.clone(),
            Lesson::Learn(vec!["</a.css>; rel=preload".into()]),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.lookup(&key).is_none());
        assert_eq!(store.len(), 0);
    }
}
