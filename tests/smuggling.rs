//! Request validation and HTTP/2 → HTTP/1.1 downgrade smuggling.
//!
//! Every request the origin could read differently than the proxy validated
//! it is refused before a byte reaches the origin; requests that are valid
//! but unusual reach the origin exactly as validated. Malformed HTTP/2 input
//! that the `h2` client refuses to produce is written frame by frame.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use support::*;

const SMUGGLED: &[u8] = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";

fn site() -> Routes {
    Routes::new()
        .route("/", Resp::new(200, "home"))
        .route("/after", Resp::new(200, "after"))
        .route("/upload", Resp::new(200, "uploaded"))
}

async fn setup() -> (TestOrigin, TestProxy) {
    let origin = TestOrigin::routes(site()).await;
    let proxy = TestProxy::start(&origin.url(), "").await;
    (origin, proxy)
}

fn assert_origin_untouched(origin: &TestOrigin, case: &str) {
    assert!(
        origin.seen().is_empty(),
        "{case}: the origin received {:?}",
        origin.seen_paths()
    );
}

/// A fresh connection asks for `/after` and must get the origin's answer:
/// nothing left over from an earlier request may be read as (part of) it.
async fn assert_next_request_is_clean(proxy: &TestProxy) {
    let mut client = proxy.h2(false).await;
    let request = client.request("GET", "/after").body(()).unwrap();
    let reply = client.try_exchange(request, None).await.expect("follow-up");
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, Bytes::from("after"));
}

fn with(mut fields: Vec<Field>, extra: &[Field]) -> Vec<Field> {
    fields.extend_from_slice(extra);
    fields
}

const OK_RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// A raw origin that answers every request with 200 "ok" and keeps the
/// connection open.
async fn ok_origin() -> RawOrigin {
    RawOrigin::start(|_| vec![OriginStep::write(OK_RESPONSE)]).await
}

// --- Content-Length (RFC 9113 §8.1.1) --------------------------------------

#[tokio::test]
async fn h2_data_beyond_a_zero_content_length_never_reaches_the_origin_as_a_request() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("POST", "/upload")
            .header("content-length", "0")
            .body(())
            .unwrap();
        let result = client
            .try_exchange(request, Some(Bytes::from_static(SMUGGLED)))
            .await;
        assert!(h2_rejected(&result), "{}", describe(&result));
        assert_next_request_is_clean(&proxy).await;
        let seen = origin.seen();
        assert!(
            seen.iter().all(|s| s.path != "/admin"),
            "the DATA frame became a request: {:?}",
            origin.seen_paths()
        );
        for upload in seen.iter().filter(|s| s.path == "/upload") {
            let lengths: Vec<_> = upload.headers.get_all("content-length").iter().collect();
            assert_eq!(lengths, ["0"], "{:?}", upload.headers);
            assert!(!upload.headers.contains_key("transfer-encoding"));
        }
    })
    .await;
}

#[tokio::test]
async fn h2_body_shorter_than_its_content_length_is_reset_and_the_origin_connection_discarded() {
    bounded(async {
        let (mut origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("POST", "/upload")
            .header("content-length", "1024")
            .body(())
            .unwrap();
        let result = client
            .try_exchange(request, Some(Bytes::from_static(b"abc")))
            .await;
        assert!(
            matches!(&result, Err(e) if e.reason() == Some(h2::Reason::PROTOCOL_ERROR)),
            "{}",
            describe(&result)
        );
        // A request that reached the origin half-written must have its origin
        // connection closed, never pooled: the next request would otherwise
        // be read as the rest of the body.
        assert_next_request_is_clean(&proxy).await;
        if origin.seen_paths().contains(&"/upload".to_string()) {
            step(
                "origin connection of the short upload closed",
                origin.wait_for(&OriginEvent::ConnectionClosed),
            )
            .await;
        }
    })
    .await;
}

#[tokio::test]
async fn h2_nonzero_content_length_with_end_stream_on_headers_is_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("POST", "/upload")
            .header("content-length", "10")
            .body(())
            .unwrap();
        let result = client.try_exchange(request, None).await;
        assert!(h2_rejected(&result), "{}", describe(&result));
        assert_origin_untouched(&origin, "CL 10 + END_STREAM");
    })
    .await;
}

