//! Storage hot-path benchmarks on a real RocksDB in a fresh temporary directory (deleted at the
//! end of each benchmark function).
//!
//! A record is acknowledged only after the Raft entry carrying it is durable on a quorum, then it
//! is applied to the shard's records and read back by consumers, so these are the node-local
//! costs behind every PutRecords and GetRecords:
//!
//! * `log_append_batch_build`: [`Store::log_append_batch`] alone (the copy of entry bytes into a
//!   `WriteBatch`); entries of 1 × 1 KiB, 16 × 1 KiB and 1 × 512 KiB (a full 500 × 1 KiB
//!   PutRecords entry); throughput in entry bytes;
//! * `log_append_nosync` / `log_append_sync`: the same batches written with
//!   [`Store::write_nosync`] (WAL write, no fsync) and [`Store::write_sync`] (one fsync per
//!   batch: the cost the group-commit writer amortizes);
//! * `apply_records`: [`Store::apply_records`] (records + time index + applied state in one
//!   unsynced batch) of 1 × 100 B, 1 × 1 KiB and 500 × 1 KiB records; throughput in records;
//! * `log_writer_group_commit`: N closed-loop submitters (1, 4, 16; think "N Raft groups with one
//!   append in flight each"), each building a batch with [`Store::log_append_batch`],
//!   submitting it with `Store::log_writer().submit(batch, done)` and waiting for `done`, which
//!   the writer thread runs only after the WAL fsync that covers the batch. A batch is one log
//!   entry carrying R records of 1 KiB (R = 1: a PutRecord; R = 100: a PutRecords). The reported
//!   time is per batch (so batches/s = 1 / time) and the throughput is in records (records/s);
//! * `read_records`: [`Store::read_records`] of a page of 100 and 1000 records of 1 KiB (one
//!   GetRecords call), once from the memtable and once from SST files after a reopen (RocksDB
//!   flushes recovered memtables on open; the block cache is warm after the first iterations).
//!
//! Record data is pseudo-random so that the LZ4 compression of the `records` and `log` column
//! families does not flatter the numbers. The disk is whatever holds the system temp directory.
//! `Store` exposes no memtable flush or compaction control, so compactions triggered by the
//! write benchmarks run in the background as they would in production.
//!
//! Benchmarks measure; they assert nothing.

mod common;

use std::hint::black_box;
use std::sync::{mpsc, Barrier};
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, SamplingMode,
    Throughput,
};
use runnel_storage::Store;
use runnel_types::Position;

use common::{payload, records, TempStore};

const ARRIVAL_MS: u64 = 1_700_000_000_000;

/// Raft log batches: (label, entries per batch, bytes per entry).
const APPEND_SHAPES: [(&str, usize, usize); 3] = [
    ("1x1KiB", 1, 1024),
    ("16x1KiB", 16, 1024),
    ("1x512KiB", 1, 512 * 1024),
];

/// Raft log entries as [`Store::log_append_batch`] takes them: (index, bytes).
type LogEntries = Vec<(u64, Vec<u8>)>;

/// One closed-loop submitter of the group-commit benchmark: the batch it appends again and
/// again (renumbered each time) and the last log index it used.
struct Lane {
    entries: LogEntries,
    last: u64,
}

/// A Raft log batch: `n` entries of `len` bytes; indexes are set by [`renumber`].
fn log_entries(n: usize, len: usize) -> LogEntries {
    (0..n).map(|i| (0, payload(len, i as u64))).collect()
}

/// Gives `entries` the next indexes after `last` (so each append extends the log).
fn renumber(entries: &mut [(u64, Vec<u8>)], last: &mut u64) {
    for e in entries {
        *last += 1;
        e.0 = *last;
    }
}

/// Settings for benchmarks bounded by an fsync (milliseconds per iteration).
fn fsync_bound(g: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    g.sample_size(20).sampling_mode(SamplingMode::Flat);
}

fn bench_log_append_build(c: &mut Criterion) {
    let fixture = TempStore::open();
    let store = fixture.store();
    let mut g = c.benchmark_group("log_append_batch_build");
    for (group, (label, n, len)) in (1u64..).zip(APPEND_SHAPES) {
        let mut entries = log_entries(n, len);
        let mut last = 0u64;
        g.throughput(Throughput::Bytes((n * len) as u64));
        g.bench_function(label, |b| {
            b.iter(|| {
                renumber(&mut entries, &mut last);
                store
                    .log_append_batch(group, black_box(&entries))
                    .expect("log_append_batch failed")
            })
        });
    }
    g.finish();
}

fn bench_log_append_write(c: &mut Criterion, sync: bool) {
    let fixture = TempStore::open();
    let store = fixture.store();
    let mut g = c.benchmark_group(if sync {
        "log_append_sync"
    } else {
        "log_append_nosync"
    });
    if sync {
        fsync_bound(&mut g);
    }
    for (group, (label, n, len)) in (1u64..).zip(APPEND_SHAPES) {
        let mut entries = log_entries(n, len);
        let mut last = 0u64;
        g.throughput(Throughput::Bytes((n * len) as u64));
        g.bench_function(label, |b| {
            b.iter(|| {
                renumber(&mut entries, &mut last);
                let batch = store
                    .log_append_batch(group, &entries)
                    .expect("log_append_batch failed");
                if sync {
                    store.write_sync(batch)
                } else {
                    store.write_nosync(batch)
                }
                .expect("log write failed")
            })
        });
    }
    g.finish();
}

