//! Cost of the cache digest cookie on the request path.
//!
//! `cargo bench --bench digest` times, per operation and for cookies of
//! several sizes, what the HTTP/2 frontend does with a digest cookie:
//!
//! - `from_cookies`: find and decode the cookie in a request's `Cookie`
//!   field (done for every request when `[push] cache_digest` is on);
//! - `merge`: fold the decoded digest into a connection's digest that
//!   already holds a few hundred entries;
//! - `request`: both, as one request pays them;
//! - `set_cookie`: encode the digest into a `Set-Cookie` value (done for
//!   every pushed response that adds an entry).
//!
//! Every sample uses a different cookie from a pool, as an attacker sending
//! a new cookie on each request would. Each operation is timed on its own
//! with `Instant` after a warm-up; the median and the 99th percentile are
//! printed in microseconds. Only the public API of `linkpush::policy::digest` is
//! used, so the same file can time older versions of it.

use std::hint::black_box;
use std::time::{Duration, Instant};

use http::header::COOKIE;
use http::{HeaderMap, HeaderValue};
use linkpush::policy::digest::{from_cookies, set_cookie, CacheDigest, MAX_VALUE_LEN};

const COOKIE_NAME: &str = "lp_digest";
/// Distinct cookies per size, cycled through.
const POOL: usize = 32;
/// Entries in the connection digest that cookies are merged into.
const HELD: usize = 300;
/// Time spent warming up, then measuring, each case.
const WARM_UP: Duration = Duration::from_millis(200);
const BUDGET: Duration = Duration::from_millis(1000);
/// Samples per case: at least this many whatever the budget, at most that.
const MIN_SAMPLES: usize = 200;
const MAX_SAMPLES: usize = 200_000;

/// xorshift64: reproducible keys without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 20) as u32
    }
}

/// A digest of `n` random entries.
fn random_digest(rng: &mut Rng, n: usize) -> CacheDigest {
    let mut digest = CacheDigest::new();
    while digest.len() < n {
        digest.insert(rng.next());
    }
    digest
}

/// The largest digest the proxy writes for random keys: keys are added
/// until the encoded value is exactly `MAX_VALUE_LEN` characters.
fn full_digest(rng: &mut Rng) -> CacheDigest {
    let mut digest = CacheDigest::new();
    let mut closest = CacheDigest::new();
    for _ in 0..200_000 {
        digest.insert(rng.next());
        let len = digest.encode().len();
        if len == MAX_VALUE_LEN {
            return digest;
        }
        if len > closest.encode().len() {
            closest = digest.clone();
        }
    }
    closest
}

/// The most entries a cookie of `MAX_VALUE_LEN` characters can hold:
/// consecutive hashes, so every gap codes in the fewest bits. The proxy
/// writes this if the hashes it pushed happen to be so.
fn densest_digest(rng: &mut Rng) -> CacheDigest {
    let start = rng.next() % 1000;
    let mut digest = CacheDigest::new();
    let mut key = start;
    while digest.encode().len() < MAX_VALUE_LEN && key < start + 2000 {
        digest.insert(key);
        key += 1;
    }
    digest
}

fn request_headers(digest: &CacheDigest) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let cookie = format!(
        "session=3f9a1c; {COOKIE_NAME}={}; theme=dark",
        digest.encode()
    );
    if let Ok(value) = HeaderValue::from_str(&cookie) {
        headers.insert(COOKIE, value);
    }
    headers
}

struct Stats {
    median: f64,
    p99: f64,
    samples: usize,
}

/// Time `run` on the output of `setup`, one sample per call; `setup` is not
/// timed.
fn measure<S, R>(mut setup: impl FnMut(usize) -> S, mut run: impl FnMut(S) -> R) -> Stats {
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < WARM_UP {
        let input = setup(i);
        black_box(run(black_box(input)));
        i += 1;
    }
    let mut samples = Vec::new();
    let started = Instant::now();
    while samples.len() < MAX_SAMPLES && (samples.len() < MIN_SAMPLES || started.elapsed() < BUDGET)
    {
        let input = setup(i);
        let t = Instant::now();
        black_box(run(black_box(input)));
        samples.push(t.elapsed());
        i += 1;
    }
    samples.sort_unstable();
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    let p99 = (samples.len() * 99).div_ceil(100).saturating_sub(1);
    Stats {
        median: micros(samples[samples.len() / 2]),
        p99: micros(samples[p99]),
        samples: samples.len(),
    }
}

fn main() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let held = random_digest(&mut rng, HELD);
    type Build = fn(&mut Rng) -> CacheDigest;
    let kinds: [(&str, Build); 4] = [
        ("10 entries", |rng| random_digest(rng, 10)),
        ("50 entries", |rng| random_digest(rng, 50)),
        ("full, random keys", full_digest),
        ("densest", densest_digest),
    ];
    println!(
        "{:<12} {:<18} {:>8} {:>6} {:>11} {:>11} {:>8}",
        "operation", "cookie", "entries", "chars", "median µs", "p99 µs", "samples"
    );
    for (kind, build) in kinds {
        let digests: Vec<CacheDigest> = (0..POOL).map(|_| build(&mut rng)).collect();
        let headers: Vec<HeaderMap> = digests.iter().map(request_headers).collect();
        for (digest, headers) in digests.iter().zip(&headers) {
            assert_eq!(from_cookies(headers, COOKIE_NAME).as_ref(), Some(digest));
        }
        let entries = digests.iter().map(CacheDigest::len).sum::<usize>() / POOL;
        let chars = digests.iter().map(|d| d.encode().len()).max().unwrap_or(0);
        let pick = |i: usize| i % POOL;
        let rows = [
            (
                "from_cookies",
                measure(
                    |i| &headers[pick(i)],
                    |headers| from_cookies(headers, COOKIE_NAME),
                ),
            ),
            (
                "merge",
                measure(
                    |i| (held.clone(), &digests[pick(i)]),
                    |(mut held, sent)| {
                        held.merge(sent);
                        held
                    },
                ),
            ),
            (
                "request",
                measure(
                    |i| (held.clone(), &headers[pick(i)]),
                    |(mut held, headers)| {
                        if let Some(sent) = from_cookies(headers, COOKIE_NAME) {
                            held.merge(&sent);
                        }
                        held
                    },
                ),
            ),
            (
                "set_cookie",
                measure(
                    |i| &digests[pick(i)],
                    |digest| set_cookie(COOKIE_NAME, digest),
                ),
            ),
        ];
        for (operation, stats) in rows {
            println!(
                "{:<12} {:<18} {:>8} {:>6} {:>11.2} {:>11.2} {:>8}",
                operation, kind, entries, chars, stats.median, stats.p99, stats.samples
            );
        }
    }
}