#[tokio::test]
async fn h2_conflicting_or_malformed_content_length_is_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let cases: &[&[&str]] = &[
            &["5", "100"],
            &["0", "5"],
            &[""],
            &["+5"],
            &["-1"],
            &["1,2"],
            &["5, 5"],
            &["0x10"],
            &[" 5"],
            &["99999999999999999999999"],
        ];
        for values in cases {
            let mut client = proxy.h2(false).await;
            let mut request = client.request("POST", "/upload");
            for value in *values {
                request = request.header("content-length", *value);
            }
            let result = client
                .try_exchange(
                    request.body(()).unwrap(),
                    Some(Bytes::from_static(b"hello")),
                )
                .await;
            assert!(h2_rejected(&result), "{values:?}: {}", describe(&result));
        }
        assert_origin_untouched(&origin, "bad content-length");
    })
    .await;
}

#[tokio::test]
async fn h2_repeated_identical_content_length_reaches_the_origin_as_one_field() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("POST", "/upload")
            .header("content-length", "1")
            .header("content-length", "1")
            .body(())
            .unwrap();
        let result = client
            .try_exchange(request, Some(Bytes::from_static(b"x")))
            .await;
        if h2_rejected(&result) {
            assert_origin_untouched(&origin, "CL 1 + CL 1");
            return;
        }
        let reply = result.expect("accepted");
        assert_eq!(reply.status, StatusCode::OK);
        let seen = origin.seen();
        assert_eq!(seen.len(), 1);
        let lengths: Vec<_> = seen[0].headers.get_all("content-length").iter().collect();
        assert_eq!(lengths, ["1"], "{:?}", seen[0].headers);
        assert!(!seen[0].headers.contains_key("transfer-encoding"));
    })
    .await;
}

// --- Connection-specific fields (RFC 9113 §8.2.2) --------------------------

#[tokio::test]
async fn h2_connection_specific_request_fields_are_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let cases = [
            ("transfer-encoding", "chunked"),
            ("connection", "keep-alive"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "h2c"),
            ("te", "gzip"),
            ("te", "trailers, gzip"),
        ];
        let authority = format!("localhost:{}", proxy.addr.port());
        for (name, value) in cases {
            let fields = with(
                request_fields("POST", "/upload", &authority),
                &[field(name, value)],
            );
            let body = [&b"0\r\n\r\n"[..], SMUGGLED].concat();
            let outcome = raw_h2_request(&proxy, fields, Some(&body)).await;
            assert!(outcome.rejected(), "{name}: {value}: {outcome:?}");
        }
        assert_origin_untouched(&origin, "connection-specific fields");
    })
    .await;
}

#[tokio::test]
async fn h2_te_trailers_is_accepted_but_not_forwarded() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("GET", "/")
            .header("te", "trailers")
            .body(())
            .unwrap();
        let reply = client.try_exchange(request, None).await.expect("accepted");
        assert_eq!(reply.status, StatusCode::OK);
        let seen = origin.seen();
        assert_eq!(seen.len(), 1);
        assert!(!seen[0].headers.contains_key("te"), "{:?}", seen[0].headers);
    })
    .await;
}

// --- Field syntax (RFC 9113 §8.2.1) ----------------------------------------

#[tokio::test]
async fn h2_control_characters_in_field_values_are_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let values: &[&[u8]] = &[
            b"b\r\ntransfer-encoding: chunked",
            b"a\r\n\r\nGET /admin HTTP/1.1\r\nHost: x\r\n\r\n",
            b"a\nb",
            b"a\rb",
            b"a\0b",
            b"a\x01b",
            b"a\x1fb",
            b"a\x7fb",
        ];
        for value in values {
            let authority = format!("localhost:{}", proxy.addr.port());
            let fields = with(
                request_fields("GET", "/", &authority),
                &[field("x-test", value)],
            );
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert!(outcome.rejected(), "{}: {outcome:?}", show(value));
        }
        assert_origin_untouched(&origin, "control characters");
    })
    .await;
}

