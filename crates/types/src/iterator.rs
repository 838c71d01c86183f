//! Shard iterators and pagination tokens: opaque, authenticated, expiring strings.
//!
//! Both are sealed by the shared machinery in `token` (HMAC-SHA256 under a server-held
//! [`IteratorKey`], URL-safe base64). Invariants: `open(seal(t)) == t` under the same key before
//! expiry; a token is valid up to and including `issued_ms + 300000` and expired afterwards;
//! malformed, forged or foreign-key tokens are [`Error::InvalidArgument`]; nothing panics on any
//! input; an iterator for a 128-character stream name is at most 512 characters.

use std::fmt;

use crate::error::{Error, Result};
use crate::names::{ShardId, StreamName};
use crate::seqno::Position;
use crate::token::{self, Kind, Reader, Writer};

/// Time to live of a shard iterator, in milliseconds.
pub const ITERATOR_TTL_MS: u64 = 300_000;
/// Time to live of a pagination token (NextToken), in milliseconds.
pub const NEXT_TOKEN_TTL_MS: u64 = 300_000;

/// The server secret that seals iterators and NextTokens. Its `Debug` output never shows the bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct IteratorKey([u8; 32]);

impl IteratorKey {
    /// Wraps 32 secret bytes (generate them randomly; never use a fixed key).
    pub fn new(bytes: [u8; 32]) -> Self {
        IteratorKey(bytes)
    }
}

impl fmt::Debug for IteratorKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IteratorKey(<redacted>)")
    }
}

/// What a shard iterator designates: the next record to read in a shard of a stream incarnation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IteratorToken {
    /// Stream name.
    pub stream: StreamName,
    /// Incarnation of the stream (a re-created stream with the same name gets a new uid).
    pub stream_uid: u64,
    /// Shard to read.
    pub shard: ShardId,
    /// Position of the next record to return.
    pub pos: Position,
    /// Issue time, milliseconds since the Unix epoch.
    pub issued_ms: u64,
}

const INVALID_ITERATOR: &str = "Invalid ShardIterator.";
const INVALID_NEXT_TOKEN: &str = "Invalid NextToken.";

impl IteratorToken {
    /// Seals the token into an opaque string.
    pub fn seal(&self, key: &IteratorKey) -> String {
        Writer::new(Kind::ShardIterator)
            .bytes(self.stream.as_str().as_bytes())
            .u64(self.stream_uid)
            .u64(self.shard.0)
            .u64(self.pos.log_index)
            .u32(self.pos.sub)
            .u64(self.issued_ms)
            .seal(&key.0)
    }

    /// Authenticates and decodes a sealed iterator. [`Error::InvalidArgument`] if malformed, forged
    /// or sealed under another key; [`Error::ExpiredIterator`] if `now_ms > issued_ms + 300000`.
    pub fn open(token: &str, key: &IteratorKey, now_ms: u64) -> Result<IteratorToken> {
        let invalid = || Error::InvalidArgument(INVALID_ITERATOR.to_owned());
        let body = token::open(token, &key.0, Kind::ShardIterator).ok_or_else(invalid)?;
        let t = decode_iterator(&body).ok_or_else(invalid)?;
        if now_ms > t.issued_ms.saturating_add(ITERATOR_TTL_MS) {
            return Err(Error::ExpiredIterator(format!(
                "Iterator expired. The iterator was created at time {} while right now it is {} which is further in the future than the tolerated delay of {} milliseconds.",
                t.issued_ms, now_ms, ITERATOR_TTL_MS
            )));
        }
        Ok(t)
    }
}

fn decode_iterator(body: &[u8]) -> Option<IteratorToken> {
    let mut r = Reader::new(body);
    let stream = StreamName::parse(r.str()?).ok()?;
    let stream_uid = r.u64()?;
    let shard = ShardId(r.u64()?);
    let log_index = r.u64()?;
    let sub = r.u32()?;
    let issued_ms = r.u64()?;
    r.finish()?;
    Some(IteratorToken {
        stream,
        stream_uid,
        shard,
        pos: Position { log_index, sub },
        issued_ms,
    })
}

/// A pagination cursor (`NextToken`): which listing (`kind`, caller-defined), of what (`stream`,
/// may be empty for account-wide listings), resuming after which item (`after`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageToken {
    /// Caller-defined listing discriminator (e.g. ListShards vs ListStreams).
    pub kind: u8,
    /// Stream (or other scope) the listing is about.
    pub stream: String,
    /// Last item returned; the next page starts strictly after it.
    pub after: String,
    /// Issue time, milliseconds since the Unix epoch.
    pub issued_ms: u64,
}

impl PageToken {
    /// Seals the cursor into an opaque string.
    pub fn seal(&self, key: &IteratorKey) -> String {
        Writer::new(Kind::Page)
            .u8(self.kind)
            .bytes(self.stream.as_bytes())
            .bytes(self.after.as_bytes())
            .u64(self.issued_ms)
            .seal(&key.0)
    }

