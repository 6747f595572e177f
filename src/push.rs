//! Push policy: from the facts about one response and its `Link` lines to one
//! decision per candidate link, each with a reason.
//!
//! Pure: no I/O. The caller owns the per-connection [`Diary`] and the
//! per-response [`ResponseState`] and passes them in, so that a 103 and the
//! final response of the same request share de-duplication and limits.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::{self, Write as _};
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::link::{parse_field, resolve, serialize_field, Base, Element, Link, Param};

/// Default capacity of a [`Diary`].
pub const DEFAULT_DIARY_CAPACITY: usize = 1024;

/// What to do with plain `rel=preload` links.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PreloadMode {
    /// Push them when every rule allows it.
    Push,
    /// Only forward them as hints; push only `rel=push` links.
    HintOnly,
}

/// The push settings that [`decide`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub enabled: bool,
    pub preload: PreloadMode,
    pub max_pushes_per_response: usize,
    /// Allow pushing resources a browser fetches in CORS mode (fonts,
    /// anything with `crossorigin`, module scripts).
    pub allow_credentialed: bool,
    /// Decide and explain, but never push or record anything.
    pub dry_run: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            preload: PreloadMode::Push,
            max_pushes_per_response: 10,
            allow_credentialed: false,
            dry_run: false,
        }
    }
}

/// What the client connection can take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientPush {
    /// An HTTP/1.x client: no push at all.
    Http1,
    /// HTTP/2 with `SETTINGS_ENABLE_PUSH = 0`, or push otherwise impossible
    /// on this connection (GOAWAY, pushed parent stream...).
    Disabled,
    /// HTTP/2 with push enabled.
    Enabled {
        /// The client's `SETTINGS_MAX_CONCURRENT_STREAMS`, if it sent one.
        max_concurrent_streams: Option<u32>,
        /// Pushed streams currently open on the connection.
        pushes_in_flight: u32,
    },
}

/// The facts about the parent request and response.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub method: &'a http::Method,
    pub scheme: &'a str,
    pub authority: &'a str,
    pub path_and_query: &'a str,
    /// 103 for an early-hints response, otherwise the final status.
    pub status: u16,
    pub client: ClientPush,
}

/// What happens to one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Push it (and forward it, minus a `push` relation type).
    Push,
    /// Forward it unchanged.
    Keep,
    /// Forward it with `rel=push` turned into `rel=preload`.
    Rewrite,
    /// Remove it from the forwarded field.
    Drop,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Action::Push => "push",
            Action::Keep | Action::Rewrite => "preload",
            Action::Drop => "drop",
        }
    }
}

/// Why a link got its action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Pushed,
    NoPush,
    HintOnly,
    PushDisabled,
    ClientDisabled,
    Http1Client,
    CrossOrigin,
    NotEligibleStatus,
    NotEligibleMethod,
    Duplicate,
    Limit,
    SelfRef,
    CredentialedDestination,
    Anchor,
}

impl Reason {
    /// Stable short code, for headers, logs and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Pushed => "pushed",
            Reason::NoPush => "nopush",
            Reason::HintOnly => "hint-only",
            Reason::PushDisabled => "push-disabled",
            Reason::ClientDisabled => "client-disabled",
            Reason::Http1Client => "http1-client",
            Reason::CrossOrigin => "cross-origin",
            Reason::NotEligibleStatus => "not-eligible-status",
            Reason::NotEligibleMethod => "not-eligible-method",
            Reason::Duplicate => "duplicate",
            Reason::Limit => "limit",
            Reason::SelfRef => "self",
            Reason::CredentialedDestination => "credentialed-destination",
            Reason::Anchor => "anchor",
        }
    }

    /// Every reason, in rule order.
    pub const ALL: [Reason; 14] = [
        Reason::NoPush,
        Reason::Anchor,
        Reason::NotEligibleMethod,
        Reason::NotEligibleStatus,
        Reason::CrossOrigin,
        Reason::SelfRef,
        Reason::CredentialedDestination,
        Reason::PushDisabled,
        Reason::Http1Client,
        Reason::ClientDisabled,
        Reason::HintOnly,
        Reason::Duplicate,
        Reason::Limit,
        Reason::Pushed,
    ];
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// The decision for one link element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index of the field line in the `link_lines` passed to [`decide`].
    pub line: usize,
    /// Index of the element in that line (malformed elements count).
    pub element: usize,
    /// The target as written.
    pub target: String,
    pub action: Action,
    pub reason: Reason,
    /// The resolved origin-form `path?query`. Always set for `Push`; also set
    /// for any other decision made after the target was resolved
    /// (self, credentialed-destination, push-disabled, ..., limit, and
    /// dry-run pushes).
    pub path: Option<String>,
    /// The `as=` value, ASCII-lowercased.
    pub destination: Option<String>,
    /// A dry-run decision that would have been a push.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Requested,
    Pushed,
}

