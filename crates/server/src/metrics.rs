//! Server metrics in the process-wide Prometheus registry, served as text on `/metrics`.
//!
//! Families (every name starts with `runnel_`; the full list with meanings is in
//! `docs/monitoring.md`):
//! * Kinesis' CloudWatch stream metrics as `runnel_stream_*{stream}`, counted by the node that
//!   served the request (sum over nodes for the stream's total);
//! * the shard-level metrics of enhanced monitoring as `runnel_shard_*{stream,shard}`, only for
//!   the metrics a stream enabled, and at most `max_shard_series` (stream, shard) pairs per
//!   process ([`set_max_shard_series`]); pairs beyond the cap are counted in
//!   `runnel_metrics_shard_series_dropped_total`;
//! * API requests, errors by Kinesis error name and latency per operation and transport;
//! * Raft, storage and process gauges refreshed by the node's metrics loop.
//!
//! Invariant: label values are bounded: stream names come from existing streams only (a
//! request for an unknown stream is counted by operation, not by name), shards only under the
//! cap, error names from the fixed Kinesis list.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
};

fn register<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    // A second registration (several nodes in one test process) keeps the first series.
    let _ = prometheus::register(Box::new(c.clone()));
    c
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(IntCounterVec::new(Opts::new(name, help), labels).expect("static metric"))
}

fn gauge_vec(name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(IntGaugeVec::new(Opts::new(name, help), labels).expect("static metric"))
}

fn gauge(name: &str, help: &str) -> IntGauge {
    register(IntGauge::new(name, help).expect("static metric"))
}

fn counter(name: &str, help: &str) -> IntCounter {
    register(IntCounter::new(name, help).expect("static metric"))
}

/// Latency buckets: 100 µs to ~13 s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.000_1, 2.0, 18).unwrap_or_default()
}

fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    register(
        HistogramVec::new(
            HistogramOpts::new(name, help).buckets(latency_buckets()),
            labels,
        )
        .expect("static metric"),
    )
}

fn histogram(name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
            .expect("static metric"),
    )
}

// ------------------------------------------------------------------ API

/// API requests by operation, transport and outcome (Kinesis error name or "ok").
pub static REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_api_requests_total",
        "API requests by operation, transport (grpc or http) and outcome (ok or the Kinesis error name)",
        &["operation", "transport", "outcome"],
    )
});

/// API latency by operation and transport.
pub static LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "runnel_api_latency_seconds",
        "API latency by operation and transport",
        &["operation", "transport"],
    )
});

// ------------------------------------------------------------------ stream (CloudWatch)

static INCOMING_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_incoming_bytes_total",
        "IncomingBytes: bytes (data + partition keys) successfully put",
        &["stream"],
    )
});
static INCOMING_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_incoming_records_total",
        "IncomingRecords: records successfully put",
        &["stream"],
    )
});
static PUT_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_put_requests_total",
        "PutRecord.Success / PutRecords.Success: put requests by operation and outcome (success or failure)",
        &["stream", "operation", "outcome"],
    )
});
static PUT_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "runnel_stream_put_latency_seconds",
        "PutRecord.Latency / PutRecords.Latency",
        &["stream", "operation"],
    )
});
static PUT_RECORDS_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_put_records_records_total",
        "PutRecords.SuccessfulRecords / FailedRecords / ThrottledRecords (their sum is TotalRecords)",
        &["stream", "outcome"],
    )
});
static GET_REQUESTS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_get_records_requests_total",
        "GetRecords.Success: GetRecords calls by outcome (success or failure)",
        &["stream", "outcome"],
    )
});
static GET_LATENCY: LazyLock<HistogramVec> = LazyLock::new(|| {
    histogram_vec(
        "runnel_stream_get_records_latency_seconds",
        "GetRecords.Latency",
        &["stream"],
    )
});
static GET_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_get_records_bytes_total",
        "GetRecords.Bytes: bytes (data) returned by GetRecords",
        &["stream"],
    )
});
static GET_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_get_records_records_total",
        "GetRecords.Records: records returned by GetRecords",
        &["stream"],
    )
});
static ITERATOR_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "runnel_stream_iterator_age_milliseconds",
        "GetRecords.IteratorAgeMilliseconds: the largest age, over the stream's shards, of the last record of the latest GetRecords on each shard served by this node (0 when caught up)",
        &["stream"],
    )
});
static OUTGOING_BYTES: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_outgoing_bytes_total",
        "OutgoingBytes: bytes delivered to consumers",
        &["stream"],
    )
});
static OUTGOING_RECORDS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_outgoing_records_total",
        "OutgoingRecords: records delivered to consumers",
        &["stream"],
    )
});
static WRITE_THROTTLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_write_throttled_records_total",
        "WriteProvisionedThroughputExceeded: records refused by the per-shard write limit",
        &["stream"],
    )
});
static READ_THROTTLED: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_stream_read_throttled_total",
        "ReadProvisionedThroughputExceeded: GetRecords calls refused by the per-shard read limit",
        &["stream"],
    )
});

