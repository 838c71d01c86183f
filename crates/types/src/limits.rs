//! Service limits: the Kinesis defaults, all configurable for a self-hosted deployment.
//!
//! Invariant: [`Limits::default`] equals the documented Kinesis defaults, and any missing field in a
//! deserialized configuration takes its default (`#[serde(default)]`).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::names::validate_partition_key;

const MIB: u64 = 1024 * 1024;

/// Configurable service limits (defaults are those of Kinesis Data Streams).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Limits {
    /// Write bytes per second per shard (data plus partition keys). Default 1 MiB.
    pub shard_write_bytes_per_sec: u64,
    /// Written records per second per shard. Default 1000.
    pub shard_write_records_per_sec: u64,
    /// Read bytes per second per shard, shared by polling consumers. Default 2 MiB.
    pub shard_read_bytes_per_sec: u64,
    /// GetRecords calls per second per shard. Default 5.
    pub shard_reads_per_sec: u32,
    /// Default maximum data blob size of a record. Default 1 MiB.
    pub max_record_bytes: u64,
    /// Maximum entries in one PutRecords request. Default 500.
    pub max_put_records_entries: usize,
    /// Maximum size of one PutRecords request, partition keys included. Default 10 MiB.
    pub max_put_records_bytes: u64,
    /// Maximum `Limit` of a GetRecords call. Default 10,000.
    pub max_get_records_limit: u32,
    /// Maximum bytes returned by one GetRecords call. Default 10 MiB.
    pub max_get_records_bytes: u64,
    /// Minimum retention period, hours. Default 24.
    pub min_retention_hours: u32,
    /// Maximum retention period, hours. Default 8760 (365 days).
    pub max_retention_hours: u32,
    /// Maximum number of open shards in one stream. Default 10,000.
    pub max_shards_per_stream: u32,
    /// Maximum tags per stream, at most 50. Default 50.
    pub max_tags: usize,
    /// Concurrent `TailShard` streams one node serves for one shard; 0 = no cap. Default 20
    /// (Kinesis allows 20 registered enhanced fan-out consumers per stream).
    pub max_tails_per_shard: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            shard_write_bytes_per_sec: MIB,
            shard_write_records_per_sec: 1000,
            shard_read_bytes_per_sec: 2 * MIB,
            shard_reads_per_sec: 5,
            max_record_bytes: MIB,
            max_put_records_entries: 500,
            max_put_records_bytes: 10 * MIB,
            max_get_records_limit: 10_000,
            max_get_records_bytes: 10 * MIB,
            min_retention_hours: 24,
            max_retention_hours: 8760,
            max_shards_per_stream: 10_000,
            max_tags: 50,
            max_tails_per_shard: 20,
        }
    }
}

impl Limits {
    /// Checks a requested retention period against `[min_retention_hours, max_retention_hours]`;
    /// [`Error::InvalidArgument`] worded like Kinesis otherwise.
    pub fn validate_retention_hours(&self, h: u32) -> Result<()> {
        if h < self.min_retention_hours {
            return Err(Error::InvalidArgument(format!(
                "Minimum allowed retention period is {} hours. Requested retention period ({h} hours) is too short.",
                self.min_retention_hours
            )));
        }
        if h > self.max_retention_hours {
            return Err(Error::InvalidArgument(format!(
                "Maximum allowed retention period is {} hours. Requested retention period ({h} hours) is too long.",
                self.max_retention_hours
            )));
        }
        Ok(())
    }

    /// Checks one record: the partition key (see [`validate_partition_key`]) and the data blob
    /// length against `max_record_bytes`, the stream's effective limit (from `MaxRecordSizeInKiB`);
    /// `0` means "use `self.max_record_bytes`". [`Error::Validation`] naming `data` if too large.
    pub fn validate_record_size(
        &self,
        pk: &str,
        data_len: usize,
        max_record_bytes: u64,
    ) -> Result<()> {
        validate_partition_key(pk)?;
        let limit = if max_record_bytes == 0 {
            self.max_record_bytes
        } else {
            max_record_bytes
        };
        // usize -> u64 cannot lose information on supported targets; saturate defensively.
        let len = u64::try_from(data_len).unwrap_or(u64::MAX);
        if len > limit {
            return Err(Error::validation_failed(
                "data",
                None,
                &format!("Member must have length less than or equal to {limit}"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_kinesis_defaults() {
        let l = Limits::default();
        assert_eq!(l.shard_write_bytes_per_sec, 1_048_576);
        assert_eq!(l.shard_write_records_per_sec, 1000);
        assert_eq!(l.shard_read_bytes_per_sec, 2_097_152);
        assert_eq!(l.shard_reads_per_sec, 5);
        assert_eq!(l.max_record_bytes, 1_048_576);
        assert_eq!(l.max_put_records_entries, 500);
        assert_eq!(l.max_put_records_bytes, 10_485_760);
        assert_eq!(l.max_get_records_limit, 10_000);
        assert_eq!(l.max_get_records_bytes, 10_485_760);
        assert_eq!((l.min_retention_hours, l.max_retention_hours), (24, 8760));
        assert_eq!(l.max_shards_per_stream, 10_000);
        assert_eq!(l.max_tags, 50);
        assert_eq!(l.max_tails_per_shard, 20);
    }

    #[test]
    fn partial_config_takes_defaults() {
        let l: Limits = serde_json::from_str(r#"{"max_tags": 7}"#).unwrap();
        assert_eq!(l.max_tags, 7);
        assert_eq!(Limits { max_tags: 50, ..l }, Limits::default());
        let back: Limits =
            serde_json::from_str(&serde_json::to_string(&Limits::default()).unwrap()).unwrap();
        assert_eq!(back, Limits::default());
    }

    #[test]
    fn retention_bounds_and_messages() {
        let l = Limits::default();
        assert!(l.validate_retention_hours(24).is_ok());
        assert!(l.validate_retention_hours(8760).is_ok());
        assert_eq!(
            l.validate_retention_hours(2).unwrap_err(),
            Error::InvalidArgument(
                "Minimum allowed retention period is 24 hours. Requested retention period (2 hours) is too short.".into()
            )
        );
        assert_eq!(
            l.validate_retention_hours(9000).unwrap_err(),
            Error::InvalidArgument(
                "Maximum allowed retention period is 8760 hours. Requested retention period (9000 hours) is too long.".into()
            )
        );
        assert!(l.validate_retention_hours(23).is_err());
        assert!(l.validate_retention_hours(8761).is_err());
    }

    #[test]
    fn record_size() {
        let l = Limits::default();
        assert!(l.validate_record_size("k", 0, 0).is_ok());
        assert!(l.validate_record_size("k", 1_048_576, 0).is_ok());
        let e = l.validate_record_size("k", 1_048_577, 0).unwrap_err();
        assert_eq!(
            e.message(),
            "1 validation error detected: Value at 'data' failed to satisfy constraint: Member must have length less than or equal to 1048576"
        );
        // A stream with a raised MaxRecordSizeInKiB.
        assert!(l
            .validate_record_size("k", 2_000_000, 10 * 1_048_576)
            .is_ok());
        assert!(l
            .validate_record_size("k", 10 * 1_048_576 + 1, 10 * 1_048_576)
            .is_err());
        // The partition key is checked too.
        let e = l.validate_record_size("", 1, 0).unwrap_err();
        assert!(e.message().contains("'partitionKey'"));
        assert!(l.validate_record_size(&"k".repeat(257), 1, 0).is_err());
    }
}
