//! The HTTP rules of the request path, as pure functions: which client
//! requests may be forwarded and what the origin is sent in their place,
//! which origin responses may be relayed and what the client is sent.
//!
//! Translation follows RFC 9110 §7.6.1 (connection-specific fields) and
//! RFC 9113 §8.2 (HTTP/2 field rules). Anything that could make the origin see
//! a different request than the proxy validated is rejected here, before a
//! byte reaches the origin.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, StatusCode, Version};

use crate::config::Config;
use crate::conn::{AuthorityFields, ConnContext, Protocol};
use crate::error::ProxyError;
use crate::origin::OriginBody;

/// What a validated request asks for. Cheap to clone: the authority and
/// path share the request's own bytes.
#[derive(Debug, Clone)]
pub struct Target {
    pub method: Method,
    /// The authority the client addressed (`:authority`, or `Host`), lower
    /// case.
    pub authority: Authority,
    /// The origin-form request target, `/path?query` (or `*`).
    pub path_and_query: PathAndQuery,
    /// The declared body length, when there is one.
    pub content_length: Option<u64>,
    /// The protocol switch the client asked for, when the origin may be
    /// asked for it too.
    pub upgrade: Option<Upgrade>,
}

/// A protocol switch passed on to the origin. Only a `GET` without a body
/// may ask for one: a body sent before the switch is where a request could
/// hide in a tunnel, and WebSocket (RFC 6455 §4.1), the one upgrade in use,
/// is a `GET`. Other upgrade requests are forwarded as plain requests, with
/// `Upgrade` stripped as the hop-by-hop field it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upgrade {
    /// HTTP/1.1 `Connection: upgrade` with these `Upgrade` protocols, as
    /// the client named them, less `h2c` (a switch of the hop itself,
    /// which the proxy speaks on its own behalf or not at all).
    Http1(HeaderValue),
    /// An HTTP/2 extended CONNECT with `:protocol websocket` (RFC 8441): a
    /// WebSocket handshake toward the origin, a tunnel on the stream.
    Websocket,
}

/// Methods forwarded to the origin. CONNECT and TRACE are refused: this is
/// a reverse proxy, and TRACE would echo credentials back.
const FORWARDED_METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::OPTIONS,
    Method::PATCH,
];

/// Connection-specific fields (RFC 9110 §7.6.1), plus fields that only make
/// sense between the client and this proxy.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
];

fn is_hop_by_hop(name: &HeaderName, connection_listed: &[HeaderName]) -> bool {
    HOP_BY_HOP.contains(name) || connection_listed.contains(name)
}

/// Field names listed in `Connection` (which are hop-by-hop too).
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .collect()
}

/// Validate a client request and work out its target.
pub fn validate(
    parts: &http::request::Parts,
    ctx: &ConnContext,
    config: &Config,
) -> Result<Target, ProxyError> {
    let extended = extended_connect(parts, ctx)?;
    // An extended CONNECT reaches the origin as the GET of a handshake.
    let get = Method::GET;
    let method = if extended.is_some() {
        &get
    } else {
        &parts.method
    };
    if !FORWARDED_METHODS.contains(method) {
        return Err(ProxyError::MethodNotImplemented(method.to_string()));
    }
    if parts.headers.len() > config.limits.max_request_headers {
        return Err(ProxyError::HeadersTooLarge);
    }
    if ctx.protocol == Protocol::Http2 {
        // RFC 9113 §8.3.1: :scheme must match the connection.
        if let Some(scheme) = parts.uri.scheme_str() {
            if scheme != ctx.scheme() {
                return Err(ProxyError::BadRequest(
                    ":scheme does not match the connection",
                ));
            }
        }
    }
    let authority = authority(parts, ctx)?;
    let path_and_query = match parts.uri.path_and_query() {
        Some(pq) => pq.clone(),
        None => PathAndQuery::from_static("/"),
    };
    if path_and_query == "*" {
        if *method != Method::OPTIONS {
            return Err(ProxyError::BadRequest(
                "asterisk-form target is only for OPTIONS",
            ));
        }
    } else if !path_and_query.as_str().starts_with('/') {
        return Err(ProxyError::BadRequest("request target must start with '/'"));
    }
    for value in parts.headers.values() {
        let bytes = value.as_bytes();
        // RFC 9113 §8.2.1: no leading or trailing whitespace. http's
        // HeaderValue already refuses CR, LF, NUL and other controls.
        if matches!(bytes.first(), Some(b' ' | b'\t')) || matches!(bytes.last(), Some(b' ' | b'\t'))
        {
            return Err(ProxyError::BadRequest(
                "header value with leading or trailing whitespace",
            ));
        }
    }
    let content_length = content_length(&parts.headers)?;
    if ctx.protocol == Protocol::Http2 && parts.headers.contains_key(header::TRANSFER_ENCODING) {
        return Err(ProxyError::BadRequest(
            "transfer-encoding is not allowed in HTTP/2",
        ));
    }
    if let Some(length) = content_length {
        if length > config.limits.max_request_body_bytes {
            return Err(ProxyError::BodyTooLarge {
                limit: config.limits.max_request_body_bytes,
            });
        }
    }
    let upgrade = match extended {
        Some(upgrade) => Some(upgrade),
        None if ctx.protocol == Protocol::Http1 => http1_upgrade(parts, content_length),
        None => None,
    };
    Ok(Target {
        method: method.clone(),
        authority,
        path_and_query,
        content_length,
        upgrade,
    })
}

