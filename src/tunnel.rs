//! Switched protocols: a client and an origin that agree to leave HTTP
//! (WebSocket, or any other HTTP/1.1 upgrade) are joined by a tunnel that
//! copies bytes both ways until the origin closes, or it idles for
//! `timeouts.tunnel_idle`, or shutdown's grace period ends.
//!
//! - [`Handshake`]: what the origin is asked, and whether its answer is
//!   the switch the client asked for. An HTTP/2 extended CONNECT
//!   (RFC 8441) becomes a WebSocket handshake toward the origin with a key
//!   of the proxy's own, and the origin's 101 a 200 on the stream.
//! - [`run`]: the splice, once a frontend has the client's side as bytes
//!   (an HTTP/1.1 connection hyper hands over, or an HTTP/2 stream).
//!
//! An answer that is not a 101 is an ordinary response, and the client's
//! connection stays HTTP. The origin connection of a tunnel never goes
//! back to the pool, and counts against `origin.max_concurrent_requests`
//! until the tunnel ends.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use http::header::{self, HeaderMap, HeaderValue};
use http::StatusCode;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::access_log::Record;
use crate::error::ProxyError;
use crate::http_rules::{self, Upgrade};
use crate::origin::{Hold, ResponseBody};
use crate::runtime::Worker;

/// RFC 6455 §1.3: appended to the key before hashing it for the accept.
const WEBSOCKET_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Bytes read from one side before they are written to the other.
const CHUNK: usize = 16 * 1024;

/// One switch of protocols asked of the origin.
#[derive(Debug)]
pub struct Handshake {
    upgrade: Upgrade,
    /// For an extended CONNECT: the `Sec-WebSocket-Accept` the origin must
    /// answer to the proxy's key.
    accept: Option<HeaderValue>,
}

impl Handshake {
    /// Ready the origin request's `headers` for `upgrade`: an extended
    /// CONNECT gets a fresh `Sec-WebSocket-Key`.
    pub fn start(upgrade: &Upgrade, headers: &mut HeaderMap) -> Result<Handshake, ProxyError> {
        let accept = match upgrade {
            Upgrade::Http1(_) => None,
            Upgrade::Websocket => {
                let key = websocket_key()?;
                let accept = websocket_accept(key.as_bytes());
                headers.insert(header::SEC_WEBSOCKET_KEY, key);
                Some(accept)
            }
        };
        Ok(Handshake {
            upgrade: upgrade.clone(),
            accept,
        })
    }

    /// Whether the origin's response switches protocols as asked:
    /// `Ok(false)` for anything but a 101 (an ordinary response, to be
    /// cleaned as any other), `Ok(true)` for a 101 that names only
    /// protocols the client asked for (its head is then made fit for the
    /// client), and an error for a 101 that does not.
    pub fn accepted(&self, head: &mut http::response::Parts) -> Result<bool, ProxyError> {
        if head.status != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(false);
        }
        let offered = tokens(&head.headers, &header::UPGRADE);
        let asked = match &self.upgrade {
            Upgrade::Http1(protocols) => protocols
                .to_str()
                .unwrap_or("")
                .split(',')
                .map(|p| p.trim().to_owned())
                .collect(),
            Upgrade::Websocket => vec!["websocket".to_owned()],
        };
        let named = |protocol: &String| asked.iter().any(|a| a.eq_ignore_ascii_case(protocol));
        if offered.is_empty() || !offered.iter().all(named) {
            return Err(ProxyError::OriginProtocol(
                "origin switched to a protocol the client did not ask for".into(),
            ));
        }
        http_rules::strip_hop_by_hop(&mut head.headers);
        head.headers.remove(header::CONTENT_LENGTH);
        match &self.accept {
            None => {
                let offered = HeaderValue::from_str(&offered.join(", ")).map_err(|_| {
                    ProxyError::OriginProtocol("origin's Upgrade field is not text".into())
                })?;
                head.headers
                    .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                head.headers.insert(header::UPGRADE, offered);
            }
            Some(expected) => {
                // RFC 8441 §5: the stream carries no key and no accept.
                let accept = head.headers.remove(header::SEC_WEBSOCKET_ACCEPT);
                if accept.as_ref() != Some(expected) {
                    return Err(ProxyError::OriginProtocol(
                        "origin's Sec-WebSocket-Accept does not answer the proxy's key".into(),
                    ));
                }
                head.status = StatusCode::OK;
            }
        }
        Ok(true)
    }
}

