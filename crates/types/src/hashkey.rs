//! The 128-bit hash key space: hash keys, inclusive ranges, the initial split and routing.
//!
//! Invariants: [`HashKey::from_partition_key`] is MD5 of the UTF-8 bytes read as a big-endian
//! `u128`; [`HashKey::parse_explicit`] accepts exactly the Kinesis `HashKey` pattern
//! `0|([1-9]\d{0,38})` with a value below 2^128; [`initial_ranges`] partitions `[0, 2^128-1]`
//! exactly (sorted, no gap, no overlap); [`route`] returns the unique range containing the key.

use std::fmt;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use crate::error::{clip, Error, Result};
use crate::names::ShardId;

/// A position on the hash key ring `[0, 2^128-1]`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HashKey(pub u128);

impl HashKey {
    /// The hash key of a partition key: MD5 of its UTF-8 bytes, read as a big-endian `u128`.
    pub fn from_partition_key(pk: &str) -> HashKey {
        let digest: [u8; 16] = Md5::digest(pk.as_bytes()).into();
        HashKey(u128::from_be_bytes(digest))
    }

    /// Parses an `ExplicitHashKey`: a decimal integer matching `0|([1-9]\d{0,38})` and below 2^128.
    /// Anything else is [`Error::InvalidArgument`] naming `ExplicitHashKey`.
    pub fn parse_explicit(s: &str) -> Result<HashKey> {
        let bad = || {
            Error::InvalidArgument(format!(
                "Invalid ExplicitHashKey. ExplicitHashKey must be a decimal integer in the range: [0, 2^128-1]. Specified value was {}",
                clip(s)
            ))
        };
        let shape_ok = !s.is_empty()
            && s.len() <= 39
            && s.bytes().all(|b| b.is_ascii_digit())
            && (s == "0" || !s.starts_with('0'));
        if !shape_ok {
            return Err(bad());
        }
        s.parse::<u128>().map(HashKey).map_err(|_| bad())
    }
}

impl fmt::Display for HashKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An inclusive range `[start, end]` of hash keys. Well-formed ranges have `start <= end`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashRange {
    /// First hash key of the range (inclusive).
    pub start: u128,
    /// Last hash key of the range (inclusive).
    pub end: u128,
}

impl HashRange {
    /// Whether `k` lies inside the range (both ends inclusive).
    pub fn contains(&self, k: HashKey) -> bool {
        self.start <= k.0 && k.0 <= self.end
    }

    /// The whole key space `[0, 2^128-1]`.
    pub fn full() -> HashRange {
        HashRange {
            start: 0,
            end: u128::MAX,
        }
    }
}

/// The Kinesis initial split of the key space into `n` shards:
/// shard `i` = `[i*floor(2^128/n), (i+1)*floor(2^128/n) - 1]`, the last one ending at `2^128-1`.
/// `n == 0` yields an empty vector (callers reject a zero shard count before).
pub fn initial_ranges(n: u32) -> Vec<HashRange> {
    if n == 0 {
        return Vec::new();
    }
    if n == 1 {
        return vec![HashRange::full()];
    }
    let n128 = u128::from(n);
    // floor(2^128 / n) without overflow: 2^128 = u128::MAX + 1.
    let step = u128::MAX / n128 + u128::from(u128::MAX % n128 == n128 - 1);
    (0..n128)
        .map(|i| {
            // i < n, so i * step <= (n - 1) * floor(2^128 / n) < 2^128: no overflow.
            let start = i * step;
            let end = if i == n128 - 1 {
                u128::MAX
            } else {
                start + (step - 1)
            };
            HashRange { start, end }
        })
        .collect()
}

