//! One access-log line in either format, from an [`Entry`]: JSON for log
//! collectors, an extended combined log format for people. Both escape
//! whatever a client sent, so no header value can break a line or forge
//! another. See the "Access log" section of docs/configuration.md.

use std::fmt::{self, Display};
use std::io::Write as _;
use std::net::SocketAddr;

use serde::{Serialize, Serializer};

/// What one line says, borrowed from the record it is written for. The
/// field order is the JSON key order.
#[derive(Debug, Serialize)]
pub(super) struct Entry<'a> {
    /// When the line was written, that is when the exchange ended.
    #[serde(serialize_with = "display")]
    pub time: humantime::Rfc3339Timestamp,
    #[serde(serialize_with = "display")]
    pub request_id: RequestId,
    pub conn: u64,
    pub client: SocketAddr,
    pub protocol: &'static str,
    pub tls_version: Option<&'static str>,
    pub alpn: Option<&'static str>,
    pub method: &'a str,
    pub authority: Option<&'a str>,
    pub path: Option<&'a str>,
    pub status: u16,
    pub bytes: u64,
    pub duration_ms: f64,
    pub origin_ms: Option<f64>,
    /// The upstream address the request was sent to.
    pub upstream: Option<&'a str>,
    pub pushed: bool,
    pub pushes: &'a [String],
    pub referer: Option<&'a str>,
    pub user_agent: Option<&'a str>,
    pub error: Option<&'a str>,
    /// Bytes a tunnel (a WebSocket, say) carried after a switch of
    /// protocols; only on the lines of such requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<Tunnel>,
}

/// What a tunnel carried: client to origin, and origin to client.
#[derive(Debug, Clone, Copy, Serialize)]
pub(super) struct Tunnel {
    pub up: u64,
    pub down: u64,
}

/// A request id as it is printed: 16 hex digits.
#[derive(Debug, Clone, Copy)]
pub(super) struct RequestId(pub u64);

impl Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

fn display<T: Display, S: Serializer>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Milliseconds to the microsecond, as both formats show them.
pub(super) fn millis(duration: std::time::Duration) -> f64 {
    (duration.as_secs_f64() * 1_000_000.0).round() / 1000.0
}

/// One JSON object: numbers as numbers, absent values as `null`.
pub(super) fn json(entry: &Entry<'_>, out: &mut Vec<u8>) {
    // Only a failing writer or a failing `Serialize` impl can make this
    // fail, and a Vec and the types above do not.
    let _ = serde_json::to_writer(out, entry);
}

/// `client - - [time] "METHOD authority path PROTOCOL" status bytes
/// "referer" "user-agent" duration_ms origin_ms req=.. conn=.. tls=..
/// alpn=.. pushed=.. pushes=".." upstream=".." err=".."`, with `-` for an
/// absent value.
pub(super) fn text(entry: &Entry<'_>, out: &mut Vec<u8>) {
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{} - - [{}] \"", entry.client, entry.time);
    escaped(out, entry.method);
    out.push(b' ');
    escaped(out, entry.authority.unwrap_or("-"));
    out.push(b' ');
    escaped(out, entry.path.unwrap_or("-"));
    let _ = write!(
        out,
        " {}\" {} {} ",
        entry.protocol, entry.status, entry.bytes
    );
    quoted(out, entry.referer);
    out.push(b' ');
    quoted(out, entry.user_agent);
    let _ = write!(out, " {:.3} ", entry.duration_ms);
    match entry.origin_ms {
        Some(ms) => {
            let _ = write!(out, "{ms:.3}");
        }
        None => out.push(b'-'),
    }
    let _ = write!(
        out,
        " req={} conn={} tls={} alpn={} pushed={} pushes=",
        entry.request_id,
        entry.conn,
        entry.tls_version.unwrap_or("-"),
        entry.alpn.unwrap_or("-"),
        entry.pushed,
    );
    if entry.pushes.is_empty() {
        out.push(b'-');
    } else {
        out.push(b'"');
        for (i, path) in entry.pushes.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            escaped(out, path);
        }
        out.push(b'"');
    }
    out.extend_from_slice(b" upstream=");
    match entry.upstream {
        Some(address) => quoted(out, Some(address)),
        None => out.push(b'-'),
    }
    out.extend_from_slice(b" err=");
    match entry.error {
        Some(error) => quoted(out, Some(error)),
        None => out.push(b'-'),
    }
    if let Some(tunnel) = entry.tunnel {
        let _ = write!(out, " tunnel={}/{}", tunnel.up, tunnel.down);
    }
}