    /// Authenticates and decodes a sealed cursor. [`Error::InvalidArgument`] if malformed, forged or
    /// sealed under another key; [`Error::ExpiredNextToken`] if `now_ms > issued_ms + 300000`.
    pub fn open(token: &str, key: &IteratorKey, now_ms: u64) -> Result<PageToken> {
        let invalid = || Error::InvalidArgument(INVALID_NEXT_TOKEN.to_owned());
        let body = token::open(token, &key.0, Kind::Page).ok_or_else(invalid)?;
        let t = decode_page(&body).ok_or_else(invalid)?;
        if now_ms > t.issued_ms.saturating_add(NEXT_TOKEN_TTL_MS) {
            return Err(Error::ExpiredNextToken(format!(
                "NextToken expired. The token was created at time {} while right now it is {} which is further in the future than the tolerated delay of {} milliseconds.",
                t.issued_ms, now_ms, NEXT_TOKEN_TTL_MS
            )));
        }
        Ok(t)
    }
}

fn decode_page(body: &[u8]) -> Option<PageToken> {
    let mut r = Reader::new(body);
    let kind = r.u8()?;
    let stream = r.str()?.to_owned();
    let after = r.str()?.to_owned();
    let issued_ms = r.u64()?;
    r.finish()?;
    Some(PageToken {
        kind,
        stream,
        after,
        issued_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use proptest::prelude::*;

    fn key() -> IteratorKey {
        IteratorKey::new(*b"0123456789abcdef0123456789abcdef")
    }

    fn sample(name: &str) -> IteratorToken {
        IteratorToken {
            stream: StreamName::parse(name).unwrap(),
            stream_uid: 0xDEAD_BEEF_0000_0001,
            shard: ShardId(12),
            pos: Position {
                log_index: 987_654_321,
                sub: 17,
            },
            issued_ms: 1_700_000_000_000,
        }
    }

    fn arb_iterator() -> impl Strategy<Value = IteratorToken> {
        (
            "[a-zA-Z0-9_.-]{1,128}",
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            0u64..=u64::MAX - ITERATOR_TTL_MS,
        )
            .prop_map(
                |(name, uid, shard, log_index, sub, issued_ms)| IteratorToken {
                    stream: StreamName::parse(&name).unwrap(),
                    stream_uid: uid,
                    shard: ShardId(shard),
                    pos: Position { log_index, sub },
                    issued_ms,
                },
            )
    }

    #[test]
    fn round_trip() {
        let t = sample("orders");
        let s = t.seal(&key());
        assert_eq!(IteratorToken::open(&s, &key(), t.issued_ms).unwrap(), t);
    }

    #[test]
    fn length_bound_for_longest_name() {
        let mut t = sample(&"n".repeat(128));
        t.stream_uid = u64::MAX;
        t.shard = ShardId(u64::MAX);
        t.pos = Position {
            log_index: u64::MAX,
            sub: u32::MAX,
        };
        t.issued_ms = u64::MAX - ITERATOR_TTL_MS;
        let s = t.seal(&key());
        assert!(s.len() <= 512, "{}", s.len());
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    }

    #[test]
    fn expiry_boundary() {
        let t = sample("orders");
        let s = t.seal(&key());
        assert!(IteratorToken::open(&s, &key(), t.issued_ms + ITERATOR_TTL_MS).is_ok());
        let e = IteratorToken::open(&s, &key(), t.issued_ms + ITERATOR_TTL_MS + 1).unwrap_err();
        assert!(matches!(e, Error::ExpiredIterator(_)));
        assert_eq!(e.kinesis_name(), "ExpiredIteratorException");
        assert_eq!(
            e.message(),
            "Iterator expired. The iterator was created at time 1700000000000 while right now it is 1700000300001 which is further in the future than the tolerated delay of 300000 milliseconds."
        );
        // Issued in the future (clock skew between nodes) is not an error.
        assert!(IteratorToken::open(&s, &key(), 0).is_ok());
    }

    #[test]
    fn expiry_does_not_overflow() {
        let mut t = sample("orders");
        t.issued_ms = u64::MAX;
        let s = t.seal(&key());
        assert!(IteratorToken::open(&s, &key(), u64::MAX).is_ok());
    }

    #[test]
    fn other_key_rejected() {
        let t = sample("orders");
        let s = t.seal(&key());
        let other = IteratorKey::new([0x42; 32]);
        let e = IteratorToken::open(&s, &other, t.issued_ms).unwrap_err();
        assert_eq!(e, Error::InvalidArgument("Invalid ShardIterator.".into()));
    }

    #[test]
    fn every_single_bit_flip_rejected() {
        let t = sample("orders");
        let s = t.seal(&key());
        let raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
        for i in 0..raw.len() * 8 {
            let mut flipped = raw.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            let forged = URL_SAFE_NO_PAD.encode(&flipped);
            let e = IteratorToken::open(&forged, &key(), t.issued_ms).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "bit {i}");
        }
        // Truncation and extension are rejected too.
        assert!(IteratorToken::open(&s[..s.len() - 1], &key(), t.issued_ms).is_err());
        assert!(IteratorToken::open(&format!("{s}A"), &key(), t.issued_ms).is_err());
        // Padding or standard-alphabet characters are not part of the format.
        assert!(IteratorToken::open(&format!("{s}="), &key(), t.issued_ms).is_err());
    }

    #[test]
    fn page_token_is_not_an_iterator() {
        let p = PageToken {
            kind: 1,
            stream: "orders".into(),
            after: "x".into(),
            issued_ms: 5,
        };
        let s = p.seal(&key());
        assert!(matches!(
            IteratorToken::open(&s, &key(), 5),
            Err(Error::InvalidArgument(_))
        ));
        let i = sample("orders").seal(&key());
        assert!(matches!(
            PageToken::open(&i, &key(), 5),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn page_token_round_trip_expiry_and_tamper() {
        let p = PageToken {
            kind: 3,
            stream: "orders".into(),
            after: "shardId-000000000007".into(),
            issued_ms: 1_000,
        };
        let s = p.seal(&key());
        assert_eq!(
            PageToken::open(&s, &key(), 1_000 + NEXT_TOKEN_TTL_MS).unwrap(),
            p
        );
        let e = PageToken::open(&s, &key(), 1_001 + NEXT_TOKEN_TTL_MS).unwrap_err();
        assert!(matches!(e, Error::ExpiredNextToken(_)));
        assert_eq!(e.kinesis_name(), "ExpiredNextTokenException");
        let e = PageToken::open(&s, &IteratorKey::new([1; 32]), 1_000).unwrap_err();
        assert_eq!(e, Error::InvalidArgument("Invalid NextToken.".into()));
        let raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
        for i in 0..raw.len() * 8 {
            let mut flipped = raw.clone();
            flipped[i / 8] ^= 1 << (i % 8);
            assert!(
                PageToken::open(&URL_SAFE_NO_PAD.encode(&flipped), &key(), 1_000).is_err(),
                "bit {i}"
            );
        }
    }

    #[test]
    fn key_debug_is_redacted() {
        let k = IteratorKey::new([0xAB; 32]);
        let d = format!("{k:?}");
        assert!(
            !d.contains("171") && !d.to_lowercase().contains("ab,"),
            "{d}"
        );
        assert_eq!(d, "IteratorKey(<redacted>)");
    }

    proptest! {
        #[test]
        fn iterator_round_trips(t in arb_iterator()) {
            let s = t.seal(&key());
            prop_assert!(s.len() <= 512);
            prop_assert_eq!(IteratorToken::open(&s, &key(), t.issued_ms + ITERATOR_TTL_MS).unwrap(), t.clone());
            prop_assert!(matches!(
                IteratorToken::open(&s, &key(), t.issued_ms + ITERATOR_TTL_MS + 1),
                Err(Error::ExpiredIterator(_))
            ));
        }

        #[test]
        fn random_bit_flip_rejected(t in arb_iterator(), bit in any::<prop::sample::Index>()) {
            let s = t.seal(&key());
            let mut raw = URL_SAFE_NO_PAD.decode(&s).unwrap();
            let i = bit.index(raw.len() * 8);
            raw[i / 8] ^= 1 << (i % 8);
            let r = IteratorToken::open(&URL_SAFE_NO_PAD.encode(&raw), &key(), t.issued_ms);
            prop_assert!(matches!(r, Err(Error::InvalidArgument(_))));
        }

        #[test]
        fn random_strings_rejected(s in "\\PC{0,600}", now: u64) {
            prop_assert!(matches!(IteratorToken::open(&s, &key(), now), Err(Error::InvalidArgument(_))));
            prop_assert!(matches!(PageToken::open(&s, &key(), now), Err(Error::InvalidArgument(_))));
        }

        #[test]
        fn random_base64_rejected(raw in proptest::collection::vec(any::<u8>(), 0..300), now: u64) {
            let s = URL_SAFE_NO_PAD.encode(&raw);
            prop_assert!(matches!(IteratorToken::open(&s, &key(), now), Err(Error::InvalidArgument(_))));
            prop_assert!(matches!(PageToken::open(&s, &key(), now), Err(Error::InvalidArgument(_))));
        }

        #[test]
        fn page_tokens_round_trip(kind: u8, stream in "\\PC{0,200}", after in "\\PC{0,200}", issued in 0u64..=u64::MAX - NEXT_TOKEN_TTL_MS) {
            let p = PageToken { kind, stream, after, issued_ms: issued };
            let s = p.seal(&key());
            prop_assert_eq!(PageToken::open(&s, &key(), issued).unwrap(), p);
        }
    }
}
