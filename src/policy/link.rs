//! `Link` header field parsing and serialisation (RFC 8288), and resolution
//! of link targets against the request URL (RFC 3986 §5).
//!
//! The parser is tolerant in the sense that one bad element never spoils the
//! rest of the line: every comma-separated element becomes either a
//! [`Link`] or an [`Element::Malformed`] that keeps its exact source text, so
//! a line can always be forwarded as it was received.
//!
//! Splitting rules (shared by the splitter and the element parser, which is
//! what makes parse → serialise → parse stable):
//! * a `<` that is the first non-whitespace byte of an element opens the
//!   target, which runs to the first `>`; nothing inside it is special;
//! * outside the target, `"` opens a quoted string that runs to the next
//!   unescaped `"` (`\` escapes the following character);
//! * a `,` outside both ends the element;
//! * an unterminated target or quoted string swallows the rest of the line.

use std::fmt;
use std::ops::Range;

/// Why one element of a `Link` field line could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum LinkError {
    /// The element does not start with `<`.
    #[error("link element does not start with '<'")]
    MissingOpenAngle,
    /// The `<` of the target has no matching `>`.
    #[error("link target has no closing '>'")]
    UnterminatedTarget,
    /// The target contains a character that cannot appear in a URI reference
    /// (whitespace, `<` or `"`).
    #[error("link target contains a character not allowed in a URI reference")]
    InvalidTarget,
    /// A quoted string has no closing `"`.
    #[error("quoted string has no closing '\"'")]
    UnterminatedQuote,
    /// A parameter has a value but no name (`; =x`).
    #[error("link parameter has an empty name")]
    EmptyParamName,
    /// A parameter name starts with a character that is not a token character.
    #[error("link parameter name is not a token")]
    InvalidParamName,
    /// A parameter has `=` but no value (`; rel=`).
    #[error("link parameter has '=' but no value")]
    MissingParamValue,
    /// An unquoted parameter value contains `"`, `\` or `,`.
    #[error("unquoted link parameter value contains a forbidden character")]
    InvalidParamValue,
    /// Something other than `;` follows the target or a parameter.
    #[error("expected ';' between link parameters")]
    ExpectedSemicolon,
    /// A control character (other than horizontal tab) appears in the element.
    #[error("link element contains a control character")]
    ControlCharacter,
}

/// A parameter value, as it was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ParamValue {
    /// An unquoted value, exactly as written.
    Token(String),
    /// A quoted-string value, with the quotes removed and escapes resolved.
    Quoted(String),
}

impl ParamValue {
    /// The value text (unescaped for quoted strings).
    pub fn as_str(&self) -> &str {
        match self {
            ParamValue::Token(s) | ParamValue::Quoted(s) => s,
        }
    }
}

/// One `; name[=value]` link parameter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Param {
    /// The name as written (compare case-insensitively).
    pub name: String,
    /// `None` for a parameter without `=` (`nopush`, `crossorigin`).
    pub value: Option<ParamValue>,
}

impl Param {
    /// The value text, if the parameter has one.
    pub fn value_str(&self) -> Option<&str> {
        self.value.as_ref().map(ParamValue::as_str)
    }

    /// Whether the parameter is named `name` (ASCII case-insensitive).
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// One parsed link-value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Link {
    target: String,
    params: Vec<Param>,
    /// Exact source text, trimmed of OWS. For a link built by
    /// [`Link::with_rels`] this is its serialisation.
    raw: String,
    /// Length of the `<target>` prefix of `raw`.
    target_len: usize,
    /// Source span of each parameter inside `raw`, parallel to `params`.
    spans: Vec<Range<usize>>,
}

impl Link {
    /// The URI reference between `<` and `>`, exactly as written.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// All parameters, in source order, duplicates included.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The first parameter called `name` (ASCII case-insensitive).
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.is(name))
    }

    /// Whether a parameter called `name` is present (ASCII case-insensitive).
    pub fn has_param(&self, name: &str) -> bool {
        self.param(name).is_some()
    }

    /// The relation types of the first `rel` parameter, ASCII-lowercased.
    /// Later `rel` parameters are ignored (RFC 8288 §3.3).
    pub fn rel_tokens(&self) -> Vec<String> {
        self.param("rel")
            .and_then(Param::value_str)
            .map(|v| {
                v.split([' ', '\t'])
                    .filter(|t| !t.is_empty())
                    .map(str::to_ascii_lowercase)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether `rel` is one of the relation types (ASCII case-insensitive).
    pub fn has_rel(&self, rel: &str) -> bool {
        self.param("rel")
            .and_then(Param::value_str)
            .is_some_and(|v| {
                v.split([' ', '\t'])
                    .any(|t| !t.is_empty() && t.eq_ignore_ascii_case(rel))
            })
    }

    /// The exact source text, trimmed of surrounding whitespace.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// A copy whose first `rel` parameter is replaced by `rels` joined with a
    /// space (a token when there is one valid token, quoted otherwise).
    ///
    /// The target and every other parameter keep their exact source text and
    /// order; the `rel` parameter keeps the case of its name. With no `rel`
    /// parameter, one is appended. With an empty `rels`, the first `rel`
    /// parameter is removed. Empty relation types and ones containing
    /// control characters are skipped.
    pub fn with_rels(&self, rels: &[&str]) -> Link {
        let rels: Vec<&str> = rels
            .iter()
            .copied()
            .filter(|r| !r.is_empty() && !r.bytes().any(is_ctl))
            .collect();
        let mut out = String::with_capacity(self.raw.len() + 16);
        out.push_str(&self.raw[..self.target_len]);
        let mut replaced = false;
        for (param, span) in self.params.iter().zip(&self.spans) {
            if !replaced && param.is("rel") {
                replaced = true;
                if !rels.is_empty() {
                    out.push_str("; ");
                    out.push_str(&param.name);
                    out.push('=');
                    push_rel_value(&mut out, &rels);
                }
            } else {
                out.push_str("; ");
                out.push_str(self.raw.get(span.clone()).unwrap_or_default());
            }
        }
        if !replaced && !rels.is_empty() {
            out.push_str("; rel=");
            push_rel_value(&mut out, &rels);
        }
        parse_element(&out).unwrap_or_else(|_| self.clone())
    }
}

impl fmt::Display for Link {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// One comma-separated element of a `Link` field line.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Element {
    /// A well-formed link-value.
    Link(Link),
    /// An element that could not be parsed, with its exact source text
    /// (trimmed of OWS).
    Malformed { raw: String, error: LinkError },
}

impl Element {
    /// The element's source text (or serialisation for a modified link).
    pub fn raw(&self) -> &str {
        match self {
            Element::Link(link) => link.raw(),
            Element::Malformed { raw, .. } => raw,
        }
    }

    /// The link, if the element is well-formed.
    pub fn as_link(&self) -> Option<&Link> {
        match self {
            Element::Link(link) => Some(link),
            Element::Malformed { .. } => None,
        }
    }
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.raw())
    }
}

