//! The operator endpoints on `metrics.listen`: `/healthz`, `/readyz`, and
//! `/metrics` read as Prometheus reads it, checked against
//! docs/operations.md.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn page() -> Routes {
    Routes::new()
        .route(
            "/",
            Resp::html("home").link("</a.css>; rel=preload; as=style"),
        )
        .route("/a.css", Resp::new(200, "a{}"))
        .route("/plain", Resp::html("plain"))
}

/// A loopback address on which nothing listens: bound, then let go.
async fn closed_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local address")
}

/// The proxy in front of `origin_url`, with the operator endpoints on a
/// port of their own; returns the proxy and that port.
async fn proxy_with_admin(origin_url: &str) -> (TestProxy, u16) {
    let port = closed_address().await.port();
    let extra = format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    (TestProxy::start(origin_url, &extra).await, port)
}

/// One response of the operator endpoint.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    content_type: String,
    body: String,
}

/// GET `path` on the operator endpoint. The proxy binds it as it starts,
/// so a refused connection is retried until it is bound.
async fn get(port: u16, path: &str) -> Reply {
    let mut stream = loop {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(stream) => break stream,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = String::new();
    stream.read_to_string(&mut raw).await.expect("read");
    let (head, body) = raw.split_once("\r\n\r\n").expect("a whole response");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let content_type = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Reply {
        status,
        content_type,
        body: body.to_string(),
    }
}

/// The value of the one sample `series` (name and labels as exposed).
fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {series} in\n{metrics}"))
        .parse()
        .unwrap_or_else(|e| panic!("{series}: {e}"))
}

#[tokio::test]
async fn healthz_answers_ok_and_unknown_paths_get_404() {
    bounded(async {
        let origin = TestOrigin::routes(page()).await;
        let (_proxy, port) = proxy_with_admin(&origin.url()).await;
        let reply = get(port, "/healthz").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, "ok\n");
        let reply = get(port, "/nothing-here").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{reply:?}");
    })
    .await;
}

#[tokio::test]
async fn readyz_is_ready_when_the_origin_accepts_connections() {
    bounded(async {
        let origin = TestOrigin::routes(page()).await;
        let (_proxy, port) = proxy_with_admin(&origin.url()).await;
        let reply = get(port, "/readyz").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.body, "ready\n");
        // A connection only: the probe sent the origin no request.
        assert!(origin.seen().is_empty(), "{:?}", origin.seen_paths());
    })
    .await;
}

#[tokio::test]
async fn readyz_is_unavailable_while_nothing_listens_at_the_origin_and_checks_afresh() {
    bounded(async {
        let dead = closed_address().await;
        let (_proxy, port) = proxy_with_admin(&format!("http://{dead}")).await;
        let reply = get(port, "/readyz").await;
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{reply:?}");
        assert!(
            reply
                .body
                .starts_with(&format!("origin {dead} unreachable: ")),
            "{reply:?}"
        );
        assert!(reply.body.ends_with('\n'), "{reply:?}");
        assert_eq!(reply.body.lines().count(), 1, "{reply:?}");
        // Liveness does not depend on the origin.
        assert_eq!(get(port, "/healthz").await.status, StatusCode::OK);

        // The origin comes up at that address: the next probe sees it.
        let _origin = TcpListener::bind(dead)
            .await
            .expect("rebind the origin port");
        let reply = get(port, "/readyz").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    })
    .await;
}