/// `"value"` escaped, or `"-"` when absent, as the combined format has it.
fn quoted(out: &mut Vec<u8>, value: Option<&str>) {
    out.push(b'"');
    escaped(out, value.unwrap_or("-"));
    out.push(b'"');
}

/// `value` with `"` and `\` escaped by a backslash and every control
/// character written as an escape, so a value never ends a quoted field or
/// the line.
fn escaped(out: &mut Vec<u8>, value: &str) {
    let mut start = 0;
    for (at, ch) in value.char_indices() {
        let escape: Option<&[u8]> = match ch {
            '"' => Some(b"\\\""),
            '\\' => Some(b"\\\\"),
            '\n' => Some(b"\\n"),
            '\r' => Some(b"\\r"),
            '\t' => Some(b"\\t"),
            _ => None,
        };
        if escape.is_none() && !ch.is_control() {
            continue;
        }
        out.extend_from_slice(&value.as_bytes()[start..at]);
        match escape {
            Some(escape) => out.extend_from_slice(escape),
            None => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(ch));
            }
        }
        start = at + ch.len_utf8();
    }
    out.extend_from_slice(&value.as_bytes()[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn entry<'a>(pushes: &'a [String]) -> Entry<'a> {
        Entry {
            time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(1_234)),
            request_id: RequestId(0xab),
            conn: 7,
            client: "192.0.2.1:5000".parse().expect("address"),
            protocol: "HTTP/2",
            tls_version: Some("TLSv1.3"),
            alpn: Some("h2"),
            method: "GET",
            authority: Some("example.com"),
            path: Some("/index.html"),
            status: 200,
            bytes: 1234,
            duration_ms: 4.25,
            origin_ms: Some(3.5),
            upstream: Some("127.0.0.1:8080"),
            pushed: false,
            pushes,
            referer: None,
            user_agent: Some("agent/1"),
            error: None,
            tunnel: None,
        }
    }

    fn text_of(entry: &Entry<'_>) -> String {
        let mut out = Vec::new();
        text(entry, &mut out);
        String::from_utf8(out).expect("UTF-8")
    }

    #[test]
    fn text_line_is_extended_combined_log_format() {
        let pushes = ["/a.css".to_owned(), "/b.js".to_owned()];
        assert_eq!(
            text_of(&entry(&pushes)),
            "192.0.2.1:5000 - - [1970-01-01T00:00:01.234Z] \"GET example.com /index.html HTTP/2\" \
             200 1234 \"-\" \"agent/1\" 4.250 3.500 req=00000000000000ab conn=7 tls=TLSv1.3 \
             alpn=h2 pushed=false pushes=\"/a.css /b.js\" upstream=\"127.0.0.1:8080\" err=-"
        );
        let mut bare = entry(&[]);
        (bare.origin_ms, bare.tls_version, bare.alpn) = (None, None, None);
        (bare.authority, bare.path, bare.error) = (None, None, Some("origin: refused"));
        bare.upstream = None;
        assert_eq!(
            text_of(&bare),
            "192.0.2.1:5000 - - [1970-01-01T00:00:01.234Z] \"GET - - HTTP/2\" 200 1234 \"-\" \
             \"agent/1\" 4.250 - req=00000000000000ab conn=7 tls=- alpn=- pushed=false \
             pushes=- upstream=- err=\"origin: refused\""
        );
    }

    #[test]
    fn hostile_values_cannot_end_a_field_or_the_line() {
        let table = [
            ("plain", "plain"),
            ("a\"b", "a\\\"b"),
            ("a\\\"", "a\\\\\\\""),
            ("x\" 200 0 \"y\nfake", "x\\\" 200 0 \\\"y\\nfake"),
            ("\r\t\u{0}\u{7f}\u{85}é", "\\r\\t\\u{0}\\u{7f}\\u{85}é"),
        ];
        for (value, shown) in table {
            let mut out = Vec::new();
            escaped(&mut out, value);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), shown, "{value:?}");
            let mut agent = entry(&[]);
            agent.user_agent = Some(value);
            let line = text_of(&agent);
            assert!(!line.contains(['\n', '\r']), "{line}");
            assert!(line.contains(&format!(" \"{shown}\" 4.250 ")), "{line}");
        }
    }

    #[test]
    fn json_line_is_typed() {
        let pushes = ["/a.css".to_owned()];
        let mut with = entry(&pushes);
        with.user_agent = Some("q\"b\\s\nl\u{1}");
        let mut out = Vec::new();
        json(&with, &mut out);
        assert!(!out.contains(&b'\n'));
        let line: serde_json::Value = serde_json::from_slice(&out).expect("JSON");
        assert_eq!(
            line,
            serde_json::json!({
                "time": "1970-01-01T00:00:01.234Z",
                "request_id": "00000000000000ab",
                "conn": 7,
                "client": "192.0.2.1:5000",
                "protocol": "HTTP/2",
                "tls_version": "TLSv1.3",
                "alpn": "h2",
                "method": "GET",
                "authority": "example.com",
                "path": "/index.html",
                "status": 200,
                "bytes": 1234,
                "duration_ms": 4.25,
                "origin_ms": 3.5,
                "upstream": "127.0.0.1:8080",
                "pushed": false,
                "pushes": ["/a.css"],
                "referer": null,
                "user_agent": "q\"b\\s\nl\u{1}",
                "error": null,
            })
        );
    }

    #[test]
    fn a_tunnel_adds_its_bytes_to_both_formats() {
        let mut tunnelled = entry(&[]);
        tunnelled.tunnel = Some(Tunnel { up: 3, down: 5 });
        assert!(text_of(&tunnelled).ends_with(" err=- tunnel=3/5"));
        let mut out = Vec::new();
        json(&tunnelled, &mut out);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(parsed["tunnel"], serde_json::json!({"up": 3, "down": 5}));
        out.clear();
        json(&entry(&[]), &mut out);
        let parsed: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert!(parsed.get("tunnel").is_none());
    }

    #[test]
    fn millis_are_rounded_to_the_microsecond() {
        assert_eq!(millis(Duration::from_nanos(1_234_567)), 1.235);
        assert_eq!(millis(Duration::from_secs(2)), 2000.0);
        assert_eq!(millis(Duration::ZERO), 0.0);
    }

    /// The samples in docs/configuration.md, from the entry they describe.
    #[test]
    fn documented_samples_are_what_the_formats_write() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
        let doc = std::fs::read_to_string(path).expect("docs/configuration.md");
        let section = &doc[doc
            .find("### The access log")
            .expect("an access log section")..];
        let sample = |fence: &str| {
            let start = section.find(fence).expect(fence) + fence.len();
            section[start..]
                .lines()
                .next()
                .expect("a sample line")
                .to_owned()
        };
        let pushes = ["/a.css".to_owned(), "/b.js".to_owned()];
        let mut documented = entry(&pushes);
        documented.time = humantime::format_rfc3339_millis(
            humantime::parse_rfc3339("2025-06-01T12:00:00.123Z").expect("time"),
        );
        (documented.request_id, documented.conn) = (RequestId(0x5f0c_3a9e_12b4_d7a1), 1);
        let mut json_line = Vec::new();
        json(&documented, &mut json_line);
        assert_eq!(
            String::from_utf8(json_line).expect("UTF-8"),
            sample("```json\n")
        );
        let text_sample = section
            .lines()
            .find(|line| line.starts_with("192.0.2.1:5000 - - ["))
            .expect("a text sample");
        assert_eq!(text_of(&documented), text_sample);

        // The field table lists the JSON keys.
        let value: serde_json::Value = serde_json::from_str(&sample("```json\n")).expect("JSON");
        let keys: Vec<&str> = value
            .as_object()
            .expect("an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut rows: Vec<&str> = section
            .lines()
            .skip_while(|line| !line.starts_with("| field |"))
            .skip(2)
            .take_while(|line| line.starts_with('|'))
            .map(|line| line.split('`').nth(1).expect("a field name"))
            .collect();
        rows.sort_unstable();
        assert_eq!(keys, rows, "serde_json's map keeps keys sorted");
    }
}