/// Parse one field line (one `Link:` header value) into its elements, in
/// order. Empty elements (`, ,`) are skipped.
pub fn parse_field(value: &str) -> Vec<Element> {
    split_field(value)
        .into_iter()
        .map(|range| {
            let raw = &value[range];
            match parse_element(raw) {
                Ok(link) => Element::Link(link),
                Err(error) => Element::Malformed {
                    raw: raw.to_owned(),
                    error,
                },
            }
        })
        .collect()
}

/// Serialise a line back: links via `Display`, malformed elements via their
/// raw text, joined with `", "`.
pub fn serialize_field(elements: &[Element]) -> String {
    let mut out = String::new();
    for (i, element) in elements.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(element.raw());
    }
    out
}

/// Byte ranges of the non-empty elements of a field line, trimmed of OWS.
fn split_field(value: &str) -> Vec<Range<usize>> {
    let b = value.as_bytes();
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    let mut at_start = true;
    while i < b.len() {
        let c = b[i];
        if at_start {
            if is_ows(c) {
                i += 1;
                continue;
            }
            at_start = false;
            if c == b'<' {
                match find_byte(b, i + 1, b'>') {
                    Some(gt) => {
                        i = gt + 1;
                        continue;
                    }
                    None => {
                        i = b.len();
                        break;
                    }
                }
            }
        }
        match c {
            b',' => {
                push_trimmed(&mut out, b, start, i);
                start = i + 1;
                at_start = true;
                i += 1;
            }
            b'"' => match end_of_quoted(b, i) {
                Some(end) => i = end,
                None => {
                    i = b.len();
                    break;
                }
            },
            _ => i += 1,
        }
    }
    push_trimmed(&mut out, b, start, i.min(b.len()));
    out
}

fn push_trimmed(out: &mut Vec<Range<usize>>, b: &[u8], mut start: usize, mut end: usize) {
    while start < end && is_ows(b[start]) {
        start += 1;
    }
    while end > start && is_ows(b[end - 1]) {
        end -= 1;
    }
    if start < end {
        out.push(start..end);
    }
}

/// Given `b[open] == b'"'`, the index just past the closing quote.
fn end_of_quoted(b: &[u8], open: usize) -> Option<usize> {
    let mut j = open + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

fn find_byte(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == needle)
        .map(|p| p + from)
}

fn is_ows(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Control characters other than horizontal tab.
fn is_ctl(c: u8) -> bool {
    (c < 0x20 && c != b'\t') || c == 0x7f
}

/// RFC 9110 `tchar`.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

fn skip_ows(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_ows(b[i]) {
        i += 1;
    }
    i
}

fn push_rel_value(out: &mut String, rels: &[&str]) {
    if let [single] = rels {
        if single.bytes().all(is_tchar) {
            out.push_str(single);
            return;
        }
    }
    out.push('"');
    for (i, rel) in rels.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        for ch in rel.chars() {
            if ch == '"' || ch == '\\' {
                out.push('\\');
            }
            out.push(ch);
        }
    }
    out.push('"');
}

/// Parse one trimmed, non-empty element.
fn parse_element(raw: &str) -> Result<Link, LinkError> {
    let b = raw.as_bytes();
    if b.first() != Some(&b'<') {
        if b.iter().copied().any(is_ctl) {
            return Err(LinkError::ControlCharacter);
        }
        return Err(LinkError::MissingOpenAngle);
    }
    let gt = match find_byte(b, 1, b'>') {
        Some(gt) => gt,
        None if b.iter().copied().any(is_ctl) => return Err(LinkError::ControlCharacter),
        None => return Err(LinkError::UnterminatedTarget),
    };
    if b.iter().copied().any(is_ctl) {
        return Err(LinkError::ControlCharacter);
    }
    let target = &raw[1..gt];
    if target.bytes().any(|c| is_ows(c) || c == b'<' || c == b'"') {
        return Err(LinkError::InvalidTarget);
    }
    let target_len = gt + 1;
    let mut params = Vec::new();
    let mut spans = Vec::new();
    let mut i = target_len;
    loop {
        i = skip_ows(b, i);
        if i >= b.len() {
            break;
        }
        if b[i] != b';' {
            return Err(LinkError::ExpectedSemicolon);
        }
        i = skip_ows(b, i + 1);
        if i >= b.len() || b[i] == b';' {
            // Empty parameter (`;;` or a trailing `;`): tolerated and skipped.
            continue;
        }
        let name_start = i;
        while i < b.len() && is_tchar(b[i]) {
            i += 1;
        }
        let name_end = i;
        if name_start == name_end {
            return Err(if b[i] == b'=' {
                LinkError::EmptyParamName
            } else {
                LinkError::InvalidParamName
            });
        }
        let name = raw[name_start..name_end].to_owned();
        i = skip_ows(b, i);
        if i >= b.len() || b[i] == b';' {
            params.push(Param { name, value: None });
            spans.push(name_start..name_end);
            continue;
        }
        if b[i] != b'=' {
            return Err(LinkError::ExpectedSemicolon);
        }
        i = skip_ows(b, i + 1);
        if i >= b.len() || b[i] == b';' {
            return Err(LinkError::MissingParamValue);
        }
        if b[i] == b'"' {
            let end = end_of_quoted(b, i).ok_or(LinkError::UnterminatedQuote)?;
            let value = unescape(&raw[i + 1..end - 1]);
            params.push(Param {
                name,
                value: Some(ParamValue::Quoted(value)),
            });
            spans.push(name_start..end);
            i = end;
        } else {
            let value_start = i;
            while i < b.len() && b[i] != b';' && !is_ows(b[i]) {
                if matches!(b[i], b'"' | b'\\' | b',') {
                    return Err(LinkError::InvalidParamValue);
                }
                i += 1;
            }
            params.push(Param {
                name,
                value: Some(ParamValue::Token(raw[value_start..i].to_owned())),
            });
            spans.push(name_start..i);
        }
    }
    Ok(Link {
        target: target.to_owned(),
        params,
        raw: raw.to_owned(),
        target_len,
        spans,
    })
}

