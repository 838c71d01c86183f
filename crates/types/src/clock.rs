//! Time sources. Everything time-dependent takes a [`Clock`] so tests can control time.
//!
//! Invariants: [`SystemClock`] is wall time (ms since the Unix epoch) plus an adjustable offset,
//! saturating at `0` and `u64::MAX`; [`ManualClock`] only moves when told to.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Current time, milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// Wall-clock time plus an offset (a test and fault-injection hook for clock skew).
#[derive(Debug, Default)]
pub struct SystemClock {
    offset_ms: AtomicI64,
}

impl SystemClock {
    /// Sets the offset added to the system time (may be negative).
    pub fn set_offset_ms(&self, off: i64) {
        self.offset_ms.store(off, Ordering::Relaxed);
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        wall.saturating_add_signed(self.offset_ms.load(Ordering::Relaxed))
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicU64,
}

impl ManualClock {
    /// A clock stopped at `ms`.
    pub fn new(ms: u64) -> Self {
        ManualClock {
            ms: AtomicU64::new(ms),
        }
    }

    /// Moves the clock forward by `ms` (saturating).
    pub fn advance(&self, ms: u64) {
        // fetch_update with a closure that always returns Some cannot fail.
        let _ = self
            .ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(ms))
            });
    }

    /// Sets the clock to `ms` (may move it backwards).
    pub fn set(&self, ms: u64) {
        self.ms.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.ms.load(Ordering::SeqCst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(1_000);
        assert_eq!(c.now_ms(), 1_000);
        c.advance(500);
        assert_eq!(c.now_ms(), 1_500);
        c.set(10);
        assert_eq!(c.now_ms(), 10);
        c.advance(u64::MAX);
        assert_eq!(c.now_ms(), u64::MAX);
    }

    #[test]
    fn system_clock_offset() {
        let c = SystemClock::default();
        let before = c.now_ms();
        // Sanity: after 2020-01-01.
        assert!(before > 1_577_836_800_000);
        c.set_offset_ms(3_600_000);
        let shifted = c.now_ms();
        assert!(shifted >= before + 3_600_000 && shifted < before + 3_600_000 + 60_000);
        c.set_offset_ms(i64::MIN);
        assert_eq!(c.now_ms(), 0);
        c.set_offset_ms(i64::MAX);
        assert!(c.now_ms() > i64::MAX as u64);
    }

    #[test]
    fn usable_as_trait_object() {
        let clocks: Vec<std::sync::Arc<dyn Clock>> = vec![
            std::sync::Arc::new(ManualClock::new(7)),
            std::sync::Arc::new(SystemClock::default()),
        ];
        assert_eq!(clocks[0].now_ms(), 7);
        assert!(clocks[1].now_ms() > 7);
    }
}
