//! Heap held per site, per route and per upstream address, in process.
//!
//! `cargo bench --bench sites_heap -- [--sites N] [--routes M] [--upstreams K]`
//!
//! A counting global allocator tracks the bytes live on the heap. For each
//! configuration the bench loads the configuration from TOML text and
//! builds what a running proxy keeps for it: the process-wide state
//! (`Global`: sites with their certificates, upstreams with their health)
//! and one worker's state (`Worker`: a connection pool per upstream
//! address). The live bytes after that, minus those before, are what the
//! configuration costs for as long as it is served; the text, the parsed
//! TOML and everything else freed on the way do not count. Configurations:
//!
//! - `base`: one site in front of `origin.url`;
//! - `sites`: N sites with two names and a certificate of their own each
//!   (P-256, generated with rcgen);
//! - `routes`: the same N sites with M routes each;
//! - `upstreams`: one site with K upstreams of one address each and a
//!   route to each.
//!
//! Prints a markdown table: bytes per site, per route, per upstream address.
//! The resident memory the kernel reports (bench/sites_memory.py) is
//! higher: it also holds heap pages freed while the TOML was parsed, which
//! the allocator keeps for later use.

use std::alloc::{GlobalAlloc, Layout, System};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use linkpush::config::{Config, Overrides};
use linkpush::metrics::Metrics;
use linkpush::runtime::{Global, Worker};
use tokio_util::sync::CancellationToken;

struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        System.alloc(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

struct Args {
    sites: usize,
    routes: usize,
    upstreams: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        sites: 1000,
        routes: 10,
        upstreams: 1000,
    };
    let mut given = std::env::args().skip(1);
    while let Some(flag) = given.next() {
        let target = match flag.as_str() {
            "--sites" => &mut args.sites,
            "--routes" => &mut args.routes,
            "--upstreams" => &mut args.upstreams,
            // cargo bench passes --bench.
            "--bench" => continue,
            other => return Err(format!("unknown argument {other}")),
        };
        *target = given
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("{flag} needs a number"))?;
    }
    Ok(args)
}

const HEAD: &str = "[[listen]]\naddress = \"127.0.0.1:0\"\n\n[tls]\nself_signed = true\n\n\
                    [origin]\nurl = \"http://127.0.0.1:9\"\n\n";

/// `(cert, key)` paths for each site, written to `dir`.
fn certificates(dir: &Path, count: usize) -> Vec<(String, String)> {
    (0..count)
        .map(|i| {
            let names = vec![format!("site{i}.example"), format!("www.site{i}.example")];
            let generated = rcgen::generate_simple_self_signed(names).expect("certificate");
            let cert = dir.join(format!("site{i}.pem"));
            let key = dir.join(format!("site{i}.key"));
            std::fs::write(&cert, generated.cert.pem()).expect("write");
            std::fs::write(&key, generated.signing_key.serialize_pem()).expect("write");
            (cert.display().to_string(), key.display().to_string())
        })
        .collect()
}

fn sites(certs: &[(String, String)], routes: usize) -> String {
    let mut text = HEAD.to_owned();
    for (i, (cert, key)) in certs.iter().enumerate() {
        text.push_str(&format!(
            "[[sites]]\nnames = [\"site{i}.example\", \"www.site{i}.example\"]\n\
             cert = \"{cert}\"\nkey = \"{key}\"\n"
        ));
        for r in 0..routes {
            let push = r % 2 == 0;
            text.push_str(&format!(
                "[[sites.routes]]\npath = \"/section{r}\"\npush = {push}\n"
            ));
        }
    }
    text
}

fn upstreams(count: usize) -> String {
    let mut text = HEAD.to_owned();
    for u in 0..count {
        text.push_str(&format!(
            "[upstreams.u{u}]\nservers = [\"http://127.0.0.1:{}\"]\n",
            10_000 + u
        ));
    }
    text.push_str("[[sites]]\ndefault = true\n");
    for u in 0..count {
        text.push_str(&format!(
            "[[sites.routes]]\npath = \"/u{u}\"\nupstream = \"u{u}\"\n"
        ));
    }
    text
}

/// Live heap bytes that serving `text` holds: its configuration, the
/// process-wide state and one worker's.
fn held(text: String, runtime: &tokio::runtime::Runtime) -> i64 {
    let _entered = runtime.enter();
    let before = LIVE.load(Ordering::Relaxed);
    let config = Config::from_toml_str(&text, Path::new("."), &Overrides::default())
        .unwrap_or_else(|error| panic!("bench configuration: {error}"));
    drop(text);
    let global = Global::new(Arc::new(config), 1, Arc::new(Metrics::default()), None)
        .unwrap_or_else(|error| panic!("bench state: {error}"));
    let worker = Worker::new(&global, CancellationToken::new());
    let after = LIVE.load(Ordering::Relaxed);
    drop(worker);
    drop(global);
    after - before
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(error) => {
            eprintln!("sites_heap: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("sites_heap: {error}");
            return ExitCode::FAILURE;
        }
    };
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("sites_heap: {error}");
            return ExitCode::FAILURE;
        }
    };
    let certs = certificates(dir.path(), args.sites);
    let base = held(HEAD.to_owned(), &runtime);
    let with_sites = held(sites(&certs, 0), &runtime);
    let with_routes = held(sites(&certs, args.routes), &runtime);
    let with_upstreams = held(upstreams(args.upstreams), &runtime);

    let per = |total: i64, count: usize| (total as f64) / (count.max(1) as f64);
    let kib = |bytes: i64| bytes as f64 / 1024.0;
    println!("| configuration | heap held | per item |");
    println!("| --- | ---: | ---: |");
    println!("| one site (base) | {:.1} KiB | |", kib(base));
    println!(
        "| {} sites, two names and a certificate each | {:.1} KiB | {:.0} bytes per site |",
        args.sites,
        kib(with_sites),
        per(with_sites - base, args.sites)
    );
    println!(
        "| {} sites × {} routes | {:.1} KiB | {:.0} bytes per route |",
        args.sites,
        args.routes,
        kib(with_routes),
        per(with_routes - with_sites, args.sites * args.routes)
    );
    println!(
        "| {} upstreams of one address, a route to each | {:.1} KiB | {:.0} bytes per upstream address and its route |",
        args.upstreams,
        kib(with_upstreams),
        per(with_upstreams - base, args.upstreams)
    );
    ExitCode::SUCCESS
}
