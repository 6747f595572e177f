use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::check::{parse_origin, parse_size, Loose};
use super::*;

const DEV_ORIGIN: &str = "http://127.0.0.1:8080";

/// Flags that complete an empty file: an origin and a certificate.
fn dev_flags() -> Overrides {
    Overrides {
        origin: Some(DEV_ORIGIN.to_owned()),
        self_signed: true,
        ..Overrides::default()
    }
}

fn load_str(text: &str, overrides: &Overrides) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("/nonexistent"), overrides)
}

fn problems(text: &str, overrides: &Overrides) -> Vec<Problem> {
    match load_str(text, overrides) {
        Err(ConfigError::Invalid(problems)) => problems,
        other => panic!("expected Invalid for {text:?}, got {other:?}"),
    }
}

/// Asserts exactly one problem, under `key`, whose message contains `needle`.
fn assert_problem(text: &str, overrides: &Overrides, key: &str, needle: &str) {
    let found = problems(text, overrides);
    assert_eq!(found.len(), 1, "{text:?}: {found:#?}");
    assert_eq!(found[0].key, key, "{text:?}: {found:#?}");
    assert!(
        found[0].message.contains(needle),
        "{text:?}: {:?} does not contain {needle:?}",
        found[0].message
    );
}

fn parse_message(text: &str) -> String {
    match load_str(text, &dev_flags()) {
        Err(ConfigError::Parse {
            message,
            path: None,
        }) => message,
        other => panic!("expected Parse for {text:?}, got {other:?}"),
    }
}

/// A directory holding empty `cert.pem` and `key.pem` files.
fn cert_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    for name in ["cert.pem", "key.pem"] {
        fs::write(dir.path().join(name), "").expect("write test file");
    }
    dir
}

#[test]
fn empty_file_with_flags_gives_every_default() {
    let config = load_str("", &dev_flags()).expect("valid");
    assert_eq!(
        config.listeners,
        [ListenerConfig {
            address: "127.0.0.1:8443".parse().expect("address"),
            tls: true,
            proxy_protocol: None,
        }]
    );
    assert_eq!(config.tls.source, Some(TlsSource::SelfSigned));
    let origin = &config.origin;
    let host = "127.0.0.1".to_owned();
    assert_eq!(origin.addr, Some(OriginAddr::Tcp { host, port: 8080 }));
    assert_eq!(origin.max_concurrent_requests, 256);
    assert_eq!(origin.max_idle_per_host, 256);
    assert_eq!(origin.pool_idle_timeout, Duration::from_secs(30));
    assert_eq!(origin.max_response_header_bytes, 65536);
    let t = &config.timeouts;
    assert_eq!(t.origin_connect, Duration::from_secs(5));
    assert_eq!(t.origin_response_header, Duration::from_secs(60));
    assert_eq!(t.client_idle, Duration::from_secs(180));
    assert_eq!(t.client_header_read, Duration::from_secs(30));
    assert_eq!(t.tls_handshake, Duration::from_secs(10));
    assert_eq!(t.shutdown_grace, Duration::from_secs(30));
    let l = &config.limits;
    assert_eq!(l.max_connections, 10_000);
    assert_eq!(l.max_concurrent_streams, 100);
    assert_eq!(l.max_request_header_bytes, 65536);
    assert_eq!(l.max_request_headers, 100);
    assert_eq!(l.max_request_body_bytes, 1 << 30);
    assert!(!config.forwarding.trust_incoming);
    assert!(config.forwarding.via);
    assert_eq!(config.log.level, None);
    assert_eq!(config.log.access_log_path, None);
    assert_eq!(config.log.format, LogFormat::Text);
    assert!(config.log.access_log);
    assert_eq!(config.metrics.listen, None);
    let p = &config.push;
    assert!(p.enabled);
    assert_eq!(p.preload, PreloadMode::Push);
    assert_eq!(p.max_pushes_per_response, 10);
    assert_eq!(p.max_pushed_bytes_per_response, 1 << 20);
    assert_eq!(p.diary_size, 1024);
    assert!(!p.allow_credentialed);
    assert!(p.forward_headers.is_empty());
    assert!(!p.explain);
    assert!(!p.dry_run);
    assert!(config.hints.forward_origin_103);
    assert!(!config.hints.learn);
    assert_eq!(config.hints.learn_min_clients, 3);
    assert!(!config.hints.learn_query);
}

#[test]
fn load_without_a_file_uses_defaults_and_flags() {
    let config = Config::load(None, &dev_flags()).expect("valid");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.timeouts.client_idle, Duration::from_secs(180));
}

#[test]
fn empty_file_without_flags_lists_origin_and_certificate() {
    let found = problems("", &Overrides::default());
    let keys: Vec<&str> = found.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["tls", "origin.url"]);
    assert!(found[0]
        .message
        .contains("the default listener (127.0.0.1:8443) uses TLS"));
    assert!(found[1].message.contains("is required"));
    assert!(found[1].message.contains("--origin URL"));
}