#[tokio::test]
async fn h2_horizontal_tab_inside_a_field_value_is_forwarded_unchanged() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let authority = format!("localhost:{}", proxy.addr.port());
        let fields = with(
            request_fields("GET", "/", &authority),
            &[field("x-test", "a\tb")],
        );
        let outcome = raw_h2_request(&proxy, fields, None).await;
        assert_eq!(outcome.status(), Some(200), "{outcome:?}");
        let seen = origin.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].headers["x-test"], "a\tb");
    })
    .await;
}

#[tokio::test]
async fn h2_invalid_field_names_are_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let names: &[&[u8]] = &[
            b"Transfer-Encoding",
            b"X-Upper",
            b"foo:bar",
            b"h ost",
            b"bl\\ah",
            b"",
            b"caf\xc3\xa9",
            b"x\x7f",
            b"x\x00y",
            b"x\ry",
        ];
        for name in names {
            let authority = format!("localhost:{}", proxy.addr.port());
            let fields = with(request_fields("GET", "/", &authority), &[field(name, "1")]);
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert!(outcome.rejected(), "{:?}: {outcome:?}", show(name));
        }
        assert_origin_untouched(&origin, "invalid field names");
    })
    .await;
}

#[tokio::test]
async fn h2_field_values_with_surrounding_whitespace_get_400_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        for value in [" lead", "trail ", "\tlead", "trail\t", " "] {
            let mut client = proxy.h2(false).await;
            let request = client
                .request("GET", "/")
                .header("x-test", value)
                .body(())
                .unwrap();
            let result = client.try_exchange(request, None).await;
            let status = result.as_ref().map(|r| r.status).ok();
            assert_eq!(
                status,
                Some(StatusCode::BAD_REQUEST),
                "{value:?}: {}",
                describe(&result)
            );
        }
        assert_origin_untouched(&origin, "surrounding whitespace");
    })
    .await;
}

// --- :method (RFC 9113 §8.3.1) ---------------------------------------------

#[tokio::test]
async fn h2_request_line_injected_through_method_is_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let methods: &[&[u8]] = &[b"GET / HTTP/1.1\r\nHost: x", b"GET /x", b"GET\x00", b""];
        for method in methods {
            let authority = format!("localhost:{}", proxy.addr.port());
            let mut fields = request_fields("GET", "/", &authority);
            fields[0].1 = method.to_vec();
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert!(outcome.rejected(), "{:?}: {outcome:?}", show(method));
        }
        assert_origin_untouched(&origin, "method injection");
    })
    .await;
}

#[tokio::test]
async fn h2_methods_outside_the_allowlist_get_501_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let authority = format!("localhost:{}", proxy.addr.port());
        for method in ["get", "FOO", "TRACE", "PROPFIND"] {
            let fields = request_fields(method, "/", &authority);
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert_eq!(outcome.status(), Some(501), "{method}: {outcome:?}");
        }
        let connect = vec![field(":method", "CONNECT"), field(":authority", &authority)];
        let outcome = raw_h2_request(&proxy, connect, None).await;
        assert_eq!(outcome.status(), Some(501), "CONNECT: {outcome:?}");
        // Extended CONNECT (RFC 8441) is served for WebSocket only
        // (tests/websocket.rs); any other protocol gets 501.
        let extended = vec![
            field(":method", "CONNECT"),
            field(":protocol", "chat"),
            field(":scheme", "https"),
            field(":authority", &authority),
            field(":path", "/"),
        ];
        let outcome = raw_h2_request(&proxy, extended, None).await;
        assert_eq!(outcome.status(), Some(501), ":protocol: {outcome:?}");
        assert_origin_untouched(&origin, "methods");
    })
    .await;
}