// ------------------------------------------------------------------ shard (enhanced monitoring)

static SHARD_COUNTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_shard_metric_total",
        "Shard-level counters of enhanced monitoring: metric is IncomingBytes, IncomingRecords, OutgoingBytes, OutgoingRecords, WriteProvisionedThroughputExceeded or ReadProvisionedThroughputExceeded",
        &["stream", "shard", "metric"],
    )
});
static SHARD_ITERATOR_AGE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "runnel_shard_iterator_age_milliseconds",
        "IteratorAgeMilliseconds per shard (enhanced monitoring)",
        &["stream", "shard"],
    )
});
static SHARD_SERIES_DROPPED: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_metrics_shard_series_dropped_total",
        "Shard-level metric updates dropped because the (stream, shard) series cap was reached",
    )
});

static MAX_SHARD_SERIES: AtomicUsize = AtomicUsize::new(1000);
static SHARD_SERIES: LazyLock<Mutex<HashSet<(String, String)>>> =
    LazyLock::new(|| Mutex::new(HashSet::new()));
/// Latest iterator age per (stream, shard) served here, and when it was observed.
type AgeMap = HashMap<(String, String), (i64, Instant)>;
static SHARD_AGES: LazyLock<Mutex<AgeMap>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// An iterator age older than this no longer counts (its consumer stopped or moved).
const AGE_TTL: Duration = Duration::from_secs(60);

/// Sets the cap on (stream, shard) pairs with shard-level series (`[metrics]
/// max_shard_series`).
pub fn set_max_shard_series(n: usize) {
    MAX_SHARD_SERIES.store(n, Ordering::Relaxed);
}

/// The shard-level metrics a stream enabled (`"ALL"` enables every one).
#[derive(Clone, Copy, Debug)]
pub struct Enhanced<'a>(pub &'a std::collections::BTreeSet<String>);

impl Enhanced<'_> {
    /// Whether the stream has any shard-level metric on.
    fn any(&self) -> bool {
        !self.0.is_empty()
    }

    fn on(&self, metric: &str) -> bool {
        self.any() && (self.0.contains(metric) || self.0.contains("ALL"))
    }
}

/// Whether (stream, shard) may have series (under the cap, or already admitted).
fn admit_shard(stream: &str, shard: &str) -> bool {
    let Ok(mut set) = SHARD_SERIES.lock() else {
        return false;
    };
    let key = (stream.to_string(), shard.to_string());
    if set.contains(&key) {
        return true;
    }
    if set.len() >= MAX_SHARD_SERIES.load(Ordering::Relaxed) {
        SHARD_SERIES_DROPPED.inc();
        return false;
    }
    set.insert(key);
    true
}

fn shard_count(e: Enhanced<'_>, stream: &str, shard: &str, metric: &str, n: u64) {
    if n > 0 && e.on(metric) && admit_shard(stream, shard) {
        SHARD_COUNTERS
            .with_label_values(&[stream, shard, metric])
            .inc_by(n);
    }
}

