//! Raft-layer metrics in the process-wide Prometheus registry.

use std::sync::LazyLock;

use prometheus::IntCounter;

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