/// Per-connection memory of URLs pushed to, or requested by, the client.
///
/// A bounded FIFO of 64-bit hashes of `authority + path`: the oldest entry is
/// forgotten when a new one would exceed the capacity. A capacity of 0
/// remembers nothing. A hash collision can only suppress a push.
#[derive(Debug, Clone)]
pub struct Diary {
    capacity: usize,
    order: VecDeque<(u64, Kind)>,
    /// Per hash: number of (requested, pushed) entries in `order`.
    counts: HashMap<u64, (u32, u32)>,
}

impl Default for Diary {
    fn default() -> Self {
        Diary::new(DEFAULT_DIARY_CAPACITY)
    }
}

impl Diary {
    pub fn new(capacity: usize) -> Self {
        Diary {
            capacity,
            order: VecDeque::with_capacity(capacity.min(DEFAULT_DIARY_CAPACITY)),
            counts: HashMap::new(),
        }
    }

    /// The client requested this URL itself on this connection.
    pub fn record_requested(&mut self, authority: &str, path: &str) {
        self.record(key(authority, path), Kind::Requested);
    }

    /// This URL was pushed on this connection.
    pub fn record_pushed(&mut self, authority: &str, path: &str) {
        self.record(key(authority, path), Kind::Pushed);
    }

    /// Undo the most recent [`Diary::record_pushed`] of this URL (the push
    /// did not happen after all). Requests of the URL are kept.
    pub fn forget_pushed(&mut self, authority: &str, path: &str) {
        let hash = key(authority, path);
        let Some(pos) = self
            .order
            .iter()
            .rposition(|&(h, kind)| h == hash && kind == Kind::Pushed)
        else {
            return;
        };
        self.order.remove(pos);
        self.uncount(hash, Kind::Pushed);
    }

    /// Whether the URL was pushed or requested (and not yet forgotten).
    pub fn contains(&self, authority: &str, path: &str) -> bool {
        self.counts.contains_key(&key(authority, path))
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn record(&mut self, hash: u64, kind: Kind) {
        if self.capacity == 0 {
            return;
        }
        let counts = self.counts.entry(hash).or_insert((0, 0));
        let slot = match kind {
            Kind::Requested => &mut counts.0,
            Kind::Pushed => &mut counts.1,
        };
        if *slot > 0 {
            // Already remembered as this kind: do not let repeats evict others.
            return;
        }
        *slot += 1;
        self.order.push_back((hash, kind));
        while self.order.len() > self.capacity {
            if let Some((old, old_kind)) = self.order.pop_front() {
                self.uncount(old, old_kind);
            }
        }
    }

    fn uncount(&mut self, hash: u64, kind: Kind) {
        if let Entry::Occupied(mut entry) = self.counts.entry(hash) {
            let counts = entry.get_mut();
            match kind {
                Kind::Requested => counts.0 = counts.0.saturating_sub(1),
                Kind::Pushed => counts.1 = counts.1.saturating_sub(1),
            }
            if *counts == (0, 0) {
                entry.remove();
            }
        }
    }
}

/// SipHash with fixed keys over the lower-cased authority and the path.
fn key(authority: &str, path: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    for b in authority.bytes() {
        hasher.write_u8(b.to_ascii_lowercase());
    }
    hasher.write_u8(0xff);
    path.hash(&mut hasher);
    hasher.finish()
}

/// Per-parent-response memory, shared by the decision for a 103 and the
/// decision for the final response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseState {
    promised: HashSet<String>,
    pushes: usize,
}