/// Creates a stream's series at zero (so dashboards and alerts see them before traffic).
pub fn init_stream(stream: &str) {
    INCOMING_BYTES.with_label_values(&[stream]);
    INCOMING_RECORDS.with_label_values(&[stream]);
    for op in ["PutRecord", "PutRecords"] {
        for outcome in ["success", "failure"] {
            PUT_REQUESTS.with_label_values(&[stream, op, outcome]);
        }
    }
    for outcome in ["successful", "failed", "throttled"] {
        PUT_RECORDS_RECORDS.with_label_values(&[stream, outcome]);
    }
    for outcome in ["success", "failure"] {
        GET_REQUESTS.with_label_values(&[stream, outcome]);
    }
    GET_BYTES.with_label_values(&[stream]);
    GET_RECORDS.with_label_values(&[stream]);
    ITERATOR_AGE.with_label_values(&[stream]);
    OUTGOING_BYTES.with_label_values(&[stream]);
    OUTGOING_RECORDS.with_label_values(&[stream]);
    WRITE_THROTTLED.with_label_values(&[stream]);
    READ_THROTTLED.with_label_values(&[stream]);
}

fn outcome(ok: bool) -> &'static str {
    if ok {
        "success"
    } else {
        "failure"
    }
}

/// Records accepted on a shard (any put operation). The shard's label is only spelled out
/// for a stream with shard-level metrics on (this runs for every record put).
pub fn incoming(
    e: Enhanced<'_>,
    stream: &str,
    shard: runnel_types::ShardId,
    records: u64,
    bytes: u64,
) {
    INCOMING_RECORDS
        .with_label_values(&[stream])
        .inc_by(records);
    INCOMING_BYTES.with_label_values(&[stream]).inc_by(bytes);
    if e.any() {
        let shard = shard.to_string();
        shard_count(e, stream, &shard, "IncomingRecords", records);
        shard_count(e, stream, &shard, "IncomingBytes", bytes);
    }
}

/// One PutRecord or PutRecords call that reached an existing stream.
pub fn put_call(stream: &str, operation: &'static str, ok: bool, elapsed: Duration) {
    PUT_REQUESTS
        .with_label_values(&[stream, operation, outcome(ok)])
        .inc();
    PUT_LATENCY
        .with_label_values(&[stream, operation])
        .observe(elapsed.as_secs_f64());
}

/// The entries of one PutRecords call by outcome.
pub fn put_records_entries(stream: &str, successful: u64, failed: u64, throttled: u64) {
    for (o, n) in [
        ("successful", successful),
        ("failed", failed),
        ("throttled", throttled),
    ] {
        PUT_RECORDS_RECORDS
            .with_label_values(&[stream, o])
            .inc_by(n);
    }
}

/// Records refused by a shard's write limit.
pub fn write_throttled(e: Enhanced<'_>, stream: &str, shard: &str, records: u64) {
    WRITE_THROTTLED.with_label_values(&[stream]).inc_by(records);
    shard_count(
        e,
        stream,
        shard,
        "WriteProvisionedThroughputExceeded",
        records,
    );
}

/// A GetRecords call refused by a shard's read limit.
pub fn read_throttled(e: Enhanced<'_>, stream: &str, shard: &str) {
    READ_THROTTLED.with_label_values(&[stream]).inc();
    shard_count(e, stream, shard, "ReadProvisionedThroughputExceeded", 1);
}

/// One GetRecords call on an existing stream; `delivered` = (records, bytes, iterator age
/// in ms) when it succeeded.
pub fn get_records(
    e: Enhanced<'_>,
    stream: &str,
    shard: &str,
    elapsed: Duration,
    delivered: Option<(u64, u64, u64)>,
) {
    GET_REQUESTS
        .with_label_values(&[stream, outcome(delivered.is_some())])
        .inc();
    GET_LATENCY
        .with_label_values(&[stream])
        .observe(elapsed.as_secs_f64());
    let Some((records, bytes, age_ms)) = delivered else {
        return;
    };
    GET_RECORDS.with_label_values(&[stream]).inc_by(records);
    GET_BYTES.with_label_values(&[stream]).inc_by(bytes);
    outgoing(e, stream, shard, records, bytes, age_ms);
}

