//! The runtime lag probe: how late the node's async runtime wakes a task that is due.
//!
//! A task due every [`PERIOD`] records how late it was woken. Every task on the node waits that
//! long: the workers were all busy (CPU saturation) or one was blocked in a synchronous call
//! (with one worker thread, the whole node stops). The probe keeps the histogram
//! `runnel_runtime_lag_seconds` and logs a lag over [`WARN`], so a stall a client saw can be
//! matched to a node and a time.
//!
//! Invariant: the probe never sleeps less than [`PERIOD`] between samples (20 wake-ups a second,
//! cheap on an idle node) and ends when the node's shutdown signal changes.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// How often the probe wakes.
pub const PERIOD: Duration = Duration::from_millis(50);
/// A lag worth a warning in the log.
pub const WARN: Duration = Duration::from_millis(100);

/// Runs until `stop` changes: every `period`, calls `observe` with how late the wake-up was.
pub async fn probe(
    period: Duration,
    mut stop: watch::Receiver<bool>,
    mut observe: impl FnMut(Duration),
) {
    loop {
        let due = Instant::now() + period;
        tokio::select! {
            _ = tokio::time::sleep_until(due) => {}
            _ = stop.changed() => return,
        }
        observe(Instant::now().saturating_duration_since(due));
    }
}

/// The node's probe: records into the histogram and warns on long lags.
pub async fn run(node_id: u64, stop: watch::Receiver<bool>) {
    probe(PERIOD, stop, |late| {
        crate::metrics::RUNTIME_LAG.observe(late.as_secs_f64());
        if late > WARN {
            tracing::warn!(
                node = node_id,
                late_ms = u64::try_from(late.as_millis()).unwrap_or(u64::MAX),
                "the async runtime woke a due task late: its workers were busy or blocked"
            );
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A worker blocked in a synchronous call shows as lag; an idle runtime shows almost none.
    #[tokio::test(flavor = "current_thread")]
    async fn a_blocked_worker_shows_as_lag() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = watch::channel(false);
        let s = seen.clone();
        let probe = tokio::spawn(probe(Duration::from_millis(10), rx, move |late| {
            s.lock().unwrap().push(late)
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Blocks the only worker thread, as a synchronous disk call on it would.
        std::thread::sleep(Duration::from_millis(300));
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(true).unwrap();
        probe.await.unwrap();
        let seen = seen.lock().unwrap();
        assert!(seen.len() >= 5, "the probe sampled {} times", seen.len());
        let worst = seen.iter().max().copied().unwrap_or_default();
        assert!(
            worst >= Duration::from_millis(250),
            "a 300 ms block showed as at most {worst:?}"
        );
        let quiet = seen
            .iter()
            .filter(|l| **l < Duration::from_millis(50))
            .count();
        assert!(
            quiet >= 3,
            "an idle runtime lagged in most samples: {seen:?}"
        );
    }
}