impl ResponseState {
    /// Pushes decided so far for this response (minus downgrades).
    pub fn pushes(&self) -> usize {
        self.pushes
    }

    /// Whether `path` was promised for this response.
    pub fn promised(&self, path: &str) -> bool {
        self.promised.contains(path)
    }
}

#[derive(Debug, Clone)]
struct PlanLine {
    original: String,
    elements: Vec<Element>,
    /// Index into `Plan::decisions`, parallel to `elements`.
    decisions: Vec<Option<usize>>,
}

/// The parsed `Link` lines of one response plus the decisions about them.
#[derive(Debug, Clone)]
pub struct Plan {
    authority: String,
    lines: Vec<PlanLine>,
    decisions: Vec<Decision>,
}

impl Plan {
    /// One decision per considered link, in line and element order.
    pub fn decisions(&self) -> &[Decision] {
        &self.decisions
    }

    /// The decisions to push (never any in dry-run).
    pub fn pushes(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| d.action == Action::Push)
    }

    /// The parsed elements of line `line`.
    pub fn elements(&self, line: usize) -> Option<&[Element]> {
        self.lines.get(line).map(|l| l.elements.as_slice())
    }

    /// The link behind a decision.
    pub fn link(&self, line: usize, element: usize) -> Option<&Link> {
        self.lines.get(line)?.elements.get(element)?.as_link()
    }

    /// The executor could not push `(line, element)` after all: make it a
    /// `Keep` (preload) or `Rewrite` (push) with `reason`, and forget it in
    /// `diary` and `state`. Does nothing unless that decision is a `Push`.
    pub fn downgrade(
        &mut self,
        line: usize,
        element: usize,
        reason: Reason,
        diary: &mut Diary,
        state: &mut ResponseState,
    ) {
        let Some(idx) = self
            .lines
            .get(line)
            .and_then(|l| l.decisions.get(element))
            .copied()
            .flatten()
        else {
            return;
        };
        let has_push = self.link(line, element).is_some_and(|l| l.has_rel("push"));
        let Some(decision) = self.decisions.get_mut(idx) else {
            return;
        };
        if decision.action != Action::Push {
            return;
        }
        decision.action = if has_push {
            Action::Rewrite
        } else {
            Action::Keep
        };
        decision.reason = reason;
        if let Some(path) = &decision.path {
            diary.forget_pushed(&self.authority, path);
            if state.promised.remove(path) {
                state.pushes = state.pushes.saturating_sub(1);
            }
        }
    }

    /// The `Link` field lines to send to the client.
    ///
    /// Lines without a changed element are returned byte for byte. In a
    /// changed line, every element keeps its text except: a pushed link loses
    /// its `push` relation type (and disappears when no type is left); a
    /// `Rewrite` link has `push` replaced by `preload` (once); a `Drop` link
    /// disappears. Elements are then joined with `", "`. Lines left without
    /// elements are omitted.
    pub fn link_lines(&self) -> Vec<String> {
        let mut out = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            if line.elements.is_empty() {
                continue;
            }
            let edits: Vec<Edit> = line
                .elements
                .iter()
                .zip(&line.decisions)
                .map(|(element, d)| self.edit(element, *d))
                .collect();
            if edits.iter().all(|e| matches!(e, Edit::Same)) {
                out.push(line.original.clone());
                continue;
            }
            let kept: Vec<Element> = line
                .elements
                .iter()
                .zip(edits)
                .filter_map(|(element, edit)| match edit {
                    Edit::Same => Some(element.clone()),
                    Edit::Replace(link) => Some(Element::Link(link)),
                    Edit::Remove => None,
                })
                .collect();
            if !kept.is_empty() {
                out.push(serialize_field(&kept));
            }
        }
        out
    }

    fn edit(&self, element: &Element, decision: Option<usize>) -> Edit {
        let (Element::Link(link), Some(d)) =
            (element, decision.and_then(|i| self.decisions.get(i)))
        else {
            return Edit::Same;
        };
        let rels = link.rel_tokens();
        if !rels.iter().any(|r| r == "push") {
            return if d.action == Action::Drop {
                Edit::Remove
            } else {
                Edit::Same
            };
        }
        match d.action {
            Action::Keep => Edit::Same,
            Action::Drop => Edit::Remove,
            Action::Push => {
                let left: Vec<&str> = rels
                    .iter()
                    .map(String::as_str)
                    .filter(|r| *r != "push")
                    .collect();
                if left.is_empty() {
                    Edit::Remove
                } else {
                    Edit::Replace(link.with_rels(&left))
                }
            }
            Action::Rewrite => {
                let mut new: Vec<&str> = Vec::with_capacity(rels.len());
                for r in &rels {
                    let r = if r == "push" { "preload" } else { r.as_str() };
                    if !new.contains(&r) {
                        new.push(r);
                    }
                }
                Edit::Replace(link.with_rels(&new))
            }
        }
    }

    /// The `x-push-decision` value: one `<target>; verb; reason=code` entry
    /// per decision, joined with `", "`. Non-ASCII bytes of the target are
    /// percent-encoded.
    pub fn explain(&self) -> String {
        self.explain_limited(usize::MAX)
    }

    /// Like [`Plan::explain`], but stops before the value would exceed
    /// `max_len` bytes and then ends with an `omitted=N` entry (which may
    /// itself go slightly past `max_len`).
    pub fn explain_limited(&self, max_len: usize) -> String {
        let mut out = String::new();
        let mut entry = String::new();
        for (i, d) in self.decisions.iter().enumerate() {
            entry.clear();
            entry.push('<');
            for b in d.target.bytes() {
                if b.is_ascii_graphic() {
                    entry.push(char::from(b));
                } else {
                    let _ = write!(entry, "%{b:02X}");
                }
            }
            let _ = write!(entry, ">; {}; reason={}", d.action.verb(), d.reason.code());
            if d.dry_run {
                entry.push_str("; dry-run");
            }
            let sep = if out.is_empty() { 0 } else { 2 };
            if out.len() + sep + entry.len() > max_len {
                if !out.is_empty() {
                    out.push_str(", ");
                }
                let _ = write!(out, "omitted={}", self.decisions.len() - i);
                break;
            }
            if sep > 0 {
                out.push_str(", ");
            }
            out.push_str(&entry);
        }
        out
    }
}