/// An HTTP/2 extended CONNECT (RFC 8441), which becomes a WebSocket
/// handshake: `Some` for `:protocol websocket`, a 501 for any other
/// protocol, `None` for every other request.
fn extended_connect(
    parts: &http::request::Parts,
    ctx: &ConnContext,
) -> Result<Option<Upgrade>, ProxyError> {
    if ctx.protocol != Protocol::Http2 || parts.method != Method::CONNECT {
        return Ok(None);
    }
    let Some(protocol) = parts.extensions.get::<h2::ext::Protocol>() else {
        return Ok(None);
    };
    if !protocol.as_str().eq_ignore_ascii_case("websocket") {
        return Err(ProxyError::MethodNotImplemented(format!(
            "CONNECT with :protocol {}",
            protocol.as_str()
        )));
    }
    // RFC 8441 §4: :scheme and :path are required, unlike in a CONNECT.
    if parts.uri.scheme().is_none() || parts.uri.path_and_query().is_none() {
        return Err(ProxyError::BadRequest(
            "extended CONNECT without :scheme or :path",
        ));
    }
    Ok(Some(Upgrade::Websocket))
}

/// The protocols an HTTP/1.1 request may switch to at the origin: a `GET`
/// with no body, `upgrade` in its `Connection` field and an `Upgrade`
/// field naming something other than `h2c`.
fn http1_upgrade(parts: &http::request::Parts, content_length: Option<u64>) -> Option<Upgrade> {
    if parts.method != Method::GET
        || parts.version != Version::HTTP_11
        || content_length.is_some_and(|length| length > 0)
        || parts.headers.contains_key(header::TRANSFER_ENCODING)
        || !has_token(&parts.headers, &header::CONNECTION, "upgrade")
    {
        return None;
    }
    let protocols: Vec<&str> = parts
        .headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|protocol| {
            let name = protocol.split('/').next().unwrap_or("");
            !protocol.is_empty() && !name.eq_ignore_ascii_case("h2c")
        })
        .collect();
    if protocols.is_empty() {
        return None;
    }
    HeaderValue::from_str(&protocols.join(", "))
        .ok()
        .map(Upgrade::Http1)
}

/// Whether a comma-separated field lists `token` (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: &HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|item| item.trim().eq_ignore_ascii_case(token))
}

/// The authority: `:authority` (or an absolute-form target) wins over
/// `Host`, per RFC 9113 §8.3.1, and the origin sees exactly one Host.
fn authority(parts: &http::request::Parts, ctx: &ConnContext) -> Result<Authority, ProxyError> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    let authority = match (parts.uri.authority(), host) {
        (Some(authority), _) => authority.clone(),
        (None, Some(host)) => {
            Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(host.as_bytes()))
                .map_err(|_| ProxyError::BadRequest("invalid authority"))?
        }
        (None, None) => {
            return Err(ProxyError::BadRequest(match ctx.protocol {
                Protocol::Http1 => "missing Host header",
                Protocol::Http2 => "missing :authority",
            }))
        }
    };
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(ProxyError::BadRequest("authority must be host[:port]"));
    }
    if authority.as_str().bytes().any(|b| b.is_ascii_uppercase()) {
        return Authority::from_maybe_shared(authority.as_str().to_ascii_lowercase())
            .map_err(|_| ProxyError::BadRequest("invalid authority"));
    }
    Ok(authority)
}