/// Records delivered by any read (GetRecords or a tail's page): OutgoingRecords/Bytes and
/// IteratorAgeMilliseconds.
pub fn outgoing(e: Enhanced<'_>, stream: &str, shard: &str, records: u64, bytes: u64, age_ms: u64) {
    OUTGOING_RECORDS
        .with_label_values(&[stream])
        .inc_by(records);
    OUTGOING_BYTES.with_label_values(&[stream]).inc_by(bytes);
    shard_count(e, stream, shard, "OutgoingRecords", records);
    shard_count(e, stream, shard, "OutgoingBytes", bytes);
    let age = i64::try_from(age_ms).unwrap_or(i64::MAX);
    let max = SHARD_AGES.lock().ok().map(|mut m| {
        m.insert(
            (stream.to_string(), shard.to_string()),
            (age, Instant::now()),
        );
        m.iter()
            .filter(|((s, _), (_, at))| s == stream && at.elapsed() <= AGE_TTL)
            .map(|(_, (a, _))| *a)
            .max()
            .unwrap_or(age)
    });
    ITERATOR_AGE
        .with_label_values(&[stream])
        .set(max.unwrap_or(age));
    if e.on("IteratorAgeMilliseconds") && admit_shard(stream, shard) {
        SHARD_ITERATOR_AGE
            .with_label_values(&[stream, shard])
            .set(age);
    }
}

/// Drops iterator ages not refreshed for a minute (their consumers stopped or read through
/// another node): the stream's gauge becomes the largest fresh age (0 when none is left) and
/// the expired shard gauges go away.
pub fn expire_iterator_ages() {
    let Ok(mut m) = SHARD_AGES.lock() else {
        return;
    };
    let expired: Vec<(String, String)> = m
        .iter()
        .filter(|(_, (_, at))| at.elapsed() > AGE_TTL)
        .map(|(k, _)| k.clone())
        .collect();
    if expired.is_empty() {
        return;
    }
    for key in &expired {
        m.remove(key);
        let _ = SHARD_ITERATOR_AGE.remove_label_values(&[key.0.as_str(), key.1.as_str()]);
    }
    let streams: HashSet<&String> = expired.iter().map(|(s, _)| s).collect();
    for stream in streams {
        let max = m
            .iter()
            .filter(|((s, _), _)| s == stream)
            .map(|(_, (a, _))| *a)
            .max()
            .unwrap_or(0);
        ITERATOR_AGE.with_label_values(&[stream.as_str()]).set(max);
    }
}

/// Forgets a deleted stream's series (stream and shard level) and frees its shard-series
/// slots under the cap.
pub fn remove_stream(stream: &str) {
    let shards: Vec<String> = SHARD_SERIES
        .lock()
        .map(|mut set| {
            let mine: Vec<String> = set
                .iter()
                .filter(|(s, _)| s == stream)
                .map(|(_, sh)| sh.clone())
                .collect();
            set.retain(|(s, _)| s != stream);
            mine
        })
        .unwrap_or_default();
    for shard in &shards {
        for metric in crate::meta::SHARD_LEVEL_METRICS {
            let _ = SHARD_COUNTERS.remove_label_values(&[stream, shard.as_str(), metric]);
        }
        let _ = SHARD_ITERATOR_AGE.remove_label_values(&[stream, shard.as_str()]);
    }
    let one = [stream];
    let _ = INCOMING_BYTES.remove_label_values(&one);
    let _ = INCOMING_RECORDS.remove_label_values(&one);
    let _ = GET_BYTES.remove_label_values(&one);
    let _ = GET_RECORDS.remove_label_values(&one);
    let _ = ITERATOR_AGE.remove_label_values(&one);
    let _ = OUTGOING_BYTES.remove_label_values(&one);
    let _ = OUTGOING_RECORDS.remove_label_values(&one);
    let _ = WRITE_THROTTLED.remove_label_values(&one);
    let _ = READ_THROTTLED.remove_label_values(&one);
    let _ = GET_LATENCY.remove_label_values(&one);
    for op in ["PutRecord", "PutRecords"] {
        let _ = PUT_LATENCY.remove_label_values(&[stream, op]);
        for o in ["success", "failure"] {
            let _ = PUT_REQUESTS.remove_label_values(&[stream, op, o]);
        }
    }
    for o in ["successful", "failed", "throttled"] {
        let _ = PUT_RECORDS_RECORDS.remove_label_values(&[stream, o]);
    }
    for o in ["success", "failure"] {
        let _ = GET_REQUESTS.remove_label_values(&[stream, o]);
    }
    let _ = STREAM_DISK_BYTES.remove_label_values(&one);
    if let Ok(mut m) = SHARD_AGES.lock() {
        m.retain(|(s, _), _| s != stream);
    }
}

