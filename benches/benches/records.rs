//! Record codec micro-benchmarks: a shard record's stored form, encoded and decoded the way the
//! storage layer does it.
//!
//! Every record is encoded once per replica when its Raft entry is applied, and decoded once per
//! GetRecords that returns it, so the codec's cost per record and per byte bounds both the apply
//! rate and the read rate of a node.
//!
//! `runnel_storage::record::{encode, decode, Reader}` are `pub(crate)`, so this benchmarks the
//! closest public entry points instead:
//!
//! * `record_encode`: [`Store::add_records_to_batch`] into a fresh [`WriteBatch`], i.e. the
//!   record encoding of [`RecordIn`] plus its record and time-index keys and the copy into the
//!   batch (no RocksDB write), for one record of 100 B and of 1 KiB (throughput in data bytes)
//!   and for a 500 × 1 KiB entry (throughput in records);
//! * `record_decode`: [`Store::read_records`] of records that sit in the memtable, i.e. the
//!   decode into [`StoredRecord`](runnel_storage::StoredRecord) plus a RocksDB iterator seek and
//!   step, for one record (100 B, 1 KiB) and for the 500 records of one entry.
//!
//! The protobuf encode/decode of a PutRecords request is not measured here: `runnel-proto`
//! exposes the generated types, but encoding them needs the `prost::Message` trait, and `prost`
//! is not a dependency of this crate (nor re-exported by `runnel-proto` or `tonic`).
//!
//! Benchmarks measure; they assert nothing.

mod common;

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use runnel_storage::{RecordIn, Store, WriteBatch};
use runnel_types::Position;

use common::{records, TempStore};

const GROUP: u64 = 7;
const ARRIVAL_MS: u64 = 1_700_000_000_000;

/// Record sizes of the single-record cases: (label, data bytes).
const SIZES: [(&str, usize); 2] = [("100B", 100), ("1KiB", 1024)];

fn encode(store: &Store, log_index: u64, recs: &[RecordIn]) -> WriteBatch {
    let mut batch = WriteBatch::default();
    store
        .add_records_to_batch(&mut batch, GROUP, log_index, ARRIVAL_MS, recs)
        .expect("add_records_to_batch failed");
    batch
}

fn bench_encode(c: &mut Criterion) {
    let fixture = TempStore::open();
    let store = fixture.store();
    let mut g = c.benchmark_group("record_encode");
    for (label, len) in SIZES {
        let recs = records(1, len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), &recs, |b, recs| {
            b.iter(|| encode(store, black_box(42), black_box(recs)))
        });
    }
    let batch = records(500, 1024);
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_with_input(
        BenchmarkId::from_parameter("batch_500x1KiB"),
        &batch,
        |b, recs| b.iter(|| encode(store, black_box(42), black_box(recs))),
    );
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let fixture = TempStore::open();
    let store = fixture.store();
    // Log index 1 and 2: one record each (100 B, 1 KiB); log index 3: 500 × 1 KiB.
    for (i, (_, len)) in SIZES.iter().enumerate() {
        store
            .apply_records(
                GROUP,
                i as u64 + 1,
                ARRIVAL_MS,
                &records(1, *len),
                b"applied",
            )
            .expect("apply_records failed");
    }
    let batch = records(500, 1024);
    store
        .apply_records(GROUP, 3, ARRIVAL_MS, &batch, b"applied")
        .expect("apply_records failed");

    let mut g = c.benchmark_group("record_decode");
    for (i, (label, len)) in SIZES.iter().enumerate() {
        let from = Position {
            log_index: i as u64 + 1,
            sub: 0,
        };
        g.throughput(Throughput::Bytes(*len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(label), &from, |b, &from| {
            b.iter(|| {
                store
                    .read_records(GROUP, black_box(from), from.next(), 1, u64::MAX)
                    .expect("read_records failed")
            })
        });
    }
    let from = Position {
        log_index: 3,
        sub: 0,
    };
    let end = Position {
        log_index: 4,
        sub: 0,
    };
    g.throughput(Throughput::Elements(batch.len() as u64));
    g.bench_function(BenchmarkId::from_parameter("batch_500x1KiB"), |b| {
        b.iter(|| {
            store
                .read_records(GROUP, black_box(from), end, 500, u64::MAX)
                .expect("read_records failed")
        })
    });
    g.finish();
}

criterion_group! {
    name = record_codec;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_encode, bench_decode
}
criterion_main!(record_codec);
