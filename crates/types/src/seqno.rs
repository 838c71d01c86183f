//! Record positions and the Kinesis sequence number codec.
//!
//! A sequence number is the decimal string of the `u128`
//! `(2 << 120) | (shard(40 bits) << 80) | (log_index(64 bits) << 16) | sub(16 bits)`.
//!
//! Invariants: every encodable value lies in `[2^121, 2^121 + 2^120)`, so every encoding has exactly
//! 37 digits and string order equals numeric order; the numeric order equals the order of
//! `(shard, log_index, sub)`, so within a shard sequence numbers order exactly like [`Position`]s;
//! `parse(encode(x)) == x` for every `x` built by [`SequenceNumber::new`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{clip, Error, Result};
use crate::names::ShardId;

/// Position of a record inside a shard's log: the Raft log index of the entry that carried it and
/// the record's offset inside that entry.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Position {
    /// Raft log index of the entry that carried the record.
    pub log_index: u64,
    /// Offset of the record inside that entry.
    pub sub: u32,
}

impl Position {
    /// The position before any record of a shard.
    pub const START: Position = Position {
        log_index: 0,
        sub: 0,
    };

    /// The next position inside the same log entry (`sub + 1`, saturating at `u32::MAX`).
    pub fn next(self) -> Position {
        Position {
            log_index: self.log_index,
            sub: self.sub.saturating_add(1),
        }
    }
}

const VERSION: u128 = 2;
const VERSION_SHIFT: u32 = 120;
const SHARD_BITS: u32 = 40;
const SHARD_SHIFT: u32 = 80;
const LOG_INDEX_SHIFT: u32 = 16;
const SHARD_MASK: u64 = (1 << SHARD_BITS) - 1;
/// Longest string matching the Kinesis `SequenceNumber` pattern `0|([1-9]\d{0,128})`.
const MAX_DIGITS: usize = 129;

/// A Kinesis sequence number: a shard and a position in its log. See the module docs for the layout.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SequenceNumber {
    /// The shard the record belongs to.
    pub shard: ShardId,
    /// The record's position in that shard's log.
    pub pos: Position,
}

impl SequenceNumber {
    /// Largest `sub` that fits the encoding.
    pub const MAX_SUB: u32 = 0xFFFF;

    /// Builds an encodable sequence number: [`Error::Internal`] if the shard index needs more than
    /// 40 bits or `pos.sub > MAX_SUB`.
    pub fn new(shard: ShardId, pos: Position) -> Result<SequenceNumber> {
        if shard.0 > SHARD_MASK {
            return Err(Error::Internal(format!(
                "shard index {} does not fit in a sequence number",
                shard.0
            )));
        }
        if pos.sub > Self::MAX_SUB {
            return Err(Error::Internal(format!(
                "record offset {} inside log entry {} does not fit in a sequence number",
                pos.sub, pos.log_index
            )));
        }
        Ok(SequenceNumber { shard, pos })
    }

    /// The sequence number of a shard's start position (accepted although no record carries it).
    pub fn starting(shard: ShardId) -> SequenceNumber {
        SequenceNumber {
            shard,
            pos: Position::START,
        }
    }

    /// The numeric value. Out-of-range fields (only possible when bypassing [`SequenceNumber::new`])
    /// are truncated to their bit width rather than corrupting neighbouring fields.
    fn to_u128(self) -> u128 {
        (VERSION << VERSION_SHIFT)
            | (u128::from(self.shard.0 & SHARD_MASK) << SHARD_SHIFT)
            | (u128::from(self.pos.log_index) << LOG_INDEX_SHIFT)
            | u128::from(self.pos.sub & Self::MAX_SUB)
    }

    /// The decimal string sent on the wire.
    pub fn encode(&self) -> String {
        self.to_u128().to_string()
    }