#[tokio::test]
async fn h1_trace_connect_and_unknown_methods_get_501_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let host = format!("localhost:{}", proxy.addr.port());
        let requests = [
            format!("TRACE / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            format!("CONNECT {host} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            format!("FOO / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        ];
        for request in requests {
            let reply = h1_raw(&proxy, request.as_bytes(), STEP_TIMEOUT).await;
            assert_eq!(reply.status(), Some(501), "{request:?}: {}", reply.text());
        }
        assert_origin_untouched(&origin, "h1 methods");
    })
    .await;
}

// --- :path (RFC 9113 §8.3.1) -----------------------------------------------

#[tokio::test]
async fn h2_paths_that_are_not_origin_form_are_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let authority = format!("localhost:{}", proxy.addr.port());
        let paths: &[(&str, &[u8])] = &[
            ("GET", b"/ HTTP/1.1\r\nHost: x\r\n\r\nGET /admin"),
            ("GET", b"/a b"),
            ("GET", b"https://evil.example/x"),
            ("GET", b"?x"),
            ("GET", b"x/y"),
            ("GET", b"*"),
            ("POST", b"*"),
            ("GET", b""),
        ];
        for (method, path) in paths {
            let mut fields = request_fields(method, "/", &authority);
            fields[3].1 = path.to_vec();
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert!(outcome.rejected(), "{method} {:?}: {outcome:?}", show(path));
        }
        assert_origin_untouched(&origin, "bad paths");
    })
    .await;
}

#[tokio::test]
async fn h2_unusual_valid_paths_reach_the_configured_origin_exactly_as_validated() {
    bounded(async {
        let origin = ok_origin().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let authority = format!("localhost:{}", proxy.addr.port());
        // (method, :path, the request line the origin may see)
        let cases: &[(&str, &[u8], &[u8])] = &[
            ("GET", b"//evil.example/x", b"GET //evil.example/x HTTP/1.1"),
            ("GET", b"/a#frag", b"GET /a HTTP/1.1"),
            ("GET", b"/caf\xc3\xa9", b"GET /caf\xc3\xa9 HTTP/1.1"),
            ("OPTIONS", b"*", b"OPTIONS * HTTP/1.1"),
        ];
        for (method, path, line) in cases {
            let before = origin.heads().len();
            let mut fields = request_fields(method, "/", &authority);
            fields[3].1 = path.to_vec();
            let outcome = raw_h2_request(&proxy, fields, None).await;
            let lines = origin.request_lines();
            if outcome.rejected() {
                assert_eq!(
                    lines.len(),
                    before,
                    "{:?} rejected yet forwarded",
                    show(path)
                );
                continue;
            }
            assert_eq!(outcome.status(), Some(200), "{:?}: {outcome:?}", show(path));
            assert_eq!(lines.len(), before + 1);
            assert_eq!(
                show(&lines[before]),
                show(line),
                "{method} {:?} reached the origin differently",
                show(path)
            );
        }
        assert!(
            origin.heads().iter().all(|h| !h.contains(&b'#')),
            "a fragment reached the origin"
        );
    })
    .await;
}

// --- :scheme (RFC 9113 §8.3.1) ---------------------------------------------

#[tokio::test]
async fn h2_scheme_that_does_not_match_tls_is_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let authority = format!("localhost:{}", proxy.addr.port());
        for scheme in ["http", "ftp", "http*", "HTTPS ", ""] {
            let mut fields = request_fields("GET", "/", &authority);
            fields[1].1 = scheme.as_bytes().to_vec();
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert!(outcome.rejected(), "{scheme:?}: {outcome:?}");
        }
        assert_origin_untouched(&origin, "scheme");
    })
    .await;
}

