//! The bundled sample origin for `linkpush demo`: a small HTTP/1.1 site that
//! behaves like a PHP app calling `header('Link: …', false)`. Its pages name
//! their stylesheet, script and images in `Link` headers; one link uses
//! `rel=push`, one `nopush`, and one is a font that must not be pushed.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const PAGE: &str = r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>linkpush demo</title>
<link rel="stylesheet" href="/css/site.css">
<script src="/js/app.js" defer></script>
</head>
<body>
<img src="/img/logo.svg" alt="linkpush" width="120" height="120">
<h1>Served through linkpush</h1>
<p>This page's origin sent <code>Link</code> headers. Open your browser's
network panel, or run <code>nghttp -ans</code> against this URL, to see
which resources were pushed and which were only hinted.</p>
<p>The origin is an ordinary HTTP/1.1 server; it knows nothing about HTTP/2.</p>
</body>
</html>
"#;

const CSS: &str =
    "body { font-family: sans-serif; margin: 3em auto; max-width: 40em; }\nh1 { color: #2a6; }\n";
const JS: &str =
    "document.addEventListener('DOMContentLoaded', () => { document.title += ' (scripted)'; });\n";
const ANALYTICS: &str = "/* analytics: deliberately marked nopush */\n";
const SVG: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" width="120" height="120"><circle cx="60" cy="60" r="50" fill="#2a6"/></svg>
"##;

/// The `Link` header lines the demo page sends, one per `header()` call.
pub const PAGE_LINKS: [&str; 4] = [
    "</css/site.css>; rel=preload; as=style",
    "</js/app.js>; rel=preload; as=script, </js/analytics.js>; rel=preload; as=script; nopush",
    "</img/logo.svg>; rel=push; as=image",
    "</fonts/demo.woff2>; rel=preload; as=font; type=\"font/woff2\"; crossorigin",
];

fn route(path: &str) -> Option<(&'static str, Bytes)> {
    let body = |text: &'static str| Bytes::from_static(text.as_bytes());
    Some(match path {
        "/" | "/index.php" => ("text/html; charset=utf-8", body(PAGE)),
        "/css/site.css" => ("text/css", body(CSS)),
        "/js/app.js" => ("text/javascript", body(JS)),
        "/js/analytics.js" => ("text/javascript", body(ANALYTICS)),
        "/img/logo.svg" => ("image/svg+xml", body(SVG)),
        // Not a real font: the demo only needs the bytes to exist.
        "/fonts/demo.woff2" => ("font/woff2", Bytes::from(vec![0u8; 2048])),
        _ => return None,
    })
}

fn respond(request: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let Some((content_type, body)) = route(path) else {
        return crate::admin::not_found();
    };
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::SERVER, HeaderValue::from_static("sample-origin"));
    if content_type.starts_with("text/html") {
        for link in PAGE_LINKS {
            headers.append(header::LINK, HeaderValue::from_static(link));
        }
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    } else {
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static("max-age=3600"),
        );
    }
    response
}

/// Serve the sample site on `listener` until `shutdown` is cancelled.
pub async fn serve_sample_origin(listener: TcpListener, shutdown: CancellationToken) {
    crate::admin::serve_simple(listener, shutdown, respond).await;
}
