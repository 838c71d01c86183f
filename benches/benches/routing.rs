//! Routing micro-benchmarks: partition key → 128-bit hash key (MD5), hash key → shard, and
//! `ExplicitHashKey` parsing.
//!
//! Every record of every PutRecord/PutRecords request goes through this path on the node that
//! receives it (a 500-record PutRecords routes 500 keys), so its cost per record bounds the
//! request rate a single core can route. Measured here:
//!
//! * `partition_key_md5`: [`HashKey::from_partition_key`] for keys of 8, 64 and 256 bytes
//!   (throughput in key bytes);
//! * `route`: [`route`] of one hash key among the open shards of a stream created with 1, 4, 64
//!   and 1024 shards ([`initial_ranges`]); a binary search, so it should grow with log2(shards);
//! * `put_records_routing`: MD5 + route for the 500 partition keys of a full PutRecords request
//!   (4 and 1024 shards; throughput in records);
//! * `initial_ranges`: building the initial split (done at CreateStream, not per record; listed
//!   for completeness);
//! * `parse_explicit_hash_key`: [`HashKey::parse_explicit`] for short, 20-digit and maximal
//!   (39-digit) values, and the rejection path (which formats an error message).
//!
//! Benchmarks measure; they assert nothing.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use runnel_types::{initial_ranges, route, HashKey, HashRange, ShardId};

const SHARD_COUNTS: [u32; 4] = [1, 4, 64, 1024];

/// The open shards of a freshly created stream with `n` shards, as routing sees them.
fn shards(n: u32) -> Vec<(ShardId, HashRange)> {
    initial_ranges(n)
        .into_iter()
        .enumerate()
        .map(|(i, r)| (ShardId(i as u64), r))
        .collect()
}

/// `n` distinct partition keys shaped like typical producer keys (`user-<n>`).
fn partition_keys(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("user-{i:08}")).collect()
}

fn bench_md5(c: &mut Criterion) {
    let mut g = c.benchmark_group("partition_key_md5");
    for len in [8usize, 64, 256] {
        let key: String = "k".repeat(len);
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_with_input(BenchmarkId::from_parameter(len), &key, |b, key| {
            b.iter(|| HashKey::from_partition_key(black_box(key)))
        });
    }
    g.finish();
}

fn bench_route(c: &mut Criterion) {
    // Pre-hashed keys spread over the whole ring, visited in turn so the branch predictor does
    // not learn a single path through the binary search.
    let keys: Vec<HashKey> = partition_keys(1024)
        .iter()
        .map(|k| HashKey::from_partition_key(k))
        .collect();
    let mut g = c.benchmark_group("route");
    g.throughput(Throughput::Elements(1));
    for n in SHARD_COUNTS {
        let ranges = shards(n);
        g.bench_with_input(BenchmarkId::from_parameter(n), &ranges, |b, ranges| {
            let mut i = 0usize;
            b.iter(|| {
                i = (i + 1) & 1023;
                route(black_box(ranges), black_box(keys[i]))
            })
        });
    }
    g.finish();
}

fn bench_put_records_routing(c: &mut Criterion) {
    let keys = partition_keys(500);
    let mut g = c.benchmark_group("put_records_routing");
    g.throughput(Throughput::Elements(keys.len() as u64));
    for n in [4u32, 1024] {
        let ranges = shards(n);
        g.bench_with_input(BenchmarkId::new("500_keys", n), &ranges, |b, ranges| {
            b.iter(|| {
                let mut routed = 0u64;
                for k in &keys {
                    let key = HashKey::from_partition_key(black_box(k));
                    if let Some(shard) = route(ranges, key) {
                        routed = routed.wrapping_add(shard.0);
                    }
                }
                routed
            })
        });
    }
    g.finish();
}

fn bench_initial_ranges(c: &mut Criterion) {
    let mut g = c.benchmark_group("initial_ranges");
    for n in SHARD_COUNTS {
        g.throughput(Throughput::Elements(u64::from(n)));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| initial_ranges(black_box(n)))
        });
    }
    g.finish();
}

fn bench_parse_explicit(c: &mut Criterion) {
    let max = u128::MAX.to_string();
    let cases: [(&str, &str); 4] = [
        ("1_digit", "7"),
        ("20_digits", "12345678901234567890"),
        ("39_digits_max", max.as_str()),
        ("invalid_leading_zero", "0123"),
    ];
    let mut g = c.benchmark_group("parse_explicit_hash_key");
    g.throughput(Throughput::Elements(1));
    for (name, s) in cases {
        g.bench_with_input(BenchmarkId::from_parameter(name), s, |b, s| {
            b.iter(|| HashKey::parse_explicit(black_box(s)))
        });
    }
    g.finish();
}

criterion_group! {
    name = routing;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_md5, bench_route, bench_put_records_routing, bench_initial_ranges,
        bench_parse_explicit
}
criterion_main!(routing);