    /// Parses a sequence number produced by [`SequenceNumber::encode`]. [`Error::InvalidArgument`]
    /// naming the value if it does not match `0|([1-9]\d{0,128})`, exceeds `u128` or does not carry
    /// Runnel's layout version.
    pub fn parse(s: &str) -> Result<SequenceNumber> {
        let bad = |why: &str| {
            Error::InvalidArgument(format!("Sequence number {} is invalid: {why}.", clip(s)))
        };
        if s.is_empty() || s.len() > MAX_DIGITS || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("it must be a decimal integer"));
        }
        if s.len() > 1 && s.starts_with('0') {
            return Err(bad("it must not have leading zeros"));
        }
        let n: u128 = s.parse().map_err(|_| bad("it is out of range"))?;
        if n >> VERSION_SHIFT != VERSION {
            return Err(bad("it was not issued by this service"));
        }
        // The masks make the narrowing casts exact.
        let shard = ((n >> SHARD_SHIFT) as u64) & SHARD_MASK;
        let log_index = (n >> LOG_INDEX_SHIFT) as u64;
        let sub = (n as u32) & Self::MAX_SUB;
        Ok(SequenceNumber {
            shard: ShardId(shard),
            pos: Position { log_index, sub },
        })
    }
}

impl fmt::Display for SequenceNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_u128())
    }
}

impl FromStr for SequenceNumber {
    type Err = Error;
    fn from_str(s: &str) -> Result<SequenceNumber> {
        SequenceNumber::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn arb_seq() -> impl Strategy<Value = SequenceNumber> {
        (0..=SHARD_MASK, any::<u64>(), 0..=SequenceNumber::MAX_SUB).prop_map(|(s, l, sub)| {
            SequenceNumber::new(ShardId(s), Position { log_index: l, sub }).unwrap()
        })
    }

    /// Compares two non-negative decimal strings without leading zeros by (length, lexicographic).
    fn dec_cmp(a: &str, b: &str) -> std::cmp::Ordering {
        a.len().cmp(&b.len()).then_with(|| a.cmp(b))
    }

    #[test]
    fn known_layout() {
        let s = SequenceNumber::new(
            ShardId(1),
            Position {
                log_index: 2,
                sub: 3,
            },
        )
        .unwrap();
        let expected: u128 = (2u128 << 120) | (1u128 << 80) | (2u128 << 16) | 3;
        assert_eq!(s.encode(), expected.to_string());
        assert_eq!(s.to_string(), s.encode());
        assert_eq!(
            SequenceNumber::starting(ShardId(0)).encode(),
            (2u128 << 120).to_string()
        );
        assert_eq!(s.encode().len(), 37);
    }

    #[test]
    fn new_rejects_unencodable() {
        assert!(matches!(
            SequenceNumber::new(ShardId(1 << 40), Position::START),
            Err(Error::Internal(_))
        ));
        assert!(matches!(
            SequenceNumber::new(
                ShardId(0),
                Position {
                    log_index: 1,
                    sub: 0x1_0000
                }
            ),
            Err(Error::Internal(_))
        ));
        assert!(SequenceNumber::new(
            ShardId((1 << 40) - 1),
            Position {
                log_index: u64::MAX,
                sub: 0xFFFF
            }
        )
        .is_ok());
    }

    #[test]
    fn position_next_and_start() {
        assert_eq!(
            Position::START.next(),
            Position {
                log_index: 0,
                sub: 1
            }
        );
        assert_eq!(
            Position {
                log_index: 9,
                sub: u32::MAX
            }
            .next(),
            Position {
                log_index: 9,
                sub: u32::MAX
            }
        );
        assert!(
            Position {
                log_index: 1,
                sub: 0
            } > Position {
                log_index: 0,
                sub: 9
            }
        );
    }

    #[test]
    fn rejects_bad_strings() {
        let valid = SequenceNumber::new(
            ShardId(5),
            Position {
                log_index: 10,
                sub: 1,
            },
        )
        .unwrap()
        .encode();
        let cases = [
            String::new(),
            "0".to_string(),
            "1".to_string(),
            format!("0{valid}"),
            format!("{valid}a"),
            "abc".to_string(),
            format!("-{valid}"),
            format!("+{valid}"),
            format!(" {valid}"),
            u128::MAX.to_string(), // version bits 0xFF
            "340282366920938463463374607431768211456".to_string(), // 2^128
            "9".repeat(129),
            "9".repeat(130),
            (1u128 << 121 | 1u128 << 120).to_string(), // version 3
            (1u128 << 120).to_string(),                // version 1
            (1u128 << 122).to_string(),                // version 4
            "١٢٣".to_string(),                         // non-ASCII digits
        ];
        for bad in &cases {
            let e = SequenceNumber::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}");
            assert!(e.message().contains(bad.as_str()), "{bad}: {}", e.message());
            assert!(bad.parse::<SequenceNumber>().is_err());
        }
    }