#[test]
fn full_file_sets_every_key() {
    let dir = cert_dir();
    let text = r#"
        [[listen]]
        address = "0.0.0.0:443"

        [[listen]]
        address = "[::1]:8080"
        tls = false

        [tls]
        cert = "cert.pem"
        key = "key.pem"
        self_signed = false

        [origin]
        url = "http://app.internal:3000"
        max_concurrent_requests = 32
        max_idle_connections = 0
        pool_idle_timeout = "90s"
        max_response_header_size = 16384

        [timeouts]
        origin_connect = "500ms"
        origin_response_header = "2m"
        client_idle = "1h"
        client_header_read = "15s"
        tls_handshake = "3s"
        shutdown_grace = "0s"

        [limits]
        max_connections = 50
        max_concurrent_streams = 250
        max_request_header_size = "32KiB"
        max_request_headers = 64
        max_request_body_size = "100MB"

        [forwarding]
        trust_incoming = true
        via = false

        [log]
        level = "linkpush=debug,info"
        format = "json"
        access_log = false
        access_log_path = "logs/access.log"

        [metrics]
        listen = "127.0.0.1:9090"

        [push]
        enabled = false
        preload = "hint-only"
        max_pushes_per_response = 4
        max_pushed_bytes_per_response = "512KiB"
        diary_size = 16
        allow_credentialed = true
        forward_headers = ["cookie", "x-tenant"]
        explain = true
        dry_run = true

        [hints]
        forward_origin_103 = false
        learn = true
        learn_min_clients = 5
        learn_query = true
    "#;
    let config = Config::from_toml_str(text, dir.path(), &Overrides::default()).expect("valid");
    let listen = |address: &str, tls| ListenerConfig {
        address: address.parse().expect("address"),
        tls,
        proxy_protocol: None,
    };
    assert_eq!(
        config.listeners,
        [listen("0.0.0.0:443", true), listen("[::1]:8080", false)]
    );
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    assert_eq!(config.tls.source, Some(TlsSource::Files { cert, key }));
    let origin = &config.origin;
    let host = "app.internal".to_owned();
    assert_eq!(origin.addr, Some(OriginAddr::Tcp { host, port: 3000 }));
    assert_eq!(origin.max_concurrent_requests, 32);
    assert_eq!(origin.max_idle_per_host, 0);
    assert_eq!(origin.pool_idle_timeout, Duration::from_secs(90));
    assert_eq!(origin.max_response_header_bytes, 16384);
    let t = &config.timeouts;
    assert_eq!(t.origin_connect, Duration::from_millis(500));
    assert_eq!(t.origin_response_header, Duration::from_secs(120));
    assert_eq!(t.client_idle, Duration::from_secs(3600));
    assert_eq!(t.client_header_read, Duration::from_secs(15));
    assert_eq!(t.tls_handshake, Duration::from_secs(3));
    assert_eq!(t.shutdown_grace, Duration::ZERO);
    let l = &config.limits;
    assert_eq!(l.max_connections, 50);
    assert_eq!(l.max_concurrent_streams, 250);
    assert_eq!(l.max_request_header_bytes, 32 * 1024);
    assert_eq!(l.max_request_headers, 64);
    assert_eq!(l.max_request_body_bytes, 100_000_000);
    assert!(config.forwarding.trust_incoming);
    assert!(!config.forwarding.via);
    assert_eq!(config.log.level.as_deref(), Some("linkpush=debug,info"));
    assert_eq!(config.log.format, LogFormat::Json);
    assert!(!config.log.access_log);
    assert_eq!(
        config.log.access_log_path,
        Some(dir.path().join("logs/access.log"))
    );
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9090".parse().expect("address"))
    );
    let p = &config.push;
    assert!(!p.enabled);
    assert_eq!(p.preload, PreloadMode::HintOnly);
    assert_eq!(p.max_pushes_per_response, 4);
    assert_eq!(p.max_pushed_bytes_per_response, 512 * 1024);
    assert_eq!(p.diary_size, 16);
    assert!(p.allow_credentialed);
    assert_eq!(p.forward_headers, ["cookie", "x-tenant"]);
    assert!(p.explain);
    assert!(p.dry_run);
    assert!(!config.hints.forward_origin_103);
    assert!(config.hints.learn);
    assert_eq!(config.hints.learn_min_clients, 5);
    assert!(config.hints.learn_query);
}

#[test]
fn shipped_reference_config_is_valid_and_runnable() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("proxy.toml");
    let config = Config::load(Some(&path), &Overrides::default()).expect("valid");
    assert_eq!(config.listeners.len(), 1);
    assert_eq!(config.listeners[0].address.to_string(), "127.0.0.1:8443");
    assert!(config.listeners[0].tls);
    assert_eq!(config.tls.source, Some(TlsSource::SelfSigned));
    let host = "127.0.0.1".to_owned();
    assert_eq!(
        config.origin.addr,
        Some(OriginAddr::Tcp { host, port: 8080 })
    );
}

