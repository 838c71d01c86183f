//! Raft-layer metrics in the process-wide Prometheus registry.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts};

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

/// Commit notices not sent (see `network::COMMIT_NOTICE_SKIP_WINDOW`).
pub static COMMIT_NOTICES_SKIPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_raft_commit_notices_skipped_total",
        "Empty AppendEntries that would only have moved a follower's commit index, answered locally because the follower acknowledged the same log moments before",
    )
});

/// Buckets of the Raft RPC latency histograms: 50 µs to about 1.6 s.
fn rpc_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_05, 2.0, 16).unwrap_or_default()
}

/// Round trip of Raft RPCs sent by this node, by kind: `append` (with entries), `commit` (empty,
/// announcing a new commit index), `heartbeat` (empty, coalesced per peer), `read` (empty, the first
/// message on a new connection: a linearizable read's leadership check) and `vote`.
pub static RPC_SECONDS: LazyLock<HistogramVec> = LazyLock::new(|| {
    let h = HistogramVec::new(
        HistogramOpts::new(
            "runnel_raft_rpc_seconds",
            "Round trip of Raft RPCs sent by this node, by kind (append, commit, heartbeat, read, vote)",
        )
        .buckets(rpc_buckets()),
        &["kind"],
    )
    .expect("static histogram options are valid");
    let _ = prometheus::register(Box::new(h.clone()));
    h
});

/// Time the local Raft takes to handle one incoming AppendEntries that carries entries
/// (appending them to the log, fsync included).
pub static APPEND_HANDLE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    let h = Histogram::with_opts(
        HistogramOpts::new(
            "runnel_raft_append_handle_seconds",
            "Time for the local Raft to handle one incoming AppendEntries with entries (durable append included)",
        )
        .buckets(rpc_buckets()),
    )
    .expect("static histogram options are valid");
    let _ = prometheus::register(Box::new(h.clone()));
    h
});

/// Quiesced groups woken, by reason (see `quiesce`).
pub static QUIESCE_WAKES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "runnel_raft_quiesce_wakes_total",
            "Quiesced groups woken on this node, by reason (write, entries, vote, asked, no_beat, not_leader)",
        ),
        &["reason"],
    )
    .expect("static counter options are valid");
    let _ = prometheus::register(Box::new(c.clone()));
    c
});

/// Groups that went quiet on this node (leaders and followers).
pub static QUIESCED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_raft_quiesced_total",
        "Times a group replica on this node quiesced (stopped its Raft timers because its group is idle)",
    )
});

/// Registers every Raft-layer metric (so each is exported from the start, at zero).
pub fn init() {
    LazyLock::force(&SNAPSHOTS_INSTALLED);
    LazyLock::force(&SNAPSHOTS_SENT);
    LazyLock::force(&APPLY_SECONDS);
    LazyLock::force(&APPEND_HANDLE_SECONDS);
    LazyLock::force(&COMMIT_NOTICES_SKIPPED);
    LazyLock::force(&QUIESCED);
    for reason in crate::quiesce::WAKE_REASONS {
        QUIESCE_WAKES.with_label_values(&[reason]);
    }
    for kind in ["append", "commit", "heartbeat", "read", "vote"] {
        RPC_SECONDS.with_label_values(&[kind]);
    }
}
