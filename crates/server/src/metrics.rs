//! Server metrics in the process-wide Prometheus registry.

use std::sync::LazyLock;

use prometheus::{Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts};

fn register<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    // A second registration (several nodes in one test process) keeps the first series.
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

/// Raft groups hosted on this node.
pub static GROUPS_HOSTED: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new(
            "runnel_raft_groups_hosted",
            "Raft groups hosted on this node",
        )
        .expect("static metric"),
    )
});

/// Raft groups led by this node.
pub static GROUPS_LED: LazyLock<IntGauge> = LazyLock::new(|| {
    register(
        IntGauge::new("runnel_raft_groups_led", "Raft groups led by this node")
            .expect("static metric"),
    )
});

/// Records per proposed shard entry.
pub static ENTRY_RECORDS: LazyLock<Histogram> = LazyLock::new(|| {
    register(
        Histogram::with_opts(
            HistogramOpts::new(
                "runnel_shard_entry_records",
                "Records per proposed shard Raft entry",
            )
            .buckets(prometheus::exponential_buckets(1.0, 2.0, 17).unwrap_or_default()),
        )
        .expect("static metric"),
    )
});

/// API requests by operation, transport and outcome (Kinesis error name or "ok").
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "runnel_api_requests_total",
                "API requests by operation, transport and outcome",
            ),
            &["operation", "transport", "outcome"],
        )
        .expect("static metric"),
    )
});

/// API latency by operation and transport.
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    register(
        HistogramVec::new(
            HistogramOpts::new(
                "runnel_api_latency_seconds",
                "API latency by operation and transport",
            )
            .buckets(prometheus::exponential_buckets(0.000_1, 2.0, 18).unwrap_or_default()),
            &["operation", "transport"],
        )
        .expect("static metric"),
    )
});

/// Records and bytes written, by stream.
pub static INCOMING_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "runnel_incoming_records_total",
                "Records accepted by PutRecord/PutRecords",
            ),
            &["stream"],
        )
        .expect("static metric"),
    )
});

/// Bytes written, by stream.
pub static INCOMING_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "runnel_incoming_bytes_total",
                "Bytes (data + partition keys) accepted",
            ),
            &["stream"],
        )
        .expect("static metric"),
    )
});

/// Records and bytes read, by stream.
pub static OUTGOING_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "runnel_outgoing_records_total",
                "Records returned by GetRecords",
            ),
            &["stream"],
        )
        .expect("static metric"),
    )
});

/// Bytes read, by stream.
pub static OUTGOING_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "runnel_outgoing_bytes_total",
                "Bytes returned by GetRecords",
            ),
            &["stream"],
        )
        .expect("static metric"),
    )
});

/// Records refused by the per-shard write limit (WriteProvisionedThroughputExceeded), by stream.
pub static WRITE_THROTTLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    register(
        IntCounterVec::new(
            Opts::new(
                "runnel_write_throttled_records_total",
                "Records refused with ProvisionedThroughputExceededException",
            ),
            &["stream"],
        )
        .expect("static metric"),
    )
});

/// Prometheus text of every registered metric.
pub fn render() -> String {
    use prometheus::Encoder;
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode(&prometheus::gather(), &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}
