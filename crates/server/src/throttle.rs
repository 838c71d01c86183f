//! Per-shard throughput limits, enforced by the shard leader: writes (Kinesis: 1 MiB/s or 1000
//! records/s per shard) before a write is proposed, and GetRecords (5 calls/s and 2 MiB/s per
//! shard) before a read executes. All rates are configurable; 0 disables a limit.
//!
//! Reads: a call is admitted when a call token is available and the byte bucket is not in debt;
//! the bytes it returned are taken afterwards and may put the bucket into debt, so a call that
//! returned 10 MiB blocks the shard's reads for about 4–5 s at 2 MiB/s (Kinesis documents "the
//! next 5 seconds"). The debt is capped at 5 s of the rate, so concurrent large reads cannot
//! block a shard for longer.
//!
//! Time: callers pass a monotonic clock (not the node's adjustable wall clock), so a clock step
//! neither empties nor fills the buckets.
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

/// `group`'s bucket in `map` (created full), refilled at the rates (per second) up to one second
/// of capacity as of `now_ms`.
fn refilled(
    map: &mut HashMap<u64, Bucket>,
    group: u64,
    bytes_per_sec: u64,
    count_per_sec: u64,
    now_ms: u64,
) -> &mut Bucket {
    let (cap_b, cap_c) = (bytes_per_sec as f64, count_per_sec as f64);
    let b = map.entry(group).or_insert(Bucket {
        bytes: cap_b,
        records: cap_c,
        at_ms: now_ms,
    });
    let elapsed = now_ms.saturating_sub(b.at_ms) as f64 / 1000.0;
    b.bytes = (b.bytes + elapsed * cap_b).min(cap_b);
    b.records = (b.records + elapsed * cap_c).min(cap_c);
    b.at_ms = b.at_ms.max(now_ms);
    b
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
        let b = refilled(
            &mut map,
            group,
            self.bytes_per_sec,
            self.records_per_sec,
            now_ms,
        );
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

/// The GetRecords limiter of one node (buckets of the shards it leads).
#[derive(Debug)]
pub struct ReadThrottle {
    bytes_per_sec: u64,
    calls_per_sec: u64,
    buckets: Mutex<HashMap<u64, Bucket>>,
}

impl ReadThrottle {
    /// A limiter with these per-shard rates.
    pub fn new(bytes_per_sec: u64, calls_per_sec: u64) -> ReadThrottle {
        ReadThrottle {
            bytes_per_sec,
            calls_per_sec,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill<'a>(
        &self,
        map: &'a mut HashMap<u64, Bucket>,
        group: u64,
        now_ms: u64,
    ) -> &'a mut Bucket {
        refilled(map, group, self.bytes_per_sec, self.calls_per_sec, now_ms)
    }

    /// Admits one GetRecords call on `group` at `now_ms` (taking one call token), or returns
    /// false and takes nothing.
    pub fn admit(&self, group: u64, now_ms: u64) -> bool {
        let Ok(mut map) = self.buckets.lock() else {
            return true;
        };
        let b = self.refill(&mut map, group, now_ms);
        let calls_ok = self.calls_per_sec == 0 || b.records >= 1.0;
        let bytes_ok = self.bytes_per_sec == 0 || b.bytes > 0.0;
        if !(calls_ok && bytes_ok) {
            return false;
        }
        if self.calls_per_sec > 0 {
            b.records -= 1.0;
        }
        true
    }

    /// Takes the bytes an admitted call returned (the bucket may go into debt).
    pub fn consume(&self, group: u64, bytes: u64, now_ms: u64) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let Ok(mut map) = self.buckets.lock() else {
            return;
        };
        let floor = -5.0 * self.bytes_per_sec as f64;
        let b = self.refill(&mut map, group, now_ms);
        b.bytes = (b.bytes - bytes as f64).max(floor);
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

    #[test]
    fn reads_five_calls_a_second_and_byte_debt() {
        let t = ReadThrottle::new(2000, 5);
        for _ in 0..5 {
            assert!(t.admit(1, 0));
        }
        assert!(!t.admit(1, 0), "sixth call in the same second");
        assert!(t.admit(1, 200), "one call token refilled after 200 ms");
        // A large read puts the shard into debt: no call until it is paid back.
        t.consume(1, 10_000, 200);
        assert!(!t.admit(1, 1000));
        assert!(!t.admit(1, 4000));
        assert!(t.admit(1, 5300));
        // Other shards are independent; zero disables.
        assert!(t.admit(2, 0));
        // Debt is capped at 5 s of the rate: 100 KB of reads on a 2000 B/s bucket block 5 s,
        // not 50.
        let capped = ReadThrottle::new(2000, 5);
        assert!(capped.admit(3, 0));
        capped.consume(3, 100_000, 0);
        assert!(!capped.admit(3, 4900));
        assert!(capped.admit(3, 5100));
        let off = ReadThrottle::new(0, 0);
        for i in 0..100 {
            off.consume(1, 1 << 30, i);
            assert!(off.admit(1, i));
        }
    }
}