// ------------------------------------------------------------------ Raft

/// Raft groups hosted on this node.
pub static GROUPS_HOSTED: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "runnel_raft_groups_hosted",
        "Raft groups hosted on this node",
    )
});

/// Raft groups led by this node.
pub static GROUPS_LED: LazyLock<IntGauge> =
    LazyLock::new(|| gauge("runnel_raft_groups_led", "Raft groups led by this node"));

/// Hosted groups whose leader this node does not know.
pub static GROUPS_LEADERLESS: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "runnel_raft_groups_without_leader",
        "Hosted Raft groups for which this node knows no leader",
    )
});

/// Hosted groups that are quiet (idle, Raft timers stopped).
pub static GROUPS_QUIET: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "runnel_raft_groups_quiet",
        "Hosted shard groups that are quiet on this node: idle, Raft timers stopped, kept alive by one beat per peer node",
    )
});

/// Led groups with a voter silent for 5 s or more than 10,000 entries behind.
pub static GROUPS_UNDER_REPLICATED: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "runnel_raft_groups_under_replicated",
        "Groups led by this node with a voter that is silent (no Raft reply for 5 s) or more than 10000 entries behind",
    )
});

/// Largest replication lag over led groups (entries).
pub static REPLICATION_LAG: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "runnel_raft_replication_lag_entries",
        "Largest number of entries a voter is behind, over the groups this node leads",
    )
});

/// Leader changes seen by this node (any hosted group).
pub static LEADER_CHANGES: LazyLock<IntCounter> = LazyLock::new(|| {
    counter(
        "runnel_raft_leader_changes_total",
        "Leader changes of hosted groups observed by this node (sampled every second)",
    )
});

/// Current term by kind of group (the metadata group's, and the largest of the shard groups').
pub static TERM: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "runnel_raft_term",
        "Current Raft term: the metadata group's (group=meta), the largest shard group's (group=shard_max)",
        &["group"],
    )
});

/// Proposed shard entries not yet applied.
pub static PROPOSALS_PENDING: LazyLock<IntGauge> = LazyLock::new(|| {
    gauge(
        "runnel_raft_proposals_pending",
        "Shard entries proposed by this node's leaders and not yet committed and applied",
    )
});

/// Proposal to applied, per shard entry.
pub static COMMIT_SECONDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "runnel_raft_commit_seconds",
        "Time from proposing a shard entry to its being committed by a quorum and applied",
        latency_buckets(),
    )
});

/// How late the async runtime woke a task that was due (see [`crate::lag`]).
pub static RUNTIME_LAG: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "runnel_runtime_lag_seconds",
        "How late the node's async runtime woke a timer task due every 50 ms: the time its workers were all busy or blocked",
        latency_buckets(),
    )
});

/// Records per proposed shard entry.
pub static ENTRY_RECORDS: LazyLock<Histogram> = LazyLock::new(|| {
    histogram(
        "runnel_shard_entry_records",
        "Records per proposed shard Raft entry",
        prometheus::exponential_buckets(1.0, 2.0, 17).unwrap_or_default(),
    )
});

// ------------------------------------------------------------------ storage

/// Approximate bytes on disk per stream (this node's replicas).
pub static STREAM_DISK_BYTES: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "runnel_storage_stream_bytes",
        "Approximate bytes on this node's disk per stream (its replicas' logs, records and indexes)",
        &["stream"],
    )
});