#[tokio::test]
async fn metrics_show_build_info_process_figures_and_reload_series() {
    bounded(async {
        let origin = TestOrigin::routes(page()).await;
        let (_proxy, port) = proxy_with_admin(&origin.url()).await;
        let reply = get(port, "/metrics").await;
        assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
        assert_eq!(reply.content_type, "text/plain; version=0.0.4");
        let metrics = reply.body;
        let build = format!(
            "linkpush_build_info{{version=\"{}\"}}",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(value(&metrics, &build), 1.0);
        assert!(value(&metrics, "process_resident_memory_bytes") > 0.0);
        assert!(value(&metrics, "process_virtual_memory_bytes") > 0.0);
        assert!(value(&metrics, "process_open_fds") > 0.0);
        assert!(value(&metrics, "process_cpu_seconds_total") >= 0.0);
        let start = value(&metrics, "process_start_time_seconds");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs_f64();
        assert!(start > now - 86_400.0 && start <= now + 1.0, "{start}");
        assert_eq!(
            value(&metrics, "linkpush_config_reloads_total{result=\"ok\"}"),
            0.0
        );
        assert_eq!(
            value(&metrics, "linkpush_config_reloads_total{result=\"error\"}"),
            0.0
        );
    })
    .await;
}

#[tokio::test]
async fn origin_response_histogram_counts_main_and_pushed_requests() {
    bounded(async {
        let origin = TestOrigin::routes(page()).await;
        let (proxy, port) = proxy_with_admin(&origin.url()).await;
        let before = get(port, "/metrics").await.body;
        assert_eq!(
            value(&before, "linkpush_origin_response_seconds_count"),
            0.0
        );

        let mut client = proxy.h2(true).await;
        let exchange = client.get("/").await;
        assert_eq!(exchange.pushed_paths(), vec!["/a.css"]);
        for _ in 0..2 {
            assert_eq!(client.get("/plain").await.status, StatusCode::OK);
        }
        // The pushed stream finishes on its own task; wait for its count.
        let metrics = loop {
            let metrics = get(port, "/metrics").await.body;
            if value(&metrics, "linkpush_origin_response_seconds_count") >= 4.0 {
                break metrics;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        // Three main requests and one pushed one went to the origin; the
        // pushed stream is not a request answered.
        assert_eq!(
            value(&metrics, "linkpush_origin_response_seconds_count"),
            4.0
        );
        assert_eq!(
            value(
                &metrics,
                "linkpush_requests_total{protocol=\"HTTP/2\",class=\"2xx\"}"
            ),
            3.0
        );
        assert_eq!(
            value(
                &metrics,
                "linkpush_origin_response_seconds_bucket{le=\"+Inf\"}"
            ),
            4.0
        );
        assert_eq!(
            value(
                &metrics,
                "linkpush_origin_response_seconds_bucket{le=\"30\"}"
            ),
            4.0
        );
        // Buckets from a millisecond.
        value(
            &metrics,
            "linkpush_origin_response_seconds_bucket{le=\"0.001\"}",
        );
        assert!(value(&metrics, "linkpush_origin_response_seconds_sum") > 0.0);
    })
    .await;
}

#[tokio::test]
async fn origin_response_histogram_counts_a_refused_connection() {
    bounded(async {
        let dead = closed_address().await;
        let (proxy, port) = proxy_with_admin(&format!("http://{dead}")).await;
        let mut client = proxy.h2(true).await;
        assert_eq!(client.get("/").await.status, StatusCode::BAD_GATEWAY);
        let metrics = get(port, "/metrics").await.body;
        assert_eq!(
            value(&metrics, "linkpush_origin_response_seconds_count"),
            1.0
        );
        assert_eq!(
            value(&metrics, "linkpush_origin_errors_total{kind=\"connect\"}"),
            1.0
        );
    })
    .await;
}

/// One metric family as the parser and the checks below see it.
#[derive(Debug, Default)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
    samples: usize,
}

/// Read `text` line by line as Prometheus' text format: every line must be
/// a HELP, a TYPE or a sample (none that the parser would skip), every
/// sample must follow the TYPE of its family, and every value must be a
/// number. Returns the families by name.
fn parse_strictly(text: &str) -> BTreeMap<String, Family> {
    use prometheus_parse::LineInfo;
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    let mut helped = BTreeSet::new();
    for line in text.lines() {
        match LineInfo::parse(line) {
            LineInfo::Doc { metric_name, .. } => {
                assert!(helped.insert(metric_name.to_string()), "HELP twice: {line}");
            }
            LineInfo::Type {
                metric_name,
                metric_alias,
                sample_type,
            } => {
                let name = metric_alias.unwrap_or(metric_name);
                assert!(helped.contains(&name), "TYPE before HELP: {line}");
                let kind = line.rsplit(' ').next().unwrap_or("").to_string();
                assert_ne!(sample_type, prometheus_parse::SampleType::Untyped, "{line}");
                let old = families.insert(
                    name.clone(),
                    Family {
                        kind: kind.clone(),
                        ..Family::default()
                    },
                );
                assert!(old.is_none(), "TYPE twice: {line}");
                current = Some((name, kind));
            }
            LineInfo::Sample {
                metric_name,
                labels,
                value,
                timestamp,
            } => {
                let (family, kind) = current
                    .as_ref()
                    .unwrap_or_else(|| panic!("untyped: {line}"));
                let belongs = match kind.as_str() {
                    "histogram" => ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| metric_name == format!("{family}{suffix}")),
                    _ => metric_name == family,
                };
                assert!(belongs, "{metric_name} is not of family {family}: {line}");
                assert!(timestamp.is_none(), "{line}");
                let number: f64 = value.parse().unwrap_or_else(|_| panic!("value: {line}"));
                assert!(number.is_finite() && number >= 0.0, "{line}");
                let entry = families.get_mut(family).expect("typed above");
                entry.samples += 1;
                for pair in labels.unwrap_or("").split(',').filter(|p| !p.is_empty()) {
                    let (name, quoted) = pair.split_once('=').unwrap_or_else(|| panic!("{line}"));
                    assert!(
                        quoted.len() >= 2 && quoted.starts_with('"') && quoted.ends_with('"'),
                        "{line}"
                    );
                    if name != "le" {
                        entry.labels.insert(name.to_string());
                    }
                }
            }
            LineInfo::Empty | LineInfo::Ignored => panic!("not a metrics line: {line:?}"),
        }
    }
    families
}

/// The metrics table of docs/operations.md: name -> (type, label names).
fn documented() -> BTreeMap<String, (String, BTreeSet<String>)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md");
    let doc = std::fs::read_to_string(path).expect("docs/operations.md");
    let table = doc
        .split("\n## Metrics\n")
        .nth(1)
        .expect("a ## Metrics section");
    let ticked = |cell: &str| -> Vec<String> {
        cell.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    let mut rows = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = ticked(cells[1]).remove(0);
        let labels = ticked(cells[3]).into_iter().collect();
        rows.insert(name, (cells[2].to_string(), labels));
    }
    rows
}