/// Resolve quoted-pair escapes of a quoted-string body (without the quotes).
fn unescape(body: &str) -> String {
    let mut out = String::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The request URL a link target is resolved against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Base<'a> {
    /// `http` or `https`.
    pub scheme: &'a str,
    /// Host, with an optional port; no userinfo.
    pub authority: &'a str,
    /// Origin-form request target (`/path?query`).
    pub path_and_query: &'a str,
}

/// Why a link target cannot be pushed from this origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum ResolveError {
    /// The base or the target is not an `http`/`https` URL.
    #[error("not an http(s) URL")]
    NotHttp,
    /// The target's scheme, host, port or userinfo differs from the base.
    #[error("target is not same-origin")]
    CrossOrigin,
    /// The base or the target could not be parsed.
    #[error("invalid URL")]
    Invalid,
    /// The target or its resolution contains whitespace, control characters,
    /// `\`, encoded `/` or `\`, encoded dot segments, or starts with `//`.
    #[error("unsafe path")]
    UnsafePath,
}

/// Resolve a link target against the request URL (RFC 3986 §5 as
/// implemented by the WHATWG URL parser) and return the origin-form
/// `path?query` of a same-origin target. The fragment is dropped.
///
/// Same origin means the same scheme, host (case-insensitive) and port
/// (default ports are equivalent to none), and the same (normally absent)
/// userinfo.
pub fn resolve(target: &str, base: &Base) -> Result<String, ResolveError> {
    Resolver::new(base).resolve(target)
}

/// Resolves the targets of one response against its base, parsing the
/// base once.
pub struct Resolver<'a> {
    base: &'a Base<'a>,
    url: Result<url::Url, ResolveError>,
}

impl<'a> Resolver<'a> {
    pub fn new(base: &'a Base<'a>) -> Self {
        Resolver {
            base,
            url: base_url(base),
        }
    }

    /// As [`resolve`].
    pub fn resolve(&self, target: &str) -> Result<String, ResolveError> {
        let base_url = self.url.as_ref().map_err(|e| *e)?;
        // Most targets are plain absolute paths (`/css/app.css`), which
        // resolve to themselves; the `url` crate would parse the target
        // (and join it) only to say so.
        let plain = if target.is_empty() {
            plain_absolute_path(self.base.path_and_query)
        } else {
            plain_absolute_path(target)
        };
        if let Some(path) = plain {
            return Ok(path.to_owned());
        }
        join(target, base_url)
    }
}

/// `target` without its fragment, when it is an absolute path (not a
/// network-path `//…`) whose every byte the `url` crate keeps as it is, and
/// with no dot segment: resolving it against any same-origin base gives it
/// back unchanged. Anything else (percent-escapes, dot segments, characters
/// that would be escaped, relative references) returns `None` and goes the
/// long way.
fn plain_absolute_path(target: &str) -> Option<&str> {
    let target = target.split('#').next().unwrap_or_default();
    if !target.starts_with('/') || target.starts_with("//") {
        return None;
    }
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let kept = |c: u8| c.is_ascii_alphanumeric() || b"-._~!$&()*+,;=:@/".contains(&c);
    if !path.bytes().all(kept) || path.split('/').any(|s| s == "." || s == "..") {
        return None;
    }
    if let Some(query) = query {
        if !query.bytes().all(|c| kept(c) || c == b'?') {
            return None;
        }
    }
    Some(target)
}

/// [`resolve`] through the `url` crate alone (what the fast path must agree
/// with).
#[cfg(test)]
fn resolve_with_url(target: &str, base: &Base) -> Result<String, ResolveError> {
    join(target, &base_url(base)?)
}

/// Resolve `target` against a parsed base.
fn join(target: &str, base_url: &url::Url) -> Result<String, ResolveError> {
    if target.bytes().any(|c| c <= b' ' || c == 0x7f || c == b'\\') {
        return Err(ResolveError::UnsafePath);
    }
    let path_part = target.split(['?', '#']).next().unwrap_or_default();
    if has_unsafe_encoding(path_part) {
        return Err(ResolveError::UnsafePath);
    }
    let url = base_url.join(target).map_err(|_| ResolveError::Invalid)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ResolveError::NotHttp);
    }
    if url.scheme() != base_url.scheme()
        || url.host() != base_url.host()
        || url.port_or_known_default() != base_url.port_or_known_default()
        || url.username() != base_url.username()
        || url.password() != base_url.password()
    {
        return Err(ResolveError::CrossOrigin);
    }
    let mut out = url.path().to_owned();
    if let Some(query) = url.query() {
        out.push('?');
        out.push_str(query);
    }
    if !out.starts_with('/')
        || out.starts_with("//")
        || out.bytes().any(|c| c <= b' ' || c == 0x7f || c == b'\\')
        || has_unsafe_encoding(url.path())
    {
        return Err(ResolveError::UnsafePath);
    }
    Ok(out)
}

fn base_url(base: &Base) -> Result<url::Url, ResolveError> {
    let scheme = base.scheme;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return Err(ResolveError::NotHttp);
    }
    let authority = base.authority;
    if authority.is_empty()
        || authority
            .bytes()
            .any(|c| c <= b' ' || c >= 0x7f || matches!(c, b'/' | b'?' | b'#' | b'\\' | b'@'))
    {
        return Err(ResolveError::Invalid);
    }
    let pq = match base.path_and_query {
        "" => "/",
        pq if pq.starts_with('/') => pq,
        _ => return Err(ResolveError::Invalid),
    };
    if pq.bytes().any(|c| c <= b' ' || c == 0x7f) {
        return Err(ResolveError::Invalid);
    }
    let url = url::Url::parse(&format!("{scheme}://{authority}{pq}"))
        .map_err(|_| ResolveError::Invalid)?;
    if url.host().is_none() {
        return Err(ResolveError::Invalid);
    }
    Ok(url)
}

