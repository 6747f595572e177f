//! Facts about one client connection, shared by all its requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};

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
    /// What this connection holds of its worker's origin pool.
    pub share: ClientShare,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

impl ConnContext {
    pub fn new(peer: SocketAddr, local: SocketAddr, secure: bool, protocol: Protocol) -> Self {
        ConnContext {
            id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
            peer,
            local,
            secure,
            protocol,
            share: ClientShare::default(),
        }
    }

    pub fn scheme(&self) -> &'static str {
        if self.secure {
            "https"
        } else {
            "http"
        }
    }
}