/// RFC 9113 §8.3.1 lets an intermediary send `Host` instead of
/// `:authority`, so such requests are served. h2 discards `:scheme` when
/// `:authority` is absent, so a wrong scheme cannot be seen there; what
/// matters holds either way: the origin learns the scheme from the socket.
#[tokio::test]
async fn h2_scheme_http_with_host_instead_of_authority_still_tells_the_origin_https() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let authority = format!("localhost:{}", proxy.addr.port());
        let fields = vec![
            field(":method", "GET"),
            field(":scheme", "http"),
            field(":path", "/"),
            field("host", &authority),
        ];
        let outcome = raw_h2_request(&proxy, fields, None).await;
        if outcome.rejected() {
            assert_origin_untouched(&origin, ":scheme http + host");
            return;
        }
        let seen = origin.seen();
        assert_eq!(seen.len(), 1, "{outcome:?}");
        assert_eq!(seen[0].headers["x-forwarded-proto"], "https");
        assert_eq!(seen[0].headers["host"], authority.as_str());
    })
    .await;
}

// --- :authority and Host (RFC 9113 §8.3.1) ---------------------------------

#[tokio::test]
async fn h2_authority_wins_over_a_conflicting_host_and_the_origin_sees_one_host() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("GET", "/")
            .header("host", "evil.example")
            .body(())
            .unwrap();
        let result = client.try_exchange(request, None).await;
        if h2_rejected(&result) {
            assert_origin_untouched(&origin, ":authority != host");
            return;
        }
        assert_eq!(result.expect("served").status, StatusCode::OK);
        let seen = origin.seen();
        assert_eq!(seen.len(), 1);
        let hosts: Vec<_> = seen[0].headers.get_all("host").iter().collect();
        assert_eq!(hosts, [client.authority.as_str()]);
    })
    .await;
}

#[tokio::test]
async fn h2_two_host_fields_without_authority_get_400_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let fields = vec![
            field(":method", "GET"),
            field(":scheme", "https"),
            field(":path", "/"),
            field("host", "a.example"),
            field("host", "b.example"),
        ];
        let outcome = raw_h2_request(&proxy, fields, None).await;
        assert_eq!(outcome.status(), Some(400), "{outcome:?}");
        assert_origin_untouched(&origin, "two hosts");
    })
    .await;
}

#[tokio::test]
async fn h2_authority_with_userinfo_or_invalid_characters_is_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let authorities: &[&[u8]] = &[
            b"user:pw@victim.example",
            b"@victim.example",
            b"foo\\bar",
            b"a b",
            b"victim.example/x",
            b"",
            b":443",
        ];
        for authority in authorities {
            let mut fields = request_fields("GET", "/", "x");
            fields[2].1 = authority.to_vec();
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert!(outcome.rejected(), "{:?}: {outcome:?}", show(authority));
        }
        assert_origin_untouched(&origin, "bad authority");
    })
    .await;
}

#[tokio::test]
async fn h2_authority_never_chooses_where_the_proxy_connects() {
    bounded(async {
        let (origin, proxy) = setup().await;
        for authority in ["127.0.0.1:1", "evil.example", "[::1]:9", "169.254.169.254"] {
            let fields = request_fields("GET", "/", authority);
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert_eq!(outcome.status(), Some(200), "{authority}: {outcome:?}");
            assert_eq!(outcome.data, b"home");
        }
        let hosts: Vec<String> = origin
            .seen()
            .iter()
            .map(|s| s.headers["host"].to_str().unwrap().to_string())
            .collect();
        assert_eq!(
            hosts,
            ["127.0.0.1:1", "evil.example", "[::1]:9", "169.254.169.254"]
        );
    })
    .await;
}

// --- Pseudo-header structure (RFC 9113 §8.3) -------------------------------