/// RocksDB and file system gauges.
pub static ENGINE: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "runnel_rocksdb",
        "RocksDB figures: sst_bytes, blob_bytes, memtable_bytes, pending_compaction_bytes, running_compactions, running_flushes, write_stopped (0/1), delayed_write_rate",
        &["figure"],
    )
});

/// RocksDB tickers (monotonic while the node runs).
pub static ENGINE_COUNTERS: LazyLock<IntCounterVec> = LazyLock::new(|| {
    counter_vec(
        "runnel_rocksdb_ticker_total",
        "RocksDB tickers: stall_micros, compaction_write_bytes, flush_write_bytes",
        &["ticker"],
    )
});

/// File system of the data directory.
pub static DISK: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "runnel_storage_disk_bytes",
        "File system of the data directory: free (available to the node) and total bytes",
        &["kind"],
    )
});

/// Refreshes the storage gauges.
pub fn set_engine(s: &runnel_storage::EngineStats) {
    let clamp = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    for (figure, v) in [
        ("sst_bytes", s.sst_bytes),
        ("blob_bytes", s.blob_bytes),
        ("memtable_bytes", s.memtable_bytes),
        ("pending_compaction_bytes", s.pending_compaction_bytes),
        ("running_compactions", s.running_compactions),
        ("running_flushes", s.running_flushes),
        ("write_stopped", u64::from(s.write_stopped)),
        ("delayed_write_rate", s.delayed_write_rate),
    ] {
        ENGINE.with_label_values(&[figure]).set(clamp(v));
    }
    for (c, v) in [
        ("stall_micros", s.stall_micros),
        ("compaction_write_bytes", s.compaction_write_bytes),
        ("flush_write_bytes", s.flush_write_bytes),
    ] {
        let counter = ENGINE_COUNTERS.with_label_values(&[c]);
        let delta = v.saturating_sub(counter.get());
        if delta > 0 {
            counter.inc_by(delta);
        }
    }
    DISK.with_label_values(&["free"])
        .set(clamp(s.disk_free_bytes));
    DISK.with_label_values(&["total"])
        .set(clamp(s.disk_total_bytes));
}

// ------------------------------------------------------------------ process

static PROCESS: LazyLock<IntGaugeVec> = LazyLock::new(|| {
    gauge_vec(
        "runnel_process",
        "This process: resident_bytes, virtual_bytes, open_fds, max_fds, threads",
        &["figure"],
    )
});

static PROCESS_CPU: LazyLock<prometheus::Counter> = LazyLock::new(|| {
    register(
        prometheus::Counter::new(
            "runnel_process_cpu_seconds_total",
            "CPU time (user + system) used by this process",
        )
        .expect("static metric"),
    )
});

/// Advances `counter` to `total` (a monotonic figure read from elsewhere).
fn advance(counter: &prometheus::Counter, total: f64) {
    let delta = total - counter.get();
    if delta > 0.0 {
        counter.inc_by(delta);
    }
}