/// Encoded `/` or `\` anywhere, or a segment made only of dots where at
/// least one is written `%2e`.
fn has_unsafe_encoding(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") {
        return true;
    }
    lower.split('/').any(|segment| {
        segment.contains("%2e") && segment.replace("%2e", ".").bytes().all(|c| c == b'.')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected shape of one element.
    #[derive(Debug)]
    enum Exp {
        /// target, rel tokens, every param (name as written, value text).
        L(
            &'static str,
            &'static [&'static str],
            &'static [(&'static str, Option<&'static str>)],
        ),
        M(LinkError),
    }
    use Exp::{L, M};

    const N: Option<&str> = None;

    fn check(input: &str, expected: &[Exp]) {
        let short: String = input.chars().take(80).collect();
        let elements = parse_field(input);
        assert_eq!(
            elements.len(),
            expected.len(),
            "element count for {short:?}: {elements:?}"
        );
        for (i, (element, exp)) in elements.iter().zip(expected).enumerate() {
            match (element, exp) {
                (Element::Link(link), L(target, rels, params)) => {
                    assert_eq!(link.target(), *target, "target #{i} of {short:?}");
                    assert_eq!(link.rel_tokens(), *rels, "rels #{i} of {short:?}");
                    let got: Vec<(&str, Option<&str>)> = link
                        .params()
                        .iter()
                        .map(|p| (p.name.as_str(), p.value_str()))
                        .collect();
                    assert_eq!(got, *params, "params #{i} of {short:?}");
                }
                (Element::Malformed { error, .. }, M(want)) => {
                    assert_eq!(error, want, "error #{i} of {short:?}");
                }
                (got, want) => panic!("element #{i} of {short:?}: got {got:?}, want {want:?}"),
            }
        }
        // Unmodified elements serialise byte for byte, and the whole line
        // is stable under parse -> serialise -> parse.
        let serialised = serialize_field(&elements);
        assert_eq!(parse_field(&serialised), elements, "stability of {short:?}");
        let mut from = 0;
        for element in &elements {
            let at = input[from..]
                .find(element.raw())
                .unwrap_or_else(|| panic!("raw {:?} not in input", element.raw()));
            from += at + element.raw().len();
        }
    }

    #[test]
    #[rustfmt::skip]
    fn real_world_and_hostile_table() {
        let big_target = format!("</{}.css>; rel=preload; as=style", "a".repeat(300_000));
        let big_target_name = format!("/{}.css", "a".repeat(300_000));
        let many_commas = format!("{}</a.css>; rel=preload{}", ",".repeat(10_000), ", ".repeat(3));
        let nested_quotes = format!("</a>; rel=preload; t=\"{}\"", "\\\"".repeat(1000));
        let rows: Vec<(String, Vec<Exp>)> = vec![
            // PHP: header('Link: </css/app.css>; rel=preload; as=style', false)
            ("</css/app.css>; rel=preload; as=style".into(),
             vec![L("/css/app.css", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))])]),
            ("</js/app.js>; rel=preload; as=script".into(),
             vec![L("/js/app.js", &["preload"], &[("rel", Some("preload")), ("as", Some("script"))])]),
            // Rails preload_link_tag
            ("</assets/application-abc.css>; rel=preload; as=style; type=text/css; nopush".into(),
             vec![L("/assets/application-abc.css", &["preload"],
                    &[("rel", Some("preload")), ("as", Some("style")), ("type", Some("text/css")), ("nopush", N)])]),
            // Rails 7 javascript_include_tag with preload_links_header, ES modules
            ("</assets/application-1a2b3c.js>; rel=modulepreload; nopush".into(),
             vec![L("/assets/application-1a2b3c.js", &["modulepreload"], &[("rel", Some("modulepreload")), ("nopush", N)])]),
            // Rails with a CDN host and crossorigin
            ("<https://cdn.example.com/assets/app-9f8e.css>; rel=preload; as=style; nopush, <https://cdn.example.com/assets/app-7d6c.js>; rel=preload; as=script; crossorigin=anonymous; nopush".into(),
             vec![L("https://cdn.example.com/assets/app-9f8e.css", &["preload"], &[("rel", Some("preload")), ("as", Some("style")), ("nopush", N)]),
                  L("https://cdn.example.com/assets/app-7d6c.js", &["preload"], &[("rel", Some("preload")), ("as", Some("script")), ("crossorigin", Some("anonymous")), ("nopush", N)])]),
            // Laravel HTTP/2 server push middleware: one line, no space after commas
            ("</css/app.css?id=4a5b>; rel=preload; as=style,</js/app.js?id=9c0d>; rel=preload; as=script,</img/logo.svg>; rel=preload; as=image".into(),
             vec![L("/css/app.css?id=4a5b", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))]),
                  L("/js/app.js?id=9c0d", &["preload"], &[("rel", Some("preload")), ("as", Some("script"))]),
                  L("/img/logo.svg", &["preload"], &[("rel", Some("preload")), ("as", Some("image"))])]),
            // WordPress push plugin: absolute same-site URLs with ?ver=
            ("<https://example.com/wp-includes/css/dist/block-library/style.min.css?ver=6.4.2>; rel=preload; as=style, <https://example.com/wp-includes/js/jquery/jquery.min.js?ver=3.7.1>; rel=preload; as=script, <https://example.com/wp-content/themes/twentytwentyfour/style.css?ver=1.0>; rel=preload; as=style".into(),
             vec![L("https://example.com/wp-includes/css/dist/block-library/style.min.css?ver=6.4.2", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))]),
                  L("https://example.com/wp-includes/js/jquery/jquery.min.js?ver=3.7.1", &["preload"], &[("rel", Some("preload")), ("as", Some("script"))]),
                  L("https://example.com/wp-content/themes/twentytwentyfour/style.css?ver=1.0", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))])]),
            // h2o documentation style
            ("</assets/jquery.js>; rel=preload; as=script".into(),
             vec![L("/assets/jquery.js", &["preload"], &[("rel", Some("preload")), ("as", Some("script"))])]),
            ("</style.css>; rel=preload; as=style; critical".into(),
             vec![L("/style.css", &["preload"], &[("rel", Some("preload")), ("as", Some("style")), ("critical", N)])]),
            // nghttpx documentation
            ("</fonts/font.woff>; rel=preload, </css/theme.css>; rel=preload".into(),
             vec![L("/fonts/font.woff", &["preload"], &[("rel", Some("preload"))]),
                  L("/css/theme.css", &["preload"], &[("rel", Some("preload"))])]),
            // nginx http2_push_preload documentation (as before rel)
            ("</style.css>; as=style; rel=preload".into(),
             vec![L("/style.css", &["preload"], &[("as", Some("style")), ("rel", Some("preload"))])]),
            // Apache mod_http2 documentation (no spaces)
            ("</xxx.css>;rel=preload, </xxx.js>; rel=preload; nopush".into(),
             vec![L("/xxx.css", &["preload"], &[("rel", Some("preload"))]),
                  L("/xxx.js", &["preload"], &[("rel", Some("preload")), ("nopush", N)])]),
            // Cloudflare examples
            ("</asset/to/push.js>; rel=preload; as=script".into(),
             vec![L("/asset/to/push.js", &["preload"], &[("rel", Some("preload")), ("as", Some("script"))])]),
            ("</img/preloaded.png>; rel=preload; as=image, <https://cdn.example.com>; rel=preconnect".into(),
             vec![L("/img/preloaded.png", &["preload"], &[("rel", Some("preload")), ("as", Some("image"))]),
                  L("https://cdn.example.com", &["preconnect"], &[("rel", Some("preconnect"))])]),
            // Symfony WebLink: quoted values
            ("</bootstrap.min.css>; rel=\"preload\"; as=\"style\"".into(),
             vec![L("/bootstrap.min.css", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))])]),
            // Next.js font preload
            ("</_next/static/media/a34f9d1faa5f3315-s.p.woff2>; rel=preload; as=\"font\"; crossorigin=\"\"; type=\"font/woff2\"".into(),
             vec![L("/_next/static/media/a34f9d1faa5f3315-s.p.woff2", &["preload"],
                    &[("rel", Some("preload")), ("as", Some("font")), ("crossorigin", Some("")), ("type", Some("font/woff2"))])]),
            // font with valueless crossorigin
            ("</fonts/inter.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin".into(),
             vec![L("/fonts/inter.woff2", &["preload"], &[("rel", Some("preload")), ("as", Some("font")), ("type", Some("font/woff2")), ("crossorigin", N)])]),
            ("<https://fonts.gstatic.com>; rel=preconnect; crossorigin".into(),
             vec![L("https://fonts.gstatic.com", &["preconnect"], &[("rel", Some("preconnect")), ("crossorigin", N)])]),
            ("<//cdn.example.com>; rel=dns-prefetch".into(),
             vec![L("//cdn.example.com", &["dns-prefetch"], &[("rel", Some("dns-prefetch"))])]),
            // Vulcain-style API preloads
            ("</users/1>; rel=preload; as=fetch, </users/2>; rel=preload; as=fetch".into(),
             vec![L("/users/1", &["preload"], &[("rel", Some("preload")), ("as", Some("fetch"))]),
                  L("/users/2", &["preload"], &[("rel", Some("preload")), ("as", Some("fetch"))])]),
            // push relation types
            ("</a.css>; rel=\"preload push\"; as=style".into(),
             vec![L("/a.css", &["preload", "push"], &[("rel", Some("preload push")), ("as", Some("style"))])]),
            ("</b.js>; rel=push; as=script".into(),
             vec![L("/b.js", &["push"], &[("rel", Some("push")), ("as", Some("script"))])]),
            ("</c.css>; rel=\"preload\tpush\"".into(),
             vec![L("/c.css", &["preload", "push"], &[("rel", Some("preload\tpush"))])]),
            // mixed case names and values
            ("</a.js>; REL=PreLoad; AS=Script".into(),
             vec![L("/a.js", &["preload"], &[("REL", Some("PreLoad")), ("AS", Some("Script"))])]),
            // anchors
            ("</b.css>; rel=preload; anchor=\"/other\"".into(),
             vec![L("/b.css", &["preload"], &[("rel", Some("preload")), ("anchor", Some("/other"))])]),
            ("</terms>; rel=\"copyright\"; anchor=\"#foo\"".into(),
             vec![L("/terms", &["copyright"], &[("rel", Some("copyright")), ("anchor", Some("#foo"))])]),
            // RFC 8288 §3.5 examples
            ("<http://example.com/TheBook/chapter2>; rel=\"previous\"; title=\"previous chapter\"".into(),
             vec![L("http://example.com/TheBook/chapter2", &["previous"], &[("rel", Some("previous")), ("title", Some("previous chapter"))])]),
            ("</>; rel=\"http://example.net/foo\"".into(),
             vec![L("/", &["http://example.net/foo"], &[("rel", Some("http://example.net/foo"))])]),
            ("</TheBook/chapter2>; rel=\"previous\"; title*=UTF-8'de'letztes%20Kapitel, </TheBook/chapter4>; rel=\"next\"; title*=UTF-8'de'n%c3%a4chstes%20Kapitel".into(),
             vec![L("/TheBook/chapter2", &["previous"], &[("rel", Some("previous")), ("title*", Some("UTF-8'de'letztes%20Kapitel"))]),
                  L("/TheBook/chapter4", &["next"], &[("rel", Some("next")), ("title*", Some("UTF-8'de'n%c3%a4chstes%20Kapitel"))])]),
            ("<http://example.org/>; rel=\"start http://example.net/relation/other\"".into(),
             vec![L("http://example.org/", &["start", "http://example.net/relation/other"], &[("rel", Some("start http://example.net/relation/other"))])]),
            ("<https://example.org/>; rel=\"start\", <https://example.org/index>; rel=\"index\"".into(),
             vec![L("https://example.org/", &["start"], &[("rel", Some("start"))]),
                  L("https://example.org/index", &["index"], &[("rel", Some("index"))])]),
            // unknown params kept
            ("</a.js>; rel=preload; as=script; fetchpriority=high; integrity=\"sha384-oqVuAfXRKap7fdgcCY5uykM6+R9GqQ8K/uxy9rx7HNQlGYl1kPzQho1wx4JwY8wC\"; x-foo".into(),
             vec![L("/a.js", &["preload"], &[("rel", Some("preload")), ("as", Some("script")), ("fetchpriority", Some("high")),
                    ("integrity", Some("sha384-oqVuAfXRKap7fdgcCY5uykM6+R9GqQ8K/uxy9rx7HNQlGYl1kPzQho1wx4JwY8wC")), ("x-foo", N)])]),
            // OWS everywhere, tabs, empty list elements, trailing semicolon
            ("  </a.css>  ;  rel = \"preload\"  ;  as = style  ,  </b.js> ; rel=preload ".into(),
             vec![L("/a.css", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))]),
                  L("/b.js", &["preload"], &[("rel", Some("preload"))])]),
            ("</a.css>\t;\trel=preload".into(),
             vec![L("/a.css", &["preload"], &[("rel", Some("preload"))])]),
            (", , </a.css>; rel=preload,, ,".into(),
             vec![L("/a.css", &["preload"], &[("rel", Some("preload"))])]),
            ("</a.css>; rel=preload;".into(),
             vec![L("/a.css", &["preload"], &[("rel", Some("preload"))])]),
            ("</a.css>; rel=preload;; as=style".into(),
             vec![L("/a.css", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))])]),
            ("   ".into(), vec![]),
            ("".into(), vec![]),
            // quoted strings hide commas and semicolons; escapes
            ("</a>; rel=preload; title=\"a, b; c\", </b>; rel=preload".into(),
             vec![L("/a", &["preload"], &[("rel", Some("preload")), ("title", Some("a, b; c"))]),
                  L("/b", &["preload"], &[("rel", Some("preload"))])]),
            ("</a>; rel=preload; title=\"say \\\"hi\\\" \\\\ bye\"".into(),
             vec![L("/a", &["preload"], &[("rel", Some("preload")), ("title", Some("say \"hi\" \\ bye"))])]),
            ("</a>; rel=preload; title=\"naïve café\"".into(),
             vec![L("/a", &["preload"], &[("rel", Some("preload")), ("title", Some("naïve café"))])]),
            // commas and semicolons inside the target
            ("</a,b;c.css>; rel=preload; as=style, </d.css>; rel=preload".into(),
             vec![L("/a,b;c.css", &["preload"], &[("rel", Some("preload")), ("as", Some("style"))]),
                  L("/d.css", &["preload"], &[("rel", Some("preload"))])]),
            // duplicate and valueless rel
            ("</a>; rel=preload; rel=push".into(),
             vec![L("/a", &["preload"], &[("rel", Some("preload")), ("rel", Some("push"))])]),
            ("</a>; rel".into(), vec![L("/a", &[], &[("rel", N)])]),
            ("</a>".into(), vec![L("/a", &[], &[])]),
            // near misses of preload
            ("</a.css>; rel=preloadX".into(), vec![L("/a.css", &["preloadx"], &[("rel", Some("preloadX"))])]),
            ("</a.css>; rel=preloa".into(), vec![L("/a.css", &["preloa"], &[("rel", Some("preloa"))])]),
            // empty target
            ("<>; rel=preload".into(), vec![L("", &["preload"], &[("rel", Some("preload"))])]),
            // hostile: unterminated quote swallows the rest of the line
            ("</a.css>; rel=\"preload, </b.css>; rel=preload".into(), vec![M(LinkError::UnterminatedQuote)]),
            ("</ok.css>; rel=preload, </a>; title=\"oops, </b>; rel=preload".into(),
             vec![L("/ok.css", &["preload"], &[("rel", Some("preload"))]), M(LinkError::UnterminatedQuote)]),
            ("</a>; title=\"trailing backslash\\".into(), vec![M(LinkError::UnterminatedQuote)]),
            // hostile: missing '>'
            ("</a.css; rel=preload".into(), vec![M(LinkError::UnterminatedTarget)]),
            ("</ok.js>; rel=preload, </a.css; rel=preload".into(),
             vec![L("/ok.js", &["preload"], &[("rel", Some("preload"))]), M(LinkError::UnterminatedTarget)]),
            // ... and a later '>' closes it, so the rest is one bad element
            ("</ok.js>; rel=preload, </a.css; rel=preload, </c.css>; rel=preload".into(),
             vec![L("/ok.js", &["preload"], &[("rel", Some("preload"))]), M(LinkError::InvalidTarget)]),
            // hostile: nested angles
            ("<<a.css>>; rel=preload".into(), vec![M(LinkError::InvalidTarget)]),
            ("</a.css>>; rel=preload".into(), vec![M(LinkError::ExpectedSemicolon)]),
            // hostile: NUL and control bytes spoil only their own element
            ("</a.css>; rel=preload\0, </b.css>; rel=preload".into(),
             vec![M(LinkError::ControlCharacter), L("/b.css", &["preload"], &[("rel", Some("preload"))])]),
            ("</a\u{1}.css>; rel=preload".into(), vec![M(LinkError::ControlCharacter)]),
            ("</a.css>; rel=preload\r\nSet-Cookie: x=1".into(), vec![M(LinkError::ControlCharacter)]),
            ("</a.css>; title=\"x\u{7f}\"".into(), vec![M(LinkError::ControlCharacter)]),
            // hostile: other syntax errors
            ("/a.css; rel=preload".into(), vec![M(LinkError::MissingOpenAngle)]),
            ("rel=preload, </b>; rel=preload".into(),
             vec![M(LinkError::MissingOpenAngle), L("/b", &["preload"], &[("rel", Some("preload"))])]),
            ("<a b.css>; rel=preload".into(), vec![M(LinkError::InvalidTarget)]),
            ("</a>; =x".into(), vec![M(LinkError::EmptyParamName)]),
            ("</a>; \"rel\"=preload".into(), vec![M(LinkError::InvalidParamName)]),
            ("</a>; rel=".into(), vec![M(LinkError::MissingParamValue)]),
            ("</a>; rel=; as=style".into(), vec![M(LinkError::MissingParamValue)]),
            ("</a>; rel=pre\"load\"".into(), vec![M(LinkError::InvalidParamValue)]),
            ("</a>; rel=pre\\load".into(), vec![M(LinkError::InvalidParamValue)]),
            ("</a> rel=preload".into(), vec![M(LinkError::ExpectedSemicolon)]),
            ("</a>; title=\"x\"y".into(), vec![M(LinkError::ExpectedSemicolon)]),
            ("</a>; rel=preload push".into(), vec![M(LinkError::ExpectedSemicolon)]),
            ("</a>; crossorigin anonymous".into(), vec![M(LinkError::ExpectedSemicolon)]),
            // hostile: sizes
            (many_commas, vec![L("/a.css", &["preload"], &[("rel", Some("preload"))])]),
            (big_target, vec![]), // checked below
            (nested_quotes, vec![]), // checked below
        ];
        assert!(rows.len() >= 40);
        for (input, expected) in &rows {
            if expected.is_empty() && input.len() > 1000 {
                continue;
            }
            check(input, expected);
        }
        // 300 KB single target
        let big = &rows[rows.len() - 2].0;
        let elements = parse_field(big);
        assert_eq!(elements.len(), 1);
        assert_eq!(elements[0].as_link().map(Link::target), Some(big_target_name.as_str()));
        assert_eq!(serialize_field(&elements), *big);
        // 1000 escaped quotes
        let nested = &rows[rows.len() - 1].0;
        let elements = parse_field(nested);
        let title = elements[0].as_link().and_then(|l| l.param("t")).and_then(Param::value_str);
        assert_eq!(title, Some("\"".repeat(1000).as_str()));
    }

    #[test]
    fn three_hundred_kilobyte_line_of_links() {
        let one = "</static/asset-0000.css>; rel=preload; as=style";
        let count = 300_000 / (one.len() + 2) + 1;
        let line = (0..count)
            .map(|i| format!("</static/asset-{i:04}.css>; rel=preload; as=style"))
            .collect::<Vec<_>>()
            .join(", ");
        assert!(line.len() >= 300_000);
        let elements = parse_field(&line);
        assert_eq!(elements.len(), count);
        assert!(elements
            .iter()
            .all(|e| e.as_link().is_some_and(|l| l.has_rel("preload"))));
        assert_eq!(serialize_field(&elements), line);
    }

    #[test]
    fn unmodified_line_round_trips_byte_for_byte() {
        for line in [
            "</a.css>; rel=preload; as=style, </b.js>; rel=push; as=script; nopush",
            "</a>; title=\"x, y\", bad element, </c>; REL = \"Preload Push\"",
            "</a>; rel=\"unterminated, </b>; rel=preload",
        ] {
            assert_eq!(serialize_field(&parse_field(line)), line);
        }
    }

    #[test]
    fn lookups_are_case_insensitive() {
        let elements = parse_field("</a.css>; REL=\"PreLoad  PUSH\"; As=Style; NoPush; rel=next");
        let link = elements[0].as_link().expect("link");
        assert_eq!(link.rel_tokens(), vec!["preload", "push"]);
        assert!(link.has_rel("PUSH") && link.has_rel("preload") && !link.has_rel("next"));
        assert_eq!(link.param("as").and_then(Param::value_str), Some("Style"));
        assert!(link.has_param("nopush") && link.has_param("NOPUSH"));
        assert!(!link.has_param("anchor"));
    }

    fn only_link(line: &str) -> Link {
        match parse_field(line).into_iter().next() {
            Some(Element::Link(link)) => link,
            other => panic!("not a link: {other:?}"),
        }
    }

    #[test]
    fn with_rels_keeps_other_params_byte_for_byte() {
        let link = only_link(
            "</a.css>;  rel=push ;as = style;  crossorigin ; title=\"x, \\\"y\\\"\";type=text/css",
        );
        let changed = link.with_rels(&["preload"]);
        assert_eq!(
            changed.to_string(),
            "</a.css>; rel=preload; as = style; crossorigin; title=\"x, \\\"y\\\"\"; type=text/css"
        );
        assert_eq!(changed.rel_tokens(), vec!["preload"]);
        assert_eq!(only_link(&changed.to_string()), changed);

        let two = link.with_rels(&["preload", "push"]);
        assert_eq!(
            two.to_string(),
            "</a.css>; rel=\"preload push\"; as = style; crossorigin; title=\"x, \\\"y\\\"\"; type=text/css"
        );
        let none = link.with_rels(&[]);
        assert_eq!(
            none.to_string(),
            "</a.css>; as = style; crossorigin; title=\"x, \\\"y\\\"\"; type=text/css"
        );
        let added = only_link("</a>; as=style").with_rels(&["preload"]);
        assert_eq!(added.to_string(), "</a>; as=style; rel=preload");
        let name_case = only_link("</a>; REL=\"push preload\"; rel=next").with_rels(&["preload"]);
        assert_eq!(name_case.to_string(), "</a>; REL=preload; rel=next");
        let odd = only_link("</a>").with_rels(&["we\"ird", "", "bad\0"]);
        assert_eq!(odd.to_string(), "</a>; rel=\"we\\\"ird\"");
        assert_eq!(odd.rel_tokens(), vec!["we\"ird"]);
    }

    fn base(path: &'static str) -> Base<'static> {
        Base {
            scheme: "https",
            authority: "example.com",
            path_and_query: path,
        }
    }

    #[test]
    fn resolution_table() {
        use ResolveError::*;
        let https = base("/dir/page.html?x=1");
        let http = Base {
            scheme: "http",
            authority: "example.com",
            path_and_query: "/dir/page.html",
        };
        let with_port = Base {
            scheme: "https",
            authority: "Example.COM:443",
            path_and_query: "/",
        };
        let v6 = Base {
            scheme: "https",
            authority: "[::1]:8443",
            path_and_query: "/",
        };
        let rows: Vec<(&str, &Base, Result<&str, ResolveError>)> = vec![
            ("a.css", &https, Ok("/dir/a.css")),
            ("./a.css", &https, Ok("/dir/a.css")),
            ("../x", &https, Ok("/x")),
            ("../../../../x", &https, Ok("/x")),
            ("/x?q=1", &https, Ok("/x?q=1")),
            ("?v=2", &https, Ok("/dir/page.html?v=2")),
            ("/x?", &https, Ok("/x?")),
            ("/a.css#frag", &https, Ok("/a.css")),
            ("#frag", &https, Ok("/dir/page.html?x=1")),
            ("", &https, Ok("/dir/page.html?x=1")),
            ("/x?next=%2Fhome%2F..", &https, Ok("/x?next=%2Fhome%2F..")),
            ("/caf%C3%A9.css", &https, Ok("/caf%C3%A9.css")),
            ("/café.css", &https, Ok("/caf%C3%A9.css")),
            ("https://example.com/x", &https, Ok("/x")),
            ("https://EXAMPLE.com:443/x", &https, Ok("/x")),
            ("//Example.COM/x", &https, Ok("/x")),
            ("https://example.com/x", &with_port, Ok("/x")),
            ("http:x", &http, Ok("/dir/x")),
            ("https://[::1]:8443/y", &v6, Ok("/y")),
            ("//evil.com/x", &https, Err(CrossOrigin)),
            ("https://other.example/x", &https, Err(CrossOrigin)),
            ("http://example.com/x", &https, Err(CrossOrigin)),
            ("http://example.com:81/x", &http, Err(CrossOrigin)),
            ("https://example.com:8443/x", &https, Err(CrossOrigin)),
            ("https:x", &http, Err(CrossOrigin)),
            ("https://user@example.com/x", &https, Err(CrossOrigin)),
            ("https://example.com./x", &https, Err(CrossOrigin)),
            ("javascript:alert(1)", &https, Err(NotHttp)),
            ("data:text/css,body{}", &https, Err(NotHttp)),
            ("file:///etc/passwd", &https, Err(NotHttp)),
            ("ftp://example.com/x", &https, Err(NotHttp)),
            ("https://[::1", &https, Err(Invalid)),
            ("/a/%2e%2e/etc/passwd", &https, Err(UnsafePath)),
            ("/a/%2E/b", &https, Err(UnsafePath)),
            ("/a/.%2e/b", &https, Err(UnsafePath)),
            ("%2e%2e/x", &https, Err(UnsafePath)),
            ("/a%2fb", &https, Err(UnsafePath)),
            ("/a%5Cb", &https, Err(UnsafePath)),
            ("/a\\b", &https, Err(UnsafePath)),
            ("\\\\evil.com/x", &https, Err(UnsafePath)),
            ("/a\u{1}b", &https, Err(UnsafePath)),
            ("/a b", &https, Err(UnsafePath)),
            ("/a\tb", &https, Err(UnsafePath)),
            ("/.//evil.com/x", &https, Err(UnsafePath)),
        ];
        assert!(rows.len() >= 20);
        for (target, base, want) in rows {
            let got = resolve(target, base);
            assert_eq!(
                got.as_deref().map_err(|e| *e),
                want,
                "resolve({target:?}) against {base:?}"
            );
        }
    }

    #[test]
    fn resolution_rejects_bad_bases() {
        let bad = |scheme, authority, path_and_query| {
            resolve(
                "/x",
                &Base {
                    scheme,
                    authority,
                    path_and_query,
                },
            )
        };
        assert_eq!(bad("ftp", "example.com", "/"), Err(ResolveError::NotHttp));
        assert_eq!(bad("https", "", "/"), Err(ResolveError::Invalid));
        assert_eq!(
            bad("https", "user@example.com", "/"),
            Err(ResolveError::Invalid)
        );
        assert_eq!(
            bad("https", "example.com/evil", "/"),
            Err(ResolveError::Invalid)
        );
        assert_eq!(
            bad("https", "example.com", "evil"),
            Err(ResolveError::Invalid)
        );
        assert_eq!(
            bad("https", "example.com", "/a\nb"),
            Err(ResolveError::Invalid)
        );
        assert_eq!(bad("https", "example.com", ""), Ok("/x".to_owned()));
        // A relative target inherits an encoded slash from the base path.
        assert_eq!(
            resolve("x", &base("/a%2Fb/c")),
            Err(ResolveError::UnsafePath)
        );
    }
}