#[tokio::test]
async fn h2_malformed_pseudo_header_sections_are_rejected_before_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let a = format!("localhost:{}", proxy.addr.port());
        let base = || request_fields("GET", "/", &a);
        let cases: Vec<(&str, Vec<Field>)> = vec![
            ("duplicate :path", with(base(), &[field(":path", "/admin")])),
            (
                "duplicate :method",
                with(base(), &[field(":method", "POST")]),
            ),
            (
                "pseudo after regular",
                vec![
                    field(":method", "GET"),
                    field(":scheme", "https"),
                    field("x-a", "1"),
                    field(":authority", &a),
                    field(":path", "/"),
                ],
            ),
            ("unknown pseudo", with(base(), &[field(":foo", "bar")])),
            (
                "status in request",
                with(base(), &[field(":status", "200")]),
            ),
            (
                "missing :path",
                vec![
                    field(":method", "GET"),
                    field(":scheme", "https"),
                    field(":authority", &a),
                ],
            ),
            (
                "missing :method",
                vec![
                    field(":scheme", "https"),
                    field(":authority", &a),
                    field(":path", "/"),
                ],
            ),
            (
                "missing :scheme",
                vec![
                    field(":method", "GET"),
                    field(":authority", &a),
                    field(":path", "/"),
                ],
            ),
            ("empty :path", {
                let mut f = base();
                f[3].1.clear();
                f
            }),
        ];
        for (case, fields) in cases {
            let outcome = raw_h2_request(&proxy, fields, None).await;
            assert!(outcome.rejected(), "{case}: {outcome:?}");
        }
        assert_origin_untouched(&origin, "pseudo-header structure");
    })
    .await;
}

// --- Cookies, underscores, trailers (RFC 9113 §8.2.3, §8.1) ----------------

#[tokio::test]
async fn h2_cookie_crumbs_reach_the_origin_as_one_cookie_field() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("GET", "/")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .header("cookie", "c=3")
            .body(())
            .unwrap();
        let reply = client.try_exchange(request, None).await.expect("served");
        assert_eq!(reply.status, StatusCode::OK);
        let seen = origin.seen();
        let cookies: Vec<_> = seen[0].headers.get_all("cookie").iter().collect();
        assert_eq!(cookies, ["a=1; b=2; c=3"]);
    })
    .await;
}

#[tokio::test]
async fn h2_underscore_twins_of_forwarding_fields_never_reach_the_origin() {
    bounded(async {
        let (origin, proxy) = setup().await;
        let mut client = proxy.h2(false).await;
        let request = client
            .request("GET", "/")
            .header("x_forwarded_for", "6.6.6.6")
            .header("x_real_ip", "6.6.6.6")
            .header("x_forwarded_proto", "http")
            .header("x_forwarded_host", "evil.example")
            .body(())
            .unwrap();
        let reply = client.try_exchange(request, None).await;
        if h2_rejected(&reply) {
            assert_origin_untouched(&origin, "underscore fields");
            return;
        }
        assert_eq!(reply.expect("served").status, StatusCode::OK);
        let headers = &origin.seen()[0].headers;
        assert!(
            headers.keys().all(|name| !name.as_str().contains('_')),
            "{headers:?}"
        );
        assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
        assert!(headers
            .values()
            .all(|v| !v.as_bytes().windows(7).any(|w| w == b"6.6.6.6")));
    })
    .await;
}

/// An origin that records each request body and its trailers.
async fn trailer_origin() -> (TestOrigin, Arc<Mutex<Vec<(Bytes, Option<HeaderMap>)>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let origin = TestOrigin::start(Arc::new(move |request| {
        let log = log.clone();
        Box::pin(async move {
            if let Ok(collected) = request.into_body().collect().await {
                let trailers = collected.trailers().cloned();
                log.lock().unwrap().push((collected.to_bytes(), trailers));
            }
            Resp::new(200, "ok").into_response()
        })
    }))
    .await;
    (origin, received)
}

