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
//! Cost: a client may send a new cookie with every request, so everything a
//! cookie drives is linear in its length and bounded whatever it declares. A
//! value longer than [`MAX_VALUE_LEN`] or declaring more than [`MAX_ENTRIES`]
//! entries is rejected before any per-entry work, decoding reads each entry
//! once, and [`CacheDigest::merge`] is one pass over two sorted lists plus
//! one pass to drop what no longer fits. `cargo bench --bench digest`
//! measures it (see `bench/README.md`).
//!
//! Privacy: the cookie holds only truncated hashes of same-origin asset URLs
//! and their validators, nothing a user typed and nothing from other sites.

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
/// Version, Rice parameter and a big-endian 16-bit count, before the gaps.
const HEADER_LEN: usize = 4;
/// The most bytes a value of `MAX_VALUE_LEN` characters decodes to.
const MAX_BYTES: usize = MAX_VALUE_LEN.div_ceil(4) * 3;

/// The most entries any value of at most [`MAX_VALUE_LEN`] characters can
/// hold, and so the most the proxy ever writes: 447.
///
/// An entry codes as its gap's quotient in unary (at least the one bit that
/// ends it) and `r` remainder bits, so `n` entries take at least
/// `n * (1 + r(n))` bits, with all gaps zero (consecutive hashes). For 256
/// to 511 entries `r` is 11, and 447 entries of 12 bits fill 5,364 of the
/// 5,368 bits left after the header in 675 bytes (900 characters); 448 need
/// 902 characters. From 512 entries on, `r` is 10 or less and the fewest
/// bits only grow (512 × 11 = 5,632). The proxy writes 447 entries when the
/// hashes it pushed are consecutive; random ones fill the value at about
/// 420. A cookie declaring more is rejected before it is read: decoding it
/// could only end in an error once its bits run out.
pub const MAX_ENTRIES: usize = max_entries();

/// Any set of at most this many entries fits in [`MAX_VALUE_LEN`] (404),
/// whatever its hashes: gaps add up to at most `2^20 - n`, so the unary
/// quotients add at most `(2^20 - n) >> r` bits to the fewest. Only larger
/// sets need their size computed when they grow.
const ALWAYS_FITS: usize = always_fits();

const _: () = assert!(ALWAYS_FITS <= MAX_ENTRIES && MAX_ENTRIES <= u16::MAX as usize);
const _: () = assert!(HEADER_LEN + MAX_ENTRIES.div_ceil(8) <= MAX_BYTES);

