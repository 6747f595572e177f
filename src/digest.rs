//! A cookie-sized digest of what was pushed to one browser.
//!
//! Each entry is a 20-bit hash of a pushed URL (authority and path) and the
//! validator (ETag or Last-Modified) of the pushed response, so a changed
//! asset no longer matches and is pushed again. The set is stored sorted and
//! Golomb-Rice coded: about `log2(2^20 / n) + 2` bits per entry, which fits a
//! few hundred entries in the cookie. A false positive (probability about
//! `n / 2^20`) costs one push that is not made; the browser then fetches the
//! asset itself.
//!
//! Privacy: the cookie holds only truncated hashes of same-origin asset URLs
//! and their validators, nothing a user typed and nothing from other sites.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// Entries are hashes below `2^UNIVERSE_BITS`.
const UNIVERSE_BITS: u32 = 20;
const UNIVERSE: u32 = 1 << UNIVERSE_BITS;
const VERSION: u8 = 1;
/// The encoded value stays at or below this many characters, so the whole
/// `Set-Cookie` line (name and attributes included) stays under 1 KiB.
pub const MAX_VALUE_LEN: usize = 900;

/// The set of (URL, validator) hashes a browser is known to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDigest {
    values: BTreeSet<u32>,
}

/// The entry for a pushed response.
pub fn key(authority: &str, path: &str, validator: &str) -> u32 {
    // FNV-1a: a fixed, documented function, so digests survive upgrades.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |byte: u8| {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    };
    authority.bytes().for_each(|b| feed(b.to_ascii_lowercase()));
    feed(0);
    path.bytes().for_each(&mut feed);
    feed(0);
    validator.bytes().for_each(&mut feed);
    // Fold the high bits in before truncating.
    let folded = hash ^ (hash >> 29);
    (folded as u32) & (UNIVERSE - 1)
}

/// Below this many entries the encoding is always far under the limit
/// (at most about 22 bits an entry), so inserts skip the size check.
const ALWAYS_FITS: usize = 200;

impl CacheDigest {
    pub fn new() -> CacheDigest {
        CacheDigest::default()
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn contains(&self, key: u32) -> bool {
        self.values.contains(&key)
    }

    /// Add an entry. When the encoded set would outgrow the cookie, the
    /// entries with the smallest hashes (an arbitrary, stable choice) go.
    pub fn insert(&mut self, key: u32) -> bool {
        if !self.values.insert(key & (UNIVERSE - 1)) {
            return false;
        }
        while self.values.len() > ALWAYS_FITS && self.encode().len() > MAX_VALUE_LEN {
            self.values.pop_first();
        }
        true
    }

    /// Add every entry of `other`.
    pub fn merge(&mut self, other: &CacheDigest) {
        for value in &other.values {
            self.insert(*value);
        }
    }

    /// The cookie value: base64url of version, Rice parameter, count and
    /// the coded gaps.
    pub fn encode(&self) -> String {
        let n = self.values.len();
        let r = rice_parameter(n);
        let mut bits = BitWriter::default();
        let mut previous: Option<u32> = None;
        for &value in &self.values {
            let gap = match previous {
                None => value,
                Some(p) => value - p - 1,
            };
            previous = Some(value);
            for _ in 0..(gap >> r) {
                bits.push(true);
            }
            bits.push(false);
            for i in (0..r).rev() {
                bits.push((gap >> i) & 1 == 1);
            }
        }
        let mut bytes = vec![VERSION, r as u8];
        bytes.extend_from_slice(&(n as u16).to_be_bytes());
        bytes.extend(bits.finish());
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Parse a cookie value. Anything malformed, oversized, or not in
    /// canonical form gives `None`: such a cookie is ignored, never trusted.
    pub fn decode(value: &str) -> Option<CacheDigest> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let (header, body) = bytes.split_at_checked(4)?;
        if header[0] != VERSION {
            return None;
        }
        let r = u32::from(header[1]);
        let n = usize::from(u16::from_be_bytes([header[2], header[3]]));
        if r != rice_parameter(n) {
            return None;
        }
        let mut reader = BitReader { bytes: body, at: 0 };
        let mut values = BTreeSet::new();
        let mut previous: Option<u32> = None;
        for _ in 0..n {
            let mut quotient: u32 = 0;
            while reader.next()? {
                quotient += 1;
                if quotient > (UNIVERSE >> r) {
                    return None;
                }
            }
            let mut remainder: u32 = 0;
            for _ in 0..r {
                remainder = (remainder << 1) | u32::from(reader.next()?);
            }
            let gap = (quotient << r) | remainder;
            let value = match previous {
                None => gap,
                Some(p) => p.checked_add(gap)?.checked_add(1)?,
            };
            if value >= UNIVERSE {
                return None;
            }
            values.insert(value);
            previous = Some(value);
        }
        // Only zero padding may follow, and less than a byte of it.
        if body.len() * 8 - reader.at >= 8 || reader.rest_nonzero() {
            return None;
        }
        Some(CacheDigest { values })
    }
}

/// The Rice parameter for `n` entries: log2 of the mean gap.
fn rice_parameter(n: usize) -> u32 {
    let mean_gap = UNIVERSE as usize / (n + 1);
    (usize::BITS - 1 - mean_gap.max(1).leading_zeros()).min(UNIVERSE_BITS)
}

#[derive(Default)]
struct BitWriter {
    bytes: Vec<u8>,
    used: u32,
}

impl BitWriter {
    fn push(&mut self, bit: bool) {
        if self.used % 8 == 0 {
            self.bytes.push(0);
        }
        if bit {
            if let Some(last) = self.bytes.last_mut() {
                *last |= 0x80 >> (self.used % 8);
            }
        }
        self.used += 1;
    }

    fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl BitReader<'_> {
    fn next(&mut self) -> Option<bool> {
        let byte = self.bytes.get(self.at / 8)?;
        let bit = byte & (0x80 >> (self.at % 8)) != 0;
        self.at += 1;
        Some(bit)
    }

    fn rest_nonzero(&self) -> bool {
        (self.at..self.bytes.len() * 8).any(|i| self.bytes[i / 8] & (0x80 >> (i % 8)) != 0)
    }
}

/// The digest carried by a request's `Cookie` fields under `name`, if any is
/// valid. Corrupted or oversized values are ignored.
pub fn from_cookies(headers: &http::HeaderMap, name: &str) -> Option<CacheDigest> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .find_map(|(_, value)| CacheDigest::decode(value.trim_matches('"')))
}

/// The `Set-Cookie` value that stores `digest` in the browser.
pub fn set_cookie(name: &str, digest: &CacheDigest) -> String {
    format!(
        "{name}={}; Path=/; Max-Age=2592000; Secure; HttpOnly; SameSite=Lax",
        digest.encode()
    )
}

/// A response's validator: its ETag, or else its Last-Modified.
pub fn validator(headers: &http::HeaderMap) -> Option<&str> {
    headers
        .get(http::header::ETAG)
        .or_else(|| headers.get(http::header::LAST_MODIFIED))
        .and_then(|value| value.to_str().ok())
}

/// The latest validator seen for each asset, from any response that passed
/// through (pushes, and ordinary fetches by any client). A validator is
/// trusted for `ttl`: after that the asset is pushed again and the push
/// itself is checked against the digest once its response arrives.
pub struct Validators {
    entries: Mutex<lru::LruCache<String, (String, Instant)>>,
    ttl: Duration,
}

/// Assets whose validators are remembered.
const VALIDATORS_KEPT: usize = 4096;

impl Validators {
    pub fn new(ttl: Duration) -> Validators {
        let capacity = NonZeroUsize::new(VALIDATORS_KEPT).unwrap_or(NonZeroUsize::MIN);
        Validators {
            entries: Mutex::new(lru::LruCache::new(capacity)),
            ttl,
        }
    }

    /// Remember the validator of a GET response for `path`.
    pub fn record(&self, authority: &str, path: &str, validator: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            let now = Instant::now();
            entries.put(format!("{authority} {path}"), (validator.to_string(), now));
        }
    }

    /// The validator for `path`, if one was seen within the trust period.
    pub fn fresh(&self, authority: &str, path: &str) -> Option<String> {
        let mut entries = self.entries.lock().ok()?;
        let (validator, seen) = entries.get(&format!("{authority} {path}"))?;
        (seen.elapsed() <= self.ttl).then(|| validator.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_small_and_large() {
        for n in [0usize, 1, 2, 10, 100, 300] {
            let mut digest = CacheDigest::new();
            for i in 0..n {
                digest.insert(key("example.com", &format!("/asset-{i}.css"), "\"v1\""));
            }
            let encoded = digest.encode();
            assert!(encoded.len() <= MAX_VALUE_LEN, "{n}: {}", encoded.len());
            assert_eq!(CacheDigest::decode(&encoded), Some(digest), "{n}");
        }
    }

    #[test]
    fn a_changed_validator_is_a_different_entry() {
        let mut digest = CacheDigest::new();
        digest.insert(key("example.com", "/app.css", "\"abc\""));
        assert!(digest.contains(key("EXAMPLE.com", "/app.css", "\"abc\"")));
        assert!(!digest.contains(key("example.com", "/app.css", "\"abd\"")));
        assert!(!digest.contains(key("example.com", "/APP.css", "\"abc\"")));
    }

    #[test]
    fn the_cookie_stays_bounded_however_many_entries() {
        let mut digest = CacheDigest::new();
        for i in 0..5000 {
            digest.insert(key("h", &format!("/{i}"), "v"));
        }
        assert!(digest.encode().len() <= MAX_VALUE_LEN);
        assert!(digest.len() > 300, "{}", digest.len());
    }

    #[test]
    fn malformed_values_are_rejected() {
        let mut digest = CacheDigest::new();
        for i in 0..20 {
            digest.insert(key("h", &format!("/{i}"), "v"));
        }
        let good = digest.encode();
        let bytes = URL_SAFE_NO_PAD.decode(&good).unwrap();
        let reject = |bytes: &[u8]| CacheDigest::decode(&URL_SAFE_NO_PAD.encode(bytes));
        assert!(CacheDigest::decode("not base64 at all!").is_none());
        assert!(CacheDigest::decode(&"A".repeat(MAX_VALUE_LEN + 4)).is_none());
        assert!(CacheDigest::decode("").is_none());
        // Wrong version, wrong parameter, truncated, trailing garbage.
        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(reject(&wrong).is_none());
        let mut wrong = bytes.clone();
        wrong[1] ^= 1;
        assert!(reject(&wrong).is_none());
        assert!(reject(&bytes[..bytes.len() - 3]).is_none());
        let mut longer = bytes.clone();
        longer.push(0xff);
        assert!(reject(&longer).is_none());
        // A count far beyond the data.
        let mut wrong = bytes.clone();
        wrong[2] = 0xff;
        assert!(reject(&wrong).is_none());
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut seed: u64 = 0x1234_5678;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = CacheDigest::decode(&URL_SAFE_NO_PAD.encode(&bytes));
        }
    }
}