#[cfg(test)]
mod proptests {
    use super::*;
    use proptest::prelude::*;

    fn linkish() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            Just("<".to_owned()),
            Just(">".to_owned()),
            Just("\"".to_owned()),
            Just(";".to_owned()),
            Just(",".to_owned()),
            Just("=".to_owned()),
            Just("\\".to_owned()),
            Just(" ".to_owned()),
            Just("\t".to_owned()),
            Just("rel".to_owned()),
            Just("preload".to_owned()),
            Just("push".to_owned()),
            Just("nopush".to_owned()),
            Just("as=style".to_owned()),
            Just("/a.css".to_owned()),
            Just("</x>".to_owned()),
            Just("\0".to_owned()),
            Just("é".to_owned()),
            "[a-zA-Z0-9*%'/.:-]{1,6}",
        ];
        prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    fn assert_invariants(input: &str) {
        let elements = parse_field(input);
        let serialised = serialize_field(&elements);
        let again = parse_field(&serialised);
        assert_eq!(again, elements, "unstable: {input:?} -> {serialised:?}");
        // Each element's raw text occurs in the input, in order.
        let mut from = 0;
        for element in &elements {
            let raw = element.raw();
            assert!(!raw.is_empty());
            assert_eq!(raw.trim_matches([' ', '\t']), raw);
            let at = input[from..]
                .find(raw)
                .expect("raw text comes from the input");
            from += at + raw.len();
        }
        // Modified links re-parse to themselves.
        for element in &elements {
            if let Element::Link(link) = element {
                for rels in [&["preload"][..], &["preload", "push"], &[]] {
                    let changed = link.with_rels(rels);
                    let reparsed = parse_field(&changed.to_string());
                    assert_eq!(reparsed, vec![Element::Link(changed.clone())]);
                    let non_rel: Vec<_> = link.params().iter().filter(|p| !p.is("rel")).collect();
                    let changed_non_rel: Vec<_> =
                        changed.params().iter().filter(|p| !p.is("rel")).collect();
                    assert_eq!(non_rel, changed_non_rel);
                }
                let _ = resolve(
                    link.target(),
                    &Base {
                        scheme: "https",
                        authority: "example.com",
                        path_and_query: "/p",
                    },
                );
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn arbitrary_strings(s in any::<String>()) {
            assert_invariants(&s);
        }

        #[test]
        fn linkish_strings(s in linkish()) {
            assert_invariants(&s);
        }

        #[test]
        fn resolve_never_panics(target in any::<String>(), path in "/[ -~]{0,20}") {
            let base = Base { scheme: "https", authority: "example.com", path_and_query: &path };
            if let Ok(p) = resolve(&target, &base) {
                prop_assert!(p.starts_with('/') && !p.starts_with("//"));
                prop_assert!(!p.bytes().any(|c| c <= b' ' || c == 0x7f || c == b'\\'));
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn plain_paths_resolve_as_the_url_crate_resolves_them(
            target in "(/[a-zA-Z0-9._~!$&()*+,;=:@-]{0,12}){1,4}(\\?[a-zA-Z0-9._~!$&()*+,;=:@/?-]{0,12})?(#[a-z]{0,4})?",
            base_path in "(/[a-z0-9.]{0,8}){1,3}(\\?[a-z=&]{0,8})?",
        ) {
            let base = Base {
                scheme: "https",
                authority: "example.com",
                path_and_query: &base_path,
            };
            let fast = resolve(&target, &base);
            let slow = resolve_with_url(&target, &base);
            proptest::prop_assert_eq!(fast, slow, "target {:?}", target);
            let own_fast = resolve("", &base);
            let own_slow = resolve_with_url("", &base);
            proptest::prop_assert_eq!(own_fast, own_slow, "base {:?}", base_path);
        }
    }
}