/// The set of (URL, validator) hashes a browser is known to hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheDigest {
    /// Ascending, distinct, each below `UNIVERSE`, and short enough to
    /// encode in `MAX_VALUE_LEN` (so never more than `MAX_ENTRIES`). A
    /// sorted vector is the coded order itself: decoding appends, merging is
    /// one pass, and lookups are a binary search over at most 447 entries.
    values: Vec<u32>,
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
        self.values.binary_search(&key).is_ok()
    }

    /// Add an entry. When the encoded set would outgrow the cookie, the
    /// entries with the smallest hashes (an arbitrary, stable choice) go,
    /// possibly `key` itself. `true` when `key` was not held before.
    pub fn insert(&mut self, key: u32) -> bool {
        let key = key & (UNIVERSE - 1);
        let Err(at) = self.values.binary_search(&key) else {
            return false;
        };
        self.values.insert(at, key);
        self.trim();
        true
    }

    /// Add every entry of `other`: the union, less its smallest hashes if
    /// it would outgrow the cookie. Linear in both sizes, because a client
    /// can make the proxy merge a new cookie on every request.
    pub fn merge(&mut self, other: &CacheDigest) {
        let (ours, theirs) = (&self.values, &other.values);
        let mut union = Vec::with_capacity(ours.len() + theirs.len());
        let (mut i, mut j) = (0, 0);
        while let (Some(&a), Some(&b)) = (ours.get(i), theirs.get(j)) {
            union.push(a.min(b));
            i += usize::from(a <= b);
            j += usize::from(b <= a);
        }
        union.extend_from_slice(ours.get(i..).unwrap_or_default());
        union.extend_from_slice(theirs.get(j..).unwrap_or_default());
        self.values = union;
        self.trim();
    }

    /// Drop the smallest entries until the encoding fits the cookie.
    fn trim(&mut self) {
        let start = first_fitting(&self.values);
        if start > 0 {
            self.values.drain(..start);
        }
    }

    /// The cookie value: base64url of version, Rice parameter, count and
    /// the coded gaps.
    pub fn encode(&self) -> String {
        let n = self.values.len();
        let r = rice_parameter(n);
        let mut bits = BitWriter {
            bytes: Vec::with_capacity(MAX_BYTES),
            pending: 0,
            pending_bits: 0,
        };
        // `n` fits: the set is trimmed to at most MAX_ENTRIES <= u16::MAX.
        let count = (n as u16).to_be_bytes();
        bits.bytes
            .extend_from_slice(&[VERSION, r as u8, count[0], count[1]]);
        let low = (1u32 << r) - 1;
        for gap in gaps(&self.values) {
            bits.ones(gap >> r);
            // The zero that ends the quotient, then the remainder.
            bits.push(gap & low, r + 1);
        }
        URL_SAFE_NO_PAD.encode(bits.finish())
    }

    /// Parse a cookie value. Anything malformed, oversized, or not in
    /// canonical form gives `None`: such a cookie is ignored, never trusted.
    /// The work is linear in the value's length, at most `MAX_VALUE_LEN`.
    pub fn decode(value: &str) -> Option<CacheDigest> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let mut buffer = [0u8; MAX_BYTES];
        let len = URL_SAFE_NO_PAD.decode_slice(value, &mut buffer).ok()?;
        let (header, body) = buffer.get(..len)?.split_at_checked(HEADER_LEN)?;
        let [version, r, count_high, count_low] = <[u8; HEADER_LEN]>::try_from(header).ok()?;
        let r = u32::from(r);
        let n = usize::from(u16::from_be_bytes([count_high, count_low]));
        if version != VERSION || n > MAX_ENTRIES || r != rice_parameter(n) {
            return None;
        }
        // Every entry takes at least 1 + r bits: a count the body cannot
        // hold is refused before anything is allocated.
        if min_bits(n) > body.len() * 8 {
            return None;
        }
        let mut reader = BitReader::new(body);
        let mut values = Vec::with_capacity(n);
        // The smallest value the next entry may take: entries are distinct.
        let mut next = 0u32;
        for _ in 0..n {
            // quotient <= UNIVERSE >> r, so the shift cannot overflow.
            let quotient = reader.unary(UNIVERSE >> r)?;
            let gap = (quotient << r) | reader.bits(r)?;
            let value = next.checked_add(gap)?;
            if value >= UNIVERSE {
                return None;
            }
            values.push(value);
            next = value + 1;
        }
        // Only zero padding may follow, and less than a byte of it.
        if !reader.only_padding_left() {
            return None;
        }
        Some(CacheDigest { values })
    }
}

/// The Rice parameter for `n` entries: log2 of the mean gap.
const fn rice_parameter(n: usize) -> u32 {
    let mean_gap = UNIVERSE as usize / (n + 1);
    let log = if mean_gap > 1 { mean_gap.ilog2() } else { 0 };
    if log < UNIVERSE_BITS {
        log
    } else {
        UNIVERSE_BITS
    }
}

/// Characters of a value whose coded gaps take `bits` bits.
const fn encoded_len(bits: usize) -> usize {
    // Unpadded base64: 4 characters for every 3 bytes, rounded up.
    ((HEADER_LEN + bits.div_ceil(8)) * 4).div_ceil(3)
}

/// The fewest bits `n` entries can code in: every gap zero.
const fn min_bits(n: usize) -> usize {
    n * (1 + rice_parameter(n) as usize)
}

/// The most bits `n` distinct entries below `UNIVERSE` can code in.
const fn max_bits(n: usize) -> usize {
    let r = rice_parameter(n);
    min_bits(n) + ((UNIVERSE as usize).saturating_sub(n) >> r)
}

const fn max_entries() -> usize {
    // min_bits(n) >= n, and a value carries at most 6 bits a character.
    let mut n = 0;
    let mut most = 0;
    while n <= MAX_VALUE_LEN * 6 {
        if encoded_len(min_bits(n)) <= MAX_VALUE_LEN {
            most = n;
        }
        n += 1;
    }
    most
}