fn bench_log_append_nosync(c: &mut Criterion) {
    bench_log_append_write(c, false);
}

fn bench_log_append_sync(c: &mut Criterion) {
    bench_log_append_write(c, true);
}

fn bench_apply_records(c: &mut Criterion) {
    let fixture = TempStore::open();
    let store = fixture.store();
    // The applied-state value is opaque to the store; the Raft layer writes a few dozen bytes.
    let applied = payload(48, 99);
    let mut g = c.benchmark_group("apply_records");
    for (group, (label, n, len)) in (1u64..).zip([
        ("1x100B", 1usize, 100usize),
        ("1x1KiB", 1, 1024),
        ("500x1KiB", 500, 1024),
    ]) {
        let recs = records(n, len);
        let mut log_index = 0u64;
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(label, |b| {
            b.iter(|| {
                log_index += 1;
                store
                    .apply_records(
                        group,
                        log_index,
                        ARRIVAL_MS + log_index,
                        black_box(&recs),
                        &applied,
                    )
                    .expect("apply_records failed")
            })
        });
    }
    g.finish();
}

/// Runs `iters` batches through the group-commit writer from `lanes.len()` closed-loop
/// submitter threads (lane `t` appends to Raft group `t + 1`) and returns the wall time from the
/// moment all submitters are ready until the last batch is durable.
fn group_commit(store: &Store, lanes: &mut [Lane], iters: u64) -> Duration {
    let submitters = lanes.len() as u64;
    let ready = Barrier::new(lanes.len() + 1);
    std::thread::scope(|s| {
        for (t, Lane { entries, last }) in (0u64..).zip(lanes.iter_mut()) {
            let share = iters / submitters + u64::from(t < iters % submitters);
            let ready = &ready;
            s.spawn(move || {
                let (tx, rx) = mpsc::channel();
                ready.wait();
                for _ in 0..share {
                    renumber(entries, last);
                    let batch = store
                        .log_append_batch(t + 1, &entries[..])
                        .expect("log_append_batch failed");
                    let tx = tx.clone();
                    store.log_writer().submit(
                        batch,
                        Box::new(move |r| {
                            // The receiver waits for exactly this message.
                            let _ = tx.send(r);
                        }),
                    );
                    rx.recv()
                        .expect("the log writer dropped a callback")
                        .expect("log append failed");
                }
            });
        }
        ready.wait();
        // Leaving the scope joins every submitter, so the elapsed time covers the last batch.
        Instant::now()
    })
    .elapsed()
}

fn bench_log_writer(c: &mut Criterion) {
    let mut g = c.benchmark_group("log_writer_group_commit");
    fsync_bound(&mut g);
    for records_per_batch in [1usize, 100] {
        for submitters in [1usize, 4, 16] {
            // A fresh store per case, so one case's backlog (memtable flushes, compactions) does
            // not slow the next one.
            let fixture = TempStore::open();
            let store = fixture.store();
            let mut lanes: Vec<Lane> = (0..submitters)
                .map(|t| Lane {
                    // One log entry carrying `records_per_batch` records of 1 KiB.
                    entries: vec![(0, payload(records_per_batch * 1024, t as u64))],
                    last: 0,
                })
                .collect();
            g.throughput(Throughput::Elements(records_per_batch as u64));
            g.bench_function(
                BenchmarkId::new(
                    format!("{records_per_batch}_records_per_batch"),
                    format!("{submitters}_submitters"),
                ),
                |b| b.iter_custom(|iters| group_commit(store, &mut lanes, iters)),
            );
        }
    }
    g.finish();
}

fn bench_read_records(c: &mut Criterion) {
    const GROUP: u64 = 9;
    const ENTRIES: u64 = 8;
    let mut fixture = TempStore::open();
    // 8 entries of 500 records of 1 KiB: 4000 records, 4 MiB of data.
    let recs = records(500, 1024);
    for log_index in 1..=ENTRIES {
        fixture
            .store()
            .apply_records(GROUP, log_index, ARRIVAL_MS + log_index, &recs, b"applied")
            .expect("apply_records failed");
    }
    let end = Position {
        log_index: ENTRIES + 1,
        sub: 0,
    };
    let mut g = c.benchmark_group("read_records");
    for source in ["memtable", "sst"] {
        if source == "sst" {
            fixture.reopen();
        }
        let store = fixture.store();
        for page in [100usize, 1000] {
            g.throughput(Throughput::Elements(page as u64));
            g.bench_function(BenchmarkId::new(source, page), |b| {
                b.iter(|| {
                    // GetRecords limits: at most 10000 records and 10 MiB per call.
                    store
                        .read_records(GROUP, black_box(Position::START), end, page, 10 << 20)
                        .expect("read_records failed")
                })
            });
        }
    }
    g.finish();
}

criterion_group! {
    name = storage;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_log_append_build, bench_log_append_nosync, bench_log_append_sync,
        bench_apply_records, bench_log_writer, bench_read_records
}
criterion_main!(storage);