#[test]
fn documented_examples_are_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/configuration.md");
    let doc = fs::read_to_string(path).expect("docs/configuration.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .filter_map(|rest| rest.split("```").next())
        .collect();
    assert!(blocks.len() >= 2, "no TOML examples found");
    // --self-signed stands in for certificate files that exist only in production.
    let flags = Overrides {
        self_signed: true,
        ..Overrides::default()
    };
    for block in blocks {
        if let Err(err) = load_str(block, &flags) {
            // Sites name their own certificate files, which exist only in
            // production: a missing one is the only problem allowed.
            let missing_site_files = err.problems().iter().all(|p| {
                p.key.starts_with("sites[")
                    && (p.key.ends_with(".cert") || p.key.ends_with(".key"))
                    && p.message.starts_with("cannot read")
            });
            if err.problems().is_empty() || !missing_site_files {
                panic!("documented example is invalid: {err}\n{block}");
            }
        }
    }
}

#[test]
fn each_bad_value_is_explained() {
    let flags = dev_flags();
    let cases = [
        (
            "[[listen]]\naddress = \"localhost:8443\"",
            "listen[0].address",
            "\"localhost:8443\" is not a socket address; expected an IP address and a port in host:port form",
        ),
        ("[[listen]]\ntls = true", "listen[0].address", "is required"),
        ("listen = []", "listen", "no listener is configured"),
        (
            "[[listen]]\naddress = \"0.0.0.0:8443\"\n[[listen]]\naddress = \"0.0.0.0:8443\"\ntls = false",
            "listen[1].address",
            "0.0.0.0:8443 is already used by listen[0].address",
        ),
        (
            "[[listen]]\naddress = \"0.0.0.0:8443\"\nproxy_protocol = true",
            "listen[0].proxy_protocol_from",
            "is required when proxy_protocol = true",
        ),
        (
            "[[listen]]\naddress = \"0.0.0.0:8443\"\nproxy_protocol = true\nproxy_protocol_from = []",
            "listen[0].proxy_protocol_from",
            "is required when proxy_protocol = true",
        ),
        (
            "[[listen]]\naddress = \"0.0.0.0:8443\"\nproxy_protocol_from = [\"10.0.0.0/8\"]",
            "listen[0].proxy_protocol_from",
            "has no effect unless listen[0].proxy_protocol = true",
        ),
        (
            "[[listen]]\naddress = \"0.0.0.0:8443\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
            "listen[0].proxy_protocol_from[1]",
            "\"10.0.0.0/33\" is not an address range; expected CIDR notation",
        ),
        (
            "[[listen]]\naddress = \"0.0.0.0:8443\"\nproxy_protocol = true\nproxy_protocol_from = [\"lb.internal\"]",
            "listen[0].proxy_protocol_from[0]",
            "\"lb.internal\" is not an address range",
        ),
        (
            "[[listen]]\naddress = \"0.0.0.0:8443\"\nproxy_protocol = true\nproxy_protocol_from = [\"10.1.2.3/8\"]",
            "listen[0].proxy_protocol_from[0]",
            "\"10.1.2.3/8\" has bits set past its prefix length; did you mean \"10.0.0.0/8\"?",
        ),
        (
            "[timeouts]\norigin_connect = \"five seconds\"",
            "timeouts.origin_connect",
            "\"five seconds\" is not a duration; expected a number with a unit, such as \"5s\"",
        ),
        ("[timeouts]\nclient_idle = \"0s\"", "timeouts.client_idle", "is zero"),
        ("[timeouts]\ntls_handshake = 10", "timeouts.tls_handshake", "10 has no unit"),
        ("[timeouts]\norigin_response_header = \"\"", "timeouts.origin_response_header", "is not a duration"),
        ("[timeouts]\nclient_header_read = \"-1s\"", "timeouts.client_header_read", "is not a duration"),
        ("[origin]\npool_idle_timeout = \"0ms\"", "origin.pool_idle_timeout", "is zero"),
        ("[origin]\nmax_concurrent_requests = 0", "origin.max_concurrent_requests", "0 is too small; expected at least 1"),
        ("[origin]\nmax_idle_connections = -1", "origin.max_idle_connections", "expected at least 0"),
        (
            "[origin]\nmax_response_header_size = \"4KiB\"",
            "origin.max_response_header_size",
            "\"4KiB\" is too small; expected at least 8KiB (8192 bytes)",
        ),
        (
            "[origin]\nmax_response_header_size = \"64 kilobytes\"",
            "origin.max_response_header_size",
            "\"64 kilobytes\" is not a size; expected a number of bytes or a number with a unit",
        ),
        ("[limits]\nmax_connections = 0", "limits.max_connections", "expected at least 1"),
        ("[limits]\nmax_concurrent_streams = 0", "limits.max_concurrent_streams", "expected at least 1"),
        (
            "[limits]\nmax_concurrent_streams = 5000000000",
            "limits.max_concurrent_streams",
            "5000000000 is too large; expected at most 4294967295",
        ),
        (
            "[limits]\nmax_request_header_size = \"4GiB\"",
            "limits.max_request_header_size",
            "\"4GiB\" is too large; expected at most 4294967295 bytes",
        ),
        ("[limits]\nmax_request_headers = 0", "limits.max_request_headers", "expected at least 1"),
        ("[limits]\nmax_request_body_size = 0", "limits.max_request_body_size", "0 is zero"),
        ("[limits]\nmax_request_body_size = -5", "limits.max_request_body_size", "-5 is negative"),
        ("[limits]\nmax_request_body_size = \"1.5GiB\"", "limits.max_request_body_size", "is not a size"),
        ("[limits]\nmax_request_body_size = \"99999999TiB\"", "limits.max_request_body_size", "is too large"),
        ("[log]\nlevel = \"\"", "log.level", "must not be empty"),
        ("[log]\nlevel = \"info debug\"", "log.level", "contains whitespace"),
        ("[log]\nlevel = \"infox\"", "log.level", "\"infox\" is not a level"),
        ("[log]\nlevel = \"linkpush=loud\"", "log.level", "is not a tracing filter"),
        ("[log]\naccess_log_path = \"\"", "log.access_log_path", "must not be empty"),
        ("[log]\nformat = \"pretty\"", "log.format", "\"pretty\" is not a log format; expected \"text\" or \"json\""),
        ("[metrics]\nlisten = \"9090\"", "metrics.listen", "is not a socket address"),
        (
            "[metrics]\nlisten = \"127.0.0.1:8443\"",
            "metrics.listen",
            "127.0.0.1:8443 is already used by the default listener",
        ),
        ("[push]\npreload = \"always\"", "push.preload", "expected \"push\" or \"hint-only\""),
        ("[push]\nmax_pushes_per_response = 0", "push.max_pushes_per_response", "expected at least 1"),
        ("[push]\nmax_pushed_bytes_per_response = \"0KiB\"", "push.max_pushed_bytes_per_response", "is zero"),
        ("[push]\ndiary_size = 0", "push.diary_size", "expected at least 1"),
        ("[push]\nforward_headers = [\"Cookie\"]", "push.forward_headers[0]", "not lower case; write \"cookie\""),
        ("[push]\nforward_headers = [\"x-a\", \":path\"]", "push.forward_headers[1]", "is a pseudo-header"),
        ("[push]\nforward_headers = [\"x y\"]", "push.forward_headers[0]", "is not a valid header name"),
        ("[push]\nforward_headers = [\"\"]", "push.forward_headers[0]", "is empty"),
        ("[hints]\nlearn_min_clients = 0", "hints.learn_min_clients", "0 is too small; expected at least 1"),
        ("[hints]\nlearn_min_clients = 65", "hints.learn_min_clients", "65 is too large; expected at most 64"),
        ("[hints]\nlearn_max_entries = 0", "hints.learn_max_entries", "expected at least 1"),
    ];
    for (text, key, needle) in cases {
        assert_problem(text, &flags, key, needle);
    }
}

#[test]
fn bad_origin_urls_are_explained() {
    let flags = Overrides {
        self_signed: true,
        ..Overrides::default()
    };
    let cases = [
        ("https://app:8443", "cleartext HTTP/1.1"),
        (
            "http://127.0.0.1:8080/app",
            "has a path, query or fragment (\"/app\")",
        ),
        (
            "http://127.0.0.1:8080/?a=1",
            "has a path, query or fragment",
        ),
        (
            "127.0.0.1:8080",
            "is not an origin URL; expected \"http://host:port\" or \"unix:/path/to.sock\"",
        ),
        ("ftp://files", "unsupported scheme \"ftp\""),
        ("http://app:0", "invalid port \"0\""),
        ("http://app:99999", "invalid port \"99999\""),
        ("http://app:", "invalid port \"\""),
        ("http://", "does not have a valid host"),
        ("http://::1:8080", "IPv6 address without brackets"),
        ("http://[::1:8080", "unclosed '['"),
        ("http://[zz]:80", "not an IPv6 address"),
        ("http://user:pw@app", "user information"),
        ("unix:run/puma.sock", "absolute socket path"),
        ("unix:", "absolute socket path"),
        ("unix://run/puma.sock", "absolute socket path"),
    ];
    for (url, needle) in cases {
        let text = format!("[origin]\nurl = {url:?}");
        assert_problem(&text, &flags, "origin.url", needle);
    }
}

#[test]
fn origin_urls_parse() {
    let tcp = |host: &str, port| OriginAddr::Tcp {
        host: host.to_owned(),
        port,
    };
    let unix = |path: &str| OriginAddr::Unix(PathBuf::from(path));
    let cases = [
        ("http://127.0.0.1:8080", tcp("127.0.0.1", 8080)),
        ("http://app.internal", tcp("app.internal", 80)),
        ("http://localhost:3000/", tcp("localhost", 3000)),
        ("HTTP://[::1]:9000", tcp("::1", 9000)),
        ("http://[::1]", tcp("::1", 80)),
        ("unix:/run/puma.sock", unix("/run/puma.sock")),
        ("unix:///run/puma.sock", unix("/run/puma.sock")),
    ];
    for (url, expected) in cases {
        assert_eq!(parse_origin(url), Ok(expected), "{url}");
    }
}

#[test]
fn unix_socket_origin_from_the_file() {
    let text = "[origin]\nurl = \"unix:/run/puma.sock\"\n[tls]\nself_signed = true";
    let config = load_str(text, &Overrides::default()).expect("valid");
    assert_eq!(
        config.origin.addr,
        Some(OriginAddr::Unix(PathBuf::from("/run/puma.sock")))
    );
}

#[test]
fn sizes_parse_with_and_without_units() {
    let text = |s: &str| Loose::Text(s.to_owned());
    let cases = [
        (Loose::Int(1024), 1024),
        (text("1024"), 1024),
        (text("64KiB"), 64 * 1024),
        (text("1 MiB"), 1 << 20),
        (text("1gib"), 1 << 30),
        (text("2TiB"), 2 << 40),
        (text("100MB"), 100_000_000),
        (text("5kb"), 5_000),
        (text("7B"), 7),
    ];
    for (raw, bytes) in cases {
        assert_eq!(parse_size(&raw), Ok(bytes), "{raw}");
    }
    for bad in ["", "KiB", "1.5MiB", "12 parsecs", "-1KiB"] {
        assert!(parse_size(&text(bad)).is_err(), "{bad:?}");
    }
}

#[test]
fn every_problem_is_reported_in_one_call() {
    let text = r#"
        [[listen]]
        address = "0.0.0.0"

        [origin]
        url = "https://app"

        [timeouts]
        origin_connect = "soon"

        [limits]
        max_concurrent_streams = 0

        [log]
        format = "xml"
    "#;
    let err = load_str(text, &Overrides::default()).expect_err("invalid");
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "listen[0].address",
            "origin.url",
            "timeouts.origin_connect",
            "limits.max_concurrent_streams",
            "log.format",
        ]
    );
    let shown = err.to_string();
    let mut lines = shown.lines();
    assert_eq!(lines.next(), Some("invalid configuration:"));
    assert!(lines.all(|line| line.starts_with("  - ")), "{shown}");
    assert!(
        shown.contains("\n  - log.format: \"xml\" is not a log format"),
        "{shown}"
    );
}

#[test]
fn unknown_keys_are_parse_errors_naming_the_key_and_line() {
    let top = parse_message("origin_url = \"http://a\"");
    assert!(top.contains("unknown field `origin_url`"), "{top}");
    assert!(top.contains("line 1"), "{top}");

    let nested = parse_message("[timeouts]\norigin_connect = \"5s\"\norigin_conect = \"5s\"");
    assert!(nested.contains("unknown field `origin_conect`"), "{nested}");
    assert!(nested.contains("line 3"), "{nested}");
    assert!(nested.contains("origin_connect"), "{nested}");

    let in_array = parse_message("[[listen]]\naddress = \"0.0.0.0:1\"\nport = 1");
    assert!(in_array.contains("unknown field `port`"), "{in_array}");

    let table = parse_message("[pushes]\nenabled = true");
    assert!(table.contains("unknown field `pushes`"), "{table}");
}

#[test]
fn wrong_types_are_parse_errors() {
    let message = parse_message("[push]\nenabled = \"yes\"");
    assert!(message.contains("expected a boolean"), "{message}");
    let message = parse_message("[timeouts]\nclient_idle = 1.5");
    assert!(
        message.contains("expected a string with a unit"),
        "{message}"
    );
}

#[test]
fn tls_needs_exactly_one_certificate_source() {
    let origin = Overrides {
        origin: Some(DEV_ORIGIN.to_owned()),
        ..Overrides::default()
    };
    assert_problem("", &origin, "tls", "uses TLS, so a certificate is needed");
    assert_problem(
        "[tls]\ncert = \"cert.pem\"",
        &origin,
        "tls.key",
        "tls.cert is set but tls.key is not",
    );
    assert_problem(
        "[tls]\nkey = \"key.pem\"",
        &origin,
        "tls.cert",
        "tls.key is set but tls.cert is not",
    );

    let dir = cert_dir();
    let both = "[tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\nself_signed = true";
    let err = Config::from_toml_str(both, dir.path(), &origin).expect_err("invalid");
    assert_eq!(err.problems().len(), 1);
    assert_eq!(err.problems()[0].key, "tls.self_signed");
    assert!(err.problems()[0]
        .message
        .contains("cannot be combined with tls.cert and tls.key"));
}

#[test]
fn certificate_files_must_be_readable() {
    let dir = cert_dir();
    let origin = Overrides {
        origin: Some(DEV_ORIGIN.to_owned()),
        ..Overrides::default()
    };
    let text = "[tls]\ncert = \"missing.pem\"\nkey = \".\"";
    let err = Config::from_toml_str(text, dir.path(), &origin).expect_err("invalid");
    let found = err.problems();
    assert_eq!(found.len(), 2, "{found:#?}");
    assert_eq!(found[0].key, "tls.cert");
    let missing = dir.path().join("missing.pem");
    assert!(found[0]
        .message
        .contains(&format!("cannot read {}", missing.display())));
    assert_eq!(found[1].key, "tls.key");
    assert!(found[1].message.contains("is not a regular file"));
}

#[test]
fn relative_certificate_paths_follow_the_config_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let conf = dir.path().join("conf");
    fs::create_dir_all(conf.join("certs")).expect("create dirs");
    fs::write(conf.join("certs/site.pem"), "").expect("write");
    fs::write(conf.join("certs/site.key"), "").expect("write");
    let absolute_key = conf.join("certs/site.key");
    let text = format!(
        "[origin]\nurl = \"http://127.0.0.1:8080\"\n[tls]\ncert = \"certs/site.pem\"\nkey = {:?}\n",
        absolute_key.display().to_string()
    );
    let path = conf.join("proxy.toml");
    fs::write(&path, text).expect("write");

    let config = Config::load(Some(&path), &Overrides::default()).expect("valid");
    let expected = TlsSource::Files {
        cert: conf.join("certs/site.pem"),
        key: absolute_key,
    };
    assert_eq!(config.tls.source, Some(expected));
}

#[test]
fn missing_config_file_is_a_read_error() {
    let path = Path::new("/nonexistent/linkpush/proxy.toml");
    let err = Config::load(Some(path), &Overrides::default()).expect_err("missing");
    assert!(
        matches!(&err, ConfigError::Read { path: p, .. } if p == path),
        "{err:?}"
    );
    assert!(err
        .to_string()
        .starts_with("cannot read config file /nonexistent/linkpush/proxy.toml: "));
}

#[test]
fn flags_win_over_the_file() {
    let dir = cert_dir();
    let text = r#"
        [[listen]]
        address = "0.0.0.0:443"

        [tls]
        self_signed = true

        [origin]
        url = "http://127.0.0.1:8080"

        [log]
        level = "warn"
        format = "text"

        [metrics]
        listen = "127.0.0.1:9090"
    "#;
    let flags = Overrides {
        listen: vec!["127.0.0.1:9443".to_owned()],
        listen_plain: vec!["127.0.0.1:9080".to_owned()],
        origin: Some("unix:/run/app.sock".to_owned()),
        cert: Some(dir.path().join("cert.pem")),
        key: Some(dir.path().join("key.pem")),
        self_signed: false,
        log_level: Some("debug".to_owned()),
        log_format: Some("json".to_owned()),
        metrics_listen: Some("127.0.0.1:9191".to_owned()),
        workers: Some(3),
    };
    let config = Config::from_toml_str(text, dir.path(), &flags).expect("valid");
    let addresses: Vec<(String, bool)> = config
        .listeners
        .iter()
        .map(|l| (l.address.to_string(), l.tls))
        .collect();
    assert_eq!(
        addresses,
        [
            ("127.0.0.1:9443".to_owned(), true),
            ("127.0.0.1:9080".to_owned(), false)
        ]
    );
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    assert_eq!(config.tls.source, Some(TlsSource::Files { cert, key }));
    assert_eq!(
        config.origin.addr,
        Some(OriginAddr::Unix(PathBuf::from("/run/app.sock")))
    );
    assert_eq!(config.log.level.as_deref(), Some("debug"));
    assert_eq!(config.log.format, LogFormat::Json);
    assert_eq!(
        config.metrics.listen,
        Some("127.0.0.1:9191".parse().expect("address"))
    );
    assert_eq!(config.server.workers, 3);
}

#[test]
fn self_signed_flag_replaces_certificate_files_from_the_file() {
    let text = "[tls]\ncert = \"missing.pem\"\nkey = \"missing.key\"";
    let config = load_str(text, &dev_flags()).expect("valid");
    assert_eq!(config.tls.source, Some(TlsSource::SelfSigned));
}

#[test]
fn listen_plain_alone_needs_no_certificate() {
    let flags = Overrides {
        origin: Some(DEV_ORIGIN.to_owned()),
        listen_plain: vec!["0.0.0.0:8080".to_owned()],
        ..Overrides::default()
    };
    let config = load_str("", &flags).expect("valid");
    assert_eq!(
        config.listeners,
        [ListenerConfig {
            address: "0.0.0.0:8080".parse().expect("address"),
            tls: false,
            proxy_protocol: None,
        }]
    );
    assert_eq!(config.tls.source, None);
}

#[test]
fn listen_plain_adds_to_the_file_listeners() {
    let flags = Overrides {
        listen_plain: vec!["127.0.0.1:8080".to_owned()],
        ..dev_flags()
    };
    let config = load_str("[[listen]]\naddress = \"127.0.0.1:8443\"", &flags).expect("valid");
    let tls: Vec<bool> = config.listeners.iter().map(|l| l.tls).collect();
    assert_eq!(tls, [true, false]);
}

#[test]
fn flag_problems_name_the_flag() {
    let dir = cert_dir();
    let flags = Overrides {
        listen: vec!["127.0.0.1:1".to_owned(), "nowhere".to_owned()],
        listen_plain: vec!["127.0.0.1:1".to_owned()],
        origin: Some("https://app".to_owned()),
        cert: Some(dir.path().join("cert.pem")),
        key: None,
        self_signed: false,
        log_level: Some(String::new()),
        log_format: Some("xml".to_owned()),
        metrics_listen: Some("localhost:9090".to_owned()),
        workers: Some(5000),
    };
    let text = "[origin]\nurl = \"http://127.0.0.1:8080\"\n[log]\nformat = \"text\"";
    let err = Config::from_toml_str(text, dir.path(), &flags).expect_err("invalid");
    let keys: Vec<&str> = err.problems().iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "--listen",
            "--listen-plain",
            "--key",
            "--origin",
            "--log-level",
            "--log-format",
            "--metrics-listen",
            "--workers",
        ]
    );
    let shown = err.to_string();
    assert!(
        shown.contains("  - --listen: \"nowhere\" is not a socket address"),
        "{shown}"
    );
    assert!(
        shown.contains("  - --listen-plain: 127.0.0.1:1 is already used by --listen"),
        "{shown}"
    );
    assert!(
        shown.contains("  - --key: --cert is set but --key is not"),
        "{shown}"
    );
}

#[test]
fn cert_and_self_signed_flags_conflict() {
    let dir = cert_dir();
    let flags = Overrides {
        cert: Some(dir.path().join("cert.pem")),
        key: Some(dir.path().join("key.pem")),
        ..dev_flags()
    };
    assert_problem(
        "",
        &flags,
        "--self-signed",
        "cannot be combined with --cert and --key",
    );
}

#[test]
fn parse_errors_name_the_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("proxy.toml");
    fs::write(&path, "[log]\nlevel = \"info\"\ncolour = true\n").expect("write");
    let err = Config::load(Some(&path), &dev_flags()).expect_err("invalid");
    let shown = err.to_string();
    assert!(
        shown.starts_with(&format!("cannot parse {}: ", path.display())),
        "{shown}"
    );
    assert!(shown.contains("unknown field `colour`"), "{shown}");
}

#[test]
fn proxy_protocol_listeners_keep_their_trusted_sources() {
    let text = r#"
        [[listen]]
        address = "0.0.0.0:443"
        proxy_protocol = true
        proxy_protocol_from = ["10.0.0.0/8", "192.0.2.7", "2001:db8::/32"]

        [[listen]]
        address = "127.0.0.1:8080"
        tls = false
        proxy_protocol = false
    "#;
    let config = load_str(text, &dev_flags()).expect("valid");
    let trusted = config.listeners[0]
        .proxy_protocol
        .as_ref()
        .expect("PROXY protocol on");
    let ip = |text: &str| text.parse::<std::net::IpAddr>().expect("an address");
    for (source, believed) in [
        ("10.20.30.40", true),
        ("192.0.2.7", true),
        ("192.0.2.8", false),
        ("2001:db8::1", true),
        ("2001:db9::1", false),
        // An IPv4 client of a dual-stack listener.
        ("::ffff:10.1.1.1", true),
        ("127.0.0.1", false),
    ] {
        assert_eq!(trusted.contains(ip(source)), believed, "{source}");
    }
    assert_eq!(config.listeners[1].proxy_protocol, None);
}

#[test]
fn sites_routes_and_upstreams_are_read_in_order() {
    let text = r#"
        [upstreams.shop]
        servers = ["http://10.0.0.11:8080", "unix:/run/php.sock"]
        balance = "least_outstanding"
        health_check_path = "/health"
        [upstreams.static]
        servers = ["http://127.0.0.1:8081"]

        [[sites]]
        names = ["Shop.Example", "*.shop.example"]
        upstream = "shop"
        [[sites.routes]]
        path = "/static"
        upstream = "static"
        [[sites.routes]]
        exact = "/api"
        push = false
        hints = false
        learn = false
        [sites.push]
        explain = true

        [[sites]]
        default = true
    "#;
    let config = load_str(text, &dev_flags()).expect("valid");
    let names: Vec<&str> = config.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["origin", "shop", "static"]);
    assert_eq!(config.upstreams[1].settings.servers.len(), 2);
    assert_eq!(
        config.upstreams[1].settings.balance,
        Balance::LeastOutstanding
    );
    let shop = &config.sites[0];
    assert_eq!(shop.names, ["shop.example", "*.shop.example"]);
    let routes: Vec<(PathMatch, usize, bool)> = shop
        .routes
        .iter()
        .map(|r| (r.path.clone(), r.upstream, r.push))
        .collect();
    assert_eq!(
        routes,
        [
            (PathMatch::Prefix("/static".into()), 2, true),
            (PathMatch::Exact("/api".into()), 1, false),
            (PathMatch::Prefix("/".into()), 1, true),
        ]
    );
    assert!(shop.push.explain, "the site's own [sites.push]");
    assert!(!config.push.explain, "[push] itself unchanged");
    // The default site goes to origin.url, with [push] as written.
    let default = &config.sites[1];
    assert!(default.default && default.names.is_empty());
    assert_eq!(default.routes.len(), 1);
    assert_eq!(default.routes[0].upstream, 0);
    assert!(!default.push.explain);
}

#[test]
fn without_sites_the_file_is_one_default_site_in_front_of_origin_url() {
    let config = load_str("[server]\nnames = [\"shop.example\"]\n", &dev_flags()).expect("valid");
    assert_eq!(config.upstreams.len(), 1);
    assert_eq!(config.upstreams[0].name, "origin");
    let [site] = config.sites.as_slice() else {
        panic!("one implicit site: {:?}", config.sites);
    };
    assert!(site.default);
    assert_eq!(site.names, ["shop.example"]);
    assert_eq!(site.routes[0].path, PathMatch::Prefix("/".into()));
}

#[test]
fn bad_sites_routes_and_upstreams_are_explained() {
    let no_origin = Overrides {
        self_signed: true,
        ..Overrides::default()
    };
    let cases: &[(&str, &Overrides, &str, &str)] = &[
        (
            "[[sites]]\nnames = [\"a.example\"]\nupstream = \"nope\"",
            &dev_flags(),
            "sites[0].upstream",
            "\"nope\" is not an upstream; declare it as [upstreams.nope], or use one of [\"origin\"]",
        ),
        (
            "[[sites]]\nupstream = \"origin\"",
            &dev_flags(),
            "sites[0].names",
            "is required",
        ),
        (
            "[[sites]]\nnames = [\"a.example\"]",
            &no_origin,
            "sites[0].upstream",
            "is required without origin.url",
        ),
        (
            "[[sites]]\nnames = [\"a.example\"]\n[[sites]]\nnames = [\"b.example\", \"a.example\"]",
            &dev_flags(),
            "sites[1].names",
            "\"a.example\" is already a name of sites[0]",
        ),
        (
            "[[sites]]\ndefault = true\n[[sites]]\ndefault = true",
            &dev_flags(),
            "sites[1].default",
            "sites[0] is the default site already",
        ),
        (
            "[[sites]]\ndefault = true\n[[sites.routes]]\npath = \"/a\"\nexact = \"/b\"",
            &dev_flags(),
            "sites[0].routes[0].exact",
            "not both",
        ),
        (
            "[[sites]]\ndefault = true\n[[sites.routes]]\nupstream = \"origin\"",
            &dev_flags(),
            "sites[0].routes[0].path",
            "is required",
        ),
        (
            "[[sites]]\ndefault = true\n[[sites.routes]]\npath = \"static\"",
            &dev_flags(),
            "sites[0].routes[0].path",
            "\"static\" is not a path",
        ),
        (
            "[[sites]]\ndefault = true\n[sites.push]\ndiary_size = 5",
            &dev_flags(),
            "sites[0].push.diary_size",
            "is a connection's setting",
        ),
        (
            "[[sites]]\ndefault = true\n[sites.hints]\nlearn_ttl = \"0s\"",
            &dev_flags(),
            "sites[0].hints.learn_ttl",
            "",
        ),
        (
            "[server]\nnames = [\"a.example\"]\n[[sites]]\ndefault = true",
            &dev_flags(),
            "server.names",
            "applies only without [[sites]]",
        ),
        (
            "[[sites]]\nnames = [\"a.example\"]\ncert = \"a.pem\"",
            &dev_flags(),
            "sites[0].key",
            "sites[0].cert is set but sites[0].key is not; give both or neither",
        ),
        (
            "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\nhealth_check_status = 99",
            &dev_flags(),
            "upstreams.app.health_check_status",
            "",
        ),
        (
            "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\nhealth_check_status = 600",
            &dev_flags(),
            "upstreams.app.health_check_status",
            "",
        ),
        (
            "[upstreams.origin]\nservers = [\"http://127.0.0.1:1\"]",
            &dev_flags(),
            "upstreams.origin",
            "stands for origin.url",
        ),
        (
            "[upstreams.app]\nbalance = \"random\"",
            &dev_flags(),
            "upstreams.app.servers",
            "is required",
        ),
        (
            "[upstreams.app]\nservers = [\"https://127.0.0.1:1\"]",
            &dev_flags(),
            "upstreams.app.servers[0]",
            "uses https",
        ),
        (
            "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\nbalance = \"random\"",
            &dev_flags(),
            "upstreams.app.balance",
            "\"random\" is not a balancing method",
        ),
        (
            "[upstreams.app]\nservers = [\"http://127.0.0.1:1\"]\nhealth_check_path = \"health\"",
            &dev_flags(),
            "upstreams.app.health_check_path",
            "is not a request path",
        ),
    ];
    for (text, flags, key, needle) in cases {
        let found = problems(text, flags);
        assert!(
            found
                .iter()
                .any(|p| p.key == *key && p.message.contains(needle)),
            "{text:?}: expected a problem under {key} containing {needle:?}, got {found:?}"
        );
    }
}

#[test]
fn an_upstream_has_at_most_64_addresses() {
    let servers = |n: usize| {
        let list: Vec<String> = (0..n)
            .map(|i| format!("\"http://127.0.0.1:{}\"", 1000 + i))
            .collect();
        format!("[upstreams.app]\nservers = [{}]\n", list.join(", "))
    };
    assert!(load_str(&servers(64), &dev_flags()).is_ok());
    assert_problem(
        &servers(65),
        &dev_flags(),
        "upstreams.app.servers",
        "has 65 addresses; an upstream has at most 64",
    );
}