/// The shard whose range contains `key`. `ranges` must be sorted by `start` and not overlap
/// (the open shards of a stream); `None` if no range contains the key.
pub fn route(ranges: &[(ShardId, HashRange)], key: HashKey) -> Option<ShardId> {
    let after = ranges.partition_point(|(_, r)| r.start <= key.0);
    let (shard, range) = ranges.get(after.checked_sub(1)?)?;
    range.contains(key).then_some(*shard)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn hex_key(hex: &str) -> HashKey {
        HashKey(u128::from_str_radix(hex, 16).unwrap())
    }

    #[test]
    fn md5_known_vectors() {
        // RFC 1321 test suite.
        let vectors = [
            ("", "d41d8cd98f00b204e9800998ecf8427e"),
            ("a", "0cc175b9c0f1b6a831c399e269772661"),
            ("abc", "900150983cd24fb0d6963f7d28e17f72"),
            ("message digest", "f96b697d7cb7938d525a2f31aaf161d0"),
            (
                "abcdefghijklmnopqrstuvwxyz",
                "c3fcd3d76192e4007dfb496cca67e13b",
            ),
        ];
        for (pk, hex) in vectors {
            assert_eq!(HashKey::from_partition_key(pk), hex_key(hex), "{pk:?}");
        }
        // Decimal display of MD5("a").
        assert_eq!(
            HashKey::from_partition_key("a").to_string(),
            "16955237001963240173058271559858726497"
        );
    }

    #[test]
    fn explicit_hash_key_parsing() {
        assert_eq!(HashKey::parse_explicit("0").unwrap(), HashKey(0));
        assert_eq!(HashKey::parse_explicit("42").unwrap(), HashKey(42));
        let max = u128::MAX.to_string();
        assert_eq!(max.len(), 39);
        assert_eq!(HashKey::parse_explicit(&max).unwrap(), HashKey(u128::MAX));
        for bad in [
            "",
            "-1",
            "+1",
            "01",
            "00",
            " 1",
            "1 ",
            "1.0",
            "0x10",
            "abc",
            "340282366920938463463374607431768211456", // 2^128
            "1000000000000000000000000000000000000000", // 40 digits
        ] {
            let e = HashKey::parse_explicit(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}");
            assert!(e.message().contains("ExplicitHashKey"), "{bad}");
        }
    }

    #[test]
    fn initial_ranges_small_cases() {
        assert!(initial_ranges(0).is_empty());
        assert_eq!(initial_ranges(1), vec![HashRange::full()]);
        let two = initial_ranges(2);
        assert_eq!(
            two[0],
            HashRange {
                start: 0,
                end: (1u128 << 127) - 1
            }
        );
        assert_eq!(
            two[1],
            HashRange {
                start: 1u128 << 127,
                end: u128::MAX
            }
        );
        // Known Kinesis boundary for 3 shards: floor(2^128/3) = 113427455640312821154458202477256070485.
        let three = initial_ranges(3);
        assert_eq!(three[1].start, 113427455640312821154458202477256070485);
        assert_eq!(three[2].start, 226854911280625642308916404954512140970);
        assert_eq!(three[2].end, u128::MAX);
    }

    #[test]
    fn route_edges() {
        let ranges: Vec<(ShardId, HashRange)> = initial_ranges(4)
            .into_iter()
            .enumerate()
            .map(|(i, r)| (ShardId(i as u64), r))
            .collect();
        assert_eq!(route(&ranges, HashKey(0)), Some(ShardId(0)));
        assert_eq!(route(&ranges, HashKey(u128::MAX)), Some(ShardId(3)));
        assert_eq!(route(&ranges, HashKey(ranges[2].1.start)), Some(ShardId(2)));
        assert_eq!(
            route(&ranges, HashKey(ranges[2].1.start - 1)),
            Some(ShardId(1))
        );
        assert_eq!(route(&[], HashKey(5)), None);
        // A gap (e.g. while a shard is missing) routes to nothing.
        let gappy = [
            (ShardId(0), HashRange { start: 10, end: 19 }),
            (ShardId(1), HashRange { start: 30, end: 40 }),
        ];
        assert_eq!(route(&gappy, HashKey(5)), None);
        assert_eq!(route(&gappy, HashKey(25)), None);
        assert_eq!(route(&gappy, HashKey(41)), None);
        assert_eq!(route(&gappy, HashKey(19)), Some(ShardId(0)));
        assert_eq!(route(&gappy, HashKey(30)), Some(ShardId(1)));
    }

    proptest! {
        #[test]
        fn from_partition_key_matches_md5_bytes(pk in "\\PC{0,64}") {
            let digest = Md5::digest(pk.as_bytes());
            prop_assert_eq!(digest.len(), 16);
            let expected = digest.iter().fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
            prop_assert_eq!(HashKey::from_partition_key(&pk), HashKey(expected));
        }

        #[test]
        fn explicit_round_trips(k: u128) {
            prop_assert_eq!(HashKey::parse_explicit(&k.to_string()).unwrap(), HashKey(k));
        }

        #[test]
        fn explicit_accepts_only_canonical_decimals(s in "[0-9]{0,41}|\\PC{0,50}") {
            if let Ok(k) = HashKey::parse_explicit(&s) {
                prop_assert_eq!(k.to_string(), s);
            }
        }

        #[test]
        fn initial_ranges_partition_the_space(n in 1u32..=1000) {
            let ranges = initial_ranges(n);
            prop_assert_eq!(ranges.len(), n as usize);
            prop_assert_eq!(ranges[0].start, 0);
            prop_assert_eq!(ranges[ranges.len() - 1].end, u128::MAX);
            for w in ranges.windows(2) {
                prop_assert!(w[0].start <= w[0].end);
                prop_assert_eq!(w[0].end.checked_add(1), Some(w[1].start));
            }
            // All but the last have width floor(2^128/n); the last absorbs the remainder (< n).
            if n > 1 {
                let width = ranges[0].end - ranges[0].start + 1;
                prop_assert!(ranges[..ranges.len() - 1].iter().all(|r| r.end - r.start + 1 == width));
                let last = ranges[ranges.len() - 1];
                let extra = (last.end - last.start).wrapping_add(1).wrapping_sub(width);
                prop_assert!(extra < u128::from(n));
            }
        }

        #[test]
        fn route_finds_exactly_the_containing_shard(n in 1u32..=200, raw: u128, pk in "\\PC{1,20}") {
            let ranges: Vec<(ShardId, HashRange)> = initial_ranges(n)
                .into_iter()
                .enumerate()
                .map(|(i, r)| (ShardId(i as u64 * 7 + 1), r))
                .collect();
            for key in [HashKey(raw), HashKey::from_partition_key(&pk)] {
                let containing: Vec<ShardId> =
                    ranges.iter().filter(|(_, r)| r.contains(key)).map(|(s, _)| *s).collect();
                prop_assert_eq!(containing.len(), 1);
                prop_assert_eq!(route(&ranges, key), Some(containing[0]));
            }
        }

        #[test]
        fn route_over_arbitrary_disjoint_ranges(mut cuts in proptest::collection::vec(any::<u128>(), 0..40), key: u128) {
            // Build disjoint ranges from sorted cut points, dropping every third one to create gaps.
            cuts.sort_unstable();
            cuts.dedup();
            let mut ranges = Vec::new();
            for (i, w) in cuts.windows(2).enumerate() {
                if i % 3 != 2 {
                    ranges.push((ShardId(i as u64), HashRange { start: w[0], end: w[1] - 1 }));
                }
            }
            let expected = ranges.iter().find(|(_, r)| r.contains(HashKey(key))).map(|(s, _)| *s);
            prop_assert_eq!(route(&ranges, HashKey(key)), expected);
            // Also probe every boundary exactly.
            for (s, r) in &ranges {
                prop_assert_eq!(route(&ranges, HashKey(r.start)), Some(*s));
                prop_assert_eq!(route(&ranges, HashKey(r.end)), Some(*s));
            }
        }
    }
}