/// Every Content-Length value must be the same plain decimal number.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ProxyError> {
    let mut found: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value.as_bytes();
        if text.is_empty() || text.len() > 19 || !text.iter().all(u8::is_ascii_digit) {
            return Err(ProxyError::BadRequest("invalid content-length"));
        }
        let parsed: u64 = std::str::from_utf8(text)
            .ok()
            .and_then(|t| t.parse().ok())
            .ok_or(ProxyError::BadRequest("invalid content-length"))?;
        match found {
            Some(previous) if previous != parsed => {
                return Err(ProxyError::BadRequest("conflicting content-length values"))
            }
            _ => found = Some(parsed),
        }
    }
    Ok(found)
}

/// Build the request the origin receives.
pub fn origin_request(
    parts: &http::request::Parts,
    target: &Target,
    body: OriginBody,
    body_is_empty: bool,
    ctx: &ConnContext,
    config: &Config,
) -> Result<Request<OriginBody>, ProxyError> {
    let mut headers = HeaderMap::with_capacity(parts.headers.len() + 6);
    let listed = connection_listed(&parts.headers);
    let mut cookies: Vec<&[u8]> = Vec::new();
    let trust = config.forwarding.trust_incoming;
    for (name, value) in &parts.headers {
        if is_hop_by_hop(name, &listed) {
            continue;
        }
        match name.as_str() {
            // Rewritten below from validated facts.
            "host" | "content-length" | "expect" | "via" => continue,
            // Spoofable client-address claims.
            "x-real-ip" => continue,
            "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host" | "forwarded"
                if !trust =>
            {
                continue
            }
            // HTTP/2 splits cookies into crumbs (RFC 9113 §8.2.3).
            "cookie" => {
                cookies.push(value.as_bytes());
                continue;
            }
            // CGI-style origins merge `x_forwarded_for` into
            // `x-forwarded-for`; never let one through.
            other if other.contains('_') => continue,
            _ => {}
        }
        headers.append(name.clone(), value.clone());
    }
    if !cookies.is_empty() {
        let joined = cookies.join(&b"; "[..]);
        if let Ok(value) = HeaderValue::from_bytes(&joined) {
            headers.insert(header::COOKIE, value);
        }
    }
    let fields = ctx.fields_for(&target.authority);
    let fields = match &fields {
        Some(fields) => fields,
        None => return Err(ProxyError::BadRequest("invalid authority")),
    };
    headers.insert(header::HOST, fields.host.clone());
    add_forwarding(
        &mut headers,
        &parts.headers,
        ctx,
        fields,
        trust,
        config.forwarding.via,
    );
    match target.content_length {
        Some(length) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        }
        None if body_is_empty && method_expects_body(&target.method) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
        }
        None => {}
    }
    match &target.upgrade {
        Some(Upgrade::Http1(protocols)) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, protocols.clone());
        }
        Some(Upgrade::Websocket) => {
            headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            // RFC 8441 §5: an HTTP/2 client sends no key; the proxy makes
            // its own for the origin ([`crate::tunnel::Handshake`]).
            headers.remove(header::SEC_WEBSOCKET_KEY);
            headers
                .entry(header::SEC_WEBSOCKET_VERSION)
                .or_insert(HeaderValue::from_static("13"));
        }
        None => {}
    }
    let mut request = Request::new(body);
    *request.method_mut() = target.method.clone();
    // Origin-form: the request line carries the path and query only.
    *request.uri_mut() = http::Uri::from(target.path_and_query.clone());
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    Ok(request)
}

