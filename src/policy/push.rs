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

use crate::policy::link::{parse_field, serialize_field, Base, Element, Link, Param, Resolver};

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
    /// The authority is one this proxy answers for (see
    /// [`crate::tls::ServerNames`]); pushes go out under no other.
    pub authority_served: bool,
    pub client: ClientPush,
    /// Whether the client is known to hold a path already (its cache
    /// digest says so); `None` when cache digests are off.
    pub cached: Option<CachedCheck<'a>>,
}

/// Asks whether the client already holds a same-origin path.
#[derive(Clone, Copy)]
pub struct CachedCheck<'a>(pub &'a (dyn Fn(&str) -> bool + Sync));

impl fmt::Debug for CachedCheck<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CachedCheck")
    }
}

/// What happens to one link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Push it (and forward it, minus a `push` relation type).
    Push,
    /// Already promised for this same response (by a 103, or an earlier
    /// element naming the same URL): forwarded as a
    /// pushed link is, and not promised again.
    AlreadyPushed,
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
            Action::Push | Action::AlreadyPushed => "push",
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
    /// The client's cache digest says it holds the resource already.
    Cached,
    /// The request's authority is not a name this proxy serves: a push
    /// under it would plant content for another site.
    ForeignAuthority,
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
            Reason::Cached => "cached",
            Reason::ForeignAuthority => "foreign-authority",
        }
    }

    /// This reason's position in [`Reason::ALL`].
    pub fn index(self) -> usize {
        Reason::ALL.iter().position(|r| *r == self).unwrap_or(0)
    }

    /// Every reason, in rule order.
    pub const ALL: [Reason; 16] = [
        Reason::NoPush,
        Reason::Anchor,
        Reason::NotEligibleMethod,
        Reason::NotEligibleStatus,
        Reason::CrossOrigin,
        Reason::ForeignAuthority,
        Reason::SelfRef,
        Reason::CredentialedDestination,
        Reason::PushDisabled,
        Reason::Http1Client,
        Reason::ClientDisabled,
        Reason::HintOnly,
        Reason::Cached,
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
    counts: KeyMap<(u32, u32)>,
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
            // Grown on demand: most connections never push, and an idle
            // connection should cost as little memory as possible.
            order: VecDeque::new(),
            counts: KeyMap::default(),
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
    // Authorities reach here lower-cased already; lower-case only if not.
    if authority.bytes().any(|b| b.is_ascii_uppercase()) {
        hasher.write(authority.to_ascii_lowercase().as_bytes());
    } else {
        hasher.write(authority.as_bytes());
    }
    hasher.write_u8(0xff);
    path.hash(&mut hasher);
    hasher.finish()
}

/// Hashes a diary key, which is a SipHash value already, by passing it on:
/// hashing it again would only cost time. A table of at most `capacity`
/// entries bounds what crafted keys could do to it.
#[derive(Debug, Clone, Copy, Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type KeyMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<KeyHasher>>;

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
        self.lines_for_client()
    }

    /// Whether [`Plan::link_lines`] differs at all from the lines decided
    /// on (when it does not, the response's fields can stay as they are).
    pub fn changes_links(&self) -> bool {
        self.lines.iter().any(|line| {
            line.elements.is_empty()
                || line
                    .elements
                    .iter()
                    .zip(&line.decisions)
                    .any(|(element, d)| !matches!(self.edit(element, *d), Edit::Same))
        })
    }

    fn lines_for_client(&self) -> Vec<String> {
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

    /// The `Link` lines of a 103 for this plan: each element as the client
    /// gets it (as in [`Plan::link_lines`]), leaving out links whose target
    /// was promised (the client has it coming) and elements already in
    /// `hinted`, which collects the ones returned. Lines left empty are
    /// omitted. Works from the parsed elements: nothing is parsed again.
    pub fn hint_lines(&self, hinted: &mut HashSet<String>) -> Vec<String> {
        let mut out = Vec::new();
        for line in &self.lines {
            let mut fresh: Vec<Element> = Vec::new();
            for (element, decision) in line.elements.iter().zip(&line.decisions) {
                let promised = decision
                    .and_then(|i| self.decisions.get(i))
                    .is_some_and(|d| matches!(d.action, Action::Push | Action::AlreadyPushed));
                if promised {
                    continue;
                }
                let sent = match self.edit(element, *decision) {
                    Edit::Same => element.clone(),
                    Edit::Replace(link) => Element::Link(link),
                    Edit::Remove => continue,
                };
                if hinted.insert(sent.raw().to_owned()) {
                    fresh.push(sent);
                }
            }
            if !fresh.is_empty() {
                out.push(serialize_field(&fresh));
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
        if !link.has_rel("push") {
            return if d.action == Action::Drop {
                Edit::Remove
            } else {
                Edit::Same
            };
        }
        let rels = link.rel_tokens();
        match d.action {
            Action::Keep => Edit::Same,
            Action::Drop => Edit::Remove,
            Action::Push | Action::AlreadyPushed => {
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
    let resolver = Resolver::new(&base);
    let own_path = resolver
        .resolve("")
        .unwrap_or_else(|_| facts.path_and_query.to_owned());
    let method_ok = *facts.method == http::Method::GET || *facts.method == http::Method::HEAD;
    let status_ok = match facts.status {
        103 => true,
        304 => false,
        s => (200..400).contains(&s),
    };
    let mut decisions = Vec::new();
    let mut lines = Vec::with_capacity(link_lines.len());
    // URLs decided on in this call; a handful, so a list beats a hash set.
    let mut seen: Vec<String> = Vec::new();
    let mut pushed_now: usize = 0;

    for (line_idx, line) in link_lines.iter().enumerate() {
        let elements = parse_field(line);
        let mut line_decisions = vec![None; elements.len()];
        for (element_idx, element) in elements.iter().enumerate() {
            let Element::Link(link) = element else {
                continue;
            };
            let has_push = link.has_rel("push");
            let has_module = link.has_rel("modulepreload");
            if !has_push && !has_module && !link.has_rel("preload") {
                continue;
            }
            let destination = link
                .param("as")
                .and_then(Param::value_str)
                .map(str::to_ascii_lowercase);
            let mut path = None;
            let mut already_pushed = false;
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
                let Ok(resolved) = resolver.resolve(link.target()) else {
                    break 'rules Reason::CrossOrigin;
                };
                if !facts.authority_served {
                    break 'rules Reason::ForeignAuthority;
                }
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
                if facts.cached.is_some_and(|cached| (cached.0)(resolved)) {
                    break 'rules Reason::Cached;
                }
                if state.promised(resolved) {
                    already_pushed = true;
                    break 'rules Reason::Duplicate;
                }
                let repeated = seen.contains(resolved);
                if !repeated {
                    seen.push(resolved.clone());
                }
                if repeated || diary.contains(facts.authority, resolved) {
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
            } else if reason == Reason::Cached && has_push {
                // The client holds it: neither a push nor a preload.
                Action::Drop
            } else if already_pushed {
                Action::AlreadyPushed
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

/// Why a pushed response is cancelled (its stream reset) instead of sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancel {
    /// An error, or a 304 answering a request the client never made.
    Status,
    /// `Set-Cookie`: one visitor's state must not ride on a push.
    SetsCookie,
    /// `Vary: Cookie`, `Authorization` or `*`: the response depends on
    /// credentials that the pushed request, by design, did not carry.
    VariesOnCredentials,
    /// `Cache-Control: private` or `no-store`, with `push.cancel_uncacheable`.
    Uncacheable,
}

impl Cancel {
    /// Stable short text, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Cancel::Status => "origin status not pushable",
            Cancel::SetsCookie => "origin response sets a cookie",
            Cancel::VariesOnCredentials => "origin response varies on credentials",
            Cancel::Uncacheable => "origin response is private or no-store",
        }
    }
}

/// Whether the origin's response to a promised request may be pushed.
///
/// A browser hands a pushed response to the page that caused it even when
/// the response may not be cached (RFC 9113 §8.4), so `private` and
/// `no-store` pushes are sent unless `cancel_uncacheable` says otherwise:
/// many legacy apps mark everything `no-store`. What is never pushed is a
/// response that carries or depends on one visitor's credentials.
pub fn check_pushed_response(
    status: u16,
    headers: &http::HeaderMap,
    cancel_uncacheable: bool,
) -> Result<(), Cancel> {
    if status >= 400 || status == 304 {
        return Err(Cancel::Status);
    }
    if headers.contains_key(http::header::SET_COOKIE) {
        return Err(Cancel::SetsCookie);
    }
    let has_token = |name: http::header::HeaderName, tokens: &[&str]| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',').any(|t| {
                    tokens
                        .iter()
                        .any(|token| t.trim().eq_ignore_ascii_case(token))
                })
            })
        })
    };
    if has_token(http::header::VARY, &["cookie", "authorization", "*"]) {
        return Err(Cancel::VariesOnCredentials);
    }
    if cancel_uncacheable && has_token(http::header::CACHE_CONTROL, &["private", "no-store"]) {
        return Err(Cancel::Uncacheable);
    }
    Ok(())
}