const fn always_fits() -> usize {
    let mut n = 0;
    while encoded_len(max_bits(n + 1)) <= MAX_VALUE_LEN {
        n += 1;
    }
    n
}

/// The coded gaps of an ascending, distinct list: the first value itself,
/// then the distance to the previous value less one.
fn gaps(values: &[u32]) -> impl Iterator<Item = u32> + '_ {
    let mut next = 0;
    values.iter().map(move |&value| {
        let gap = value - next;
        next = value + 1;
        gap
    })
}

/// Bits of the coded gaps of `values` with Rice parameter `r`.
fn coded_bits(values: &[u32], r: u32) -> usize {
    gaps(values)
        .map(|gap| 1 + r as usize + (gap >> r) as usize)
        .sum()
}

/// The index of the first entry kept when the smallest are dropped until
/// the rest encodes in `MAX_VALUE_LEN`. Sizes beyond `MAX_ENTRIES` never
/// fit and sizes up to `ALWAYS_FITS` always do, so at most
/// `MAX_ENTRIES - ALWAYS_FITS` sizes are counted, each in one pass.
fn first_fitting(values: &[u32]) -> usize {
    let len = values.len();
    let mut start = len.saturating_sub(MAX_ENTRIES);
    while len - start > ALWAYS_FITS {
        let rest = values.get(start..).unwrap_or_default();
        if encoded_len(coded_bits(rest, rice_parameter(rest.len()))) <= MAX_VALUE_LEN {
            break;
        }
        start += 1;
    }
    start
}

/// Packs bits most significant first.
struct BitWriter {
    bytes: Vec<u8>,
    /// Bits not yet in `bytes`, in the low `pending_bits` bits (fewer
    /// than 8 between calls).
    pending: u64,
    pending_bits: u32,
}

impl BitWriter {
    /// Append the low `count` bits of `value` (`count` <= 32).
    fn push(&mut self, value: u32, count: u32) {
        self.pending = (self.pending << count) | u64::from(value);
        self.pending_bits += count;
        while self.pending_bits >= 8 {
            self.pending_bits -= 8;
            self.bytes.push((self.pending >> self.pending_bits) as u8);
        }
        self.pending &= (1 << self.pending_bits) - 1;
    }

    /// Append `count` one bits.
    fn ones(&mut self, mut count: u32) {
        while count >= 16 {
            self.push(0xffff, 16);
            count -= 16;
        }
        self.push((1 << count) - 1, count);
    }

    /// The bytes, the last one padded with zero bits.
    fn finish(mut self) -> Vec<u8> {
        if self.pending_bits > 0 {
            self.bytes
                .push((self.pending << (8 - self.pending_bits)) as u8);
        }
        self.bytes
    }
}

/// Reads bits most significant first through a 64-bit window, so a unary
/// run or a remainder costs a shift and a count, not a step per bit.
struct BitReader<'a> {
    /// Bytes not yet in the window.
    bytes: &'a [u8],
    /// The next `loaded` bits in its top bits; the bits below are zero.
    window: u64,
    loaded: u32,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> BitReader<'a> {
        BitReader {
            bytes,
            window: 0,
            loaded: 0,
        }
    }

    /// Load whole bytes while they fit.
    fn refill(&mut self) {
        while self.loaded <= 56 {
            let Some((&byte, rest)) = self.bytes.split_first() else {
                break;
            };
            self.window |= u64::from(byte) << (56 - self.loaded);
            self.loaded += 8;
            self.bytes = rest;
        }
    }

    /// Drop `count` (at most `loaded`) bits from the window.
    fn consume(&mut self, count: u32) {
        self.window = self.window.checked_shl(count).unwrap_or(0);
        self.loaded -= count;
    }

    /// A unary number: the ones before the next zero, which is consumed
    /// too. `None` when the data ends first or more than `limit` ones come.
    fn unary(&mut self, limit: u32) -> Option<u32> {
        let mut count: u32 = 0;
        loop {
            self.refill();
            // Unloaded bits are zero, so only a full window of ones can
            // count past `loaded`.
            let ones = self.window.leading_ones().min(self.loaded);
            count += ones;
            if count > limit {
                return None;
            }
            if ones < self.loaded {
                self.consume(ones + 1);
                return Some(count);
            }
            self.consume(ones);
            if self.bytes.is_empty() {
                return None;
            }
        }
    }

    /// The next `count` bits (`count` <= 32), most significant first.
    fn bits(&mut self, count: u32) -> Option<u32> {
        self.refill();
        if count > self.loaded {
            return None;
        }
        let value = self.window.checked_shr(64 - count).unwrap_or(0) as u32;
        self.consume(count);
        Some(value)
    }

    /// Whether all that is left is less than a byte of zero bits.
    fn only_padding_left(&mut self) -> bool {
        self.refill();
        self.bytes.is_empty() && self.loaded < 8 && self.window == 0
    }
}