/// The tokens of a comma-separated field.
fn tokens(headers: &HeaderMap, name: &header::HeaderName) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .filter(|token| !token.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A fresh `Sec-WebSocket-Key`: 16 random bytes in base64 (RFC 6455 §4.1).
fn websocket_key() -> Result<HeaderValue, ProxyError> {
    let mut nonce = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce)
        .map_err(|_| ProxyError::Unavailable("no randomness for a WebSocket key"))?;
    let key = base64::engine::general_purpose::STANDARD.encode(nonce);
    HeaderValue::from_str(&key).map_err(|_| ProxyError::Unavailable("invalid WebSocket key"))
}

/// The `Sec-WebSocket-Accept` that answers `key` (RFC 6455 §4.2.2).
fn websocket_accept(key: &[u8]) -> HeaderValue {
    let mut hashed = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    hashed.update(key);
    hashed.update(WEBSOCKET_GUID.as_bytes());
    let accept = base64::engine::general_purpose::STANDARD.encode(hashed.finish());
    HeaderValue::from_str(&accept).expect("base64 is a valid header value")
}

/// The origin's side of a switch it accepted: its connection, which hyper
/// hands over once the 101 has been read, and the hold that keeps the
/// connection out of the pool.
pub struct OriginSide {
    /// `None` if hyper did not prepare the connection for the switch.
    upgrade: Option<OnUpgrade>,
    _hold: Hold,
}

impl OriginSide {
    /// Take the origin's side out of an accepted 101.
    pub fn new(head: &mut http::response::Parts, body: ResponseBody) -> OriginSide {
        OriginSide {
            upgrade: head.extensions.remove::<OnUpgrade>(),
            _hold: body.into_hold(),
        }
    }
}

/// Bytes that went through a tunnel, each way.
#[derive(Default)]
struct Counts {
    /// Client to origin.
    up: AtomicU64,
    /// Origin to client.
    down: AtomicU64,
    /// When bytes last went either way, in ms since `born`.
    last_ms: AtomicU64,
}

