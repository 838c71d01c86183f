//! Storage metrics, registered in the process-wide Prometheus registry.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts};

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    // Names and buckets are compile-time constants: creation cannot fail at run time.
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("static histogram options are valid");
    // A second registration (several stores in one test process) keeps the first series.
    let _ = prometheus::register(Box::new(h.clone()));
    h
}

fn counter(name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("static counter options are valid");
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

/// Latency of one fsync of the group-commit thread (the journal's, or RocksDB's WAL's).
pub static FSYNC_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "runnel_storage_fsync_seconds",
        "Latency of one group-commit fsync (Raft log journal or WAL)",
        prometheus::exponential_buckets(0.000_05, 2.0, 18).unwrap_or_default(),
    )
});

/// Time from submitting a log write to its completion callback (queueing behind the
/// writer thread plus the write and the fsync that covers it).
pub static LOG_WRITE_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "runnel_storage_log_write_seconds",
        "Time from submitting a Raft log write to its durable completion (queue, write, fsync)",
        prometheus::exponential_buckets(0.000_05, 2.0, 18).unwrap_or_default(),
    )
});

/// Jobs (Raft appends, truncations, purges) made durable by one fsync.
pub static SYNC_BATCH_JOBS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "runnel_storage_sync_batch_jobs",
        "Log write jobs covered by one group-commit fsync",
        prometheus::exponential_buckets(1.0, 2.0, 14).unwrap_or_default(),
    )
});

/// Write-batch operations made durable by one fsync.
pub static SYNC_BATCH_ENTRIES: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "runnel_storage_sync_batch_entries",
        "RocksDB operations covered by one group-commit fsync",
        prometheus::exponential_buckets(1.0, 2.0, 16).unwrap_or_default(),
    )
});

/// Journal checkpoints: RocksDB flushes after which closed journal segments were freed.
pub static JOURNAL_CHECKPOINTS: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_storage_journal_checkpoints_total",
        "Raft log journal checkpoints (a flush, then closed segments freed)",
    )
});

/// Time-index rows (Raft entries worth of records) removed by retention.
pub static RETENTION_TRIMMED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_storage_retention_trimmed_entries_total",
        "Entries of records removed by retention trimming",
    )
});

/// Record reads by where their entry blocks came from: memory (the recent blocks) or RocksDB.
static RECORD_READS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    let c = IntCounterVec::new(
        Opts::new(
            "runnel_storage_record_reads_total",
            "Record reads by source of their entry blocks: memory (recently applied) or disk (RocksDB)",
        ),
        &["source"],
    )
    .expect("static counter options are valid");
    let _ = prometheus::register(Box::new(c.clone()));
    c
});

static READS_FROM_MEMORY: LazyLock<IntCounter> =
    LazyLock::new(|| RECORD_READS.with_label_values(&["memory"]));
static READS_FROM_DISK: LazyLock<IntCounter> =
    LazyLock::new(|| RECORD_READS.with_label_values(&["disk"]));

/// Counts one record read, answered from memory (`true`) or from RocksDB.
pub(crate) fn recent_read(memory: bool) {
    if memory {
        READS_FROM_MEMORY.inc();
    } else {
        READS_FROM_DISK.inc();
    }
}

/// Registers every storage metric (so each is exported from the start, at zero).
pub fn init() {
    LazyLock::force(&FSYNC_SECONDS);
    LazyLock::force(&LOG_WRITE_SECONDS);
    LazyLock::force(&SYNC_BATCH_JOBS);
    LazyLock::force(&SYNC_BATCH_ENTRIES);
    LazyLock::force(&RETENTION_TRIMMED);
    LazyLock::force(&READS_FROM_MEMORY);
    LazyLock::force(&READS_FROM_DISK);
}
