//! Per-shard write throughput limits (Kinesis: 1 MiB/s or 1000 records/s per shard, both
//! configurable), enforced by the shard leader before a write is proposed.
//!
//! Each shard has two token buckets (bytes, records) holding at most one second of capacity and
//! refilled continuously. A full bucket admits any single write, even one larger than a second
//! of capacity (a 10 MiB record), and goes into debt that later writes wait out. Invariants: a write is admitted whole or not at all (a refused write
//! consumes nothing and is never proposed, so `ProvisionedThroughputExceededException` always
//! means "not written"); a rate of 0 disables that bucket.

use std::collections::HashMap;
use std::sync::Mutex;

#[derive(Clone, Copy, Debug)]
struct Bucket {
    bytes: f64,
    records: f64,
    at_ms: u64,
}

/// The write limiter of one node (buckets of the shards it leads).
#[derive(Debug)]
pub struct WriteThrottle {
    bytes_per_sec: u64,
    records_per_sec: u64,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl WriteThrottle {
    /// A limiter with these per-shard rates.
    pub fn new(bytes_per_sec: u64, records_per_sec: u64) -> WriteThrottle {
        WriteThrottle {
            bytes_per_sec,
            records_per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Admits a write of `records` records and `bytes` bytes to `group` at `now_ms`, or returns
    /// false (and takes nothing) when either bucket lacks the capacity.
    pub fn admit(&self, group: u64, records: usize, bytes: usize, now_ms: u64) -> bool {
        let (cap_b, cap_r) = (self.bytes_per_sec as f64, self.records_per_sec as f64);
        let Ok(mut map) = self.buckets.lock() else {
            return true;
        };
        let b = map.entry(group).or_insert(Bucket {
            bytes: cap_b,
            records: cap_r,
            at_ms: now_ms,
        });
        let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
        b.bytes = (b.bytes + elapsed * cap_b).min(cap_b);
        b.records = (b.records + elapsed * cap_r).min(cap_r);
        b.at_ms = b.at_ms.max(now_ms);
        let bytes_ok = self.bytes_per_sec == 0 || bytes as f64 <= b.bytes || b.bytes >= cap_b;
        let records_ok =
            self.records_per_sec == 0 || records as f64 <= b.records || b.records >= cap_r;
        if !(bytes_ok && records_ok) {
            return false;
        }
        if self.bytes_per_sec > 0 {
            b.bytes -= bytes as f64;
        }
        if self.records_per_sec > 0 {
            b.records -= records as f64;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_of_burst_then_the_rate() {
        let t = WriteThrottle::new(1000, 10);
        assert!(t.admit(1, 5, 600, 0));
        assert!(!t.admit(1, 1, 500, 0), "bytes exhausted");
        assert!(t.admit(1, 5, 400, 0));
        assert!(!t.admit(1, 1, 0, 0), "records exhausted");
        // Other shards have their own buckets.
        assert!(t.admit(2, 10, 1000, 0));
        // Half a second refills half.
        assert!(t.admit(1, 5, 500, 500));
        assert!(!t.admit(1, 1, 1, 500));
        // A refused write takes nothing: what it asked for is still there afterwards.
        assert!(t.admit(1, 5, 0, 2000));
        assert!(!t.admit(1, 6, 0, 2000));
        assert!(t.admit(1, 5, 1000, 2000));
    }

    #[test]
    fn a_full_bucket_admits_one_oversized_write_then_waits_out_the_debt() {
        let t = WriteThrottle::new(1000, 100);
        assert!(t.admit(1, 1, 3000, 0));
        assert!(!t.admit(1, 1, 1, 1000), "still 1000 bytes in debt");
        assert!(t.admit(1, 1, 1000, 3000));
    }

    #[test]
    fn zero_disables() {
        let t = WriteThrottle::new(0, 0);
        for i in 0..100 {
            assert!(t.admit(1, 10_000, 1 << 30, i));
        }
    }
}