/// How many values named like the digest cookie are tried. The proxy sets
/// one cookie (`Path=/`, no `Domain`), so a browser sends one, or a few if
/// other paths or parent domains set the same name; a header with more is
/// crafted, and decoding each of them would only multiply the work.
const COOKIE_CANDIDATES: usize = 4;

/// The digest carried by a request's `Cookie` fields under `name`: the first
/// valid one among the first [`COOKIE_CANDIDATES`] of that name. Corrupted
/// or oversized values are ignored.
pub fn from_cookies(headers: &http::HeaderMap, name: &str) -> Option<CacheDigest> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .filter(|(key, _)| *key == name)
        .take(COOKIE_CANDIDATES)
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
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    /// The encoder as first written, over a sorted set and one bit at a
    /// time: browsers hold cookies in this format, so it must not change.
    fn reference_encode(values: &BTreeSet<u32>) -> String {
        let n = values.len();
        let r = rice_parameter(n);
        let mut bits: Vec<bool> = Vec::new();
        let mut previous: Option<u32> = None;
        for &value in values {
            let gap = match previous {
                None => value,
                Some(p) => value - p - 1,
            };
            previous = Some(value);
            bits.extend((0..gap >> r).map(|_| true));
            bits.push(false);
            bits.extend((0..r).rev().map(|i| (gap >> i) & 1 == 1));
        }
        let mut bytes = vec![VERSION, r as u8];
        bytes.extend_from_slice(&(n as u16).to_be_bytes());
        bytes.extend(bits.chunks(8).map(|chunk| {
            chunk
                .iter()
                .enumerate()
                .fold(0u8, |byte, (i, &bit)| byte | (u8::from(bit) << (7 - i)))
        }));
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The trimming rule as first written: drop the smallest entry while
    /// the encoding is too long.
    fn reference_trim(mut values: BTreeSet<u32>) -> BTreeSet<u32> {
        // A shortcut that keeps the tests quick without the optimised
        // build: no set of 512 or more entries fits (512 consecutive hashes
        // take 512 × 11 bits, more than the 5,368 that 900 characters hold;
        // `the_entry_cap_is_what_a_full_value_can_hold` checks every size),
        // so those are popped without encoding them.
        while values.len() >= 512 {
            values.pop_first();
        }
        while reference_encode(&values).len() > MAX_VALUE_LEN {
            values.pop_first();
        }
        values
    }

    fn digest_of(values: &BTreeSet<u32>) -> CacheDigest {
        CacheDigest {
            values: values.iter().copied().collect(),
        }
    }

    /// A value with the given header and `body_bytes` zero bytes after it:
    /// consecutive entries from 0 when the body is long enough.
    fn crafted(n: u16, r: u32, body_bytes: usize) -> String {
        let mut bytes = vec![VERSION, r as u8];
        bytes.extend_from_slice(&n.to_be_bytes());
        bytes.resize(HEADER_LEN + body_bytes, 0);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Sets of up to `max` hashes, spread over the whole range or clustered
    /// (small gaps: the most entries per byte, the case the cap is for).
    fn sets(max: usize) -> impl Strategy<Value = BTreeSet<u32>> {
        prop_oneof![
            prop::collection::btree_set(0..UNIVERSE, 0..max),
            (0..UNIVERSE, prop::collection::btree_set(0..4096u32, 0..max))
                .prop_map(|(base, set)| set.into_iter().map(|v| (v + base) % UNIVERSE).collect()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn encode_is_the_reference_format_and_decodes_back(set in sets(600)) {
            let set = reference_trim(set);
            let digest = digest_of(&set);
            let encoded = digest.encode();
            prop_assert_eq!(&encoded, &reference_encode(&set));
            prop_assert!(encoded.len() <= MAX_VALUE_LEN);
            let r = rice_parameter(set.len());
            prop_assert_eq!(encoded_len(coded_bits(&digest.values, r)), encoded.len());
            prop_assert_eq!(CacheDigest::decode(&encoded), Some(digest));
        }

        #[test]
        fn merge_is_the_union_less_its_smallest_hashes(held in sets(600), sent in sets(600)) {
            // As on a connection: both sides already fit.
            let (held, sent) = (reference_trim(held), reference_trim(sent));
            let mut merged = digest_of(&held);
            merged.merge(&digest_of(&sent));
            let expected = reference_trim(held.union(&sent).copied().collect());
            prop_assert_eq!(merged, digest_of(&expected));
        }

        #[test]
        fn merge_trims_oversized_inputs_too(held in sets(700), sent in sets(700)) {
            let mut merged = digest_of(&held);
            merged.merge(&digest_of(&sent));
            let expected = reference_trim(held.union(&sent).copied().collect());
            prop_assert_eq!(merged, digest_of(&expected));
        }

        #[test]
        fn insert_matches_the_reference(
            keys in prop_oneof![
                prop::collection::vec(any::<u32>(), 0..700),
                prop::collection::vec(0..2048u32, 0..700),
            ]
        ) {
            let mut digest = CacheDigest::new();
            let mut reference = BTreeSet::new();
            for key in keys {
                let added = reference.insert(key & (UNIVERSE - 1));
                reference = reference_trim(reference);
                prop_assert_eq!(digest.insert(key), added);
            }
            prop_assert_eq!(digest, digest_of(&reference));
        }

        #[test]
        fn whatever_decodes_is_canonical(set in sets(500), at in any::<usize>(), byte in any::<u8>()) {
            // One byte of a valid value changed: if the result still
            // decodes, it is exactly what encoding its digest gives.
            let mut bytes = URL_SAFE_NO_PAD.decode(digest_of(&reference_trim(set)).encode()).unwrap();
            let at = at % bytes.len();
            bytes[at] = byte;
            let value = URL_SAFE_NO_PAD.encode(&bytes);
            if let Some(digest) = CacheDigest::decode(&value) {
                prop_assert_eq!(digest.encode(), value);
            }
        }
    }

    #[test]
    fn the_entry_cap_is_what_a_full_value_can_hold() {
        assert_eq!(MAX_BYTES, 675);
        assert_eq!(MAX_ENTRIES, 447);
        assert_eq!(ALWAYS_FITS, 404);
        // (entries, Rice parameter, fewest characters, most characters)
        let table = [
            (0, 20, 6, 7),
            (1, 19, 10, 10),
            (255, 12, 559, 602),
            (256, 11, 518, 603),
            (404, 11, 814, 899),
            (405, 11, 816, 902),
            (447, 11, 900, 986),
            (448, 11, 902, 987),
            (511, 11, 1028, 1114),
            (512, 10, 944, 1115),
        ];
        for (n, r, fewest, most) in table {
            assert_eq!(rice_parameter(n), r, "{n}");
            assert_eq!(encoded_len(min_bits(n)), fewest, "{n}");
            assert_eq!(encoded_len(max_bits(n)), most, "{n}");
        }
        // No count beyond the cap fits, up to the 16-bit limit.
        assert!((MAX_ENTRIES + 1..=usize::from(u16::MAX))
            .all(|n| encoded_len(min_bits(n)) > MAX_VALUE_LEN));
    }

    #[test]
    fn declared_counts_beyond_the_cap_are_refused() {
        // (declared entries, body bytes): zero gaps, i.e. entries 0..n,
        // cut to what a value of MAX_VALUE_LEN characters holds.
        let body = |n: usize| min_bits(n).div_ceil(8).min(MAX_BYTES - HEADER_LEN);
        for n in [0usize, 1, 10, 404, 405, 446, 447, 448, 512, 1000, 65535] {
            let value = crafted(n as u16, rice_parameter(n), body(n));
            let decoded = CacheDigest::decode(&value);
            if n <= MAX_ENTRIES {
                let expected: BTreeSet<u32> = (0..n as u32).collect();
                assert_eq!(decoded, Some(digest_of(&expected)), "{n}");
                assert_eq!(decoded.map(|d| d.encode()), Some(value), "{n}");
            } else {
                assert_eq!(decoded, None, "{n}");
            }
        }
        // The full body for one entry more is itself too long a value.
        let over = crafted(448, 11, min_bits(448).div_ceil(8));
        assert_eq!(over.len(), 902);
        assert_eq!(CacheDigest::decode(&over), None);
        // A count that the body cannot hold is refused, not read.
        assert_eq!(CacheDigest::decode(&crafted(447, 11, 0)), None);
        assert_eq!(CacheDigest::decode(&crafted(447, 11, 100)), None);
    }

    #[test]
    fn a_crafted_maximal_cookie_is_what_the_proxy_writes_for_consecutive_hashes() {
        let mut digest = CacheDigest::new();
        let mut key = 5000;
        while digest.encode().len() < MAX_VALUE_LEN {
            assert!(digest.insert(key));
            key += 1;
        }
        assert_eq!(digest.len(), MAX_ENTRIES);
        let encoded = digest.encode();
        assert_eq!(encoded.len(), MAX_VALUE_LEN);
        assert_eq!(CacheDigest::decode(&encoded).as_ref(), Some(&digest));
        // One more consecutive hash: the smallest goes, the size stays.
        assert!(digest.insert(key));
        assert_eq!(digest.len(), MAX_ENTRIES);
        assert!(digest.contains(key) && !digest.contains(5000) && digest.contains(5001));
        // Merging two full digests keeps a full one.
        let mut other = CacheDigest::new();
        for k in 100_000..100_000 + MAX_ENTRIES as u32 {
            other.insert(k);
        }
        digest.merge(&other);
        assert!(digest.encode().len() <= MAX_VALUE_LEN);
        assert!(digest.len() > ALWAYS_FITS, "{}", digest.len());
    }

    #[test]
    fn only_the_first_few_cookies_of_the_name_are_tried() {
        let mut digest = CacheDigest::new();
        digest.insert(key("h", "/a", "v"));
        let good = format!("lp_digest={}", digest.encode());
        let header = |bad: usize| {
            let mut headers = http::HeaderMap::new();
            let mut crumbs = vec!["a=1".to_string(); 3];
            crumbs.extend((0..bad).map(|_| "lp_digest=AQAAAP".to_string()));
            crumbs.push(good.clone());
            headers.insert(
                http::header::COOKIE,
                http::HeaderValue::from_str(&crumbs.join("; ")).unwrap(),
            );
            headers
        };
        assert_eq!(from_cookies(&header(0), "lp_digest"), Some(digest.clone()));
        assert_eq!(
            from_cookies(&header(COOKIE_CANDIDATES - 1), "lp_digest"),
            Some(digest.clone())
        );
        assert_eq!(from_cookies(&header(COOKIE_CANDIDATES), "lp_digest"), None);
        assert_eq!(from_cookies(&header(1000), "lp_digest"), None);
        // Crumbs split over several Cookie fields (RFC 9113 §8.2.3).
        let mut headers = http::HeaderMap::new();
        headers.append(http::header::COOKIE, "lp_digest=bad".parse().unwrap());
        headers.append(http::header::COOKIE, good.parse().unwrap());
        assert_eq!(from_cookies(&headers, "lp_digest"), Some(digest));
    }

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

    /// Values written by earlier versions: browsers hold cookies like these.
    #[test]
    fn the_format_is_unchanged() {
        let golden = [
            (0, "ARQAAA"),
            (1, "ARMAAVjacA"),
            (10, "ARAACpIFjVoF3KZdprE_0lnPalIJvkf5GqoA"),
            (
                40,
                "AQ4AKGOdyZmd1Up7VaE7lImOLJXk-fcAQzCsrVsIhix98YtdZDFqDnabE8PcgRuh1_LDX8CbwZ2-\
                 tuwncKLmFtv6CP1YrDRwWu_4fI1Z_T_iXXvWYA",
            ),
        ];
        for (n, value) in golden {
            let mut digest = CacheDigest::new();
            for i in 0..n {
                digest.insert(key("example.com", &format!("/asset-{i}.css"), "\"v1\""));
            }
            assert_eq!(digest.encode(), value, "{n}");
            assert_eq!(CacheDigest::decode(value), Some(digest), "{n}");
        }
    }
}