#[tokio::test]
async fn whole_exposition_parses_and_matches_the_documented_table() {
    bounded(async {
        let origin = TestOrigin::routes(page()).await;
        let (proxy, port) = proxy_with_admin(&origin.url()).await;
        let mut client = proxy.h2(true).await;
        client.get("/").await;
        client.get("/missing").await;
        let text = get(port, "/metrics").await.body;

        let families = parse_strictly(&text);
        // The same text through the parser's whole-document reader.
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("the exposition parses");
        for sample in &scrape.samples {
            if let prometheus_parse::Value::Histogram(buckets) = &sample.value {
                let counts: Vec<f64> = buckets.iter().map(|b| b.count).collect();
                assert!(
                    counts.windows(2).all(|w| w[0] <= w[1]),
                    "{}: buckets not cumulative: {counts:?}",
                    sample.metric
                );
                assert_eq!(buckets.last().map(|b| b.less_than), Some(f64::INFINITY));
            }
        }
        assert!(
            scrape
                .samples
                .iter()
                .any(|s| s.metric == "linkpush_origin_response_seconds"
                    && matches!(s.value, prometheus_parse::Value::Histogram(_))),
            "the origin histogram reads as a histogram"
        );

        let documented = documented();
        let exposed: BTreeMap<_, _> = families
            .iter()
            .map(|(name, f)| (name.clone(), (f.kind.clone(), f.labels.clone())))
            .collect();
        assert_eq!(exposed, documented, "docs/operations.md vs /metrics");
        assert!(families.values().all(|f| f.samples > 0));
    })
    .await;
}