fn method_expects_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The proxy's own forwarding fields. What depends only on the connection
/// and its authority is made once per connection ([`ConnContext::fields_for`]);
/// only a trusted front proxy's own fields make a request need new ones.
fn add_forwarding(
    headers: &mut HeaderMap,
    incoming: &HeaderMap,
    ctx: &ConnContext,
    fields: &AuthorityFields,
    trust: bool,
    via: bool,
) {
    let proto = ctx.scheme();
    let appended = |name: &HeaderName, ours: &HeaderValue| {
        if !trust {
            return None;
        }
        let existing = incoming.get(name)?;
        let mut joined = Vec::with_capacity(existing.len() + 2 + ours.len());
        joined.extend_from_slice(existing.as_bytes());
        joined.extend_from_slice(b", ");
        joined.extend_from_slice(ours.as_bytes());
        HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).ok()
    };
    let xff = appended(&X_FORWARDED_FOR, &ctx.client_ip).unwrap_or_else(|| ctx.client_ip.clone());
    headers.insert(X_FORWARDED_FOR, xff);
    if !(trust && incoming.contains_key(X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    }
    if !(trust && incoming.contains_key(X_FORWARDED_HOST)) {
        headers.insert(X_FORWARDED_HOST, fields.host.clone());
    }
    let forwarded =
        appended(&header::FORWARDED, &fields.forwarded).unwrap_or_else(|| fields.forwarded.clone());
    headers.insert(header::FORWARDED, forwarded);
    if via {
        let hop = HeaderValue::from_static(match ctx.protocol {
            Protocol::Http1 => "1.1 linkpush",
            Protocol::Http2 => "2 linkpush",
        });
        // A Via from the client is kept whatever `trust` says: it only
        // lists hops, never an address.
        let value = match incoming.get(header::VIA) {
            Some(existing) => {
                let mut joined = Vec::with_capacity(existing.len() + 2 + hop.len());
                joined.extend_from_slice(existing.as_bytes());
                joined.extend_from_slice(b", ");
                joined.extend_from_slice(hop.as_bytes());
                HeaderValue::from_maybe_shared(bytes::Bytes::from(joined)).unwrap_or(hop)
            }
            None => hop,
        };
        headers.insert(header::VIA, value);
    }
}

/// Strip connection-specific fields from an origin response and check that
/// its framing is something the client can be given safely.
pub fn clean_response(parts: &mut http::response::Parts) -> Result<(), ProxyError> {
    if parts.status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ProxyError::OriginProtocol(
            "origin switched protocols unasked".into(),
        ));
    }
    // One look at every field first: most responses carry none of those
    // that need work, and a pass over a few fields costs less than a
    // lookup of each name that might be there.
    let mut chunked = false;
    let mut strip = false;
    for name in parts.headers.keys() {
        chunked |= *name == header::TRANSFER_ENCODING;
        strip |= HOP_BY_HOP.contains(name) || *name == header::HOST;
    }
    // RFC 9112 §6.3: a transfer coding list must end in chunked, or the body
    // runs to the connection's close, which a proxy cannot tell from a
    // truncation.
    let codings: Vec<String> = if chunked {
        parts
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("?").split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect()
    } else {
        Vec::new()
    };
    if chunked && codings.last().map(String::as_str) != Some("chunked") {
        return Err(ProxyError::OriginProtocol(
            "origin transfer-encoding does not end in chunked".into(),
        ));
    }
    // RFC 9110 §15.3.5: a 204 has no content; one that declares some is
    // framed in a way no client can agree on.
    if parts.status == StatusCode::NO_CONTENT {
        let declares_body = !codings.is_empty()
            || parts
                .headers
                .get_all(header::CONTENT_LENGTH)
                .iter()
                .any(|v| v.as_bytes() != b"0");
        if declares_body {
            return Err(ProxyError::OriginProtocol(
                "origin sent a 204 that declares a body".into(),
            ));
        }
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    // hyper already decoded the chunked framing; a Content-Length sent beside
    // Transfer-Encoding is meaningless (RFC 9112 §6.3) and must not reach an
    // HTTP/2 client, which would check the DATA against it.
    if chunked {
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    if strip {
        strip_hop_by_hop(&mut parts.headers);
    }
    Ok(())
}

/// Remove connection-specific fields, and every field `Connection` names,
/// from a response.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let listed = connection_listed(headers);
    for name in HOP_BY_HOP.iter().chain(&listed) {
        headers.remove(name);
    }
    // Some origins (php -S) echo `Host` in responses; it means nothing
    // there.
    headers.remove(header::HOST);
}

/// The response's `Link` field values that the push policy reads. A value
/// that is not valid UTF-8 is left out of the policy (and forwarded as it
/// is).
pub fn link_lines(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::LINK)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .collect()
}

/// Replace the response's `Link` fields with `lines`, keeping the values
/// the policy never read.
pub fn replace_links(headers: &mut HeaderMap, lines: Vec<String>) {
    let opaque: Vec<HeaderValue> = headers
        .get_all(header::LINK)
        .iter()
        .filter(|value| value.to_str().is_err())
        .cloned()
        .collect();
    headers.remove(header::LINK);
    for line in lines {
        if let Ok(value) = HeaderValue::from_str(&line) {
            headers.append(header::LINK, value);
        }
    }
    for value in opaque {
        headers.append(header::LINK, value);
    }
}
