//! Facts about one client connection, shared by all its requests.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;
use http::uri::Authority;
use http::HeaderValue;

use crate::origin::ClientShare;

/// The client-facing protocol of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "HTTP/1.1",
            Protocol::Http2 => "HTTP/2",
        }
    }
}

/// One client connection, as every layer below the listener sees it.
/// Shared as an `Arc` by the connection's requests and pushes.
#[derive(Debug)]
pub struct ConnContext {
    /// A process-unique connection number, for logs.
    pub id: u64,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// The connection arrived over TLS (so the request scheme is https).
    pub secure: bool,
    pub protocol: Protocol,
    /// The TLS version (`"TLSv1.3"`) and the protocol agreed by ALPN
    /// (`"h2"`, `"http/1.1"`), for the access log; `None` in cleartext or
    /// without ALPN.
    pub tls_version: Option<&'static str>,
    pub alpn: Option<&'static str>,
    /// The site whose name the client sent in its TLS handshake (SNI).
    pub sni_site: Option<usize>,
    /// What this connection holds of its worker's origin pool.
    pub share: ClientShare,
    /// The client's address as `X-Forwarded-For` gives it.
    pub client_ip: HeaderValue,
    /// The fields for the connection's first authority, made once: most
    /// connections only ever name one.
    fields: OnceLock<AuthorityFields>,
}

/// The request fields that depend on the connection and the authority.
#[derive(Debug, Clone)]
pub struct AuthorityFields {
    pub authority: Authority,
    /// `Host` toward the origin.
    pub host: HeaderValue,
    /// The proxy's own `Forwarded` element.
    pub forwarded: HeaderValue,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl ConnContext {
    pub fn new(peer: SocketAddr, local: SocketAddr, secure: bool, protocol: Protocol) -> Self {
        let id = NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed);
        ConnContext {
            id,
            peer,
            local,
            secure,
            protocol,
            tls_version: None,
            alpn: None,
            sni_site: None,
            share: ClientShare::new(id, peer, local),
            client_ip: HeaderValue::from_maybe_shared(Bytes::from(peer.ip().to_string()))
                .unwrap_or(HeaderValue::from_static("unknown")),
            fields: OnceLock::new(),
        }
    }

    /// The connection as it arrived over a completed TLS handshake.
    pub fn with_tls(
        mut self,
        version: Option<&'static str>,
        alpn: Option<&'static str>,
        sni_site: Option<usize>,
    ) -> Self {
        self.tls_version = version;
        self.alpn = alpn;
        self.sni_site = sni_site;
        self
    }

    /// The fields for `authority`; `None` if it cannot be a field value.
    pub fn fields_for(&self, authority: &Authority) -> Option<Cow<'_, AuthorityFields>> {
        if let Some(fields) = self.fields.get() {
            if fields.authority == *authority {
                return Some(Cow::Borrowed(fields));
            }
            return self.make_fields(authority).map(Cow::Owned);
        }
        let fields = self.make_fields(authority)?;
        Some(Cow::Borrowed(self.fields.get_or_init(|| fields)))
    }

    fn make_fields(&self, authority: &Authority) -> Option<AuthorityFields> {
        let host = HeaderValue::from_str(authority.as_str()).ok()?;
        let ip = self.peer.ip();
        // RFC 7239 §6: an IPv6 node is bracketed and quoted.
        let node = if ip.is_ipv6() {
            format!("\"[{ip}]\"")
        } else {
            ip.to_string()
        };
        let forwarded = format!(
            "for={node};host=\"{}\";proto={}",
            authority.as_str(),
            self.scheme()
        );
        let forwarded = HeaderValue::from_maybe_shared(Bytes::from(forwarded)).ok()?;
        Some(AuthorityFields {
            authority: authority.clone(),
            host,
            forwarded,
        })
    }

    pub fn scheme(&self) -> &'static str {
        if self.secure {
            "https"
        } else {
            "http"
        }
    }
}