enum Edit {
    Same,
    Replace(Link),
    Remove,
}

/// Decide, for every `preload` / `push` / `modulepreload` link in
/// `link_lines`, whether to push it. Pushes are recorded in `diary` and
/// `state` (unless in dry-run).
pub fn decide(
    policy: &Policy,
    facts: &Facts,
    link_lines: &[&str],
    diary: &mut Diary,
    state: &mut ResponseState,
) -> Plan {
    let base = Base {
        scheme: facts.scheme,
        authority: facts.authority,
        path_and_query: facts.path_and_query,
    };
    let own_path = resolve("", &base).unwrap_or_else(|_| facts.path_and_query.to_owned());
    let method_ok = *facts.method == http::Method::GET || *facts.method == http::Method::HEAD;
    let status_ok = match facts.status {
        103 => true,
        304 => false,
        s => (200..400).contains(&s),
    };
    let mut decisions = Vec::new();
    let mut lines = Vec::with_capacity(link_lines.len());
    let mut seen: HashSet<String> = HashSet::new();
    let mut pushed_now: usize = 0;

    for (line_idx, line) in link_lines.iter().enumerate() {
        let elements = parse_field(line);
        let mut line_decisions = vec![None; elements.len()];
        for (element_idx, element) in elements.iter().enumerate() {
            let Element::Link(link) = element else {
                continue;
            };
            let rels = link.rel_tokens();
            let has_push = rels.iter().any(|r| r == "push");
            let has_module = rels.iter().any(|r| r == "modulepreload");
            if !has_push && !has_module && !rels.iter().any(|r| r == "preload") {
                continue;
            }
            let destination = link
                .param("as")
                .and_then(Param::value_str)
                .map(str::to_ascii_lowercase);
            let mut path = None;
            let reason = 'rules: {
                if link.has_param("nopush") {
                    break 'rules Reason::NoPush;
                }
                if link
                    .param("anchor")
                    .and_then(Param::value_str)
                    .is_some_and(|a| !a.is_empty())
                {
                    break 'rules Reason::Anchor;
                }
                if !method_ok {
                    break 'rules Reason::NotEligibleMethod;
                }
                if !status_ok {
                    break 'rules Reason::NotEligibleStatus;
                }
                let Ok(resolved) = resolve(link.target(), &base) else {
                    break 'rules Reason::CrossOrigin;
                };
                let resolved = path.insert(resolved);
                if *resolved == own_path {
                    break 'rules Reason::SelfRef;
                }
                let credentialed = destination.as_deref() == Some("font")
                    || link.has_param("crossorigin")
                    || has_module;
                if credentialed && !policy.allow_credentialed {
                    break 'rules Reason::CredentialedDestination;
                }
                if !policy.enabled {
                    break 'rules Reason::PushDisabled;
                }
                let (max_streams, in_flight) = match facts.client {
                    ClientPush::Http1 => break 'rules Reason::Http1Client,
                    ClientPush::Disabled => break 'rules Reason::ClientDisabled,
                    ClientPush::Enabled {
                        max_concurrent_streams,
                        pushes_in_flight,
                    } => (max_concurrent_streams, pushes_in_flight),
                };
                if !has_push && policy.preload == PreloadMode::HintOnly {
                    break 'rules Reason::HintOnly;
                }
                if state.promised(resolved)
                    || !seen.insert(resolved.clone())
                    || diary.contains(facts.authority, resolved)
                {
                    break 'rules Reason::Duplicate;
                }
                let response_pushes = state.pushes() + if policy.dry_run { pushed_now } else { 0 };
                let stream_limit = max_streams
                    .is_some_and(|n| u64::from(in_flight) + pushed_now as u64 >= u64::from(n));
                if response_pushes >= policy.max_pushes_per_response || stream_limit {
                    break 'rules Reason::Limit;
                }
                pushed_now += 1;
                if !policy.dry_run {
                    diary.record_pushed(facts.authority, resolved);
                    state.promised.insert(resolved.clone());
                    state.pushes += 1;
                }
                Reason::Pushed
            };
            let pushed = reason == Reason::Pushed;
            let action = if pushed && !policy.dry_run {
                Action::Push
            } else if has_push {
                Action::Rewrite
            } else {
                Action::Keep
            };
            line_decisions[element_idx] = Some(decisions.len());
            decisions.push(Decision {
                line: line_idx,
                element: element_idx,
                target: link.target().to_owned(),
                action,
                reason,
                path,
                destination,
                dry_run: pushed && policy.dry_run,
            });
        }
        lines.push(PlanLine {
            original: (*line).to_owned(),
            elements,
            decisions: line_decisions,
        });
    }
    Plan {
        authority: facts.authority.to_owned(),
        lines,
        decisions,
    }
}

/// The `Accept` header for a pushed request, from the link's `as=` value
/// (values browsers send for that destination).
pub fn accept_for_destination(dest: Option<&str>) -> &'static str {
    let Some(dest) = dest else {
        return "*/*";
    };
    let is = |name: &str| dest.eq_ignore_ascii_case(name);
    if is("style") {
        "text/css,*/*;q=0.1"
    } else if is("image") {
        "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
    } else if is("document") || is("iframe") || is("frame") {
        "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    } else if is("json") {
        "application/json,*/*;q=0.5"
    } else {
        // script, font, fetch, audio, video, track, worker, manifest, ...
        "*/*"
    }
}