    proptest! {
        #[test]
        fn round_trip(s in arb_seq()) {
            let text = s.encode();
            let back = SequenceNumber::parse(&text).unwrap();
            prop_assert_eq!(back, s);
            prop_assert_eq!(back.shard, s.shard);
            prop_assert_eq!(back.pos, s.pos);
            prop_assert_eq!(text.parse::<SequenceNumber>().unwrap(), s);
            prop_assert_eq!(text.len(), 37);
        }

        #[test]
        fn order_matches_position_within_a_shard(
            shard in 0..=SHARD_MASK,
            a in (any::<u64>(), 0..=SequenceNumber::MAX_SUB),
            b in (any::<u64>(), 0..=SequenceNumber::MAX_SUB),
        ) {
            let pa = Position { log_index: a.0, sub: a.1 };
            let pb = Position { log_index: b.0, sub: b.1 };
            let sa = SequenceNumber::new(ShardId(shard), pa).unwrap();
            let sb = SequenceNumber::new(ShardId(shard), pb).unwrap();
            let (ea, eb) = (sa.encode(), sb.encode());
            let na: u128 = ea.parse().unwrap();
            let nb: u128 = eb.parse().unwrap();
            prop_assert_eq!(na.cmp(&nb), pa.cmp(&pb));
            prop_assert_eq!(dec_cmp(&ea, &eb), pa.cmp(&pb));
            prop_assert_eq!(sa.cmp(&sb), pa.cmp(&pb));
        }

        #[test]
        fn next_position_strictly_increases(shard in 0..=SHARD_MASK, log in any::<u64>(), sub in 0..SequenceNumber::MAX_SUB) {
            let p = Position { log_index: log, sub };
            let a = SequenceNumber::new(ShardId(shard), p).unwrap();
            let b = SequenceNumber::new(ShardId(shard), p.next()).unwrap();
            prop_assert!(a.encode().parse::<u128>().unwrap() < b.encode().parse::<u128>().unwrap());
            prop_assert_eq!(dec_cmp(&a.encode(), &b.encode()), std::cmp::Ordering::Less);
            // A later log entry beats any offset inside an earlier one.
            if log < u64::MAX {
                let c = SequenceNumber::new(ShardId(shard), Position { log_index: log + 1, sub: 0 }).unwrap();
                prop_assert_eq!(dec_cmp(&b.encode(), &c.encode()), std::cmp::Ordering::Less);
            }
        }

        #[test]
        fn numeric_order_equals_struct_order(a in arb_seq(), b in arb_seq()) {
            let na: u128 = a.encode().parse().unwrap();
            let nb: u128 = b.encode().parse().unwrap();
            prop_assert_eq!(na.cmp(&nb), a.cmp(&b));
            prop_assert_eq!(dec_cmp(&a.encode(), &b.encode()), a.cmp(&b));
        }

        #[test]
        fn parse_never_panics_and_accepts_only_canonical(s in "[0-9]{0,45}|\\PC{0,45}") {
            if let Ok(seq) = SequenceNumber::parse(&s) {
                prop_assert_eq!(seq.encode(), s);
            }
        }
    }
}