#[tokio::test]
async fn h2_request_trailers_are_not_forwarded_to_the_origin() {
    bounded(async {
        let (origin, received) = trailer_origin().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let request = client.request("POST", "/upload").body(()).unwrap();
        let mut send = step("ready", client.send.clone().ready()).await.unwrap();
        let (response, mut stream) = send.send_request(request, false).unwrap();
        stream
            .send_data(Bytes::from_static(b"hello"), false)
            .unwrap();
        let mut trailers = HeaderMap::new();
        trailers.insert("content-length", "999".parse().unwrap());
        trailers.insert("host", "evil.example".parse().unwrap());
        trailers.insert("x-trailer", "1".parse().unwrap());
        stream.send_trailers(trailers).unwrap();
        let response = step("response", response).await.expect("served");
        assert_eq!(response.status(), StatusCode::OK);
        let received = received.lock().unwrap().clone();
        assert_eq!(received.len(), 1);
        let (body, trailers) = &received[0];
        assert_eq!(body, &Bytes::from("hello"));
        assert!(
            trailers.is_none(),
            "trailers reached the origin: {trailers:?}"
        );
        let headers = &origin.seen()[0].headers;
        assert!(!headers.contains_key("trailer"), "{headers:?}");
        assert_ne!(
            headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"999"[..])
        );
    })
    .await;
}

#[tokio::test]
async fn h2_request_trailers_with_pseudo_headers_are_never_forwarded() {
    bounded(async {
        let (origin, received) = trailer_origin().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let mut raw = RawH2::connect(&proxy).await;
        let fields = raw.request("POST", "/upload");
        raw.headers(1, &fields, false).await;
        raw.data(1, b"hello", false).await;
        let trailers = [
            field(":path", "/admin"),
            field("content-length", "999"),
            field("host", "evil.example"),
        ];
        raw.headers(1, &trailers, true).await;
        let outcome = raw.outcome(1).await;
        assert!(
            outcome.rejected() || outcome.status() == Some(200),
            "{outcome:?}"
        );
        assert!(
            origin.seen_paths().iter().all(|p| p == "/upload"),
            "{:?}",
            origin.seen_paths()
        );
        for (_, trailers) in received.lock().unwrap().iter() {
            assert!(
                trailers.is_none(),
                "trailers reached the origin: {trailers:?}"
            );
        }
    })
    .await;
}

// --- Aborted exchanges -----------------------------------------------------

#[tokio::test]
async fn h2_aborted_upload_closes_the_origin_connection_and_the_next_request_is_not_its_remainder()
{
    bounded(async {
        let (mut origin, proxy) = setup().await;
        let client = proxy.h2(false).await;
        let request = client
            .request("POST", "/upload")
            .header("content-length", "100")
            .body(())
            .unwrap();
        let mut send = step("ready", client.send.clone().ready()).await.unwrap();
        let (response, mut stream) = send.send_request(request, false).unwrap();
        stream
            .send_data(Bytes::from(vec![b'a'; 50]), false)
            .unwrap();
        step(
            "upload reaches the origin",
            origin.wait_for(&OriginEvent::Request("/upload".into())),
        )
        .await;
        stream.send_reset(h2::Reason::CANCEL);
        step(
            "origin connection closed",
            origin.wait_for(&OriginEvent::ConnectionClosed),
        )
        .await;
        drop(response);

        // Another client's request, sized to fill the abandoned body exactly.
        let mut other = proxy.h2(false).await;
        let request = other
            .request("POST", "/upload")
            .header("content-length", "50")
            .body(())
            .unwrap();
        let reply = other
            .try_exchange(request, Some(Bytes::from(vec![b'b'; 50])))
            .await
            .expect("second upload");
        assert_eq!(reply.status, StatusCode::OK);
        assert_eq!(reply.body, Bytes::from("uploaded"));
        let seen = origin.seen();
        assert_eq!(origin.seen_paths(), ["/upload", "/upload"]);
        assert_eq!(seen[1].headers["content-length"], "50");
    })
    .await;
}