/// Request fields copied from the parent into every pushed request: what a
/// browser would send for a subresource, never credentials.
const COPIED_TO_PUSH: [http::header::HeaderName; 4] = [
    http::header::USER_AGENT,
    http::header::ACCEPT_ENCODING,
    http::header::ACCEPT_LANGUAGE,
    http::header::CACHE_CONTROL,
];

/// The header fields of a pushed request: the fixed safe set and the
/// configured `forward` names copied from the parent request, and an
/// `Accept` for the link's destination.
pub fn promised_headers(
    parent: &http::HeaderMap,
    forward: &[http::header::HeaderName],
    destination: Option<&str>,
) -> http::HeaderMap {
    let mut headers = http::HeaderMap::with_capacity(COPIED_TO_PUSH.len() + forward.len() + 1);
    for name in COPIED_TO_PUSH.iter().chain(forward) {
        for value in parent.get_all(name) {
            headers.append(name.clone(), value.clone());
        }
    }
    headers.insert(
        http::header::ACCEPT,
        http::HeaderValue::from_static(accept_for_destination(destination)),
    );
    headers
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
    } else {
        // script, font, fetch, audio, video, track, worker, manifest, ...
        "*/*"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;
    use std::time::{Duration, Instant};

    static GET: Method = Method::GET;
    static HEAD: Method = Method::HEAD;
    static POST: Method = Method::POST;

    const ENABLED: ClientPush = ClientPush::Enabled {
        max_concurrent_streams: Some(100),
        pushes_in_flight: 0,
    };

    fn facts() -> Facts<'static> {
        Facts {
            method: &GET,
            scheme: "https",
            authority: "example.com",
            path_and_query: "/index.html",
            authority_served: true,
            status: 200,
            client: ENABLED,
            cached: None,
        }
    }

    fn run(policy: &Policy, facts: &Facts, lines: &[&str]) -> Plan {
        decide(
            policy,
            facts,
            lines,
            &mut Diary::default(),
            &mut ResponseState::default(),
        )
    }

    fn outcome(plan: &Plan) -> Vec<(Action, Reason)> {
        plan.decisions()
            .iter()
            .map(|d| (d.action, d.reason))
            .collect()
    }

    struct Row {
        name: &'static str,
        policy: fn(&mut Policy),
        facts: fn(&mut Facts<'static>),
        prep: fn(&mut Diary, &mut ResponseState),
        line: &'static str,
        want: &'static [(Action, Reason)],
    }

    fn p_none(_: &mut Policy) {}
    fn f_none(_: &mut Facts<'static>) {}
    fn prep_none(_: &mut Diary, _: &mut ResponseState) {}

    use Action::{AlreadyPushed, Drop, Keep, Push, Rewrite};
    use Reason::*;

    #[rustfmt::skip]
    fn rows() -> Vec<Row> {
        let r = |name, line, want| Row { name, policy: p_none, facts: f_none, prep: prep_none, line, want };
        vec![
            // which links are considered at all
            r("not considered", "</a.css>; rel=stylesheet, <https://cdn.example.com>; rel=preconnect, </b>; rel=preloadX, </c>; rel=preloa, </d>, bad", &[]),
            r("considered kinds", "</a.css>; rel=preload, </b.js>; rel=push, </c.js>; rel=\"PreLoad Push\"", &[(Push, Pushed), (Push, Pushed), (Push, Pushed)]),
            r("only first rel counts", "</a.css>; rel=next; rel=preload", &[]),
            // 1. nopush
            r("nopush preload", "</a.css>; rel=preload; nopush", &[(Keep, NoPush)]),
            r("nopush push", "</a.css>; rel=push; NoPush", &[(Rewrite, NoPush)]),
            r("nopush beats anchor", "</a.css>; rel=preload; anchor=\"#x\"; nopush", &[(Keep, NoPush)]),
            // 2. anchor
            r("anchor", "</a.css>; rel=preload; anchor=\"/other\"", &[(Keep, Anchor)]),
            r("anchor on push", "</a.css>; rel=push; anchor=\"#frag\"", &[(Rewrite, Anchor)]),
            r("empty anchor ignored", "</a.css>; rel=preload; anchor=\"\"", &[(Push, Pushed)]),
            Row { name: "anchor beats method", facts: |f| f.method = &POST, ..r("", "</a.css>; rel=preload; anchor=\"/x\"", &[(Keep, Anchor)]) },
            // 3. method
            Row { name: "POST parent", facts: |f| f.method = &POST, ..r("", "</a.css>; rel=preload", &[(Keep, NotEligibleMethod)]) },
            Row { name: "HEAD parent", facts: |f| f.method = &HEAD, ..r("", "</a.css>; rel=preload", &[(Push, Pushed)]) },
            Row { name: "method beats status", facts: |f| { f.method = &POST; f.status = 404 }, ..r("", "</a.css>; rel=push", &[(Rewrite, NotEligibleMethod)]) },
            // 4. status
            Row { name: "404", facts: |f| f.status = 404, ..r("", "</a.css>; rel=preload", &[(Keep, NotEligibleStatus)]) },
            Row { name: "304", facts: |f| f.status = 304, ..r("", "</a.css>; rel=preload", &[(Keep, NotEligibleStatus)]) },
            Row { name: "500", facts: |f| f.status = 500, ..r("", "</a.css>; rel=push", &[(Rewrite, NotEligibleStatus)]) },
            Row { name: "100", facts: |f| f.status = 100, ..r("", "</a.css>; rel=preload", &[(Keep, NotEligibleStatus)]) },
            Row { name: "103", facts: |f| f.status = 103, ..r("", "</a.css>; rel=preload", &[(Push, Pushed)]) },
            Row { name: "204", facts: |f| f.status = 204, ..r("", "</a.css>; rel=preload", &[(Push, Pushed)]) },
            Row { name: "302", facts: |f| f.status = 302, ..r("", "</a.css>; rel=preload", &[(Push, Pushed)]) },
            Row { name: "status beats cross-origin", facts: |f| f.status = 404, ..r("", "<https://cdn.example.com/a.css>; rel=preload", &[(Keep, NotEligibleStatus)]) },
            // 5. resolution
            r("cross-origin host", "<https://cdn.example.com/a.css>; rel=preload", &[(Keep, CrossOrigin)]),
            r("cross-origin scheme", "<http://example.com/a.css>; rel=push", &[(Rewrite, CrossOrigin)]),
            r("network-path other host", "<//evil.com/a.css>; rel=preload", &[(Keep, CrossOrigin)]),
            r("javascript", "<javascript:alert(1)>; rel=preload", &[(Keep, CrossOrigin)]),
            r("unsafe path", "</a/%2e%2e/b.css>; rel=preload, </a%2Fb.css>; rel=preload", &[(Keep, CrossOrigin), (Keep, CrossOrigin)]),
            r("same origin absolute", "<https://EXAMPLE.com:443/a.css>; rel=preload", &[(Push, Pushed)]),
            // 5b. an authority the proxy does not serve
            Row { name: "foreign authority", facts: |f| f.authority_served = false, ..r("", "</a.css>; rel=preload, </b.css>; rel=push", &[(Keep, ForeignAuthority), (Rewrite, ForeignAuthority)]) },
            Row { name: "cross-origin beats foreign authority", facts: |f| f.authority_served = false, ..r("", "<https://cdn.example.com/a.css>; rel=preload", &[(Keep, CrossOrigin)]) },
            // 6. self
            r("self", "</index.html>; rel=preload", &[(Keep, SelfRef)]),
            r("self empty", "<>; rel=push", &[(Rewrite, SelfRef)]),
            r("self fragment", "<#top>; rel=preload", &[(Keep, SelfRef)]),
            r("self dot", "<./index.html#x>; rel=preload", &[(Keep, SelfRef)]),
            r("other query is not self", "</index.html?page=2>; rel=preload", &[(Push, Pushed)]),
            r("self beats credentialed", "</index.html>; rel=preload; as=font", &[(Keep, SelfRef)]),
            // 7. credentialed destinations
            r("font", "</f.woff2>; rel=preload; as=FONT", &[(Keep, CredentialedDestination)]),
            r("crossorigin", "</a.js>; rel=preload; as=script; crossorigin", &[(Keep, CredentialedDestination)]),
            r("crossorigin on push", "</a.js>; rel=push; crossorigin=anonymous", &[(Rewrite, CredentialedDestination)]),
            r("modulepreload", "</m.js>; rel=modulepreload", &[(Keep, CredentialedDestination)]),
            Row { name: "credentialed allowed", policy: |p| p.allow_credentialed = true, ..r("", "</f.woff2>; rel=preload; as=font; crossorigin, </m.js>; rel=modulepreload", &[(Push, Pushed), (Push, Pushed)]) },
            Row { name: "credentialed beats disabled", facts: |f| f.client = ClientPush::Http1, ..r("", "</f.woff2>; rel=preload; as=font", &[(Keep, CredentialedDestination)]) },
            // 8. push disabled by config or client
            Row { name: "push disabled", policy: |p| p.enabled = false, ..r("", "</a.css>; rel=preload, </b.css>; rel=push", &[(Keep, PushDisabled), (Rewrite, PushDisabled)]) },
            Row { name: "disabled beats http1", policy: |p| p.enabled = false, facts: |f| f.client = ClientPush::Http1, ..r("", "</a.css>; rel=preload", &[(Keep, PushDisabled)]) },
            Row { name: "http1", facts: |f| f.client = ClientPush::Http1, ..r("", "</a.css>; rel=preload, </b.css>; rel=push", &[(Keep, Http1Client), (Rewrite, Http1Client)]) },
            Row { name: "client disabled", facts: |f| f.client = ClientPush::Disabled, ..r("", "</a.css>; rel=preload, </b.css>; rel=push", &[(Keep, ClientDisabled), (Rewrite, ClientDisabled)]) },
            Row { name: "client beats hint-only", policy: |p| p.preload = PreloadMode::HintOnly, facts: |f| f.client = ClientPush::Disabled, ..r("", "</a.css>; rel=preload", &[(Keep, ClientDisabled)]) },
            // 9. hint-only
            Row { name: "hint-only preload", policy: |p| p.preload = PreloadMode::HintOnly, ..r("", "</a.css>; rel=preload", &[(Keep, HintOnly)]) },
            Row { name: "hint-only push", policy: |p| p.preload = PreloadMode::HintOnly, ..r("", "</a.css>; rel=push, </b.css>; rel=\"preload push\"", &[(Push, Pushed), (Push, Pushed)]) },
            Row { name: "hint-only modulepreload", policy: |p| { p.preload = PreloadMode::HintOnly; p.allow_credentialed = true }, ..r("", "</m.js>; rel=modulepreload", &[(Keep, HintOnly)]) },
            // 10. the client's cache digest
            Row { name: "cached preload kept", facts: |f| f.cached = Some(CachedCheck(&|p: &str| p == "/a.css")), ..r("", "</a.css>; rel=preload, </b.css>; rel=preload", &[(Keep, Cached), (Push, Pushed)]) },
            Row { name: "cached push dropped", facts: |f| f.cached = Some(CachedCheck(&|p: &str| p == "/a.css")), ..r("", "</a.css>; rel=push", &[(Drop, Cached)]) },
            Row { name: "cache digest does not matter to clients without push", facts: |f| { f.cached = Some(CachedCheck(&|_: &str| true)); f.client = ClientPush::Disabled }, ..r("", "</a.css>; rel=push", &[(Rewrite, ClientDisabled)]) },
            // 10. duplicates
            r("duplicate in line", "</a.css>; rel=preload, <a.css>; rel=push, </a.css#x>; rel=preload", &[(Push, Pushed), (AlreadyPushed, Duplicate), (AlreadyPushed, Duplicate)]),
            Row { name: "duplicate in diary (requested)", prep: |d, _| d.record_requested("example.com", "/a.css"), ..r("", "</a.css>; rel=preload", &[(Keep, Duplicate)]) },
            Row { name: "diary authority is case-insensitive", prep: |d, _| d.record_pushed("EXAMPLE.COM", "/a.css"), ..r("", "</a.css>; rel=push", &[(Rewrite, Duplicate)]) },
            Row { name: "diary of another authority", prep: |d, _| d.record_pushed("other.example", "/a.css"), ..r("", "</a.css>; rel=preload", &[(Push, Pushed)]) },
            Row { name: "already promised", prep: |_, s| { s.promised.insert("/a.css".into()); s.pushes = 1 }, ..r("", "</a.css>; rel=preload, </b.css>; rel=preload", &[(AlreadyPushed, Duplicate), (Push, Pushed)]) },
            Row { name: "duplicate beats limit", policy: |p| p.max_pushes_per_response = 1, ..r("", "</a.css>; rel=preload, </a.css>; rel=preload, </b.css>; rel=preload", &[(Push, Pushed), (AlreadyPushed, Duplicate), (Keep, Limit)]) },
            // 11. limits
            Row { name: "max pushes 0", policy: |p| p.max_pushes_per_response = 0, ..r("", "</a.css>; rel=preload, </b.css>; rel=push", &[(Keep, Limit), (Rewrite, Limit)]) },
            Row { name: "max pushes 2", policy: |p| p.max_pushes_per_response = 2, ..r("", "</a.css>; rel=preload, </b.css>; rel=preload, </c.css>; rel=preload", &[(Push, Pushed), (Push, Pushed), (Keep, Limit)]) },
            Row { name: "earlier pushes count", policy: |p| p.max_pushes_per_response = 2, prep: |_, s| s.pushes = 2, ..r("", "</a.css>; rel=preload", &[(Keep, Limit)]) },
            Row { name: "client max streams 0", facts: |f| f.client = ClientPush::Enabled { max_concurrent_streams: Some(0), pushes_in_flight: 0 }, ..r("", "</a.css>; rel=preload", &[(Keep, Limit)]) },
            Row { name: "client streams in flight", facts: |f| f.client = ClientPush::Enabled { max_concurrent_streams: Some(3), pushes_in_flight: 2 }, ..r("", "</a.css>; rel=preload, </b.css>; rel=push", &[(Push, Pushed), (Rewrite, Limit)]) },
            Row { name: "client in flight over max", facts: |f| f.client = ClientPush::Enabled { max_concurrent_streams: Some(3), pushes_in_flight: u32::MAX }, ..r("", "</a.css>; rel=preload", &[(Keep, Limit)]) },
            Row { name: "client no stream limit", facts: |f| f.client = ClientPush::Enabled { max_concurrent_streams: None, pushes_in_flight: 1000 }, ..r("", "</a.css>; rel=preload", &[(Push, Pushed)]) },
            // 12. pushed
            r("pushed", "</a.css>; rel=preload; as=style", &[(Push, Pushed)]),
            r("malformed neighbours", "</a.css; rel=preload, </b.css>; rel=preload", &[]),
            r("malformed before", "bad, </b.css>; rel=preload", &[(Push, Pushed)]),
        ]
    }

    #[test]
    fn rule_table() {
        let rows = rows();
        let mut covered = HashSet::new();
        for row in &rows {
            let mut policy = Policy::default();
            (row.policy)(&mut policy);
            let mut f = facts();
            (row.facts)(&mut f);
            let mut diary = Diary::default();
            let mut state = ResponseState::default();
            (row.prep)(&mut diary, &mut state);
            let plan = decide(&policy, &f, &[row.line], &mut diary, &mut state);
            assert_eq!(outcome(&plan), row.want, "row {:?}", row.name);
            covered.extend(row.want.iter().map(|(_, reason)| *reason));
            for d in plan.decisions() {
                assert_eq!(d.action == Push, d.path.is_some() && d.reason == Pushed);
                if d.action == Push {
                    assert!(diary.contains("example.com", d.path.as_deref().unwrap_or_default()));
                }
            }
        }
        for reason in Reason::ALL {
            assert!(covered.contains(&reason), "no row for {reason}");
        }
    }

    #[test]
    fn reason_codes() {
        let codes: Vec<&str> = Reason::ALL.iter().map(Reason::code).collect();
        assert_eq!(
            codes,
            [
                "nopush",
                "anchor",
                "not-eligible-method",
                "not-eligible-status",
                "cross-origin",
                "foreign-authority",
                "self",
                "credentialed-destination",
                "push-disabled",
                "http1-client",
                "client-disabled",
                "hint-only",
                "cached",
                "duplicate",
                "limit",
                "pushed",
            ]
        );
        assert_eq!(Reason::SelfRef.to_string(), "self");
    }

    #[test]
    fn decision_fields() {
        let plan = run(
            &Policy::default(),
            &facts(),
            &[
                "bad, </css/a.css?v=1#x>; rel=preload; as=Style",
                "</f.woff2>; rel=preload; as=font",
            ],
        );
        let d = plan.decisions();
        assert_eq!(d.len(), 2);
        assert_eq!((d[0].line, d[0].element), (0, 1));
        assert_eq!(d[0].target, "/css/a.css?v=1#x");
        assert_eq!(d[0].path.as_deref(), Some("/css/a.css?v=1"));
        assert_eq!(d[0].destination.as_deref(), Some("style"));
        assert!(!d[0].dry_run);
        assert_eq!((d[1].line, d[1].element), (1, 0));
        assert_eq!(d[1].reason, CredentialedDestination);
        assert_eq!(d[1].path.as_deref(), Some("/f.woff2"));
        assert_eq!(plan.pushes().count(), 1);
        assert_eq!(plan.link(0, 1).map(Link::target), Some("/css/a.css?v=1#x"));
        assert_eq!(plan.elements(0).map(<[Element]>::len), Some(2));
    }

    fn lines_for(policy: &Policy, f: &Facts, lines: &[&str]) -> (Vec<String>, Plan) {
        let plan = run(policy, f, lines);
        (plan.link_lines(), plan)
    }

    #[test]
    fn link_lines_after_push() {
        let p = Policy::default();
        // preload pushed: unchanged
        let line = "</a.css>;rel=preload;as=style ,  </b.png>; rel=preload; as=image";
        assert_eq!(lines_for(&p, &facts(), &[line]).0, vec![line]);
        // push pushed: removed, the line vanishes
        assert_eq!(
            lines_for(&p, &facts(), &["</a.css>; rel=push; as=style"]).0,
            Vec::<String>::new()
        );
        // push pushed next to other links: only the pushed one goes
        assert_eq!(
            lines_for(
                &p,
                &facts(),
                &["</a.css>; rel=push; as=style,</b.css>;rel=stylesheet, bad;;"]
            )
            .0,
            vec!["</b.css>;rel=stylesheet, bad;;"]
        );
        // preload + push pushed: becomes preload
        assert_eq!(
            lines_for(
                &p,
                &facts(),
                &["</a.css>; rel=\"preload push\"; as=style; type=\"text/css\""]
            )
            .0,
            vec!["</a.css>; rel=preload; as=style; type=\"text/css\""]
        );
        // other relation types survive
        assert_eq!(
            lines_for(&p, &facts(), &["</a.css>; REL=\"push stylesheet\""]).0,
            vec!["</a.css>; REL=stylesheet"]
        );
    }

    #[test]
    fn link_lines_when_not_pushed() {
        let p = Policy::default();
        let mut disabled = facts();
        disabled.client = ClientPush::Disabled;
        let mut h1 = facts();
        h1.client = ClientPush::Http1;
        // push not pushed: rewritten to preload, other params byte for byte
        let line = "</a.css>;rel=push ;  as = style;type=\"text/css\"; title=\"a, \\\"b\\\"\"; x-y";
        let want =
            "</a.css>; rel=preload; as = style; type=\"text/css\"; title=\"a, \\\"b\\\"\"; x-y";
        assert_eq!(lines_for(&p, &disabled, &[line]).0, vec![want]);
        assert_eq!(lines_for(&p, &h1, &[line]).0, vec![want]);
        let mut off = p.clone();
        off.enabled = false;
        assert_eq!(lines_for(&off, &facts(), &[line]).0, vec![want]);
        // push + preload not pushed: one preload
        assert_eq!(
            lines_for(&p, &h1, &["</a.css>; rel=\"push preload\"; as=style"]).0,
            vec!["</a.css>; rel=preload; as=style"]
        );
        // preload lines are untouched on HTTP/1.1
        let pre = "</a.css>; rel=preload; as=style, </b.js>; rel=preload; as=script";
        assert_eq!(lines_for(&p, &h1, &[pre]).0, vec![pre]);
        // nopush
        assert_eq!(
            lines_for(
                &p,
                &facts(),
                &[
                    "</a.css>; rel=preload; nopush",
                    "</b.css>; rel=push; nopush"
                ]
            )
            .0,
            vec![
                "</a.css>; rel=preload; nopush",
                "</b.css>; rel=preload; nopush"
            ]
        );
        // cross-origin
        let (out, plan) = lines_for(
            &p,
            &facts(),
            &["<https://cdn.example.com/a.css>; rel=push; as=style; crossorigin"],
        );
        assert_eq!(outcome(&plan), [(Rewrite, CrossOrigin)]);
        assert_eq!(
            out,
            vec!["<https://cdn.example.com/a.css>; rel=preload; as=style; crossorigin"]
        );
        // credentialed font: kept as written
        let font = "</f.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin";
        let (out, plan) = lines_for(&p, &facts(), &[font]);
        assert_eq!(outcome(&plan), [(Keep, CredentialedDestination)]);
        assert_eq!(out, vec![font]);
        // empty and malformed-only lines
        assert_eq!(
            lines_for(&p, &facts(), &["", " , ", "</x; rel=push"]).0,
            vec!["</x; rel=push"]
        );
    }

    #[test]
    fn eleven_links_with_a_limit_of_ten() {
        let p = Policy::default();
        let push_line = (0..11)
            .map(|i| format!("</s{i}.css>; rel=push; as=style"))
            .collect::<Vec<_>>()
            .join(", ");
        let (out, plan) = lines_for(&p, &facts(), &[&push_line]);
        assert_eq!(plan.pushes().count(), 10);
        assert_eq!(plan.decisions()[10].reason, Limit);
        assert_eq!(out, vec!["</s10.css>; rel=preload; as=style"]);

        let preload_line = (0..11)
            .map(|i| format!("</s{i}.css>; rel=preload; as=style"))
            .collect::<Vec<_>>()
            .join(", ");
        let (out, plan) = lines_for(&p, &facts(), &[&preload_line]);
        assert_eq!(plan.pushes().count(), 10);
        assert_eq!(out, vec![preload_line.clone()]);
    }

    #[test]
    fn duplicates_across_lines() {
        let (out, plan) = lines_for(
            &Policy::default(),
            &facts(),
            &[
                "</a.css>; rel=push",
                "</b.css>; rel=preload",
                "</a.css>; rel=push; as=style",
            ],
        );
        assert_eq!(
            outcome(&plan),
            [(Push, Pushed), (Push, Pushed), (AlreadyPushed, Duplicate)]
        );
        // The repeat was pushed with the first one: it goes like a pushed link.
        assert_eq!(out, vec!["</b.css>; rel=preload"]);
    }

    #[test]
    fn early_hints_then_final_response() {
        let p = Policy {
            max_pushes_per_response: 3,
            ..Policy::default()
        };
        let mut diary = Diary::default();
        let mut state = ResponseState::default();
        let mut hint = facts();
        hint.status = 103;
        let first = decide(
            &p,
            &hint,
            &["</a.css>; rel=preload, </b.js>; rel=push"],
            &mut diary,
            &mut state,
        );
        assert_eq!(outcome(&first), [(Push, Pushed), (Push, Pushed)]);
        assert_eq!(first.link_lines(), vec!["</a.css>; rel=preload"]);
        assert_eq!(state.pushes(), 2);
        // Same state, even with a fresh diary: already promised.
        let mut other_diary = Diary::default();
        let final_plan = decide(
            &p,
            &facts(),
            &["</a.css>; rel=preload, </b.js>; rel=push, </c.png>; rel=preload, </d.png>; rel=preload"],
            &mut other_diary,
            &mut state,
        );
        assert_eq!(
            outcome(&final_plan),
            [
                (AlreadyPushed, Duplicate),
                (AlreadyPushed, Duplicate),
                (Push, Pushed),
                (Keep, Limit)
            ]
        );
        assert_eq!(state.pushes(), 3);
        assert!(state.promised("/c.png"));
        assert_eq!(
            final_plan.link_lines(),
            vec!["</a.css>; rel=preload, </c.png>; rel=preload, </d.png>; rel=preload"]
        );
        // A later response on the same connection: the diary knows them.
        let next = decide(
            &p,
            &facts(),
            &["</a.css>; rel=preload"],
            &mut diary,
            &mut ResponseState::default(),
        );
        assert_eq!(outcome(&next), [(Keep, Duplicate)]);
    }

    #[test]
    fn diary_is_a_bounded_fifo() {
        let mut diary = Diary::new(2);
        assert!(diary.is_empty());
        diary.record_pushed("h", "/a");
        diary.record_pushed("h", "/b");
        diary.record_pushed("h", "/c");
        assert_eq!(diary.len(), 2);
        assert!(!diary.contains("h", "/a"));
        assert!(diary.contains("h", "/b") && diary.contains("H", "/c"));
        // repeats of the same kind do not evict others
        diary.record_pushed("h", "/c");
        diary.record_pushed("H", "/b");
        assert_eq!(diary.len(), 2);
        assert!(diary.contains("h", "/b") && diary.contains("h", "/c"));
        // a new entry evicts the oldest
        diary.record_requested("h", "/d");
        assert!(!diary.contains("h", "/b"));
        assert!(diary.contains("h", "/c") && diary.contains("h", "/d"));
        diary.record_requested("h", "/d");
        assert_eq!(diary.len(), 2);
        assert!(diary.contains("h", "/c"));
        // forget_pushed removes pushes only
        diary.forget_pushed("h", "/d");
        assert!(diary.contains("h", "/d"), "the request is still known");
        diary.forget_pushed("h", "/c");
        assert!(!diary.contains("h", "/c"));
        diary.forget_pushed("h", "/zzz");
        assert_eq!(diary.len(), 1);
        let mut both = Diary::new(4);
        both.record_requested("h", "/x");
        both.record_pushed("h", "/x");
        assert_eq!(both.len(), 2);
        both.forget_pushed("h", "/x");
        assert!(both.contains("h", "/x"));
        assert_eq!(both.len(), 1);

        let mut none = Diary::new(0);
        none.record_pushed("h", "/a");
        assert!(!none.contains("h", "/a") && none.is_empty());
        assert_eq!(Diary::default().capacity(), DEFAULT_DIARY_CAPACITY);
    }

    #[test]
    fn diary_eviction_lets_a_url_be_pushed_again() {
        let p = Policy::default();
        let mut diary = Diary::new(2);
        let line = ["</a.css>; rel=preload, </b.css>; rel=preload, </c.css>; rel=preload"];
        let first = decide(
            &p,
            &facts(),
            &line,
            &mut diary,
            &mut ResponseState::default(),
        );
        assert_eq!(first.pushes().count(), 3);
        assert_eq!(diary.len(), 2);
        assert!(!diary.contains("example.com", "/a.css"));
        let line = ["</b.css>; rel=preload, </c.css>; rel=preload, </a.css>; rel=preload"];
        let second = decide(
            &p,
            &facts(),
            &line,
            &mut diary,
            &mut ResponseState::default(),
        );
        assert_eq!(
            outcome(&second),
            [(Keep, Duplicate), (Keep, Duplicate), (Push, Pushed)]
        );
        // pushing /a again evicted /b
        assert!(!diary.contains("example.com", "/b.css"));
        assert!(diary.contains("example.com", "/c.css") && diary.contains("example.com", "/a.css"));
    }

    #[test]
    fn downgrade_turns_a_push_back_into_a_hint() {
        let p = Policy::default();
        let mut diary = Diary::default();
        let mut state = ResponseState::default();
        let mut plan = decide(
            &p,
            &facts(),
            &[
                "</a.css>; rel=preload; as=style, </b.js>; rel=push; as=script",
                "</c.png>; rel=push",
            ],
            &mut diary,
            &mut state,
        );
        assert_eq!(plan.pushes().count(), 3);
        assert_eq!(state.pushes(), 3);
        plan.downgrade(0, 0, ClientDisabled, &mut diary, &mut state);
        plan.downgrade(0, 1, Limit, &mut diary, &mut state);
        // no-ops: not a push any more, out of range, malformed/undecided
        plan.downgrade(0, 1, Limit, &mut diary, &mut state);
        plan.downgrade(7, 0, Limit, &mut diary, &mut state);
        plan.downgrade(1, 9, Limit, &mut diary, &mut state);
        assert_eq!(
            outcome(&plan),
            [(Keep, ClientDisabled), (Rewrite, Limit), (Push, Pushed)]
        );
        assert_eq!(state.pushes(), 1);
        assert!(!state.promised("/a.css") && !state.promised("/b.js") && state.promised("/c.png"));
        assert!(
            !diary.contains("example.com", "/a.css") && !diary.contains("example.com", "/b.js")
        );
        assert!(diary.contains("example.com", "/c.png"));
        assert_eq!(
            plan.link_lines(),
            vec!["</a.css>; rel=preload; as=style, </b.js>; rel=preload; as=script"]
        );
        assert_eq!(
            plan.explain(),
            "</a.css>; preload; reason=client-disabled, </b.js>; preload; reason=limit, </c.png>; push; reason=pushed"
        );
        // The downgraded URLs can be pushed again later.
        let again = decide(
            &p,
            &facts(),
            &["</a.css>; rel=preload"],
            &mut diary,
            &mut state,
        );
        assert_eq!(outcome(&again), [(Push, Pushed)]);
    }

    #[test]
    fn dry_run_decides_but_never_pushes() {
        let p = Policy {
            dry_run: true,
            max_pushes_per_response: 2,
            ..Policy::default()
        };
        let mut diary = Diary::default();
        let mut state = ResponseState::default();
        let plan = decide(
            &p,
            &facts(),
            &["</a.css>; rel=preload, </b.js>; rel=push; as=script, </a.css>; rel=preload, </c.png>; rel=preload, </f.woff2>; rel=preload; as=font"],
            &mut diary,
            &mut state,
        );
        assert_eq!(
            outcome(&plan),
            [
                (Keep, Pushed),
                (Rewrite, Pushed),
                (Keep, Duplicate),
                (Keep, Limit),
                (Keep, CredentialedDestination)
            ]
        );
        let flags: Vec<bool> = plan.decisions().iter().map(|d| d.dry_run).collect();
        assert_eq!(flags, [true, true, false, false, false]);
        assert_eq!(plan.pushes().count(), 0);
        assert!(diary.is_empty());
        assert_eq!(state, ResponseState::default());
        assert_eq!(
            plan.link_lines(),
            vec!["</a.css>; rel=preload, </b.js>; rel=preload; as=script, </a.css>; rel=preload, </c.png>; rel=preload, </f.woff2>; rel=preload; as=font"]
        );
        assert_eq!(
            plan.explain(),
            "</a.css>; preload; reason=pushed; dry-run, </b.js>; preload; reason=pushed; dry-run, \
             </a.css>; preload; reason=duplicate, </c.png>; preload; reason=limit, \
             </f.woff2>; preload; reason=credentialed-destination"
        );
    }

    #[test]
    fn explain_output() {
        let plan = run(
            &Policy::default(),
            &facts(),
            &[
                "</a.css>; rel=preload; as=style, </f.woff2>; rel=preload; as=font; crossorigin",
                "</b.js>; rel=push; nopush, </caf\u{e9}.css>; rel=preload; nopush",
            ],
        );
        assert_eq!(
            plan.explain(),
            "</a.css>; push; reason=pushed, </f.woff2>; preload; reason=credentialed-destination, \
             </b.js>; preload; reason=nopush, </caf%C3%A9.css>; preload; reason=nopush"
        );
        assert_eq!(
            plan.explain_limited(80),
            "</a.css>; push; reason=pushed, omitted=3"
        );
        assert_eq!(plan.explain_limited(0), "omitted=4");
        assert_eq!(
            run(&Policy::default(), &facts(), &["</x>; rel=next"]).explain(),
            ""
        );
    }

    #[test]
    fn ten_thousand_links_in_one_line() {
        let p = Policy::default();
        let line = (0..10_000)
            .map(|i| format!("</a{i}.css>; rel=preload; as=style"))
            .collect::<Vec<_>>()
            .join(", ");
        let start = Instant::now();
        let mut diary = Diary::default();
        let mut state = ResponseState::default();
        let plan = decide(&p, &facts(), &[&line], &mut diary, &mut state);
        let out = plan.link_lines();
        let explain = plan.explain_limited(4096);
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "took {:?}",
            start.elapsed()
        );
        assert_eq!(plan.decisions().len(), 10_000);
        assert_eq!(plan.pushes().count(), 10);
        assert_eq!(
            plan.decisions()
                .iter()
                .filter(|d| d.reason == Limit)
                .count(),
            9_990
        );
        assert_eq!(diary.len(), 10);
        assert_eq!(state.pushes(), 10);
        assert_eq!(out, vec![line]);
        let shown = explain.matches("reason=").count();
        assert!(shown > 10 && explain.len() < 4096 + 16);
        assert!(explain.ends_with(&format!(", omitted={}", 10_000 - shown)));

        let same = vec!["</a.css>; rel=push"; 10_000].join(",");
        let plan = run(&p, &facts(), &[&same]);
        assert_eq!(plan.pushes().count(), 1);
        // Every repeat was pushed with the first: the whole line goes.
        assert!(plan.link_lines().is_empty());
    }

    #[test]
    fn accept_headers() {
        assert_eq!(accept_for_destination(Some("style")), "text/css,*/*;q=0.1");
        assert_eq!(accept_for_destination(Some("script")), "*/*");
        assert_eq!(
            accept_for_destination(Some("image")),
            "image/avif,image/webp,image/apng,image/*,*/*;q=0.8"
        );
        assert_eq!(accept_for_destination(Some("font")), "*/*");
        assert_eq!(accept_for_destination(Some("fetch")), "*/*");
        assert_eq!(
            accept_for_destination(Some("Document")),
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
        );
        for d in ["audio", "video", "track", "worker", "manifest", "unknown"] {
            assert_eq!(accept_for_destination(Some(d)), "*/*");
        }
        assert_eq!(accept_for_destination(None), "*/*");
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        fn line() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("</a.css>; rel=preload".to_owned()),
                Just("</b.js>; rel=push; as=script".to_owned()),
                Just("<c.png>; rel=\"preload push\"".to_owned()),
                Just("</f.woff2>; rel=preload; as=font".to_owned()),
                Just("<https://x.example/a>; rel=push".to_owned()),
                Just("</a.css>; rel=push; nopush".to_owned()),
                Just("; ".to_owned()),
                Just(", ".to_owned()),
                Just("\"".to_owned()),
                Just("<".to_owned()),
                Just(">".to_owned()),
                "[ -~]{0,8}",
            ];
            prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(500))]

            #[test]
            fn decide_is_total_and_bounded(
                lines in prop::collection::vec(line(), 0..4),
                max in 0usize..4,
                dry_run: bool,
                status in 100u16..600,
            ) {
                let p = Policy { max_pushes_per_response: max, dry_run, ..Policy::default() };
                let mut f = facts();
                f.status = status;
                let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
                let mut diary = Diary::new(3);
                let mut state = ResponseState::default();
                let mut plan = decide(&p, &f, &refs, &mut diary, &mut state);
                prop_assert!(plan.pushes().count() <= max);
                let out = plan.link_lines();
                for l in &out {
                    // no pushed rel=push survives, and the output parses cleanly again
                    let again = parse_field(l);
                    prop_assert!(!again.is_empty());
                }
                let _ = plan.explain();
                let pushed: Vec<(usize, usize)> = plan.pushes().map(|d| (d.line, d.element)).collect();
                for (l, e) in pushed {
                    plan.downgrade(l, e, Limit, &mut diary, &mut state);
                }
                prop_assert_eq!(state.pushes(), 0);
                prop_assert_eq!(plan.pushes().count(), 0);
                let _ = plan.link_lines();
            }
        }
    }

    #[test]
    fn pushed_responses_are_cancelled_only_for_credentials_unless_configured() {
        type Row = (
            u16,
            &'static [(&'static str, &'static str)],
            bool,
            Result<(), Cancel>,
        );
        let table: &[Row] = &[
            (200, &[], false, Ok(())),
            (200, &[("cache-control", "no-store")], false, Ok(())),
            (
                200,
                &[("cache-control", "private, max-age=0")],
                false,
                Ok(()),
            ),
            (
                200,
                &[("cache-control", "no-cache, private")],
                false,
                Ok(()),
            ),
            (
                200,
                &[("cache-control", "no-store")],
                true,
                Err(Cancel::Uncacheable),
            ),
            (
                200,
                &[("cache-control", "max-age=60, Private")],
                true,
                Err(Cancel::Uncacheable),
            ),
            (200, &[("cache-control", "max-age=60")], true, Ok(())),
            (
                200,
                &[("set-cookie", "a=b")],
                false,
                Err(Cancel::SetsCookie),
            ),
            (
                200,
                &[("vary", "Accept-Encoding, Cookie")],
                false,
                Err(Cancel::VariesOnCredentials),
            ),
            (
                200,
                &[("vary", "authorization")],
                false,
                Err(Cancel::VariesOnCredentials),
            ),
            (
                200,
                &[("vary", "*")],
                false,
                Err(Cancel::VariesOnCredentials),
            ),
            (200, &[("vary", "accept-encoding")], false, Ok(())),
            (204, &[], false, Ok(())),
            (301, &[], false, Ok(())),
            (304, &[], false, Err(Cancel::Status)),
            (404, &[], false, Err(Cancel::Status)),
            (500, &[], false, Err(Cancel::Status)),
        ];
        for (status, fields, cancel_uncacheable, want) in table {
            let mut headers = http::HeaderMap::new();
            for (name, value) in *fields {
                headers.append(
                    http::header::HeaderName::from_static(name),
                    http::HeaderValue::from_static(value),
                );
            }
            assert_eq!(
                check_pushed_response(*status, &headers, *cancel_uncacheable),
                *want,
                "{status} {fields:?} cancel_uncacheable={cancel_uncacheable}"
            );
        }
    }

    #[test]
    fn nothing_is_pushed_under_an_authority_the_proxy_does_not_serve() {
        let mut facts = facts();
        facts.authority_served = false;
        let plan = decide(
            &Policy::default(),
            &facts,
            &[
                "</a.css>; rel=preload; as=style",
                "</b.js>; rel=push; as=script",
            ],
            &mut Diary::default(),
            &mut ResponseState::default(),
        );
        let got: Vec<(Action, Reason)> = plan
            .decisions()
            .iter()
            .map(|d| (d.action, d.reason))
            .collect();
        assert_eq!(
            got,
            vec![
                (Action::Keep, Reason::ForeignAuthority),
                (Action::Rewrite, Reason::ForeignAuthority)
            ]
        );
        assert_eq!(plan.link_lines()[1], "</b.js>; rel=preload; as=script");
    }
}
