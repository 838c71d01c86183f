//! Names: stream names, stream ARNs, shard ids and partition keys.
//!
//! Invariants: a [`StreamName`] always matches `[a-zA-Z0-9_.-]{1,128}` (also when deserialized);
//! a [`ShardId`] displays in the canonical `shardId-` + 12-digit zero-padded form and parses back
//! to the same value; [`stream_arn`] and [`parse_stream_arn`] are inverse of each other.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{clip, Error, Result};

/// Maximum length of a stream name, in characters.
const STREAM_NAME_MAX: usize = 128;
/// Maximum length of a partition key, in Unicode scalar values.
const PARTITION_KEY_MAX: usize = 256;
const SHARD_ID_PREFIX: &str = "shardId-";

/// A validated stream name: `[a-zA-Z0-9_.-]{1,128}`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct StreamName(String);

impl StreamName {
    /// Validates `s` as a stream name. Errors are [`Error::Validation`] naming `streamName`.
    pub fn parse(s: &str) -> Result<StreamName> {
        let len = s.chars().count();
        if len < 1 {
            return Err(Error::validation_failed(
                "streamName",
                Some(s),
                "Member must have length greater than or equal to 1",
            ));
        }
        if len > STREAM_NAME_MAX {
            return Err(Error::validation_failed(
                "streamName",
                Some(s),
                "Member must have length less than or equal to 128",
            ));
        }
        if !s.bytes().all(is_name_byte) {
            return Err(Error::validation_failed(
                "streamName",
                Some(s),
                "Member must satisfy regular expression pattern: [a-zA-Z0-9_.-]+",
            ));
        }
        Ok(StreamName(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for StreamName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        StreamName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The ARN of a stream: `arn:aws:kinesis:<region>:<account>:stream/<name>`.
pub fn stream_arn(region: &str, account: &str, name: &StreamName) -> String {
    format!("arn:aws:kinesis:{region}:{account}:stream/{name}")
}

/// Splits a stream ARN into `(region, account, name)`.
///
/// Accepts `arn:<partition>:kinesis:<region>:<account>:stream/<name>` where the partition starts
/// with `aws` (`aws`, `aws-cn`, `aws-us-gov`, ...), the region is non-empty `[a-z0-9-]`, the account
/// is 12 digits and the name is a valid [`StreamName`]. Anything else (including consumer ARNs) is
/// [`Error::InvalidArgument`].
pub fn parse_stream_arn(arn: &str) -> Result<(String, String, StreamName)> {
    let bad = || Error::InvalidArgument(format!("Invalid StreamARN: {}", clip(arn)));
    let mut parts = arn.splitn(6, ':');
    let (
        Some("arn"),
        Some(partition),
        Some("kinesis"),
        Some(region),
        Some(account),
        Some(resource),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return Err(bad());
    };
    let partition_ok = partition
        .strip_prefix("aws")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('-'));
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
    if !(partition_ok && region_ok && account_ok) {
        return Err(bad());
    }
    let name = resource.strip_prefix("stream/").ok_or_else(bad)?;
    let name = StreamName::parse(name).map_err(|_| bad())?;
    Ok((region.to_owned(), account.to_owned(), name))
}

/// A shard id: the per-stream shard counter. Displays as `shardId-000000000003`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ShardId(pub u64);

impl ShardId {
    /// Parses `shardId-<digits>`; any number of digits (leading zeros included) is accepted as long
    /// as the value fits in a `u64`. Anything else is [`Error::InvalidArgument`] naming the value.
    pub fn parse(s: &str) -> Result<ShardId> {
        let bad = || Error::InvalidArgument(format!("Invalid ShardId: {}", clip(s)));
        let digits = s.strip_prefix(SHARD_ID_PREFIX).ok_or_else(bad)?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let significant = digits.trim_start_matches('0');
        if significant.is_empty() {
            return Ok(ShardId(0));
        }
        significant.parse::<u64>().map(ShardId).map_err(|_| bad())
    }
}

impl fmt::Display for ShardId {
    /// `shardId-` and the index with at least 12 digits (zero-padded). Written by hand: this
    /// runs for every record a producer puts, and the formatting machinery's padding was about
    /// 1% of a busy node's CPU.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Prefix and digits in one buffer and one write: `to_string` then allocates once.
        const PREFIX: usize = SHARD_ID_PREFIX.len();
        let mut buf = [b'0'; PREFIX + 20];
        let mut at = buf.len();
        let mut n = self.0;
        while n > 0 {
            at -= 1;
            buf[at] = b'0' + (n % 10) as u8;
            n /= 10;
        }
        let start = at.min(buf.len() - 12) - PREFIX;
        buf[start..start + PREFIX].copy_from_slice(SHARD_ID_PREFIX.as_bytes());
        // Only ASCII was written.
        f.write_str(std::str::from_utf8(&buf[start..]).map_err(|_| fmt::Error)?)
    }
}

impl std::str::FromStr for ShardId {
    type Err = Error;
    fn from_str(s: &str) -> Result<ShardId> {
        ShardId::parse(s)
    }
}

/// Checks a partition key: 1 to 256 Unicode characters. Errors are [`Error::Validation`] naming
/// `partitionKey`.
pub fn validate_partition_key(pk: &str) -> Result<()> {
    let len = pk.chars().count();
    if len < 1 {
        return Err(Error::validation_failed(
            "partitionKey",
            Some(pk),
            "Member must have length greater than or equal to 1",
        ));
    }
    if len > PARTITION_KEY_MAX {
        return Err(Error::validation_failed(
            "partitionKey",
            Some(pk),
            "Member must have length less than or equal to 256",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn stream_name_rules() {
        assert_eq!(StreamName::parse("a").unwrap().as_str(), "a");
        assert!(StreamName::parse("my-stream_1.2").is_ok());
        assert!(StreamName::parse(&"x".repeat(128)).is_ok());

        let e = StreamName::parse("").unwrap_err();
        assert_eq!(e.kinesis_name(), "ValidationException");
        assert!(e.message().contains("'streamName'"));
        assert!(e.message().contains("greater than or equal to 1"));

        let e = StreamName::parse(&"x".repeat(129)).unwrap_err();
        assert!(e.message().contains("less than or equal to 128"));

        for bad in ["a b", "a/b", "a:b", "é", "a\u{0}"] {
            let e = StreamName::parse(bad).unwrap_err();
            assert!(matches!(e, Error::Validation(_)), "{bad}");
            assert!(e.message().contains("regular expression pattern"), "{bad}");
        }
    }

    #[test]
    fn stream_name_serde_is_transparent_and_validating() {
        let n = StreamName::parse("orders").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"orders\"");
        let back: StreamName = serde_json::from_str("\"orders\"").unwrap();
        assert_eq!(back, n);
        assert!(serde_json::from_str::<StreamName>("\"no spaces\"").is_err());
        assert!(serde_json::from_str::<StreamName>("\"\"").is_err());
    }

    #[test]
    fn shard_id_serde_is_the_number() {
        assert_eq!(serde_json::to_string(&ShardId(7)).unwrap(), "7");
        assert_eq!(serde_json::from_str::<ShardId>("7").unwrap(), ShardId(7));
    }

    #[test]
    fn arn_round_trip_and_rejections() {
        let n = StreamName::parse("orders").unwrap();
        let arn = stream_arn("us-east-1", "123456789012", &n);
        assert_eq!(arn, "arn:aws:kinesis:us-east-1:123456789012:stream/orders");
        assert_eq!(
            parse_stream_arn(&arn).unwrap(),
            ("us-east-1".to_string(), "123456789012".to_string(), n)
        );
        assert!(parse_stream_arn("arn:aws-cn:kinesis:cn-north-1:123456789012:stream/s").is_ok());
        for bad in [
            "",
            "arn:aws:kinesis:us-east-1:123456789012:stream/",
            "arn:aws:kinesis:us-east-1:123456789012:stream/a b",
            "arn:aws:kinesis:us-east-1:123456789012:stream/s/consumer/c:1",
            "arn:aws:kinesis:us-east-1:12345:stream/s",
            "arn:aws:kinesis::123456789012:stream/s",
            "arn:aws:sqs:us-east-1:123456789012:stream/s",
            "arn:gcp:kinesis:us-east-1:123456789012:stream/s",
            "arn:awsx:kinesis:us-east-1:123456789012:stream/s",
            "arn:aws:kinesis:us-east-1:123456789012:table/s",
            "arn:aws:kinesis:us-east-1:123456789012",
        ] {
            let e = parse_stream_arn(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e:?}");
        }
    }

    #[test]
    fn shard_id_display_and_parse() {
        assert_eq!(ShardId(3).to_string(), "shardId-000000000003");
        assert_eq!(
            ShardId(1_000_000_000_000).to_string(),
            "shardId-1000000000000"
        );
        assert_eq!(ShardId::parse("shardId-000000000003").unwrap(), ShardId(3));
        assert_eq!(ShardId::parse("shardId-3").unwrap(), ShardId(3));
        assert_eq!(
            ShardId::parse("shardId-0000000000000000000000000007").unwrap(),
            ShardId(7)
        );
        assert_eq!(ShardId::parse("shardId-000").unwrap(), ShardId(0));
        assert_eq!(
            ShardId::parse("shardId-18446744073709551615").unwrap(),
            ShardId(u64::MAX)
        );
        for bad in [
            "",
            "3",
            "000000000003",
            "shardId-",
            "shardid-000000000003",
            "shardId--1",
            "shardId-+1",
            "shardId-1a",
            "shardId-18446744073709551616",
            " shardId-1",
        ] {
            let e = ShardId::parse(bad).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{bad}");
            assert!(e.message().contains(bad), "{bad}");
        }
    }

    #[test]
    fn partition_key_rules() {
        assert!(validate_partition_key("k").is_ok());
        assert!(validate_partition_key(&"é".repeat(256)).is_ok());
        let e = validate_partition_key("").unwrap_err();
        assert!(matches!(e, Error::Validation(_)));
        assert!(e.message().contains("'partitionKey'"));
        let e = validate_partition_key(&"é".repeat(257)).unwrap_err();
        assert!(e.message().contains("less than or equal to 256"));
    }

    #[test]
    fn shard_ids_are_zero_padded_to_twelve_digits() {
        assert_eq!(ShardId(0).to_string(), "shardId-000000000000");
        assert_eq!(ShardId(7).to_string(), "shardId-000000000007");
        assert_eq!(ShardId(999_999_999_999).to_string(), "shardId-999999999999");
        assert_eq!(
            ShardId(1_000_000_000_000).to_string(),
            "shardId-1000000000000"
        );
        assert_eq!(
            ShardId(u64::MAX).to_string(),
            format!("shardId-{}", u64::MAX)
        );
    }

    proptest! {
        #[test]
        fn shard_id_round_trip(n: u64) {
            let id = ShardId(n);
            prop_assert_eq!(ShardId::parse(&id.to_string()).unwrap(), id);
            prop_assert_eq!(id.to_string(), format!("shardId-{n:012}"));
        }

        #[test]
        fn stream_name_accepts_exactly_the_pattern(s in "\\PC{0,140}") {
            let expected = (1..=128).contains(&s.chars().count()) && s.bytes().all(is_name_byte);
            prop_assert_eq!(StreamName::parse(&s).is_ok(), expected);
        }

        #[test]
        fn valid_names_round_trip_through_arn(s in "[a-zA-Z0-9_.-]{1,128}") {
            let n = StreamName::parse(&s).unwrap();
            let (r, a, back) = parse_stream_arn(&stream_arn("eu-west-1", "000000000000", &n)).unwrap();
            prop_assert_eq!((r.as_str(), a.as_str(), back), ("eu-west-1", "000000000000", n));
        }
    }
}
