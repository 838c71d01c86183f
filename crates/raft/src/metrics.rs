//! Raft-layer metrics in the process-wide Prometheus registry.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter};

fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static counter options are valid");
    // A second registration (several nodes in one test process) keeps the first series.
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

/// Snapshots installed on this node's replicas.
pub static SNAPSHOTS_INSTALLED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_raft_snapshots_installed_total",
        "Snapshots installed on replicas of this node",
    )
});

/// Snapshots sent by this node's leaders.
pub static SNAPSHOTS_SENT: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_raft_snapshots_sent_total",
        "Snapshots sent to lagging replicas",
    )
});

/// Time to apply one batch of committed entries to a state machine.
pub static APPLY_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        HistogramOpts::new(
            "runnel_raft_apply_seconds",
            "Time to apply one batch of committed entries to a state machine",
        )
        .buckets(prometheus::exponential_buckets(0.000_05, 2.0, 16).unwrap_or_default()),
    )
    .expect("static histogram options are valid");
    let _ = prometheus::register(Box::new(h.clone()));
    h
});

/// Registers every Raft-layer metric (so each is exported from the start, at zero).
pub fn init() {
    LazyLock::force(&SNAPSHOTS_INSTALLED);
    LazyLock::force(&SNAPSHOTS_SENT);
    LazyLock::force(&APPLY_SECONDS);
}