/// Refreshes the process gauges from /proc/self (Linux; left unchanged elsewhere).
pub fn set_process() {
    // SAFETY: sysconf(3) has no preconditions.
    let (tick, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
        // Fields after the parenthesised command name: state is field 3; utime 14, stime 15,
        // num_threads 20, vsize 23, rss 24 (1-based, as in proc(5)).
        if let Some(rest) = stat.rfind(')').and_then(|i| stat.get(i + 2..)) {
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| {
                f.get(i - 3)
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(0)
            };
            if tick > 0 {
                advance(&PROCESS_CPU, (num(14) + num(15)) as f64 / tick as f64);
            }
            PROCESS.with_label_values(&["threads"]).set(num(20) as i64);
            PROCESS
                .with_label_values(&["virtual_bytes"])
                .set(num(23) as i64);
            PROCESS
                .with_label_values(&["resident_bytes"])
                .set((num(24) as i64).saturating_mul(page.max(0)));
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        PROCESS
            .with_label_values(&["open_fds"])
            .set(dir.count() as i64);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        PROCESS
            .with_label_values(&["max_fds"])
            .set(i64::try_from(lim.rlim_cur).unwrap_or(i64::MAX));
    }
}

/// Registers every metric without labels, in every crate (so each is exported from the
/// start, at zero; labelled families appear with their first label set).
pub fn init() {
    runnel_storage::init_metrics();
    runnel_raft::metrics::init();
    LazyLock::force(&SHARD_SERIES_DROPPED);
    LazyLock::force(&GROUPS_HOSTED);
    LazyLock::force(&GROUPS_LED);
    LazyLock::force(&GROUPS_LEADERLESS);
    LazyLock::force(&GROUPS_QUIET);
    LazyLock::force(&GROUPS_UNDER_REPLICATED);
    LazyLock::force(&REPLICATION_LAG);
    LazyLock::force(&LEADER_CHANGES);
    LazyLock::force(&PROPOSALS_PENDING);
    LazyLock::force(&COMMIT_SECONDS);
    LazyLock::force(&ENTRY_RECORDS);
    LazyLock::force(&PROCESS_CPU);
    set_process();
}

/// Prometheus text of every registered metric.
pub fn render() -> String {
    use prometheus::Encoder;
    set_process();
    let mut buf = Vec::new();
    let encoder = prometheus::TextEncoder::new();
    if encoder.encode(&prometheus::gather(), &mut buf).is_err() {
        return String::new();
    }
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_series_respect_the_enabled_metrics_and_the_cap() {
        let mut on = std::collections::BTreeSet::new();
        let off = std::collections::BTreeSet::new();
        on.insert("IncomingRecords".to_string());
        incoming(Enhanced(&off), "m-off", runnel_types::ShardId(0), 3, 30);
        incoming(Enhanced(&on), "m-on", runnel_types::ShardId(0), 3, 30);
        let text = render();
        assert!(text.contains(
            "runnel_shard_metric_total{metric=\"IncomingRecords\",shard=\"shardId-000000000000\",stream=\"m-on\"} 3"
        ));
        assert!(!text.contains("shard=\"shardId-000000000000\",stream=\"m-off\""));
        assert!(!text
            .contains("metric=\"IncomingBytes\",shard=\"shardId-000000000000\",stream=\"m-on\""));
        assert!(text.contains("runnel_stream_incoming_records_total{stream=\"m-off\"} 3"));

        // Past the cap, new pairs are dropped and counted.
        let all: std::collections::BTreeSet<String> = ["ALL".to_string()].into();
        let before = SHARD_SERIES_DROPPED.get();
        let admitted = SHARD_SERIES.lock().unwrap().len();
        set_max_shard_series(admitted);
        incoming(Enhanced(&all), "m-cap", runnel_types::ShardId(9), 1, 1);
        assert!(SHARD_SERIES_DROPPED.get() > before);
        let text = render();
        assert!(!text.contains("shard=\"shardId-000000000009\",stream=\"m-cap\""));
        // The stream-level series is not capped.
        assert!(text.contains("runnel_stream_incoming_records_total{stream=\"m-cap\"} 1"));
        set_max_shard_series(1000);
    }

    #[test]
    fn iterator_age_is_the_largest_over_shards() {
        let none = std::collections::BTreeSet::new();
        let e = Enhanced(&none);
        get_records(e, "age", "a", Duration::ZERO, Some((1, 1, 500)));
        get_records(e, "age", "b", Duration::ZERO, Some((1, 1, 20)));
        assert_eq!(ITERATOR_AGE.with_label_values(&["age"]).get(), 500);
        get_records(e, "age", "a", Duration::ZERO, Some((0, 0, 0)));
        assert_eq!(ITERATOR_AGE.with_label_values(&["age"]).get(), 20);
    }

    #[test]
    fn process_figures_are_read() {
        set_process();
        assert!(PROCESS.with_label_values(&["resident_bytes"]).get() > 0);
        assert!(PROCESS.with_label_values(&["open_fds"]).get() > 0);
        assert!(PROCESS_CPU.get() >= 0.0);
    }
}