/// Splice the client's side (`client_read`, `client_write`) with the
/// origin's, then finish the exchange's record with the bytes each way.
pub async fn run<R, W>(
    worker: &Worker,
    origin: OriginSide,
    client_read: R,
    client_write: W,
    mut record: Record,
) where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let timeouts = &worker.config.timeouts;
    let OriginSide { upgrade, _hold } = origin;
    // hyper has the connection ready by the time the 101 is parsed; this
    // bound is for an origin connection that failed in between.
    let Some(upgrade) = upgrade else {
        record.fail("origin connection cannot switch protocols");
        record.finish(0, &worker.metrics, worker.access_log());
        return;
    };
    let io = match tokio::time::timeout(timeouts.origin_read, upgrade).await {
        Ok(Ok(io)) => io,
        Ok(Err(error)) => {
            record.fail(format!("origin connection not handed over: {error}"));
            record.finish(0, &worker.metrics, worker.access_log());
            return;
        }
        Err(_) => {
            record.fail("origin connection not handed over in time");
            record.finish(0, &worker.metrics, worker.access_log());
            return;
        }
    };
    let (origin_read, origin_write) = tokio::io::split(TokioIo::new(io));
    let counts = Counts::default();
    let born = Instant::now();
    // The client ending its side is passed on, and the origin may still
    // answer; the origin ending its side ends the tunnel (a WebSocket
    // server closes first, RFC 6455 §7.1.1), so a client that never closes
    // cannot keep the origin connection.
    let up = async {
        pump(client_read, origin_write, &counts.up, &counts.last_ms, born).await?;
        std::future::pending::<io::Result<()>>().await
    };
    let down = pump(
        origin_read,
        client_write,
        &counts.down,
        &counts.last_ms,
        born,
    );
    let idle = timeouts.tunnel_idle;
    let idled = async {
        loop {
            let last = Duration::from_millis(counts.last_ms.load(Ordering::Relaxed));
            let quiet = born.elapsed().saturating_sub(last);
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    let closing = async {
        worker.shutdown.cancelled().await;
        tokio::time::sleep(timeouts.shutdown_grace).await;
    };
    let ended: Result<(), String> = tokio::select! {
        result = up => result.map_err(|error| format!("tunnel failed: {error}")),
        result = down => result.map_err(|error| format!("tunnel failed: {error}")),
        () = idled => Err(format!("tunnel idle for {idle:?}")),
        () = closing => Err("tunnel closed at shutdown".to_owned()),
    };
    if let Err(why) = ended {
        tracing::debug!(conn = record.conn().id, path = record.path(), %why, "tunnel ended");
        record.fail(why);
    }
    let up = counts.up.load(Ordering::Relaxed);
    let down = counts.down.load(Ordering::Relaxed);
    record.upgraded = Some((up, down));
    record.finish(down, &worker.metrics, worker.access_log());
}

/// Copy one direction until its reader ends, then end its writer (so a
/// half-close is passed on; a side that is gone already is no error).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    count: &AtomicU64,
    last_ms: &AtomicU64,
    born: Instant,
) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        count.fetch_add(n as u64, Ordering::Relaxed);
        last_ms.store(born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, fields: &[(&str, &str)]) -> http::response::Parts {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in fields {
            builder = builder.header(*name, *value);
        }
        builder.body(()).expect("valid response").into_parts().0
    }

    #[test]
    fn websocket_accept_matches_rfc_6455_example() {
        // RFC 6455 §1.3.
        assert_eq!(
            websocket_accept(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn http1_upgrade_answers() {
        let asked = Upgrade::Http1(HeaderValue::from_static("websocket, foo/2"));
        let handshake = Handshake::start(&asked, &mut HeaderMap::new()).expect("handshake");
        type Case = (
            u16,
            &'static [(&'static str, &'static str)],
            Result<bool, ()>,
        );
        let cases: [Case; 6] = [
            (200, &[], Ok(false)),
            (426, &[("upgrade", "websocket")], Ok(false)),
            (101, &[("upgrade", "WebSocket")], Ok(true)),
            (101, &[("upgrade", "foo/2")], Ok(true)),
            (101, &[("upgrade", "h2c")], Err(())),
            (101, &[], Err(())),
        ];
        for (status, fields, want) in cases {
            let mut head = response(status, fields);
            let got = handshake.accepted(&mut head).map_err(|_| ());
            assert_eq!(got, want, "{status} {fields:?}");
            if got == Ok(true) {
                assert_eq!(head.headers["connection"], "upgrade");
                assert_eq!(head.headers["upgrade"], fields[0].1);
            }
        }
    }

    #[test]
    fn extended_connect_checks_the_accept_and_answers_200() {
        let mut headers = HeaderMap::new();
        let handshake = Handshake::start(&Upgrade::Websocket, &mut headers).expect("handshake");
        let key = headers[header::SEC_WEBSOCKET_KEY].clone();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(key.as_bytes())
                .map(|k| k.len()),
            Ok(16)
        );
        let accept = websocket_accept(key.as_bytes());
        let accept = accept.to_str().expect("ascii");
        let mut head = response(
            101,
            &[
                ("upgrade", "websocket"),
                ("connection", "Upgrade"),
                ("sec-websocket-accept", accept),
                ("sec-websocket-protocol", "chat"),
            ],
        );
        assert_eq!(handshake.accepted(&mut head).ok(), Some(true));
        assert_eq!(head.status, StatusCode::OK);
        for gone in ["upgrade", "connection", "sec-websocket-accept"] {
            assert!(!head.headers.contains_key(gone), "{gone}");
        }
        assert_eq!(head.headers["sec-websocket-protocol"], "chat");

        let mut wrong = response(
            101,
            &[
                ("upgrade", "websocket"),
                ("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            ],
        );
        assert!(handshake.accepted(&mut wrong).is_err());
    }
}
