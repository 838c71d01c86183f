//! Sequence number and token micro-benchmarks.
//!
//! Every acknowledged record carries a sequence number encoded as a 37-digit decimal string
//! (PutRecords builds 500 of them per request, GetRecords one per returned record), and every
//! `AT_SEQUENCE_NUMBER`/`AFTER_SEQUENCE_NUMBER` iterator request parses one. Every GetRecords
//! call opens the shard iterator it was given and seals the next one (HMAC-SHA256 + base64), so
//! the token cost is paid once per consumer poll. Measured here:
//!
//! * `seqno/new`, `seqno/encode` (u128 → decimal `String`), `seqno/parse` (valid and rejected
//!   input), `seqno/encode_500` (the sequence numbers of one full PutRecords response);
//! * `iterator_token/seal` and `iterator_token/open` for a short and a 128-character stream name;
//! * `page_token/seal` and `page_token/open` (ListShards/ListStreams NextToken).
//!
//! Benchmarks measure; they assert nothing.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use runnel_types::{
    IteratorKey, IteratorToken, PageToken, Position, SequenceNumber, ShardId, StreamName,
};

const ISSUED_MS: u64 = 1_700_000_000_000;

fn sample_seqno() -> SequenceNumber {
    SequenceNumber::new(
        ShardId(12),
        Position {
            log_index: 987_654_321,
            sub: 17,
        },
    )
    .expect("a 12-bit shard and sub 17 fit the sequence number layout")
}

fn bench_seqno(c: &mut Criterion) {
    let mut g = c.benchmark_group("seqno");
    g.throughput(Throughput::Elements(1));
    g.bench_function("new", |b| {
        b.iter(|| {
            SequenceNumber::new(
                black_box(ShardId(12)),
                black_box(Position {
                    log_index: 987_654_321,
                    sub: 17,
                }),
            )
        })
    });
    let seq = sample_seqno();
    g.bench_function("encode", |b| b.iter(|| black_box(&seq).encode()));
    let encoded = seq.encode();
    g.bench_function("parse", |b| {
        b.iter(|| SequenceNumber::parse(black_box(&encoded)))
    });
    // A 37-digit number of the right length that lacks Runnel's layout version: rejected after
    // the full u128 parse, with an error message formatted.
    let foreign = "1".repeat(37);
    g.bench_function("parse_rejected", |b| {
        b.iter(|| SequenceNumber::parse(black_box(&foreign)))
    });

    // The sequence numbers of one full PutRecords response: 500 records of one Raft entry.
    g.throughput(Throughput::Elements(500));
    g.bench_function("encode_500", |b| {
        b.iter(|| {
            (0..500u32)
                .map(|sub| {
                    SequenceNumber::new(
                        ShardId(3),
                        Position {
                            log_index: black_box(123_456),
                            sub,
                        },
                    )
                    .map(|s| s.encode())
                })
                .collect::<Vec<_>>()
        })
    });
    g.finish();
}

fn iterator_token(name: &str) -> IteratorToken {
    IteratorToken {
        stream: StreamName::parse(name).expect("valid stream name"),
        stream_uid: 0xDEAD_BEEF_0000_0001,
        shard: ShardId(12),
        pos: Position {
            log_index: 987_654_321,
            sub: 17,
        },
        issued_ms: ISSUED_MS,
    }
}

fn bench_iterator_token(c: &mut Criterion) {
    let key = IteratorKey::new(*b"runnel-bench-iterator-key-32byte");
    let long_name = "n".repeat(128);
    let mut g = c.benchmark_group("iterator_token");
    g.throughput(Throughput::Elements(1));
    for (label, name) in [("short_name", "orders"), ("name_128", long_name.as_str())] {
        let token = iterator_token(name);
        g.bench_with_input(BenchmarkId::new("seal", label), &token, |b, t| {
            b.iter(|| black_box(t).seal(&key))
        });
        let sealed = token.seal(&key);
        g.bench_with_input(BenchmarkId::new("open", label), &sealed, |b, s| {
            b.iter(|| IteratorToken::open(black_box(s), &key, ISSUED_MS + 1_000))
        });
    }
    g.finish();
}

fn bench_page_token(c: &mut Criterion) {
    let key = IteratorKey::new(*b"runnel-bench-iterator-key-32byte");
    let token = PageToken {
        kind: 1,
        stream: "orders".into(),
        after: "shardId-000000000007".into(),
        issued_ms: ISSUED_MS,
    };
    let sealed = token.seal(&key);
    let mut g = c.benchmark_group("page_token");
    g.throughput(Throughput::Elements(1));
    g.bench_function("seal", |b| b.iter(|| black_box(&token).seal(&key)));
    g.bench_function("open", |b| {
        b.iter(|| PageToken::open(black_box(&sealed), &key, ISSUED_MS + 1_000))
    });
    g.finish();
}

criterion_group! {
    name = seqno;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench_seqno, bench_iterator_token, bench_page_token
}
criterion_main!(seqno);