#[tokio::test]
async fn h2_reset_mid_download_discards_the_origin_connection_and_the_next_request_is_clean() {
    bounded(async {
        let mut origin = TestOrigin::start(Arc::new(|request| {
            Box::pin(async move {
                if request.uri().path() == "/big" {
                    let mut response =
                        http::Response::new(RepeatBody::new(16 * 1024, 64 << 20).boxed());
                    *response.status_mut() = StatusCode::OK;
                    response
                } else {
                    Resp::new(200, "after").into_response()
                }
            })
        }))
        .await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let client = proxy.h2(false).await;
        let mut send = step("ready", client.send.clone().ready()).await.unwrap();
        let request = client.request("GET", "/big").body(()).unwrap();
        let (response, _) = send.send_request(request, true).unwrap();
        let response = step("response head", response).await.unwrap();
        let mut body = response.into_body();
        let first = step("first DATA", body.data()).await.unwrap().unwrap();
        assert!(!first.is_empty());
        drop(body);
        step(
            "origin connection closed",
            origin.wait_for(&OriginEvent::ConnectionClosed),
        )
        .await;
        assert_next_request_is_clean(&proxy).await;
    })
    .await;
}

// --- HTTP/1.1 frontend framing ----------------------------------------------

#[tokio::test]
async fn h1_content_length_beside_chunked_never_reaches_the_origin_with_both() {
    bounded(async {
        let origin = ok_origin().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let host = format!("localhost:{}", proxy.addr.port());
        let orders = [
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "Transfer-Encoding: chunked\r\nContent-Length: 5",
        ];
        for framing in orders {
            let request = format!(
                "POST /upload HTTP/1.1\r\nHost: {host}\r\n{framing}\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: {host}\r\n\r\n"
            );
            let reply = h1_raw(&proxy, request.as_bytes(), STEP_TIMEOUT).await;
            let status = reply.status();
            assert!(
                status == Some(200) || status == Some(400),
                "{framing:?}: {}",
                reply.text()
            );
            assert!(reply.closed, "connection kept open after CL+TE");
            assert_eq!(
                reply.text().matches("HTTP/1.1 ").count(),
                1,
                "the trailing request was served: {}",
                reply.text()
            );
        }
        for head in origin.heads() {
            let both = !head_field(&head, "content-length").is_empty()
                && !head_field(&head, "transfer-encoding").is_empty();
            assert!(!both, "origin got CL and TE: {}", show(&head));
        }
        assert!(
            origin
                .request_lines()
                .iter()
                .all(|line| !line.starts_with(b"GET /admin")),
            "{:?}",
            origin.request_lines()
        );
    })
    .await;
}

#[tokio::test]
async fn h1_ambiguous_request_framing_gets_400_before_the_origin() {
    bounded(async {
        let origin = ok_origin().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let host = format!("localhost:{}", proxy.addr.port());
        let heads = [
            "Content-Length: 5\r\nContent-Length: 100",
            "Content-Length: 1,2",
            "Content-Length: +5",
            "Transfer-Encoding: gzip",
            "Transfer-Encoding: chunked, identity",
            "X-Folded: a\r\n b",
            "Host : other.example",
            "X-Bad\x01: 1",
        ];
        for extra in heads {
            let request = format!("POST /upload HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n\r\nhello");
            let reply = h1_raw(&proxy, request.as_bytes(), STEP_TIMEOUT).await;
            assert_eq!(reply.status(), Some(400), "{extra:?}: {}", reply.text());
        }
        assert_eq!(origin.accepted(), 0, "{:?}", origin.request_lines());
    })
    .await;
}

#[tokio::test]
async fn h1_request_line_smuggling_attempts_get_400_before_the_origin() {
    bounded(async {
        let origin = ok_origin().await;
        let proxy = TestProxy::start(&origin.url(), "").await;
        let host = format!("localhost:{}", proxy.addr.port());
        let requests = [
            format!("GET /a b HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            format!("GET /\x00 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
            "GET / HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
            format!(
                "GET / HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
            ),
            format!("GET / HTTP/1.1\r\nHost: user@{host}\r\nConnection: close\r\n\r\n"),
        ];
        for request in requests {
            let reply = h1_raw(&proxy, request.as_bytes(), STEP_TIMEOUT).await;
            assert_eq!(reply.status(), Some(400), "{request:?}: {}", reply.text());
        }
        assert_eq!(origin.accepted(), 0, "{:?}", origin.request_lines());
    })
    .await;
}
